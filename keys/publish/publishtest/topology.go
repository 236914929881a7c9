package publishtest

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/authmilter/authmilter/internal/syncbuf"
)

// Small DNS topologies for tests that need real delegations: Knot DNS
// instances serving given zones on port 53 of distinct loopback addresses
// (NS records imply port 53), and Unbound as the recursive resolver that
// follows the delegations between them. The addresses are 127.54.N.x with a
// random N (127.53.0.0/16 belongs to internal/dnstopo); root is needed to
// bind port 53.

// UnboundBinary is the Unbound recursive resolver binary.
const UnboundBinary = "/usr/sbin/unbound"

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
			ok = free(fmt.Sprintf("%s%d:53", prefix, host))
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

// free reports whether addr can be bound for UDP and TCP.
func free(addr string) bool {
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return false
	}
	pc.Close()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// StartZones starts knotd on ip:53 authoritative for the zones given as
// complete zone-file texts by origin (each with its SOA and NS records).
// Updates signed with TSIGName are accepted (see Knot.Update). It fails the
// test if knotd is missing or does not serve every zone.
func StartZones(t testing.TB, ip string, zones map[string]string) *Knot {
	t.Helper()
	if _, err := os.Stat(KnotBinary); err != nil {
		t.Fatalf("publishtest: %s not found (%v); install it with: %s", KnotBinary, err, InstallHint)
	}
	dir := t.TempDir()
	raw := make([]byte, 32)
	rand.Read(raw)
	k := &Knot{Addr: net.JoinHostPort(ip, "53"), Dir: dir, TSIGSecret: base64.StdEncoding.EncodeToString(raw),
		SecretFile: filepath.Join(dir, "tsig.secret"), logs: &syncbuf.Buffer{}, done: make(chan struct{})}
	must := func(err error) {
		if err != nil {
			t.Helper()
			t.Fatalf("publishtest: %v", err)
		}
	}
	must(os.WriteFile(k.SecretFile, []byte(k.TSIGSecret+"\n"), 0o600))
	must(os.MkdirAll(filepath.Join(dir, "db"), 0o700))
	origins := make([]string, 0, len(zones))
	for z := range zones {
		origins = append(origins, strings.TrimSuffix(strings.ToLower(z), "."))
	}
	sort.Strings(origins)
	var zs strings.Builder
	for _, z := range origins {
		text := zones[z]
		if text == "" {
			text = zones[z+"."]
		}
		must(os.WriteFile(filepath.Join(dir, z+".zone"), []byte(text), 0o600))
		fmt.Fprintf(&zs, "  - domain: %s\n    acl: update\n", z)
	}
	conf := fmt.Sprintf(`server:
    rundir: "%[1]s"
    listen: %[2]s@53
    pidfile: "%[1]s/knot.pid"
log:
  - target: stderr
    any: info
database:
    storage: "%[1]s/db"
control:
    listen: "%[1]s/knot.sock"
key:
  - id: %[3]s
    algorithm: hmac-sha256
    secret: %[4]s
acl:
  - id: update
    key: %[3]s
    action: update
template:
  - id: default
    storage: "%[1]s"
    file: "%%s.zone"
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: changes
zone:
%[5]s`, dir, ip, TSIGName, k.TSIGSecret, zs.String())
	confPath := filepath.Join(dir, "knot.conf")
	must(os.WriteFile(confPath, []byte(conf), 0o600))
	k.cmd = exec.Command(KnotBinary, "-c", confPath)
	k.cmd.Stdout, k.cmd.Stderr = k.logs, k.logs
	must(k.cmd.Start())
	go func() { k.cmd.Wait(); close(k.done) }()
	t.Cleanup(k.stop)
	deadline := time.Now().Add(15 * time.Second)
	for {
		ready := true
		for _, z := range origins {
			if r, err := k.query(dns.Fqdn(z), dns.TypeSOA); err != nil || !r.Authoritative {
				ready = false
				break
			}
		}
		if ready {
			return k
		}
		select {
		case <-k.done:
			t.Fatalf("publishtest: knotd on %s exited: %s", k.Addr, k.logs.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("publishtest: knotd does not serve its zones on %s: %s", k.Addr, k.logs.String())
		}
	}
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
	m.SetTsig(TSIGName, dns.HmacSHA256, 300, time.Now().Unix())
	c := &dns.Client{Net: "tcp", Timeout: 5 * time.Second, TsigSecret: map[string]string{TSIGName: k.TSIGSecret}}
	r, _, err := c.Exchange(m, k.Addr)
	if err != nil {
		t.Fatalf("publishtest: update %s on %s: %v", zone, k.Addr, err)
	}
	if r.Rcode != dns.RcodeSuccess {
		t.Fatalf("publishtest: update %s on %s: %s", zone, k.Addr, dns.RcodeToString[r.Rcode])
	}
}

// Unbound is a running Unbound recursive resolver.
type Unbound struct {
	// Addr is its "127.0.0.1:port".
	Addr string

	cmd  *exec.Cmd
	logs *syncbuf.Buffer
	done chan struct{}
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
	if _, err := os.Stat(UnboundBinary); err != nil {
		t.Fatalf("publishtest: %s not found (%v); install it with: %s", UnboundBinary, err, UnboundHint)
	}
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
	addr, err := freeAddr()
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
	u := &Unbound{Addr: addr, logs: &syncbuf.Buffer{}, done: make(chan struct{})}
	u.cmd = exec.Command(UnboundBinary, "-d", "-c", conf)
	u.cmd.Stdout, u.cmd.Stderr = u.logs, u.logs
	if err := u.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", UnboundBinary, err)
	}
	go func() { u.cmd.Wait(); close(u.done) }()
	t.Cleanup(u.stop)
	deadline := time.Now().Add(15 * time.Second)
	for {
		q := new(dns.Msg)
		q.SetQuestion(dns.Fqdn(zones[0]), dns.TypeSOA)
		c := &dns.Client{Timeout: time.Second}
		if r, _, err := c.Exchange(q, addr); err == nil && r.Rcode == dns.RcodeSuccess {
			return u, nil
		}
		select {
		case <-u.done:
			return nil, fmt.Errorf("unbound exited: %s", u.logs.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			u.stop()
			return nil, fmt.Errorf("unbound does not answer on %s: %s", addr, u.logs.String())
		}
	}
}

// Logs returns what unbound logged so far.
func (u *Unbound) Logs() string { return u.logs.String() }

// stop kills unbound by its PID and waits for it.
func (u *Unbound) stop() {
	select {
	case <-u.done:
		return
	default:
	}
	u.cmd.Process.Kill()
	<-u.done
}
