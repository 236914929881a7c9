package reports

import (
	"context"
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/authmilter/authmilter/internal/daemontest"
	"github.com/authmilter/authmilter/internal/silentpeer"
	"github.com/authmilter/authmilter/internal/smtpsink"
	"github.com/authmilter/authmilter/reports"
)

// TestDaemonStartsWithoutStateFolder: the store's folder does not exist
// (the default /var/lib/authmilter/reports.db where nobody made the
// folder): the daemon starts, serves mail with its Authentication-Results,
// warns once (not an error: a fresh install, where the package makes the
// folder) which folder is missing, and counts what it could not record.
func TestDaemonStartsWithoutStateFolder(t *testing.T) {
	dns := startDNS(t)
	sk := smtpsink.Start(t)
	dir := t.TempDir()
	missing := filepath.Join(dir, "var", "lib", "authmilter", "reports.db")
	cfg, sock, metrics := writeConfig(t, dir, dns.Addr(), missing, sk.Addr())
	d := startDaemon(t, "nostate", cfg, sock, metrics)
	d.sendInbound(t, repeat(inbound{passDomain, passIP}, 3)...)
	line := d.waitLog(t, "DMARC results are not recorded", 0, time.Minute)
	if !strings.Contains(line, "level=WARN") || !strings.Contains(line, "folder="+filepath.Dir(missing)) || !strings.Contains(line, "does not exist") {
		t.Errorf("the warning does not say which folder is missing: %s", line)
	}
	if strings.Contains(d.logs.String(), "level=ERROR") {
		t.Errorf("a missing store folder logged an error:\n%s", d.logs.String())
	}
	d.waitMetric(t, "authmilter_reports_failed_total", 3, time.Minute)
	d.sendInbound(t, repeat(inbound{passDomain, passIP}, 3)...)
	d.waitMetric(t, "authmilter_reports_failed_total", 6, time.Minute)
	var problems int
	for _, l := range strings.Split(d.logs.String(), "\n") {
		if strings.Contains(l, filepath.Dir(missing)) && !strings.Contains(l, "level=INFO") {
			problems++
		}
	}
	if problems != 1 {
		t.Errorf("the unavailable store was logged %d times for 6 messages, want once:\n%s", problems, d.logs.String())
	}
	if _, err := os.Stat(filepath.Dir(missing)); err == nil {
		t.Errorf("the daemon created the store's folder")
	}
}

// TestReloadKeepsRecorder: [reports] is read at start; a SIGHUP that
// changes it is logged as needing a restart and recording goes on into
// the store the daemon started with.
func TestReloadKeepsRecorder(t *testing.T) {
	dns := startDNS(t)
	sk := smtpsink.Start(t)
	dir := t.TempDir()
	db := filepath.Join(dir, "reports.db")
	cfg, sock, metrics := writeConfig(t, dir, dns.Addr(), db, sk.Addr())
	d := startDaemon(t, "reload", cfg, sock, metrics)
	pass := inbound{passDomain, passIP}
	d.sendInbound(t, pass)
	d.waitMetric(t, "authmilter_reports_recorded_total", 1, time.Minute)

	conf, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(dir, "other.db")
	if err := os.WriteFile(cfg, []byte(strings.Replace(string(conf), db, other, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	from := len(d.logs.String())
	d.cmd.Process.Signal(syscall.SIGHUP)
	line := d.waitLog(t, "setting=reports.database", from, time.Minute)
	if !strings.Contains(line, "takes effect only at restart") {
		t.Errorf("reload log line: %s", line)
	}
	d.sendInbound(t, pass, pass)
	d.waitMetric(t, "authmilter_reports_recorded_total", 3, time.Minute)

	// The started store has all three; the new one was never made.
	if err := os.WriteFile(cfg, conf, 0o600); err != nil {
		t.Fatal(err)
	}
	var days []struct {
		Domain   string `json:"domain"`
		Messages int64  `json:"messages"`
	}
	out := runCLI(t, "reports", "list", "-config", cfg, "-days", "1", "-json")
	if err := json.Unmarshal([]byte(out), &days); err != nil {
		t.Fatalf("reports list -json: %v\n%s", err, out)
	}
	if len(days) != 1 || days[0].Domain != passDomain || days[0].Messages != 3 {
		t.Errorf("reports list after the reload: %s", out)
	}
	if _, err := os.Stat(other); err == nil {
		t.Errorf("the reload opened the new database %s", other)
	}
}

// TestDaemonSendsAtSendAt: with reports.send_at already past today, the
// daemon sends yesterday's reports as it starts (a restart after the hour
// never skips a day), prunes what is older than reports.keep, and a second
// start sends nothing twice.
func TestDaemonSendsAtSendAt(t *testing.T) {
	dns := startDNS(t)
	sk := smtpsink.Start(t)
	dir := t.TempDir()
	db := filepath.Join(dir, "reports.db")
	yesterday := reports.DayOf(time.Now()).AddDate(0, 0, -1)
	old := reports.DayOf(time.Now()).AddDate(0, 0, -40)
	seedRows(t, db, yesterday, passDomain, passIP, 6)
	seedRows(t, db, old, passDomain, passIP, 1)

	cfg, sock, metrics := writeConfig(t, dir, dns.Addr(), db, sk.Addr(), `send_at = "00:00"`, `keep = "30d"`)
	d := startDaemon(t, "sendat", cfg, sock, metrics)
	line := d.waitLog(t, "DMARC aggregate reports done", 0, 2*time.Minute)
	if !strings.Contains(line, "sent=1") || !strings.Contains(line, "day="+yesterday.Format("2006-01-02")) {
		t.Errorf("daily run: %s", line)
	}
	if line := d.waitLog(t, "DMARC report data pruned", 0, time.Minute); !strings.Contains(line, "rows=1") {
		t.Errorf("prune: %s", line)
	}
	if v := d.metric(t, `authmilter_reports_sent_total{status="sent"}`); v != 1 {
		t.Errorf(`authmilter_reports_sent_total{status="sent"} = %v, want 1`, v)
	}
	msgs := sk.Messages()
	if len(msgs) != 1 {
		t.Fatalf("%d report messages, want 1", len(msgs))
	}
	_, f := readReportMail(t, msgs[0].Data)
	if f.Domain != passDomain || len(f.Records) != 1 || f.Records[0].Count != 6 {
		t.Errorf("report: %+v", f)
	}

	// Restarted: the day is done; nothing is sent again.
	d.cmd.Process.Signal(syscall.SIGTERM)
	<-d.done
	d2 := startDaemon(t, "sendat2", cfg, sock, metrics)
	if line := d2.waitLog(t, "DMARC aggregate reports done", 0, 2*time.Minute); !strings.Contains(line, "sent=0") {
		t.Errorf("daily run after a restart: %s", line)
	}
	if n := len(sk.Messages()); n != 1 {
		t.Errorf("%d report messages after the restart, want still 1", n)
	}
}

// TestStopIsBoundedWhenTheDatabaseHangs: a database that accepts
// connections and never answers neither holds mail nor the stop: SIGTERM
// ends the daemon after the bounded wait for the queue, which it logs.
func TestStopIsBoundedWhenTheDatabaseHangs(t *testing.T) {
	dns := startDNS(t)
	sk := smtpsink.Start(t)
	hung := silentpeer.Listen(t)
	dir := t.TempDir()
	cfg, sock, metrics := writeConfig(t, dir, dns.Addr(), "postgres://am@"+hung+"/reports?sslmode=disable", sk.Addr())
	d := startDaemon(t, "hang", cfg, sock, metrics)
	d.sendInbound(t, repeat(inbound{passDomain, passIP}, 3)...) // each with its Authentication-Results

	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(time.Minute): // the bound is 10 s; a minute is for a busy machine
		t.Fatalf("the daemon did not stop with its database hanging")
	}
	if !strings.Contains(d.logs.String(), "not all recorded") {
		t.Errorf("the stop does not say that evaluations were lost:\n%s", daemontest.Tail(d.logs.String(), 20))
	}
}

// seedRows stores n messages from ip about domain on day, as a daemon
// would have recorded them.
func seedRows(t *testing.T, db string, day time.Time, domain, ip string, n int64) {
	t.Helper()
	ctx := context.Background()
	st, err := reports.Open(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	e := reports.Entry{
		Row: reports.Row{Domain: domain, Day: day, SourceIP: netip.MustParseAddr(ip), Count: n, HeaderFrom: domain,
			EnvelopeFrom: domain, EnvelopeTo: "receiver.test", Helo: "mail." + domain, Disposition: "none",
			DKIMAligned: "fail", SPFAligned: "pass", SPF: []reports.SPFAuth{{Domain: domain, Scope: "mfrom", Result: "pass"}}},
		Policy: reports.Policy{Domain: domain, DiscoveryMethod: "treewalk", P: "none", PSD: "u", Testing: "n", ADKIM: "r", ASPF: "r",
			FO: "0", RUA: []string{"mailto:dmarc@" + domain}, RUALimits: []int64{0}},
		Seen: day.Add(time.Hour),
	}
	if err := st.Add(ctx, []reports.Entry{e}); err != nil {
		t.Fatal(err)
	}
}
