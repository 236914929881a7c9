package dnscheck

import (
	"github.com/authmilter/authmilter/internal/dnstext"

	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// ednsSize is the EDNS0 UDP buffer size we advertise (DNS flag day 2020).
const ednsSize = 1232

// errNotAnswered is the error of a query that no server answered usably.
var errNotAnswered = errors.New("no server answered")

// exchange asks one server one question, over UDP first and over TCP when
// the answer is truncated (RFC 7766), within Checker.timeout and ctx. rd is
// the RD bit: set for recursive servers, clear for authoritative ones
// (RFC 1035 §4.1.1: an authoritative server must answer from its own
// zones, not from a cache). Any rcode is returned as an answer; the caller
// decides what it means.
func (c *Checker) exchange(ctx context.Context, server, qname string, qtype uint16, rd bool) (*dns.Msg, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m := new(dns.Msg)
	m.SetQuestion(qname, qtype)
	m.RecursionDesired = rd
	m.SetEdns0(ednsSize, false)
	actx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	cl := &dns.Client{Net: "udp", Timeout: c.timeout}
	r, _, err := cl.ExchangeContext(actx, m, server)
	if r != nil && r.Truncated {
		cl.Net = "tcp"
		m.Id = dns.Id()
		r, _, err = cl.ExchangeContext(actx, m, server)
		if err == nil && r.Truncated {
			return nil, fmt.Errorf("%s: answer truncated over TCP", server)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", server, err)
	}
	if len(r.Question) != 1 || r.Question[0].Qtype != qtype || !strings.EqualFold(r.Question[0].Name, qname) {
		return nil, fmt.Errorf("%s: answer does not match the question", server)
	}
	return r, nil
}

// recursive asks the recursive servers in order and returns the first
// NOERROR or NXDOMAIN answer. Other rcodes (SERVFAIL, REFUSED...) and
// network errors move on to the next server; when none answers, the last
// error is returned.
func (c *Checker) recursive(ctx context.Context, qname string, qtype uint16) (*dns.Msg, error) {
	last := errNotAnswered
	for _, s := range c.servers {
		r, err := c.exchange(ctx, s, qname, qtype, true)
		if err != nil {
			last = err
			if ctx.Err() != nil {
				break
			}
			continue
		}
		if r.Rcode == dns.RcodeSuccess || r.Rcode == dns.RcodeNameError {
			return r, nil
		}
		last = fmt.Errorf("%s answered %s", s, dns.RcodeToString[r.Rcode])
	}
	return nil, last
}

// cached is recursive for the answers that many keys share (the NS set of
// a provider's zone, the addresses of its nameservers): kept for the
// records' TTL, at most cacheTTL, so that a check of thousands of keys
// asks for them once.
func (c *Checker) cached(ctx context.Context, qname string, qtype uint16) (*dns.Msg, error) {
	key := cacheKey{qname, qtype}
	if m, ok := c.cache.get(key, time.Now()); ok {
		return m, nil
	}
	m, err := c.recursive(ctx, qname, qtype)
	if err != nil {
		return nil, err
	}
	ttl := cacheTTL
	for _, rr := range append(slices.Clone(m.Answer), m.Ns...) {
		ttl = min(ttl, time.Duration(rr.Header().Ttl)*time.Second)
	}
	if ttl > 0 {
		c.cache.put(key, m, time.Now().Add(ttl))
	}
	return m, nil
}

// cacheTTL bounds how long shared answers are kept; cacheSize how many.
const (
	cacheTTL  = time.Minute
	cacheSize = 4096
)

type cacheKey struct {
	name  string
	qtype uint16
}

type cacheEntry struct {
	msg     *dns.Msg
	expires time.Time
}

// cache is a small bounded map of answers; when full it starts over,
// which costs a few queries and keeps memory bounded.
type cache struct {
	mu sync.Mutex
	m  map[cacheKey]cacheEntry
}

func (c *cache) get(k cacheKey, now time.Time) (*dns.Msg, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[k]
	if !ok || now.After(e.expires) {
		return nil, false
	}
	return e.msg, true
}

func (c *cache) put(k cacheKey, m *dns.Msg, expires time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= cacheSize {
		c.m = map[cacheKey]cacheEntry{}
	}
	c.m[k] = cacheEntry{m, expires}
}

// txtValues returns the TXT records owned by name, each record's strings
// joined (RFC 6376 §3.6.2.2), with the smallest TTL among them.
func txtValues(rrs []dns.RR, name string) ([]string, uint32) {
	var out []string
	var ttl uint32
	for i, rr := range dnstext.Records(rrs, name, dns.TypeTXT) {
		out = append(out, dnstext.Value(rr.(*dns.TXT)))
		if i == 0 || rr.Header().Ttl < ttl {
			ttl = rr.Header().Ttl
		}
	}
	return out, ttl
}

// cnameTarget returns the target of the CNAME owned by name, or "".
func cnameTarget(rrs []dns.RR, name string) string {
	if cn := dnstext.Records(rrs, name, dns.TypeCNAME); len(cn) > 0 {
		return strings.ToLower(dns.Fqdn(cn[0].(*dns.CNAME).Target))
	}
	return ""
}

// authoritySOA returns the SOA of a negative answer's authority section if
// it belongs to a zone that contains name, else nil.
func authoritySOA(m *dns.Msg, name string) *dns.SOA {
	for _, rr := range m.Ns {
		if soa, ok := rr.(*dns.SOA); ok && soa.Hdr.Class == dns.ClassINET && dns.IsSubDomain(soa.Hdr.Name, name) {
			return soa
		}
	}
	return nil
}

// negativeTTL is how long a negative answer from a zone with this SOA may
// be cached: the smaller of the SOA's TTL and its MINIMUM (RFC 2308 §5).
func negativeTTL(soa *dns.SOA) time.Duration {
	if soa == nil {
		return 0
	}
	return time.Duration(min(soa.Hdr.Ttl, soa.Minttl)) * time.Second
}

// isUnreachable reports whether err says the address cannot be reached at
// all from here (no route, no address of that family): a host without
// IPv6 cannot ask a nameserver's IPv6 address, which says nothing about
// what that nameserver serves.
func isUnreachable(err error) bool {
	var op *net.OpError
	if !errors.As(err, &op) || op.Timeout() {
		return false
	}
	s := err.Error()
	return strings.Contains(s, "network is unreachable") || strings.Contains(s, "no route to host") ||
		strings.Contains(s, "cannot assign requested address") || strings.Contains(s, "address family not supported")
}

// display is a name as details show it: without the trailing dot.
func display(name string) string { return strings.TrimSuffix(name, ".") }
