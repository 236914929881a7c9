// Package resolve is authmilter's DNS stub resolver: it asks the configured
// recursive servers (or those of /etc/resolv.conf), caches the answers, and
// classifies every failure as permanent or temporary.
//
// Its lookup methods have the signatures of *net.Resolver, so a *Resolver
// can be given to the SPF evaluator (policy/spf) and used for
// DKIM key and DMARC record lookups alike.
//
// # Errors
//
// Every error is a *net.DNSError, returned unwrapped (callers
// type-assert it), with Name (the name or address the caller asked for),
// Server (when one answered or failed) and Err set, and exactly one of:
//
//   - IsNotFound: a permanent answer. NXDOMAIN (Err "no such host"), NODATA
//     (the name exists without records of the type; Err "no TXT record" and
//     the like), or a name that cannot exist ("invalid domain name").
//     DKIM, SPF and DMARC treat these as "no record".
//   - IsTemporary (and IsTimeout for timeouts): no answer could be had now.
//     Timeouts, SERVFAIL, REFUSED and other unexpected rcodes, network
//     errors, malformed or mismatched answers, a truncated answer whose TCP
//     retry failed, CNAME chains longer than 8 names (a recursive server
//     reports those as SERVFAIL too), and a canceled or expired context
//     (then errors.Is(err, context.Canceled / context.DeadlineExceeded)
//     holds). These map to temperror / tempfail, never to "no record".
//
// Use IsNotFound and IsTemporary to tell them apart.
//
// # Queries
//
// Each question goes over UDP with EDNS0 (buffer 1232 bytes, the DNS flag
// day 2020 value) and again over TCP when the answer is truncated (RFC 7766).
// Servers are tried in order: a timeout, a network error or a failure rcode
// from one moves on to the next, each attempt bounded by Config.Timeout and
// all of them by the caller's context. CNAME chains are followed inside an
// answer, and by asking again for the target when the answer stops at a
// CNAME, for at most 8 names.
//
// # Cache
//
// Answers are cached per (lowercased name, type) in a bounded LRU cache, for
// the smallest TTL of the records used (CNAMEs included), at most
// Config.MaxTTL. Negative answers are cached for the SOA minimum of the
// authority section (RFC 2308 §5: the smaller of the SOA's TTL and its
// MINIMUM field), at most Config.NegativeTTL, and for Config.NegativeTTL
// when the server sent no SOA. A TTL of 0 is not cached. Temporary failures
// are never cached.
package resolve

import (
	"github.com/authmilter/authmilter/internal/dnstext"

	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// Defaults for the zero values of Config.
const (
	DefaultTimeout     = 5 * time.Second
	DefaultCacheSize   = 10000
	DefaultMaxTTL      = time.Hour
	DefaultNegativeTTL = 5 * time.Minute
)

// resolvConf is where the servers come from when Config.Servers is empty.
const resolvConf = "/etc/resolv.conf"

// maxChain is the most names a CNAME chain may have, the asked name
// included.
const maxChain = 8

// Config configures a Resolver. The zero value is usable: servers from
// /etc/resolv.conf and the defaults below.
type Config struct {
	// Servers are the recursive DNS servers to ask, in order, as "ip:port"
	// ("127.0.0.1:53", "[::1]:5353") or a bare IP (port 53). Host names are
	// not accepted. Empty: the nameserver lines of /etc/resolv.conf (or
	// 127.0.0.1 and ::1 when it has none).
	Servers []string

	// Timeout bounds each attempt to one server (one UDP exchange, or the
	// TCP retry after a truncated answer). Default 5s. The caller's context
	// bounds the whole lookup.
	Timeout time.Duration

	// CacheSize is the most answers kept in the cache. Default 10000;
	// negative disables the cache.
	CacheSize int

	// MaxTTL caps how long an answer is cached, whatever its TTL.
	// Default 1h.
	MaxTTL time.Duration

	// NegativeTTL caps how long a negative answer (NXDOMAIN, NODATA) is
	// cached; it is also the time used when the answer carries no SOA.
	// Default 5m.
	NegativeTTL time.Duration

	// OnError, if set, is called once for every failed attempt to get an
	// answer from a server (a lookup that moves on to the next server and
	// then succeeds still counts), with its kind: "timeout", "servfail",
	// "refused", "rcode" (another failure rcode), "truncated" (the TCP
	// retry of a truncated answer failed), "bad_answer" (for another
	// question or with another ID), "cname_chain", or "network" (anything
	// else: unreachable, unreadable answer). Negative answers (NXDOMAIN,
	// NODATA) are answers, not errors, and a lookup canceled by its caller
	// is not counted. It is for metrics: it must be fast and safe for
	// concurrent use.
	OnError func(kind string)
}

// Resolver is a caching DNS stub resolver. It is safe for concurrent use.
type Resolver struct {
	servers []string
	timeout time.Duration
	maxTTL  time.Duration
	negTTL  time.Duration
	cache   *cache
	now     func() time.Time // the clock for cache expiry; tests replace it
	onError func(kind string)
}

// New returns a Resolver for cfg. It fails when a server address is not an
// IP address with an optional port, a duration is negative, or
// /etc/resolv.conf is needed and cannot be read.
func New(cfg Config) (*Resolver, error) {
	return newResolver(cfg, resolvConf)
}

// newResolver is New with the resolv.conf path as a parameter, for tests.
func newResolver(cfg Config, resolvConfPath string) (*Resolver, error) {
	r := &Resolver{
		timeout: cmp.Or(cfg.Timeout, DefaultTimeout),
		maxTTL:  cmp.Or(cfg.MaxTTL, DefaultMaxTTL),
		negTTL:  cmp.Or(cfg.NegativeTTL, DefaultNegativeTTL),
		cache:   newCache(cmp.Or(cfg.CacheSize, DefaultCacheSize)),
		now:     time.Now,
		onError: cfg.OnError,
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"timeout", cfg.Timeout}, {"max TTL", cfg.MaxTTL}, {"negative TTL", cfg.NegativeTTL}} {
		if d.v < 0 {
			return nil, fmt.Errorf("resolve: %s %v is negative", d.name, d.v)
		}
	}
	servers := cfg.Servers
	if len(servers) == 0 {
		cc, err := dns.ClientConfigFromFile(resolvConfPath)
		if err != nil {
			return nil, fmt.Errorf("resolve: no servers configured and %s unusable: %w", resolvConfPath, err)
		}
		for _, s := range cc.Servers {
			servers = append(servers, net.JoinHostPort(s, cc.Port))
		}
		if len(servers) == 0 {
			servers = []string{"127.0.0.1:53", "[::1]:53"} // as glibc does
		}
	}
	for _, s := range servers {
		addr, err := serverAddr(s)
		if err != nil {
			return nil, fmt.Errorf("resolve: server %q: %w", s, err)
		}
		r.servers = append(r.servers, addr)
	}
	return r, nil
}

// serverAddr normalizes "ip", "ip:port" or "[ipv6]:port" to "ip:port".
func serverAddr(s string) (string, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		host, port = s, "53" // a bare IP, IPv6 ones included
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return "", fmt.Errorf("not an IP address: %w", err)
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		return "", fmt.Errorf("bad port %q", port)
	}
	return net.JoinHostPort(ip.String(), port), nil
}

// Servers returns the servers the resolver asks, in order, as "ip:port".
func (r *Resolver) Servers() []string {
	return slices.Clone(r.servers)
}

// LookupTXT returns the TXT records of name, each record's character-strings
// concatenated into one string (as net.Resolver does and as SPF, DKIM and
// DMARC want them: RFC 7208 §3.3, RFC 6376 §3.6.2.2).
func (r *Resolver) LookupTXT(ctx context.Context, name string) ([]string, error) {
	rrs, err := r.lookup(ctx, name, name, dns.TypeTXT)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(rrs))
	for _, rr := range rrs {
		out = append(out, dnstext.Value(rr.(*dns.TXT)))
	}
	return out, nil
}

// LookupRR returns the records of type qtype at name, following CNAMEs
// as the other lookups do: for the record types that have no method of
// their own (SPF type 99 records, CNAME checks in authmilter doctor). A
// negative answer is an error for which IsNotFound is true.
func (r *Resolver) LookupRR(ctx context.Context, name string, qtype uint16) ([]dns.RR, error) {
	return r.lookup(ctx, name, name, qtype)
}

// LookupMX returns the MX records of name sorted by preference (records
// with equal preference keep the server's order). Hosts are fully
// qualified, with the trailing dot.
func (r *Resolver) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
	rrs, err := r.lookup(ctx, name, name, dns.TypeMX)
	if err != nil {
		return nil, err
	}
	out := make([]*net.MX, 0, len(rrs))
	for _, rr := range rrs {
		mx := rr.(*dns.MX)
		out = append(out, &net.MX{Host: mx.Mx, Pref: mx.Preference})
	}
	slices.SortStableFunc(out, func(a, b *net.MX) int { return cmp.Compare(a.Pref, b.Pref) })
	return out, nil
}

// LookupIPAddr returns the IPv4 (A) and IPv6 (AAAA) addresses of host, IPv4
// first. An IP address literal is returned as is. If either lookup fails
// temporarily the result is that temporary error, even when the other type
// has addresses: a partial answer could turn an SPF "a" mechanism into a
// wrong fail. When neither type has records the error is IsNotFound.
func (r *Resolver) LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error) {
	if ip, err := netip.ParseAddr(host); err == nil {
		return []net.IPAddr{{IP: net.IP(ip.AsSlice()), Zone: ip.Zone()}}, nil
	}
	type result struct {
		rrs []dns.RR
		err error
	}
	aaaa := make(chan result, 1)
	go func() {
		rrs, err := r.lookup(ctx, host, host, dns.TypeAAAA)
		aaaa <- result{rrs, err}
	}()
	a, aErr := r.lookup(ctx, host, host, dns.TypeA)
	six := <-aaaa
	for _, err := range []error{aErr, six.err} {
		if err != nil && !IsNotFound(err) {
			return nil, err
		}
	}
	var out []net.IPAddr
	for _, rr := range append(a, six.rrs...) {
		switch rr := rr.(type) {
		case *dns.A:
			out = append(out, net.IPAddr{IP: rr.A})
		case *dns.AAAA:
			out = append(out, net.IPAddr{IP: rr.AAAA})
		}
	}
	if len(out) > 0 {
		return out, nil
	}
	// Both are negative answers; NXDOMAIN says more than NODATA.
	server := ""
	for _, err := range []error{aErr, six.err} {
		if de, ok := err.(*net.DNSError); ok {
			if de.Err == errNoSuchHost || de.Err == errInvalidName {
				return nil, de
			}
			server = cmp.Or(server, de.Server)
		}
	}
	return nil, notFound(host, server, "no A or AAAA record")
}

// LookupAddr returns the names of addr (an IPv4 or IPv6 address) from its
// PTR records, fully qualified with the trailing dot.
func (r *Resolver) LookupAddr(ctx context.Context, addr string) ([]string, error) {
	arpa, err := dns.ReverseAddr(addr)
	if err != nil {
		return nil, notFound(addr, "", errInvalidAddr)
	}
	rrs, err := r.lookup(ctx, addr, arpa, dns.TypePTR)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(rrs))
	for _, rr := range rrs {
		out = append(out, rr.(*dns.PTR).Ptr)
	}
	return out, nil
}

// lookup returns the records of type qtype for name, from the cache or the
// servers. display is the name errors carry (what the caller asked for).
func (r *Resolver) lookup(ctx context.Context, display, name string, qtype uint16) ([]dns.RR, error) {
	qname, ok := canonicalName(name)
	if !ok {
		return nil, notFound(display, "", errInvalidName)
	}
	key := cacheKey{qname, qtype}
	ans, ok := r.cache.get(key, r.now())
	if !ok {
		var ttl time.Duration
		var err error
		ans, ttl, err = r.resolve(ctx, display, qname, qtype)
		if err != nil {
			return nil, err
		}
		if ttl > 0 {
			r.cache.put(key, ans, r.now().Add(ttl))
		}
	}
	if len(ans.rrs) > 0 {
		return ans.rrs, nil
	}
	if ans.nxdomain {
		return nil, notFound(display, ans.server, errNoSuchHost)
	}
	return nil, notFound(display, ans.server, "no "+dns.TypeToString[qtype]+" record")
}

// resolve asks the servers about (qname, qtype), following CNAMEs, and
// returns the answer with how long it may be cached.
func (r *Resolver) resolve(ctx context.Context, display, qname string, qtype uint16) (answer, time.Duration, error) {
	ttl := r.maxTTL
	lower := func(sec uint32) { ttl = min(ttl, time.Duration(sec)*time.Second) }
	cur := qname
	names := 1 // names in the chain so far
	for {
		msg, server, err := r.query(ctx, display, cur, qtype)
		if err != nil {
			return answer{}, 0, err
		}
		asked := cur
		var rrs []dns.RR
		for {
			rrs = dnstext.Records(msg.Answer, cur, qtype)
			if len(rrs) > 0 {
				break
			}
			cname := dnstext.Records(msg.Answer, cur, dns.TypeCNAME)
			if len(cname) == 0 || qtype == dns.TypeCNAME {
				break
			}
			if names++; names > maxChain {
				r.countError(ctx, "cname_chain", nil)
				return answer{}, 0, temporary(display, server, errLongChain)
			}
			lower(cname[0].Header().Ttl)
			cur = dns.CanonicalName(cname[0].(*dns.CNAME).Target)
		}
		if len(rrs) > 0 {
			for _, rr := range rrs {
				lower(rr.Header().Ttl)
			}
			return answer{rrs: rrs, server: server}, ttl, nil
		}
		if msg.Rcode == dns.RcodeSuccess && cur != asked {
			// The answer stopped at a CNAME whose target the server did not
			// resolve (another zone, for an authoritative server): ask for
			// the target. A recursive server's NODATA for the target lands
			// here too and costs one more query.
			continue
		}
		// RFC 2308 §5: negative answers are cached for the smaller of the
		// SOA's TTL and its MINIMUM field.
		neg := r.negTTL
		for _, rr := range msg.Ns {
			if soa, ok := rr.(*dns.SOA); ok {
				neg = min(neg, time.Duration(min(soa.Hdr.Ttl, soa.Minttl))*time.Second)
				break
			}
		}
		return answer{nxdomain: msg.Rcode == dns.RcodeNameError, server: server}, min(ttl, neg), nil
	}
}

// canonicalName validates name (with or without the trailing dot) and
// returns it lowercased and fully qualified, in the presentation form
// miekg/dns uses for names it unpacks, so that it compares equal to the
// names in answers. Labels must be 1 to 63 printable ASCII bytes or spaces,
// other than backslash (IDNA is the caller's job); the whole name at most
// 253 bytes (255 in wire form). A label may hold any byte on the wire (RFC
// 2181 §11), and SPF macros make names with spaces (RFC 7208 §7.3: "%_"),
// so a space is accepted, escaped as miekg/dns writes it.
func canonicalName(name string) (string, bool) {
	name = strings.TrimSuffix(name, ".")
	if name == "" || len(name) > 253 {
		return "", false
	}
	var b strings.Builder
	for label := range strings.SplitSeq(name, ".") {
		if label == "" || len(label) > 63 {
			return "", false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			switch {
			case c < ' ' || c > '~' || c == '\\':
				return "", false
			case c == ' ' || c == '\'' || c == '@' || c == ';' || c == '(' || c == ')' || c == '"':
				b.WriteByte('\\') // escaped by miekg/dns when it unpacks a name
			case 'A' <= c && c <= 'Z':
				c += 'a' - 'A'
			}
			b.WriteByte(c)
		}
		b.WriteByte('.')
	}
	return b.String(), true
}

// DomainExists reports whether a domain name exists in the DNS: false only
// for NXDOMAIN (RFC 8020: nothing exists at or below it), true for any other
// final answer, NODATA included. DMARC's np tag needs exactly this
// distinction (RFC 9989 §3.2.13), which IsNotFound blurs. Temporary failures
// are returned as errors.
func (r *Resolver) DomainExists(ctx context.Context, domain string) (bool, error) {
	_, err := r.lookup(ctx, domain, domain, dns.TypeA)
	if err == nil {
		return true, nil
	}
	var de *net.DNSError
	if errors.As(err, &de) && de.IsNotFound {
		return de.Err != errNoSuchHost && de.Err != errInvalidName, nil
	}
	return false, err
}
