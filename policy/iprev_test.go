package policy

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"github.com/miekg/dns"

	"github.com/authmilter/authmilter/internal/testdns"
)

// iprevZone is the DNS of the iprev tests, one client address per case.
var iprevZone = filepath.Join("testdata", "iprev", "iprev.zone")

// iprevMessage is the message every iprev case sends.
const iprevMessage = "From: alice@example.com\r\nSubject: iprev\r\n\r\nhi\r\n"

// startIPRevDNS starts a DNS server with the iprev zone and the failures
// the cases need, and a policy whose resolver (300 ms timeout) asks it.
func startIPRevDNS(t *testing.T) (*testdns.Server, *Policy) {
	t.Helper()
	srv := testdns.Start(t)
	srv.AddZoneFile(t, iprevZone)
	srv.Fail("10.2.0.192.in-addr.arpa", dns.RcodeServerFailure)
	srv.Drop("11.2.0.192.in-addr.arpa")
	srv.Fail("sf.example.com", dns.RcodeServerFailure)
	srv.Drop("slow.example.com")
	srv.Drop("a-slow.example.com")
	return srv, testPolicyWithDNS(t, srv.Addr(), "")
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
	tests := []struct {
		name, client, want string
	}{
		{"pass", "192.0.2.1",
			"iprev=pass (mail.example.com) smtp.remote-ip=192.0.2.1 policy.iprev=192.0.2.1"},
		{"pass IPv6", "2001:db8::1",
			`iprev=pass (mail6.example.com) smtp.remote-ip="2001:db8::1" policy.iprev="2001:db8::1"`},
		{"IPv4-mapped client", "::ffff:192.0.2.1",
			"iprev=pass (mail.example.com) smtp.remote-ip=192.0.2.1 policy.iprev=192.0.2.1"},
		{"IPv6 client, name with an IPv4 address only", "2001:db8::2",
			`iprev=fail (v4only.example.com does not resolve to the client) smtp.remote-ip="2001:db8::2" policy.iprev="2001:db8::2"`},
		{"mismatch", "192.0.2.2",
			"iprev=fail (other.example.com does not resolve to the client) smtp.remote-ip=192.0.2.2 policy.iprev=192.0.2.2"},
		// RFC 8601 §2.7.3: no PTR data published is permerror.
		{"no PTR, NXDOMAIN", "192.0.2.3",
			"iprev=permerror (no PTR record) smtp.remote-ip=192.0.2.3 policy.iprev=192.0.2.3"},
		{"no PTR, NODATA", "192.0.2.4",
			"iprev=permerror (no PTR record) smtp.remote-ip=192.0.2.4 policy.iprev=192.0.2.4"},
		// RFC 8601 §2.7.3: a forward query with no result is fail.
		{"PTR name without address, NODATA", "192.0.2.5",
			"iprev=fail (noaddr.example.com does not resolve to the client) smtp.remote-ip=192.0.2.5 policy.iprev=192.0.2.5"},
		{"PTR name without address, NXDOMAIN", "192.0.2.6",
			"iprev=fail (nowhere.example.net does not resolve to the client) smtp.remote-ip=192.0.2.6 policy.iprev=192.0.2.6"},
		{"several PTR names, one confirms", "192.0.2.7",
			"iprev=pass (b.multi.example) smtp.remote-ip=192.0.2.7 policy.iprev=192.0.2.7"},
		{"more than ten PTR names", "192.0.2.8",
			"iprev=fail (no PTR name resolves to the client, 10 of 12 checked) smtp.remote-ip=192.0.2.8 policy.iprev=192.0.2.8"},
		{"PTR SERVFAIL", "192.0.2.10",
			"iprev=temperror (PTR lookup: server answered SERVFAIL) smtp.remote-ip=192.0.2.10 policy.iprev=192.0.2.10"},
		{"PTR timeout", "192.0.2.11",
			"iprev=temperror (PTR lookup: i/o timeout) smtp.remote-ip=192.0.2.11 policy.iprev=192.0.2.11"},
		{"forward SERVFAIL", "192.0.2.12",
			"iprev=temperror (lookup sf.example.com: server answered SERVFAIL) smtp.remote-ip=192.0.2.12 policy.iprev=192.0.2.12"},
		{"forward timeout", "192.0.2.13",
			"iprev=temperror (lookup slow.example.com: i/o timeout) smtp.remote-ip=192.0.2.13 policy.iprev=192.0.2.13"},
		{"forward timeout after the name that passes", "192.0.2.14",
			"iprev=pass (ok14.example.com) smtp.remote-ip=192.0.2.14 policy.iprev=192.0.2.14"},
		{"forward timeout before the name that passes", "192.0.2.15",
			"iprev=pass (b-ok.example.com) smtp.remote-ip=192.0.2.15 policy.iprev=192.0.2.15"},
		{"PTR name with a space", "192.0.2.16",
			"iprev=permerror (no PTR name is a valid host name) smtp.remote-ip=192.0.2.16 policy.iprev=192.0.2.16"},
		{"PTR name that is an address", "192.0.2.17",
			"iprev=permerror (no PTR name is a valid host name) smtp.remote-ip=192.0.2.17 policy.iprev=192.0.2.17"},
		{"invalid PTR name beside a valid one", "192.0.2.18",
			"iprev=pass (ok18.example.com) smtp.remote-ip=192.0.2.18 policy.iprev=192.0.2.18"},
		{"RFC 2317 classless delegation", "192.0.2.19",
			"iprev=pass (classless.example.com) smtp.remote-ip=192.0.2.19 policy.iprev=192.0.2.19"},
		{"mixed case PTR name", "192.0.2.20",
			"iprev=pass (mixed.example.com) smtp.remote-ip=192.0.2.20 policy.iprev=192.0.2.20"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := &Envelope{ClientIP: netip.MustParseAddr(tt.client), Helo: "mail.example.com", MailFrom: "alice@example.com"}
			ar := runInbound(t, pol, env, []byte(iprevMessage))
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
// from the resolver's cache.
func TestIPRevCached(t *testing.T) {
	srv, pol := startIPRevDNS(t)
	// Negative answers carry a SOA minimum of 300 s, as a real zone's do,
	// so that the resolver caches them (RFC 2308 §5).
	srv.SetDefaultTTL(300)
	env := &Envelope{ClientIP: netip.MustParseAddr("192.0.2.7"), Helo: "mail.example.com", MailFrom: "alice@example.com"}
	const want = "iprev=pass (b.multi.example) smtp.remote-ip=192.0.2.7 policy.iprev=192.0.2.7"
	questions := []struct {
		name  string
		qtype uint16
	}{
		{"7.2.0.192.in-addr.arpa", dns.TypePTR},
		{"a.multi.example", dns.TypeA},
		{"b.multi.example", dns.TypeA},
		{"c.multi.example", dns.TypeA},
	}
	counts := func() []int {
		var out []int
		for _, q := range questions {
			out = append(out, srv.QueryCount(q.name, q.qtype))
		}
		return out
	}
	if got := iprevResinfo(runInbound(t, pol, env, []byte(iprevMessage))); got != want {
		t.Fatalf("first message: %q, want %q", got, want)
	}
	first := counts()
	if first[0] != 1 || first[2] != 1 {
		t.Fatalf("first message asked %v for %v, want one PTR and one A query of b.multi.example", first, questions)
	}
	total := srv.Queries()
	if got := iprevResinfo(runInbound(t, pol, env, []byte(iprevMessage))); got != want {
		t.Fatalf("second message: %q, want %q", got, want)
	}
	if second := counts(); !equalCounts(first, second) {
		t.Errorf("second message asked the DNS server again: queries %v, then %v, for %v", first, second, questions)
	}
	// Nothing else of the message (SPF, DMARC) asks again either.
	if n := srv.Queries() - total; n != 0 {
		t.Errorf("second message made %d DNS queries, want 0", n)
	}
}

func equalCounts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
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
