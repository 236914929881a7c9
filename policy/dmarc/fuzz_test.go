package dmarc

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// FuzzParseRecord checks that ParseRecord never panics, returns only its
// sentinel errors, and returns records whose keyword fields hold only valid
// values.
func FuzzParseRecord(f *testing.F) {
	for _, s := range []string{
		"v=DMARC1", "v=DMARC1; p=reject", "v=DMARC1;p=none;sp=quarantine;np=reject;psd=y;t=y",
		"v=DMARC1; p=quarantine; adkim=s; aspf=r; rua=mailto:a@example.com!10m, https://r.example/x; ruf=mailto:f@example.com; fo=0:d:s",
		"v=DMARC1; p=bogus; rua=mailto:a@example.com", "v=DMARC1; p=none; p=reject", "v=DMARC1; pct=0",
		"v=spf1 -all", " V = DMARC1 ; P = REJECT ; ", "v=DMARC1; ;;; =; a=; =b; p=reject;", "v=DMARC1; rua=,,,",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, txt string) {
		rec, err := ParseRecord(txt)
		if err != nil {
			if rec != nil || !(errors.Is(err, ErrNotDMARC) || errors.Is(err, ErrSyntax) || errors.Is(err, ErrInvalidPolicy)) {
				t.Fatalf("ParseRecord(%q) = %v, %v", txt, rec, err)
			}
			return
		}
		valid := func(v string, allowed ...string) bool {
			for _, a := range allowed {
				if v == a {
					return true
				}
			}
			return false
		}
		pol := []string{PolicyNone, PolicyQuarantine, PolicyReject}
		if !valid(rec.P, pol...) || !valid(rec.SP, append(pol, "")...) || !valid(rec.NP, append(pol, "")...) ||
			!valid(rec.PSD, "y", "n", "u") || !valid(rec.T, "y", "n", "") || !valid(rec.ADKIM, "r", "s") ||
			!valid(rec.ASPF, "r", "s") || rec.PCT < -1 || rec.PCT > 100 || len(rec.FO) == 0 {
			t.Fatalf("ParseRecord(%q) = %+v", txt, rec)
		}
		for _, u := range append(append([]string(nil), rec.RUA...), rec.RUF...) {
			if u == "" || strings.ContainsAny(u, ";,") {
				t.Fatalf("ParseRecord(%q): bad URI %q", txt, u)
			}
		}
	})
}

// FuzzEvaluate runs Evaluate against a small zone built from the fuzzed
// records, checking that it never panics and that its result is coherent.
func FuzzEvaluate(f *testing.F) {
	f.Add("a.b.example.com", "v=DMARC1; p=reject", "v=DMARC1; p=none; psd=n", "example.com", "b.example.com")
	f.Add("x.bank.example", "", "v=DMARC1; p=reject; psd=y", "x.bank.example", "bank.example")
	f.Add("EXAMPLE.com.", "v=DMARC1; p=quarantine; t=y", "v=DMARC1; pct=0", "mail.example.com", "example.com")
	f.Fuzz(func(t *testing.T, from, txtFrom, txtParent, dkimDomain, spfDomain string) {
		zone := newFakeDNS()
		d := strings.ToLower(strings.TrimSuffix(from, "."))
		zone.txt["_dmarc."+d] = []string{txtFrom}
		if _, parent, ok := strings.Cut(d, "."); ok {
			zone.txt["_dmarc."+parent] = []string{txtParent}
		}
		in := Input{FromDomain: from, SPFResult: "pass", SPFDomain: spfDomain,
			DKIM: []DKIMResult{{Domain: dkimDomain, Pass: true}}}
		res := Evaluate(context.Background(), existsFake{zone}, in, TreeWalk)
		switch res.Outcome {
		case OutcomePass, OutcomeNone, OutcomeTempError, OutcomePermError:
			if res.Disposition != PolicyNone {
				t.Fatalf("%s with disposition %s", res.Outcome, res.Disposition)
			}
		case OutcomeFail:
			if res.Disposition == "" || res.Policy == "" {
				t.Fatalf("fail without policy: %+v", res)
			}
		default:
			t.Fatalf("outcome %q", res.Outcome)
		}
		if len(zone.queries) > 3*maxWalkQueries {
			t.Fatalf("%d queries", len(zone.queries))
		}
	})
}
