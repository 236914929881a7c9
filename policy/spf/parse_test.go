package spf

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

// TestParseRecordValid parses records every receiver must accept and checks
// the typed terms.
func TestParseRecordValid(t *testing.T) {
	for _, tc := range []struct {
		record string
		check  func(t *testing.T, r *Record)
	}{
		{"v=spf1", func(t *testing.T, r *Record) {
			if len(r.Terms) != 0 {
				t.Errorf("terms %v", r.Terms)
			}
		}},
		{"V=SPF1   -ALL  ", func(t *testing.T, r *Record) {
			if r.All == nil || r.All.Qualifier != '-' {
				t.Errorf("all %+v", r.All)
			}
		}},
		{"v=spf1 ip4:192.0.2.1/24 ip6:2001:db8::/32 ip4:198.51.100.7 ip6:::ffff:1.2.3.4 -all", func(t *testing.T, r *Record) {
			want := []string{"192.0.2.0/24", "2001:db8::/32", "198.51.100.7/32", "::ffff:1.2.3.4/128"}
			for i, w := range want {
				if got := r.Terms[i].Prefix; got != netip.MustParsePrefix(w) {
					t.Errorf("term %d prefix %v, want %s", i, got, w)
				}
			}
		}},
		{"v=spf1 a mx a:mail.example.com/24 mx:example.org//64 a/0 mx/24//48 ~all", func(t *testing.T, r *Record) {
			type c struct {
				kind   Kind
				domain string
				c4, c6 int
			}
			want := []c{{KindA, "", -1, -1}, {KindMX, "", -1, -1}, {KindA, "mail.example.com", 24, -1}, {KindMX, "example.org", -1, 64}, {KindA, "", 0, -1}, {KindMX, "", 24, 48}}
			for i, w := range want {
				tm := r.Terms[i]
				if (c{tm.Kind, tm.Domain, tm.CIDR4, tm.CIDR6}) != w {
					t.Errorf("term %d = %+v, want %+v", i, tm, w)
				}
			}
		}},
		{"v=spf1 include:_spf.google.com include:sendgrid.net. ?include:x.example -all", func(t *testing.T, r *Record) {
			if r.Terms[0].Kind != KindInclude || r.Terms[0].Domain != "_spf.google.com" || r.Terms[2].Qualifier != '?' {
				t.Errorf("terms %+v", r.Terms)
			}
		}},
		{"v=spf1 exists:%{i}._spf.%{d} a:%{l1r-}.example.com exists:%{ir}.%{v}._spf.%{d2} a:%{d}/24 -all", func(t *testing.T, r *Record) {
			for i := range 4 {
				if !r.Terms[i].HasMacros {
					t.Errorf("term %q: HasMacros false", r.Terms[i].Text)
				}
			}
			if r.Terms[3].Domain != "%{d}" || r.Terms[3].CIDR4 != 24 {
				t.Errorf("a:%%{d}/24 = %+v", r.Terms[3])
			}
		}},
		// RFC 7208 §7.1: "/" and ":" are visible characters of a name; only
		// a trailing "/" 1*DIGIT is a CIDR length.
		{"v=spf1 a:foo:bar/baz.example.com/24 mx:foo:bar/baz.example.com//64 a:x.example/ab.com", func(t *testing.T, r *Record) {
			for i, want := range []struct {
				domain       string
				cidr4, cidr6 int
			}{{"foo:bar/baz.example.com", 24, -1}, {"foo:bar/baz.example.com", -1, 64}, {"x.example/ab.com", -1, -1}} {
				if tm := r.Terms[i]; tm.Domain != want.domain || tm.CIDR4 != want.cidr4 || tm.CIDR6 != want.cidr6 {
					t.Errorf("term %d: %q /%d //%d, want %q /%d //%d", i, tm.Domain, tm.CIDR4, tm.CIDR6, want.domain, want.cidr4, want.cidr6)
				}
			}
		}},
		{"v=spf1 a:%{d/}.example.com/24", func(t *testing.T, r *Record) {
			if r.Terms[0].Domain != "%{d/}.example.com" || r.Terms[0].CIDR4 != 24 {
				t.Errorf("%+v", r.Terms[0])
			}
		}},
		{"v=spf1 redirect=_spf.example.com", func(t *testing.T, r *Record) {
			if r.Redirect == nil || r.Redirect.Domain != "_spf.example.com" || r.All != nil {
				t.Errorf("redirect %+v", r.Redirect)
			}
		}},
		{"v=spf1 -all exp=explain._spf.%{d} foo=bar moo.cow-far_out=man:dog/cat default=+ x=%{c}", func(t *testing.T, r *Record) {
			if r.Exp == nil || r.Terms[2].Kind != KindUnknownModifier || r.Terms[2].Name != "foo" {
				t.Errorf("%+v", r.Terms)
			}
		}},
		{"v=spf1 ptr ptr:example.com +all", nil},
		{"v=spf1 exists:%-", nil},
		{"v=spf1 exists:foo.%-", nil},
		{"v=spf1 exists:%%.example.com", nil},
		{"v=spf1 a:x.1-2 a:foo.1bar a:foo.b-2", nil},
		{"v=spf1 Include:Example.COM IP4:1.2.3.4 -ALL", nil},
		{"v=spf1 exists:%{S}.%{L2R+}.%{O}.%{D}.%{I}.%{P}.%{H}.%{V}.example.com", nil},
	} {
		t.Run(tc.record, func(t *testing.T) {
			r, err := ParseRecord(tc.record)
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			if tc.check != nil {
				tc.check(t, r)
			}
		})
	}
}

// TestParseRecordInvalid checks that each broken record is refused with the
// exact offending term (the OpenSPF suite's record-syntax classics among
// them).
func TestParseRecordInvalid(t *testing.T) {
	for _, tc := range []struct {
		record, term, reason string
	}{
		{"v=spf1 a:foo.-bar", "a:foo.-bar", "top label"},
		{"v=spf1 a:foo.bar-", "a:foo.bar-", "top label"},
		{"v=spf1 a:museum", "a:museum", "single label"},
		{"v=spf1 a:museum.", "a:museum.", "single label"},
		{"v=spf1 a:1.2.3.4", "a:1.2.3.4", "top label"},
		{"v=spf1 a:foo..com", "a:foo..com", "empty label"},
		{"v=spf1 a:.foo.com", "a:.foo.com", "empty label"},
		{"v=spf1 a:foo.com..", "a:foo.com..", "empty label"},
		{"v=spf1 ip4:1.2.3.4/33", "ip4:1.2.3.4/33", "over 32"},
		{"v=spf1 ip4:1.2.3.4/032", "ip4:1.2.3.4/032", "leading zero"},
		{"v=spf1 ip4:1.2.3.4/", "ip4:1.2.3.4/", "empty"},
		{"v=spf1 ip4:1.2.3", "ip4:1.2.3", "not an ip4"},
		{"v=spf1 ip4:01.2.3.4", "ip4:01.2.3.4", "not an ip4"},
		{"v=spf1 ip4:::1", "ip4:::1", "dotted-quad"},
		{"v=spf1 ip4", "ip4", "needs an address"},
		{"v=spf1 ip4:", "ip4:", "needs an address"},
		{"v=spf1 ip6:::1/129", "ip6:::1/129", "over 128"},
		{"v=spf1 ip6:1.2.3.4", "ip6:1.2.3.4", "use ip4"},
		{"v=spf1 ip6:fe80::1%eth0", "ip6:fe80::1%eth0", "not an ip6"},
		{"v=spf1 ip6:::1//64", "ip6:::1//64", "not a number"},
		{"v=spf1 a/33", "a/33", "over 32"},
		{"v=spf1 mx//129", "mx//129", "over 128"},
		{"v=spf1 mx/24/64", "mx/24/64", "not a number"},
		{"v=spf1 a//", "a//", "empty"},
		{"v=spf1 a:example.com/", "a:example.com/", "top label"}, // "/" is part of the name (RFC 7208 §7.1), not a CIDR length
		{"v=spf1 include:", "include:", "empty domain"},
		{"v=spf1 include", "include", "needs a domain"},
		{"v=spf1 exists", "exists", "needs a domain"},
		{"v=spf1 a:", "a:", "empty domain"},
		{"v=spf1 ptr/24", "ptr/24", "no CIDR"},
		{"v=spf1 redirect=a.example redirect=b.example", "redirect=b.example", "second redirect"},
		{"v=spf1 exp=a.example -all exp=b.example", "exp=b.example", "second exp"},
		{"v=spf1 redirect=", "redirect=", "empty domain"},
		{"v=spf1 foo:bar", "foo:bar", "unknown mechanism"},
		{"v=spf1 redirect:foo.com", "redirect:foo.com", "unknown mechanism"},
		{"v=spf1 -all:x", "-all:x", "no argument"},
		{"v=spf1 all/24", "all/24", "no argument"},
		{"v=spf1 exists:%{z}.example.com", "exists:%{z}.example.com", "unknown macro letter"},
		{"v=spf1 %{z}", "%{z}", "unknown mechanism"},
		{"v=spf1 exists:foo.example.com%", "exists:foo.example.com%", "lone %"},
		{"v=spf1 exists:%{d}%", "exists:%{d}%", "lone %"},
		{"v=spf1 exists:%x.example.com", "exists:%x.example.com", "not a macro"},
		{"v=spf1 exists:%{d.example.com", "exists:%{d.example.com", "closing }"},
		{"v=spf1 exists:%{}.example.com", "exists:%{}.example.com", "no macro letter"},
		{"v=spf1 exists:%{d0}.example.com", "exists:%{d0}.example.com", "must not be zero"},
		{"v=spf1 exists:%{d2x}.example.com", "exists:%{d2x}.example.com", "not a transformer"},
		{"v=spf1 -exists:%{t}.%{l}", "-exists:%{t}.%{l}", "only in explanation"},
		{"v=spf1 exists:%{d}foo", "exists:%{d}foo", "single label"},
		{"v=spf1 -all foo=%abc", "foo=%abc", "not a macro"},
		{"v=spf1 A:mail.example.com =bar", "=bar", "without a name"},
		{"v=spf1 9x=bar", "9x=bar", "not a valid modifier name"},
		{"v=spf1 +", "+", "no mechanism name"},
		{"v=spf1 a:exa\x7fmple.com", "a:exa\x7fmple.com", "not allowed"},
		{"v=spf1 a:" + strings.Repeat("x", 64) + ".com", "a:" + strings.Repeat("x", 64) + ".com", "63 bytes"},
		{"v=spf1\tall", "v=spf1\tall", "not an SPF record"},
		{"v=spf10 -all", "v=spf10", "not an SPF record"},
		{"spf1 -all", "spf1", "not an SPF record"},
	} {
		t.Run(tc.record, func(t *testing.T) {
			_, err := ParseRecord(tc.record)
			var se *SyntaxError
			if !errors.As(err, &se) {
				t.Fatalf("err = %v, want a syntax error", err)
			}
			if se.Term != tc.term || !strings.Contains(se.Reason, tc.reason) {
				t.Errorf("error term %q reason %q, want %q and a reason with %q", se.Term, se.Reason, tc.term, tc.reason)
			}
		})
	}
}

// TestParseRecordHostile feeds the parser long and odd records: it must
// answer, with a bounded error, without panicking.
func TestParseRecordHostile(t *testing.T) {
	for _, rec := range []string{
		"v=spf1 " + strings.Repeat("a ", 100000),
		"v=spf1 exists:" + strings.Repeat("%{d}", 10000),
		"v=spf1 exists:" + strings.Repeat("%%", 10000) + "%",
		"v=spf1 a:" + strings.Repeat("%{", 10000),
		"v=spf1 ip4:" + strings.Repeat("9", 10000),
		"v=spf1 a/" + strings.Repeat("9", 10000),
		"v=spf1 exists:%{d" + strings.Repeat("9", 1000) + "}.x.com",
	} {
		r, err := ParseRecord(rec)
		if err != nil && len(err.Error()) > len(rec)+300 {
			t.Errorf("error of %d bytes", len(err.Error()))
		}
		_ = r
	}
}

// TestIsRecord checks which TXT records are SPF records (RFC 7208 §4.5).
func TestIsRecord(t *testing.T) {
	for txt, want := range map[string]bool{
		"v=spf1": true, "v=spf1 -all": true, "V=SpF1 mx": true,
		"v=spf10": false, "v=spf1\t-all": false, " v=spf1": false, "v=spf": false,
		"spf2.0/pra": false, "": false,
	} {
		if got := IsRecord(txt); got != want {
			t.Errorf("IsRecord(%q) = %v, want %v", txt, got, want)
		}
	}
}
