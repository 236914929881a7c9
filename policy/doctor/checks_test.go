package doctor

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/authmilter/authmilter/internal/testdns"
	"github.com/authmilter/authmilter/policy"
	"github.com/authmilter/authmilter/policy/resolve"
)

// checksWorld is a test DNS server loaded with testdata/checks/*.zone.
type checksWorld struct {
	t   *testing.T
	srv *testdns.Server
}

func newChecksWorld(t *testing.T) *checksWorld {
	t.Helper()
	srv := testdns.Start(t)
	files, err := filepath.Glob("testdata/checks/*.zone")
	if err != nil || len(files) == 0 {
		t.Fatalf("no zone files in testdata/checks: %v", err)
	}
	for _, f := range files {
		srv.AddZoneFile(t, f)
	}
	return &checksWorld{t: t, srv: srv}
}

// env returns the environment of one check run for domain, with a
// resolver of its own: one case's answers are not another's cache hits.
func (w *checksWorld) env(domain string, opt Options) *env {
	r, err := resolve.New(resolve.Config{Servers: []string{w.srv.Addr()}, Timeout: 500 * time.Millisecond})
	if err != nil {
		w.t.Fatal(err)
	}
	opt.Resolver = r
	return &env{r: r, opt: &opt, domain: domain}
}

// checkCase is one table row: findings must include every code of want
// (as "code" or "code@subject") and none of never.
type checkCase struct {
	name   string
	domain string
	opt    Options
	// drop and fail are names that never answer (a timeout) or answer
	// SERVFAIL.
	drop, fail []string
	want       []string
	never      []string
}

func (c checkCase) setUp(t *testing.T, w *checksWorld) {
	for _, n := range c.drop {
		w.srv.Drop(n)
	}
	for _, n := range c.fail {
		w.srv.Fail(n, dns.RcodeServerFailure)
	}
	t.Cleanup(func() {
		for _, n := range append(slices.Clone(c.drop), c.fail...) {
			w.srv.Clear(n)
		}
	})
}

// checkCodes compares findings with a case.
func checkCodes(t *testing.T, check string, fs []Finding, c checkCase) {
	t.Helper()
	have := map[string]bool{}
	for _, f := range fs {
		if f.Check != check {
			t.Errorf("finding %+v: check %q, want %q", f, f.Check, check)
		}
		if f.Message == "" || (f.Severity != OK) != (f.Fix != "") {
			t.Errorf("finding %+v: needs a Message, and a Fix exactly when it is a problem", f)
		}
		if !strings.HasPrefix(f.Code, check+"-") {
			t.Errorf("finding %+v: code not prefixed by %q", f, check)
		}
		have[f.Code] = true
		have[f.Code+"@"+f.Subject] = true
	}
	for _, w := range c.want {
		if !have[w] {
			t.Errorf("no finding %s; got:\n%s", w, dumpFindings(fs))
		}
	}
	for _, n := range c.never {
		if have[n] {
			t.Errorf("unexpected finding %s; got:\n%s", n, dumpFindings(fs))
		}
	}
}

func dumpFindings(fs []Finding) string {
	var b strings.Builder
	for _, f := range fs {
		fmt.Fprintf(&b, "  %s %s [%s] %s | %s\n", f.Severity, f.Code, f.Subject, f.Message, f.Fix)
	}
	return b.String()
}

func TestDomainCheck(t *testing.T) {
	w := newChecksWorld(t)
	cases := []struct {
		checkCase
		ok bool
	}{
		{checkCase{name: "zone apex", domain: "good.test", want: []string{"domain-exists"}}, true},
		{checkCase{name: "name inside a zone (NODATA)", domain: "sub.good.test", want: []string{"domain-exists"}}, true},
		{checkCase{name: "NXDOMAIN", domain: "nx.good.test", want: []string{"domain-not-found"}}, false},
		{checkCase{name: "IPv4 address", domain: "192.0.2.1", want: []string{"domain-invalid"}}, false},
		{checkCase{name: "IPv6 address", domain: "2001:db8::1", want: []string{"domain-invalid"}}, false},
		{checkCase{name: "space", domain: "bad name.test", want: []string{"domain-invalid"}}, false},
		{checkCase{name: "empty label", domain: "a..test", want: []string{"domain-invalid"}}, false},
		{checkCase{name: "single label", domain: "test", want: []string{"domain-invalid"}}, false},
		{checkCase{name: "empty", domain: "", want: []string{"domain-invalid"}}, false},
		{checkCase{name: "too long", domain: strings.Repeat("a.", 130) + "test", want: []string{"domain-invalid"}}, false},
		{checkCase{name: "control bytes", domain: "a\x00b.test", want: []string{"domain-invalid"}}, false},
		{checkCase{name: "timeout goes on", domain: "good.test", drop: []string{"good.test"},
			want: []string{"domain-dns-error"}, never: []string{"domain-not-found", "domain-exists"}}, true},
		{checkCase{name: "SERVFAIL goes on", domain: "sub.good.test", fail: []string{"sub.good.test"},
			want: []string{"domain-dns-error"}, never: []string{"domain-not-found", "domain-exists"}}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.setUp(t, w)
			fs, ok := checkDomain(context.Background(), w.env(c.domain, Options{}))
			if ok != c.ok {
				t.Errorf("ok = %v, want %v", ok, c.ok)
			}
			checkCodes(t, CheckDomain, fs, c.checkCase)
			for _, f := range fs {
				if strings.ContainsAny(f.Message, "\x00") {
					t.Errorf("control byte in message %q", f.Message)
				}
			}
		})
	}
}

func TestDMARCCheck(t *testing.T) {
	w := newChecksWorld(t)
	cases := []checkCase{
		{name: "enforced", domain: "dmarc-ok.test",
			want:  []string{"dmarc-record", "dmarc-enforced", "dmarc-alignment", "dmarc-rua-ok@mailto:dmarc@dmarc-ok.test"},
			never: []string{"dmarc-monitoring-only", "dmarc-no-rua", "dmarc-inherited"}},
		{name: "inherited from the parent", domain: "child.dmarc-ok.test",
			want: []string{"dmarc-inherited", "dmarc-enforced"}, never: []string{"dmarc-missing"}},
		{name: "several records", domain: "dmarc-multi.test", want: []string{"dmarc-multiple"}},
		{name: "duplicate tag", domain: "dmarc-syntax.test", want: []string{"dmarc-syntax"}},
		{name: "none anywhere", domain: "dmarc-none.test", want: []string{"dmarc-missing"}},
		{name: "weak", domain: "dmarc-weak.test",
			want: []string{"dmarc-monitoring-only", "dmarc-testing", "dmarc-pct-obsolete", "dmarc-no-rua", "dmarc-alignment", "dmarc-tag-ignored"}},
		{name: "psd=y outside a public suffix", domain: "dmarc-psd.test", want: []string{"dmarc-psd-not-suffix"}},
		{name: "report destinations", domain: "dmarc-rua.test",
			want: []string{"dmarc-rua-unauthorized@mailto:a@reports.example", "dmarc-rua-not-mailto@https://r.example/x",
				"dmarc-ruf-ok@mailto:f@auth.example", "dmarc-ruf-unauthorized@mailto:g@noauth.example",
				"dmarc-ruf-unauthorized@mailto:h@redirect.example"},
			never: []string{"dmarc-no-rua"}},
		{name: "authorization lookup times out", domain: "dmarc-authdrop.test",
			drop:  []string{"dmarc-authdrop.test._report._dmarc.slow.example"},
			fail:  []string{"dmarc-authdrop.test._report._dmarc.bad.example"},
			want:  []string{"dmarc-dns-error@mailto:a@slow.example", "dmarc-dns-error@mailto:b@bad.example"},
			never: []string{"dmarc-rua-unauthorized", "dmarc-ruf-unauthorized"}},
		{name: "policy lookup times out", domain: "dmarc-drop.test", drop: []string{"_dmarc.dmarc-drop.test"},
			want: []string{"dmarc-dns-error"}, never: []string{"dmarc-missing"}},
		{name: "policy lookup SERVFAIL", domain: "dmarc-fail.test", fail: []string{"_dmarc.dmarc-fail.test"},
			want: []string{"dmarc-dns-error"}, never: []string{"dmarc-missing"}},
		{name: "tree walk SERVFAIL above the domain", domain: "child.dmarc-ok.test", fail: []string{"_dmarc.dmarc-ok.test"},
			want: []string{"dmarc-dns-error"}, never: []string{"dmarc-missing", "dmarc-inherited"}},
		{name: "from a Public Suffix Domain", domain: "org.psdzone.test",
			want: []string{"dmarc-inherited", "dmarc-enforced"}, never: []string{"dmarc-psd-not-suffix", "dmarc-missing"}},
		{name: "many destinations are cut", domain: "dmarc-many.test", want: []string{"dmarc-rua-too-many"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.setUp(t, w)
			rep, fs := checkDMARC(context.Background(), w.env(c.domain, Options{}))
			checkCodes(t, CheckDMARC, fs, c)
			if rep != nil && len(rep.RUA) > maxDMARCDestinations {
				t.Errorf("%d rua destinations checked, limit %d", len(rep.RUA), maxDMARCDestinations)
			}
		})
	}
}

func TestDMARCReport(t *testing.T) {
	w := newChecksWorld(t)
	rep, _ := checkDMARC(context.Background(), w.env("child.dmarc-ok.test", Options{}))
	if !rep.HasPolicy() || !rep.Inherited || rep.PolicyDomain != "dmarc-ok.test" || rep.P != "quarantine" || rep.SP != "quarantine" || rep.NP != "quarantine" {
		t.Errorf("inherited report = %+v", rep)
	}
	if !strings.HasPrefix(rep.Record, "v=DMARC1; p=reject") {
		t.Errorf("Record = %q", rep.Record)
	}
	rep, _ = checkDMARC(context.Background(), w.env("dmarc-rua.test", Options{}))
	want := []DMARCDestination{{Address: "mailto:f@auth.example", External: true, Authorized: true}, {Address: "mailto:g@noauth.example", External: true},
		{Address: "mailto:h@redirect.example", External: true}}
	if !slices.Equal(rep.RUF, want) {
		t.Errorf("RUF = %+v, want %+v", rep.RUF, want)
	}
	var nilRep *DMARCReport
	if nilRep.HasPolicy() {
		t.Error("nil report has a policy")
	}
}

func TestDKIMCheck(t *testing.T) {
	w := newChecksWorld(t)
	sel := func(s ...string) Options { return Options{Selectors: s} }
	cases := []checkCase{
		{name: "rsa 2048", opt: sel("good"), want: []string{"dkim-selector-ok@good"}, never: []string{"dkim-key-weak"}},
		{name: "ed25519", opt: sel("ed"), want: []string{"dkim-selector-ok@ed"}},
		{name: "rsa 1024", opt: sel("weak"), want: []string{"dkim-key-weak@weak", "dkim-selector-ok@weak"}},
		{name: "rsa 512", opt: sel("tiny"), want: []string{"dkim-key-too-small@tiny"}, never: []string{"dkim-selector-ok"}},
		{name: "revoked", opt: sel("revoked"), want: []string{"dkim-revoked@revoked"}},
		{name: "testing", opt: sel("testing"), want: []string{"dkim-testing@testing"}},
		{name: "h=sha1", opt: sel("sha1"), want: []string{"dkim-hash-excludes-sha256@sha1"}},
		{name: "k=dsa", opt: sel("dsa"), want: []string{"dkim-unknown-key-type@dsa"}},
		{name: "wildcard SPF", opt: sel("wild"), want: []string{"dkim-syntax@wild"}},
		{name: "bad p", opt: sel("badp"), want: []string{"dkim-syntax@badp"}},
		{name: "two records", opt: sel("multi"), want: []string{"dkim-multiple@multi"}},
		{name: "missing", opt: sel("missing"), want: []string{"dkim-selector-missing@missing"}},
		{name: "invalid selector", opt: sel("bad sel"), want: []string{"dkim-selector-invalid@bad sel"}},
		{name: "over-long selector", opt: sel(strings.Repeat("a", 63) + "." + strings.Repeat("b", 63) + "." + strings.Repeat("c", 63) + "." + strings.Repeat("d", 50)),
			want: []string{"dkim-selector-invalid"}},
		{name: "none", want: []string{"dkim-no-selectors"}},
		{name: "timeout", opt: sel("good"), drop: []string{"good._domainkey.dkim.test"},
			want: []string{"dkim-dns-error@good"}, never: []string{"dkim-selector-missing"}},
		{name: "SERVFAIL", opt: sel("good"), fail: []string{"good._domainkey.dkim.test"},
			want: []string{"dkim-dns-error@good"}, never: []string{"dkim-selector-missing"}},
		{name: "own keys", opt: Options{Selectors: []string{"good"}, OwnKeys: func(d string) []OwnKey {
			if d != "dkim.test" {
				return nil
			}
			return []OwnKey{
				{Selector: "good", Algorithm: "rsa", Bits: 2048, State: "published", Active: true},
				{Selector: "missing", Algorithm: "rsa", Bits: 2048, State: "missing", Active: true, Detail: "no TXT record"},
			}
		}}, want: []string{"dkim-own-key-published@good", "dkim-own-key-unpublished@missing", "dkim-selector-missing@missing"}},
		{name: "own key revoked while active", opt: Options{OwnKeys: func(string) []OwnKey {
			return []OwnKey{{Selector: "revoked", Algorithm: "rsa", State: "revoked", Active: true}}
		}}, want: []string{"dkim-own-key-unpublished@revoked", "dkim-revoked@revoked"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.setUp(t, w)
			_, fs := checkDKIM(context.Background(), w.env("dkim.test", c.opt))
			checkCodes(t, CheckDKIM, fs, c)
		})
	}
}

func TestDKIMReport(t *testing.T) {
	w := newChecksWorld(t)
	rep, _ := checkDKIM(context.Background(), w.env("dkim.test", Options{Selectors: []string{"weak", "good", "ed", "good", "GOOD"}}))
	var got []string
	for _, s := range rep.Selectors {
		got = append(got, fmt.Sprintf("%s %s %d", s.Selector, s.KeyType, s.Bits))
	}
	want := []string{"ed ed25519 256", "good rsa 2048", "weak rsa 1024"}
	if !slices.Equal(got, want) {
		t.Errorf("selectors = %q, want %q (deduplicated, sorted)", got, want)
	}
}

// TestDKIMSelectorLimit attacks the number of selectors: a long list costs
// at most maxDKIMSelectors lookups.
func TestDKIMSelectorLimit(t *testing.T) {
	w := newChecksWorld(t)
	var sels []string
	for i := range 200 {
		sels = append(sels, fmt.Sprintf("s%03d", i))
	}
	rep, fs := checkDKIM(context.Background(), w.env("dkim.test", Options{Selectors: sels}))
	if len(rep.Selectors) != maxDKIMSelectors {
		t.Errorf("%d selectors checked, want %d", len(rep.Selectors), maxDKIMSelectors)
	}
	checkCodes(t, CheckDKIM, fs, checkCase{want: []string{"dkim-too-many-selectors"}})
}

func TestHostsCheck(t *testing.T) {
	w := newChecksWorld(t)
	ip := func(s string) Options { return Options{IPs: []netip.Addr{netip.MustParseAddr(s)}} }
	cases := []checkCase{
		{name: "confirmed", opt: ip("192.0.2.10"), want: []string{"hosts-fcrdns@192.0.2.10"},
			never: []string{"hosts-dmarc-needs-dkim"}},
		{name: "confirmed IPv6", opt: ip("2001:db8::10"), want: []string{"hosts-fcrdns@2001:db8::10"}},
		{name: "IPv4-mapped", opt: ip("::ffff:192.0.2.10"), want: []string{"hosts-fcrdns@192.0.2.10"}},
		{name: "no PTR", opt: ip("192.0.2.13"), want: []string{"hosts-no-ptr@192.0.2.13", "hosts-dmarc-needs-dkim@192.0.2.13"}},
		{name: "PTR name without address", opt: ip("192.0.2.11"), want: []string{"hosts-not-fcrdns@192.0.2.11"}},
		{name: "PTR name elsewhere", opt: ip("192.0.2.12"), want: []string{"hosts-not-fcrdns@192.0.2.12", "hosts-dmarc-needs-dkim@192.0.2.12"}},
		// A PTR name that is an address would "confirm" itself (the resolver
		// returns a literal without asking); inbound iprev calls it a
		// permerror, and so must doctor.
		{name: "PTR name that is an address", opt: ip("192.0.2.16"), want: []string{"hosts-not-fcrdns@192.0.2.16"},
			never: []string{"hosts-fcrdns"}},
		{name: "PTR timeout", opt: ip("192.0.2.14"), drop: []string{"14.2.0.192.in-addr.arpa"},
			want: []string{"hosts-dns-error@192.0.2.14"}, never: []string{"hosts-no-ptr"}},
		{name: "PTR SERVFAIL", opt: ip("192.0.2.15"), fail: []string{"15.2.0.192.in-addr.arpa"},
			want: []string{"hosts-dns-error@192.0.2.15"}, never: []string{"hosts-no-ptr"}},
		{name: "forward timeout", opt: ip("192.0.2.12"), drop: []string{"other.hosts.test"},
			want: []string{"hosts-dns-error@192.0.2.12"}, never: []string{"hosts-not-fcrdns"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.setUp(t, w)
			e := w.env("hosts.test", c.opt)
			spf, _ := checkSPF(context.Background(), e)
			_, fs := checkHosts(context.Background(), e, spf, nil)
			checkCodes(t, CheckHosts, fs, c)
		})
	}
}

func TestHostsReport(t *testing.T) {
	w := newChecksWorld(t)
	e := w.env("hosts.test", Options{IPs: []netip.Addr{netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("192.0.2.12")}})
	for _, withSPF := range []bool{true, false} {
		var spf *SPFReport
		if withSPF {
			spf, _ = checkSPF(context.Background(), e)
		}
		reps, _ := checkHosts(context.Background(), e, spf, nil)
		if len(reps) != 2 {
			t.Fatalf("%d host reports, want 2", len(reps))
		}
		pass, fail := reps[0], reps[1]
		if !pass.FCrDNS || !slices.Equal(pass.PTR, []string{"mail.hosts.test"}) || pass.SPFResult != "pass" ||
			pass.DMARCResult != "pass" || pass.DMARCPolicy != "reject" || pass.DMARCDisposition != "none" {
			t.Errorf("with SPF report %v: passing host = %+v", withSPF, pass)
		}
		if fail.FCrDNS || fail.SPFResult != "fail" || fail.DMARCResult != "fail" || fail.DMARCDisposition != "reject" {
			t.Errorf("with SPF report %v: failing host = %+v", withSPF, fail)
		}
	}
}

// TestHostsPTRLimit attacks the number of PTR names: at most policy.IPRevMaxNames
// are kept and forward-checked.
func TestHostsPTRLimit(t *testing.T) {
	w := newChecksWorld(t)
	e := w.env("hosts.test", Options{IPs: []netip.Addr{netip.MustParseAddr("192.0.2.20")}})
	reps, fs := checkHosts(context.Background(), e, nil, nil)
	if len(reps) != 1 || len(reps[0].PTR) != policy.IPRevMaxNames {
		t.Errorf("host reports = %+v, want one with %d PTR names", reps, policy.IPRevMaxNames)
	}
	checkCodes(t, CheckHosts, fs, checkCase{want: []string{"hosts-not-fcrdns@192.0.2.20"}})
}

func TestMXCheck(t *testing.T) {
	w := newChecksWorld(t)
	cases := []checkCase{
		{name: "hosts", domain: "mx.test", want: []string{"mx-host-ok@mx1.mx.test", "mx-host-cname@alias.mx.test",
			"mx-host-unresolvable@gone.mx.test", "mx-host-ip-literal@192.0.2.5"}},
		{name: "null MX", domain: "nullmx.test", want: []string{"mx-null"}, never: []string{"mx-missing"}},
		{name: "null MX with others", domain: "nullmix.test", want: []string{"mx-null-mixed", "mx-host-ok@mx1.mx.test"}},
		{name: "no MX", domain: "nomx.test", want: []string{"mx-missing"}},
		{name: "MX timeout", domain: "nomx.test", drop: []string{"nomx.test"}, want: []string{"mx-dns-error"}, never: []string{"mx-missing"}},
		{name: "MX SERVFAIL", domain: "nullmx.test", fail: []string{"nullmx.test"}, want: []string{"mx-dns-error"}, never: []string{"mx-missing", "mx-null"}},
		{name: "host timeout", domain: "mxhostdrop.test", drop: []string{"slow.mxhostdrop.test"},
			want: []string{"mx-dns-error@slow.mxhostdrop.test"}, never: []string{"mx-host-unresolvable"}},
		{name: "host SERVFAIL", domain: "mxhostdrop.test", fail: []string{"slow.mxhostdrop.test"},
			want: []string{"mx-dns-error@slow.mxhostdrop.test"}, never: []string{"mx-host-unresolvable"}},
		{name: "many MX", domain: "mxmany.test", want: []string{"mx-too-many"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.setUp(t, w)
			rep, fs := checkMX(context.Background(), w.env(c.domain, Options{}))
			checkCodes(t, CheckMX, fs, c)
			if rep != nil && len(rep.Hosts) > maxMXHosts {
				t.Errorf("%d MX hosts checked, limit %d", len(rep.Hosts), maxMXHosts)
			}
		})
	}
}

func TestMTASTSCheck(t *testing.T) {
	w := newChecksWorld(t)
	cases := []checkCase{
		{name: "valid", domain: "sts-ok.test", want: []string{"mta-sts-ok"}},
		{name: "id with hyphens", domain: "sts-bad.test", want: []string{"mta-sts-syntax"}},
		{name: "no id", domain: "sts-noid.test", want: []string{"mta-sts-syntax"}},
		{name: "id of 33 characters", domain: "sts-longid.test", want: []string{"mta-sts-syntax"}},
		{name: "several", domain: "sts-multi.test", want: []string{"mta-sts-multiple"}},
		{name: "absent", domain: "sts-none.test", want: []string{"mta-sts-absent"}},
		{name: "timeout", domain: "sts-drop.test", drop: []string{"_mta-sts.sts-drop.test"}, want: []string{"mta-sts-dns-error"}, never: []string{"mta-sts-absent"}},
		{name: "SERVFAIL", domain: "sts-fail.test", fail: []string{"_mta-sts.sts-fail.test"}, want: []string{"mta-sts-dns-error"}, never: []string{"mta-sts-absent"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.setUp(t, w)
			_, fs := checkMTASTS(context.Background(), w.env(c.domain, Options{}))
			checkCodes(t, CheckMTASTS, fs, c)
		})
	}
}

func TestTLSRPTCheck(t *testing.T) {
	w := newChecksWorld(t)
	cases := []checkCase{
		{name: "valid", domain: "sts-ok.test", want: []string{"tls-rpt-ok"}},
		{name: "ftp URI", domain: "sts-bad.test", want: []string{"tls-rpt-syntax"}},
		{name: "no rua", domain: "sts-noid.test", want: []string{"tls-rpt-syntax"}},
		{name: "mailto without address", domain: "sts-longid.test", want: []string{"tls-rpt-syntax"}},
		{name: "several", domain: "sts-multi.test", want: []string{"tls-rpt-multiple"}},
		{name: "absent", domain: "sts-none.test", want: []string{"tls-rpt-absent"}},
		{name: "timeout", domain: "sts-drop.test", drop: []string{"_smtp._tls.sts-drop.test"}, want: []string{"tls-rpt-dns-error"}, never: []string{"tls-rpt-absent"}},
		{name: "SERVFAIL", domain: "sts-fail.test", fail: []string{"_smtp._tls.sts-fail.test"}, want: []string{"tls-rpt-dns-error"}, never: []string{"tls-rpt-absent"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.setUp(t, w)
			_, fs := checkTLSRPT(context.Background(), w.env(c.domain, Options{}))
			checkCodes(t, CheckTLSRPT, fs, c)
		})
	}
	rep, _ := checkTLSRPT(context.Background(), w.env("sts-ok.test", Options{}))
	if want := []string{"mailto:tls@sts-ok.test", "https://reports.example/tlsrpt"}; !slices.Equal(rep.RUA, want) {
		t.Errorf("RUA = %q, want %q", rep.RUA, want)
	}
}
