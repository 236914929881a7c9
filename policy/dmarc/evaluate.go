package dmarc

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// DMARC results as registered for Authentication-Results (RFC 9989 §9.2,
// RFC 8601), used in Result.Outcome.
const (
	OutcomePass      = "pass"
	OutcomeFail      = "fail"
	OutcomeNone      = "none"
	OutcomeTempError = "temperror"
	OutcomePermError = "permerror"
)

// DKIMResult is the outcome of verifying one DKIM signature.
type DKIMResult struct {
	// Domain is the signature's d= tag.
	Domain string
	// Pass is true when the signature verified.
	Pass bool
}

// Input is what DMARC evaluates for one message.
type Input struct {
	// FromDomain is the Author Domain: the domain of the single RFC 5322
	// From address (see package mailaddr).
	FromDomain string
	// SPFResult is the SPF result for SPFDomain (RFC 7208 §2.6: pass, fail,
	// softfail, neutral, none, temperror, permerror). Only "pass" counts.
	SPFResult string
	// SPFDomain is the MAIL FROM domain, or the HELO domain when MAIL FROM
	// is empty (RFC 9989 §3.2.4, RFC 7208 §2.4).
	SPFDomain string
	// DKIM holds one entry per verified or failed DKIM signature.
	DKIM []DKIMResult
}

// Result is the DMARC verdict for one message.
type Result struct {
	// Outcome is pass, fail, none, temperror or permerror.
	Outcome string
	// Policy is the Domain Owner Assessment Policy that applies to the
	// Author Domain (p, sp or np; RFC 9989 §4.10.1): none, quarantine or
	// reject; empty when no record applies.
	Policy string
	// Disposition is what to do with the message: the Policy when Outcome is
	// fail, lowered one level when Testing (RFC 9989 §4.7, tag t); none in
	// every other case.
	Disposition string
	// Testing is true when the record asks for testing (t=y, or legacy
	// pct=0).
	Testing bool
	// Record is the DMARC Policy Record that applies, if any.
	Record *Record
	// PolicyDomain is the name where Record was found.
	PolicyDomain string
	// OrgDomain is the Organizational Domain of the Author Domain.
	OrgDomain string
	// AlignedDKIM is true when a passing DKIM signature is aligned, and
	// AlignedDKIMDomain is its d= domain.
	AlignedDKIM       bool
	AlignedDKIMDomain string
	// AlignedSPF is true when SPF passed for an aligned domain.
	AlignedSPF bool
	// FromDomain is the normalized Author Domain (header.from).
	FromDomain string
	// Reason explains the outcome in one line, for logs and the
	// Authentication-Results comment.
	Reason string
	// Err is the underlying error for temperror and permerror.
	Err error
}

// lowerPolicy is the t=y rule of RFC 9989 §4.7: one level below.
func lowerPolicy(p string) string {
	switch p {
	case PolicyReject:
		return PolicyQuarantine
	default:
		return PolicyNone
	}
}

// Evaluate applies DMARC to one message (RFC 9989 §5.3): it discovers the
// policy for in.FromDomain, checks whether a passing DKIM signature or SPF
// result is aligned with it, and decides the disposition. It never fails:
// DNS trouble gives temperror, an unusable From domain or record permerror.
func Evaluate(ctx context.Context, r TXTResolver, in Input, mode Mode) Result {
	res := Result{Disposition: PolicyNone}
	from, err := normalizeDomain(in.FromDomain)
	if err != nil {
		res.Outcome, res.Err = OutcomePermError, err
		res.Reason = fmt.Sprintf("unusable From domain %q", truncate(in.FromDomain))
		return res
	}
	res.FromDomain = from
	l := newLookup(r)
	p, perr := discover(ctx, l, from, mode)
	if p != nil {
		res.Record, res.PolicyDomain, res.OrgDomain = p.Record, p.Domain, p.OrgDomain
	}
	switch {
	case errors.Is(perr, ErrNoRecord):
		res.Outcome, res.Reason = OutcomeNone, fmt.Sprintf("no DMARC policy record for %s", from)
		return res
	case errors.Is(perr, ErrSyntax), errors.Is(perr, ErrInvalidPolicy):
		// RFC 9989 §4.10.1: no DMARC processing; RFC 8601 permerror.
		res.Outcome, res.Err = OutcomePermError, perr
		res.Reason = fmt.Sprintf("invalid DMARC record at _dmarc.%s: %v", p.Domain, perr)
		return res
	case perr != nil && p == nil:
		res.Outcome, res.Err = OutcomeTempError, perr
		res.Reason = fmt.Sprintf("DMARC policy discovery for %s: %v", from, perr)
		return res
	}
	// Here p.Record is set; perr, if any, is a temporary error that left the
	// Organizational Domain unknown.
	rec := p.Record
	res.Testing = rec.Testing()

	a := aligner{ctx: ctx, l: l, mode: mode, from: from, org: p.OrgDomain, orgErr: perr}
	var notes []string
	var tempErr error
	if strings.EqualFold(strings.TrimSpace(in.SPFResult), "pass") && in.SPFDomain != "" {
		ok, err := a.aligned(in.SPFDomain, rec.ASPF == "s")
		switch {
		case ok:
			res.AlignedSPF = true
		case err != nil:
			tempErr = err
			notes = append(notes, fmt.Sprintf("SPF %s: %v", truncate(in.SPFDomain), err))
		default:
			notes = append(notes, fmt.Sprintf("SPF %s not aligned", truncate(in.SPFDomain)))
		}
	} else if in.SPFDomain != "" {
		notes = append(notes, fmt.Sprintf("SPF %s for %s", strings.ToLower(strings.TrimSpace(in.SPFResult)), truncate(in.SPFDomain)))
	}
	for _, k := range in.DKIM {
		if !k.Pass {
			notes = append(notes, fmt.Sprintf("DKIM d=%s did not verify", truncate(k.Domain)))
			continue
		}
		ok, err := a.aligned(k.Domain, rec.ADKIM == "s")
		if ok {
			res.AlignedDKIM, res.AlignedDKIMDomain = true, strings.ToLower(k.Domain)
			break
		}
		if err != nil {
			tempErr = err
			notes = append(notes, fmt.Sprintf("DKIM d=%s: %v", truncate(k.Domain), err))
		} else {
			notes = append(notes, fmt.Sprintf("DKIM d=%s not aligned", truncate(k.Domain)))
		}
	}
	alignMode := func(s string) string {
		if s == "s" {
			return "strict"
		}
		return "relaxed"
	}
	switch {
	case res.AlignedDKIM || res.AlignedSPF:
		// RFC 9989 §5.3.5: one aligned Authenticated Identifier is enough.
		res.Outcome = OutcomePass
		var via []string
		if res.AlignedDKIM {
			via = append(via, fmt.Sprintf("DKIM d=%s (%s)", res.AlignedDKIMDomain, alignMode(rec.ADKIM)))
		}
		if res.AlignedSPF {
			via = append(via, fmt.Sprintf("SPF %s (%s)", strings.ToLower(in.SPFDomain), alignMode(rec.ASPF)))
		}
		res.Reason = "aligned " + strings.Join(via, " and ")
	case tempErr != nil:
		// RFC 9989 §5.3.6: neither pass nor fail can be concluded.
		res.Outcome, res.Err = OutcomeTempError, tempErr
		res.Reason = "alignment undetermined: " + strings.Join(notes, "; ")
	default:
		res.Outcome = OutcomeFail
		if len(notes) == 0 {
			notes = append(notes, "no passing SPF or DKIM")
		}
		res.Reason = "no aligned identifier: " + strings.Join(notes, "; ")
	}

	// The requested policy; np needs to know whether the Author Domain
	// exists, which matters only when the message did not pass.
	exists := true
	if p.needsExistence() && res.Outcome == OutcomeFail {
		ok, known, err := domainExists(ctx, l.r, from)
		if err != nil {
			res.Outcome, res.Err = OutcomeTempError, err
			res.Reason += fmt.Sprintf("; existence of %s: %v", from, err)
			res.Policy = ""
			return res
		}
		exists = ok
		if !known {
			res.Reason += "; np not applied: resolver cannot test domain existence"
		} else if !ok {
			res.Reason += fmt.Sprintf("; %s does not exist (np)", from)
		}
	}
	res.Policy = p.RequestedPolicy(exists)
	if res.Outcome == OutcomeFail {
		res.Disposition = res.Policy
		if res.Testing {
			res.Disposition = lowerPolicy(res.Policy)
			res.Reason += "; testing (t=y)"
		}
	}
	return res
}

// aligner checks Identifier Alignment (RFC 9989 §4.4, §4.10.2) against one
// Author Domain.
type aligner struct {
	ctx    context.Context
	l      *lookup
	mode   Mode
	from   string
	org    string // Organizational Domain of from; empty if unknown
	orgErr error  // why org is unknown
}

// aligned reports whether the Authenticated Identifier id is aligned with
// the Author Domain. A non-nil error means a lookup failed temporarily.
func (a *aligner) aligned(id string, strict bool) (bool, error) {
	d, err := normalizeDomain(id)
	if err != nil {
		return false, nil // an unusable identifier aligns with nothing
	}
	if d == a.from {
		// Identical: strictly aligned, hence relaxed too (RFC 9989 §3.2.10).
		return true, nil
	}
	if strict {
		return false, nil
	}
	if a.org == "" {
		return false, a.orgErr
	}
	// The Organizational Domain of d is d or one of its parents, so it can
	// only equal a.org if d is a.org or below it: no lookups otherwise.
	if d != a.org && !strings.HasSuffix(d, "."+a.org) {
		return false, nil
	}
	org, err := orgDomainOf(a.ctx, a.l, d, a.mode)
	if err != nil {
		return false, err
	}
	return org == a.org, nil
}

// domainExists reports whether domain exists (RFC 9989 §3.2.13), and
// whether the resolver could tell at all; see ExistenceResolver.
func domainExists(ctx context.Context, r TXTResolver, domain string) (exists, known bool, err error) {
	if er, ok := r.(ExistenceResolver); ok {
		exists, err := er.DomainExists(ctx, domain)
		if err != nil {
			return true, true, fmt.Errorf("%w: existence of %s: %w", ErrTemporary, domain, err)
		}
		return exists, true, nil
	}
	ipr, ok1 := r.(ipResolver)
	mxr, ok2 := r.(mxResolver)
	if !ok1 || !ok2 {
		return true, false, nil
	}
	// RFC 9091 §2.7 fallback: no A, AAAA or MX means non-existent.
	ips, err := ipr.LookupIPAddr(ctx, domain)
	if err == nil && len(ips) > 0 {
		return true, true, nil
	}
	if err != nil && !isNotFound(err) {
		return true, true, fmt.Errorf("%w: A/AAAA %s: %w", ErrTemporary, domain, err)
	}
	mxs, err := mxr.LookupMX(ctx, domain)
	if err == nil && len(mxs) > 0 {
		return true, true, nil
	}
	if err != nil && !isNotFound(err) {
		return true, true, fmt.Errorf("%w: MX %s: %w", ErrTemporary, domain, err)
	}
	return false, true, nil
}
