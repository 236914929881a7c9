package policy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/emersion/go-msgauth/authres"

	"github.com/authmilter/authmilter/policy/dkimsign"
	"github.com/authmilter/authmilter/policy/dmarc"
	"github.com/authmilter/authmilter/policy/mailaddr"
	"github.com/authmilter/authmilter/policy/spf"
)

// inbound is the authentication of one message: DKIM verification fed by
// the body stream, and SPF started as soon as the header is complete so
// that its DNS work overlaps the body transfer.
type inbound struct {
	ctx    context.Context
	cancel context.CancelFunc

	// dkim verifies the message's DKIM signatures (nil: it has none). Its
	// key lookups run while the body arrives; the body is hashed once per
	// body canonicalization the signatures need, by dkimHashers, or by the
	// ARC hasher of that canonicalization when ARC hashes it anyway.
	dkim        *dkimVerifier
	dkimHashers [2]*dkimsign.BodyHasher
	spfDone     chan spfOutcome
}

type spfOutcome struct {
	result   string
	identity string // "mailfrom" or "helo"
	domain   string
	reason   string
}

func (m *Message) beginInbound() {
	p := m.p
	in := &inbound{}
	m.in = in
	in.ctx, in.cancel = context.WithTimeout(context.Background(), p.cfg.Inbound.MessageTimeout.Duration)

	m.startIPRev()
	m.startARC()

	// This goroutine runs library code outside the milter session's panic
	// guard; a panic there becomes a temperror for this message, not the
	// end of the daemon.
	in.spfDone = make(chan spfOutcome, 1)
	go func() {
		out := spfOutcome{result: "temperror", identity: "mailfrom"}
		defer func() {
			if v := recover(); v != nil {
				out.reason = fmt.Sprintf("internal error: %v", v)
			}
			in.spfDone <- out
		}()
		out = p.checkSPF(in.ctx, m.env)
	}()

	in.dkim = newDKIMVerifier(m.header, p.cfg.Inbound.MaxSignatures, time.Now(), p.dkimKeys)
	if in.dkim == nil {
		return
	}
	in.dkim.lookUpKeys(in.ctx, p.resolver)
	for _, c := range in.dkim.bodyCanons() {
		if m.arc == nil || m.arc.hashers[c] == nil {
			in.dkimHashers[c] = dkimsign.NewBodyHasher(c)
		}
	}
}

// write feeds a body chunk to the DKIM body hashers that ARC does not
// share.
func (in *inbound) write(chunk []byte) {
	for _, h := range in.dkimHashers {
		if h != nil {
			h.Write(chunk)
		}
	}
}

func (in *inbound) abort() {
	in.cancel()
}

// dkimResults completes the DKIM verification with the body hashes.
func (m *Message) dkimResults() []DKIMResult {
	in := m.in
	if in.dkim == nil {
		return nil
	}
	return in.dkim.finish(func(c dkimsign.Canon) []byte {
		if h := in.dkimHashers[c]; h != nil {
			return h.Sum()
		}
		if m.arc == nil {
			return nil
		}
		return m.arc.bodyHash(c)
	})
}

// checkSPF evaluates SPF for the MAIL FROM identity, or for HELO when MAIL
// FROM is null (RFC 7208 §2.4).
func (p *Policy) checkSPF(ctx context.Context, env *Envelope) spfOutcome {
	return checkSPF(ctx, p.resolver, env)
}

// SPFCheck is the outcome of one SPF evaluation as inbound verification
// computes it.
type SPFCheck struct {
	// Result is none, neutral, pass, fail, softfail, temperror or
	// permerror.
	Result string
	// Identity is "mailfrom", or "helo" for a null MAIL FROM.
	Identity string
	// Domain is the domain checked.
	Domain string
	// Reason explains an error result, as our Authentication-Results
	// comment does.
	Reason string
}

// CheckSPF evaluates SPF for a client, HELO name and MAIL FROM with the
// code, limits and DNS budget of inbound verification, so that another
// tool (authmilter doctor) reaches the verdict the milter would. r is
// typically the daemon's *resolve.Resolver.
func CheckSPF(ctx context.Context, r Resolver, client netip.Addr, helo, mailFrom string) SPFCheck {
	o := checkSPF(ctx, r, &Envelope{ClientIP: client, Helo: helo, MailFrom: mailFrom})
	return SPFCheck{Result: o.result, Identity: o.identity, Domain: o.domain, Reason: o.reason}
}

func checkSPF(ctx context.Context, r Resolver, env *Envelope) spfOutcome {
	out := spfOutcome{identity: "mailfrom"}
	sender := env.MailFrom
	if sender == "" {
		out.identity = "helo"
		out.domain = strings.ToLower(strings.TrimSuffix(env.Helo, "."))
		sender = "postmaster@" + out.domain
	} else if s, d, ok := spfSender(sender); ok {
		sender, out.domain = s, d
	} else {
		out.result, out.reason = "none", "MAIL FROM has no usable domain"
		return out
	}
	if !env.ClientIP.IsValid() {
		out.result, out.reason = "none", "no client IP address"
		return out
	}
	if out.domain == "" {
		out.result, out.reason = "none", "no HELO name"
		return out
	}
	// One resolver per evaluation: it holds the per-message DNS budget
	// (see spfResolver).
	dnsr := newSPFResolver(r)
	res, err := spf.CheckHost(ctx, dnsr, env.ClientIP, out.domain, sender, env.Helo)
	out.result = string(res)
	if err != nil && res != spf.Pass {
		out.reason = spfReason(err)
	}
	if dnsr.Exhausted() {
		out.result, out.reason = "permerror", "DNS lookup limit reached"
	}
	return out
}

// spfReason is the Authentication-Results comment for an SPF error. A DNS
// error is given without the address of our DNS server, which is none of
// the reader's business (and changes from one server to the next).
func spfReason(err error) string {
	var de *net.DNSError
	if errors.As(err, &de) {
		return "lookup " + de.Name + ": " + de.Err
	}
	return err.Error()
}

// spfSender returns the <sender> for check_host() (RFC 7208 §4.1) and its
// domain, from a non-null MAIL FROM. The domain is what follows the last
// "@", checked and normalized as a domain name. The local part is kept as
// the MTA accepted it (macros expand it, RFC 7208 §7.3), even when our
// strict address parser would refuse it (an unquoted space, say), except
// that an empty one becomes "postmaster" (RFC 7208 §4.3), and so does one
// that contains "@" (a quoted local part), whose macro expansions (%{l},
// %{s}) would otherwise be ambiguous.
func spfSender(mailFrom string) (sender, domain string, ok bool) {
	s := strings.TrimSpace(mailFrom)
	if strings.HasPrefix(s, "<") && strings.HasSuffix(s, ">") {
		s = s[1 : len(s)-1]
	}
	if strings.HasPrefix(s, "@") {
		// A source route (RFC 5321 §4.1.2) is ignored.
		if _, rest, route := strings.Cut(s, ":"); route {
			s = rest
		}
	}
	at := strings.LastIndexByte(s, '@')
	if at < 0 {
		return "", "", false
	}
	domain, err := mailaddr.AddressDomain("postmaster@" + s[at+1:])
	if err != nil {
		return "", "", false
	}
	local := s[:at]
	if local == "" || strings.Contains(local, "@") {
		local = "postmaster"
	}
	return local + "@" + domain, domain, true
}

// finishInbound completes DKIM, SPF and DMARC and writes the
// Authentication-Results field and the enforcement verdict into d.
func (m *Message) finishInbound(d *Decision) {
	in := m.in
	defer in.cancel()
	p := m.p
	sigs := m.dkimResults()
	spfRes := <-in.spfDone

	var results []arEntry
	var dkimEntries dkimLog
	if len(sigs) == 0 {
		results = append(results, arEntry{result: &authres.DKIMResult{Value: authres.ResultNone}})
		d.DKIM = []string{"none"}
	}
	var dmarcDKIM []dmarc.DKIMResult
	for _, s := range sigs {
		b := s.B
		if len(b) > 8 {
			b = b[:8]
		}
		results = append(results, arEntry{
			result: &authres.GenericResult{Method: "dkim", Value: authres.ResultValue(s.Result), Params: map[string]string{
				"header.d": s.Domain, "header.s": s.Selector, "header.a": s.Algorithm, "header.b": b,
			}},
			comment: s.Reason,
			order:   []string{"header.d", "header.s", "header.a", "header.b"},
		})
		dmarcDKIM = append(dmarcDKIM, dmarc.DKIMResult{Domain: s.Domain, Pass: s.Result == "pass"})
		d.DKIM = append(d.DKIM, s.Result)
		dkimEntries = append(dkimEntries, dkimLogEntry{
			Result: s.Result, D: logText(s.Domain, maxLogField), S: logText(s.Selector, maxLogField),
			A: logText(s.Algorithm, maxLogField), Reason: logText(s.Reason, maxLogField),
		})
	}

	spfAR := &authres.SPFResult{Value: authres.ResultValue(spfRes.result)}
	if spfRes.identity == "helo" {
		spfAR.Helo = spfRes.domain
	} else {
		spfAR.From = strings.ToLower(m.env.MailFrom)
	}
	results = append(results, arEntry{result: spfAR, comment: spfRes.reason})

	dmarcEntry, dres := m.evaluateDMARC(dmarcDKIM, spfRes)
	arcOverride, overridden := m.arcOverride(dres)
	if overridden {
		// Say in the dmarc resinfo why a failure was not enforced.
		dmarcEntry.comment += ", override " + arcOverride.Type + ": " + arcOverride.Comment
	}
	results = append(results, dmarcEntry)
	if e, ok := m.iprevEntry(d); ok {
		results = append(results, e)
	}
	if e, ok := m.arcEntry(); ok {
		results = append(results, e)
	}

	arValue := formatAuthResults(p.cfg.AuthservID, results)
	d.Prepend = append(d.Prepend, HeaderField{Name: "Authentication-Results", Value: " " + arValue})
	d.SPF, d.DMARC = spfRes.result, string(dmarcEntry.result.(*authres.DMARCResult).Value)
	dmarcLog := dmarcAttr(d.DMARC, "", "", false)
	if dres != nil {
		if dres.FromDomain != "" {
			d.Log = append(d.Log, slog.String("from", dres.FromDomain))
		}
		dmarcLog = dmarcAttr(d.DMARC, dres.Policy, dres.Disposition, dres.Testing)
	}
	d.Log = append(d.Log, slog.Any("dkim", dkimEntries), spfAttr(spfRes), dmarcLog)
	if overridden {
		d.Log = append(d.Log, slog.String("override", arcOverride.Comment))
	}
	if dres != nil && p.cfg.DMARC.Enforce && dres.Outcome == dmarc.OutcomeFail && !overridden {
		switch dres.Disposition {
		case dmarc.PolicyReject:
			d.Action, d.SMTPCode, d.SMTPStatus = Reject, 550, "5.7.1"
			d.SMTPText = p.cfg.DMARC.RejectText + " (" + dres.FromDomain + ")"
		case dmarc.PolicyQuarantine:
			d.Action = Quarantine
			d.QuarantineReason = "DMARC policy of " + dres.FromDomain + ": quarantine"
		}
		if d.Action != Accept {
			d.Log = append(d.Log, slog.String("enforced", dres.Disposition))
		}
	}
	applied := dmarc.PolicyNone
	if d.Action == Reject {
		applied = dmarc.PolicyReject
	} else if d.Action == Quarantine {
		applied = dmarc.PolicyQuarantine
	}
	d.Evaluation = m.newEvaluation(dres, sigs, spfRes, applied, time.Now())
	if d.Evaluation != nil && overridden {
		d.Evaluation.Overrides = append(d.Evaluation.Overrides, arcOverride)
	}
	m.sealARC(d, arValue)
}

// evaluateDMARC runs DMARC for the single From domain. A message without
// exactly one parsable From address is permerror (RFC 9989 §4.4, §5.7.1).
func (m *Message) evaluateDMARC(sigs []dmarc.DKIMResult, spfRes spfOutcome) (arEntry, *dmarc.Result) {
	from, err := mailaddr.FromDomain(fieldValues(m.header, "From"))
	if err != nil {
		return arEntry{result: &authres.DMARCResult{Value: authres.ResultPermError}, comment: err.Error()}, nil
	}
	mode := m.p.dmarcMode()
	spfResult := spfRes.result
	res := dmarc.Evaluate(m.in.ctx, m.p.resolver, dmarc.Input{
		FromDomain: from, SPFResult: spfResult, SPFDomain: spfRes.domain, DKIM: sigs,
	}, mode)
	entry := arEntry{result: &authres.DMARCResult{Value: authres.ResultValue(res.Outcome), From: from}}
	if res.Policy != "" {
		entry.comment = "p=" + res.Policy + " dis=" + res.Disposition
		if res.Testing {
			entry.comment += " t=y"
		}
	} else if res.Reason != "" && res.Outcome != dmarc.OutcomeNone {
		entry.comment = res.Reason
	}
	return entry, &res
}

// arEntry is one resinfo of our Authentication-Results field, with an
// optional comment placed right after the result as RFC 8601 §2.2 allows.
type arEntry struct {
	result  authres.Result
	comment string
	// order, when set, lists the properties of a GenericResult in the
	// order they are written (authres.Format sorts them by name).
	order []string
}

// formatAuthResults renders our field value. go-msgauth's authres.Format
// cannot place comments, so each resinfo is formatted by it alone and the
// comment is inserted after its "method=result"; resinfos are folded one a
// line.
func formatAuthResults(authservID string, entries []arEntry) string {
	var b strings.Builder
	b.WriteString(authservID)
	for _, e := range entries {
		one := authres.Format(authservID, []authres.Result{e.result})
		one = strings.TrimSpace(strings.TrimPrefix(one, authservID+"; "))
		if g, ok := e.result.(*authres.GenericResult); ok && len(e.order) > 0 {
			one = g.Method + "=" + string(g.Value)
			for _, k := range e.order {
				if v := g.Params[k]; v != "" {
					one += " " + formatProperty(k, v)
				}
			}
		}
		if e.comment != "" {
			method, rest, _ := strings.Cut(one, " ")
			one = method + " (" + sanitizeComment(e.comment) + ")"
			if rest != "" {
				one += " " + rest
			}
		}
		b.WriteString(";\r\n\t")
		b.WriteString(one)
	}
	return b.String()
}

// formatProperty formats one "ptype.property=pvalue" with authres's
// quoting rules.
func formatProperty(k, v string) string {
	s := authres.Format("", []authres.Result{&authres.GenericResult{Method: "m", Value: "v", Params: map[string]string{k: v}}})
	return strings.TrimPrefix(s, "; m=v ")
}

// sanitizeComment keeps a comment valid inside RFC 5322 parentheses, in
// ASCII (a header field without SMTPUTF8) and on one short line. ';' becomes
// ',' because simple parsers (go-msgauth's authres among them) split
// resinfos on ';' without skipping comments.
func sanitizeComment(s string) string {
	s = strings.Map(func(r rune) rune {
		switch {
		case r == '(' || r == ')':
			return '['
		case r == '\\':
			return '/'
		case r == ';':
			return ','
		case r < ' ' || r == 0x7f:
			return ' '
		case r > 0x7f:
			return '?'
		}
		return r
	}, s)
	s = strings.ReplaceAll(s, "[", "")
	if len(s) > 120 {
		s = s[:120] + "..."
	}
	return s
}

// AuthservID returns the authserv-id of an Authentication-Results value:
// its first token, skipping whitespace and comments. It does not need the
// rest of the field to be well-formed, so a forged field with garbage after
// our id is still recognised (RFC 8601 §5).
func AuthservID(value string) string {
	id, _ := scanAuthservID(value)
	return id
}

// scanAuthservID reads the authserv-id as AuthservID does; complete is
// false when the value ends before anything follows the id (inside a
// comment, or in the id itself), which matters for a value cut short.
func scanAuthservID(value string) (id string, complete bool) {
	s := value
	depth := 0
	var out strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case depth > 0:
			switch c {
			case '\\':
				i++
			case '(':
				depth++
			case ')':
				depth--
			}
		case c == '(':
			depth++
		case c == ' ' || c == '\t' || c == '\r' || c == '\n':
			if out.Len() > 0 {
				return out.String(), true
			}
		case c == ';':
			return out.String(), true
		default:
			out.WriteByte(c)
		}
	}
	return out.String(), false
}
