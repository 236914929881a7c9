package policy

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/authmilter/authmilter/internal/testdns"
	"github.com/authmilter/authmilter/policy/resolve"
)

// iprevZone is the DNS of the iprev tests, one client address per case.
var iprevZone = filepath.Join("testdata", "iprev", "iprev.zone")

// iprevMessage is the message every iprev case sends.
const iprevMessage = "From: alice@example.com\r\nSubject: iprev\r\n\r\nhi\r\n"

// Resolver timeouts of the iprev tests: a generous one wherever an answer
// is expected, so that a busy machine does not turn it into a temperror,
// and a short one for the names that are never answered.
const (
	iprevTimeout      = 10 * time.Second
	iprevShortTimeout = 300 * time.Millisecond
)

// startIPRevDNS starts a DNS server with the iprev zone and the failures
// the cases need, and a policy whose resolver asks it with iprevTimeout.
func startIPRevDNS(t *testing.T) (*testdns.Server, *Policy) {
	t.Helper()
	srv := testdns.Start(t)
	srv.AddZoneFile(t, iprevZone)
	srv.Fail("10.2.0.192.in-addr.arpa", dns.RcodeServerFailure)
	srv.Drop("11.2.0.192.in-addr.arpa")
	srv.Fail("sf.example.com", dns.RcodeServerFailure)
	srv.Drop("slow.example.com")
	srv.Drop("a-slow.example.com")
	return srv, iprevPolicy(t, srv, iprevTimeout)
}

// iprevPolicy compiles a policy with no signing keys, authserv-id mx.test,
// and a resolver that asks srv with the given timeout.
func iprevPolicy(t *testing.T, srv *testdns.Server, timeout time.Duration) *Policy {
	t.Helper()
	res, err := resolve.New(resolve.Config{Servers: []string{srv.Addr()}, Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := ParseConfig("test.toml", []byte("authserv_id = \"mx.test\"\n[keys]\ndir = \""+t.TempDir()+
		"\"\nrequire_published = false\n"))
	if err != nil {
		t.Fatal(err)
	}
	pol, err := Compile(context.Background(), cfg, res)
	if err != nil {
		t.Fatal(err)
	}
	return pol
}

// iprevResinfo returns the iprev resinfo of our Authentication-Results
// value, "" when there is none.
func iprevResinfo(ar string) string {
	for _, e := range arResinfos(ar) {
		if strings.HasPrefix(e, "iprev=") {
			return e
		}
	}
	return ""
}

// TestIPRev runs the iprev cases of RFC 8601 §3 through the policy, against
// a real DNS server, and checks the exact iprev resinfo.
func TestIPRev(t *testing.T) {
	srv, pol := startIPRevDNS(t)
	short := iprevPolicy(t, srv, iprevShortTimeout)
	// The name that passes waits for the one that is never answered.
	medium := iprevPolicy(t, srv, 2*time.Second)
	tests := []struct {
		name, client, want string
		pol                *Policy // nil: pol
	}{
		{"pass", "192.0.2.1",
			"iprev=pass (mail.example.com) smtp.remote-ip=192.0.2.1 policy.iprev=192.0.2.1", nil},
		{"pass IPv6", "2001:db8::1",
			`iprev=pass (mail6.example.com) smtp.remote-ip="2001:db8::1" policy.iprev="2001:db8::1"`, nil},
		{"IPv4-mapped client", "::ffff:192.0.2.1",
			"iprev=pass (mail.example.com) smtp.remote-ip=192.0.2.1 policy.iprev=192.0.2.1", nil},
		{"IPv6 client, name with an IPv4 address only", "2001:db8::2",
			`iprev=fail (v4only.example.com does not resolve to the client) smtp.remote-ip="2001:db8::2" policy.iprev="2001:db8::2"`, nil},
		{"mismatch", "192.0.2.2",
			"iprev=fail (other.example.com does not resolve to the client) smtp.remote-ip=192.0.2.2 policy.iprev=192.0.2.2", nil},
		// RFC 8601 §2.7.3: no PTR data published is permerror.
		{"no PTR, NXDOMAIN", "192.0.2.3",
			"iprev=permerror (no PTR record) smtp.remote-ip=192.0.2.3 policy.iprev=192.0.2.3", nil},
		{"no PTR, NODATA", "192.0.2.4",
			"iprev=permerror (no PTR record) smtp.remote-ip=192.0.2.4 policy.iprev=192.0.2.4", nil},
		// RFC 8601 §2.7.3: a forward query with no result is fail.
		{"PTR name without address, NODATA", "192.0.2.5",
			"iprev=fail (noaddr.example.com does not resolve to the client) smtp.remote-ip=192.0.2.5 policy.iprev=192.0.2.5", nil},
		{"PTR name without address, NXDOMAIN", "192.0.2.6",
			"iprev=fail (nowhere.example.net does not resolve to the client) smtp.remote-ip=192.0.2.6 policy.iprev=192.0.2.6", nil},
		{"several PTR names, one confirms", "192.0.2.7",
			"iprev=pass (b.multi.example) smtp.remote-ip=192.0.2.7 policy.iprev=192.0.2.7", nil},
		{"more than ten PTR names", "192.0.2.8",
			"iprev=fail (no PTR name resolves to the client, 10 of 12 checked) smtp.remote-ip=192.0.2.8 policy.iprev=192.0.2.8", nil},
		{"PTR SERVFAIL", "192.0.2.10",
			"iprev=temperror (PTR lookup: server answered SERVFAIL) smtp.remote-ip=192.0.2.10 policy.iprev=192.0.2.10", nil},
		{"PTR timeout", "192.0.2.11",
			"iprev=temperror (PTR lookup: i/o timeout) smtp.remote-ip=192.0.2.11 policy.iprev=192.0.2.11", short},
		{"forward SERVFAIL", "192.0.2.12",
			"iprev=temperror (lookup sf.example.com: server answered SERVFAIL) smtp.remote-ip=192.0.2.12 policy.iprev=192.0.2.12", nil},
		{"forward timeout", "192.0.2.13",
			"iprev=temperror (lookup slow.example.com: i/o timeout) smtp.remote-ip=192.0.2.13 policy.iprev=192.0.2.13", short},
		{"forward timeout after the name that passes", "192.0.2.14",
			"iprev=pass (ok14.example.com) smtp.remote-ip=192.0.2.14 policy.iprev=192.0.2.14", nil},
		{"forward timeout before the name that passes", "192.0.2.15",
			"iprev=pass (b-ok.example.com) smtp.remote-ip=192.0.2.15 policy.iprev=192.0.2.15", medium},
		{"PTR name with a space", "192.0.2.16",
			"iprev=permerror (no PTR name is a valid host name) smtp.remote-ip=192.0.2.16 policy.iprev=192.0.2.16", nil},
		{"PTR name that is an address", "192.0.2.17",
			"iprev=permerror (no PTR name is a valid host name) smtp.remote-ip=192.0.2.17 policy.iprev=192.0.2.17", nil},
		{"invalid PTR name beside a valid one", "192.0.2.18",
			"iprev=pass (ok18.example.com) smtp.remote-ip=192.0.2.18 policy.iprev=192.0.2.18", nil},
		{"RFC 2317 classless delegation", "192.0.2.19",
			"iprev=pass (classless.example.com) smtp.remote-ip=192.0.2.19 policy.iprev=192.0.2.19", nil},
		{"mixed case PTR name", "192.0.2.20",
			"iprev=pass (mixed.example.com) smtp.remote-ip=192.0.2.20 policy.iprev=192.0.2.20", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := &Envelope{ClientIP: netip.MustParseAddr(tt.client), Helo: "mail.example.com", MailFrom: "alice@example.com"}
			p := pol
			if tt.pol != nil {
				p = tt.pol
			}
			ar := runInbound(t, p, env, []byte(iprevMessage))
			if got := iprevResinfo(ar); got != tt.want {
				t.Errorf("iprev resinfo\n got: %q\nwant: %q", got, tt.want)
			}
		})
	}

	// The client's family only, and the limit of ten names (RFC 8601 §3).
	if n := srv.QueryCount("v4only.example.com", dns.TypeA); n != 0 {
		t.Errorf("%d A queries for the name of an IPv6 client, want 0", n)
	}
	looked := 0
	for i := 1; i <= 12; i++ {
		name := fmt.Sprintf("n%02d.many.example", i)
		looked += min(srv.QueryCount(name, dns.TypeA), 1)
		if n := srv.QueryCount(name, dns.TypeAAAA); n != 0 {
			t.Errorf("%d AAAA queries for %s, want 0", n, name)
		}
		if i > iprevMaxNames && srv.QueryCount(name, dns.TypeA) != 0 {
			t.Errorf("%s looked up: it is beyond the limit of %d names", name, iprevMaxNames)
		}
	}
	if looked != iprevMaxNames {
		t.Errorf("%d of the 12 PTR names looked up, want %d", looked, iprevMaxNames)
	}
}

// TestIPRevAuthResults checks our whole Authentication-Results field with
// iprev in it: after DMARC, as the other hooks of issue 13 expect.
func TestIPRevAuthResults(t *testing.T) {
	srv, pol := startIPRevDNS(t)
	srv.AddZoneText(t, "", "$TTL 300\n"+
		"example.com. IN TXT \"v=spf1 ip4:192.0.2.0/24 -all\"\n"+
		"_dmarc.example.com. IN TXT \"v=DMARC1; p=none\"\n")
	env := &Envelope{ClientIP: netip.MustParseAddr("192.0.2.1"), Helo: "mail.example.com", MailFrom: "alice@example.com"}
	got := runInbound(t, pol, env, []byte(iprevMessage))
	want := " mx.test;\r\n" +
		"\tdkim=none;\r\n" +
		"\tspf=pass smtp.mailfrom=alice@example.com;\r\n" +
		"\tdmarc=pass (p=none dis=none) header.from=example.com;\r\n" +
		"\tiprev=pass (mail.example.com) smtp.remote-ip=192.0.2.1 policy.iprev=192.0.2.1"
	if got != want {
		t.Errorf("Authentication-Results\n got: %q\nwant: %q", got, want)
	}
}

// TestIPRevCached checks that a second message from the same client costs
// no DNS query: the PTR and address answers, negative ones included, come
// from the resolver's cache. (A client with several PTR names is not a
// case here: a lookup canceled once another name passed is not cached.)
func TestIPRevCached(t *testing.T) {
	srv, pol := startIPRevDNS(t)
	// Negative answers carry a SOA minimum of 300 s, as a real zone's do,
	// so that the resolver caches them (RFC 2308 §5).
	srv.SetDefaultTTL(300)
	for _, tt := range []struct {
		client, ptr, name string
		qtype             uint16
		want              string
	}{
		{"192.0.2.1", "1.2.0.192.in-addr.arpa", "mail.example.com", dns.TypeA,
			"iprev=pass (mail.example.com) smtp.remote-ip=192.0.2.1 policy.iprev=192.0.2.1"},
		{"2001:db8::1", "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa", "mail6.example.com", dns.TypeAAAA,
			`iprev=pass (mail6.example.com) smtp.remote-ip="2001:db8::1" policy.iprev="2001:db8::1"`},
		{"192.0.2.6", "6.2.0.192.in-addr.arpa", "nowhere.example.net", dns.TypeA,
			"iprev=fail (nowhere.example.net does not resolve to the client) smtp.remote-ip=192.0.2.6 policy.iprev=192.0.2.6"},
		{"192.0.2.3", "3.2.0.192.in-addr.arpa", "", 0,
			"iprev=permerror (no PTR record) smtp.remote-ip=192.0.2.3 policy.iprev=192.0.2.3"},
	} {
		env := &Envelope{ClientIP: netip.MustParseAddr(tt.client), Helo: "mail.example.com", MailFrom: "alice@example.com"}
		if got := iprevResinfo(runInbound(t, pol, env, []byte(iprevMessage))); got != tt.want {
			t.Fatalf("%s, first message: %q, want %q", tt.client, got, tt.want)
		}
		if n := srv.QueryCount(tt.ptr, dns.TypePTR); n != 1 {
			t.Errorf("%s: %d PTR queries, want 1", tt.client, n)
		}
		if tt.name != "" {
			if n := srv.QueryCount(tt.name, tt.qtype); n != 1 {
				t.Errorf("%s: %d %s queries for %s, want 1", tt.client, n, dns.TypeToString[tt.qtype], tt.name)
			}
		}
		before := srv.Queries()
		if got := iprevResinfo(runInbound(t, pol, env, []byte(iprevMessage))); got != tt.want {
			t.Fatalf("%s, second message: %q, want %q", tt.client, got, tt.want)
		}
		// Nothing of the second message (iprev, SPF, DMARC) asks again.
		if n := srv.Queries() - before; n != 0 {
			t.Errorf("%s: the second message made %d DNS queries, want 0", tt.client, n)
		}
	}
}

// TestIPRevNoClientAddress checks that a client without an IP address (a
// unix socket, an unknown peer) gets no iprev resinfo.
func TestIPRevNoClientAddress(t *testing.T) {
	_, pol := startIPRevDNS(t)
	env := &Envelope{Helo: "mail.example.com", MailFrom: "alice@example.com"}
	m := pol.Begin(env, mustSplitHeader(t, iprevMessage))
	d := m.Finish()
	if ar := d.Prepend[0].Value; iprevResinfo(ar) != "" {
		t.Errorf("iprev resinfo without a client address: %q", ar)
	}
	if hasAttr(d.Log, "iprev") {
		t.Errorf("iprev in the decision line without a client address: %v", d.Log)
	}
}

// TestIPRevDecisionLog checks the iprev group of the decision line.
func TestIPRevDecisionLog(t *testing.T) {
	_, pol := startIPRevDNS(t)
	for _, tt := range []struct{ client, want string }{
		{"192.0.2.1", "[result=pass name=mail.example.com]"},
		{"192.0.2.2", "[result=fail]"},
	} {
		env := &Envelope{ClientIP: netip.MustParseAddr(tt.client), Helo: "mail.example.com", MailFrom: "alice@example.com"}
		d := pol.Begin(env, mustSplitHeader(t, iprevMessage)).Finish()
		var got string
		for _, a := range d.Log {
			if a.Key == "iprev" {
				got = a.Value.String()
			}
		}
		if got != tt.want {
			t.Errorf("%s: iprev log %q, want %q", tt.client, got, tt.want)
		}
	}
}

// mustSplitHeader returns the header fields of a raw message.
func mustSplitHeader(t *testing.T, raw string) []HeaderField {
	t.Helper()
	header, _, err := SplitMessage([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	return header
}

// iprevPanicResolver answers nothing and panics on PTR lookups.
type iprevPanicResolver struct{ fakeDNS }

func (*iprevPanicResolver) LookupAddr(context.Context, string) ([]string, error) {
	panic("resolver bug")
}

// TestIPRevPanic checks that a panic in the iprev check is a temperror for
// the message, not the end of the daemon.
func TestIPRevPanic(t *testing.T) {
	cfg, err := ParseConfig("test.toml", []byte("authserv_id = \"mx.test\"\n[keys]\ndir = \""+t.TempDir()+
		"\"\nrequire_published = false\n"))
	if err != nil {
		t.Fatal(err)
	}
	pol, err := Compile(context.Background(), cfg, &iprevPanicResolver{})
	if err != nil {
		t.Fatal(err)
	}
	env := &Envelope{ClientIP: netip.MustParseAddr("192.0.2.1"), Helo: "mail.example.com", MailFrom: "alice@example.com"}
	got := iprevResinfo(runInbound(t, pol, env, []byte(iprevMessage)))
	const want = "iprev=temperror (internal error: resolver bug) smtp.remote-ip=192.0.2.1 policy.iprev=192.0.2.1"
	if got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// TestIPRevHostName checks which PTR names are looked up.
func TestIPRevHostName(t *testing.T) {
	for name, want := range map[string]bool{
		"mail.example.com": true, "a": true, "_dc.example.com": true, "1-2-3-4.dsl.example.net": true,
		"x.123a": true, "": false, "192.0.2.1": false, "example.123": false, "*.example.com": false,
		"bad\\032name.example": false, "a..b": false, "a.b.": false, strings.Repeat("a", 64) + ".com": false,
		strings.Repeat("a.", 125) + "com": true, strings.Repeat("a.", 126) + "com": false,
	} {
		if got := iprevHostName(name); got != want {
			t.Errorf("iprevHostName(%q) = %v, want %v", name, got, want)
		}
	}
}

// TestIPRevNamesHostile feeds iprevNames a PTR answer of a thousand names:
// only ten are kept, sorted, whatever the answer's order.
func TestIPRevNamesHostile(t *testing.T) {
	var ptrs []string
	for i := 999; i >= 0; i-- {
		ptrs = append(ptrs, fmt.Sprintf("h%04d.example.", i))
	}
	ptrs = append(ptrs, "A.EXAMPLE.", "a.example", "not a name.")
	names, valid := iprevNames(ptrs)
	if len(names) != iprevMaxNames || names[0] != "a.example" {
		t.Errorf("names %v", names)
	}
	if valid != 1001 {
		t.Errorf("%d valid names, want 1001", valid)
	}
}
