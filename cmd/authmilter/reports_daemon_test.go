package main

import (
	"bytes"
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/authmilter/authmilter/internal/silentpeer"
	"github.com/authmilter/authmilter/internal/syncbuf"
	"github.com/authmilter/authmilter/policy"
	"github.com/authmilter/authmilter/reports"
)

func TestNextSendTime(t *testing.T) {
	at := time.Hour + 15*time.Minute
	for _, tc := range []struct{ now, want string }{
		{"2026-11-24T00:00:00Z", "2026-11-24T01:15:00Z"},
		{"2026-11-24T01:14:59Z", "2026-11-24T01:15:00Z"},
		{"2026-11-24T01:15:00Z", "2026-11-25T01:15:00Z"}, // just run: the next is tomorrow
		{"2026-11-24T23:59:59Z", "2026-11-25T01:15:00Z"},
		{"2026-12-31T12:00:00Z", "2027-01-01T01:15:00Z"},
		{"2026-11-24T01:30:00+01:00", "2026-11-24T01:15:00Z"}, // 00:30 UTC: UTC decides
	} {
		now, _ := time.Parse(time.RFC3339, tc.now)
		want, _ := time.Parse(time.RFC3339, tc.want)
		if got := nextSendTime(now, at); !got.Equal(want) {
			t.Errorf("nextSendTime(%s) = %s, want %s", tc.now, got.UTC().Format(time.RFC3339), want.Format(time.RFC3339))
		}
	}
}

func TestReportsSettingChangeWarnsOnceWithoutPassword(t *testing.T) {
	var logs bytes.Buffer
	started := policy.DefaultConfig()
	s := &reportsService{log: slog.New(slog.NewTextHandler(&logs, nil)), started: started.Reports, warned: map[string]string{}}

	changed := policy.DefaultConfig()
	changed.Reports.Database = "postgres://am:s3cret@db.example/reports"
	changed.Reports.Keep = policy.Duration{Duration: 90 * 24 * time.Hour}
	s.configChanged(changed)
	s.configChanged(changed) // a second reload with the same file: no new line
	out := logs.String()
	if n := strings.Count(out, "setting=reports.database"); n != 1 {
		t.Errorf("%d warnings about reports.database, want 1:\n%s", n, out)
	}
	if !strings.Contains(out, "setting=reports.keep") || !strings.Contains(out, "config=90d") {
		t.Errorf("no warning about reports.keep 90d:\n%s", out)
	}
	if strings.Contains(out, "s3cret") {
		t.Errorf("the database password was logged:\n%s", out)
	}
	// Back as it runs, then changed again: warned again.
	s.configChanged(started)
	logs.Reset()
	s.configChanged(changed)
	if !strings.Contains(logs.String(), "setting=reports.database") {
		t.Errorf("no warning after the setting came back and changed again:\n%s", logs.String())
	}
	// An unchanged [reports] says nothing.
	logs.Reset()
	s2 := &reportsService{log: slog.New(slog.NewTextHandler(&logs, nil)), started: started.Reports, warned: map[string]string{}}
	s2.configChanged(policy.DefaultConfig())
	if logs.Len() != 0 {
		t.Errorf("an unchanged [reports] logged:\n%s", logs.String())
	}
	var nilService *reportsService
	nilService.configChanged(changed) // a daemon without reports
	nilService.stop()
}

// countingObserver counts what the milter reports.
type countingObserver struct {
	mu   sync.Mutex
	done int
}

func (o *countingObserver) MessageDone(*policy.Decision, bool) { o.mu.Lock(); o.done++; o.mu.Unlock() }
func (o *countingObserver) ConnectionEvent(string)             {}

func TestRecordingObserverRecordsWhatIsDelivered(t *testing.T) {
	db := filepath.Join(t.TempDir(), "reports.db")
	cfg := policy.DefaultConfig()
	cfg.Reports.Database = db
	reg := prometheus.NewRegistry()
	s := startReports(cfg, slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil)), reg)
	inner := &countingObserver{}
	obs := s.observer(inner)

	report := policyDecision(policy.Accept, "report.test")
	report.Evaluation.IsReport = true
	for _, tc := range []struct {
		d      *policy.Decision
		failed bool
	}{
		{policyDecision(policy.Accept, "a.test"), false},
		{policyDecision(policy.Reject, "a.test"), false},          // rejected: counted with disposition
		{policyDecision(policy.Quarantine, "a.test"), false},      // held: counted
		{policyDecision(policy.TempFail, "tempfail.test"), false}, // the client retries: not yet
		{policyDecision(policy.Accept, "failed.test"), true},      // not applied
		{&policy.Decision{Action: policy.Accept}, false},          // no DMARC record
		{report, false}, // a report: never reported about
	} {
		obs.MessageDone(tc.d, tc.failed)
	}
	s.stop()
	if inner.done != 7 {
		t.Errorf("the daemon's observer saw %d messages, want 7", inner.done)
	}
	st, err := reports.Open(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	day := reports.DayOf(time.Now())
	domains, err := st.Domains(context.Background(), day)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(domains, ",") != "a.test" {
		t.Errorf("recorded domains %v, want only a.test", domains)
	}
	_, rows, _ := st.Rows(context.Background(), "a.test", day)
	var n int64
	for _, r := range rows {
		n += r.Count
	}
	if n != 3 {
		t.Errorf("a.test: %d messages recorded, want 3", n)
	}
	if v := gatherValue(t, reg, "authmilter_reports_recorded_total"); v != 3 {
		t.Errorf("authmilter_reports_recorded_total = %v, want 3", v)
	}
}

func TestRecordingOffKeepsTheObserver(t *testing.T) {
	cfg := policy.DefaultConfig()
	cfg.Reports.Record = false
	reg := prometheus.NewRegistry()
	s := startReports(cfg, slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil)), reg)
	defer s.stop()
	inner := &countingObserver{}
	if obs := s.observer(inner); obs != inner {
		t.Errorf("with reports.record = false the observer is wrapped")
	}
	// The series exist (at 0), so that alerts work on every host.
	for _, name := range []string{"authmilter_reports_recorded_total", "authmilter_reports_dropped_total", "authmilter_reports_failed_total"} {
		if v := gatherValue(t, reg, name); v != 0 {
			t.Errorf("%s = %v", name, v)
		}
	}
}

func TestStoreInMissingFolderNeverBlocksMail(t *testing.T) {
	cfg := policy.DefaultConfig()
	cfg.Reports.Database = filepath.Join(t.TempDir(), "no", "such", "folder", "reports.db")
	cfg.Reports.QueueSize = 10
	var logs syncbuf.Buffer
	reg := prometheus.NewRegistry()
	s := startReports(cfg, slog.New(slog.NewTextHandler(&logs, nil)), reg)
	obs := s.observer(&countingObserver{})
	start := time.Now()
	for range 1000 { // far more than the queue holds
		obs.MessageDone(policyDecision(policy.Accept, "a.test"), false)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("1000 messages took %s with the store unavailable", d)
	}
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(logs.String(), "no/such/folder") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(logs.String(), "no/such/folder") {
		t.Errorf("nothing logged about the store that cannot be opened:\n%s", logs.String())
	}
	s.stop()
	lost := gatherValue(t, reg, "authmilter_reports_dropped_total") + gatherValue(t, reg, "authmilter_reports_failed_total")
	if lost != 1000 {
		t.Errorf("dropped + failed = %v, want all 1000 messages counted as not recorded", lost)
	}
}

func TestSendDailySendsYesterdayAndPrunes(t *testing.T) {
	e := newReportsEnv(t)
	now := time.Now()
	y := reports.DayOf(now).AddDate(0, 0, -1)
	old := reports.DayOf(now).AddDate(0, 0, -45) // beyond keep (30d)
	e.seed(t, y, testEntry("pass.test", "192.0.2.1", 5, true))
	e.seed(t, old, testEntry("pass.test", "192.0.2.1", 1, true))
	cfg, _, err := loadConfig(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	var logs syncbuf.Buffer
	reg := prometheus.NewRegistry()
	cfg.Reports.Record = false
	s := startReports(cfg, slog.New(slog.NewTextHandler(&logs, nil)), reg)
	defer s.stop()
	s.sendDaily(context.Background(), cfg, now)

	if len(e.sink.Messages()) == 0 {
		t.Fatalf("the daily run mailed nothing:\n%s", logs.String())
	}
	if v := gatherValue(t, reg, `authmilter_reports_sent_total{status="sent"}`); v != 1 {
		t.Errorf(`authmilter_reports_sent_total{status="sent"} = %v, want 1`, v)
	}
	for _, want := range []string{"DMARC aggregate reports done", "sent=1", "DMARC report data pruned", "rows=1"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	}
	st, err := reports.Open(context.Background(), e.db)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if d, _ := st.Domains(context.Background(), old); len(d) != 0 {
		t.Errorf("rows older than keep are still there: %v", d)
	}
	// Run again (a restart after send_at): nothing is sent twice.
	n := len(e.sink.Messages())
	s.sendDaily(context.Background(), cfg, now)
	if len(e.sink.Messages()) != n {
		t.Errorf("a second daily run mailed again")
	}
}

// TestPruneDailyWithoutSendAt: a daemon that records but does not send
// (reports sent from cron, or not at all) still prunes its store, so that
// recording, on by default, never grows it without bound.
func TestPruneDailyWithoutSendAt(t *testing.T) {
	e := newReportsEnv(t)
	old := reports.DayOf(time.Now()).AddDate(0, 0, -45)
	e.seed(t, old, testEntry("pass.test", "192.0.2.1", 1, true))
	cfg, _, err := loadConfig(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	var logs syncbuf.Buffer
	s := &reportsService{log: slog.New(slog.NewTextHandler(&logs, nil))}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.pruneDaily(ctx, cfg, 0, time.Hour)
	}()
	deadline := time.Now().Add(time.Minute)
	for !strings.Contains(logs.String(), "DMARC report data pruned") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	<-done
	if !strings.Contains(logs.String(), "rows=1") {
		t.Fatalf("the store was not pruned:\n%s", logs.String())
	}
}

// gatherValue reads one series (name, or name{label="value"}) from reg.
func gatherValue(t *testing.T, reg *prometheus.Registry, series string) float64 {
	t.Helper()
	name, labels, _ := strings.Cut(series, "{")
	labels = strings.TrimSuffix(labels, "}")
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			var ls []string
			for _, l := range m.GetLabel() {
				ls = append(ls, l.GetName()+`="`+l.GetValue()+`"`)
			}
			if strings.Join(ls, ",") != labels {
				continue
			}
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("no series %s", series)
	return 0
}

// TestStopIsBoundedWhenTheDatabaseHangs: a PostgreSQL address that accepts
// connections and never answers; the stop still returns after the close
// timeout, and says that evaluations were not recorded.
func TestStopIsBoundedWhenTheDatabaseHangs(t *testing.T) {
	hung := silentpeer.Listen(t)
	cfg := policy.DefaultConfig()
	cfg.Reports.Database = "postgres://am@" + hung + "/reports?sslmode=disable&connect_timeout=600"
	var logs syncbuf.Buffer
	s := startReports(cfg, slog.New(slog.NewTextHandler(&logs, nil)), prometheus.NewRegistry())
	s.closeTimeout = 500 * time.Millisecond
	obs := s.observer(&countingObserver{})
	for range 5 {
		obs.MessageDone(policyDecision(policy.Accept, "a.test"), false)
	}
	stopped := make(chan struct{})
	go func() { s.stop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(time.Minute): // the bound is 0.5 s; a minute is for a busy machine
		t.Fatalf("stop did not return with the database hanging:\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), "not all recorded") {
		t.Errorf("the stop does not say what was lost:\n%s", logs.String())
	}
}
