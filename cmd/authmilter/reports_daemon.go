package main

import (
	"context"
	"encoding"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/authmilter/authmilter/milter"
	"github.com/authmilter/authmilter/policy"
	"github.com/authmilter/authmilter/reports"
)

// reportsCloseTimeout bounds the writing of the queued evaluations at
// shutdown: a database that does not answer must not hold the stop.
const reportsCloseTimeout = 10 * time.Second

// reportsService is the daemon's part of DMARC aggregate reports: the
// recorder that stores each inbound DMARC evaluation (reports.record), and
// the daily sender (reports.send_at). Both keep the [reports] settings the
// daemon started with; a reload that changes them is logged as needing a
// restart, because the recorder holds the store open and its queue, and a
// reload must never lose or block recording.
type reportsService struct {
	log     *slog.Logger
	started policy.ReportsConfig
	// rec is nil when recording is off.
	rec *reports.Recorder
	// stopScheduler ends the sender; schedulerDone is closed when it has
	// (nil when send_at is off).
	stopScheduler context.CancelFunc
	schedulerDone chan struct{}
	sends         *prometheus.CounterVec
	stopOnce      sync.Once
	// closeTimeout is reportsCloseTimeout; tests shorten it.
	closeTimeout time.Duration
	// pruneFirst is pruneFirst; tests shorten it.
	pruneFirst time.Duration

	mu     sync.Mutex
	warned map[string]string // changed [reports] settings warned about, with the value
}

// sendStatuses are the report outcomes counted by
// authmilter_reports_sent_total, exported at 0 from the start.
var sendStatuses = []string{reports.StatusSent, reports.StatusSkipped, reports.StatusFailed, reports.StatusNotClaimed}

// startReports starts recording (unless reports.record is false) and the
// daily sender (when reports.send_at is set), and registers their metrics
// on reg. The store is opened by the recorder's own goroutine and retried
// while it fails: a missing folder or a database that is down never stops
// the daemon from signing and verifying.
func startReports(cfg *policy.Config, log *slog.Logger, reg prometheus.Registerer) *reportsService {
	s := &reportsService{log: log, started: cfg.Reports, warned: map[string]string{}, closeTimeout: reportsCloseTimeout,
		pruneFirst: pruneFirst}
	if cfg.Reports.Record {
		db := cfg.Reports.Database
		s.rec = reports.NewRecorder(func(ctx context.Context) (reports.Store, error) {
			return reports.Open(ctx, db)
		}, reports.RecorderOptions{QueueSize: cfg.Reports.QueueSize, Logger: log.With("database", reports.RedactDatabase(db))})
		log.Info("recording DMARC results for aggregate reports", "database", reports.RedactDatabase(db))
	}
	s.sends = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "authmilter_reports_sent_total",
		Help: "DMARC aggregate reports handled by the daemon's daily run (reports.send_at), by outcome: sent, skipped, failed, not-claimed (another host has it, or it was done).",
	}, []string{"status"})
	for _, st := range sendStatuses {
		s.sends.WithLabelValues(st)
	}
	reg.MustRegister(s.sends)
	stat := func(f func(reports.RecorderStats) uint64) func() float64 {
		return func() float64 {
			if s.rec == nil {
				return 0
			}
			return float64(f(s.rec.Stats()))
		}
	}
	reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "authmilter_reports_recorded_total", Help: "Inbound DMARC evaluations written to the reports store.",
		}, stat(func(st reports.RecorderStats) uint64 { return st.Recorded })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "authmilter_reports_dropped_total", Help: "Inbound DMARC evaluations not recorded because the queue (reports.queue_size) was full.",
		}, stat(func(st reports.RecorderStats) uint64 { return st.Dropped })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "authmilter_reports_failed_total", Help: "Inbound DMARC evaluations lost because the reports store could not be opened or written.",
		}, stat(func(st reports.RecorderStats) uint64 { return st.Failed })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "authmilter_reports_queued", Help: "Inbound DMARC evaluations waiting to be written to the reports store.",
		}, stat(func(st reports.RecorderStats) uint64 { return st.Queued })),
	)
	if at, on, _ := cfg.Reports.SendAtTime(); on {
		ctx, cancel := context.WithCancel(context.Background())
		s.stopScheduler, s.schedulerDone = cancel, make(chan struct{})
		go func() {
			defer close(s.schedulerDone)
			s.schedule(ctx, cfg, at)
		}()
		log.Info("DMARC aggregate reports are sent daily", "send_at", cfg.Reports.SendAt+" UTC")
	} else if cfg.Reports.Record {
		ctx, cancel := context.WithCancel(context.Background())
		s.stopScheduler, s.schedulerDone = cancel, make(chan struct{})
		go func() {
			defer close(s.schedulerDone)
			s.pruneDaily(ctx, cfg, s.pruneFirst, pruneEvery)
		}()
	}
	return s
}

// observer wraps the daemon's observer: every finished inbound message
// with a DMARC evaluation is also handed to the recorder (which never
// blocks).
func (s *reportsService) observer(next milter.Observer) milter.Observer {
	if s.rec == nil {
		return next
	}
	return recordingObserver{Observer: next, rec: s.rec}
}

// recordingObserver is a milter.Observer that records DMARC evaluations.
type recordingObserver struct {
	milter.Observer
	rec *reports.Recorder
}

// MessageDone implements milter.Observer. A message that is deferred
// (tempfail) or whose decision could not be applied is not recorded: the
// client sends it again, and it is counted then.
func (o recordingObserver) MessageDone(d *policy.Decision, failed bool) {
	o.Observer.MessageDone(d, failed)
	if d.Evaluation != nil && !failed && d.Action != policy.TempFail {
		o.rec.Record(d.Evaluation)
	}
}

// configChanged is told of each installed config; it warns once about
// each changed [reports] setting, which applies only at restart.
func (s *reportsService) configChanged(cfg *policy.Config) {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range changedReportsSettings(s.started, cfg.Reports) {
		if s.warned[c.name] != c.want {
			s.warned[c.name] = c.want
			s.log.Warn("setting changed; it takes effect only at restart", "setting", c.name, "running", c.running, "config", c.want)
		}
	}
	for name := range s.warned {
		if !slices.ContainsFunc(changedReportsSettings(s.started, cfg.Reports), func(c settingChange) bool { return c.name == name }) {
			delete(s.warned, name) // back as it runs
		}
	}
}

// settingChange is one setting whose config value differs from the
// running one.
type settingChange struct{ name, running, want string }

// changedReportsSettings lists the [reports] keys that differ between
// running and want, with their values (a database password hidden).
func changedReportsSettings(running, want policy.ReportsConfig) []settingChange {
	var out []settingChange
	rv, wv := reflect.ValueOf(running), reflect.ValueOf(want)
	for i := range rv.NumField() {
		f := rv.Type().Field(i)
		a, b := settingText(rv.Field(i).Interface()), settingText(wv.Field(i).Interface())
		if a == b {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		if name == "database" {
			a, b = reports.RedactDatabase(a), reports.RedactDatabase(b)
		}
		out = append(out, settingChange{name: "reports." + name, running: a, want: b})
	}
	return out
}

// settingText is a setting's value as the config file writes it.
func settingText(v any) string {
	if m, ok := v.(encoding.TextMarshaler); ok {
		if b, err := m.MarshalText(); err == nil {
			return string(b)
		}
	}
	return fmt.Sprint(v)
}

// stop ends the sender and writes what is queued, within
// reportsCloseTimeout; it is safe to call more than once, and on nil.
func (s *reportsService) stop() {
	if s == nil {
		return
	}
	s.stopOnce.Do(func() {
		if s.stopScheduler != nil {
			s.stopScheduler()
			<-s.schedulerDone
		}
		if s.rec == nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), s.closeTimeout)
		defer cancel()
		if err := s.rec.Close(ctx); err != nil {
			s.log.Warn("DMARC results still queued at exit were not all recorded", "error", err)
		}
	})
}

// schedule runs the daily send at `at` after midnight UTC until ctx ends.
// When the daemon starts after today's time, yesterday's reports are sent
// at once: a report already sent (by this host or another of the fleet)
// is not sent again, so a restart never sends twice.
func (s *reportsService) schedule(ctx context.Context, cfg *policy.Config, at time.Duration) {
	now := time.Now()
	next := nextSendTime(now, at)
	if !reports.DayOf(now).Add(at).After(now) { // today's time has passed
		s.sendDaily(ctx, cfg, now)
	}
	for {
		t := time.NewTimer(time.Until(next))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		s.sendDaily(ctx, cfg, time.Now())
		next = nextSendTime(time.Now(), at)
	}
}

// nextSendTime is the first time after now that is `at` after a UTC
// midnight.
func nextSendTime(now time.Time, at time.Duration) time.Time {
	next := reports.DayOf(now).Add(at)
	if !next.After(now) {
		next = next.AddDate(0, 0, 1)
	}
	return next
}

// sendDaily sends the reports of the UTC day before now, then prunes what
// is older than reports.keep. Each step is logged; a failure is logged and
// waits for the next day (or `authmilter reports send -day`).
func (s *reportsService) sendDaily(ctx context.Context, cfg *policy.Config, now time.Time) {
	day := reports.DayOf(now).AddDate(0, 0, -1)
	log := s.log.With("day", day.Format("2006-01-02"))
	st, err := reports.Open(ctx, cfg.Reports.Database)
	if err != nil {
		log.Error("DMARC aggregate reports not sent: cannot open the store", "database", reports.RedactDatabase(cfg.Reports.Database), "error", err)
		return
	}
	defer st.Close()
	gen, err := newReportGenerator(cfg, st, s.log)
	if err != nil {
		log.Error("DMARC aggregate reports not sent", "error", err)
		return
	}
	sent, err := gen.Send(ctx, reports.SendOptions{Day: day, Owner: reportOwner(), MaxReportSize: cfg.Reports.MaxReportSize})
	counts := map[string]int{}
	for _, r := range sent {
		counts[r.Status]++
		s.sends.WithLabelValues(label(r.Status)).Inc()
		if r.Status == reports.StatusFailed {
			log.Warn("DMARC aggregate report not sent", "domain", r.Domain, "report_id", r.ReportID, "detail", r.Detail)
		}
	}
	if err != nil {
		log.Error("DMARC aggregate reports: the daily run stopped", "error", err,
			"sent", counts[reports.StatusSent], "failed", counts[reports.StatusFailed])
	} else {
		log.Info("DMARC aggregate reports done", "domains", len(sent), "sent", counts[reports.StatusSent],
			"skipped", counts[reports.StatusSkipped], "failed", counts[reports.StatusFailed],
			"not_claimed", counts[reports.StatusNotClaimed])
	}
	pruneReports(ctx, st, cfg, now, log)
}

// pruneReports deletes what is older than reports.keep, logging the
// outcome: after every daily send (the daemon's send_at and `reports
// send`), and once a day in a daemon that records but does not send.
func pruneReports(ctx context.Context, st reports.Store, cfg *policy.Config, now time.Time, log *slog.Logger) {
	before := reports.DayOf(now).Add(-cfg.Reports.Keep.Duration)
	n, err := st.Prune(ctx, before)
	if err != nil {
		log.Error("DMARC report data not pruned", "before", before.Format("2006-01-02"), "error", err)
		return
	}
	log.Info("DMARC report data pruned", "before", before.Format("2006-01-02"), "rows", n)
}

// pruneEvery is how often a daemon that records but does not send
// (reports.send_at off: reports are sent from cron) prunes its store;
// pruneFirst is when it does so first after start.
const (
	pruneEvery = 24 * time.Hour
	pruneFirst = 10 * time.Minute
)

// pruneDaily prunes the store every pruneEvery until ctx ends, so that
// recording alone (on by default) never grows the store without bound.
func (s *reportsService) pruneDaily(ctx context.Context, cfg *policy.Config, first, every time.Duration) {
	wait := first
	for {
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		wait = every
		st, err := reports.Open(ctx, cfg.Reports.Database)
		if err != nil {
			continue // the recorder already says why the store cannot be opened
		}
		pruneReports(ctx, st, cfg, time.Now(), s.log)
		st.Close()
	}
}
