package policy

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/miekg/dns"

	"github.com/authmilter/authmilter/internal/testdns"
	"github.com/authmilter/authmilter/policy/resolve"
)

// spfMXZone publishes, under example.org:
//
//   - mx10: "v=spf1 mx:m1.mx.example.org ... mx:m10.mx.example.org -all",
//     ten mx terms (the RFC 7208 §4.6.4 limit of ten DNS-querying terms)
//     whose domains have ten MX hosts each (the per-mx limit), every host
//     with an A and an AAAA record that the client does not match;
//   - mx11: "v=spf1 mx:big.example.org -all", eleven MX hosts;
//   - a6: "v=spf1 a:host.a6.example.org -all" and e6: "v=spf1
//     exists:e.e6.example.org -all", for one-family lookups outside mx.
//
// It returns the zone text and the names whose address records an
// evaluation may query.
func spfMXZone() (zone string, hosts []string) {
	var z strings.Builder
	z.WriteString("$TTL 300\n")
	var terms []string
	for m := 1; m <= 10; m++ {
		dom := fmt.Sprintf("m%d.mx.example.org.", m)
		terms = append(terms, "mx:"+strings.TrimSuffix(dom, "."))
		for h := 0; h < 10; h++ {
			host := fmt.Sprintf("h%d.%s", h, dom)
			fmt.Fprintf(&z, "%s MX %d %s\n", dom, 10+h, host)
			fmt.Fprintf(&z, "%s A 198.51.100.%d\n", host, 10*m+h)
			fmt.Fprintf(&z, "%s AAAA 2001:db8:%d::%d\n", host, m, h)
			hosts = append(hosts, host)
		}
	}
	fmt.Fprintf(&z, "mx10.example.org. TXT \"v=spf1 %s -all\"\n", strings.Join(terms, " "))
	for h := 0; h < 11; h++ {
		host := fmt.Sprintf("h%d.big.example.org.", h)
		fmt.Fprintf(&z, "big.example.org. MX 10 %s\n", host)
		fmt.Fprintf(&z, "%s A 198.51.100.200\n%s AAAA 2001:db8:ff::%d\n", host, host, h)
		hosts = append(hosts, host)
	}
	z.WriteString("mx11.example.org. TXT \"v=spf1 mx:big.example.org -all\"\n")
	z.WriteString("a6.example.org. TXT \"v=spf1 a:host.a6.example.org -all\"\n" +
		"host.a6.example.org. A 192.0.2.25\n" +
		"host.a6.example.org. AAAA 2001:db8::25\n" +
		// RFC 7208 §5.7: exists looks up A records, even for an IPv6
		// client.
		"e6.example.org. TXT \"v=spf1 exists:e.e6.example.org -all\"\n" +
		"e.e6.example.org. A 127.0.0.2\n")
	hosts = append(hosts, "host.a6.example.org.", "e.e6.example.org.")
	return z.String(), hosts
}

// TestSPFQueryAmplification counts the queries that a real DNS server
// receives for one message whose SPF record has ten mx terms of ten MX
// hosts each (issue 8, finding 6). Address records are queried for the
// client's family only: per mx term one MX query and one A (IPv4 client) or
// AAAA (IPv6 client) query per host, so 1 TXT + 10 MX + 10 × 10 address
// queries = 111, where asking both families made it 211. A domain with
// more than ten MX records is a permerror without any address query (RFC
// 7208 §4.6.4).
func TestSPFQueryAmplification(t *testing.T) {
	zone, hosts := spfMXZone()
	v4, v6 := netip.MustParseAddr("192.0.2.25"), netip.MustParseAddr("2001:db8::25")
	tests := []struct {
		name     string
		client   netip.Addr
		domain   string
		want     string // the spf resinfo
		txt, mx  int    // TXT queries for the SPF record, MX queries
		a, aaaa  int    // address queries for the hosts
		external int    // queries to all the SPF names together
	}{
		{"mx terms, IPv4 client", v4, "mx10.example.org", "spf=fail (matched all) smtp.mailfrom=bob@mx10.example.org",
			1, 10, 100, 0, 111},
		{"mx terms, IPv6 client", v6, "mx10.example.org", "spf=fail (matched all) smtp.mailfrom=bob@mx10.example.org",
			1, 10, 0, 100, 111},
		{"eleven MX hosts", v4, "mx11.example.org", "spf=permerror (mx:big.example.org: too many MX records) smtp.mailfrom=bob@mx11.example.org",
			1, 1, 0, 0, 2},
		{"a term, IPv6 client", v6, "a6.example.org", "spf=pass smtp.mailfrom=bob@a6.example.org",
			1, 0, 0, 1, 2},
		{"a term, IPv4 client", v4, "a6.example.org", "spf=pass smtp.mailfrom=bob@a6.example.org",
			1, 0, 1, 0, 2},
		{"exists term, IPv6 client", v6, "e6.example.org", "spf=pass smtp.mailfrom=bob@e6.example.org",
			1, 0, 1, 0, 2},
		// An IPv4-mapped client is taken for IPv4.
		{"a term, IPv4-mapped client", netip.MustParseAddr("::ffff:192.0.2.25"), "a6.example.org", "spf=pass smtp.mailfrom=bob@a6.example.org",
			1, 0, 1, 0, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A server and a resolver (and so a cache) of its own.
			srv := testdns.Start(t)
			srv.AddZoneText(t, "", zone)
			pol := testPolicyWithDNS(t, srv.Addr(), "")
			env := &Envelope{ClientIP: tt.client, Helo: "h.example", MailFrom: "bob@" + tt.domain}
			ar := runInbound(t, pol, env, []byte("From: bob@"+tt.domain+"\r\n\r\nhi\r\n"))
			var got string
			for _, e := range arResinfos(ar) {
				if strings.HasPrefix(e, "spf=") {
					got = e
				}
			}
			if got != tt.want {
				t.Errorf("got  %q\nwant %q", got, tt.want)
			}

			txt := srv.QueryCount(tt.domain, dns.TypeTXT)
			mx := 0
			for m := 1; m <= 10; m++ {
				mx += srv.QueryCount(fmt.Sprintf("m%d.mx.example.org", m), dns.TypeMX)
			}
			mx += srv.QueryCount("big.example.org", dns.TypeMX)
			a, aaaa := 0, 0
			for _, h := range hosts {
				a += srv.QueryCount(h, dns.TypeA)
				aaaa += srv.QueryCount(h, dns.TypeAAAA)
			}
			t.Logf("queries: TXT %d, MX %d, A %d, AAAA %d; SPF names %d, whole message %d", txt, mx, a, aaaa, txt+mx+a+aaaa, srv.Queries())
			if txt != tt.txt || mx != tt.mx || a != tt.a || aaaa != tt.aaaa {
				t.Errorf("queries: TXT %d, MX %d, A %d, AAAA %d; want %d, %d, %d, %d", txt, mx, a, aaaa, tt.txt, tt.mx, tt.a, tt.aaaa)
			}
			if all := txt + mx + a + aaaa; all != tt.external {
				t.Errorf("%d queries for SPF names, want %d", all, tt.external)
			}
		})
	}
}

// bothFamilies is a resolver without single-family lookups whose
// LookupIPAddr answers with an A and an AAAA record for every name.
type bothFamilies struct{ *fakeDNS }

func (bothFamilies) LookupIPAddr(_ context.Context, name string) ([]net.IPAddr, error) {
	return []net.IPAddr{{IP: net.ParseIP("192.0.2.1")}, {IP: net.ParseIP("2001:db8::1")}}, nil
}

// TestSPFResolver checks the per-evaluation resolver alone: answers of the
// family asked only, also from a resolver without single-family lookups,
// and the lookup budget.
func TestSPFResolver(t *testing.T) {
	ctx := context.Background()
	for _, tt := range []struct{ network, want string }{
		{"ip4", "192.0.2.1"},
		{"ip6", "2001:db8::1"},
	} {
		r := newSPFResolver(bothFamilies{&fakeDNS{}})
		ips, err := r.LookupIP(ctx, tt.network, "host.example")
		if err != nil || len(ips) != 1 || ips[0].String() != tt.want {
			t.Errorf("%s: %v, %v; want only %s", tt.network, ips, err, tt.want)
		}
	}

	r := newSPFResolver(&fakeDNS{})
	r.budget = 3
	for i := 0; i < 3; i++ {
		if _, err := r.LookupTXT(ctx, "x.example"); !resolve.IsNotFound(err) || r.Exhausted() {
			t.Fatalf("lookup %d: %v (exhausted %v), want the resolver's own answer", i+1, err, r.Exhausted())
		}
	}
	if _, err := r.LookupMX(ctx, "x.example"); err == nil || resolve.IsNotFound(err) || resolve.IsTemporary(err) || !r.Exhausted() {
		t.Errorf("lookup beyond the budget: %v (exhausted %v), want a refusal", err, r.Exhausted())
	}
	if n := r.Lookups(); n != 3 {
		t.Errorf("%d lookups counted, want 3", n)
	}
}

// TestSPFBudgetIsPermerror checks that an evaluation that ran out of its
// lookup budget is a permerror whatever the evaluator made of the refused
// lookup (a refused "a" lookup is a temperror to it).
func TestSPFBudgetIsPermerror(t *testing.T) {
	srv := testdns.Start(t)
	srv.AddZoneText(t, "", "$TTL 300\nb.example.org. TXT \"v=spf1 a:x1.example.org a:x2.example.org -all\"\n"+
		"x1.example.org. A 198.51.100.1\nx2.example.org. A 198.51.100.2\n")
	pol := testPolicyWithDNS(t, srv.Addr(), "")
	old := spfBudgetForTest
	spfBudgetForTest = 2
	defer func() { spfBudgetForTest = old }()
	out := pol.checkSPF(context.Background(), &Envelope{ClientIP: netip.MustParseAddr("192.0.2.25"), Helo: "h.example", MailFrom: "bob@b.example.org"})
	if out.result != "permerror" || out.reason != "DNS lookup limit reached" {
		t.Errorf("got %s (%s), want permerror (DNS lookup limit reached)", out.result, out.reason)
	}
	if n := srv.QueryCount("x2.example.org", dns.TypeA); n != 0 {
		t.Errorf("%d queries beyond the budget", n)
	}
}
