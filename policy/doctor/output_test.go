package doctor

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"strings"
	"testing"
)

// outputReports are two reports with findings out of check order, a
// subject, a fix, and hostile text from DNS.
func outputReports() []*Report {
	return []*Report{
		{Domain: "acme.example", Status: Error, Findings: []Finding{
			{Check: CheckDMARC, Severity: Warn, Code: "dmarc-rua-unauthorized", Subject: "mailto:d@reports.example",
				Message: "reports.example does not accept acme.example's reports <d@reports.example>", Fix: "ask reports.example to publish acme.example._report._dmarc.reports.example"},
			{Check: CheckDomain, Severity: OK, Code: "domain-exists", Message: "acme.example exists"},
			{Check: CheckSPF, Severity: Error, Code: "spf-too-many-lookups", Subject: "include:sendgrid.example",
				Message: "SPF needs 12 lookups, limit 10", Fix: "move that sender to a subdomain"},
		}},
		{Domain: "evil.example", Status: Warn, Findings: []Finding{
			{Check: CheckDKIM, Severity: Warn, Code: "dkim-record-syntax", Subject: "s1",
				Message: "record \x1b[2Jtext\nfake line \xff", Fix: "=HYPERLINK(\"x\")"},
		}},
	}
}

func TestWriteText(t *testing.T) {
	var b bytes.Buffer
	if err := WriteText(&b, outputReports()); err != nil {
		t.Fatal(err)
	}
	want := `acme.example: error (1 error, 1 warning, 1 ok)
  ok    domain  acme.example exists [domain-exists]
  error spf     include:sendgrid.example: SPF needs 12 lookups, limit 10 [spf-too-many-lookups]
        fix: move that sender to a subdomain
  warn  dmarc   mailto:d@reports.example: reports.example does not accept acme.example's reports <d@reports.example> [dmarc-rua-unauthorized]
        fix: ask reports.example to publish acme.example._report._dmarc.reports.example

evil.example: warn (0 errors, 1 warning, 0 ok)
  warn  dkim    s1: record \x1b[2Jtext\nfake line \xff [dkim-record-syntax]
        fix: =HYPERLINK("x")
`
	if got := b.String(); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}

// TestWriteTextNilSections: a report without findings or sections (a
// check that found nothing) prints its heading only.
func TestWriteTextNilSections(t *testing.T) {
	var b bytes.Buffer
	if err := WriteText(&b, []*Report{{Domain: "x.example"}, {Domain: "y.example", Findings: []Finding{{Check: CheckSPF, Code: "spf-ok"}}}}); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(b.String(), "x.example: ok (0 errors, 0 warnings, 0 ok)\n\ny.example: ok") {
		t.Errorf("got:\n%s", b.String())
	}
}

func TestTextSafe(t *testing.T) {
	for in, want := range map[string]string{
		"plain text":      "plain text",
		"ünïcode ok":      "ünïcode ok",
		"a\nb":            `a\nb`,
		"\x1b[31mred":     `\x1b[31mred`,
		"bad \xff\xfe":    `bad \xff\xfe`,
		"del\x7f":         `del\x7f`,
		"c1 \u0085 line":  `c1 \u0085 line`,
		"tab\tand\rcr":    `tab\tand\rcr`,
		"":                "",
		"\u2028 is fine?": "\u2028 is fine?",
	} {
		if got := textSafe(in); got != want {
			t.Errorf("textSafe(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestWriteJSON(t *testing.T) {
	var b bytes.Buffer
	if err := WriteJSON(&b, outputReports()); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(b.String(), "{\n  \"version\": 1,\n  \"domains\": [\n    {\n      \"domain\": \"acme.example\",\n      \"status\": \"error\",\n      \"findings\": [\n        {\n          \"check\": \"dmarc\",\n          \"severity\": \"warn\",\n          \"code\": \"dmarc-rua-unauthorized\",") {
		t.Errorf("fields not in struct order or not indented:\n%s", b.String())
	}
	if !strings.Contains(b.String(), "reports <d@reports.example>") {
		t.Errorf("HTML-escaped:\n%s", b.String())
	}
	var doc struct {
		Version int       `json:"version"`
		Domains []*Report `json:"domains"`
	}
	if err := json.Unmarshal(b.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Version != JSONVersion || len(doc.Domains) != 2 || doc.Domains[1].Findings[0].Severity != Warn ||
		doc.Domains[1].Findings[0].Message != "record \x1b[2Jtext\nfake line \ufffd" {
		t.Errorf("round trip: %+v", doc)
	}
	b.Reset()
	if err := WriteJSON(&b, nil); err != nil {
		t.Fatal(err)
	}
	if b.String() != "{\n  \"version\": 1,\n  \"domains\": []\n}\n" {
		t.Errorf("no reports: %q", b.String())
	}
}

func TestWriteCSV(t *testing.T) {
	var b bytes.Buffer
	if err := WriteCSV(&b, outputReports()); err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(&b).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	want := [][]string{
		{"domain", "check", "severity", "code", "subject", "message", "fix"},
		{"acme.example", "domain", "ok", "domain-exists", "", "acme.example exists", ""},
		{"acme.example", "spf", "error", "spf-too-many-lookups", "include:sendgrid.example", "SPF needs 12 lookups, limit 10", "move that sender to a subdomain"},
		{"acme.example", "dmarc", "warn", "dmarc-rua-unauthorized", "mailto:d@reports.example", "reports.example does not accept acme.example's reports <d@reports.example>", "ask reports.example to publish acme.example._report._dmarc.reports.example"},
		{"evil.example", "dkim", "warn", "dkim-record-syntax", "s1", "record \x1b[2Jtext\nfake line \xff", "'=HYPERLINK(\"x\")"},
	}
	if len(rows) != len(want) {
		t.Fatalf("got %d rows, want %d: %q", len(rows), len(want), rows)
	}
	for i := range want {
		if strings.Join(rows[i], "|") != strings.Join(want[i], "|") {
			t.Errorf("row %d: got %q, want %q", i, rows[i], want[i])
		}
	}
}

func TestCSVSafe(t *testing.T) {
	for in, want := range map[string]string{
		"=1+1": "'=1+1", "+1": "'+1", "-all": "'-all", "@SUM(A1)": "'@SUM(A1)", "\tx": "'\tx", "\rx": "'\rx",
		"ok": "ok", "": "", "a=b": "a=b",
	} {
		if got := csvSafe(in); got != want {
			t.Errorf("csvSafe(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestWriteTextSPFTree: the tree follows the SPF findings, each include
// with what it adds; a report without a tree (no record) prints none.
func TestWriteTextSPFTree(t *testing.T) {
	rep := &Report{Domain: "acme.example", Status: Error,
		Findings: []Finding{
			{Check: CheckSPF, Severity: Error, Code: "spf-too-many-lookups", Message: "SPF needs 12 lookups", Fix: "fewer"},
			{Check: CheckDMARC, Severity: OK, Code: "dmarc-record", Message: "fine"},
		},
		SPF: &SPFReport{Lookups: 12, VoidLookups: 1, Tree: &SPFNode{Domain: "acme.example", Lookups: 3, Total: 12, Children: []*SPFNode{
			{Term: "include:_spf.office.example", Domain: "_spf.office.example", Lookups: 2, Total: 2, Children: []*SPFNode{
				{Term: "include:a.office.example", Domain: "a.office.example"},
				{Term: "include:gone.office.example", Domain: "gone.office.example", Void: 1, Error: "no SPF record\x1b[0m"},
			}},
			{Term: "redirect=_spf.news.example", Domain: "_spf.news.example", Lookups: 6, Total: 6},
		}}}}
	var b bytes.Buffer
	if err := WriteText(&b, []*Report{rep, {Domain: "none.example", SPF: &SPFReport{}, Findings: []Finding{{Check: CheckSPF, Code: "spf-missing"}}}}); err != nil {
		t.Fatal(err)
	}
	want := `acme.example: error (1 error, 0 warnings, 1 ok)
  error spf     SPF needs 12 lookups [spf-too-many-lookups]
        fix: fewer
        spf tree: 12 DNS lookups (limit 10), 1 void (limit 2)
          acme.example: 12 lookups in all
            include:_spf.office.example: adds 3
              include:a.office.example: adds 1
              include:gone.office.example: adds 1, 1 void: no SPF record\x1b[0m
            redirect=_spf.news.example: adds 7
  ok    dmarc   fine [dmarc-record]

none.example: ok (0 errors, 0 warnings, 1 ok)
  ok    spf      [spf-missing]
`
	if got := b.String(); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}

// TestWriteTextSPFTreeDepth: a tree deeper than any walk makes is cut,
// not followed.
func TestWriteTextSPFTreeDepth(t *testing.T) {
	root := &SPFNode{Domain: "deep.example"}
	n := root
	for range 100 {
		c := &SPFNode{Term: "include:x.example", Domain: "x.example"}
		n.Children = []*SPFNode{c}
		n = c
	}
	var b bytes.Buffer
	if err := WriteText(&b, []*Report{{Domain: "deep.example", SPF: &SPFReport{Tree: root}, Findings: []Finding{{Check: CheckSPF, Code: "spf-ok"}}}}); err != nil {
		t.Fatal(err)
	}
	if got := strings.Count(b.String(), "include:x.example"); got != spfTreeMaxDepth-1 {
		t.Errorf("%d levels printed, want %d:\n%s", got, spfTreeMaxDepth-1, b.String())
	}
	if !strings.Contains(b.String(), "  ...\n") {
		t.Errorf("the cut is not shown:\n%s", b.String())
	}
}
