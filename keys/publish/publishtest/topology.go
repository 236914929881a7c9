package publishtest

import (
	"context"
	"crypto/rand"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/authmilter/authmilter/internal/dnsproc"
)

// Small DNS topologies for tests that need real delegations: Knot DNS
// instances serving given zones on port 53 of distinct loopback addresses
// (NS records imply port 53), and Unbound as the recursive resolver that
// follows the delegations between them. The addresses are 127.54.N.x with a
// random N (127.53.0.0/16 belongs to internal/dnstopo); root is needed to
// bind port 53.

// UnboundBinary is the Unbound recursive resolver binary.
const UnboundBinary = dnsproc.UnboundBinary

// UnboundHint is what to install when unbound is missing.
const UnboundHint = "apt-get install unbound"

// Net is a /24 of loopback addresses for one test's servers, 127.54.N.0.
type Net struct {
	// Prefix is "127.54.N." (add the last octet).
	Prefix string
}

// NewNet picks a 127.54.N.0/24 whose port 53 is free on 127.54.N.1 to
// 127.54.N.10, so that concurrent test runs do not collide.
func NewNet(t testing.TB) *Net {
	t.Helper()
	for range 50 {
		n, _ := rand.Int(rand.Reader, big.NewInt(254))
		prefix := fmt.Sprintf("127.54.%d.", n.Int64()+1)
		ok := true
		for host := 1; host <= 10 && ok; host++ {
			ok = dnsproc.CanBind(fmt.Sprintf("%s%d:53", prefix, host)) == nil
		}
		if ok {
			return &Net{Prefix: prefix}
		}
	}
	t.Fatalf("publishtest: no free 127.54.N.0/24 for port 53 (are we root?)")
	return nil
}

// IP returns the address 127.54.N.host.
func (n *Net) IP(host int) string { return fmt.Sprintf("%s%d", n.Prefix, host) }

// StartZones starts knotd on ip:53 authoritative for the zones given as
// complete zone-file texts by origin (each with its SOA and NS records).
// Updates signed with TSIGName are accepted (see Knot.Update). It fails the
// test if knotd is missing or does not serve every zone.
func StartZones(t testing.TB, ip string, zones map[string]string) *Knot {
	t.Helper()
	dnsproc.Require(t, "publishtest", InstallHint, KnotBinary)
	texts := make(map[string]string, len(zones))
	for z, text := range zones {
		texts[strings.TrimSuffix(strings.ToLower(z), ".")] = text
	}
	k, err := launchKnot(t, net.JoinHostPort(ip, "53"), texts)
	if err != nil {
		t.Fatalf("publishtest: %v", err)
	}
	return k
}

// Update sends zone an RFC 2136 update signed with TSIGName: it deletes the
// RRsets of the names in del (all types) and then adds the records in add
// (zone-file lines, e.g. `s1._domainkey.example.com. 60 IN TXT "v=DKIM1; p="`).
func (k *Knot) Update(t testing.TB, zone string, del []string, add []string) {
	t.Helper()
	m := new(dns.Msg)
	m.SetUpdate(dns.Fqdn(zone))
	for _, name := range del {
		m.RemoveName([]dns.RR{&dns.ANY{Hdr: dns.RR_Header{Name: dns.Fqdn(name), Rrtype: dns.TypeANY, Class: dns.ClassANY}}})
	}
	var rrs []dns.RR
	for _, line := range add {
		rr, err := dns.NewRR(line)
		if err != nil {
			t.Fatalf("publishtest: record %q: %v", line, err)
		}
		rrs = append(rrs, rr)
	}
	if len(rrs) > 0 {
		m.Insert(rrs)
	}
	k.update(t, m)
}

// Unbound is a running Unbound recursive resolver.
type Unbound struct {
	// Addr is its "127.0.0.1:port".
	Addr string

	proc *dnsproc.Process
}

// StartUnbound starts Unbound on 127.0.0.1 and a free port as a recursive
// resolver that knows no root: each zone of stubs (origin to "ip" or
// "ip@port" addresses) is a stub zone, and Unbound follows delegations
// from there, as it does from the root on the Internet. Caching is cut to
// one second so that tests see changes at once; DNSSEC is off.
func StartUnbound(t testing.TB, stubs map[string][]string) *Unbound {
	t.Helper()
	return startUnboundRetry(t, stubs, 1)
}

// StartUnboundNegativeCache is StartUnbound with negative answers
// (NXDOMAIN, NODATA) kept up to negativeTTL (and the zone's own negative
// TTL, RFC 2308): a resolver that still remembers that a name did not
// exist after it was added, as resolvers on the Internet do. Positive
// answers are still kept one second.
func StartUnboundNegativeCache(t testing.TB, stubs map[string][]string, negativeTTL time.Duration) *Unbound {
	t.Helper()
	return startUnboundRetry(t, stubs, max(1, int(negativeTTL/time.Second)))
}

func startUnboundRetry(t testing.TB, stubs map[string][]string, negativeTTL int) *Unbound {
	t.Helper()
	dnsproc.Require(t, "publishtest", UnboundHint, UnboundBinary)
	var lastErr error
	for range 3 {
		u, err := startUnbound(t, stubs, negativeTTL)
		if err == nil {
			return u
		}
		lastErr = err
	}
	t.Fatalf("publishtest: unbound did not start: %v", lastErr)
	return nil
}

func startUnbound(t testing.TB, stubs map[string][]string, negativeTTL int) (*Unbound, error) {
	dir := t.TempDir()
	addr, err := dnsproc.FreeLoopbackAddr()
	if err != nil {
		return nil, err
	}
	host, port, _ := net.SplitHostPort(addr)
	var b strings.Builder
	fmt.Fprintf(&b, `server:
    interface: %s@%s
    port: %s
    access-control: 127.0.0.0/8 allow
    do-not-query-localhost: no
    username: ""
    chroot: ""
    directory: "%s"
    pidfile: "%s/unbound.pid"
    use-syslog: no
    logfile: ""
    verbosity: 1
    module-config: "iterator"
    cache-max-ttl: 1
    cache-max-negative-ttl: %d
    infra-host-ttl: 1
    do-ip6: no
    qname-minimisation: no
remote-control:
    control-enable: no
`, host, port, port, dir, dir, negativeTTL)
	zones := make([]string, 0, len(stubs))
	for z := range stubs {
		zones = append(zones, z)
	}
	sort.Strings(zones)
	for _, z := range zones {
		fmt.Fprintf(&b, "stub-zone:\n    name: %q\n", strings.TrimSuffix(z, "."))
		for _, a := range stubs[z] {
			fmt.Fprintf(&b, "    stub-addr: %s\n", a)
		}
	}
	conf := filepath.Join(dir, "unbound.conf")
	if err := os.WriteFile(conf, []byte(b.String()), 0o600); err != nil {
		return nil, err
	}
	u := &Unbound{Addr: addr}
	if u.proc, err = dnsproc.Start(t, UnboundBinary, "-d", "-c", conf); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	err = u.proc.WaitReady(ctx, func(ctx context.Context) error {
		return dnsproc.AnswersSOA(ctx, addr, zones[0], true)
	})
	if err != nil {
		u.proc.Stop()
		return nil, fmt.Errorf("unbound on %s: %w", addr, err)
	}
	return u, nil
}

// Logs returns what unbound logged so far.
func (u *Unbound) Logs() string { return u.proc.Logs() }
