package reports

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzParseReports feeds arbitrary inputs to ParseReports, seeded by the
// received corpus: it must never panic, and whatever it accepts must be
// sane.
func FuzzParseReports(f *testing.F) {
	for _, dir := range []string{receivedGood, receivedMalformed} {
		entries, err := os.ReadDir(dir)
		if err != nil {
			f.Fatal(err)
		}
		for _, e := range entries {
			if strings.HasSuffix(e.Name(), ".want") {
				continue
			}
			data, err := os.ReadFile(filepath.Join(dir, e.Name()))
			if err != nil {
				f.Fatal(err)
			}
			f.Add(data)
		}
	}
	// Small limits keep each run fast and let the fuzzer reach them.
	lim := ImportLimits{MaxInputBytes: 1 << 20, MaxXMLBytes: 2 << 20, MaxZipEntries: 4, MaxRecords: 50, MaxDepth: 12}
	f.Fuzz(func(t *testing.T, data []byte) {
		out, err := ParseReports(bytes.NewReader(data), "fuzz", lim)
		if err != nil {
			if out != nil {
				t.Fatalf("refused input returned %d reports", len(out))
			}
			return
		}
		checkSaneFeedback(t, out, lim.withDefaults())
	})
}

// checkSaneFeedback fails t unless every accepted report keeps the
// promises of ParseReports.
func checkSaneFeedback(t *testing.T, out []*Feedback, lim ImportLimits) {
	t.Helper()
	if len(out) == 0 {
		t.Fatal("accepted an input without reports")
	}
	for _, f := range out {
		if f.OrgName == "" || f.ReportID == "" || f.Policy.Domain == "" {
			t.Errorf("required field empty: %+v", f)
		}
		if f.End.Before(f.Begin) || f.End.Sub(f.Begin) > maxRange {
			t.Errorf("range %s..%s", f.Begin, f.End)
		}
		if len(f.Rows) > lim.MaxRecords || len(f.Errors) > maxListItems {
			t.Errorf("%d rows, %d errors", len(f.Rows), len(f.Errors))
		}
		texts := []string{f.OrgName, f.Email, f.ExtraContactInfo, f.ReportID, f.Policy.Domain, f.Policy.P, f.Policy.SP, f.Policy.NP}
		texts = append(texts, f.Errors...)
		day := DayOf(f.Begin)
		for _, r := range f.Rows {
			if !r.SourceIP.IsValid() || r.SourceIP.Zone() != "" || r.SourceIP.Is4In6() {
				t.Errorf("source IP %v", r.SourceIP)
			}
			if r.Count < 0 || r.Count > maxCount {
				t.Errorf("count %d", r.Count)
			}
			if r.Domain != f.Policy.Domain || !r.Day.Equal(day) {
				t.Errorf("row domain %q day %s, report %q %s", r.Domain, r.Day, f.Policy.Domain, day)
			}
			if len(r.DKIM) > maxListItems || len(r.SPF) > maxListItems || len(r.Overrides) > maxListItems {
				t.Errorf("row lists too long")
			}
			texts = append(texts, r.HeaderFrom, r.EnvelopeFrom, r.EnvelopeTo, r.Disposition, r.DKIMAligned, r.SPFAligned)
			for _, d := range r.DKIM {
				texts = append(texts, d.Domain, d.Selector, d.Result, d.HumanResult)
			}
			for _, s := range r.SPF {
				texts = append(texts, s.Domain, s.Scope, s.Result)
			}
			for _, o := range r.Overrides {
				texts = append(texts, o.Type, o.Comment)
			}
		}
		for _, s := range texts {
			if len(s) > maxTextBytes || !utf8.ValidString(s) || strings.TrimSpace(s) != s || strings.ContainsAny(s, "\x00\x1b\r\n\t\u202e") {
				t.Errorf("unsafe text field %q", s)
			}
		}
	}
}
