package doctor

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/authmilter/authmilter/internal/testdns"
	"github.com/authmilter/authmilter/policy"
	"github.com/authmilter/authmilter/policy/resolve"
)

// spfWorld starts a DNS server with testdata/spf/world.zone, SERVFAIL at
// broken.example and sfroot.example, silence at slow.example and
// droproot.example.
func spfWorld(t *testing.T) *testdns.Server {
	t.Helper()
	srv := testdns.Start(t)
	srv.AddZoneFile(t, "testdata/spf/world.zone")
	srv.Fail("broken.example", dns.RcodeServerFailure)
	srv.Fail("sfroot.example", dns.RcodeServerFailure)
	srv.Drop("slow.example")
	srv.Drop("droproot.example")
	return srv
}

// spfResolver is a real resolver asking srv, with a short timeout for the
// dropped names.
func spfResolver(t *testing.T, srv *testdns.Server) *resolve.Resolver {
	t.Helper()
	r, err := resolve.New(resolve.Config{Servers: []string{srv.Addr()}, Timeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// runSPF runs the SPF check of domain with the given sending hosts.
func runSPF(t *testing.T, r *resolve.Resolver, domain string, ips ...string) (*SPFReport, []Finding) {
	t.Helper()
	opt := &Options{Resolver: r}
	for _, ip := range ips {
		opt.IPs = append(opt.IPs, netip.MustParseAddr(ip))
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return checkSPF(ctx, &env{r: r, opt: opt, domain: domain})
}

// wantFinding is a finding a test expects: Code and Severity exactly,
// Subject exactly when set, Message and Fix containing the given text.
type wantFinding struct {
	code    string
	sev     Severity
	subject string
	message string
	fix     string
}

func (w wantFinding) matches(f Finding) bool {
	return f.Check == CheckSPF && f.Code == w.code && f.Severity == w.sev &&
		(w.subject == "" || f.Subject == w.subject) &&
		strings.Contains(f.Message, w.message) && strings.Contains(f.Fix, w.fix)
}

func spfDumpFindings(fs []Finding) string {
	var b strings.Builder
	for _, f := range fs {
		fmt.Fprintf(&b, "\n  %s %s [%s] %s | fix: %s", f.Severity, f.Code, f.Subject, f.Message, f.Fix)
	}
	return b.String()
}

// TestSPFCheck runs the whole SPF check on each planted problem.
func TestSPFCheck(t *testing.T) {
	srv := spfWorld(t)
	r := spfResolver(t, srv)
	for _, tc := range []struct {
		domain string
		want   []wantFinding
		// never are codes that must not appear.
		never []string
		check func(t *testing.T, rep *SPFReport)
	}{
		{domain: "over.example", want: []wantFinding{
			{code: "spf-too-many-lookups", sev: Error, subject: "include:news.example",
				message: "SPF needs 12 DNS lookups, limit 10: include:_spf.office.example adds 4, include:sendgrid.example adds 4, include:news.example adds 3, mx adds 1; lookup 11, over the limit, is a in include:news.example",
				fix:     "replace include:_spf.office.example with its ip4/ip6 ranges or move that sender to a subdomain (2 over the limit)"},
			{code: "spf-all", sev: OK, subject: "-all"},
		}, never: []string{"spf-lookups"}, check: func(t *testing.T, rep *SPFReport) {
			if rep.Lookups != 12 || rep.VoidLookups != 0 || rep.Tree == nil || rep.Tree.Total != 12 || rep.Tree.Lookups != 4 || len(rep.Tree.Children) != 3 {
				t.Errorf("lookups %d void %d tree %+v", rep.Lookups, rep.VoidLookups, rep.Tree)
			}
			office := rep.Tree.Children[0]
			if office.Term != "include:_spf.office.example" || office.Total != 3 || len(office.Children) != 2 || office.Children[1].Lookups != 1 {
				t.Errorf("office node %+v", office)
			}
		}},
		{domain: "multi.example", want: []wantFinding{
			{code: "spf-record", sev: OK, message: "v=spf1 ip4:198.51.100.0/24 include:_spf.office.example mx ~all"},
			{code: "spf-lookups", sev: OK, message: "5 DNS lookups of 10, 0 void lookups of 2"},
			{code: "spf-all", sev: OK, subject: "~all", message: "softfail"},
		}},
		{domain: "nine.example", want: []wantFinding{
			{code: "spf-lookups-near-limit", sev: Warn, message: "9 DNS lookups of 10"},
		}},
		{domain: "void.example", want: []wantFinding{
			{code: "spf-too-many-void-lookups", sev: Error, message: "3 void lookups, limit 2: a:gone1.void.example, mx:gone2.void.example, exists:gone3.void.example"},
			{code: "spf-lookups", sev: OK, message: "4 DNS lookups of 10, 3 void lookups of 2"},
		}, check: func(t *testing.T, rep *SPFReport) {
			if rep.VoidLookups != 3 || rep.Tree.Void != 3 {
				t.Errorf("void %d, tree void %d", rep.VoidLookups, rep.Tree.Void)
			}
		}},
		{domain: "loop.example", want: []wantFinding{
			{code: "spf-include-loop", sev: Error, subject: "include:loop.example in include:loop2.example", message: "loop.example is already being evaluated"},
		}},
		{domain: "ptr.example", want: []wantFinding{
			{code: "spf-ptr", sev: Warn, subject: "ptr", message: "RFC 7208 §5.5"},
		}},
		{domain: "passall.example", want: []wantFinding{{code: "spf-pass-all", sev: Error, subject: "+all", fix: "-all"}}},
		{domain: "bareall.example", want: []wantFinding{{code: "spf-pass-all", sev: Error, subject: "all"}}},
		{domain: "neutral.example", want: []wantFinding{{code: "spf-neutral-all", sev: Warn, subject: "?all"}}},
		{domain: "noall.example", want: []wantFinding{{code: "spf-no-all", sev: Warn, message: "neutral"}}},
		{domain: "incpassall.example", want: []wantFinding{
			{code: "spf-pass-all", sev: Error, subject: "include:passall.example", message: "every host"},
			{code: "spf-all", sev: OK, subject: "-all"},
		}},
		{domain: "macro.example", want: []wantFinding{
			{code: "spf-macro-unexpanded", sev: OK, subject: "exists:%{i}._spf.macro.example"},
			{code: "spf-macro-unexpanded", sev: Warn, subject: "include:%{d1}.inc.example", fix: "lookup limit"},
			{code: "spf-lookups", sev: OK, message: "2 DNS lookups of 10"},
		}},
		{domain: "redirect.example", want: []wantFinding{
			{code: "spf-all", sev: OK, subject: "-all"},
			{code: "spf-lookups", sev: OK, message: "1 DNS lookups of 10"},
		}, never: []string{"spf-no-all"}, check: func(t *testing.T, rep *SPFReport) {
			if rep.All != "-all" || len(rep.Tree.Children) != 1 || rep.Tree.Children[0].Term != "redirect=_spf.redirect.example" {
				t.Errorf("all %q tree %+v", rep.All, rep.Tree)
			}
		}},
		{domain: "redirign.example", want: []wantFinding{
			{code: "spf-redirect-ignored", sev: Warn, subject: "redirect=_spf.redirect.example"},
			{code: "spf-lookups", sev: OK, message: "0 DNS lookups of 10"},
		}},
		{domain: "long.example", want: []wantFinding{
			{code: "spf-record-too-long", sev: Warn, subject: "long.example", message: "over 512"},
			{code: "spf-record", sev: OK},
		}},
		{domain: "multi.example", never: []string{"spf-record-too-long", "spf-type-only", "spf-type-spf"}},
		{domain: "type99.example", want: []wantFinding{{code: "spf-type-only", sev: Error, fix: "as a TXT record"}}, never: []string{"spf-missing"}},
		{domain: "both99.example", want: []wantFinding{{code: "spf-type-spf", sev: OK}, {code: "spf-record", sev: OK}}},
		{domain: "two.example", want: []wantFinding{{code: "spf-multiple", sev: Error, message: "2 SPF records"}}, check: func(t *testing.T, rep *SPFReport) {
			if len(rep.Records) != 2 || rep.Record != "" {
				t.Errorf("records %q record %q", rep.Records, rep.Record)
			}
		}},
		{domain: "none.example", want: []wantFinding{{code: "spf-missing", sev: Error}}},
		{domain: "nxdomain.example", want: []wantFinding{{code: "spf-missing", sev: Error}}},
		{domain: "syntax.example", want: []wantFinding{
			{code: "spf-syntax", sev: Error, subject: "a:foo.-bar", message: "top label"},
		}, never: []string{"spf-lookups", "spf-all", "spf-no-all"}},
		{domain: "syninc.example", want: []wantFinding{
			{code: "spf-syntax", sev: Error, subject: "include:bad.example: ip4:1.2.3.4/33", message: "over 32"},
		}},
		{domain: "noinc.example", want: []wantFinding{
			{code: "spf-target-no-record", sev: Error, subject: "include:nothing.example"},
			{code: "spf-lookups", sev: OK, message: "1 DNS lookups of 10, 1 void lookups of 2"},
		}},
		{domain: "mxmany.example", want: []wantFinding{
			{code: "spf-mx-too-many-hosts", sev: Error, subject: "mx", message: "11 MX hosts, limit 10"},
		}},
		{domain: "servfail.example", want: []wantFinding{
			{code: "spf-dns-error", sev: Error, subject: "include:broken.example", message: "SERVFAIL"},
		}, never: []string{"spf-missing", "spf-target-no-record"}},
		{domain: "timeout.example", want: []wantFinding{
			{code: "spf-dns-error", sev: Error, subject: "include:slow.example", message: "timeout"},
		}, never: []string{"spf-missing", "spf-target-no-record"}},
		{domain: "sfroot.example", want: []wantFinding{
			{code: "spf-dns-error", sev: Error, subject: "sfroot.example", message: "SERVFAIL"},
		}, never: []string{"spf-missing", "spf-type-only"}},
		{domain: "droproot.example", want: []wantFinding{
			{code: "spf-dns-error", sev: Error, subject: "droproot.example", message: "timeout"},
		}, never: []string{"spf-missing", "spf-type-only"}},
	} {
		t.Run(tc.domain, func(t *testing.T) {
			rep, fs := runSPF(t, r, tc.domain)
			for _, w := range tc.want {
				found := false
				for _, f := range fs {
					found = found || w.matches(f)
				}
				if !found {
					t.Errorf("no finding %+v in:%s", w, spfDumpFindings(fs))
				}
			}
			for _, f := range fs {
				for _, code := range tc.never {
					if f.Code == code {
						t.Errorf("unexpected %s: %s", code, f.Message)
					}
				}
				if f.Check != CheckSPF || f.Message == "" || (f.Severity != OK && f.Fix == "") || (f.Severity == OK && f.Fix != "") {
					t.Errorf("malformed finding %+v", f)
				}
			}
			if tc.check != nil {
				tc.check(t, rep)
			}
		})
	}
}

// TestSPFHosts checks each sending host's result against policy.CheckSPF
// and the term the static evaluation names.
func TestSPFHosts(t *testing.T) {
	srv := spfWorld(t)
	r := spfResolver(t, srv)
	for _, tc := range []struct {
		domain, ip     string
		result, term   string
		code           string
		sev            Severity
		message, fix   string
		reasonContains string
	}{
		{"multi.example", "192.0.2.7", "pass", "ip4:192.0.2.0/24 in include:_a.office.example in include:_spf.office.example", "spf-host-pass", OK,
			"192.0.2.7 passes: matched ip4:192.0.2.0/24 in include:_a.office.example in include:_spf.office.example", "", ""},
		{"multi.example", "198.51.100.9", "pass", "ip4:198.51.100.0/24", "spf-host-pass", OK, "passes: matched ip4:198.51.100.0/24", "", ""},
		{"multi.example", "203.0.113.99", "pass", "a:smtp.office.example in include:_b.office.example in include:_spf.office.example", "spf-host-pass", OK, "matched a:smtp", "", ""},
		{"multi.example", "2001:db8::1", "pass", "ip6:2001:db8::/32 in include:_b.office.example in include:_spf.office.example", "spf-host-pass", OK, "", "", ""},
		{"multi.example", "203.0.113.25", "pass", "mx", "spf-host-pass", OK, "matched mx", "", ""},
		{"multi.example", "3fff:25::25", "pass", "mx", "spf-host-pass", OK, "matched mx", "", ""},
		{"multi.example", "203.0.113.5", "softfail", "~all", "spf-host-not-authorized", Error, "SPF gives softfail (matched ~all)", "add ip4:203.0.113.5 to the SPF record of multi.example", ""},
		{"multi.example", "2001:db8:99::1", "pass", "ip6:2001:db8::/32 in include:_b.office.example in include:_spf.office.example", "spf-host-pass", OK, "", "", ""},
		{"ok.example", "2001:db9::1", "fail", "-all", "spf-host-not-authorized", Error, "SPF gives fail", "add ip6:2001:db9::1 to", ""},
		{"noall.example", "203.0.113.5", "neutral", "no term matched", "spf-host-not-authorized", Error, "neutral (no term matched)", "", ""},
		{"redirect.example", "192.0.2.3", "pass", "ip4:192.0.2.0/24 in redirect=_spf.redirect.example", "spf-host-pass", OK, "", "", ""},
		{"ptr.example", "192.0.2.1", "pass", "ptr (not evaluated statically)", "spf-host-pass", OK, "passes: term not known: ptr is not evaluated statically", "", ""},
		{"macro.example", "192.0.2.1", "permerror", "unknown", "spf-host-permerror", Error, "SPF for 192.0.2.1 gives permerror: no DNS record found", "", ""},
		{"over.example", "192.0.2.25", "pass", "mx", "spf-host-pass", OK, "matched mx", "", ""},
		{"over.example", "203.0.113.200", "permerror", "a in include:news.example (DNS lookup 11, over the limit)", "spf-host-permerror", Error, "permerror", "fix the SPF errors", ""},
		{"void.example", "203.0.113.7", "permerror", "exists:gone3.void.example (void lookup 3, over the limit)", "spf-host-permerror", Error, "permerror", "", ""},
		{"two.example", "192.0.2.1", "permerror", "term not determined", "spf-host-permerror", Error, "", "", ""},
		{"timeout.example", "192.0.2.1", "temperror", "", "spf-dns-error", Error, "temperror", "", ""},
		{"none.example", "192.0.2.1", "none", "", "spf-host-not-authorized", Error, "SPF gives none", `publish one SPF record at none.example that authorizes it, e.g. "v=spf1 ip4:192.0.2.1 -all"`, ""},
	} {
		t.Run(tc.domain+"/"+tc.ip, func(t *testing.T) {
			rep, fs := runSPF(t, r, tc.domain, tc.ip)
			ip := netip.MustParseAddr(tc.ip)
			h := rep.HostResult(ip)
			if h == nil {
				t.Fatalf("no result for %s in %+v", ip, rep.IPs)
			}
			want := policy.CheckSPF(context.Background(), r, ip, tc.domain, "postmaster@"+tc.domain)
			if h.Result != want.Result {
				t.Errorf("result %s, policy.CheckSPF says %s", h.Result, want.Result)
			}
			if tc.result != "" && h.Result != tc.result {
				t.Errorf("result %s, want %s", h.Result, tc.result)
			}
			if tc.term != "" && h.Term != tc.term {
				t.Errorf("term %q, want %q", h.Term, tc.term)
			}
			if tc.code == "" {
				return
			}
			w := wantFinding{code: tc.code, sev: tc.sev, subject: tc.ip, message: tc.message, fix: tc.fix}
			found := false
			for _, f := range fs {
				found = found || w.matches(f)
			}
			if !found {
				t.Errorf("no finding %+v in:%s", w, spfDumpFindings(fs))
			}
		})
	}
}

// TestSPFHostResultNil: HostResult is nil-safe and nil for an address not
// checked.
func TestSPFHostResultNil(t *testing.T) {
	var s *SPFReport
	if s.HostResult(netip.MustParseAddr("192.0.2.1")) != nil {
		t.Error("nil report gave a result")
	}
	s = &SPFReport{IPs: []SPFHostResult{{IP: "192.0.2.1", Result: "pass"}}}
	if s.HostResult(netip.MustParseAddr("192.0.2.2")) != nil {
		t.Error("result for an address not checked")
	}
	if h := s.HostResult(netip.MustParseAddr("::ffff:192.0.2.1")); h == nil || h.Result != "pass" {
		t.Errorf("mapped address: %+v", h)
	}
}

// TestSPFReportJSON pins the JSON names of the SPF section.
func TestSPFReportJSON(t *testing.T) {
	srv := spfWorld(t)
	rep, _ := runSPF(t, spfResolver(t, srv), "multi.example", "192.0.2.7")
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{`"record":`, `"lookups":5`, `"void_lookups":0`, `"tree":{`, `"children":[`, `"term":"include:_spf.office.example"`, `"total":`, `"void":`, `"all":"~all"`, `"ips":[{"ip":"192.0.2.7","result":"pass","term":`} {
		if !strings.Contains(string(b), key) {
			t.Errorf("JSON has no %s: %s", key, b)
		}
	}
}
