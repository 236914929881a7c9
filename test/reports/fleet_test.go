package reports

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/authmilter/authmilter/internal/smtpsink"
	"github.com/authmilter/authmilter/reports"
)

// TestFleetSharesOnePostgreSQL: two MX hosts record into one PostgreSQL,
// one report per domain is sent however many hosts run the send, and a
// database outage never touches the mail.
func TestFleetSharesOnePostgreSQL(t *testing.T) {
	pg := needPostgres(t)
	// A database of its own for each run (go test -count=N reuses the
	// package's server).
	dsn, err := pg.CreateDatabase(fmt.Sprintf("fleet_%d", time.Now().UnixNano()))
	if err != nil {
		t.Fatal(err)
	}
	dns := startDNS(t)
	sk := smtpsink.Start(t)
	var mx [2]*daemon
	for i, name := range []string{"a", "b"} {
		dir := t.TempDir()
		cfg, sock, metrics := writeConfig(t, dir, dns.Addr(), dsn, sk.Addr())
		mx[i] = startDaemon(t, name, cfg, sock, metrics)
	}
	day := reports.DayOf(time.Now())

	// Both hosts see mail from the same sources: the rows add up.
	pass, fail := inbound{passDomain, passIP}, inbound{failDomain, failIP}
	mx[0].sendInbound(t, append(repeat(pass, 3), repeat(fail, 2)...)...)
	mx[1].sendInbound(t, append(repeat(pass, 4), repeat(fail, 1)...)...)
	mx[0].waitMetric(t, "authmilter_reports_recorded_total", 5, time.Minute)
	mx[1].waitMetric(t, "authmilter_reports_recorded_total", 5, time.Minute)

	list := runCLI(t, "reports", "list", "-config", mx[0].cfgPath, "-days", "1", "-json")
	var days []struct {
		Domain   string `json:"domain"`
		Messages int64  `json:"messages"`
		Rows     int    `json:"rows"`
	}
	if err := json.Unmarshal([]byte(list), &days); err != nil {
		t.Fatalf("reports list -json: %v\n%s", err, list)
	}
	got := map[string]int64{}
	for _, d := range days {
		got[d.Domain] = d.Messages
		if d.Rows != 1 {
			t.Errorf("%s: %d rows, want 1 (one source, identical results, from both hosts)", d.Domain, d.Rows)
		}
	}
	if got[passDomain] != 7 || got[failDomain] != 3 || len(got) != 2 {
		t.Errorf("recorded messages %v, want %s 7 and %s 3", got, passDomain, failDomain)
	}

	// Both hosts' cron runs at the same moment.
	dayArg := day.Format("2006-01-02")
	var wg sync.WaitGroup
	outs := make([]string, 2)
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var stdout, stderr bytes.Buffer
			cmd := exec.Command(binary, "reports", "send", "-config", mx[i].cfgPath, "-day", dayArg)
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Run(); err != nil {
				t.Errorf("reports send on %s: %v\n%s\n%s", mx[i].name, err, stdout.String(), stderr.String())
			}
			outs[i] = stdout.String()
		}()
	}
	wg.Wait()
	sentLines := map[string]int{}
	for _, out := range outs {
		for _, l := range strings.Split(out, "\n") {
			if f := strings.Fields(l); len(f) >= 2 && f[1] == "sent" {
				sentLines[f[0]]++
			}
		}
	}
	if sentLines[passDomain] != 1 || sentLines[failDomain] != 1 {
		t.Errorf("sent lines per domain %v, want one each:\n%s\n---\n%s", sentLines, outs[0], outs[1])
	}
	msgs := sk.Messages()
	if len(msgs) != 2 {
		t.Fatalf("%d report messages arrived, want exactly 2 (one per domain)", len(msgs))
	}
	want := map[string]struct {
		rcpt, ip, dkim, spf string
		count               int64
	}{
		passDomain: {"dmarc@" + passDomain, passIP, "fail", "pass", 7},
		failDomain: {"dmarc@" + failDomain, failIP, "fail", "fail", 3},
	}
	seen := map[string]bool{}
	for _, m := range msgs {
		_, f := readReportMail(t, m.Data)
		w, ok := want[f.Domain]
		if !ok || seen[f.Domain] {
			t.Errorf("unexpected report about %q", f.Domain)
			continue
		}
		seen[f.Domain] = true
		if strings.Join(m.Rcpts, ",") != w.rcpt {
			t.Errorf("%s: report sent to %v, want %s", f.Domain, m.Rcpts, w.rcpt)
		}
		if len(f.Records) != 1 {
			t.Errorf("%s: %d records, want 1", f.Domain, len(f.Records))
			continue
		}
		r := f.Records[0]
		if r.SourceIP != w.ip || r.Count != w.count || r.DKIM != w.dkim || r.SPF != w.spf || r.Disposition != "none" || r.HeaderFrom != f.Domain {
			t.Errorf("%s: record %+v, want %s count %d dkim %s spf %s disposition none", f.Domain, r, w.ip, w.count, w.dkim, w.spf)
		}
		if f.OrgName != "Receiver Test" {
			t.Errorf("%s: org_name %q", f.Domain, f.OrgName)
		}
	}

	// PostgreSQL goes down under the running daemons.
	if err := pg.Stop(); err != nil {
		t.Fatal(err)
	}
	restarted := false
	t.Cleanup(func() {
		if !restarted {
			pg.Restart()
		}
	})
	failedBefore := mx[0].metric(t, "authmilter_reports_failed_total")
	start := time.Now()
	mx[0].sendInbound(t, repeat(pass, 5)...) // each checked: accepted, with Authentication-Results
	t.Logf("5 messages with PostgreSQL down took %s", time.Since(start))
	mx[0].waitMetric(t, "authmilter_reports_failed_total", failedBefore+1, 2*time.Minute)

	// Back: recording resumes.
	if err := pg.Restart(); err != nil {
		t.Fatal(err)
	}
	restarted = true
	recorded := mx[0].metric(t, "authmilter_reports_recorded_total")
	mx[0].sendInbound(t, repeat(pass, 2)...)
	mx[0].waitMetric(t, "authmilter_reports_recorded_total", recorded+2, 2*time.Minute)
	list = runCLI(t, "reports", "list", "-config", mx[1].cfgPath, "-days", "1", "-json")
	if err := json.Unmarshal([]byte(list), &days); err != nil {
		t.Fatalf("reports list -json: %v\n%s", err, list)
	}
	for _, d := range days {
		if d.Domain == passDomain && d.Messages < 9 {
			t.Errorf("%s: %d messages after PostgreSQL came back, want at least 9 (7 + the 2 sent after)", passDomain, d.Messages)
		}
	}
}
