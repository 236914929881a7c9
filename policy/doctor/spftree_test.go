package doctor

import (
	"fmt"
	"strings"
	"testing"
)

// TestSPFTreeBounds attacks the walk with hostile trees: it must stop at
// its depth and DNS-name limits, say so, and still report the limits the
// receivers apply.
func TestSPFTreeBounds(t *testing.T) {
	srv := spfWorld(t)
	r := spfResolver(t, srv)
	for _, tc := range []struct {
		domain string
		want   []wantFinding
	}{
		{"wide.example", []wantFinding{
			{code: "spf-walk-limit", sev: Warn, message: fmt.Sprintf("after %d DNS names", spfMaxNames)},
			{code: "spf-too-many-lookups", sev: Error, message: "SPF needs at least 80 DNS lookups, limit 10"},
		}},
		{"deep.example", []wantFinding{
			{code: "spf-walk-limit", sev: Warn, message: fmt.Sprintf("at %d levels", spfMaxDepth)},
			{code: "spf-too-many-lookups", sev: Error, message: "SPF needs at least 13 DNS lookups"},
		}},
		{"manya.example", []wantFinding{
			{code: "spf-walk-limit", sev: Warn},
			{code: "spf-too-many-lookups", sev: Error, message: "at least 80"},
			{code: "spf-too-many-void-lookups", sev: Error, message: fmt.Sprintf("%d void lookups", spfMaxNames-1)},
		}},
	} {
		t.Run(tc.domain, func(t *testing.T) {
			before := srv.Queries()
			rep, fs := runSPF(t, r, tc.domain)
			// TXT and type 99 of the domain, then at most A and AAAA, or
			// TXT, of each name in the budget.
			if q := srv.Queries() - before; q > 3+2*spfMaxNames {
				t.Errorf("%d DNS queries for one domain, budget %d names", q, spfMaxNames)
			}
			for _, w := range tc.want {
				found := false
				for _, f := range fs {
					found = found || w.matches(f)
				}
				if !found {
					t.Errorf("no finding %+v in:%s", w, spfDumpFindings(fs))
				}
			}
			if n := strings.Count(spfDumpFindings(fs), "spf-walk-limit"); n != 1 {
				t.Errorf("%d spf-walk-limit findings, want 1", n)
			}
			if rep.Tree == nil {
				t.Fatal("no tree")
			}
		})
	}
}

// TestSPFTreeTermErrors: DNS failures at a, mx and exists terms are
// spf-dns-error at the term, a self-include is a loop, a null MX is no
// address, and macros in a and exists cost a lookup without a walk.
func TestSPFTreeTermErrors(t *testing.T) {
	srv := spfWorld(t)
	srv.SetTXT("aslow.example", "v=spf1 a:slow.example -all")
	srv.SetTXT("mxfail.example", "v=spf1 mx:broken.example -all")
	srv.SetTXT("exfail.example", "v=spf1 exists:broken.example -all")
	srv.SetTXT("self.example", "v=spf1 include:SELF.example. -all")
	srv.SetTXT("nullmx.example", "v=spf1 mx -all")
	srv.AddRR(t, "nullmx.example. 300 IN MX 0 .")
	r := spfResolver(t, srv)
	for _, tc := range []struct {
		domain string
		want   wantFinding
	}{
		{"aslow.example", wantFinding{code: "spf-dns-error", sev: Error, subject: "a:slow.example", message: "timeout"}},
		{"mxfail.example", wantFinding{code: "spf-dns-error", sev: Error, subject: "mx:broken.example", message: "SERVFAIL"}},
		{"exfail.example", wantFinding{code: "spf-dns-error", sev: Error, subject: "exists:broken.example", message: "SERVFAIL"}},
		{"self.example", wantFinding{code: "spf-include-loop", sev: Error, subject: "include:SELF.example."}},
		{"nullmx.example", wantFinding{code: "spf-lookups", sev: OK, message: "1 DNS lookups of 10, 0 void lookups"}},
	} {
		t.Run(tc.domain, func(t *testing.T) {
			_, fs := runSPF(t, r, tc.domain)
			found := false
			for _, f := range fs {
				found = found || tc.want.matches(f)
			}
			if !found {
				t.Errorf("no finding %+v in:%s", tc.want, spfDumpFindings(fs))
			}
		})
	}
}

// TestSPFDomain: the DNS name of a macro-free domain-spec.
func TestSPFDomain(t *testing.T) {
	for in, want := range map[string]string{
		"Example.COM.": "example.com", "a%%b.example": "a%b.example", "x%-y.example": "x%20y.example",
	} {
		if got := spfDomain(in); got != want {
			t.Errorf("spfDomain(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestSPFTreeRepeats attacks the report's size: a record repeating a
// loop, ptr and a macro include hundreds of times gives a bounded tree
// and at most spfMaxSame findings of a kind, plus one that counts the
// rest.
func TestSPFTreeRepeats(t *testing.T) {
	srv := spfWorld(t)
	rec := "v=spf1" + strings.Repeat(" include:rep.example ptr include:%{d}.x.example", 300) + " -all"
	srv.SetTXT("rep.example", rec)
	rep, fs := runSPF(t, spfResolver(t, srv), "rep.example")
	kinds := map[string]int{}
	for _, f := range fs {
		kinds[f.Code+"/"+f.Severity.String()]++
	}
	for _, k := range []string{"spf-include-loop/error", "spf-ptr/warn", "spf-macro-unexpanded/warn"} {
		if kinds[k] != spfMaxSame+1 {
			t.Errorf("%d %s findings, want %d and a summary", kinds[k], k, spfMaxSame)
		}
	}
	if len(fs) > 60 {
		t.Errorf("%d findings:%s", len(fs), spfDumpFindings(fs))
	}
	if n := len(rep.Tree.Children); n > spfMaxNodes {
		t.Errorf("%d children, limit %d", n, spfMaxNodes)
	}
	if rep.Lookups != 900 {
		t.Errorf("lookups %d, want 900 (every term counts, walked or not)", rep.Lookups)
	}
}
