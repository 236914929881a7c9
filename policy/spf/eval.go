package spf

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
)

// CheckHost evaluates the SPF record of domain for a client (RFC 7208
// §4): ip is the client's address, sender the <sender> identity
// ("local@domain"; "postmaster@<helo>" for the HELO identity) and helo
// the HELO/EHLO name (for the h macro). An IPv4-mapped IPv6 address is
// taken as the IPv4 address it maps.
//
// The error explains the result: the matching term ("matched all"), the
// limit or syntax error of a permerror, the DNS error of a temperror; it
// is nil for a neutral result by default.
func CheckHost(ctx context.Context, r Resolver, ip netip.Addr, domain, sender, helo string) (Result, error) {
	e := newEvaluation(ctx, r, ip, sender, helo)
	return e.checkHost(domain)
}

// evaluation is the state of one CheckHost: the limits of §4.6.4 count
// over the whole evaluation, includes and redirects included.
type evaluation struct {
	ctx     context.Context
	r       Resolver
	ip      netip.Addr
	network string // "ip4" or "ip6": the client's family

	sender, local, senderDomain, helo string

	terms, voids int

	// validated holds the PTR names of the client that resolve back to
	// it (§5.5), looked up once for ptr and the p macro.
	validated     []string
	validatedDone bool
}

func newEvaluation(ctx context.Context, r Resolver, ip netip.Addr, sender, helo string) *evaluation {
	ip = ip.Unmap()
	e := &evaluation{ctx: ctx, r: r, ip: ip, network: "ip6", sender: sender, helo: helo}
	if ip.Is4() {
		e.network = "ip4"
	}
	// §4.3: the local-part is what precedes the last "@"; an empty one is
	// "postmaster".
	if at := strings.LastIndexByte(sender, '@'); at >= 0 {
		e.local, e.senderDomain = sender[:at], sender[at+1:]
	} else {
		e.senderDomain = sender
	}
	if e.local == "" {
		e.local = "postmaster"
		e.sender = "postmaster@" + e.senderDomain
	}
	return e
}

// checkHost is check_host() for one domain: the top-level one, or an
// include or redirect target.
func (e *evaluation) checkHost(domain string) (Result, error) {
	domain = strings.TrimSuffix(domain, ".")
	// §4.3: a malformed or single-label domain is "none".
	if !validDomain(domain) {
		return None, fmt.Errorf("%w %q", ErrInvalidDomain, domain)
	}
	rec, res, err := e.record(domain)
	if rec == nil {
		return res, err
	}
	for i := range rec.Terms {
		t := &rec.Terms[i]
		if !t.IsMechanism() {
			continue
		}
		if t.CountsLookup() {
			if e.terms++; e.terms > MaxTerms {
				return PermError, ErrLookupLimit
			}
		}
		matched, res, err := e.mechanism(t, domain)
		if res != "" {
			return res, err
		}
		if matched {
			return qualifierResult(t.Qualifier), fmt.Errorf("matched %s", t.Kind)
		}
	}
	if rec.Redirect == nil {
		return Neutral, nil
	}
	// §6.1: redirect applies only when no mechanism matched, and counts as
	// a DNS-querying term.
	if e.terms++; e.terms > MaxTerms {
		return PermError, ErrLookupLimit
	}
	target, err := e.expandDomain(rec.Redirect.Domain, domain)
	if err != nil {
		return PermError, err
	}
	res, err = e.checkHost(target)
	if res == None {
		// §6.1: a redirect target without a record is a permerror; the
		// error says why it has none.
		return PermError, err
	}
	return res, err
}

// record fetches and parses the SPF record of domain (§4.4, §4.5, §4.6).
// When there is none to evaluate, it returns nil and the result.
func (e *evaluation) record(domain string) (*Record, Result, error) {
	txts, err := e.r.LookupTXT(e.ctx, domain)
	if err != nil {
		if isNotFound(err) {
			return nil, None, ErrNoRecord
		}
		return nil, TempError, err
	}
	var spf []string
	for _, t := range txts {
		if IsRecord(t) {
			spf = append(spf, t)
		}
	}
	switch len(spf) {
	case 0:
		return nil, None, ErrNoRecord
	case 1:
	default:
		return nil, PermError, fmt.Errorf("%s: %w", domain, ErrMultipleRecords)
	}
	rec, err := ParseRecord(spf[0])
	if err != nil {
		return nil, PermError, fmt.Errorf("%s: %w", domain, err)
	}
	return rec, "", nil
}

// mechanism evaluates one mechanism for domain, the current <domain>. It
// returns whether it matched, or a non-empty result that ends the
// evaluation (temperror, permerror).
func (e *evaluation) mechanism(t *Term, domain string) (matched bool, res Result, err error) {
	switch t.Kind {
	case KindAll:
		return true, "", nil
	case KindIP4, KindIP6:
		return t.Prefix.Contains(e.ip), "", nil
	}
	target := domain
	if t.Domain != "" {
		if target, err = e.expandDomain(t.Domain, domain); err != nil {
			return false, PermError, err
		}
	}
	switch t.Kind {
	case KindInclude:
		return e.include(target)
	case KindA:
		return e.matchHost(target, t, true)
	case KindMX:
		return e.mx(target, t)
	case KindPTR:
		return e.ptr(target)
	case KindExists:
		// §5.7: an A query whatever the client's family.
		ips, err := e.r.LookupIP(e.ctx, "ip4", target)
		if res, err := e.voidOrError(len(ips), err); res != "" || err != nil {
			return false, res, err
		}
		return len(ips) > 0, "", nil
	}
	return false, PermError, fmt.Errorf("unknown mechanism %s", t.Kind)
}

// include evaluates include:target (§5.2).
func (e *evaluation) include(target string) (bool, Result, error) {
	res, err := e.checkHost(target)
	switch res {
	case Pass:
		return true, "", nil
	case Fail, SoftFail, Neutral:
		return false, "", nil
	case None:
		// §5.2: an include target without a record is a permerror.
		return false, PermError, err
	}
	return false, res, err
}

// matchHost evaluates an a mechanism, or one MX host of mx when void is
// false (an MX host without addresses is not a void lookup of a term).
func (e *evaluation) matchHost(host string, t *Term, void bool) (bool, Result, error) {
	ips, err := e.r.LookupIP(e.ctx, e.network, host)
	if err != nil && isNotFound(err) && !void {
		return false, "", nil
	}
	if res, err := e.voidOrError(len(ips), err); res != "" || err != nil {
		return false, res, err
	}
	bits := e.ip.BitLen()
	if e.network == "ip4" && t.CIDR4 >= 0 {
		bits = t.CIDR4
	} else if e.network == "ip6" && t.CIDR6 >= 0 {
		bits = t.CIDR6
	}
	for _, a := range ips {
		addr, ok := netip.AddrFromSlice(a)
		if !ok {
			continue
		}
		addr = addr.Unmap()
		if addr.BitLen() != e.ip.BitLen() {
			continue
		}
		if p, err := addr.Prefix(bits); err == nil && p.Contains(e.ip) {
			return true, "", nil
		}
	}
	return false, "", nil
}

// mx evaluates mx:target (§5.4).
func (e *evaluation) mx(target string, t *Term) (bool, Result, error) {
	mxs, err := e.r.LookupMX(e.ctx, target)
	if res, err := e.voidOrError(len(mxs), err); res != "" || err != nil {
		return false, res, err
	}
	if len(mxs) > MaxMXHosts {
		return false, PermError, fmt.Errorf("mx:%s: %w", target, ErrTooManyMX)
	}
	for _, mx := range mxs {
		host := strings.TrimSuffix(mx.Host, ".")
		if host == "" {
			continue // a null MX (RFC 7505) has no host
		}
		if matched, res, err := e.matchHost(host, t, false); matched || res != "" {
			return matched, res, err
		}
	}
	return false, "", nil
}

// ptr evaluates ptr:target (§5.5): a validated name of the client that
// is target or a subdomain of it.
func (e *evaluation) ptr(target string) (bool, Result, error) {
	target = strings.ToLower(target)
	for _, name := range e.validatedNames() {
		if name == target || strings.HasSuffix(name, "."+target) {
			return true, "", nil
		}
	}
	return false, "", nil
}

// validatedNames returns the client's PTR names (at most MaxPTRNames of
// them) whose addresses include the client, lowercase without the final
// dot (§5.5). DNS errors are not errors here: a failed PTR lookup
// validates nothing, a failed address lookup skips that name.
func (e *evaluation) validatedNames() []string {
	if e.validatedDone {
		return e.validated
	}
	e.validatedDone = true
	names, err := e.r.LookupAddr(e.ctx, e.ip.String())
	if err != nil {
		return nil
	}
	if len(names) > MaxPTRNames {
		names = names[:MaxPTRNames]
	}
	for _, n := range names {
		n = strings.ToLower(strings.TrimSuffix(n, "."))
		ips, err := e.r.LookupIP(e.ctx, e.network, n)
		if err != nil {
			continue
		}
		for _, a := range ips {
			if addr, ok := netip.AddrFromSlice(a); ok && addr.Unmap() == e.ip {
				e.validated = append(e.validated, n)
				break
			}
		}
	}
	return e.validated
}

// voidOrError classifies the answer of a term's lookup, of n records: a
// temporary error is a temperror; no answer (NXDOMAIN, NODATA or no
// records) is a void lookup, a permerror beyond MaxVoidLookups (§4.6.4);
// an answer gives "" and nil.
func (e *evaluation) voidOrError(n int, err error) (Result, error) {
	if err != nil && !isNotFound(err) {
		return TempError, err
	}
	if err != nil || n == 0 {
		if e.voids++; e.voids > MaxVoidLookups {
			return PermError, ErrVoidLookupLimit
		}
	}
	return "", nil
}

// qualifierResult maps a qualifier to its result (§4.6.2).
func qualifierResult(q byte) Result {
	switch q {
	case '-':
		return Fail
	case '~':
		return SoftFail
	case '?':
		return Neutral
	}
	return Pass
}

// validDomain checks a domain for check_host() (§4.3): at most 253 bytes,
// at least two labels, none empty or longer than 63 bytes.
func validDomain(d string) bool {
	if d == "" || len(d) > 253 || !strings.Contains(d, ".") {
		return false
	}
	for l := range strings.SplitSeq(d, ".") {
		if l == "" || len(l) > 63 {
			return false
		}
	}
	return true
}
