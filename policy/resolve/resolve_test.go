package resolve

import (
	"github.com/authmilter/authmilter/internal/dnstext"

	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"blitiri.com.ar/go/spf"
	"github.com/miekg/dns"

	"github.com/authmilter/authmilter/internal/testdns"
)

const exampleZone = "../../testdata/dns/example.zone"

// The resolver must fit where *net.Resolver fits, and the SPF library.
var (
	_ spf.DNSResolver = (*Resolver)(nil)
	_ spf.DNSResolver = (*net.Resolver)(nil)
)

// clock is a settable clock for cache expiry tests.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// newTest returns a resolver asking the given servers, with a short timeout
// and a fake clock.
func newTest(t *testing.T, cfg Config, servers ...*testdns.Server) (*Resolver, *clock) {
	t.Helper()
	for _, s := range servers {
		cfg.Servers = append(cfg.Servers, s.Addr())
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 200 * time.Millisecond
	}
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c := &clock{t: time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)}
	r.now = c.now
	return r, c
}

// exampleServer serves testdata/dns/example.zone plus test records.
func exampleServer(t *testing.T) *testdns.Server {
	t.Helper()
	s := testdns.Start(t)
	s.AddZoneFile(t, exampleZone)
	s.AddZoneText(t, "example.net.", `
$TTL 300
@        IN SOA ns.example.net. hostmaster.example.net. 1 3600 600 86400 30
multi    IN TXT "v=DKIM1; k=rsa; " "p=ABC" "DEF"
two      IN TXT "first"
two      IN TXT "second"
escaped  IN TXT "semi;colon \"quoted\" back\\slash \195\169"
empty    IN TXT ""
host     IN A    192.0.2.10
host     IN A    192.0.2.11
host     IN AAAA 2001:db8::10
v4only   IN A    192.0.2.12
v6only   IN AAAA 2001:db8::12
alias    IN CNAME host
alias2   IN CNAME alias
txtalias IN CNAME two
loop1    IN CNAME loop2
loop2    IN CNAME loop1
dangling IN CNAME gone.example.net.
long1    IN CNAME long2
long2    IN CNAME long3
long3    IN CNAME long4
long4    IN CNAME long5
long5    IN CNAME long6
long6    IN CNAME long7
long7    IN CNAME long8
long8    IN TXT   "eight names"
long0    IN CNAME long1
`)
	s.AddRR(t, "o'brien.example.net. 300 IN A 192.0.2.13")
	s.AddRR(t, "10.2.0.192.in-addr.arpa. 300 IN PTR host.example.net.")
	s.AddRR(t, "0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa. 300 IN PTR host.example.net.")
	return s
}

func TestLookupTXT(t *testing.T) {
	s := exampleServer(t)
	r, _ := newTest(t, Config{}, s)
	tests := []struct {
		name string
		want []string
	}{
		{"example.com", []string{"v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 mx -all"}},
		{"_dmarc.example.com.", []string{"v=DMARC1; p=reject; rua=mailto:dmarc@example.com; adkim=s; aspf=s"}},
		{"placeholder._domainkey.EXAMPLE.com", []string{"v=DKIM1; k=rsa; p=PLACEHOLDER"}},
		{"multi.example.net", []string{"v=DKIM1; k=rsa; p=ABCDEF"}},
		{"two.example.net", []string{"first", "second"}},
		{"escaped.example.net", []string{"semi;colon \"quoted\" back\\slash \u00e9"}},
		{"empty.example.net", []string{""}},
		{"txtalias.example.net", []string{"first", "second"}},
		{"long1.example.net", []string{"eight names"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := r.LookupTXT(context.Background(), tt.name)
			if err != nil {
				t.Fatal(err)
			}
			slices.Sort(got)
			if !slices.Equal(got, tt.want) {
				t.Errorf("LookupTXT = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestErrors checks the classification of every failure, and that each
// error is a bare *net.DNSError.
func TestErrors(t *testing.T) {
	s := exampleServer(t)
	s.Fail("servfail.example.com", dns.RcodeServerFailure)
	s.Fail("refused.example.com", dns.RcodeRefused)
	s.Fail("formerr.example.com", dns.RcodeFormatError)
	s.Drop("drop.example.com")
	r, _ := newTest(t, Config{}, s)

	tests := []struct {
		name      string
		lookup    func(ctx context.Context) error
		notFound  bool
		timeout   bool
		errText   string // substring of Err
		errName   string
		hasServer bool
	}{
		{"NXDOMAIN", txt(r, "nope.example.com"), true, false, "no such host", "nope.example.com", true},
		{"NODATA", txt(r, "mx2.example.com"), true, false, "no TXT record", "mx2.example.com", true},
		{"NODATA at empty non-terminal", txt(r, "_domainkey.example.com."), true, false, "no TXT record", "_domainkey.example.com.", true},
		{"CNAME to NXDOMAIN", txt(r, "dangling.example.net"), true, false, "no such host", "dangling.example.net", true},
		{"invalid name", txt(r, "a..b"), true, false, "invalid domain name", "a..b", false},
		{"label too long", txt(r, strings.Repeat("a", 64)+".com"), true, false, "invalid domain name", strings.Repeat("a", 64) + ".com", false},
		{"empty name", txt(r, ""), true, false, "invalid domain name", "", false},
		{"escape in name", txt(r, `a\.b.com`), true, false, "invalid domain name", `a\.b.com`, false},
		{"bad address", func(ctx context.Context) error { _, err := r.LookupAddr(ctx, "nonsense"); return err }, true, false, "unrecognized address", "nonsense", false},
		{"no A or AAAA", func(ctx context.Context) error { _, err := r.LookupIPAddr(ctx, "_dmarc.example.com"); return err }, true, false, "no A or AAAA record", "_dmarc.example.com", true},
		{"no MX", func(ctx context.Context) error { _, err := r.LookupMX(ctx, "nomx.example.com"); return err }, true, false, "no such host", "nomx.example.com", true},
		{"SERVFAIL", txt(r, "servfail.example.com"), false, false, "SERVFAIL", "servfail.example.com", true},
		{"REFUSED", txt(r, "refused.example.com"), false, false, "REFUSED", "refused.example.com", true},
		{"FORMERR", txt(r, "formerr.example.com"), false, false, "FORMERR", "formerr.example.com", true},
		{"timeout", txt(r, "drop.example.com"), false, true, "i/o timeout", "drop.example.com", true},
		{"timeout on A, AAAA", func(ctx context.Context) error { _, err := r.LookupIPAddr(ctx, "drop.example.com"); return err }, false, true, "i/o timeout", "drop.example.com", true},
		{"CNAME loop", txt(r, "loop1.example.net"), false, false, "CNAME chain", "loop1.example.net", true},
		{"CNAME chain of 9", txt(r, "long0.example.net"), false, false, "CNAME chain", "long0.example.net", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.lookup(context.Background())
			if err == nil {
				t.Fatal("no error")
			}
			de, ok := err.(*net.DNSError) // a bare type assertion, as blitiri.com.ar/go/spf does
			if !ok {
				t.Fatalf("error %T (%v) is not a bare *net.DNSError", err, err)
			}
			if de.IsNotFound != tt.notFound || de.Temporary() == tt.notFound || de.IsTimeout != tt.timeout {
				t.Errorf("IsNotFound=%v IsTemporary=%v IsTimeout=%v, want notFound=%v timeout=%v (%v)",
					de.IsNotFound, de.IsTemporary, de.IsTimeout, tt.notFound, tt.timeout, err)
			}
			if IsNotFound(err) != tt.notFound || IsTemporary(err) == tt.notFound {
				t.Errorf("IsNotFound(err)=%v IsTemporary(err)=%v, want notFound=%v", IsNotFound(err), IsTemporary(err), tt.notFound)
			}
			if !strings.Contains(de.Err, tt.errText) {
				t.Errorf("Err = %q, want it to contain %q", de.Err, tt.errText)
			}
			if de.Name != tt.errName {
				t.Errorf("Name = %q, want %q", de.Name, tt.errName)
			}
			if (de.Server == s.Addr()) != tt.hasServer {
				t.Errorf("Server = %q, want server set: %v", de.Server, tt.hasServer)
			}
		})
	}
}

func txt(r *Resolver, name string) func(context.Context) error {
	return func(ctx context.Context) error {
		_, err := r.LookupTXT(ctx, name)
		return err
	}
}

func TestHelpersLookThroughWrapping(t *testing.T) {
	tests := []struct {
		name          string
		err           error
		notFound, tmp bool
	}{
		{"nil", nil, false, false},
		{"other error", errors.New("boom"), false, false},
		{"not found", notFound("x", "", errNoSuchHost), true, false},
		{"wrapped not found", errors.Join(errors.New("dkim: key"), notFound("x", "", errNoSuchHost)), true, false},
		{"temporary", temporary("x", "", "server answered SERVFAIL"), false, true},
		{"timeout only", &net.DNSError{IsTimeout: true}, false, true},
		{"wrapped temporary", errors.Join(errors.New("spf"), temporary("x", "", "SERVFAIL")), false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := IsNotFound(tt.err); got != tt.notFound {
				t.Errorf("IsNotFound = %v, want %v", got, tt.notFound)
			}
			if got := IsTemporary(tt.err); got != tt.tmp {
				t.Errorf("IsTemporary = %v, want %v", got, tt.tmp)
			}
		})
	}
}

func TestTruncatedFallsBackToTCP(t *testing.T) {
	s := testdns.Start(t)
	// The TXT record of a 4096-bit RSA key: more than the 1232-byte buffer.
	key := "v=DKIM1; k=rsa; p=" + strings.Repeat("MIICIjANBgkqhkiG9w0BAQEFAAOCAg8AMIICCgKCAgEA", 40)
	s.SetTXT("big._domainkey.example.com", key)
	r, _ := newTest(t, Config{}, s)
	got, err := r.LookupTXT(context.Background(), "big._domainkey.example.com")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0] != key {
		t.Fatalf("got %d records, first %d bytes; want the %d-byte key", len(got), len(got[0]), len(key))
	}
	if n := s.QueryCount("big._domainkey.example.com", dns.TypeTXT); n != 2 {
		t.Errorf("server saw %d queries, want 2 (UDP then TCP)", n)
	}
}

func TestLookupMX(t *testing.T) {
	s := exampleServer(t)
	s.AddRR(t, "prefs.example.com. 300 IN MX 30 c.example.com.")
	s.AddRR(t, "prefs.example.com. 300 IN MX 5 a.example.com.")
	s.AddRR(t, "prefs.example.com. 300 IN MX 10 b.example.com.")
	s.AddRR(t, "null.example.com. 300 IN MX 0 .")
	r, _ := newTest(t, Config{}, s)
	tests := []struct {
		name string
		want []string
	}{
		{"example.com", []string{"10 mx1.example.com.", "20 mx2.example.com."}},
		{"prefs.example.com", []string{"5 a.example.com.", "10 b.example.com.", "30 c.example.com."}},
		{"null.example.com", []string{"0 ."}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mxs, err := r.LookupMX(context.Background(), tt.name)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, mx := range mxs {
				got = append(got, strconv.Itoa(int(mx.Pref))+" "+mx.Host)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("LookupMX = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestLookupIPAddr(t *testing.T) {
	s := exampleServer(t)
	r, _ := newTest(t, Config{}, s)
	tests := []struct {
		host string
		want []string
	}{
		{"host.example.net", []string{"192.0.2.10", "192.0.2.11", "2001:db8::10"}},
		{"v4only.example.net", []string{"192.0.2.12"}},
		{"v6only.example.net", []string{"2001:db8::12"}},
		{"alias2.example.net", []string{"192.0.2.10", "192.0.2.11", "2001:db8::10"}},
		{"mx1.example.com.", []string{"192.0.2.25", "2001:db8::25"}},
		{"O'Brien.example.net", []string{"192.0.2.13"}}, // as from an SPF %{l} macro
		{"192.0.2.99", []string{"192.0.2.99"}},
		{"2001:db8::99", []string{"2001:db8::99"}},
	}
	for _, tt := range tests {
		t.Run(tt.host, func(t *testing.T) {
			addrs, err := r.LookupIPAddr(context.Background(), tt.host)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, a := range addrs {
				got = append(got, a.IP.String())
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("LookupIPAddr = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestLookupIPAddrPartialFailureIsTemporary(t *testing.T) {
	s := testdns.Start(t)
	s.AddRR(t, "half.example.com. 300 IN A 192.0.2.1")
	r, _ := newTest(t, Config{}, s)
	// testdns fails whole names: cache the A answer, then make AAAA fail.
	if _, err := r.lookup(context.Background(), "half.example.com", "half.example.com", dns.TypeA); err != nil {
		t.Fatal(err)
	}
	s.Fail("half.example.com", dns.RcodeServerFailure)
	addrs, err := r.LookupIPAddr(context.Background(), "half.example.com")
	if !IsTemporary(err) {
		t.Fatalf("LookupIPAddr = %v, %v; want a temporary error when AAAA fails", addrs, err)
	}
}

func TestLookupAddr(t *testing.T) {
	s := exampleServer(t)
	r, _ := newTest(t, Config{}, s)
	tests := []struct {
		addr     string
		want     []string
		notFound bool
	}{
		{"192.0.2.10", []string{"host.example.net."}, false},
		{"2001:db8::10", []string{"host.example.net."}, false},
		{"192.0.2.200", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			got, err := r.LookupAddr(context.Background(), tt.addr)
			if tt.notFound {
				if !IsNotFound(err) {
					t.Fatalf("LookupAddr = %q, %v; want not found", got, err)
				}
				if de := err.(*net.DNSError); de.Name != tt.addr {
					t.Errorf("Name = %q, want the address %q", de.Name, tt.addr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("LookupAddr = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestCNAMEOnlyAnswerIsChased(t *testing.T) {
	s := testdns.Start(t)
	s.SetChaseCNAME(false)
	s.AddRR(t, "sel._domainkey.customer.test. 300 IN CNAME sel.esp.test.")
	s.AddRR(t, `sel.esp.test. 300 IN TXT "v=DKIM1; p=KEY"`)
	s.AddRR(t, "gone._domainkey.customer.test. 300 IN CNAME gone.esp.test.")
	r, _ := newTest(t, Config{}, s)

	got, err := r.LookupTXT(context.Background(), "sel._domainkey.customer.test")
	if err != nil || !slices.Equal(got, []string{"v=DKIM1; p=KEY"}) {
		t.Fatalf("LookupTXT = %q, %v", got, err)
	}
	if n := s.QueryCount("sel.esp.test", dns.TypeTXT); n != 1 {
		t.Errorf("target queried %d times, want 1", n)
	}
	_, err = r.LookupTXT(context.Background(), "gone._domainkey.customer.test")
	if !IsNotFound(err) || !strings.Contains(err.Error(), "no such host") {
		t.Errorf("CNAME to a missing name: %v, want no such host", err)
	}
}

func TestCache(t *testing.T) {
	type step struct {
		advance time.Duration
		queries int // queries the server has seen for the name after this lookup
	}
	tests := []struct {
		name     string
		qname    string
		cfg      Config
		notFound bool
		steps    []step
	}{
		{"positive for its TTL", "example.com", Config{}, false, []step{{0, 1}, {0, 1}, {299 * time.Second, 1}, {time.Second, 2}, {0, 2}}},
		{"positive capped by MaxTTL", "day.example.com", Config{MaxTTL: time.Minute}, false, []step{{0, 1}, {59 * time.Second, 1}, {time.Second, 2}}},
		{"CNAME TTL counts", "short.example.com", Config{}, false, []step{{0, 1}, {299 * time.Second, 1}, {time.Second, 2}}},
		{"TTL 0 not cached", "zero.example.com", Config{}, false, []step{{0, 1}, {0, 2}}},
		{"NXDOMAIN for the SOA minimum", "nope.example.com", Config{}, true, []step{{0, 1}, {59 * time.Second, 1}, {time.Second, 2}}},
		{"NODATA for the SOA minimum", "mx1.example.com", Config{}, true, []step{{0, 1}, {59 * time.Second, 1}, {time.Second, 2}}},
		{"negative capped by NegativeTTL", "nope2.example.com", Config{NegativeTTL: 10 * time.Second}, true, []step{{0, 1}, {9 * time.Second, 1}, {time.Second, 2}}},
		{"cache disabled", "example.com", Config{CacheSize: -1}, false, []step{{0, 1}, {0, 2}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := exampleServer(t) // fresh query counters

			s.SetTXT("zero.example.com", "ttl 0")
			s.AddRR(t, `day.example.com. 86400 IN TXT "a day"`)
			s.AddRR(t, "short.example.com. 300 IN CNAME day.example.com.")
			r, clk := newTest(t, tt.cfg, s)
			for i, st := range tt.steps {
				clk.advance(st.advance)
				_, err := r.LookupTXT(context.Background(), tt.qname)
				if tt.notFound != IsNotFound(err) || (!tt.notFound && err != nil) {
					t.Fatalf("step %d: error %v, want notFound=%v", i, err, tt.notFound)
				}
				if got := s.QueryCount(tt.qname, dns.TypeTXT); got != st.queries {
					t.Fatalf("step %d: server saw %d queries, want %d", i, got, st.queries)
				}
			}
		})
	}
}

func TestCacheKeyIgnoresCaseAndDot(t *testing.T) {
	s := exampleServer(t)
	r, _ := newTest(t, Config{}, s)
	for _, name := range []string{"example.com", "EXAMPLE.COM.", "Example.Com"} {
		if _, err := r.LookupTXT(context.Background(), name); err != nil {
			t.Fatal(err)
		}
	}
	if n := s.Queries(); n != 1 {
		t.Errorf("server saw %d queries, want 1", n)
	}
}

func TestTemporaryErrorsAreNotCached(t *testing.T) {
	s := exampleServer(t)
	r, _ := newTest(t, Config{}, s)
	s.Fail("_dmarc.example.com", dns.RcodeServerFailure)
	if _, err := r.LookupTXT(context.Background(), "_dmarc.example.com"); !IsTemporary(err) {
		t.Fatalf("with SERVFAIL: %v", err)
	}
	s.Clear("_dmarc.example.com")
	if _, err := r.LookupTXT(context.Background(), "_dmarc.example.com"); err != nil {
		t.Fatalf("after Clear: %v", err)
	}
}

func TestPublishedMidway(t *testing.T) {
	s := testdns.Start(t)
	r, _ := newTest(t, Config{}, s)
	if _, err := r.LookupTXT(context.Background(), "new._domainkey.example.com"); !IsNotFound(err) {
		t.Fatalf("before publishing: %v", err)
	}
	s.SetTXT("new._domainkey.example.com", "v=DKIM1; p=NEW")
	got, err := r.LookupTXT(context.Background(), "new._domainkey.example.com")
	if err != nil || len(got) != 1 {
		t.Fatalf("after publishing: %q, %v (synthesized SOA minimum 0 must not be cached)", got, err)
	}
}

func TestServerFailover(t *testing.T) {
	tests := []struct {
		name   string
		broken func(s *testdns.Server)
	}{
		{"first drops", func(s *testdns.Server) { s.Drop("example.com") }},
		{"first SERVFAIL", func(s *testdns.Server) { s.Fail("example.com", dns.RcodeServerFailure) }},
		{"first REFUSED", func(s *testdns.Server) { s.Fail("example.com", dns.RcodeRefused) }},
		{"first gone", func(s *testdns.Server) { s.Close() }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bad, good := exampleServer(t), exampleServer(t)
			tt.broken(bad)
			r, _ := newTest(t, Config{}, bad, good)
			got, err := r.LookupTXT(context.Background(), "example.com")
			if err != nil || len(got) != 1 {
				t.Fatalf("LookupTXT = %q, %v; want the second server's answer", got, err)
			}
			if good.Queries() != 1 {
				t.Errorf("second server saw %d queries, want 1", good.Queries())
			}
		})
	}
}

func TestAllServersFail(t *testing.T) {
	a, b := exampleServer(t), exampleServer(t)
	a.Drop("example.com")
	b.Fail("example.com", dns.RcodeServerFailure)
	r, _ := newTest(t, Config{}, a, b)
	_, err := r.LookupTXT(context.Background(), "example.com")
	de, ok := err.(*net.DNSError)
	if !ok || !de.IsTemporary || de.IsNotFound || de.Server != b.Addr() {
		t.Fatalf("error %#v, want the last server's temporary error", err)
	}
}

func TestContext(t *testing.T) {
	s := exampleServer(t)
	s.Drop("drop.example.com")
	r, _ := newTest(t, Config{Timeout: 5 * time.Second}, s)

	t.Run("deadline shorter than Timeout", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		_, err := r.LookupTXT(ctx, "drop.example.com")
		de, ok := err.(*net.DNSError)
		if !ok || !de.IsTimeout || !de.IsTemporary || !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("error %#v, want a timeout wrapping context.DeadlineExceeded", err)
		}
	})
	t.Run("canceled while waiting", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(100*time.Millisecond, cancel)
		_, err := r.LookupTXT(ctx, "drop.example.com")
		if !IsTemporary(err) || IsNotFound(err) || !errors.Is(err, context.Canceled) {
			t.Errorf("error %v, want temporary wrapping context.Canceled", err)
		}
	})
	t.Run("already canceled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := r.LookupTXT(ctx, "example.com")
		if !IsTemporary(err) || !errors.Is(err, context.Canceled) {
			t.Errorf("error %v, want temporary wrapping context.Canceled", err)
		}
		if _, ok := err.(*net.DNSError); !ok {
			t.Errorf("error %T, want *net.DNSError", err)
		}
	})
}

func TestConcurrentLookups(t *testing.T) {
	s := exampleServer(t)
	r, _ := newTest(t, Config{CacheSize: 3}, s)
	names := []string{"example.com", "_dmarc.example.com", "multi.example.net", "two.example.net", "nope.example.com"}
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Go(func() {
			name := names[i%len(names)]
			_, err := r.LookupTXT(context.Background(), name)
			if err != nil && !IsNotFound(err) {
				t.Errorf("%s: %v", name, err)
			}
		})
	}
	wg.Wait()
	if n := r.cache.len(); n > 3 {
		t.Errorf("cache holds %d entries, want at most 3", n)
	}
}

// TestSPF runs blitiri.com.ar/go/spf on the resolver: its error
// classification must turn into the right SPF results.
func TestSPF(t *testing.T) {
	s := exampleServer(t)
	s.SetTXT("temp.test", "v=spf1 include:broken.test -all")
	s.Fail("broken.test", dns.RcodeServerFailure)
	s.SetTXT("void.test", "v=spf1 include:missing.test -all")
	r, _ := newTest(t, Config{}, s)
	tests := []struct {
		ip     string
		domain string
		want   spf.Result
	}{
		{"192.0.2.5", "example.com", spf.Pass},
		{"2001:db8::25", "example.com", spf.Pass},
		{"198.51.100.1", "example.com", spf.Fail},
		{"198.51.100.1", "nothing.example.com", spf.None},
		{"198.51.100.1", "temp.test", spf.TempError},
		{"198.51.100.1", "void.test", spf.PermError},
	}
	for _, tt := range tests {
		t.Run(tt.domain+"/"+tt.ip, func(t *testing.T) {
			got, err := spf.CheckHostWithSender(net.ParseIP(tt.ip), "helo.test", "user@"+tt.domain,
				spf.WithResolver(r), spf.WithContext(context.Background()))
			if got != tt.want {
				t.Errorf("SPF = %s (%v), want %s", got, err, tt.want)
			}
		})
	}
}

func TestNew(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	conf := write("resolv.conf", "search example.com\nnameserver 192.0.2.53\nnameserver 2001:db8::53\noptions ndots:1\n")
	empty := write("empty.conf", "# no servers\n")

	tests := []struct {
		name    string
		cfg     Config
		conf    string
		want    []string
		wantErr string
	}{
		{"explicit", Config{Servers: []string{"127.0.0.1:5353", "[::1]:53", "192.0.2.1", "2001:db8::1"}}, "", []string{"127.0.0.1:5353", "[::1]:53", "192.0.2.1:53", "[2001:db8::1]:53"}, ""},
		{"resolv.conf", Config{}, conf, []string{"192.0.2.53:53", "[2001:db8::53]:53"}, ""},
		{"resolv.conf without servers", Config{}, empty, []string{"127.0.0.1:53", "[::1]:53"}, ""},
		{"resolv.conf missing", Config{}, filepath.Join(dir, "missing"), nil, "unusable"},
		{"host name", Config{Servers: []string{"dns.example.com:53"}}, "", nil, "not an IP address"},
		{"bad port", Config{Servers: []string{"127.0.0.1:dns"}}, "", nil, "bad port"},
		{"port 0", Config{Servers: []string{"127.0.0.1:0"}}, "", nil, "bad port"},
		{"negative timeout", Config{Servers: []string{"127.0.0.1"}, Timeout: -time.Second}, "", nil, "negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := newResolver(tt.cfg, tt.conf)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.HasPrefix(err.Error(), "resolve: ") {
					t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := r.Servers(); !slices.Equal(got, tt.want) {
				t.Errorf("Servers = %q, want %q", got, tt.want)
			}
		})
	}

	r, err := New(Config{Servers: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	if r.timeout != DefaultTimeout || r.maxTTL != DefaultMaxTTL || r.negTTL != DefaultNegativeTTL || r.cache.max != DefaultCacheSize {
		t.Errorf("defaults not applied: %+v", r)
	}
}

func TestCanonicalName(t *testing.T) {
	tests := []struct {
		in, want string
		ok       bool
	}{
		{"Example.COM", "example.com.", true},
		{"example.com.", "example.com.", true},
		{"_dmarc.example.com", "_dmarc.example.com.", true},
		{"user+tag.spf.example.com", "user+tag.spf.example.com.", true},
		{`o'Brien;(x)@"y".example.com`, `o\'brien\;\(x\)\@\"y\".example.com.`, true},
		{"", "", false},
		{".", "", false},
		{"a..b", "", false},
		{".a", "", false},
		{strings.Repeat("a", 63) + ".com", strings.Repeat("a", 63) + ".com.", true},
		{strings.Repeat("a", 64) + ".com", "", false},
		{strings.Repeat("a.", 126) + "a", strings.Repeat("a.", 126) + "a.", true}, // 253 bytes
		{strings.Repeat("a.", 126) + "ab", "", false},
		// RFC 7208 §7.3: SPF's "%_" macro expands to a space.
		{"Sp ace.com", `sp\ ace.com.`, true},
		{"macro%percent  space%20url-space.example.com", `macro%percent\ \ space%20url-space.example.com.`, true},
		{"tab\tname.com", "", false},
		{"nul\x00.com", "", false},
		{`back\slash.com`, "", false},
		{"caf\u00e9.com", "", false},
	}
	for _, tt := range tests {
		got, ok := canonicalName(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("canonicalName(%q) = %q, %v; want %q, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestUnescapeTXT(t *testing.T) {
	tests := []struct{ in, want string }{
		{"plain", "plain"},
		{`a\"b`, `a"b`},
		{`a\\b`, `a\b`},
		{`\195\169`, "\u00e9"},
		{`\000x`, "\x00x"},
		{`\12`, "12"},
		{`end\`, `end\`},
	}
	for _, tt := range tests {
		if got := dnstext.Unescape(tt.in); got != tt.want {
			t.Errorf("dnstext.Unescape(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestDomainExists(t *testing.T) {
	s := exampleServer(t)
	r, _ := newTest(t, Config{Timeout: 300 * time.Millisecond}, s)
	s.Fail("broken.example.net", dns.RcodeServerFailure)
	tests := []struct {
		name    string
		exists  bool
		wantErr bool
	}{
		{"host.example.net", true, false},
		{"v6only.example.net", true, false}, // NODATA for A: exists
		{"two.example.net", true, false},    // only TXT: exists
		{"nothing.example.net", false, false},
		{"bad..name", false, false},
		{"broken.example.net", false, true},
	}
	for _, tt := range tests {
		got, err := r.DomainExists(context.Background(), tt.name)
		if got != tt.exists || (err != nil) != tt.wantErr {
			t.Errorf("DomainExists(%q) = %v, %v; want %v, err %v", tt.name, got, err, tt.exists, tt.wantErr)
		}
		if tt.wantErr && !IsTemporary(err) {
			t.Errorf("DomainExists(%q) error %v is not temporary", tt.name, err)
		}
	}
}

func TestOnErrorKinds(t *testing.T) {
	s := exampleServer(t)
	s.Fail("servfail.example.com", dns.RcodeServerFailure)
	s.Fail("refused.example.com", dns.RcodeRefused)
	s.Fail("formerr.example.com", dns.RcodeFormatError)
	s.Drop("drop.example.com")
	var mu sync.Mutex
	var got []string
	r, _ := newTest(t, Config{OnError: func(kind string) {
		mu.Lock()
		got = append(got, kind)
		mu.Unlock()
	}}, s)

	tests := []struct {
		name   string
		lookup func(ctx context.Context) error
		want   []string
	}{
		{"answer", txt(r, "example.com"), nil},
		{"NXDOMAIN is an answer", txt(r, "nope.example.com"), nil},
		{"NODATA is an answer", txt(r, "mx2.example.com"), nil},
		{"invalid name asks nobody", txt(r, "a..b"), nil},
		{"SERVFAIL", txt(r, "servfail.example.com"), []string{"servfail"}},
		{"REFUSED", txt(r, "refused.example.com"), []string{"refused"}},
		{"FORMERR", txt(r, "formerr.example.com"), []string{"rcode"}},
		{"timeout", txt(r, "drop.example.com"), []string{"timeout"}},
		{"CNAME chain", txt(r, "long0.example.net"), []string{"cname_chain"}},
		{"canceled by the caller", func(ctx context.Context) error {
			ctx, cancel := context.WithCancel(ctx)
			time.AfterFunc(20*time.Millisecond, cancel)
			_, err := r.LookupTXT(ctx, "drop.example.com")
			return err
		}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mu.Lock()
			got = nil
			mu.Unlock()
			tt.lookup(context.Background())
			mu.Lock()
			defer mu.Unlock()
			if !slices.Equal(got, tt.want) {
				t.Errorf("OnError kinds = %q, want %q", got, tt.want)
			}
		})
	}

	t.Run("failover counts the failed server", func(t *testing.T) {
		bad, good := exampleServer(t), exampleServer(t)
		bad.Close()
		var kinds []string
		r, _ := newTest(t, Config{OnError: func(k string) { kinds = append(kinds, k) }}, bad, good)
		if _, err := r.LookupTXT(context.Background(), "example.com"); err != nil {
			t.Fatal(err)
		}
		if len(kinds) != 1 || kinds[0] == "" {
			t.Errorf("OnError kinds = %q, want one failed attempt", kinds)
		}
	})
}

func TestErrorKind(t *testing.T) {
	tests := []struct {
		err  *net.DNSError
		want string
	}{
		{temporary("x", "s", errRcodePrefix+"SERVFAIL"), "servfail"},
		{temporary("x", "s", errRcodePrefix+"REFUSED"), "refused"},
		{temporary("x", "s", errRcodePrefix+"NOTIMP"), "rcode"},
		{temporary("x", "s", errTCPTruncated), "truncated"},
		{temporary("x", "s", errTCPRetry+": connection refused"), "truncated"},
		{temporary("x", "s", errWrongAnswer), "bad_answer"},
		{temporary("x", "s", errMismatchedID), "bad_answer"},
		{&net.DNSError{Err: errTimeout, IsTimeout: true, IsTemporary: true}, "timeout"},
		{&net.DNSError{Err: errCanceled, UnwrapErr: context.Canceled, IsTemporary: true}, ""},
		{temporary("x", "s", "dial udp: connection refused"), "network"},
	}
	for _, tt := range tests {
		if got := errorKind(tt.err); got != tt.want {
			t.Errorf("errorKind(%q) = %q, want %q", tt.err.Err, got, tt.want)
		}
	}
}
