package doctor

import (
	"context"
	"fmt"
	"net/netip"
	"strings"

	"github.com/miekg/dns"

	"github.com/authmilter/authmilter/policy"
	"github.com/authmilter/authmilter/policy/resolve"
	"github.com/authmilter/authmilter/policy/spf"
)

// spfMaxUDPAnswer is the largest DNS answer a receiver without EDNS0 gets
// over UDP (RFC 1035 §4.2.1); a larger one is truncated and retried over
// TCP (RFC 7208 §3.4).
const spfMaxUDPAnswer = 512

// SPFReport is the SPF part of a report.
type SPFReport struct {
	// Record is the domain's SPF record ("" when there is none or more
	// than one).
	Record string `json:"record,omitempty"`
	// Records are all the SPF records found, when there is more than one.
	Records []string `json:"records,omitempty"`
	// Lookups is the number of DNS-querying terms of the whole tree
	// (RFC 7208 §4.6.4, limit 10).
	Lookups int `json:"lookups"`
	// VoidLookups is the number of those that found nothing (limit 2).
	VoidLookups int `json:"void_lookups"`
	// Tree is the record and those its includes and redirect reach.
	Tree *SPFNode `json:"tree,omitempty"`
	// All is the all term that ends evaluation (following redirects), ""
	// when there is none.
	All string `json:"all,omitempty"`
	// IPs are the SPF results of the sending hosts.
	IPs []SPFHostResult `json:"ips,omitempty"`
}

// SPFHostResult is the SPF result for mail from one sending host, with
// MAIL FROM postmaster@<domain>.
type SPFHostResult struct {
	// IP is the host's address.
	IP string `json:"ip"`
	// Result is what inbound verification (policy.CheckSPF) concludes:
	// pass, fail, softfail, neutral, none, temperror or permerror.
	Result string `json:"result"`
	// Term is the term that matched, with the include/redirect chain it
	// was reached by ("ip4:192.0.2.0/24 in include:_spf.example"), or
	// why it is not known.
	Term string `json:"term,omitempty"`
	// Reason explains an error result.
	Reason string `json:"reason,omitempty"`
}

// HostResult returns the result for ip, nil when ip was not checked (or
// s is nil).
func (s *SPFReport) HostResult(ip netip.Addr) *SPFHostResult {
	if s == nil {
		return nil
	}
	for i := range s.IPs {
		if a, err := netip.ParseAddr(s.IPs[i].IP); err == nil && a.Unmap() == ip.Unmap() {
			return &s.IPs[i]
		}
	}
	return nil
}

// checkSPF checks the domain's SPF record, its include/redirect tree and
// each sending host's result.
func checkSPF(ctx context.Context, e *env) (*SPFReport, []Finding) {
	rep := &SPFReport{}
	w := &spfWalker{ctx: ctx, r: e.r, names: map[string]bool{e.domain: true}}
	root := w.checkRecord(rep, e.domain)
	if root != nil {
		w.checkTree(rep, root)
	}
	w.checkHosts(rep, root, e.domain, e.opt.IPs)
	return rep, w.finish()
}

// checkRecord finds the domain's SPF record (RFC 7208 §4.5) and walks its
// tree; nil when there is no single record to walk.
func (w *spfWalker) checkRecord(rep *SPFReport, domain string) *spfTreeNode {
	txts, err := w.r.LookupTXT(w.ctx, domain)
	if err != nil && !resolve.IsNotFound(err) {
		w.add(Error, "spf-dns-error", domain, fmt.Sprintf("%s looking up the TXT records of %s: SPF not checked", spfDNSFailure(err), domain),
			"fix the DNS servers of "+domain+" or retry later")
		return nil
	}
	var recs []string
	for _, t := range txts {
		if spf.IsRecord(t) {
			recs = append(recs, t)
		}
	}
	// Type SPF (99) was deprecated by RFC 7208 §3.1: receivers ignore it.
	typeSPF, err99 := w.r.LookupRR(w.ctx, domain, dns.TypeSPF)
	if err99 != nil && !resolve.IsNotFound(err99) {
		// Receivers never ask for type 99: the failure only hides whether
		// an obsolete record exists, unless there is no TXT record to
		// look at.
		sev := Warn
		if len(recs) == 0 {
			sev = Error
		}
		w.add(sev, "spf-dns-error", domain, fmt.Sprintf("%s looking up the type SPF (99) records of %s", spfDNSFailure(err99), domain),
			"fix the DNS servers of "+domain+" (some old servers fail queries for type 99)")
	}
	hasTypeSPF := err99 == nil && len(typeSPF) > 0

	switch {
	case len(recs) == 0 && hasTypeSPF:
		w.add(Error, "spf-type-only", domain, fmt.Sprintf("%s has an SPF record only as DNS type SPF (99), which receivers ignore (RFC 7208 §3.1): SPF is none for its mail", domain),
			"publish the same record as a TXT record at "+domain)
		return nil
	case len(recs) == 0:
		w.add(Error, "spf-missing", domain, fmt.Sprintf("%s has no SPF record: SPF is none for its mail", domain),
			`publish a TXT record at `+domain+` such as "v=spf1 mx -all", listing every host that sends its mail`)
		return nil
	case len(recs) > 1:
		rep.Records = recs
		w.add(Error, "spf-multiple", domain, fmt.Sprintf("%s has %d SPF records: receivers return permerror (RFC 7208 §4.5)", domain, len(recs)),
			"merge them into one TXT record starting with v=spf1")
		return nil
	}
	rep.Record = recs[0]
	w.add(OK, "spf-record", domain, fmt.Sprintf("one SPF record: %s", recs[0]), "")
	if hasTypeSPF {
		w.add(OK, "spf-type-spf", domain, "the record is also published as type SPF (99), which receivers ignore: harmless, can be removed", "")
	}
	w.checkAnswerSize(domain)

	root := &spfTreeNode{node: &SPFNode{Domain: domain}, domain: domain}
	w.walkRecord(root, recs[0], "", nil, 0)
	rep.Tree = root.node
	return root
}

// checkAnswerSize warns when the TXT answer at domain, as a receiver gets
// it over UDP without EDNS0, is over 512 bytes.
func (w *spfWalker) checkAnswerSize(domain string) {
	rrs, err := w.r.LookupRR(w.ctx, domain, dns.TypeTXT)
	if err != nil {
		return // LookupTXT just succeeded; a failure now has nothing to say
	}
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(domain), dns.TypeTXT)
	m.Response, m.Authoritative = true, true
	m.Compress = true // as servers send it
	m.Answer = rrs
	size := m.Len()
	if size > spfMaxUDPAnswer {
		w.add(Warn, "spf-record-too-long", domain, fmt.Sprintf("the TXT answer at %s is %d bytes, over %d: receivers without EDNS0 must retry over TCP and some fail with temperror", domain, size, spfMaxUDPAnswer),
			"shorten the SPF record (or move other TXT records of "+domain+" elsewhere) to fit 512 bytes")
	}
}

// checkTree reports the counts, the all term and ptr of a walked tree.
func (w *spfWalker) checkTree(rep *SPFReport, root *spfTreeNode) {
	rep.Lookups, rep.VoidLookups = root.node.Total, len(w.void)
	if root.rec == nil {
		return // a syntax error, already reported
	}
	atLeast := ""
	if w.limitHit {
		atLeast = "at least "
	}
	counts := fmt.Sprintf("%s%d DNS lookups of %d, %d void lookups of %d", atLeast, rep.Lookups, spfLookupLimit, rep.VoidLookups, spfVoidLimit)
	switch {
	case rep.Lookups > spfLookupLimit:
		// The subject is the top-level term that takes the count over.
		subject := w.overAt
		if i := strings.LastIndex(subject, " in "); i >= 0 {
			subject = subject[i+len(" in "):]
		}
		w.add(Error, "spf-too-many-lookups", subject, w.overLimitMessage(root, rep.Lookups, atLeast), w.overLimitFix(root, rep.Lookups))
	case rep.Lookups >= spfLookupLimit-1:
		w.add(Warn, "spf-lookups-near-limit", "", counts+": no room for another provider's include",
			"replace an include with its ip4/ip6 ranges before adding another sender")
	default:
		w.add(OK, "spf-lookups", "", counts, "")
	}
	if rep.VoidLookups > spfVoidLimit {
		w.add(Error, "spf-too-many-void-lookups", "", fmt.Sprintf("SPF has %d void lookups, limit %d: %s; receivers return permerror", rep.VoidLookups, spfVoidLimit, spfList(w.void)),
			"remove the terms whose names do not exist: "+spfList(w.void))
	}
	for _, p := range w.ptrs {
		w.add(Warn, "spf-ptr", p, "ptr is slow and unreliable, RFC 7208 §5.5 says not to use it, and many receivers skip it",
			"replace "+p+" with ip4/ip6 ranges or a: terms")
	}
	all := root.effectiveAll()
	if all == nil {
		w.add(Warn, "spf-no-all", "", "the SPF record has no all term and no redirect: mail from every other host gets neutral",
			"end the record with -all (or ~all while testing)")
		return
	}
	rep.All = all.Text
	switch all.Qualifier {
	case '+':
		w.add(Error, "spf-pass-all", all.Text, "the SPF record ends in "+all.Text+": every host on the Internet passes SPF for this domain",
			"replace "+all.Text+" with -all (or ~all while testing)")
	case '?':
		w.add(Warn, "spf-neutral-all", all.Text, "the SPF record ends in ?all: mail from other hosts gets neutral, which protects nothing",
			"replace ?all with -all (or ~all while testing)")
	default:
		w.add(OK, "spf-all", all.Text, "the SPF record ends in "+all.Text+": other hosts get "+spfQualifierResult(all.Qualifier), "")
	}
}

// overLimitMessage names the biggest contributors and the term at which
// the count passes the limit.
func (w *spfWalker) overLimitMessage(root *spfTreeNode, total int, atLeast string) string {
	var parts []string
	for i, c := range root.contributions() {
		if i == 5 {
			parts = append(parts, "…")
			break
		}
		parts = append(parts, fmt.Sprintf("%s adds %d", c.term, c.lookups))
	}
	msg := fmt.Sprintf("SPF needs %s%d DNS lookups, limit %d: %s", atLeast, total, spfLookupLimit, strings.Join(parts, ", "))
	if w.overAt != "" {
		msg += fmt.Sprintf("; lookup %d, over the limit, is %s", spfLookupLimit+1, w.overAt)
	}
	return msg + "; receivers return permerror"
}

// overLimitFix names the include to flatten or move.
func (w *spfWalker) overLimitFix(root *spfTreeNode, total int) string {
	over := total - spfLookupLimit
	for _, c := range root.contributions() {
		if strings.HasPrefix(strings.ToLower(c.term), "include:") || strings.HasPrefix(strings.ToLower(c.term), "redirect=") {
			return fmt.Sprintf("replace %s with its ip4/ip6 ranges or move that sender to a subdomain (%d over the limit)", c.term, over)
		}
	}
	return fmt.Sprintf("replace a, mx and other DNS-querying terms with ip4/ip6 ranges (%d over the limit)", over)
}

// checkHosts gets each sending host's result from policy.CheckSPF (what
// our inbound verifier concludes) and the matching term from the static
// evaluation of the tree.
func (w *spfWalker) checkHosts(rep *SPFReport, root *spfTreeNode, domain string, ips []netip.Addr) {
	for _, ip := range ips {
		c := policy.CheckSPF(w.ctx, w.r, ip, domain, "postmaster@"+domain)
		h := SPFHostResult{IP: ip.String(), Result: c.Result, Reason: c.Reason}
		m := spfMatch{term: "term not determined"}
		if root != nil {
			m = root.evaluate(ip, &spfEvalState{}, "")
		}
		switch {
		case m.result == "":
			h.Term = m.term
		case m.result == c.Result:
			h.Term = m.term
		default:
			h.Term = "term not determined"
		}
		rep.IPs = append(rep.IPs, h)
		w.hostFinding(&h, domain, ip, rep.Record != "")
	}
}

// hostFinding reports one host's result.
func (w *spfWalker) hostFinding(h *SPFHostResult, domain string, ip netip.Addr, hasRecord bool) {
	switch h.Result {
	case "pass":
		w.add(OK, "spf-host-pass", h.IP, fmt.Sprintf("%s passes: %s", h.IP, spfTermPhrase(h.Term)), "")
	case "temperror":
		w.add(Error, "spf-dns-error", h.IP, fmt.Sprintf("SPF for %s gives temperror: %s", h.IP, spfOr(h.Reason, "DNS failure")),
			"fix the DNS failure in the SPF tree of "+domain+" or retry later")
	case "permerror":
		at := ""
		if strings.HasPrefix(spfTermPhrase(h.Term), "matched ") {
			at = " at " + h.Term
		}
		w.add(Error, "spf-host-permerror", h.IP, fmt.Sprintf("SPF for %s gives permerror: %s%s", h.IP, spfOr(h.Reason, "the record is invalid"), at),
			"fix the SPF errors of "+domain+" reported above: receivers distrust or reject its mail")
	default:
		mech := "ip4:"
		if !ip.Unmap().Is4() {
			mech = "ip6:"
		}
		fix := fmt.Sprintf("add %s%s to the SPF record of %s, before its all term", mech, ip.Unmap(), domain)
		if !hasRecord {
			fix = fmt.Sprintf(`publish one SPF record at %s that authorizes it, e.g. "v=spf1 %s%s -all"`, domain, mech, ip.Unmap())
		}
		w.add(Error, "spf-host-not-authorized", h.IP, fmt.Sprintf("%s is not authorized: SPF gives %s (%s)", h.IP, h.Result, spfOr(spfTermPhrase(h.Term), h.Reason)), fix)
	}
}

// spfTermPhrase says how a host's result came about: "matched <term>", or
// the reason no term is known.
func spfTermPhrase(term string) string {
	switch term {
	case "", "no term matched", "term not determined":
		return term
	case "unknown":
		return "term not known statically"
	case spfPTRUnknown:
		return "term not known: ptr is not evaluated statically"
	}
	return "matched " + term
}
