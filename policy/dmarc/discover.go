package dmarc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"

	"golang.org/x/net/idna"
	"golang.org/x/net/publicsuffix"
)

// maxWalkQueries is the most queries one DNS Tree Walk makes (RFC 9989
// §4.10), and maxWalkLabels the label count a long name is shortened to
// after the first query.
const (
	maxWalkQueries = 8
	maxWalkLabels  = 7
)

// Policy is the outcome of DMARC policy discovery for an Author Domain.
type Policy struct {
	// FromDomain is the Author Domain, normalized (lower case, A-labels).
	FromDomain string
	// Record is the DMARC Policy Record that applies.
	Record *Record
	// Domain is the DMARC Policy Domain, where Record was found (RFC 9989
	// §3.2.5): the Author Domain, its Organizational Domain, or its Public
	// Suffix Domain.
	Domain string
	// OrgDomain is the Organizational Domain of the Author Domain.
	OrgDomain string
	// Subdomain is true when Record was found above the Author Domain, so
	// that sp or np applies instead of p (RFC 9989 §4.10.1).
	Subdomain bool
	// FromPSD is true when Record is a Public Suffix Domain's (psd=y)
	// record that applies because the Organizational Domain has none.
	FromPSD bool
	// Queried lists the names looked up, in order, for logging.
	Queried []string
}

// RequestedPolicy returns the Domain Owner Assessment Policy that applies to
// the Author Domain (RFC 9989 §4.10.1): p for the Policy Domain itself; for
// a subdomain, np if it does not exist and np is set, else sp if set, else
// p. It ignores t; see Record.Testing.
func (p *Policy) RequestedPolicy(fromExists bool) string {
	r := p.Record
	if !p.Subdomain {
		return r.P
	}
	if !fromExists && r.NP != "" {
		return r.NP
	}
	if r.SP != "" {
		return r.SP
	}
	return r.P
}

// needsExistence reports whether RequestedPolicy depends on whether the
// Author Domain exists.
func (p *Policy) needsExistence() bool {
	return p.RequestedPolicy(true) != p.RequestedPolicy(false)
}

// normalizeDomain lower-cases a domain, converts U-labels to A-labels
// (RFC 9989 §5.3.1) and checks that it can be looked up.
func normalizeDomain(d string) (string, error) {
	d = strings.TrimSuffix(strings.TrimSpace(d), ".")
	a, err := idna.Lookup.ToASCII(d)
	if err != nil {
		return "", fmt.Errorf("%w: %q: %w", ErrInvalidDomain, truncate(d), err)
	}
	a = strings.ToLower(a)
	if a == "" || len(a) > 253 {
		return "", fmt.Errorf("%w: %q", ErrInvalidDomain, truncate(d))
	}
	for _, l := range strings.Split(a, ".") {
		if l == "" || len(l) > 63 {
			return "", fmt.Errorf("%w: %q", ErrInvalidDomain, truncate(d))
		}
	}
	return a, nil
}

// nameResult is what a _dmarc query found at one name.
type nameResult struct {
	rec   *Record // the single DMARC record, nil if none or several
	err   error   // ErrSyntax / ErrInvalidPolicy of rec, if any
	count int     // number of v=DMARC1 records
}

// lookup does the DNS queries of one evaluation, remembering answers so that
// the several walks of one message never ask the same name twice.
type lookup struct {
	r       TXTResolver
	cache   map[string]nameResult
	queried []string
}

func newLookup(r TXTResolver) *lookup {
	return &lookup{r: r, cache: map[string]nameResult{}}
}

// isNotFound reports whether err means "no such record" (NXDOMAIN or
// NODATA) rather than a temporary failure.
func isNotFound(err error) bool {
	var de *net.DNSError
	return errors.As(err, &de) && de.IsNotFound
}

// dmarcAt returns the DMARC records at _dmarc.<domain>.
func (l *lookup) dmarcAt(ctx context.Context, domain string) (nameResult, error) {
	if res, ok := l.cache[domain]; ok {
		return res, nil
	}
	name := "_dmarc." + domain
	var res nameResult
	if len(name) > 253 {
		// Too long to exist in the DNS (RFC 1035 §2.3.4).
		l.cache[domain] = res
		return res, nil
	}
	l.queried = append(l.queried, name)
	txts, err := l.r.LookupTXT(ctx, name)
	if err != nil {
		if isNotFound(err) {
			l.cache[domain] = res
			return res, nil
		}
		return res, fmt.Errorf("%w: TXT %s: %w", ErrTemporary, name, err)
	}
	for _, txt := range txts {
		rec, err := parseRecord(txt)
		if errors.Is(err, ErrNotDMARC) {
			continue // RFC 9989 §4.10 step 2
		}
		res.count++
		res.rec, res.err = rec, err
	}
	if res.count != 1 {
		// RFC 9989 §4.10 step 2: several DMARC records at one name are all
		// discarded.
		res.rec, res.err = nil, nil
	}
	l.cache[domain] = res
	return res, nil
}

// walkStep is one name visited by a tree walk.
type walkStep struct {
	domain string
	res    nameResult
}

// walk is the result of a DNS Tree Walk.
type walk struct {
	start string
	steps []walkStep
}

// walkNames returns the names a tree walk from domain visits, in order
// (RFC 9989 §4.10 steps 3, 4 and 7): the domain, then, if it has 8 or more
// labels, its 7-label suffix, then each shorter suffix down to one label.
func walkNames(domain string) []string {
	labels := strings.Split(domain, ".")
	names := []string{domain}
	next := len(labels) - 1
	if len(labels) >= 8 {
		next = maxWalkLabels
	}
	for n := next; n >= 1; n-- {
		names = append(names, strings.Join(labels[len(labels)-n:], "."))
	}
	return names
}

// treeWalk performs the DNS Tree Walk from domain (RFC 9989 §4.10). It stops
// at a single record with psd=y or psd=n, or after the one-label name.
func treeWalk(ctx context.Context, l *lookup, domain string) (*walk, error) {
	w := &walk{start: domain}
	for _, name := range walkNames(domain) {
		res, err := l.dmarcAt(ctx, name)
		if err != nil {
			return w, err
		}
		w.steps = append(w.steps, walkStep{domain: name, res: res})
		if res.rec != nil && (res.rec.PSD == "y" || res.rec.PSD == "n") {
			break // RFC 9989 §4.10 steps 2 and 6
		}
	}
	return w, nil
}

// orgDomain selects the Organizational Domain from a walk (RFC 9989
// §4.10.2), and returns the step of the psd=y record it used, if any.
func (w *walk) orgDomain() (org string, psd *walkStep) {
	var fewest *walkStep
	for i := range w.steps {
		s := &w.steps[i]
		if s.res.rec == nil {
			continue
		}
		switch {
		case s.res.rec.PSD == "n":
			return s.domain, nil // rule 1
		case s.res.rec.PSD == "y" && i > 0:
			// Rule 2: the name one label below the PSD, towards start.
			n := strings.Count(s.domain, ".") + 2
			labels := strings.Split(w.start, ".")
			return strings.Join(labels[len(labels)-n:], "."), s
		}
		fewest = s // steps go from the most labels to the fewest
	}
	if fewest != nil {
		return fewest.domain, nil // rule 3
	}
	return w.start, nil
}

// pslOrgDomain is the RFC 7489 §3.2 Organizational Domain: the public
// suffix plus one label, or the domain itself when it is a public suffix or
// has a single label.
func pslOrgDomain(domain string) string {
	org, err := publicsuffix.EffectiveTLDPlusOne(domain)
	if err != nil {
		return domain
	}
	return org
}

// orgDomainOf returns the Organizational Domain of domain.
func orgDomainOf(ctx context.Context, l *lookup, domain string, mode Mode) (string, error) {
	if mode == PSL {
		return pslOrgDomain(domain), nil
	}
	w, err := treeWalk(ctx, l, domain)
	if err != nil {
		return "", err
	}
	org, _ := w.orgDomain()
	return org, nil
}

// OrgDomain returns the Organizational Domain of domain (lower-case
// A-labels), as relaxed alignment uses it: by the DNS Tree Walk (RFC 9989
// §4.10.2, honouring psd=y and psd=n) or, in PSL mode, by the public suffix
// list. Errors wrap ErrTemporary or ErrInvalidDomain.
func OrgDomain(ctx context.Context, r TXTResolver, domain string, mode Mode) (string, error) {
	d, err := normalizeDomain(domain)
	if err != nil {
		return "", err
	}
	return orgDomainOf(ctx, newLookup(r), d, mode)
}

// Discover finds the DMARC Policy Record that applies to fromDomain, the
// Author Domain (RFC 9989 §4.10.1), and its Organizational Domain.
//
// Errors wrap ErrNoRecord (the DMARC mechanism does not apply),
// ErrTemporary (a lookup failed; the message can be tried again), ErrSyntax
// or ErrInvalidPolicy (the applicable record is unusable: permerror), or
// ErrInvalidDomain. With ErrSyntax or ErrInvalidPolicy the *Policy is
// returned too, with the best-effort Record, for logging; so it is with
// ErrTemporary when the Author Domain's own record was found but a lookup
// above it failed (OrgDomain is then empty). Discover does not
// decide whether the Author Domain exists; Evaluate does that when np
// matters.
func Discover(ctx context.Context, r TXTResolver, fromDomain string, mode Mode) (*Policy, error) {
	d, err := normalizeDomain(fromDomain)
	if err != nil {
		return nil, err
	}
	l := newLookup(r)
	p, err := discover(ctx, l, d, mode)
	if p != nil {
		p.Queried = l.queried
	}
	return p, err
}

// discover is Discover on a normalized domain with a shared lookup. On a
// temporary error after the Author Domain's own record was found it still
// returns the Policy, with OrgDomain empty.
func discover(ctx context.Context, l *lookup, from string, mode Mode) (*Policy, error) {
	p := &Policy{FromDomain: from}
	if mode == PSL {
		return discoverPSL(ctx, l, p)
	}
	w, err := treeWalk(ctx, l, from)
	if len(w.steps) > 0 && w.steps[0].res.rec != nil {
		// The Author Domain's own record applies (RFC 9989 §4.10.1).
		p.Record, p.Domain = w.steps[0].res.rec, from
		if w.steps[0].res.err != nil {
			return p, w.steps[0].res.err // unusable record: permerror
		}
		if err != nil {
			return p, err
		}
		p.OrgDomain, _ = w.orgDomain()
		return p, nil
	}
	if err != nil {
		return nil, err
	}
	org, psd := w.orgDomain()
	p.OrgDomain = org
	for _, s := range w.steps {
		if s.domain == org && s.res.rec != nil {
			p.Record, p.Domain, p.Subdomain = s.res.rec, org, true
			return p, s.res.err
		}
	}
	// The Organizational Domain has no record (it was not queried if the
	// 8-query shortcut skipped it): the PSD's record applies.
	if psd != nil {
		p.Record, p.Domain, p.Subdomain, p.FromPSD = psd.res.rec, psd.domain, true, true
		return p, psd.res.err
	}
	return nil, fmt.Errorf("%w for %s", ErrNoRecord, from)
}

// discoverPSL is RFC 7489 §6.6.3 policy discovery.
func discoverPSL(ctx context.Context, l *lookup, p *Policy) (*Policy, error) {
	p.OrgDomain = pslOrgDomain(p.FromDomain)
	res, err := l.dmarcAt(ctx, p.FromDomain)
	if err != nil {
		return nil, err
	}
	if res.rec != nil {
		p.Record, p.Domain = res.rec, p.FromDomain
		return p, res.err
	}
	if p.OrgDomain != p.FromDomain {
		res, err := l.dmarcAt(ctx, p.OrgDomain)
		if err != nil {
			return nil, err
		}
		if res.rec != nil {
			p.Record, p.Domain, p.Subdomain = res.rec, p.OrgDomain, true
			return p, res.err
		}
	}
	return nil, fmt.Errorf("%w for %s", ErrNoRecord, p.FromDomain)
}
