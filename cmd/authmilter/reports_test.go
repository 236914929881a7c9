package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/authmilter/authmilter/internal/reporttest"
	"github.com/authmilter/authmilter/internal/smtpsink"
	"github.com/authmilter/authmilter/internal/testdns"
	"github.com/authmilter/authmilter/policy"
	"github.com/authmilter/authmilter/reports"
)

// reportsEnv is one CLI test's world: a config whose store is an SQLite
// file in a temporary folder, a real DNS server for the destination
// checks, and an SMTP sink for the report mail.
type reportsEnv struct {
	dir, cfg, db string
	dns          *testdns.Server
	sink         *smtpsink.Server
}

func newReportsEnv(t *testing.T) *reportsEnv {
	t.Helper()
	e := &reportsEnv{dir: t.TempDir(), dns: testdns.Start(t), sink: smtpsink.Start(t)}
	e.db = filepath.Join(e.dir, "reports.db")
	e.cfg = filepath.Join(e.dir, "authmilter.toml")
	conf := fmt.Sprintf(`authserv_id = "mx.receiver.test"
[dns]
servers = [%q]
timeout = "2s"
[keys]
dir = %q
[reports]
database = %q
smtp = %q
org_name = "Receiver Test"
email = "dmarc-reports@receiver.test"
`, e.dns.Addr(), filepath.Join(e.dir, "keys"), e.db, e.sink.Addr())
	if err := os.WriteFile(e.cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	// Destinations in the reporting domains themselves: no _report._dmarc
	// authorization needed; elsewhere.test is authorised for pass.test only.
	e.dns.AddZoneText(t, "", `
pass.test._report._dmarc.elsewhere.test. 60 IN TXT "v=DMARC1"
`)
	return e
}

// run runs `authmilter reports args...` with the env's config.
func (e *reportsEnv) run(t *testing.T, stdin string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	full := append([]string{args[0], "-config", e.cfg}, args[1:]...)
	var out, errb bytes.Buffer
	err = runReports(full, strings.NewReader(stdin), &out, &errb)
	return out.String(), errb.String(), err
}

// seed records evaluations as the daemon would: for each domain, rows of
// the day from several source IPs, passing and failing.
func (e *reportsEnv) seed(t *testing.T, day time.Time, entries ...reports.Entry) {
	t.Helper()
	ctx := context.Background()
	st, err := reports.Open(ctx, e.db)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for i := range entries {
		entries[i].Row.Day = day
		entries[i].Seen = day.Add(time.Hour)
	}
	if err := st.Add(ctx, entries); err != nil {
		t.Fatal(err)
	}
}

// testEntry is count messages from ip about domain, passing DMARC or not,
// with a rua that has a destination in the domain and one elsewhere.
func testEntry(domain, ip string, count int64, pass bool) reports.Entry {
	aligned, spf := "fail", "fail"
	if pass {
		aligned, spf = "pass", "pass"
	}
	return reports.Entry{
		Row: reports.Row{Domain: domain, SourceIP: netip.MustParseAddr(ip), Count: count, HeaderFrom: domain,
			EnvelopeFrom: domain, EnvelopeTo: "receiver.test", Helo: "mail." + domain, Disposition: "none",
			DKIMAligned: aligned, SPFAligned: aligned,
			DKIM: []reports.DKIMAuth{{Domain: domain, Selector: "s1", Result: spf}},
			SPF:  []reports.SPFAuth{{Domain: domain, Scope: "mfrom", Result: spf}}},
		Policy: reports.Policy{Domain: domain, DiscoveryMethod: "treewalk", P: "none", PSD: "u", Testing: "n",
			ADKIM: "r", ASPF: "r", FO: "0",
			RUA: []string{"mailto:dmarc@" + domain, "mailto:agg@elsewhere.test"}, RUALimits: []int64{0, 0}},
	}
}

func yesterdayUTC() time.Time { return reports.DayOf(time.Now()).AddDate(0, 0, -1) }

func TestReportsListCountsAndStatus(t *testing.T) {
	e := newReportsEnv(t)
	y, today := yesterdayUTC(), reports.DayOf(time.Now())
	e.seed(t, y, testEntry("pass.test", "192.0.2.1", 5, true), testEntry("pass.test", "192.0.2.2", 2, false),
		testEntry("fail.test", "198.51.100.7", 3, false))
	e.seed(t, today, testEntry("pass.test", "192.0.2.1", 1, true))

	out, stderr, err := e.run(t, "", "list", "-json")
	if err != nil {
		t.Fatalf("list: %v\n%s", err, stderr)
	}
	var got []reportDay
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("list -json: %v\n%s", err, out)
	}
	want := []reportDay{
		{Day: today.Format("2006-01-02"), Domain: "pass.test", Messages: 1, Rows: 1, DMARCPass: 1, Status: statusCollecting},
		{Day: y.Format("2006-01-02"), Domain: "fail.test", Messages: 3, Rows: 1, DMARCFail: 3, Status: statusNotSent},
		{Day: y.Format("2006-01-02"), Domain: "pass.test", Messages: 7, Rows: 2, DMARCPass: 5, DMARCFail: 2, Status: statusNotSent},
	}
	if len(got) != len(want) {
		t.Fatalf("list: %d rows, want %d:\n%s", len(got), len(want), out)
	}
	for i := range want {
		g := got[i]
		g.ReportIDs, g.Destinations, g.Detail, g.Owner, g.At = nil, nil, "", "", nil
		if fmt.Sprint(g) != fmt.Sprint(want[i]) {
			t.Errorf("row %d: %+v, want %+v", i, g, want[i])
		}
	}

	out, _, err = e.run(t, "", "list", "-d", "FAIL.test", "-json")
	if err != nil || strings.Count(out, `"domain"`) != 1 || !strings.Contains(out, `"fail.test"`) {
		t.Errorf("list -d FAIL.test: %v\n%s", err, out)
	}
	out, _, err = e.run(t, "", "list")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out, "DAY") || !strings.Contains(out, "fail.test") || !strings.Contains(out, statusNotSent) {
		t.Errorf("list (text):\n%s", out)
	}
}

func TestReportsSendOutWritesValidReports(t *testing.T) {
	xsd := reporttest.Schema(t)
	e := newReportsEnv(t)
	y := yesterdayUTC()
	e.seed(t, y, testEntry("pass.test", "192.0.2.1", 5, true), testEntry("pass.test", "2001:db8::25", 2, false),
		testEntry("fail.test", "198.51.100.7", 3, false))
	out := t.TempDir()
	stdout, stderr, err := e.run(t, "", "send", "-out", out, "-day", y.Format("2006-01-02"))
	if err != nil {
		t.Fatalf("send -out: %v\n%s\n%s", err, stdout, stderr)
	}
	files, _ := filepath.Glob(filepath.Join(out, "*.xml.gz"))
	if len(files) != 2 {
		t.Fatalf("send -out wrote %v, want one report per domain (2)\n%s", files, stdout)
	}
	records := 0
	for _, f := range files {
		xml := gunzipFile(t, f)
		reporttest.Validate(t, xsd, filepath.Base(f), xml)
		records += strings.Count(string(xml), "<record>")
		if !strings.Contains(string(xml), "<org_name>Receiver Test</org_name>") {
			t.Errorf("%s: org_name from reports.org_name missing", filepath.Base(f))
		}
	}
	if records != 3 {
		t.Errorf("%d records in the reports, want 3", records)
	}
	if len(e.sink.Messages()) != 0 {
		t.Errorf("send -out mailed %d messages", len(e.sink.Messages()))
	}
	// -out records nothing: the reports can still be sent.
	list, _, _ := e.run(t, "", "list", "-json")
	if strings.Contains(list, `"sent"`) {
		t.Errorf("send -out recorded an outcome:\n%s", list)
	}
}

func TestReportsSendDryRunSendsNothing(t *testing.T) {
	e := newReportsEnv(t)
	y := yesterdayUTC()
	e.seed(t, y, testEntry("pass.test", "192.0.2.1", 5, true))
	stdout, stderr, err := e.run(t, "", "send", "-dry-run")
	if err != nil {
		t.Fatalf("send -dry-run: %v\n%s\n%s", err, stdout, stderr)
	}
	if !strings.Contains(stdout, "pass.test") {
		t.Errorf("send -dry-run does not list pass.test:\n%s", stdout)
	}
	if n := len(e.sink.Messages()); n != 0 {
		t.Errorf("send -dry-run mailed %d messages", n)
	}
	// Nothing recorded: the real send then mails it.
	stdout, stderr, err = e.run(t, "", "send")
	if err != nil {
		t.Fatalf("send: %v\n%s\n%s", err, stdout, stderr)
	}
	if n := len(e.sink.Messages()); n == 0 {
		t.Errorf("send after -dry-run mailed nothing:\n%s\n%s", stdout, stderr)
	}
}

func TestReportsSendMailsOnce(t *testing.T) {
	e := newReportsEnv(t)
	y := yesterdayUTC()
	e.seed(t, y, testEntry("pass.test", "192.0.2.1", 5, true), testEntry("fail.test", "198.51.100.7", 3, false))
	stdout, stderr, err := e.run(t, "", "send", "-d", "pass.test,fail.test")
	if err != nil {
		t.Fatalf("send: %v\n%s\n%s", err, stdout, stderr)
	}
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "DOMAIN") {
		t.Fatalf("send: want a header and one line per domain:\n%s", stdout)
	}
	for _, l := range lines[1:] {
		if f := strings.Fields(l); len(f) < 2 || f[1] != "sent" {
			t.Errorf("send: %q, want status sent", l)
		}
	}
	// pass.test authorised elsewhere.test; fail.test did not: only its own
	// domain gets its report (the other destination is skipped, logged).
	rcpts := recipientCounts(e.sink.Messages())
	for _, want := range []string{"dmarc@pass.test", "agg@elsewhere.test", "dmarc@fail.test"} {
		if rcpts[want] != 1 {
			t.Errorf("%s got %d reports, want 1 (all: %v)", want, rcpts[want], rcpts)
		}
	}
	if rcpts["agg@elsewhere.test"] != 1 || len(rcpts) != 3 {
		t.Errorf("recipients %v", rcpts)
	}
	if !strings.Contains(stderr, "elsewhere.test") {
		t.Errorf("the unauthorised destination was not logged:\n%s", stderr)
	}
	// A second run sends nothing again and says so.
	n := len(e.sink.Messages())
	stdout, stderr, err = e.run(t, "", "send")
	if err != nil {
		t.Fatalf("second send: %v\n%s\n%s", err, stdout, stderr)
	}
	if len(e.sink.Messages()) != n {
		t.Errorf("a second send mailed again:\n%s", stdout)
	}
	list, _, _ := e.run(t, "", "list", "-json")
	var days []reportDay
	json.Unmarshal([]byte(list), &days)
	for _, d := range days {
		if d.Status != "sent" || len(d.ReportIDs) == 0 {
			t.Errorf("list after send: %+v", d)
		}
	}
}

// TestReportsSendPrunes: `reports send` from cron is also the housekeeping
// run: rows older than reports.keep go, a dry run and -out keep them.
func TestReportsSendPrunes(t *testing.T) {
	e := newReportsEnv(t)
	old := reports.DayOf(time.Now()).AddDate(0, 0, -45) // beyond keep (30d)
	e.seed(t, old, testEntry("pass.test", "192.0.2.1", 1, true))
	oldRows := func() int {
		st, err := reports.Open(context.Background(), e.db)
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		d, err := st.Domains(context.Background(), old)
		if err != nil {
			t.Fatal(err)
		}
		return len(d)
	}
	if _, stderr, err := e.run(t, "", "send", "-dry-run"); err != nil || oldRows() != 1 {
		t.Fatalf("dry run: %v, old domains %d, want 1 kept:\n%s", err, oldRows(), stderr)
	}
	if _, stderr, err := e.run(t, "", "send", "-out", t.TempDir()); err != nil || oldRows() != 1 {
		t.Fatalf("-out: %v, old domains %d, want 1 kept:\n%s", err, oldRows(), stderr)
	}
	_, stderr, err := e.run(t, "", "send")
	if err != nil {
		t.Fatalf("send: %v\n%s", err, stderr)
	}
	if oldRows() != 0 || !strings.Contains(stderr, "DMARC report data pruned") {
		t.Errorf("send left %d old domains:\n%s", oldRows(), stderr)
	}
}

func TestReportsSendFailureExitsOne(t *testing.T) {
	e := newReportsEnv(t)
	e.sink.FailNext(1000, smtpsink.AtEndOfData, "554 5.7.1 no reports here") // every attempt
	e.seed(t, yesterdayUTC(), testEntry("pass.test", "192.0.2.1", 5, true))
	stdout, stderr, err := e.run(t, "", "send")
	if code, ok := err.(exitError); !ok || code != 1 {
		t.Fatalf("send to a rejecting MTA: %v, want exit status 1\n%s\n%s", err, stdout, stderr)
	}
	if !strings.Contains(stdout, "failed") {
		t.Errorf("send: no failed line:\n%s", stdout)
	}
}

func TestReportsSendRefusesBadFlags(t *testing.T) {
	e := newReportsEnv(t)
	tomorrow := reports.DayOf(time.Now()).AddDate(0, 0, 1).Format("2006-01-02")
	for _, tc := range []struct {
		name string
		args []string
		want string // in the error or stderr
	}{
		{"day not a date", []string{"send", "-day", "24/11/2026"}, "YYYY-MM-DD"},
		{"day out of range", []string{"send", "-day", "2026-13-01"}, "YYYY-MM-DD"},
		{"day in the future", []string{"send", "-day", tomorrow}, "future"},
		{"day with time", []string{"send", "-day", "2026-11-24T00:00:00Z"}, "YYYY-MM-DD"},
		{"domain with newline", []string{"send", "-d", "evil.test\nSubject: x"}, "not a domain name"},
		{"domain too long", []string{"send", "-d", strings.Repeat("a", 64) + ".test"}, "not a domain name"},
		{"domain with empty label", []string{"send", "-d", "a..test"}, "not a domain name"},
		{"empty domain in list", []string{"send", "-d", "a.test,,b.test"}, "not a domain name"},
		{"out not a folder", []string{"send", "-out", e.cfg}, "not a folder"},
		{"stray argument", []string{"send", "pass.test"}, "unexpected argument"},
		{"list days zero", []string{"list", "-days", "0"}, "-days 0"},
		{"list days huge", []string{"list", "-days", "100000000"}, "-days 100000000"},
		{"summary without domain", []string{"summary"}, "-d DOMAIN is required"},
		{"summary two domains", []string{"summary", "-d", "a.test", "-d", "b.test"}, "-d DOMAIN is required"},
		{"summary days negative", []string{"summary", "-d", "a.test", "-days", "-3"}, "-days -3"},
		{"import nothing", []string{"import"}, "name a file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, stderr, err := e.run(t, "", tc.args...)
			if err == nil {
				t.Fatalf("accepted")
			}
			if msg := err.Error() + stderr; !strings.Contains(msg, tc.want) {
				t.Errorf("error %q, stderr %q; want %q", err, stderr, tc.want)
			}
		})
	}
	if len(e.sink.Messages()) != 0 {
		t.Errorf("a refused command mailed something")
	}
}

func TestReportsUnknownCommand(t *testing.T) {
	var out, errb bytes.Buffer
	if err := runReports([]string{"frobnicate"}, nil, &out, &errb); err != exitError(2) {
		t.Errorf("unknown command: %v, want exit status 2", err)
	}
	if err := runReports(nil, nil, &out, &errb); err != exitError(2) || !strings.Contains(errb.String(), "usage: authmilter reports") {
		t.Errorf("no command: %v %q", err, errb.String())
	}
}

func TestReportsImportAndSummary(t *testing.T) {
	e := newReportsEnv(t)
	report := receivedReport(t, yesterdayUTC())
	stdout, stderr, err := e.run(t, "", "import", report)
	if err != nil {
		t.Fatalf("import: %v\n%s\n%s", err, stdout, stderr)
	}
	if !strings.Contains(stdout, "reports stored 1") {
		t.Errorf("import: %s", stdout)
	}
	// The same report again, from stdin: a duplicate, nothing stored.
	b, _ := os.ReadFile(report)
	stdout, _, err = e.run(t, string(b), "import", "-")
	if err != nil || !strings.Contains(stdout, "duplicates 1") {
		t.Errorf("import - again: %v %s", err, stdout)
	}
	// A hostile report is refused with a reason and exit status 1.
	stdout, stderr, err = e.run(t, "", "import", filepath.Join("testdata", "reports", "bomb.xml"))
	if err != exitError(1) || !strings.Contains(stdout, "refused 1") || !strings.Contains(stderr, "bomb.xml") {
		t.Errorf("import bomb: %v\n%s\n%s", err, stdout, stderr)
	}

	stdout, stderr, err = e.run(t, "", "summary", "-d", "owner.test", "-days", "3", "-json")
	if err != nil {
		t.Fatalf("summary: %v\n%s", err, stderr)
	}
	var sum struct {
		Domain   string `json:"domain"`
		Reports  int64  `json:"reports"`
		Messages int64  `json:"messages"`
		Sources  []struct {
			IP       string `json:"ip"`
			Messages int64  `json:"messages"`
		} `json:"sources"`
	}
	if err := json.Unmarshal([]byte(stdout), &sum); err != nil {
		t.Fatalf("summary -json: %v\n%s", err, stdout)
	}
	if sum.Domain != "owner.test" || sum.Reports != 1 || sum.Messages != 10 || len(sum.Sources) != 2 {
		t.Errorf("summary: %+v\n%s", sum, stdout)
	} else if sum.Sources[0].IP != "203.0.113.9" {
		t.Errorf("summary: the failing source 203.0.113.9 is not first: %+v", sum.Sources)
	}
	stdout, _, err = e.run(t, "", "summary", "-d", "owner.test", "-days", "3")
	if err != nil || !strings.Contains(stdout, "203.0.113.9") {
		t.Errorf("summary (text): %v\n%s", err, stdout)
	}
}

func TestReportsStoreUnavailable(t *testing.T) {
	e := newReportsEnv(t)
	conf, _ := os.ReadFile(e.cfg)
	conf = bytes.Replace(conf, []byte(e.db), []byte(filepath.Join(e.dir, "missing", "reports.db")), 1)
	os.WriteFile(e.cfg, conf, 0o600)
	_, _, err := e.run(t, "", "list")
	if err == nil || !strings.Contains(err.Error(), "reports.database") {
		t.Errorf("list with a store in a missing folder: %v", err)
	}
}

func TestParseReportDay(t *testing.T) {
	now := time.Date(2026, 11, 25, 0, 30, 0, 0, time.FixedZone("CET", 3600)) // 2026-11-24 23:30 UTC
	for _, tc := range []struct {
		in, want string
	}{
		{"", "2026-11-23"},
		{"yesterday", "2026-11-23"},
		{"today", "2026-11-24"},
		{"2026-11-24", "2026-11-24"},
		{"2026-01-31", "2026-01-31"},
		{"2026-11-25", "error"},
		{"2026-02-30", "error"},
		{"0", "error"},
		{"Today", "error"},
	} {
		got, err := parseReportDay(tc.in, now)
		s := got.Format("2006-01-02")
		if err != nil {
			s = "error"
		} else if got.Location() != time.UTC || got != reports.DayOf(got) {
			t.Errorf("%q: %v is not a UTC midnight", tc.in, got)
		}
		if s != tc.want {
			t.Errorf("parseReportDay(%q) = %s (%v), want %s", tc.in, s, err, tc.want)
		}
	}
}

func TestDomainList(t *testing.T) {
	var l domainList
	for _, v := range []string{"A.Test.", "b.test, c.test", "a.test"} {
		if err := l.Set(v); err != nil {
			t.Fatal(err)
		}
	}
	if l.String() != "a.test,b.test,c.test" {
		t.Errorf("domains %q", l.String())
	}
}

func TestOneLineKeepsStoreValuesOnOneLine(t *testing.T) {
	if got := oneLine("evil.test\r\nX-Injected: 1\x1b[2J"); strings.ContainsAny(got, "\r\n\x1b") {
		t.Errorf("oneLine left control characters: %q", got)
	}
}

func TestPrintSendOutcomesJoinsSplitReports(t *testing.T) {
	var b bytes.Buffer
	failed := printSendOutcomes(&b, []reports.Sent{
		{Domain: "a.test", Status: "sent", ReportID: "r1", Destinations: []string{"mailto:x@a.test"}},
		{Domain: "a.test", Status: "sent", ReportID: "r2", Destinations: []string{"mailto:x@a.test"}},
		{Domain: "b.test", Status: "skipped", Detail: "no rua"},
		{Domain: "c.test", Status: "sent", ReportID: "r3"},
		{Domain: "c.test", Status: "failed", ReportID: "r4", Detail: "554 no"},
	})
	if failed != 1 {
		t.Errorf("failed = %d, want 1", failed)
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(b.String()), "\n") {
		lines = append(lines, strings.Join(strings.Fields(l), " "))
	}
	want := []string{
		"DOMAIN STATUS REPORT_ID DESTINATIONS DETAIL",
		"a.test sent r1,r2 mailto:x@a.test -",
		"b.test skipped - - no rua",
		"c.test failed r3,r4 - 554 no",
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Errorf("printed:\n%s\nwant:\n%s", b.String(), strings.Join(want, "\n"))
	}
}

// receivedReport writes testdata/reports/received-9990.xml.tmpl with its
// date range set to day, and returns its path.
func receivedReport(t *testing.T, day time.Time) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "reports", "received-9990.xml.tmpl"))
	if err != nil {
		t.Fatal(err)
	}
	x := strings.NewReplacer("BEGIN", fmt.Sprint(day.Unix()), "END", fmt.Sprint(day.AddDate(0, 0, 1).Unix()-1)).Replace(string(b))
	path := filepath.Join(t.TempDir(), "received-9990.xml")
	if err := os.WriteFile(path, []byte(x), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// recipientCounts counts the messages per recipient.
func recipientCounts(msgs []smtpsink.Message) map[string]int {
	n := map[string]int{}
	for _, m := range msgs {
		for _, r := range m.Rcpts {
			n[r]++
		}
	}
	return n
}

func gunzipFile(t *testing.T, path string) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	b, err := io.ReadAll(io.LimitReader(zr, 64<<20))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return b
}

// policyDecision is an inbound decision with an evaluation, for the
// observer tests.
func policyDecision(action policy.Action, from string) *policy.Decision {
	return &policy.Decision{Action: action, Evaluation: &policy.Evaluation{
		Time: time.Now(), PolicyDomain: from, HeaderFrom: from, SourceIP: netip.MustParseAddr("192.0.2.77"),
		Result: "pass", DKIMAligned: "pass", SPFAligned: "fail", Disposition: "none", DiscoveryMethod: "treewalk",
		Published: policy.PublishedPolicy{P: "none", PSD: "u", Testing: "n", ADKIM: "r", ASPF: "r", FO: "0"},
	}}
}
