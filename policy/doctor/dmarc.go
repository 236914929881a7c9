package doctor

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/net/publicsuffix"

	"github.com/authmilter/authmilter/policy/dmarc"
	"github.com/authmilter/authmilter/policy/resolve"
)

// DMARCReport is the DMARC part of a report (RFC 9989).
type DMARCReport struct {
	// Record is the text of the DMARC Policy Record that applies.
	Record string `json:"record,omitempty"`
	// PolicyDomain is where Record was found: the domain itself, its
	// Organizational Domain or its Public Suffix Domain.
	PolicyDomain string `json:"policy_domain,omitempty"`
	// Inherited is true when the domain has no record of its own and
	// Record comes from the DNS Tree Walk above it.
	Inherited bool `json:"inherited"`
	// P is the policy for the domain itself, SP for its existing
	// subdomains (sp, else p) and NP for its non-existent subdomains (np,
	// else sp, else p). For an inherited record, P is what applies to the
	// domain as a subdomain of PolicyDomain.
	P  string `json:"p,omitempty"`
	SP string `json:"sp,omitempty"`
	NP string `json:"np,omitempty"`
	// AdkimStrict and AspfStrict are true for strict alignment (s).
	AdkimStrict bool `json:"adkim_strict"`
	AspfStrict  bool `json:"aspf_strict"`
	// Testing is true for t=y (or a legacy pct=0): receivers apply the
	// policy one level lower.
	Testing bool `json:"testing"`
	// PSD is the psd tag: y, n or u.
	PSD string `json:"psd,omitempty"`
	// RUA and RUF are the aggregate and failure report destinations.
	RUA []DMARCDestination `json:"rua,omitempty"`
	RUF []DMARCDestination `json:"ruf,omitempty"`
	// Queried lists the _dmarc names looked up, in order.
	Queried []string `json:"queried,omitempty"`
}

// DMARCDestination is one rua or ruf URI.
type DMARCDestination struct {
	// Address is the URI as published.
	Address string `json:"address"`
	// External is true when the destination's domain is outside the
	// Organizational Domain of the domain, so that it must authorize the
	// reports (RFC 9990, external destination verification).
	External bool `json:"external"`
	// Authorized is true when the destination is internal or publishes
	// <policy domain>._report._dmarc.<destination> TXT "v=DMARC1".
	Authorized bool `json:"authorized"`
}

// HasPolicy reports whether a DMARC Policy Record applies to the domain.
// It is false for a nil report.
func (d *DMARCReport) HasPolicy() bool {
	return d != nil && d.P != ""
}

// maxDMARCDestinations bounds the rua and ruf URIs checked per tag: each
// costs DNS lookups, and a hostile record may list hundreds.
const maxDMARCDestinations = 10

// checkDMARC checks the DMARC policy of the domain and its subdomains.
func checkDMARC(ctx context.Context, e *env) (*DMARCReport, []Finding) {
	c := &dmarcChecker{e: e}
	rep := c.run(ctx)
	return rep, c.fs
}

// dmarcChecker collects the findings of one DMARC check.
type dmarcChecker struct {
	e  *env
	fs []Finding
}

func (c *dmarcChecker) add(sev Severity, code, subject, msg, fix string) {
	c.fs = append(c.fs, Finding{Check: CheckDMARC, Severity: sev, Code: code, Subject: subject, Message: msg, Fix: fix})
}

func (c *dmarcChecker) dnsError(subject, what string, err error) {
	c.fs = append(c.fs, dnsFailure(CheckDMARC, "dmarc-dns-error", subject, what, err))
}

// ownRecords returns the v=DMARC1 TXT records at name; ok is false after
// a DNS failure (already reported).
func (c *dmarcChecker) ownRecords(ctx context.Context, name string) (recs []string, ok bool) {
	txts, err := c.e.r.LookupTXT(ctx, name)
	if err != nil {
		if resolve.IsNotFound(err) {
			return nil, true
		}
		c.dnsError("", "TXT "+name, err)
		return nil, false
	}
	for _, t := range txts {
		if _, err := dmarc.ParseRecord(t); !errors.Is(err, dmarc.ErrNotDMARC) {
			recs = append(recs, t)
		}
	}
	return recs, true
}

func (c *dmarcChecker) run(ctx context.Context) *DMARCReport {
	domain := c.e.domain
	name := "_dmarc." + domain
	own, ok := c.ownRecords(ctx, name)
	if !ok {
		return nil
	}
	if len(own) > 1 {
		// RFC 9989 §4.10 step 2: several records at one name count as none.
		c.add(Error, "dmarc-multiple", "", fmt.Sprintf("%d DMARC records at %s: receivers ignore them all", len(own), name),
			"keep exactly one v=DMARC1 TXT record at "+name)
	}
	pol, err := dmarc.Discover(ctx, c.e.r, domain, c.e.opt.DMARCMode)
	switch {
	case errors.Is(err, dmarc.ErrTemporary):
		c.dnsError("", "DMARC policy discovery for "+domain, err)
		return nil
	case errors.Is(err, dmarc.ErrNoRecord):
		if len(own) == 0 {
			c.add(Error, "dmarc-missing", "", fmt.Sprintf("no DMARC record at %s nor above it: receivers apply no DMARC policy and send no reports", name),
				fmt.Sprintf("publish %s TXT \"v=DMARC1; p=none; rua=mailto:dmarc-reports@%s\" and tighten p once the reports show your senders pass", name, domain))
		}
		return nil
	case errors.Is(err, dmarc.ErrSyntax), errors.Is(err, dmarc.ErrInvalidPolicy):
		where := "_dmarc." + pol.Domain
		c.add(Error, "dmarc-syntax", "", fmt.Sprintf("the DMARC record at %s is unusable: %s; receivers apply no DMARC policy", where, dmarcErrText(err)),
			"correct the record at "+where+" (each tag once; p, sp and np one of none, quarantine, reject)")
		return nil
	case err != nil:
		c.add(Error, "dmarc-syntax", "", fmt.Sprintf("DMARC policy discovery for %s: %v", domain, err), "correct the record at "+name)
		return nil
	}
	rec := pol.Record
	rep := &DMARCReport{PolicyDomain: pol.Domain, Inherited: pol.Subdomain, PSD: rec.PSD, Queried: pol.Queried,
		AdkimStrict: rec.ADKIM == "s", AspfStrict: rec.ASPF == "s", Testing: rec.Testing()}
	rep.SP = cmp.Or(rec.SP, rec.P)
	rep.NP = cmp.Or(rec.NP, rec.SP, rec.P)
	rep.P = rec.P
	if pol.Subdomain {
		rep.P = pol.RequestedPolicy(true)
		rep.Record = c.recordText(ctx, pol.Domain, own)
	} else if len(own) == 1 {
		rep.Record = own[0]
	}
	c.policyFindings(rep, pol, rec)
	c.tagFindings(rep, pol, rec)
	rep.RUA = c.destinations(ctx, pol, "rua", rec.RUA)
	rep.RUF = c.destinations(ctx, pol, "ruf", rec.RUF)
	if len(rec.RUA) == 0 {
		c.add(Warn, "dmarc-no-rua", "", fmt.Sprintf("the DMARC record at _dmarc.%s asks for no aggregate reports (no rua): you will not see who sends mail as %s", pol.Domain, domain),
			fmt.Sprintf("add rua=mailto:dmarc-reports@%s to the record at _dmarc.%s", pol.Domain, pol.Domain))
	}
	return rep
}

// recordText returns the raw text of the DMARC record at _dmarc.<d>, for
// the report; "" when it cannot be had again.
func (c *dmarcChecker) recordText(ctx context.Context, d string, fallback []string) string {
	txts, err := c.e.r.LookupTXT(ctx, "_dmarc."+d)
	if err != nil {
		return ""
	}
	for _, t := range txts {
		if _, err := dmarc.ParseRecord(t); !errors.Is(err, dmarc.ErrNotDMARC) {
			return t
		}
	}
	if len(fallback) == 1 {
		return fallback[0]
	}
	return ""
}

// policyFindings reports where the policy comes from and what it asks.
func (c *dmarcChecker) policyFindings(rep *DMARCReport, pol *dmarc.Policy, rec *dmarc.Record) {
	domain := c.e.domain
	if pol.Subdomain {
		tag := "sp"
		if rec.SP == "" {
			tag = "p"
		}
		sev, fix := OK, ""
		from := "its Organizational Domain"
		if pol.FromPSD {
			sev, from = Warn, "the Public Suffix Domain (psd=y)"
			fix = fmt.Sprintf("publish your own record at _dmarc.%s or at your Organizational Domain", domain)
		}
		c.add(sev, "dmarc-inherited", "", fmt.Sprintf("no DMARC record at _dmarc.%s: the record of %s %s applies (%s=%s; np=%s for non-existent subdomains)",
			domain, from, pol.Domain, tag, rep.P, rep.NP), fix)
	} else {
		c.add(OK, "dmarc-record", "", fmt.Sprintf("DMARC record at _dmarc.%s: p=%s, subdomains sp=%s, non-existent subdomains np=%s", domain, rep.P, rep.SP, rep.NP), "")
	}
	if rep.P == dmarc.PolicyNone {
		c.add(Warn, "dmarc-monitoring-only", "", fmt.Sprintf("the DMARC policy for %s is none: receivers only report, mail that fails DMARC is delivered as usual", domain),
			"move to p=quarantine, then p=reject, once the aggregate reports show that all your senders pass")
	} else {
		c.add(OK, "dmarc-enforced", "", fmt.Sprintf("mail from %s that fails DMARC is to be handled as p=%s says", domain, rep.P), "")
	}
	if rep.Testing {
		c.add(Warn, "dmarc-testing", "", fmt.Sprintf("the DMARC record at _dmarc.%s asks for testing (t=y or pct=0): receivers apply its policy one level lower (RFC 9989 §4.7)", pol.Domain),
			"remove t=y (or pct=0) once the reports show that your senders pass")
	}
}

// tagFindings reports psd, alignment, pct and the repaired syntax errors.
func (c *dmarcChecker) tagFindings(rep *DMARCReport, pol *dmarc.Policy, rec *dmarc.Record) {
	if rec.PSD == "y" && !pol.FromPSD {
		if suffix, _ := publicsuffix.PublicSuffix(pol.Domain); suffix != pol.Domain {
			c.add(Warn, "dmarc-psd-not-suffix", "", fmt.Sprintf("the DMARC record at _dmarc.%s says psd=y but %s is not a public suffix: receivers take the name below it as the Organizational Domain", pol.Domain, pol.Domain),
				"remove psd=y (only public suffix operators publish it)")
		}
	}
	mode := func(strict bool) string {
		if strict {
			return "strict"
		}
		return "relaxed"
	}
	msg := fmt.Sprintf("alignment: DKIM %s, SPF %s", mode(rep.AdkimStrict), mode(rep.AspfStrict))
	if rep.AdkimStrict || rep.AspfStrict {
		msg += fmt.Sprintf("; strict alignment fails mail signed by or bounced through subdomains of %s (e.g. d=mail.%s)", c.e.domain, c.e.domain)
	}
	c.add(OK, "dmarc-alignment", "", msg, "")
	if rec.PCT >= 0 {
		c.add(Warn, "dmarc-pct-obsolete", "", fmt.Sprintf("the DMARC record at _dmarc.%s has pct=%d: RFC 9989 removed pct and receivers ignore it (except pct=0, read as t=y)", pol.Domain, rec.PCT),
			"remove pct; use t=y while testing")
	}
	for _, w := range rec.Warnings {
		c.add(Warn, "dmarc-tag-ignored", "", fmt.Sprintf("the DMARC record at _dmarc.%s: %s", pol.Domain, clipText(w)),
			"correct the tag; receivers ignore or replace it by its default")
	}
}

// destinations checks the rua or ruf URIs of the record.
func (c *dmarcChecker) destinations(ctx context.Context, pol *dmarc.Policy, tag string, uris []string) []DMARCDestination {
	var out []DMARCDestination
	if len(uris) > maxDMARCDestinations {
		c.add(Warn, "dmarc-"+tag+"-too-many", "", fmt.Sprintf("%s lists %d URIs: doctor checks the first %d, receivers may send to fewer", tag, len(uris), maxDMARCDestinations),
			"list one or two report addresses")
		uris = uris[:maxDMARCDestinations]
	}
	for _, uri := range uris {
		out = append(out, c.destination(ctx, pol, tag, uri))
	}
	return out
}

// destination checks one rua or ruf URI: an address outside the
// Organizational Domain must authorize the reports (RFC 9990, external
// destination verification): <policy domain>._report._dmarc.<host> TXT
// "v=DMARC1...".
func (c *dmarcChecker) destination(ctx context.Context, pol *dmarc.Policy, tag, uri string) DMARCDestination {
	d := DMARCDestination{Address: uri}
	subject := clipText(uri)
	host, ok := mailtoHost(uri)
	if !ok {
		c.add(Warn, "dmarc-"+tag+"-not-mailto", subject, fmt.Sprintf("%s %s is not a mailto: URI with one address: receivers send reports by mail only", tag, subject),
			"use a mailto: address")
		return d
	}
	destOrg, err := dmarc.OrgDomain(ctx, c.e.r, host, c.e.opt.DMARCMode)
	switch {
	case errors.Is(err, dmarc.ErrTemporary):
		c.dnsError(subject, "the Organizational Domain of "+host, err)
		return d
	case err != nil:
		c.add(Warn, "dmarc-"+tag+"-not-mailto", subject, fmt.Sprintf("%s %s: %v", tag, subject, err), "use a mailto: address with a valid domain")
		return d
	}
	if pol.OrgDomain != "" && destOrg == pol.OrgDomain {
		d.Authorized = true
		c.add(OK, "dmarc-"+tag+"-ok", subject, fmt.Sprintf("%s %s is inside the Organizational Domain %s", tag, subject, pol.OrgDomain), "")
		return d
	}
	d.External = true
	name := pol.Domain + "._report._dmarc." + host
	recs, ok := c.authorization(ctx, subject, name)
	if !ok {
		return d
	}
	if len(recs) == 0 {
		c.add(Error, "dmarc-"+tag+"-unauthorized", subject,
			fmt.Sprintf("%s %s is outside %s and %s has no v=DMARC1 TXT record: receivers send it no reports", tag, subject, cmp.Or(pol.OrgDomain, pol.Domain), name),
			fmt.Sprintf("ask the receiver of the reports to publish %s TXT \"v=DMARC1\", or use an address in your own domain", name))
		return d
	}
	if other := redirectHost(recs[0], host); other != "" {
		// RFC 9990, external destination verification step 9: a rua in
		// the authorizing record replaces the destination, and one on
		// another host voids it (as our own report sender does).
		c.add(Error, "dmarc-"+tag+"-unauthorized", subject,
			fmt.Sprintf("%s %s: the authorizing record at %s redirects reports to another host (%s): receivers send none", tag, subject, name, clipText(other)),
			fmt.Sprintf("ask the receiver of the reports to publish %s TXT \"v=DMARC1\" without a rua on another host, or use an address in your own domain", name))
		return d
	}
	d.Authorized = true
	c.add(OK, "dmarc-"+tag+"-ok", subject, fmt.Sprintf("%s %s is external and authorizes the reports at %s", tag, subject, name), "")
	return d
}

// redirectHost returns the host of a mailto: rua in an authorizing record
// that is not host, or "".
func redirectHost(txt, host string) string {
	rec, err := dmarc.ParseRecord(txt)
	if err != nil {
		return ""
	}
	for _, u := range rec.RUA {
		if h, ok := mailtoHost(u); ok && h != host {
			return h
		}
	}
	return ""
}

// authorization returns the v=DMARC1 records at an external destination's
// authorization name; ok is false after a DNS failure (reported).
func (c *dmarcChecker) authorization(ctx context.Context, subject, name string) (recs []string, ok bool) {
	if len(name) > 253 {
		return nil, true // cannot exist in the DNS (RFC 1035 §2.3.4)
	}
	txts, err := c.e.r.LookupTXT(ctx, name)
	if err != nil {
		if resolve.IsNotFound(err) {
			return nil, true
		}
		c.dnsError(subject, "TXT "+name, err)
		return nil, false
	}
	for _, t := range txts {
		if _, err := dmarc.ParseRecord(t); !errors.Is(err, dmarc.ErrNotDMARC) {
			recs = append(recs, t)
		}
	}
	return recs, true
}

// mailtoHost returns the lower-case domain of a mailto: URI naming one
// address.
func mailtoHost(uri string) (string, bool) {
	scheme, rest, ok := strings.Cut(uri, ":")
	if !ok || !strings.EqualFold(scheme, "mailto") {
		return "", false
	}
	rest, _, _ = strings.Cut(rest, "?")
	if strings.Contains(rest, ",") {
		return "", false
	}
	at := strings.LastIndexByte(rest, '@')
	if at <= 0 || at == len(rest)-1 {
		return "", false
	}
	return strings.ToLower(strings.TrimSuffix(rest[at+1:], ".")), true
}

// dmarcErrText is err's text without the package prefix dmarc.ParseRecord
// puts before the tag.
func dmarcErrText(err error) string {
	return clipText(strings.TrimPrefix(err.Error(), "dmarc: "))
}
