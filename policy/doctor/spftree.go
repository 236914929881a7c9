package doctor

// The SPF tree: the domain's record and every record it reaches through
// include: and redirect=, with the DNS-lookup and void-lookup counts of
// RFC 7208 §4.6.4, and a static evaluation of the tree for one address
// (which term would match).

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/miekg/dns"

	"github.com/authmilter/authmilter/policy/resolve"
	"github.com/authmilter/authmilter/policy/spf"
)

// Limits of RFC 7208 §4.6.4, and of the walk itself: a hostile record
// must not make doctor ask DNS without end.
const (
	spfLookupLimit = 10  // DNS-querying terms per evaluation
	spfVoidLimit   = 2   // void lookups per evaluation
	spfMXHostLimit = 10  // hosts an mx mechanism may look up
	spfMaxDepth    = 12  // include/redirect nesting the walk follows
	spfMaxNames    = 60  // distinct DNS names the walk queries
	spfMaxNodes    = 100 // records (tree nodes) the walk builds
	spfMaxSame     = 10  // findings of one code and severity listed one by one
)

// SPFNode is one record of the SPF tree: the domain's own, or one reached
// by include: or redirect=.
type SPFNode struct {
	// Term is the include or redirect that leads here ("" for the
	// domain's own record).
	Term string `json:"term,omitempty"`
	// Domain is the domain whose record this is.
	Domain string `json:"domain"`
	// Record is the SPF record found there.
	Record string `json:"record,omitempty"`
	// Lookups counts this record's own DNS-querying terms (include, a,
	// mx, ptr, exists, redirect).
	Lookups int `json:"lookups"`
	// Total is Lookups plus the Totals of Children.
	Total int `json:"total"`
	// Void counts this record's own terms whose lookup found nothing.
	Void int `json:"void"`
	// Children are the records reached by this record's includes and
	// redirect, in evaluation order.
	Children []*SPFNode `json:"children,omitempty"`
	// Error says why this record could not be used (receivers return
	// permerror or temperror when they reach it).
	Error string `json:"error,omitempty"`
}

// spfPTRUnknown is the term of a host whose evaluation reaches ptr.
const spfPTRUnknown = "ptr (not evaluated statically)"

// spfTreeNode is the walk's own view of one record, kept for the static
// evaluation of sending hosts.
type spfTreeNode struct {
	node   *SPFNode
	domain string
	rec    *spf.Record
	terms  []*spfTreeTerm
	// failure is the result a receiver reaching this record gets
	// ("permerror", "temperror"), "" when the record is usable.
	failure string
	// unknown explains why the walk could not follow this record.
	unknown string
}

// spfTreeTerm is one evaluated mechanism or the redirect of a record.
type spfTreeTerm struct {
	term *spf.Term
	// addrs are the addresses an a or mx term resolved to.
	addrs []netip.Addr
	// exists says an exists term's name has an A record.
	exists bool
	// child is the record of an include or redirect.
	child *spfTreeNode
	// failure is the result a receiver gets at this term ("temperror",
	// "permerror"), "" when none.
	failure, reason string
	// unknown, when set, is why the term cannot be evaluated statically.
	unknown string
	// void says the term's lookup found nothing.
	void bool
}

// spfWalker walks one domain's tree.
type spfWalker struct {
	ctx      context.Context
	r        Resolver
	findings []Finding
	names    map[string]bool // DNS names asked so far (the budget)
	limitHit bool            // the name budget or the depth ran out
	// running is the lookup count so far in evaluation order, overAt the
	// term at which it first went over the limit.
	running int
	overAt  string
	void    []string // the void terms
	ptrs    []string // the ptr terms
	nodes   int      // tree nodes built
	// same counts findings by code and severity; beyond spfMaxSame they
	// are only counted, and summed up by finish.
	same map[spfFindingKind]int
	// sameOrder is the order in which kinds first went over spfMaxSame.
	sameOrder []spfFindingKind
}

// spfFindingKind is a finding's code and severity.
type spfFindingKind struct {
	code string
	sev  Severity
}

// add appends a finding. A hostile record can repeat a problem thousands
// of times: after spfMaxSame findings of one kind, the rest are counted.
func (w *spfWalker) add(sev Severity, code, subject, msg, fix string) {
	k := spfFindingKind{code, sev}
	if w.same == nil {
		w.same = make(map[spfFindingKind]int)
	}
	if w.same[k]++; w.same[k] > spfMaxSame {
		if w.same[k] == spfMaxSame+1 {
			w.sameOrder = append(w.sameOrder, k)
		}
		return
	}
	w.findings = append(w.findings, Finding{Check: CheckSPF, Severity: sev, Code: code, Subject: subject, Message: msg, Fix: fix})
}

// finish sums up the findings add did not list and returns them all.
func (w *spfWalker) finish() []Finding {
	for _, k := range w.sameOrder {
		msg := fmt.Sprintf("and %d more %s findings like the above", w.same[k]-spfMaxSame, k.code)
		w.findings = append(w.findings, Finding{Check: CheckSPF, Severity: k.sev, Code: k.code, Message: msg, Fix: spfFixIf(k.sev, "fix them as the ones above")})
	}
	return w.findings
}

// spfList joins items for a message, at most spfMaxSame of them.
func spfList(items []string) string {
	if len(items) <= spfMaxSame {
		return strings.Join(items, ", ")
	}
	return strings.Join(items[:spfMaxSame], ", ") + fmt.Sprintf(" and %d more", len(items)-spfMaxSame)
}

// spend takes name from the budget; false when the budget is spent.
func (w *spfWalker) spend(name string) bool {
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	if w.names[name] {
		return true
	}
	if len(w.names) >= spfMaxNames {
		if !w.limitHit {
			w.add(Warn, "spf-walk-limit", "", fmt.Sprintf("stopped following the SPF tree after %d DNS names; the counts below are a lower bound", spfMaxNames),
				"flatten the SPF tree: receivers give permerror long before this")
		}
		w.limitHit = true
		return false
	}
	w.names[name] = true
	return true
}

// within describes where a term is: "" at the top, " in include:x" below.
func spfWithin(via string) string {
	if via == "" {
		return ""
	}
	return " in " + via
}

// walkRecord parses and walks a record found at domain. via is the
// include/redirect chain leading to it ("" for the domain's own record),
// ancestors the domains above it.
func (w *spfWalker) walkRecord(n *spfTreeNode, text, via string, ancestors []string, depth int) {
	n.node.Record = text
	subject := func(t string) string {
		if n.node.Term == "" {
			return t
		}
		return n.node.Term + ": " + t
	}
	rec, err := spf.ParseRecord(text)
	if err != nil {
		var se *spf.SyntaxError
		errors.As(err, &se)
		n.failure, n.node.Error = "permerror", err.Error()
		w.add(Error, "spf-syntax", subject(se.Term), fmt.Sprintf("SPF syntax error in %q at the record of %s: %s", se.Term, n.domain, se.Reason),
			"correct "+se.Term+": receivers return permerror for the whole record")
		return
	}
	n.rec = rec
	ancestors = append(slices.Clip(ancestors), n.domain)
	if rec.All != nil && rec.All.Qualifier == '+' && n.node.Term != "" {
		w.add(Error, "spf-pass-all", n.node.Term, fmt.Sprintf("the record of %s ends in %s: every host on the Internet passes through this include", n.domain, rec.All.Text),
			"remove "+n.node.Term+" or ask its owner to end it in ~all or -all")
	}
	for i := range rec.Terms {
		t := &rec.Terms[i]
		if !t.IsMechanism() {
			continue
		}
		tt := &spfTreeTerm{term: t}
		n.terms = append(n.terms, tt)
		label := t.Text + spfWithin(via)
		if t.CountsLookup() {
			w.count(n, label)
		}
		w.walkTerm(n, tt, label, via, ancestors, depth)
		if t.Kind == spf.KindAll {
			// RFC 7208 §4.6.2: evaluation ends at all; receivers never
			// reach what follows.
			break
		}
	}
	if r := rec.Redirect; r != nil {
		if rec.All != nil {
			w.add(Warn, "spf-redirect-ignored", subject(r.Text), fmt.Sprintf("the record of %s has both %s and %s: receivers ignore the redirect (RFC 7208 §6.1)", n.domain, rec.All.Text, r.Text),
				"remove "+r.Text+" or the all term")
		} else {
			tt := &spfTreeTerm{term: r}
			n.terms = append(n.terms, tt)
			label := r.Text + spfWithin(via)
			w.count(n, label)
			w.walkTerm(n, tt, label, via, ancestors, depth)
		}
	}
	for _, c := range n.node.Children {
		n.node.Total += c.Total
	}
	n.node.Total += n.node.Lookups
}

// count adds one DNS-querying term to the evaluation's count.
func (w *spfWalker) count(n *spfTreeNode, label string) {
	n.node.Lookups++
	w.running++
	if w.running == spfLookupLimit+1 {
		w.overAt = label
	}
}

// markVoid records a void lookup of a term.
func (w *spfWalker) markVoid(n *spfTreeNode, tt *spfTreeTerm, label string) {
	tt.void = true
	n.node.Void++
	w.void = append(w.void, label)
}

// walkTerm resolves what one mechanism or redirect needs.
func (w *spfWalker) walkTerm(n *spfTreeNode, tt *spfTreeTerm, label, via string, ancestors []string, depth int) {
	t := tt.term
	if t.HasMacros && t.Kind != spf.KindPTR {
		tt.unknown = "unknown"
		sev, why := OK, "its name depends on the message, so doctor cannot follow it; it still counts as one lookup"
		if t.Kind == spf.KindInclude || t.Kind == spf.KindRedirect {
			sev, why = Warn, "its name depends on the message, so doctor cannot follow it: the lookups of the records it reaches are not counted"
		}
		w.add(sev, "spf-macro-unexpanded", label, "the name has macros: "+why, spfFixIf(sev, "make sure the records it reaches stay within the lookup limit"))
		return
	}
	switch t.Kind {
	case spf.KindPTR:
		tt.unknown = spfPTRUnknown
		w.ptrs = append(w.ptrs, label)
	case spf.KindInclude, spf.KindRedirect:
		if w.nodes >= spfMaxNodes {
			tt.unknown = "unknown"
			if !w.limitHit {
				w.add(Warn, "spf-walk-limit", label, fmt.Sprintf("stopped following the SPF tree after %d records; the counts are a lower bound", spfMaxNodes),
					"flatten the SPF tree: receivers give permerror long before this")
			}
			w.limitHit = true
			return
		}
		w.nodes++
		tt.child = w.walkTarget(t.Text, spfDomain(t.Domain), via, ancestors, depth+1)
		n.node.Children = append(n.node.Children, tt.child.node)
	case spf.KindA:
		w.resolveAddrs(n, tt, label, spfDomain(spfOr(t.Domain, n.domain)))
	case spf.KindMX:
		w.resolveMX(n, tt, label, spfDomain(spfOr(t.Domain, n.domain)))
	case spf.KindExists:
		name := spfDomain(t.Domain)
		if !w.spend(name) {
			tt.unknown = "unknown"
			return
		}
		_, err := w.r.LookupRR(w.ctx, name, dns.TypeA)
		switch {
		case err == nil:
			tt.exists = true
		case resolve.IsNotFound(err):
			w.markVoid(n, tt, label)
		default:
			w.dnsError(tt, label, name, err)
		}
	}
}

// spfOr returns a unless it is empty, then b.
func spfOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// spfFixIf returns fix for warnings and errors, "" for ok findings.
func spfFixIf(sev Severity, fix string) string {
	if sev == OK {
		return ""
	}
	return fix
}

// spfDomain turns a macro-free domain-spec into a DNS name: "%%", "%_" and
// "%-" expanded, lowercase, without the trailing dot.
func spfDomain(spec string) string {
	r := strings.NewReplacer("%%", "%", "%_", " ", "%-", "%20")
	return strings.ToLower(strings.TrimSuffix(r.Replace(spec), "."))
}

// dnsError records a DNS failure at a term: receivers get temperror.
func (w *spfWalker) dnsError(tt *spfTreeTerm, label, name string, err error) {
	tt.failure, tt.reason = "temperror", fmt.Sprintf("DNS lookup of %s failed: %v", name, err)
	w.add(Error, "spf-dns-error", label, fmt.Sprintf("%s at %s: receivers get temperror", spfDNSFailure(err), name),
		"fix the DNS servers of "+name+" or retry later")
}

// spfDNSFailure says what kind of DNS failure err is, for messages.
func spfDNSFailure(err error) string {
	s := err.Error()
	switch {
	case strings.Contains(s, "timeout"):
		return "DNS timeout"
	case strings.Contains(s, "SERVFAIL"):
		return "DNS SERVFAIL"
	case strings.Contains(s, "REFUSED"):
		return "DNS REFUSED"
	}
	return "DNS failure: " + s
}

// resolveAddrs resolves an a term's name.
func (w *spfWalker) resolveAddrs(n *spfTreeNode, tt *spfTreeTerm, label, name string) {
	if !w.spend(name) {
		tt.unknown = "unknown"
		return
	}
	ips, err := w.r.LookupIPAddr(w.ctx, name)
	switch {
	case err == nil:
		for _, ip := range ips {
			if a, ok := netip.AddrFromSlice(ip.IP); ok {
				tt.addrs = append(tt.addrs, a.Unmap())
			}
		}
	case resolve.IsNotFound(err):
		w.markVoid(n, tt, label)
	default:
		w.dnsError(tt, label, name, err)
	}
}

// resolveMX resolves an mx term's name and hosts.
func (w *spfWalker) resolveMX(n *spfTreeNode, tt *spfTreeTerm, label, name string) {
	if !w.spend(name) {
		tt.unknown = "unknown"
		return
	}
	mxs, err := w.r.LookupMX(w.ctx, name)
	switch {
	case resolve.IsNotFound(err):
		w.markVoid(n, tt, label)
		return
	case err != nil:
		w.dnsError(tt, label, name, err)
		return
	}
	if len(mxs) > spfMXHostLimit {
		// RFC 7208 §4.6.4: more than 10 MX hosts is permerror.
		tt.failure, tt.reason = "permerror", fmt.Sprintf("%s has %d MX hosts, more than %d", name, len(mxs), spfMXHostLimit)
		w.add(Error, "spf-mx-too-many-hosts", label, fmt.Sprintf("%s has %d MX hosts, limit %d: receivers return permerror", name, len(mxs), spfMXHostLimit),
			"replace "+tt.term.Text+" with ip4/ip6 ranges of the hosts that send")
		return
	}
	for _, mx := range mxs {
		host := strings.TrimSuffix(mx.Host, ".")
		if host == "" { // null MX (RFC 7505)
			continue
		}
		if !w.spend(host) {
			tt.unknown = "unknown"
			return
		}
		ips, err := w.r.LookupIPAddr(w.ctx, host)
		switch {
		case err == nil:
			for _, ip := range ips {
				if a, ok := netip.AddrFromSlice(ip.IP); ok {
					tt.addrs = append(tt.addrs, a.Unmap())
				}
			}
		case !resolve.IsNotFound(err):
			w.dnsError(tt, label, host, err)
			return
		}
	}
}

// walkTarget fetches and walks the record of an include or redirect
// target.
func (w *spfWalker) walkTarget(term, domain, via string, ancestors []string, depth int) *spfTreeNode {
	n := &spfTreeNode{node: &SPFNode{Term: term, Domain: domain}, domain: domain}
	subVia := term + spfWithin(via)
	label := subVia
	if slices.Contains(ancestors, domain) {
		n.failure, n.node.Error = "permerror", "loop: "+domain+" is already being evaluated above"
		w.add(Error, "spf-include-loop", label, fmt.Sprintf("a loop: %s is already being evaluated above: receivers run out of lookups and return permerror", domain),
			"remove "+term+" from the record that leads back to it")
		return n
	}
	if depth > spfMaxDepth {
		n.unknown, n.node.Error = "unknown", fmt.Sprintf("not followed: more than %d levels of include/redirect", spfMaxDepth)
		if !w.limitHit {
			w.add(Warn, "spf-walk-limit", label, fmt.Sprintf("stopped following the SPF tree at %d levels of include/redirect; the counts are a lower bound", spfMaxDepth),
				"flatten the SPF tree: receivers give permerror long before this")
		}
		w.limitHit = true
		return n
	}
	if !w.spend(domain) {
		n.unknown, n.node.Error = "unknown", fmt.Sprintf("not followed: the walk's limit of %d DNS names was reached", spfMaxNames)
		return n
	}
	txts, err := w.r.LookupTXT(w.ctx, domain)
	if err != nil && !resolve.IsNotFound(err) {
		n.failure, n.node.Error = "temperror", fmt.Sprintf("TXT lookup of %s failed: %v", domain, err)
		w.add(Error, "spf-dns-error", label, fmt.Sprintf("%s looking up the SPF record of %s: receivers get temperror", spfDNSFailure(err), domain),
			"fix the DNS servers of "+domain+" or retry later")
		return n
	}
	if err != nil {
		// NXDOMAIN or no TXT at all: a void lookup (RFC 7208 §4.6.4).
		w.void = append(w.void, label)
		n.node.Void++
	}
	var recs []string
	for _, t := range txts {
		if spf.IsRecord(t) {
			recs = append(recs, t)
		}
	}
	switch len(recs) {
	case 0:
		// RFC 7208 §5.2, §6.1: an include or redirect to a domain with no
		// SPF record is permerror.
		n.failure, n.node.Error = "permerror", "no SPF record at "+domain
		w.add(Error, "spf-target-no-record", label, fmt.Sprintf("%s has no SPF record: receivers return permerror", domain),
			"remove "+term+" or publish an SPF record at "+domain)
		return n
	case 1:
		w.walkRecord(n, recs[0], subVia, ancestors, depth)
		return n
	default:
		n.failure, n.node.Error = "permerror", fmt.Sprintf("%d SPF records at %s", len(recs), domain)
		w.add(Error, "spf-multiple", label, fmt.Sprintf("%s has %d SPF records: receivers return permerror", domain, len(recs)),
			"ask the owner of "+domain+" to publish one SPF record")
		return n
	}
}

// spfMatch is the outcome of statically evaluating a tree for one address.
type spfMatch struct {
	// result is pass, fail, softfail, neutral, permerror or temperror;
	// "" when it cannot be determined statically.
	result string
	// term is the matched term with its include/redirect chain, or why
	// the evaluation stopped.
	term string
}

// spfEvalState is the running count of one static evaluation.
type spfEvalState struct {
	lookups, voids int
}

// evaluate evaluates n for ip as check_host would (RFC 7208 §4.6), with
// the DNS answers the walk got and the limits of §4.6.4. via is the
// include/redirect chain that led to n ("" at the top).
func (n *spfTreeNode) evaluate(ip netip.Addr, st *spfEvalState, via string) spfMatch {
	ip = ip.Unmap()
	if n.failure != "" {
		return spfMatch{result: n.failure, term: n.node.Error}
	}
	if n.unknown != "" || n.rec == nil {
		return spfMatch{term: "unknown"}
	}
	for _, tt := range n.terms {
		t := tt.term
		label := t.Text + spfWithin(via)
		if t.CountsLookup() {
			if st.lookups++; st.lookups > spfLookupLimit {
				return spfMatch{result: "permerror", term: fmt.Sprintf("%s (DNS lookup %d, over the limit)", label, st.lookups)}
			}
		}
		if tt.unknown != "" {
			return spfMatch{term: tt.unknown}
		}
		if tt.failure != "" {
			return spfMatch{result: tt.failure, term: tt.reason}
		}
		if tt.void {
			if st.voids++; st.voids > spfVoidLimit {
				return spfMatch{result: "permerror", term: fmt.Sprintf("%s (void lookup %d, over the limit)", label, st.voids)}
			}
		}
		matched, term := false, label
		switch t.Kind {
		case spf.KindAll:
			matched = true
		case spf.KindIP4, spf.KindIP6:
			matched = t.Prefix.Contains(ip)
		case spf.KindA, spf.KindMX:
			matched = slices.ContainsFunc(tt.addrs, func(a netip.Addr) bool { return spfCIDRMatch(a, ip, t) })
		case spf.KindExists:
			matched = tt.exists
		case spf.KindInclude:
			sub := tt.child.evaluate(ip, st, label)
			switch sub.result {
			case "pass":
				matched, term = true, sub.term
			case "fail", "softfail", "neutral":
			default: // undetermined, permerror, temperror
				return sub
			}
		case spf.KindRedirect:
			// RFC 7208 §6.1: the result is the target's ("none", a
			// missing record, is already permerror here).
			return tt.child.evaluate(ip, st, label)
		}
		if matched {
			return spfMatch{result: spfQualifierResult(t.Qualifier), term: term}
		}
	}
	return spfMatch{result: "neutral", term: "no term matched"}
}

// spfCIDRMatch reports whether ip is in the network of addr with the
// term's CIDR length for its family.
func spfCIDRMatch(addr, ip netip.Addr, t *spf.Term) bool {
	if addr.Is4() != ip.Is4() {
		return false
	}
	bits := t.CIDR6
	if addr.Is4() {
		bits = t.CIDR4
	}
	if bits < 0 {
		bits = addr.BitLen()
	}
	p, err := addr.Prefix(bits)
	return err == nil && p.Contains(ip)
}

// spfQualifierResult maps a qualifier to its result (RFC 7208 §4.6.2).
func spfQualifierResult(q byte) string {
	switch q {
	case '-':
		return "fail"
	case '~':
		return "softfail"
	case '?':
		return "neutral"
	}
	return "pass"
}

// effectiveAll returns the all term that ends evaluation of n, following
// redirects, or nil.
func (n *spfTreeNode) effectiveAll() *spf.Term {
	for depth := 0; n != nil && n.rec != nil && depth <= spfMaxDepth; depth++ {
		if n.rec.All != nil {
			return n.rec.All
		}
		var next *spfTreeNode
		for _, tt := range n.terms {
			if tt.term.Kind == spf.KindRedirect {
				next = tt.child
			}
		}
		n = next
	}
	return nil
}

// spfContribution is what one top-level term adds to the lookup count.
type spfContribution struct {
	term    string
	lookups int
}

// contributions lists the top-level terms that cost lookups, biggest
// first (record order among equals).
func (n *spfTreeNode) contributions() []spfContribution {
	var out []spfContribution
	for _, tt := range n.terms {
		if !tt.term.CountsLookup() {
			continue
		}
		c := spfContribution{term: tt.term.Text, lookups: 1}
		if tt.child != nil {
			c.lookups += tt.child.node.Total
		}
		out = append(out, c)
	}
	slices.SortStableFunc(out, func(a, b spfContribution) int { return b.lookups - a.lookups })
	return out
}
