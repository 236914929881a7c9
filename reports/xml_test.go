package reports

import (
	"bytes"
	"encoding/xml"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var updateSendGolden = flag.Bool("update-send-golden", false, "rewrite the golden files of reports/testdata/send")

// genSchema is the RFC 9990 schema every generated report must satisfy.
const genSchema = "testdata/rfc9990.xsd"

// genValidate checks docs against the RFC 9990 schema with the real
// xmllint (one run for all of them).
func genValidate(t *testing.T, docs ...[]byte) {
	t.Helper()
	xmllint, err := exec.LookPath("xmllint")
	if err != nil {
		t.Fatalf("xmllint not found: install the Debian package libxml2-utils (%v)", err)
	}
	dir := t.TempDir()
	args := []string{"--noout", "--nonet", "--schema", genSchema}
	for i, doc := range docs {
		path := filepath.Join(dir, fmt.Sprintf("report-%03d.xml", i))
		if err := os.WriteFile(path, doc, 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, path)
	}
	out, err := exec.Command(xmllint, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("xmllint: the report does not validate against %s: %v\n%s", genSchema, err, out)
	}
}

// genParse reads a generated report back.
func genParse(t *testing.T, doc []byte) genFeedback {
	t.Helper()
	var f genFeedback
	if err := xml.Unmarshal(doc, &f); err != nil {
		t.Fatalf("parse generated report: %v\n%s", err, doc)
	}
	return f
}

var (
	genTestMeta  = Meta{OrgName: "Example Receiver", Email: "dmarc-reports@mx.receiver.example", ExtraContactInfo: "https://receiver.example/dmarc"}
	genTestDay   = time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC)
	genTestBegin = genTestDay
	genTestEnd   = genTestDay.Add(24*time.Hour - time.Second)
)

func genTestPolicy() Policy {
	return Policy{
		Domain: "example.com", DiscoveryMethod: "treewalk",
		P: "quarantine", SP: "none", NP: "reject", PSD: "n", Testing: "n",
		ADKIM: "r", ASPF: "s", FO: "1:d",
		RUA: []string{"mailto:dmarc@example.com"}, RUALimits: []int64{0},
	}
}

// genTestRows are rows that use every element a record can have.
func genTestRows() []Row {
	return []Row{
		{
			Domain: "example.com", Day: genTestDay, SourceIP: netip.MustParseAddr("192.0.2.10"), Count: 42,
			HeaderFrom: "example.com", EnvelopeFrom: "example.com", EnvelopeTo: "receiver.example", Helo: "mail.example.com",
			Disposition: "none", DKIMAligned: "pass", SPFAligned: "pass",
			DKIM: []DKIMAuth{
				{Domain: "esp.example.net", Selector: "s1", Result: "pass"},
				{Domain: "example.com", Selector: "2026-11", Result: "pass"},
			},
			SPF: []SPFAuth{{Domain: "example.com", Scope: "mfrom", Result: "pass"}},
		},
		{
			Domain: "example.com", Day: genTestDay, SourceIP: netip.MustParseAddr("2001:db8::25"), Count: 3,
			HeaderFrom: "news.example.com", EnvelopeFrom: "", Helo: "bad.example.org",
			Disposition: "none", DKIMAligned: "fail", SPFAligned: "fail",
			Overrides: []Override{{Type: "local_policy", Comment: "DMARC enforcement is off (dmarc.enforce = false)"}},
			DKIM:      []DKIMAuth{{Domain: "example.com", Selector: "old", Result: "fail", HumanResult: "signature did not verify"}},
			SPF:       []SPFAuth{{Domain: "bad.example.org", Scope: "helo", Result: "softfail"}},
		},
	}
}

func TestBuildReportGolden(t *testing.T) {
	doc, err := BuildReport(genTestMeta, "20261205a1b2c3d4e5f60718", genTestPolicy(), genTestRows(), genTestBegin, genTestEnd)
	if err != nil {
		t.Fatal(err)
	}
	genValidate(t, doc)
	compareSendGolden(t, "testdata/send/report.xml", doc)
}

// compareSendGolden compares got with the golden file, or rewrites it
// with -update-send-golden.
func compareSendGolden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *updateSendGolden {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./reports -run %s -update-send-golden to create it)", err, t.Name())
	}
	if !bytes.Equal(got, want) {
		t.Errorf("output differs from %s (rerun with -update-send-golden if the change is intended):\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

// TestBuildReportMapsToSchemaValues: values the schema restricts are
// mapped to valid ones, whatever the store holds.
func TestBuildReportMapsToSchemaValues(t *testing.T) {
	tests := []struct {
		name  string
		edit  func(p *Policy, r *Row)
		check func(t *testing.T, f genFeedback)
	}{
		{"DKIM policy result is kept", func(p *Policy, r *Row) { r.DKIM = []DKIMAuth{{Domain: "example.com", Selector: "s", Result: "policy"}} },
			func(t *testing.T, f genFeedback) { wantEq(t, f.Records[0].AuthResults.DKIM[0].Result, "policy") }},
		{"DKIM old names", func(p *Policy, r *Row) {
			r.DKIM = []DKIMAuth{{Domain: "a.example", Selector: "s", Result: "HardFail"}, {Domain: "b.example", Selector: "s", Result: "tempfail"}, {Domain: "c.example", Selector: "s", Result: "permfail"}}
		}, func(t *testing.T, f genFeedback) {
			d := f.Records[0].AuthResults.DKIM
			wantEq(t, d[0].Result+","+d[1].Result+","+d[2].Result, "fail,temperror,permerror")
		}},
		{"DKIM unknown result is neutral, original kept", func(p *Policy, r *Row) { r.DKIM = []DKIMAuth{{Domain: "example.com", Selector: "s", Result: "weird"}} },
			func(t *testing.T, f genFeedback) {
				d := f.Records[0].AuthResults.DKIM[0]
				wantEq(t, d.Result, "neutral")
				if !strings.Contains(d.HumanResult, `"weird"`) {
					t.Errorf("human_result %q does not keep the original result", d.HumanResult)
				}
			}},
		{"SPF helo scope left out", func(p *Policy, r *Row) { r.SPF = []SPFAuth{{Domain: "helo.example", Scope: "helo", Result: "pass"}} },
			func(t *testing.T, f genFeedback) {
				s := f.Records[0].AuthResults.SPF
				wantEq(t, s.Scope+"|"+s.Domain+"|"+s.Result, "|helo.example|pass")
			}},
		{"SPF old names and unknown", func(p *Policy, r *Row) { r.SPF = []SPFAuth{{Domain: "x.example", Scope: "mfrom", Result: "unknown"}} },
			func(t *testing.T, f genFeedback) { wantEq(t, f.Records[0].AuthResults.SPF.Result, "permerror") }},
		{"SPF garbage", func(p *Policy, r *Row) { r.SPF = []SPFAuth{{Domain: "x.example", Scope: "MFROM", Result: "<b>"}} },
			func(t *testing.T, f genFeedback) {
				wantEq(t, f.Records[0].AuthResults.SPF.Result+"|"+f.Records[0].AuthResults.SPF.Scope, "neutral|mfrom")
			}},
		{"no SPF, no DKIM", func(p *Policy, r *Row) { r.SPF, r.DKIM = nil, nil },
			func(t *testing.T, f genFeedback) {
				if f.Records[0].AuthResults.SPF != nil || len(f.Records[0].AuthResults.DKIM) != 0 {
					t.Errorf("auth_results = %+v, want empty", f.Records[0].AuthResults)
				}
			}},
		{"unknown disposition and alignment", func(p *Policy, r *Row) { r.Disposition, r.DKIMAligned, r.SPFAligned = "drop", "", "PASS" },
			func(t *testing.T, f genFeedback) {
				pe := f.Records[0].Row.PolicyEvaluated
				wantEq(t, pe.Disposition+","+pe.DKIM+","+pe.SPF, "none,fail,pass")
			}},
		{"unknown override type is other", func(p *Policy, r *Row) { r.Overrides = []Override{{Type: "forwarded", Comment: "via list"}} },
			func(t *testing.T, f genFeedback) {
				rs := f.Records[0].Row.PolicyEvaluated.Reasons
				wantEq(t, rs[0].Type, "other")
				wantEq(t, rs[0].Comment, `type "forwarded": via list`)
			}},
		{"invalid policy values", func(p *Policy, r *Row) {
			p.P, p.SP, p.NP, p.ADKIM, p.ASPF, p.Testing, p.DiscoveryMethod = "", "bogus", "REJECT", "x", "", "maybe", "dns"
		}, func(t *testing.T, f genFeedback) {
			pp := f.Policy
			wantEq(t, fmt.Sprint(pp.P, "|", pp.SP, "|", pp.NP, "|", pp.ADKIM, "|", pp.ASPF, "|", pp.Testing, "|", pp.DiscoveryMethod), "none||reject||||")
		}},
		{"negative count", func(p *Policy, r *Row) { r.Count = -5 },
			func(t *testing.T, f genFeedback) { wantEq(t, fmt.Sprint(f.Records[0].Row.Count), "0") }},
		{"no source IP", func(p *Policy, r *Row) { r.SourceIP = netip.Addr{} },
			func(t *testing.T, f genFeedback) { wantEq(t, f.Records[0].Row.SourceIP, "0.0.0.0") }},
		{"IPv4-mapped source IP", func(p *Policy, r *Row) { r.SourceIP = netip.MustParseAddr("::ffff:192.0.2.7") },
			func(t *testing.T, f genFeedback) { wantEq(t, f.Records[0].Row.SourceIP, "192.0.2.7") }},
	}
	var docs [][]byte
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, rows := genTestPolicy(), genTestRows()[:1]
			tt.edit(&p, &rows[0])
			doc, err := BuildReport(genTestMeta, "id1", p, rows, genTestBegin, genTestEnd)
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, genParse(t, doc))
			docs = append(docs, doc)
		})
	}
	genValidate(t, docs...)
}

func wantEq(t *testing.T, got, want string) {
	t.Helper()
	if got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// TestBuildReportHostileValues: whatever bytes the store holds, the
// report stays well-formed, valid and bounded.
func TestBuildReportHostileValues(t *testing.T) {
	huge := strings.Repeat("x", 1<<20)
	nasty := "a\x00b\x01c\x1b[31m\uFFFE]]><!--<script>&amp;\"'\xff\xfe"
	p := genTestPolicy()
	p.Domain, p.FO = nasty+huge, nasty
	r := genTestRows()[0]
	r.HeaderFrom, r.EnvelopeFrom, r.EnvelopeTo = nasty, huge, "\r\n<x/>"
	r.DKIM = []DKIMAuth{{Domain: nasty, Selector: huge, Result: nasty, HumanResult: huge}}
	r.SPF = []SPFAuth{{Domain: huge, Scope: nasty, Result: nasty}}
	r.Overrides = make([]Override, 50)
	for i := range r.Overrides {
		r.Overrides[i] = Override{Type: nasty, Comment: huge}
	}
	meta := Meta{OrgName: nasty, Email: "x@example.com" + nasty, ExtraContactInfo: huge}
	doc, err := BuildReport(meta, nasty, p, []Row{r}, genTestBegin, genTestEnd)
	if err != nil {
		t.Fatal(err)
	}
	if len(doc) > 64<<10 {
		t.Errorf("report of one hostile row is %d bytes; values are not bounded", len(doc))
	}
	f := genParse(t, doc)
	if n := len(f.Records[0].Row.PolicyEvaluated.Reasons); n != genMaxReasons {
		t.Errorf("%d reasons, want at most %d", n, genMaxReasons)
	}
	if strings.Contains(string(doc), "<script>") || strings.Contains(string(doc), "\x00") {
		t.Error("markup or NUL from the store reached the report unescaped")
	}
	genValidate(t, doc)
}

// TestBuildReportDKIMPriority: at most 100 signatures per row, passing
// aligned ones first (RFC 9990 "DKIM Signatures in Aggregate Reports").
func TestBuildReportDKIMPriority(t *testing.T) {
	r := genTestRows()[0]
	r.HeaderFrom = "mail.example.com"
	r.DKIM = nil
	for i := range 150 {
		r.DKIM = append(r.DKIM, DKIMAuth{Domain: fmt.Sprintf("fail%d.example.org", i), Selector: "s", Result: "fail"})
	}
	r.DKIM = append(r.DKIM,
		DKIMAuth{Domain: "other.example.net", Selector: "o", Result: "pass"},
		DKIMAuth{Domain: "example.com", Selector: "relaxed", Result: "pass"},
		DKIMAuth{Domain: "mail.example.com", Selector: "strict", Result: "pass"},
	)
	doc, err := BuildReport(genTestMeta, "id", genTestPolicy(), []Row{r}, genTestBegin, genTestEnd)
	if err != nil {
		t.Fatal(err)
	}
	d := genParse(t, doc).Records[0].AuthResults.DKIM
	if len(d) != genMaxDKIM {
		t.Fatalf("%d DKIM results, want %d", len(d), genMaxDKIM)
	}
	wantEq(t, d[0].Selector+","+d[1].Selector+","+d[2].Selector+","+d[3].Domain, "strict,relaxed,o,fail0.example.org")
	genValidate(t, doc)
}

func TestBuildReportRefuses(t *testing.T) {
	if _, err := BuildReport(genTestMeta, "id", genTestPolicy(), nil, genTestBegin, genTestEnd); err == nil {
		t.Error("a report without rows was built; the schema needs one record")
	}
	if _, err := BuildReport(Meta{Email: "a@b.example"}, "id", genTestPolicy(), genTestRows(), genTestBegin, genTestEnd); err == nil {
		t.Error("a report without org_name was built")
	}
}
