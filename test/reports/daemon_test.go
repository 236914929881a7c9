package reports

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDaemonStartsWithoutStateFolder: the store's folder does not exist
// (the default /var/lib/authmilter/reports.db where nobody made the
// folder): the daemon starts, serves mail with its Authentication-Results,
// logs why the store cannot be opened, and counts what it could not
// record.
func TestDaemonStartsWithoutStateFolder(t *testing.T) {
	dns := startDNS(t)
	sk := startSink(t)
	dir := t.TempDir()
	missing := filepath.Join(dir, "var", "lib", "authmilter", "reports.db")
	cfg, sock, metrics := writeConfig(t, dir, dns.Addr(), missing, sk.addr)
	d := startDaemon(t, "nostate", cfg, sock, metrics)
	d.sendInbound(t, repeat(inbound{passDomain, passIP}, 3)...)
	line := d.waitLog(t, "level=ERROR", 0, time.Minute)
	if !strings.Contains(line, filepath.Dir(missing)+" does not exist") {
		t.Errorf("the error line does not say which folder is missing: %s", line)
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
	sk := startSink(t)
	dir := t.TempDir()
	db := filepath.Join(dir, "reports.db")
	cfg, sock, metrics := writeConfig(t, dir, dns.Addr(), db, sk.addr)
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
