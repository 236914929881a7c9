// Package dnscheck tells whether a DKIM key record is published the way
// receivers will see it, everywhere, and whether a retired key's record is
// really gone.
//
// A key record is looked up two ways:
//
//   - the public path: the TXT at <selector>._domainkey.<domain> through the
//     recursive resolvers, following CNAMEs, as a receiver's resolver finds
//     it from the root side of the delegations;
//   - in Nameservers mode, also every authoritative nameserver of the zone
//     that holds the final name (after CNAMEs), asked directly with RD=0:
//     a lagging secondary is seen before a receiver gets permerror from it.
//
// A key is Published only when the public path and every nameserver serve
// its record. When the public path does not find it but the servers we
// publish to (Config.Ours) serve it where we publish it, the customer's
// delegation (NS) or CNAME may be missing: DelegationMissing, with the
// records to add, but only when the public path really ends elsewhere (in
// the customer's own zone, at a CNAME to another name, in a zone of the
// same name delegated to other nameservers). When it reaches the zone we
// publish to and that zone is delegated to our nameservers, the record only
// needs time: a secondary lags behind the primary (asked by the resolver,
// or the primary is hidden), or the resolver still has a negative answer
// cached from before the record, the delegation or the CNAME existed (the
// customer's nameservers, asked directly, already refer to our zone or
// serve the CNAME): Partial, saying which. Temporary failures anywhere make
// the result TempError, never a guess: nothing is activated on partial
// information.
//
// Everything read from DNS is bounded: CNAME chains (8 names), the zone
// walk (16 names), the nameservers asked (13 addresses, the most a referral
// holds), answer sizes (UDP 1232 bytes, then TCP).
//
// The package knows no configuration: the daemon and `authmilter keys`
// give it the resolvers, the mode and the servers they publish to.
package dnscheck

import (
	"github.com/authmilter/authmilter/internal/dnstext"

	"cmp"
	"context"
	"crypto"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"

	"github.com/authmilter/authmilter/keys"
)

// Mode is how publication is checked (config keys.check).
type Mode string

// The modes.
const (
	// Nameservers asks the public path and every authoritative nameserver.
	Nameservers Mode = "nameservers"
	// ResolverOnly asks only the public path, for hosts that cannot reach
	// authoritative servers (a firewall that lets out only the resolver).
	ResolverOnly Mode = "resolver"
)

// Bounds on what is asked.
const (
	// MaxChain is the most names a CNAME chain may have, the asked one
	// included.
	MaxChain = 8
	// MaxServers is the most nameserver addresses asked per zone.
	MaxServers = 13
	// maxZoneWalk is the most names asked for an SOA to find a zone.
	maxZoneWalk = 16
	// parallel is how many keys CheckAll checks at a time.
	parallel = 32
	// DefaultTimeout bounds one query when Config.Timeout is zero.
	DefaultTimeout = 5 * time.Second
)

// Config configures a Checker.
type Config struct {
	// Servers are the recursive resolvers, "ip:port", asked in order.
	Servers []string
	// Timeout bounds each query. Default DefaultTimeout.
	Timeout time.Duration
	// Mode is Nameservers (the default) or ResolverOnly.
	Mode Mode
	// Ours are the authoritative servers ("ip:port") we publish key
	// records to ([keys.publish] server and targets): when the public path
	// does not find a record that they serve, the delegation is missing.
	// At most MaxServers are asked.
	Ours []string
}

// Checker checks key records. It is safe for concurrent use.
type Checker struct {
	servers []string
	ours    []string
	timeout time.Duration
	mode    Mode
	// nsPort, when set, replaces port 53 for the nameservers found in DNS
	// (tests run them on a free port).
	nsPort string
	cache  cache
}

// New returns a Checker for cfg.
func New(cfg Config) (*Checker, error) {
	c := &Checker{timeout: cmp.Or(cfg.Timeout, DefaultTimeout), mode: cmp.Or(cfg.Mode, Nameservers)}
	if c.mode != Nameservers && c.mode != ResolverOnly {
		return nil, fmt.Errorf("dnscheck: unknown mode %q (want %s or %s)", cfg.Mode, Nameservers, ResolverOnly)
	}
	if len(cfg.Servers) == 0 {
		return nil, fmt.Errorf("dnscheck: no resolvers")
	}
	for _, list := range []struct {
		in  []string
		out *[]string
	}{{cfg.Servers, &c.servers}, {cfg.Ours, &c.ours}} {
		for _, s := range list.in {
			ap, err := netip.ParseAddrPort(s)
			if err != nil {
				return nil, fmt.Errorf("dnscheck: server %q: want ip:port: %w", s, err)
			}
			if !slices.Contains(*list.out, ap.String()) {
				*list.out = append(*list.out, ap.String())
			}
		}
	}
	if len(c.ours) > MaxServers {
		c.ours = c.ours[:MaxServers]
	}
	return c, nil
}

// Mode returns the checker's mode.
func (c *Checker) Mode() Mode { return c.mode }

// Query is one key to check.
type Query struct {
	// Domain and Selector name the record, <Selector>._domainkey.<Domain>.
	Domain, Selector string
	// Public is the public key the record must hold.
	Public crypto.PublicKey
	// Known are the p= values (or whole TXT records) this installation
	// knows as its own: the domain's keys, the records its state says were
	// published. A valid record of a key not among them is Foreign. Empty:
	// Foreign is not told from Mismatch.
	Known []string
	// PublishName is where we publish the record when not at its own name:
	// in CNAME mode the target in the provider's zone
	// (keys.CNAMETarget). Empty: at the record's own name (a delegated
	// selector zone, or the customer's zone).
	PublishName string
}

// KeyQuery returns the Query for k with its own public key as the one
// known key.
func KeyQuery(k *keys.Key) Query {
	return Query{Domain: k.Domain, Selector: k.Selector, Public: k.Public(), Known: []string{k.PublicKeyData()}}
}

// Server is what one nameserver address answered.
type Server struct {
	// Name is the nameserver's name (from the NS RRset; empty for Ours).
	Name string `json:"name,omitempty"`
	// Addr is the address asked, "ip:port".
	Addr string `json:"addr"`
	// State is Published when it serves the key's record, TempError when
	// it did not answer, else what it serves (Missing, Mismatch...).
	State keys.State `json:"state"`
	// Detail explains a state other than Published.
	Detail string `json:"detail,omitempty"`
	// Unreachable is set when the address cannot be reached from here at
	// all (no route, no IPv6): ignored when another address of the same
	// nameserver answered.
	Unreachable bool `json:"unreachable,omitempty"`

	ttl uint32   // TTL of the TXT records served
	txt []string // the TXT values served
	// cname is the target of the CNAME served at the name, if any.
	cname string
	// referral is the zone a non-authoritative answer delegated the name
	// to, with referralNS its NS names (at most MaxServers), if any.
	referral   string
	referralNS []string
}

// Result is the publication state of one key.
type Result struct {
	// State is the verdict: Published, Partial, DelegationMissing,
	// Missing, Mismatch, Foreign, Revoked or TempError.
	State keys.State `json:"state"`
	// Detail explains a state other than Published.
	Detail string `json:"detail,omitempty"`
	// Name is the record's name, <selector>._domainkey.<domain>.
	Name string `json:"name"`
	// FinalName is the name that holds the record after CNAMEs (Name when
	// there are none).
	FinalName string `json:"final_name"`
	// CNAMEs are the names the public path went through after Name, the
	// last being FinalName.
	CNAMEs []string `json:"cnames,omitempty"`
	// PublicState and PublicDetail are what the public path alone says.
	PublicState  keys.State `json:"public_state"`
	PublicDetail string     `json:"public_detail,omitempty"`
	// TXT are the TXT values the public path found at FinalName.
	TXT []string `json:"txt,omitempty"`
	// Zone is the zone that holds FinalName (Nameservers mode).
	Zone string `json:"zone,omitempty"`
	// Nameservers are the answers of its nameservers, one per address.
	Nameservers []Server `json:"nameservers,omitempty"`
	// Ours are the answers of the servers we publish to, asked when the
	// public path does not find the record.
	Ours []Server `json:"ours,omitempty"`
	// Add are the records the customer must add to their zone
	// (DelegationMissing), in zone-file form.
	Add []string `json:"add,omitempty"`
	// Found is what the public path found instead (DelegationMissing).
	Found string `json:"found,omitempty"`
	// NegativeTTL is how long resolvers may cache "no such record" from
	// the zone: min(SOA TTL, SOA MINIMUM) (Nameservers mode).
	NegativeTTL time.Duration `json:"-"`
	// RecordTTL is the TTL of the record as its nameservers serve it
	// (Nameservers mode): an older record at the same name may stay
	// cached that long.
	RecordTTL time.Duration `json:"-"`
}

// Hold is how long after a record is first seen published everywhere a
// receiver may still get an older answer from a cache: the negative TTL
// (a cached "no such record") or the record TTL (a cached older record at
// the same name, as with alternating selectors), whichever is longer.
func (r *Result) Hold() time.Duration { return max(r.NegativeTTL, r.RecordTTL) }

// CheckAll checks many keys, a bounded number at a time; the results are
// in the order of qs.
func (c *Checker) CheckAll(ctx context.Context, qs []Query) []Result {
	out := make([]Result, len(qs))
	var wg sync.WaitGroup
	sem := make(chan struct{}, parallel)
	for i := range qs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			out[i] = c.Check(ctx, qs[i])
		}()
	}
	wg.Wait()
	return out
}

// Check checks one key.
func (c *Checker) Check(ctx context.Context, q Query) Result {
	name, ok := recordName(q.Domain, q.Selector)
	if !ok {
		return Result{State: keys.Mismatch, Detail: fmt.Sprintf("%q is not a valid record name", keys.RecordName(q.Domain, q.Selector)),
			Name: keys.RecordName(q.Domain, q.Selector)}
	}
	p := c.publicPath(ctx, name)
	res := Result{Name: display(name), FinalName: display(p.final()), TXT: p.txt}
	for _, n := range p.chain[1:] {
		res.CNAMEs = append(res.CNAMEs, display(n))
	}
	if p.err == nil {
		res.PublicState, res.PublicDetail = Classify(p.txt, display(p.final()), q.Public, q.Known)
		if len(p.txt) == 0 && p.nxdomain {
			res.PublicDetail = "no such name " + display(p.final()) + " (NXDOMAIN)"
		}
	} else {
		res.PublicState, res.PublicDetail = keys.TempError, p.err.Error()
	}
	if c.mode == ResolverOnly || res.PublicState == keys.TempError {
		res.State, res.Detail = res.PublicState, res.PublicDetail
		return res
	}

	// The zone that holds the final name, and what its nameservers serve.
	zone, soa, zoneErr := c.findZone(ctx, p.final(), p.soa)
	var nsErr error
	if zoneErr == nil {
		nsErr = c.examineZone(ctx, zone, soa, p.final(), q, &res)
	}
	serving, notServing, unknown := summarize(res.Nameservers)

	if res.PublicState == keys.Published {
		switch {
		case zoneErr != nil:
			res.State, res.Detail = keys.TempError, fmt.Sprintf("the public path serves the record, but the zone of %s is unknown: %v", res.FinalName, zoneErr)
		case nsErr != nil:
			res.State, res.Detail = keys.TempError, fmt.Sprintf("the public path serves the record, but the nameservers of %s are unknown: %v", res.Zone, nsErr)
		case len(unknown) > 0:
			res.State, res.Detail = keys.TempError, fmt.Sprintf("the public path serves the record; not known yet from %s", strings.Join(unknown, "; "))
		case len(notServing) > 0 && len(serving) == 0:
			// The resolver reached a server outside the NS set (a hidden
			// primary that also serves the parent zone).
			res.State, res.Detail = keys.Partial, fmt.Sprintf("the public path serves the record, but no nameserver of %s does: not by %s", res.Zone, strings.Join(notServing, "; "))
		case len(notServing) > 0:
			res.State, res.Detail = keys.Partial, fmt.Sprintf("served by %s; not by %s", strings.Join(serving, ", "), strings.Join(notServing, "; "))
		case len(serving) == 0:
			res.State, res.Detail = keys.TempError, "no nameserver of "+res.Zone+" could be asked"
		default:
			res.State = keys.Published
		}
		return res
	}

	// The public path does not give the key.
	if len(serving) > 0 {
		res.State, res.Detail = keys.Partial, servedDetail(&res, p.final(), serving, notServing, unknown)
		return res
	}
	if len(c.ours) > 0 {
		c.checkOurs(ctx, q, name, p, zoneErr, nsErr, &res)
		if res.State != "" {
			return res
		}
	}
	res.State, res.Detail = res.PublicState, res.PublicDetail
	return res
}

// examineZone asks the nameservers of zone (whose SOA the resolver gave,
// if known) for the TXT at name and fills in res's Zone, Nameservers,
// NegativeTTL and RecordTTL. The error is that of the NS lookup.
func (c *Checker) examineZone(ctx context.Context, zone string, soa *dns.SOA, name string, q Query, res *Result) error {
	var err error
	res.Zone = display(zone)
	res.Nameservers, err = c.askZone(ctx, zone, name, q)
	res.NegativeTTL = negativeTTL(c.authSOA(ctx, zone, res.Nameservers, soa))
	res.RecordTTL = 0
	for _, s := range res.Nameservers {
		res.RecordTTL = max(res.RecordTTL, time.Duration(s.ttl)*time.Second)
	}
	return err
}

// servedDetail explains why a record that some nameservers of res.Zone
// serve is not given by the public path: the resolver asked one that does
// not serve it yet, or it still has an older answer cached.
func servedDetail(res *Result, final string, serving, notServing, unknown []string) string {
	detail := "served by " + strings.Join(serving, ", ")
	if len(notServing) > 0 {
		detail += "; not by " + strings.Join(notServing, "; ")
	}
	if len(unknown) > 0 {
		detail += "; not known yet from " + strings.Join(unknown, "; ")
	}
	detail += "; the public path does not give it yet (" + res.PublicDetail + "): "
	if len(notServing) > 0 || len(unknown) > 0 {
		detail += "the resolver asked a nameserver that does not serve it yet, or "
	}
	return detail + cachedAnswer(res, final)
}

// cachedAnswer says that the resolver still has an older answer for name
// cached, and for how long at most.
func cachedAnswer(res *Result, name string) string {
	if res.PublicState != keys.Missing {
		s := "the resolver still has an older answer cached for " + display(name)
		if res.RecordTTL > 0 {
			s += fmt.Sprintf(" (for up to %s, the record's TTL)", res.RecordTTL)
		}
		return s
	}
	return negativeCached(name, res.NegativeTTL, res.Zone)
}

// negativeCached says that the resolver still has a negative answer for
// name from zone cached, and for how long at most (ttl, when known).
func negativeCached(name string, ttl time.Duration, zone string) string {
	s := "the resolver still has a negative answer cached for " + display(name)
	if ttl > 0 && zone != "" {
		s += fmt.Sprintf(" (for up to %s, the negative TTL of %s)", ttl, display(zone))
	}
	return s
}

// path is what the public path gave.
type path struct {
	chain    []string // the names asked, first the record's name, last the final one
	txt      []string
	ttl      uint32
	nxdomain bool
	soa      *dns.SOA // the authority SOA of a negative answer
	err      error    // a temporary failure
}

func (p *path) final() string { return p.chain[len(p.chain)-1] }

// publicPath looks name's TXT up through the recursive resolvers,
// following CNAMEs for at most MaxChain names.
func (c *Checker) publicPath(ctx context.Context, name string) path {
	p := path{chain: []string{name}}
	for {
		cur := p.final()
		msg, err := c.recursive(ctx, cur, dns.TypeTXT)
		if err != nil {
			p.err = fmt.Errorf("lookup %s: %w", display(cur), err)
			return p
		}
		for {
			if p.txt, p.ttl = txtValues(msg.Answer, p.final()); len(p.txt) > 0 {
				return p
			}
			next := cnameTarget(msg.Answer, p.final())
			if next == "" {
				break
			}
			if slices.Contains(p.chain, next) {
				p.err = fmt.Errorf("lookup %s: CNAME loop at %s", display(name), display(next))
				return p
			}
			if len(p.chain) >= MaxChain {
				p.err = fmt.Errorf("lookup %s: CNAME chain longer than %d names", display(name), MaxChain)
				return p
			}
			p.chain = append(p.chain, next)
		}
		if msg.Rcode == dns.RcodeSuccess && p.final() != cur {
			// The answer stopped at a CNAME whose target the server did
			// not resolve: ask for the target.
			continue
		}
		p.nxdomain = msg.Rcode == dns.RcodeNameError
		p.soa = authoritySOA(msg, p.final())
		return p
	}
}

// findZone returns the zone that holds name and its SOA as the resolver
// gives it: the SOA of a negative answer for name if there was one, else
// by asking for the SOA at name and its parents.
func (c *Checker) findZone(ctx context.Context, name string, hint *dns.SOA) (string, *dns.SOA, error) {
	if hint != nil {
		return strings.ToLower(hint.Hdr.Name), hint, nil
	}
	cur := name
	for range maxZoneWalk {
		msg, err := c.recursive(ctx, cur, dns.TypeSOA)
		if err != nil {
			return "", nil, fmt.Errorf("SOA of %s: %w", display(cur), err)
		}
		if rrs := dnstext.Records(msg.Answer, cur, dns.TypeSOA); len(rrs) > 0 {
			return cur, rrs[0].(*dns.SOA), nil
		}
		if soa := authoritySOA(msg, cur); soa != nil {
			return strings.ToLower(soa.Hdr.Name), soa, nil
		}
		off, end := dns.NextLabel(cur, 0)
		if end || cur == "." {
			break
		}
		cur = cur[off:]
	}
	return "", nil, fmt.Errorf("no SOA found for %s or its parents", display(name))
}

// nameservers returns the NS names of zone through the resolver, sorted,
// at most MaxServers.
func (c *Checker) nameservers(ctx context.Context, zone string) ([]string, error) {
	msg, err := c.cached(ctx, zone, dns.TypeNS)
	if err != nil {
		return nil, fmt.Errorf("NS of %s: %w", display(zone), err)
	}
	var out []string
	for _, rr := range dnstext.Records(msg.Answer, zone, dns.TypeNS) {
		n := strings.ToLower(dns.Fqdn(rr.(*dns.NS).Ns))
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("NS of %s: none", display(zone))
	}
	sort.Strings(out)
	if len(out) > MaxServers {
		out = out[:MaxServers]
	}
	return out, nil
}

// addresses returns the IPv4 and IPv6 addresses of a nameserver through
// the resolver.
func (c *Checker) addresses(ctx context.Context, host string) ([]netip.Addr, error) {
	var out []netip.Addr
	found := false
	var lastErr error
	for _, t := range []uint16{dns.TypeA, dns.TypeAAAA} {
		msg, err := c.cached(ctx, host, t)
		if err != nil {
			lastErr = err
			continue
		}
		found = true
		for _, rr := range msg.Answer {
			var ip net.IP
			switch rr := rr.(type) {
			case *dns.A:
				ip = rr.A
			case *dns.AAAA:
				ip = rr.AAAA
			}
			if a, ok := netip.AddrFromSlice(ip); ok && len(out) < MaxServers && !slices.Contains(out, a.Unmap()) {
				out = append(out, a.Unmap())
			}
		}
	}
	if !found {
		return nil, lastErr
	}
	return out, nil
}

// askZone asks every nameserver of zone (at most MaxServers addresses in
// all) for the TXT at name, in parallel.
func (c *Checker) askZone(ctx context.Context, zone, name string, q Query) ([]Server, error) {
	names, err := c.nameservers(ctx, zone)
	if err != nil {
		return nil, err
	}
	type target struct{ name, addr string }
	var targets []target
	var out []Server
	for _, ns := range names {
		addrs, err := c.addresses(ctx, ns)
		if err != nil {
			out = append(out, Server{Name: display(ns), State: keys.TempError, Detail: "address lookup: " + err.Error()})
			continue
		}
		if len(addrs) == 0 {
			// A nameserver without an address serves no one: noted, not
			// counted.
			out = append(out, Server{Name: display(ns), State: keys.Missing, Unreachable: true, Detail: "has no A or AAAA record"})
			continue
		}
		for _, a := range addrs {
			if len(targets) < MaxServers {
				targets = append(targets, target{ns, net.JoinHostPort(a.String(), cmp.Or(c.nsPort, "53"))})
			}
		}
	}
	asked := make([]Server, len(targets))
	var wg sync.WaitGroup
	for i, t := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			asked[i] = c.askAuth(ctx, t.name, t.addr, name, q)
		}()
	}
	wg.Wait()
	return append(out, asked...), nil
}

// askAuth asks one authoritative server for the TXT at name with RD=0 and
// classifies what it serves.
func (c *Checker) askAuth(ctx context.Context, nsName, addr, name string, q Query) Server {
	s := Server{Name: display(nsName), Addr: addr}
	msg, err := c.exchange(ctx, addr, name, dns.TypeTXT, false)
	if err != nil {
		s.State, s.Detail, s.Unreachable = keys.TempError, err.Error(), isUnreachable(err)
		return s
	}
	switch {
	case msg.Rcode == dns.RcodeRefused || msg.Rcode == dns.RcodeNotAuth:
		s.State, s.Detail = keys.Missing, fmt.Sprintf("answers %s for %s: not authoritative (lame delegation)", dns.RcodeToString[msg.Rcode], display(name))
		return s
	case msg.Rcode != dns.RcodeSuccess && msg.Rcode != dns.RcodeNameError:
		s.State, s.Detail = keys.TempError, fmt.Sprintf("answers %s", dns.RcodeToString[msg.Rcode])
		return s
	case !msg.Authoritative:
		s.State, s.Detail = keys.Missing, fmt.Sprintf("not authoritative for %s (a referral or a lame delegation)", display(name))
		if s.referral, s.referralNS = referral(msg, name); s.referral != "" {
			s.Detail = fmt.Sprintf("not authoritative for %s: refers to zone %s (NS %s)", display(name), display(s.referral),
				strings.Join(displayAll(s.referralNS), ", "))
		}
		return s
	}
	txts, ttl := txtValues(msg.Answer, name)
	if len(txts) == 0 {
		if cn := cnameTarget(msg.Answer, name); cn != "" {
			s.cname = cn
			s.State, s.Detail = keys.Mismatch, fmt.Sprintf("serves a CNAME at %s to %s", display(name), display(cn))
			return s
		}
		s.State, s.Detail = keys.Missing, "no TXT record at "+display(name)
		if msg.Rcode == dns.RcodeNameError {
			s.Detail = "no such name " + display(name) + " (NXDOMAIN)"
		}
		return s
	}
	s.ttl, s.txt = ttl, txts
	s.State, s.Detail = Classify(txts, display(name), q.Public, q.Known)
	return s
}

// authSOA returns the zone's SOA as an authoritative nameserver serves it
// (the resolver's copy has a TTL that counts down in its cache), else
// fallback.
func (c *Checker) authSOA(ctx context.Context, zone string, servers []Server, fallback *dns.SOA) *dns.SOA {
	// Many keys share a zone (a provider's CNAME zone): ask once a while.
	key := cacheKey{"auth " + zone, dns.TypeSOA}
	if m, ok := c.cache.get(key, time.Now()); ok {
		return m.Answer[0].(*dns.SOA)
	}
	for _, s := range servers {
		if s.State == keys.TempError || s.Addr == "" {
			continue
		}
		msg, err := c.exchange(ctx, s.Addr, zone, dns.TypeSOA, false)
		if err != nil || msg.Rcode != dns.RcodeSuccess || !msg.Authoritative {
			continue
		}
		if rrs := dnstext.Records(msg.Answer, zone, dns.TypeSOA); len(rrs) > 0 {
			c.cache.put(key, &dns.Msg{Answer: rrs[:1]}, time.Now().Add(cacheTTL))
			return rrs[0].(*dns.SOA)
		}
	}
	return fallback
}

// summarize groups per-address answers by nameserver: the ones that serve
// the record, the ones that do not (with what they serve), and the
// addresses whose answer is not known (they did not answer). An address
// that cannot be reached at all (no route: no IPv6 here) is ignored when
// another address of the same nameserver answered, and a nameserver
// without any address is ignored (it serves no one).
func summarize(servers []Server) (serving, notServing, unknown []string) {
	var order []string
	by := map[string][]Server{}
	for _, s := range servers {
		key := cmp.Or(s.Name, s.Addr)
		if _, ok := by[key]; !ok {
			order = append(order, key)
		}
		by[key] = append(by[key], s)
	}
	for _, name := range order {
		ss := by[name]
		var answered, failed []Server
		for _, s := range ss {
			switch {
			case s.Addr == "" && s.Unreachable:
			case s.State == keys.TempError:
				failed = append(failed, s)
			default:
				answered = append(answered, s)
			}
		}
		var bad []string
		for _, s := range answered {
			if s.State != keys.Published {
				bad = append(bad, fmt.Sprintf("%s (%s): %s", name, s.Addr, cmp.Or(s.Detail, string(s.State))))
			}
		}
		for _, s := range failed {
			// An address that timed out may serve anything: unknown, even
			// when another address of the nameserver answered.
			if !s.Unreachable || len(answered) == 0 {
				unknown = append(unknown, fmt.Sprintf("%s (%s): %s", name, cmp.Or(s.Addr, "no address"), s.Detail))
			}
		}
		switch {
		case len(bad) > 0:
			notServing = append(notServing, bad...)
		case len(answered) > 0:
			addrs := make([]string, 0, len(answered))
			for _, s := range answered {
				addrs = append(addrs, s.Addr)
			}
			serving = append(serving, fmt.Sprintf("%s (%s)", name, strings.Join(addrs, ", ")))
		}
	}
	return serving, notServing, unknown
}

// checkOurs asks the servers we publish to whether they serve the key
// where we publish it, when no nameserver on the public path does. If one
// does, it decides whether the public path leads there: if not, the
// customer's delegation or CNAME is missing (DelegationMissing, with the
// records to add); if it does, the record only needs time (Partial). It
// leaves res.State empty when none of our servers serves the key. zoneErr
// and nsErr are the errors of finding the public path's zone and its
// nameservers.
func (c *Checker) checkOurs(ctx context.Context, q Query, name string, p path, zoneErr, nsErr error, res *Result) {
	pubName := name
	if q.PublishName != "" {
		var ok bool
		if pubName, ok = canonical(q.PublishName); !ok {
			return
		}
	}
	served := ""
	for _, addr := range c.ours {
		s := c.askAuth(ctx, "", addr, pubName, q)
		res.Ours = append(res.Ours, s)
		if s.State == keys.Published && served == "" {
			served = addr
		}
	}
	if served == "" {
		return
	}
	if pubName != name {
		checkCNAME(name, pubName, served, p, zoneErr, nsErr, res)
		return
	}
	c.checkDelegation(ctx, q, name, served, zoneErr, nsErr, res)
}

// checkCNAME decides for CNAME mode, where we publish at pubName and the
// customer's name must be a CNAME to it.
func checkCNAME(name, pubName, served string, p path, zoneErr, nsErr error, res *Result) {
	switch {
	case slices.Contains(p.chain, pubName):
		// The CNAME is there: the nameservers of our zone lag behind the
		// server we publish to.
		notYetServed(res, served, fmt.Sprintf("the public path reaches %s", display(pubName)), zoneErr, nsErr)
		return
	case len(p.chain) == 1 && len(p.txt) == 0 && zoneErr == nil:
		// No CNAME on the public path: if the customer's nameservers,
		// asked directly, serve it, the resolver's answer is older.
		var with, without []string
		for _, s := range res.Nameservers {
			switch {
			case s.State == keys.TempError || s.Addr == "":
			case s.cname == pubName:
				with = append(with, fmt.Sprintf("%s (%s)", s.Name, s.Addr))
			default:
				without = append(without, fmt.Sprintf("%s (%s): %s", s.Name, s.Addr, cmp.Or(s.Detail, string(s.State))))
			}
		}
		if len(with) > 0 && len(without) == 0 {
			res.State = keys.Partial
			res.Detail = fmt.Sprintf("the CNAME %s -> %s is in place (served by %s) and %s serves the record, but the public path does not give it yet (%s): %s",
				display(name), display(pubName), strings.Join(with, ", "), served, res.PublicDetail, negativeCached(name, res.NegativeTTL, res.Zone))
			return
		}
	}
	res.State = keys.DelegationMissing
	res.Add = []string{fmt.Sprintf("%s CNAME %s", name, pubName)}
	switch {
	case len(p.chain) > 1:
		res.Found = fmt.Sprintf("the CNAME at %s points to %s, expected %s", display(name), display(p.chain[1]), display(pubName))
	case len(p.txt) > 0:
		res.Found = fmt.Sprintf("%s holds its own TXT record (%s) instead of a CNAME to %s", display(name), res.PublicDetail, display(pubName))
	case res.Zone != "":
		res.Found = fmt.Sprintf("no CNAME at %s: the public path ends at zone %s (%s)", display(name), res.Zone, res.PublicDetail)
	default:
		res.Found = fmt.Sprintf("no CNAME at %s (%s)", display(name), res.PublicDetail)
	}
	res.Detail = fmt.Sprintf("published at %s, but %s; the customer must add: %s", display(pubName), res.Found, strings.Join(res.Add, "; "))
}

// checkDelegation decides for a delegated selector zone: we publish at the
// record's own name, in a zone below the customer's that must be
// delegated to our nameservers.
func (c *Checker) checkDelegation(ctx context.Context, q Query, name, served string, zoneErr, nsErr error, res *Result) {
	// The zone as our server holds it, and its apex NS records, which the
	// customer must delegate to.
	zone, nss, err := c.ourZone(ctx, served, name)
	if err != nil {
		res.State, res.Detail = keys.TempError, fmt.Sprintf("published on our server %s, but the public path does not find it (%s), and the zone it is published in is not known: %v",
			served, res.PublicDetail, err)
		return
	}
	var add []string
	for _, ns := range nss {
		add = append(add, fmt.Sprintf("%s NS %s", zone, ns))
	}
	missing := func(found string) {
		res.State, res.Add, res.Found = keys.DelegationMissing, add, found
		res.Detail = fmt.Sprintf("published in zone %s on our servers, but %s; the customer must add: %s", display(zone), found, strings.Join(add, "; "))
	}
	switch {
	case zoneErr != nil:
		// Where the public path ends is not known: neither is whether the
		// delegation is missing.
		res.State, res.Detail = keys.TempError, fmt.Sprintf("published in zone %s on our server %s, but the public path does not find it (%s), and the zone where it ends is not known: %v",
			display(zone), served, res.PublicDetail, zoneErr)
	case res.Zone == display(zone):
		// The public path reaches a zone of that name: ours if it is
		// delegated to our nameservers (all or some of them; the one we
		// publish to may be a hidden primary).
		if nsErr != nil {
			res.State, res.Detail = keys.TempError, fmt.Sprintf("published in zone %s on our server %s, but the public path does not find it (%s), and the nameservers of %s are not known: %v",
				display(zone), served, res.PublicDetail, res.Zone, nsErr)
			return
		}
		if c.delegatedToUs(res.Nameservers, nss) {
			notYetServed(res, served, fmt.Sprintf("zone %s is delegated to our nameservers", res.Zone), nil, nil)
			return
		}
		missing(fmt.Sprintf("zone %s is delegated to %s, expected %s", res.Zone, strings.Join(nsNames(res.Nameservers), ", "), strings.Join(displayAll(nss), ", ")))
	default:
		// The public path ends in another zone (the customer's): its
		// nameservers, asked directly, may already refer to ours (the
		// resolver then has a negative answer from before cached).
		refer, lack := referrals(res.Nameservers, zone, nss)
		if len(refer) > 0 && len(lack) == 0 {
			c.staleDelegation(ctx, q, name, zone, nss, served, refer, res)
			return
		}
		found := fmt.Sprintf("the public path ends at zone %s, which has no NS records for %s", res.Zone, display(zone))
		if len(refer) > 0 {
			found += fmt.Sprintf(" on %s (%s refer to our nameservers)", strings.Join(lack, "; "), strings.Join(refer, ", "))
		}
		missing(found)
	}
}

// staleDelegation reports a record whose public path ends in the parent
// zone although the parent's nameservers (refer) delegate zone to ours
// (nss): the resolver has a negative answer cached from before the
// delegation. What the nameservers of zone serve is asked too.
func (c *Checker) staleDelegation(ctx context.Context, q Query, name, zone string, nss []string, served string, refer []string, res *Result) {
	parent, parentTTL := res.Zone, res.NegativeTTL
	why := fmt.Sprintf("the delegation of %s to %s is in place (referred to by %s), but %s", display(zone), strings.Join(displayAll(nss), ", "),
		strings.Join(refer, ", "), negativeCached(name, parentTTL, parent))
	nsErr := c.examineZone(ctx, zone, nil, name, q, res)
	res.NegativeTTL = max(res.NegativeTTL, parentTTL)
	serving, notServing, unknown := summarize(res.Nameservers)
	if nsErr != nil || len(serving) == 0 {
		notYetServed(res, served, why, nil, nsErr)
		return
	}
	res.State = keys.Partial
	res.Detail = why + "; served by " + strings.Join(serving, ", ")
	if len(notServing) > 0 {
		res.Detail += "; not by " + strings.Join(notServing, "; ")
	}
	if len(unknown) > 0 {
		res.Detail += "; not known yet from " + strings.Join(unknown, "; ")
	}
}

// notYetServed reports a record that the public path leads to (why says
// how) and our server (served) has, but that no nameserver of res.Zone
// serves yet: they lag behind the server we publish to (Partial), or did
// not answer (TempError).
func notYetServed(res *Result, served, why string, zoneErr, nsErr error) {
	detail := fmt.Sprintf("%s; published on our server %s, but no nameserver of %s serves it yet", why, served, cmp.Or(res.Zone, "its zone"))
	switch {
	case zoneErr != nil:
		res.State, res.Detail = keys.TempError, fmt.Sprintf("%s (its zone is not known: %v)", detail, zoneErr)
		return
	case nsErr != nil:
		res.State, res.Detail = keys.TempError, fmt.Sprintf("%s (its nameservers are not known: %v)", detail, nsErr)
		return
	}
	_, notServing, unknown := summarize(res.Nameservers)
	if len(notServing) > 0 {
		detail += ": not by " + strings.Join(notServing, "; ")
	}
	if len(unknown) > 0 {
		detail += "; not known yet from " + strings.Join(unknown, "; ")
	}
	res.State, res.Detail = keys.Partial, detail
	if len(notServing) == 0 {
		// None answered: they may serve it.
		res.State = keys.TempError
	}
}

// delegatedToUs reports whether the nameservers the public path found for
// a zone include ours: one of the zone's NS names as our server serves
// them (nss), or one of the addresses we publish to.
func (c *Checker) delegatedToUs(servers []Server, nss []string) bool {
	for _, s := range servers {
		if slices.Contains(displayAll(nss), s.Name) {
			return true
		}
		if ap, err := netip.ParseAddrPort(s.Addr); err == nil && slices.ContainsFunc(c.ours, func(o string) bool {
			op, err := netip.ParseAddrPort(o)
			return err == nil && op.Addr() == ap.Addr()
		}) {
			return true
		}
	}
	return false
}

// referrals sorts the answers of a parent zone's nameservers: those that
// refer the name to zone with NS records among nss, and those that answer
// anything else (the ones that did not answer are neither).
func referrals(servers []Server, zone string, nss []string) (refer, lack []string) {
	for _, s := range servers {
		if s.State == keys.TempError || s.Addr == "" {
			continue
		}
		ok := s.referral == zone && slices.ContainsFunc(s.referralNS, func(n string) bool { return slices.Contains(nss, n) })
		if ok {
			refer = append(refer, fmt.Sprintf("%s (%s)", s.Name, s.Addr))
		} else {
			lack = append(lack, fmt.Sprintf("%s (%s): %s", s.Name, s.Addr, cmp.Or(s.Detail, string(s.State))))
		}
	}
	return refer, lack
}

// nsNames returns the distinct nameserver names of servers, in order.
func nsNames(servers []Server) []string {
	var out []string
	for _, s := range servers {
		if s.Name != "" && !slices.Contains(out, s.Name) {
			out = append(out, s.Name)
		}
	}
	return out
}

// referral returns the zone a referral (a non-authoritative answer) for
// name delegates to, the closest enclosing one, with its NS names (at most
// MaxServers), or "" when the answer is no referral.
func referral(msg *dns.Msg, name string) (string, []string) {
	zone := ""
	var nss []string
	for _, rr := range msg.Ns {
		ns, ok := rr.(*dns.NS)
		if !ok || ns.Hdr.Class != dns.ClassINET || !dns.IsSubDomain(ns.Hdr.Name, name) {
			continue
		}
		owner := strings.ToLower(dns.Fqdn(ns.Hdr.Name))
		if zone == "" || (owner != zone && dns.IsSubDomain(zone, owner)) {
			zone, nss = owner, nil
		}
		if n := strings.ToLower(dns.Fqdn(ns.Ns)); owner == zone && !slices.Contains(nss, n) && len(nss) < MaxServers {
			nss = append(nss, n)
		}
	}
	sort.Strings(nss)
	return zone, nss
}

// ourZone asks server (one of ours) which zone holds name and that zone's
// NS names.
func (c *Checker) ourZone(ctx context.Context, server, name string) (string, []string, error) {
	msg, err := c.exchange(ctx, server, name, dns.TypeSOA, false)
	if err != nil {
		return "", nil, err
	}
	zone := ""
	if rrs := dnstext.Records(msg.Answer, name, dns.TypeSOA); len(rrs) > 0 {
		zone = name
	} else if soa := authoritySOA(msg, name); soa != nil {
		zone = strings.ToLower(soa.Hdr.Name)
	} else {
		return "", nil, fmt.Errorf("%s gives no SOA for %s", server, display(name))
	}
	msg, err = c.exchange(ctx, server, zone, dns.TypeNS, false)
	if err != nil {
		return "", nil, err
	}
	var nss []string
	for _, rr := range dnstext.Records(msg.Answer, zone, dns.TypeNS) {
		if n := strings.ToLower(dns.Fqdn(rr.(*dns.NS).Ns)); !slices.Contains(nss, n) && len(nss) < MaxServers {
			nss = append(nss, n)
		}
	}
	if len(nss) == 0 {
		return "", nil, fmt.Errorf("%s serves no NS records at %s", server, display(zone))
	}
	sort.Strings(nss)
	return zone, nss, nil
}

// recordName returns the record's name, lowercased and fully qualified.
func recordName(domain, selector string) (string, bool) {
	return canonical(keys.RecordName(strings.TrimSuffix(domain, "."), selector))
}

// canonical validates a name and returns it lowercased and fully
// qualified.
func canonical(name string) (string, bool) {
	name = strings.ToLower(dns.Fqdn(name))
	if _, ok := dns.IsDomainName(name); !ok || len(name) > 254 || strings.ContainsAny(name, `\ "`) {
		return "", false
	}
	return name, true
}

func displayAll(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = display(n)
	}
	return out
}
