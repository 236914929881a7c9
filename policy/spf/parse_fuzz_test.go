package spf

import (
	"errors"
	"strings"
	"testing"
)

// FuzzParseRecord checks that the parser never panics, that every error is
// a syntax error naming a term of the record, and that what it accepts
// is consistent: macros only where HasMacros says, CIDR lengths in range,
// at most one redirect and one exp.
func FuzzParseRecord(f *testing.F) {
	for _, s := range []string{
		"v=spf1 -all",
		"v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 a mx/24//64 ~all",
		"v=spf1 include:_spf.example.com exists:%{i}._spf.%{d2} redirect=x.example",
		"v=spf1 a:foo.-bar",
		"v=spf1 exists:%{l1r-}.%{d}% exp=%{c}.x",
		"v=spf1 -all foo=%{t}bar moo.cow=",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, rec string) {
		r, err := ParseRecord(rec)
		if err != nil {
			var se *SyntaxError
			if !errors.As(err, &se) {
				t.Fatalf("error %v is not a syntax error", err)
			}
			if se.Term != "" && !strings.Contains(rec, se.Term) {
				t.Fatalf("error term %q is not in the record", se.Term)
			}
			return
		}
		redirects, exps := 0, 0
		for _, tm := range r.Terms {
			if tm.HasMacros != strings.Contains(tm.Domain, "%") {
				t.Fatalf("%q: HasMacros %v for domain %q", tm.Text, tm.HasMacros, tm.Domain)
			}
			if tm.CIDR4 > 32 || tm.CIDR6 > 128 || tm.CIDR4 < -1 || tm.CIDR6 < -1 {
				t.Fatalf("%q: CIDR %d/%d", tm.Text, tm.CIDR4, tm.CIDR6)
			}
			switch tm.Kind {
			case KindRedirect:
				redirects++
			case KindExp:
				exps++
			case KindIP4:
				if !tm.Prefix.Addr().Is4() {
					t.Fatalf("%q: ip4 prefix %v", tm.Text, tm.Prefix)
				}
			case KindInclude, KindExists:
				if tm.Domain == "" {
					t.Fatalf("%q: no domain", tm.Text)
				}
			}
		}
		if redirects > 1 || exps > 1 {
			t.Fatalf("%d redirects, %d exps accepted", redirects, exps)
		}
	})
}
