package spf

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
)

// checkCase is one CheckHost evaluation over an in-memory zone.
type checkCase struct {
	name   string
	zone   func(m *memDNS)
	ip     string
	domain string // the sender is "user@" + domain
	want   Result
	reason string // a substring of the error text; "" for any
	// lookups, when not zero, is the exact number of DNS lookups.
	lookups int
}

func runCheck(t *testing.T, tc checkCase) {
	t.Helper()
	m := newMemDNS()
	tc.zone(m)
	res, err := CheckHost(context.Background(), m, netip.MustParseAddr(tc.ip), tc.domain, "user@"+tc.domain, "helo.example.net")
	if res != tc.want {
		t.Errorf("result %s (%v), want %s", res, err, tc.want)
	}
	if tc.reason != "" && (err == nil || !strings.Contains(err.Error(), tc.reason)) {
		t.Errorf("error %v, want one with %q", err, tc.reason)
	}
	if tc.lookups != 0 && m.lookups != tc.lookups {
		t.Errorf("%d lookups, want %d: %v", m.lookups, tc.lookups, m.asked)
	}
}

// spfTXT sets the SPF record of name.
func spfTXT(m *memDNS, name, rec string) { m.txt[memKey(name)] = []string{rec} }

// TestCheckHostMechanisms covers each mechanism, qualifier and modifier
// (RFC 7208 §4.6.2, §5, §6).
func TestCheckHostMechanisms(t *testing.T) {
	for _, tc := range []checkCase{
		{name: "no record", zone: func(m *memDNS) {}, ip: "192.0.2.1", domain: "x.example", want: None, reason: "no DNS record"},
		{name: "not spf", zone: func(m *memDNS) { spfTXT(m, "x.example", "v=spf10 -all") }, ip: "192.0.2.1", domain: "x.example", want: None},
		{name: "single label", zone: func(m *memDNS) {}, ip: "192.0.2.1", domain: "localhost", want: None, reason: "invalid domain"},
		{name: "two records", zone: func(m *memDNS) { m.txt["x.example"] = []string{"v=spf1 -all", "v=spf1 +all"} },
			ip: "192.0.2.1", domain: "x.example", want: PermError, reason: "multiple"},
		{name: "TXT timeout", zone: func(m *memDNS) { m.temp["x.example"] = true }, ip: "192.0.2.1", domain: "x.example", want: TempError, reason: "timeout"},
		{name: "empty record", zone: func(m *memDNS) { spfTXT(m, "x.example", "v=spf1") }, ip: "192.0.2.1", domain: "x.example", want: Neutral},
		{name: "qualifiers", zone: func(m *memDNS) { spfTXT(m, "x.example", "v=spf1 ?ip4:192.0.2.1 ~ip4:192.0.2.2 -ip4:192.0.2.3 +all") },
			ip: "192.0.2.2", domain: "x.example", want: SoftFail, reason: "matched ip4"},
		{name: "ip6 prefix", zone: func(m *memDNS) { spfTXT(m, "x.example", "v=spf1 ip6:2001:db8::/32 -all") },
			ip: "2001:db8:1::5", domain: "x.example", want: Pass},
		{name: "ip6 term, ipv4-mapped client", zone: func(m *memDNS) { spfTXT(m, "x.example", "v=spf1 ip6:::ffff:0:0/96 ip4:192.0.2.0/24 -all") },
			ip: "::ffff:192.0.2.9", domain: "x.example", want: Pass, reason: "matched ip4"},
		{name: "a with cidr", zone: func(m *memDNS) {
			spfTXT(m, "x.example", "v=spf1 a:h.x.example/24 -all")
			m.addA("h.x.example", "192.0.2.200")
		}, ip: "192.0.2.1", domain: "x.example", want: Pass, lookups: 2},
		{name: "a, IPv6 client asks AAAA only", zone: func(m *memDNS) {
			spfTXT(m, "x.example", "v=spf1 a//64 -all")
			m.addA("x.example", "192.0.2.1", "2001:db8::1")
		}, ip: "2001:db8::ffff", domain: "x.example", want: Pass, lookups: 2},
		{name: "mx", zone: func(m *memDNS) {
			spfTXT(m, "x.example", "v=spf1 mx -all")
			m.mx["x.example"] = []*net.MX{{Host: "."}, {Host: "mx1.x.example."}, {Host: "mx2.x.example."}}
			m.addA("mx2.x.example", "192.0.2.7")
		}, ip: "192.0.2.7", domain: "x.example", want: Pass, reason: "matched mx", lookups: 4},
		{name: "mx host timeout", zone: func(m *memDNS) {
			spfTXT(m, "x.example", "v=spf1 mx -all")
			m.mx["x.example"] = []*net.MX{{Host: "mx1.x.example."}}
			m.temp["mx1.x.example"] = true
		}, ip: "192.0.2.7", domain: "x.example", want: TempError},
		{name: "ptr validated", zone: func(m *memDNS) {
			spfTXT(m, "x.example", "v=spf1 ptr -all")
			m.ptr["192.0.2.5"] = []string{"mail.other.example.", "Mail.X.Example."}
			m.addA("mail.other.example", "192.0.2.5")
			m.addA("mail.x.example", "192.0.2.5")
		}, ip: "192.0.2.5", domain: "x.example", want: Pass},
		{name: "ptr not validated", zone: func(m *memDNS) {
			spfTXT(m, "x.example", "v=spf1 ptr -all")
			m.ptr["192.0.2.5"] = []string{"mail.x.example."}
			m.addA("mail.x.example", "192.0.2.6")
		}, ip: "192.0.2.5", domain: "x.example", want: Fail},
		{name: "ptr lookup error does not match", zone: func(m *memDNS) {
			spfTXT(m, "x.example", "v=spf1 ptr ?all")
			m.temp["192.0.2.5"] = true
		}, ip: "192.0.2.5", domain: "x.example", want: Neutral},
		{name: "exists asks A for an IPv6 client", zone: func(m *memDNS) {
			spfTXT(m, "x.example", "v=spf1 exists:%{ir}.%{v}.e.x.example -all")
			m.addA("1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.e.x.example", "127.0.0.2")
		}, ip: "2001:db8::1", domain: "x.example", want: Pass, reason: "matched exists", lookups: 2},
		{name: "include pass", zone: func(m *memDNS) {
			spfTXT(m, "x.example", "v=spf1 include:i.example -all")
			spfTXT(m, "i.example", "v=spf1 ip4:192.0.2.0/24 -all")
		}, ip: "192.0.2.1", domain: "x.example", want: Pass},
		{name: "include fail is no match", zone: func(m *memDNS) {
			spfTXT(m, "x.example", "v=spf1 include:i.example ~all")
			spfTXT(m, "i.example", "v=spf1 -all")
		}, ip: "192.0.2.1", domain: "x.example", want: SoftFail},
		{name: "include none is permerror", zone: func(m *memDNS) { spfTXT(m, "x.example", "v=spf1 include:i.example -all") },
			ip: "192.0.2.1", domain: "x.example", want: PermError, reason: "no DNS record"},
		{name: "include of a syntax error", zone: func(m *memDNS) {
			spfTXT(m, "x.example", "v=spf1 include:i.example +all")
			spfTXT(m, "i.example", "v=spf1 ip4:192.0.2.1 bogus")
		}, ip: "192.0.2.1", domain: "x.example", want: PermError, reason: "bogus"},
		{name: "syntax error after the match", zone: func(m *memDNS) { spfTXT(m, "x.example", "v=spf1 +all moo") },
			ip: "192.0.2.1", domain: "x.example", want: PermError, lookups: 1},
		{name: "redirect", zone: func(m *memDNS) {
			spfTXT(m, "x.example", "v=spf1 redirect=r.%{d}")
			spfTXT(m, "r.x.example", "v=spf1 -all")
		}, ip: "192.0.2.1", domain: "x.example", want: Fail},
		{name: "redirect ignored after a match", zone: func(m *memDNS) { spfTXT(m, "x.example", "v=spf1 redirect=r.example ?all") },
			ip: "192.0.2.1", domain: "x.example", want: Neutral, lookups: 1},
		{name: "redirect to none", zone: func(m *memDNS) { spfTXT(m, "x.example", "v=spf1 redirect=r.example") },
			ip: "192.0.2.1", domain: "x.example", want: PermError, reason: "no DNS record"},
		{name: "exp is not fetched", zone: func(m *memDNS) { spfTXT(m, "x.example", "v=spf1 -all exp=e.%{d}") },
			ip: "192.0.2.1", domain: "x.example", want: Fail, lookups: 1},
		{name: "unknown modifier", zone: func(m *memDNS) { spfTXT(m, "x.example", "v=spf1 foo=%{t}bar -all") },
			ip: "192.0.2.1", domain: "x.example", want: Fail},
		{name: "colon and slash in a domain", zone: func(m *memDNS) {
			spfTXT(m, "x.example", "v=spf1 a:foo:bar/baz.example/8 -all")
			m.addA("foo:bar/baz.example", "192.0.2.200")
		}, ip: "192.9.9.9", domain: "x.example", want: Pass},
	} {
		t.Run(tc.name, func(t *testing.T) { runCheck(t, tc) })
	}
}

// TestCheckHostLimits attacks each limit of RFC 7208 §4.6.4 and the
// lookups it bounds: the test states the most lookups an evaluation may
// make.
func TestCheckHostLimits(t *testing.T) {
	terms := func(n int, term string) string {
		var b strings.Builder
		b.WriteString("v=spf1")
		for i := range n {
			fmt.Fprintf(&b, " "+term, i)
		}
		return b.String() + " -all"
	}
	for _, tc := range []checkCase{
		{name: "ten a terms", zone: func(m *memDNS) {
			spfTXT(m, "x.example", terms(10, "a:h%d.x.example"))
			for i := range 10 {
				m.addA(fmt.Sprintf("h%d.x.example", i), "198.51.100.1")
			}
		}, ip: "192.0.2.1", domain: "x.example", want: Fail, lookups: 11},
		{name: "eleven a terms", zone: func(m *memDNS) {
			spfTXT(m, "x.example", terms(11, "a:h%d.x.example"))
			for i := range 11 {
				m.addA(fmt.Sprintf("h%d.x.example", i), "198.51.100.1")
			}
		}, ip: "192.0.2.1", domain: "x.example", want: PermError, reason: "lookup limit", lookups: 11},
		{name: "include loop", zone: func(m *memDNS) { spfTXT(m, "x.example", "v=spf1 include:x.example -all") },
			ip: "192.0.2.1", domain: "x.example", want: PermError, reason: "lookup limit", lookups: 11},
		{name: "redirect loop", zone: func(m *memDNS) { spfTXT(m, "x.example", "v=spf1 redirect=x.example") },
			ip: "192.0.2.1", domain: "x.example", want: PermError, reason: "lookup limit", lookups: 11},
		{name: "two void lookups", zone: func(m *memDNS) { spfTXT(m, "x.example", terms(2, "a:void%d.x.example")) },
			ip: "192.0.2.1", domain: "x.example", want: Fail, lookups: 3},
		{name: "three void lookups", zone: func(m *memDNS) { spfTXT(m, "x.example", terms(5, "exists:void%d.x.example")) },
			ip: "192.0.2.1", domain: "x.example", want: PermError, reason: "void lookup limit", lookups: 4},
		{name: "void mx", zone: func(m *memDNS) { spfTXT(m, "x.example", terms(3, "mx:void%d.x.example")) },
			ip: "192.0.2.1", domain: "x.example", want: PermError, reason: "void lookup limit", lookups: 4},
		{name: "ten MX hosts", zone: func(m *memDNS) {
			spfTXT(m, "x.example", "v=spf1 mx -all")
			for i := range 10 {
				h := fmt.Sprintf("mx%d.x.example", i)
				m.mx["x.example"] = append(m.mx["x.example"], &net.MX{Host: h})
				m.addA(h, "198.51.100.1")
			}
		}, ip: "192.0.2.1", domain: "x.example", want: Fail, lookups: 12},
		{name: "eleven MX hosts", zone: func(m *memDNS) {
			spfTXT(m, "x.example", "v=spf1 mx -all")
			for i := range 11 {
				m.mx["x.example"] = append(m.mx["x.example"], &net.MX{Host: fmt.Sprintf("mx%d.x.example", i)})
			}
		}, ip: "192.0.2.1", domain: "x.example", want: PermError, reason: "too many MX", lookups: 2},
		{name: "eleven PTR names, ten validated", zone: func(m *memDNS) {
			spfTXT(m, "x.example", "v=spf1 ptr -all")
			for i := range 11 {
				h := fmt.Sprintf("p%d.x.example", i)
				m.ptr["192.0.2.1"] = append(m.ptr["192.0.2.1"], h)
				if i == 10 {
					m.addA(h, "192.0.2.1") // the only valid one is beyond the limit
				}
			}
		}, ip: "192.0.2.1", domain: "x.example", want: Fail, lookups: 1 + 1 + 10},
		{name: "ptr and p macro share one validation", zone: func(m *memDNS) {
			spfTXT(m, "x.example", "v=spf1 ptr:other.example exists:%{p}.e.x.example ptr -all")
			m.ptr["192.0.2.1"] = []string{"mail.x.example"}
			m.addA("mail.x.example", "192.0.2.1")
		}, ip: "192.0.2.1", domain: "x.example", want: Pass, reason: "matched ptr", lookups: 1 + 2 + 1},
	} {
		t.Run(tc.name, func(t *testing.T) { runCheck(t, tc) })
	}
}

// TestExpandDomain checks macro expansion (RFC 7208 §7.3) with the RFC's
// own examples (§7.4) and truncation to 253 bytes.
func TestExpandDomain(t *testing.T) {
	m := newMemDNS()
	m.ptr["192.0.2.3"] = []string{"a.example.org.", "mx.example.com."}
	m.addA("mx.example.com", "192.0.2.3")
	m.addA("a.example.org", "192.0.2.3")
	v4 := newEvaluation(context.Background(), m, netip.MustParseAddr("192.0.2.3"), "strong-bad@email.example.com", "mx.example.org")
	v6 := newEvaluation(context.Background(), m, netip.MustParseAddr("2001:db8::cb01"), "strong-bad@email.example.com", "mx.example.org")
	long := strings.Repeat("abcdefghi.", 30) + "example.com" // 311 bytes
	for _, tc := range []struct {
		e          *evaluation
		spec, want string
	}{
		{v4, "%{s}", "strong-bad@email.example.com"},
		{v4, "%{o}", "email.example.com"},
		{v4, "%{d}", "email.example.com"},
		{v4, "%{d4}", "email.example.com"},
		{v4, "%{d3}", "email.example.com"},
		{v4, "%{d2}", "example.com"},
		{v4, "%{d1}", "com"},
		{v4, "%{dr}", "com.example.email"},
		{v4, "%{d2r}", "example.email"},
		{v4, "%{l}", "strong-bad"},
		{v4, "%{l-}", "strong.bad"},
		{v4, "%{lr}", "strong-bad"},
		{v4, "%{lr-}", "bad.strong"},
		{v4, "%{l1r-}", "strong"},
		{v4, "%{ir}.%{v}._spf.%{d2}", "3.2.0.192.in-addr._spf.example.com"},
		{v4, "%{lr-}.lp._spf.%{d2}", "bad.strong.lp._spf.example.com"},
		{v4, "%{lr-}.lp.%{ir}.%{v}._spf.%{d2}", "bad.strong.lp.3.2.0.192.in-addr._spf.example.com"},
		{v4, "%{ir}.%{v}.%{l1r-}.lp._spf.%{d2}", "3.2.0.192.in-addr.strong.lp._spf.example.com"},
		{v4, "%{d2}.trusted-domains.example.net", "example.com.trusted-domains.example.net"},
		{v6, "%{ir}.%{v}._spf.%{d2}", "1.0.b.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6._spf.example.com"},
		{v4, "%{S}", "strong-bad%40email.example.com"},
		{v4, "%%%_%-", "% %20"},
		{v4, "%{h}", "mx.example.org"},
		// The p macro: neither validated name is <domain> or under it, so
		// the first; none validates for the IPv6 client.
		{v4, "%{p}", "a.example.org"},
		{v6, "%{p}", "unknown"},
		{v4, "%{d99999999999999999999}", "email.example.com"},
		{v4, long, strings.Repeat("abcdefghi.", 24) + "example.com"},
		// Joined from the right, as if the whole expansion were built.
		{v4, strings.Repeat("%{d}", 40), truncateDomain(strings.Repeat("email.example.com", 40))},
	} {
		got, err := tc.e.expandDomain(tc.spec, "email.example.com")
		if err != nil || got != tc.want {
			t.Errorf("%q: %q, %v; want %q", tc.spec, got, err, tc.want)
		}
		if len(got) > maxDomainLen {
			t.Errorf("%q: %d bytes", tc.spec, len(got))
		}
	}
}
