package dmarc

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// evalZone is the DNS shared by the Evaluate table tests.
var evalZone = []string{
	"_dmarc.example.com TXT v=DMARC1; p=reject; rua=mailto:d@example.com",
	"_dmarc.strict.example TXT v=DMARC1; p=reject; adkim=s; aspf=s",
	"_dmarc.sp.example TXT v=DMARC1; p=reject; sp=none",
	"_dmarc.np.example TXT v=DMARC1; p=none; sp=quarantine; np=reject",
	"ghost.np.example NXDOMAIN",
	"gone.np.example NXDOMAIN",
	"live.np.example A",
	"slow.np.example EXISTS-TIMEOUT",
	"_dmarc.test.example TXT v=DMARC1; p=reject; t=y",
	"_dmarc.testq.example TXT v=DMARC1; p=quarantine; t=y",
	"_dmarc.pct0.example TXT v=DMARC1; p=reject; pct=0",
	"_dmarc.pct50.example TXT v=DMARC1; p=reject; pct=50",
	"_dmarc.pct0tn.example TXT v=DMARC1; p=reject; pct=0; t=n",
	"_dmarc.dept.corp.example TXT v=DMARC1; p=quarantine; psd=n",
	"_dmarc.corp.example TXT v=DMARC1; p=reject",
	"_dmarc.bank.example TXT v=DMARC1; p=reject; sp=quarantine; np=reject; psd=y",
	"_dmarc.giant.bank.example TXT v=DMARC1; p=reject",
	"ghost.bank.example NXDOMAIN",
	"_dmarc.dup.example TXT v=DMARC1; p=reject",
	"_dmarc.dup.example TXT v=DMARC1; p=none",
	"_dmarc.invalid.example TXT v=DMARC1; p=bogus",
	"_dmarc.invalidrua.example TXT v=DMARC1; p=bogus; rua=mailto:a@invalidrua.example",
	"_dmarc.duptag.example TXT v=DMARC1; p=reject; p=none",
	"_dmarc.tmo.example TIMEOUT",
	"_dmarc.sub.tmoparent.example TXT v=DMARC1; p=reject",
	"_dmarc.tmoparent.example TIMEOUT",
	"_dmarc.strict.tmoparent.example TXT v=DMARC1; p=reject; adkim=s; aspf=s",
	"_dmarc.tmoid.example.com TIMEOUT",
	"_dmarc.example.co.uk TXT v=DMARC1; p=quarantine",
	"_dmarc.co.uk TXT v=DMARC1; p=reject; psd=y",
	"_dmarc.xn--bcher-kva.example TXT v=DMARC1; p=reject",
	"_dmarc.deep.example TXT v=DMARC1; p=reject",
}

func TestEvaluate(t *testing.T) {
	type want struct {
		outcome, policy, disposition string
		testing, dkim, spf           bool
		policyDomain, org            string
	}
	spf := func(result, domain string) Input { return Input{SPFResult: result, SPFDomain: domain} }
	dkim := func(in Input, pass bool, domains ...string) Input {
		for _, d := range domains {
			in.DKIM = append(in.DKIM, DKIMResult{Domain: d, Pass: pass})
		}
		return in
	}
	tests := []struct {
		name     string
		from     string
		in       Input
		mode     Mode
		resolver string // "", "exists" or "host"
		want     want
		reason   string // substring of Reason, if set
		queries  string // substring of the joined queries, or "!name" for a name that must not be queried
	}{
		// Alignment.
		{name: "dkim exact", from: "example.com", in: dkim(Input{}, true, "example.com"),
			want: want{outcome: "pass", policy: "reject", disposition: "none", dkim: true, policyDomain: "example.com", org: "example.com"}},
		{name: "dkim relaxed child", from: "example.com", in: dkim(Input{}, true, "mail.example.com"),
			want: want{outcome: "pass", policy: "reject", disposition: "none", dkim: true, policyDomain: "example.com", org: "example.com"}},
		{name: "dkim relaxed parent", from: "news.example.com", in: dkim(Input{}, true, "example.com"),
			want: want{outcome: "pass", policy: "reject", disposition: "none", dkim: true, policyDomain: "example.com", org: "example.com"}},
		{name: "dkim relaxed sibling", from: "news.example.com", in: dkim(Input{}, true, "mail.example.com"),
			want: want{outcome: "pass", policy: "reject", disposition: "none", dkim: true, policyDomain: "example.com", org: "example.com"}},
		{name: "dkim strict exact", from: "strict.example", in: dkim(Input{}, true, "STRICT.example"),
			want: want{outcome: "pass", policy: "reject", disposition: "none", dkim: true, policyDomain: "strict.example", org: "strict.example"}},
		{name: "dkim strict child fails", from: "strict.example", in: dkim(Input{}, true, "mail.strict.example"),
			want: want{outcome: "fail", policy: "reject", disposition: "reject", policyDomain: "strict.example", org: "strict.example"}},
		{name: "dkim failed signature ignored", from: "example.com", in: dkim(Input{}, false, "example.com"),
			want: want{outcome: "fail", policy: "reject", disposition: "reject", policyDomain: "example.com", org: "example.com"}},
		{name: "dkim unrelated domain, no lookups", from: "example.com", in: dkim(Input{}, true, "evil.example.net", "example.com.evil.example"),
			want:    want{outcome: "fail", policy: "reject", disposition: "reject", policyDomain: "example.com", org: "example.com"},
			queries: "!_dmarc.evil.example.net"},
		{name: "dkim second signature aligned", from: "example.com", in: dkim(Input{}, true, "esp.example.net", "example.com"),
			want: want{outcome: "pass", policy: "reject", disposition: "none", dkim: true, policyDomain: "example.com", org: "example.com"}},
		{name: "spf relaxed", from: "example.com", in: spf("pass", "bounce.example.com"),
			want: want{outcome: "pass", policy: "reject", disposition: "none", spf: true, policyDomain: "example.com", org: "example.com"}},
		{name: "spf result case-insensitive", from: "example.com", in: spf("Pass", "example.com"),
			want: want{outcome: "pass", policy: "reject", disposition: "none", spf: true, policyDomain: "example.com", org: "example.com"}},
		{name: "spf strict exact", from: "strict.example", in: spf("pass", "strict.example"),
			want: want{outcome: "pass", policy: "reject", disposition: "none", spf: true, policyDomain: "strict.example", org: "strict.example"}},
		{name: "spf strict child fails", from: "strict.example", in: spf("pass", "bounce.strict.example"),
			want: want{outcome: "fail", policy: "reject", disposition: "reject", policyDomain: "strict.example", org: "strict.example"}},
		{name: "spf softfail not counted", from: "example.com", in: spf("softfail", "example.com"),
			want: want{outcome: "fail", policy: "reject", disposition: "reject", policyDomain: "example.com", org: "example.com"}},
		{name: "spf pass unaligned", from: "example.com", in: spf("pass", "esp.example.net"),
			want: want{outcome: "fail", policy: "reject", disposition: "reject", policyDomain: "example.com", org: "example.com"}, reason: "SPF esp.example.net not aligned"},
		{name: "both aligned", from: "example.com", in: dkim(spf("pass", "example.com"), true, "example.com"),
			want: want{outcome: "pass", policy: "reject", disposition: "none", dkim: true, spf: true, policyDomain: "example.com", org: "example.com"}},
		{name: "nothing at all", from: "example.com", in: Input{},
			want: want{outcome: "fail", policy: "reject", disposition: "reject", policyDomain: "example.com", org: "example.com"}, reason: "no passing SPF or DKIM"},
		{name: "psd=n separates departments", from: "a.dept.corp.example", in: dkim(Input{}, true, "corp.example"),
			want: want{outcome: "fail", policy: "quarantine", disposition: "quarantine", policyDomain: "dept.corp.example", org: "dept.corp.example"}},
		{name: "psd=n dept aligned inside", from: "a.dept.corp.example", in: dkim(Input{}, true, "b.dept.corp.example"),
			want: want{outcome: "pass", policy: "quarantine", disposition: "none", dkim: true, policyDomain: "dept.corp.example", org: "dept.corp.example"}},
		{name: "RFC 9989 B.4.3 psd=y", from: "giant.bank.example", in: dkim(spf("pass", "mail.giant.bank.example"), true, "mail.mega.bank.example"),
			want: want{outcome: "pass", policy: "reject", disposition: "none", spf: true, policyDomain: "giant.bank.example", org: "giant.bank.example"}},
		{name: "psd=y sibling registrations do not align", from: "giant.bank.example", in: dkim(Input{}, true, "mega.bank.example"),
			want: want{outcome: "fail", policy: "reject", disposition: "reject", policyDomain: "giant.bank.example", org: "giant.bank.example"}},
		{name: "PSD policy sp for existing domain", from: "newco.bank.example", in: Input{}, resolver: "exists",
			want: want{outcome: "fail", policy: "quarantine", disposition: "quarantine", policyDomain: "bank.example", org: "newco.bank.example"}},
		{name: "PSD policy np for non-existent domain", from: "ghost.bank.example", in: Input{}, resolver: "exists",
			want: want{outcome: "fail", policy: "reject", disposition: "reject", policyDomain: "bank.example", org: "ghost.bank.example"}},

		// Subdomain policies.
		{name: "sp for subdomain", from: "mail.sp.example", in: Input{},
			want: want{outcome: "fail", policy: "none", disposition: "none", policyDomain: "sp.example", org: "sp.example"}},
		{name: "p for the org domain itself", from: "sp.example", in: Input{},
			want: want{outcome: "fail", policy: "reject", disposition: "reject", policyDomain: "sp.example", org: "sp.example"}},
		{name: "np for non-existent subdomain", from: "ghost.np.example", in: Input{}, resolver: "exists",
			want: want{outcome: "fail", policy: "reject", disposition: "reject", policyDomain: "np.example", org: "np.example"}, reason: "does not exist"},
		{name: "sp for existing subdomain", from: "live.np.example", in: Input{}, resolver: "exists",
			want: want{outcome: "fail", policy: "quarantine", disposition: "quarantine", policyDomain: "np.example", org: "np.example"}},
		{name: "np via A/AAAA/MX fallback", from: "gone.np.example", in: Input{}, resolver: "host",
			want: want{outcome: "fail", policy: "reject", disposition: "reject", policyDomain: "np.example", org: "np.example"}},
		{name: "sp via A/AAAA/MX fallback", from: "live.np.example", in: Input{}, resolver: "host",
			want: want{outcome: "fail", policy: "quarantine", disposition: "quarantine", policyDomain: "np.example", org: "np.example"}},
		{name: "np unknown without existence resolver", from: "ghost.np.example", in: Input{},
			want: want{outcome: "fail", policy: "quarantine", disposition: "quarantine", policyDomain: "np.example", org: "np.example"}, reason: "np not applied"},
		{name: "np not checked on pass", from: "ghost.np.example", in: dkim(Input{}, true, "np.example"), resolver: "exists",
			want: want{outcome: "pass", policy: "quarantine", disposition: "none", dkim: true, policyDomain: "np.example", org: "np.example"}},
		{name: "existence check timeout", from: "slow.np.example", in: Input{}, resolver: "exists",
			want: want{outcome: "temperror", policyDomain: "np.example", org: "np.example", disposition: "none"}},
		{name: "existence fallback timeout", from: "slow.np.example", in: Input{}, resolver: "host",
			want: want{outcome: "temperror", policyDomain: "np.example", org: "np.example", disposition: "none"}},

		// Testing.
		{name: "t=y reject becomes quarantine", from: "test.example", in: Input{},
			want: want{outcome: "fail", policy: "reject", disposition: "quarantine", testing: true, policyDomain: "test.example", org: "test.example"}},
		{name: "t=y quarantine becomes none", from: "testq.example", in: Input{},
			want: want{outcome: "fail", policy: "quarantine", disposition: "none", testing: true, policyDomain: "testq.example", org: "testq.example"}},
		{name: "t=y pass", from: "test.example", in: dkim(Input{}, true, "test.example"),
			want: want{outcome: "pass", policy: "reject", disposition: "none", testing: true, dkim: true, policyDomain: "test.example", org: "test.example"}},
		{name: "legacy pct=0 is testing", from: "pct0.example", in: Input{},
			want: want{outcome: "fail", policy: "reject", disposition: "quarantine", testing: true, policyDomain: "pct0.example", org: "pct0.example"}},
		{name: "legacy pct=50 ignored", from: "pct50.example", in: Input{},
			want: want{outcome: "fail", policy: "reject", disposition: "reject", policyDomain: "pct50.example", org: "pct50.example"}},
		{name: "explicit t=n beats pct=0", from: "pct0tn.example", in: Input{},
			want: want{outcome: "fail", policy: "reject", disposition: "reject", policyDomain: "pct0tn.example", org: "pct0tn.example"}},

		// No record, bad records.
		{name: "no record", from: "nothing.example", in: dkim(Input{}, true, "nothing.example"),
			want: want{outcome: "none", disposition: "none"}},
		{name: "duplicate records are none", from: "dup.example", in: Input{},
			want: want{outcome: "none", disposition: "none"}},
		{name: "invalid p", from: "invalid.example", in: Input{},
			want: want{outcome: "permerror", disposition: "none", policyDomain: "invalid.example"}},
		{name: "invalid p with rua is p=none", from: "invalidrua.example", in: Input{},
			want: want{outcome: "fail", policy: "none", disposition: "none", policyDomain: "invalidrua.example", org: "invalidrua.example"}},
		{name: "duplicate tag", from: "duptag.example", in: Input{},
			want: want{outcome: "permerror", disposition: "none", policyDomain: "duptag.example"}},
		{name: "unusable From", from: "exa mple.com", in: Input{},
			want: want{outcome: "permerror", disposition: "none"}},
		{name: "empty From", from: "", in: Input{},
			want: want{outcome: "permerror", disposition: "none"}},

		// Temporary errors at each stage.
		{name: "timeout at author", from: "tmo.example", in: dkim(Input{}, true, "tmo.example"),
			want: want{outcome: "temperror", disposition: "none"}},
		{name: "timeout in walk above author", from: "a.tmo.example", in: Input{},
			want: want{outcome: "temperror", disposition: "none"}},
		{name: "timeout above author, relaxed needs org", from: "sub.tmoparent.example", in: dkim(Input{}, true, "x.sub.tmoparent.example"),
			want: want{outcome: "temperror", policy: "reject", disposition: "none", policyDomain: "sub.tmoparent.example"}},
		{name: "timeout above author, exact match still passes", from: "sub.tmoparent.example", in: dkim(Input{}, true, "sub.tmoparent.example"),
			want: want{outcome: "pass", policy: "reject", disposition: "none", dkim: true, policyDomain: "sub.tmoparent.example"}},
		{name: "timeout above author, strict fails", from: "strict.tmoparent.example", in: dkim(Input{}, true, "x.strict.tmoparent.example"),
			want: want{outcome: "fail", policy: "reject", disposition: "reject", policyDomain: "strict.tmoparent.example"}},
		{name: "timeout in identifier walk", from: "example.com", in: dkim(Input{}, true, "a.tmoid.example.com"),
			want: want{outcome: "temperror", policy: "reject", disposition: "none", policyDomain: "example.com", org: "example.com"}},
		{name: "timeout in identifier walk, other aligned", from: "example.com", in: dkim(spf("pass", "example.com"), true, "a.tmoid.example.com"),
			want: want{outcome: "pass", policy: "reject", disposition: "none", spf: true, policyDomain: "example.com", org: "example.com"}},

		// Names and modes.
		{name: "IDN author domain", from: "Bücher.example", in: dkim(Input{}, true, "xn--bcher-kva.example"),
			want: want{outcome: "pass", policy: "reject", disposition: "none", dkim: true, policyDomain: "xn--bcher-kva.example", org: "xn--bcher-kva.example"}},
		{name: "deep author domain", from: "a.b.c.d.e.f.g.h.i.j.deep.example", in: dkim(Input{}, true, "deep.example"),
			want: want{outcome: "pass", policy: "reject", disposition: "none", dkim: true, policyDomain: "deep.example", org: "deep.example"}},
		{name: "psl relaxed", mode: PSL, from: "mail.example.co.uk", in: dkim(Input{}, true, "other.example.co.uk"),
			want: want{outcome: "pass", policy: "quarantine", disposition: "none", dkim: true, policyDomain: "example.co.uk", org: "example.co.uk"}},
		{name: "psl public suffix author", mode: PSL, from: "co.uk", in: dkim(Input{}, true, "example.co.uk"),
			want: want{outcome: "fail", policy: "reject", disposition: "reject", policyDomain: "co.uk", org: "co.uk"}},
		{name: "tree walk same message", from: "mail.example.co.uk", in: dkim(Input{}, true, "other.example.co.uk"),
			want: want{outcome: "pass", policy: "quarantine", disposition: "none", dkim: true, policyDomain: "example.co.uk", org: "example.co.uk"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeDNS(evalZone...)
			var r TXTResolver = f
			switch tc.resolver {
			case "exists":
				r = existsFake{f}
			case "host":
				r = hostFake{f}
			}
			in := tc.in
			in.FromDomain = tc.from
			got := Evaluate(context.Background(), r, in, tc.mode)
			w := tc.want
			if got.Outcome != w.outcome || got.Policy != w.policy || got.Disposition != w.disposition ||
				got.Testing != w.testing || got.AlignedDKIM != w.dkim || got.AlignedSPF != w.spf ||
				got.PolicyDomain != w.policyDomain || got.OrgDomain != w.org {
				t.Errorf("Evaluate(%s)\n got outcome=%s policy=%s disp=%s testing=%v dkim=%v spf=%v pdom=%s org=%s (%s)\nwant outcome=%s policy=%s disp=%s testing=%v dkim=%v spf=%v pdom=%s org=%s",
					tc.from, got.Outcome, got.Policy, got.Disposition, got.Testing, got.AlignedDKIM, got.AlignedSPF, got.PolicyDomain, got.OrgDomain, got.Reason,
					w.outcome, w.policy, w.disposition, w.testing, w.dkim, w.spf, w.policyDomain, w.org)
			}
			if got.Reason == "" {
				t.Errorf("empty Reason")
			}
			if tc.reason != "" && !strings.Contains(got.Reason, tc.reason) {
				t.Errorf("Reason %q does not contain %q", got.Reason, tc.reason)
			}
			if (got.Outcome == OutcomeTempError) != errors.Is(got.Err, ErrTemporary) {
				t.Errorf("Outcome %s with Err %v", got.Outcome, got.Err)
			}
			if got.Outcome == OutcomePermError && got.Err == nil {
				t.Errorf("permerror without Err")
			}
			if q := tc.queries; q != "" {
				joined := " " + strings.Join(f.queries, " ") + " "
				if strings.HasPrefix(q, "!") {
					if strings.Contains(joined, " "+q[1:]+" ") {
						t.Errorf("queried %s: %v", q[1:], f.queries)
					}
				} else if !strings.Contains(joined, q) {
					t.Errorf("queries %v do not contain %s", f.queries, q)
				}
			}
			if len(f.queries) > 3*maxWalkQueries {
				t.Errorf("too many queries: %v", f.queries)
			}
		})
	}
}

// TestEvaluateCachesQueries checks that the walks of one message never ask
// the same name twice.
func TestEvaluateCachesQueries(t *testing.T) {
	f := newFakeDNS(evalZone...)
	in := Input{FromDomain: "news.example.com", SPFResult: "pass", SPFDomain: "bounce.example.com",
		DKIM: []DKIMResult{{Domain: "d1.example.com", Pass: false}, {Domain: "mail.example.com", Pass: true}}}
	got := Evaluate(context.Background(), f, in, TreeWalk)
	if got.Outcome != OutcomePass {
		t.Fatalf("outcome %s (%s)", got.Outcome, got.Reason)
	}
	seen := map[string]bool{}
	for _, q := range f.queries {
		if seen[q] {
			t.Errorf("%s queried twice: %v", q, f.queries)
		}
		seen[q] = true
	}
}
