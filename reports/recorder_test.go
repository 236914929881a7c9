package reports

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/authmilter/authmilter/internal/pgtest"
	"github.com/authmilter/authmilter/internal/syncbuf"
	"github.com/authmilter/authmilter/policy"
)

// recorderTestStore is a Store whose Add can block or fail; the recorder
// uses only Add and Close (the embedded nil Store panics on the rest).
type recorderTestStore struct {
	Store
	// entered receives once per Add call, if set; release, if set, is
	// waited for before Add returns (ignoring ctx, as a hung driver
	// would).
	entered, release chan struct{}
	failing          atomic.Bool
	mu               sync.Mutex
	messages         int64
	closed           bool
}

func (s *recorderTestStore) Add(ctx context.Context, entries []Entry) error {
	if s.entered != nil {
		s.entered <- struct{}{}
	}
	if s.release != nil {
		<-s.release
	}
	if s.failing.Load() {
		return errors.New("injected: database unavailable")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range entries {
		s.messages += e.Row.Count
	}
	return nil
}

func (s *recorderTestStore) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return nil
}

func (s *recorderTestStore) total() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.messages
}

// recorderTestEval is an evaluation from 192.0.2.<n> at noon of
// storeTestDay.
func recorderTestEval(n int) *policy.Evaluation {
	e := entryTestEvaluation()
	e.SourceIP = netip.AddrFrom4([4]byte{192, 0, 2, byte(n)})
	e.Time = storeTestDay.Add(12 * time.Hour)
	return e
}

// recorderTestWait polls cond until it holds, failing after a generous
// deadline: the tests wait for events, they never measure time.
func recorderTestWait(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// recorderTestNoBlock runs fn and fails the test if it does not return:
// Record must never wait for the store.
func recorderTestNoBlock(t *testing.T, what string, fn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn()
	}()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatalf("%s blocked", what)
	}
}

func recorderTestClose(t *testing.T, r *Recorder) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := r.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestRecorderNeverBlocksOnASlowStore(t *testing.T) {
	const queue = 10
	store := &recorderTestStore{entered: make(chan struct{}, 100), release: make(chan struct{})}
	r := NewRecorder(func(context.Context) (Store, error) { return store, nil },
		RecorderOptions{QueueSize: queue, BatchSize: 4, FlushEvery: 5 * time.Millisecond})
	if !r.Record(recorderTestEval(1)) {
		t.Fatal("the first evaluation was not queued")
	}
	<-store.entered // the writer is stuck in Add with one evaluation
	accepted := 0
	recorderTestNoBlock(t, "Record", func() {
		for i := 0; i < 1000; i++ {
			if r.Record(recorderTestEval(i % 200)) {
				accepted++
			}
		}
	})
	// The one being written counts against the queue: the recorder never
	// holds more than QueueSize.
	if accepted != queue-1 {
		t.Errorf("%d more accepted while the store hung, want %d", accepted, queue-1)
	}
	st := r.Stats()
	if st.Dropped != uint64(1000-accepted) || st.Queued != queue {
		t.Errorf("stats %+v, want %d dropped and %d queued", st, 1000-accepted, queue)
	}
	close(store.release)
	recorderTestClose(t, r)
	st = r.Stats()
	if st.Recorded != queue || st.Queued != 0 || st.Failed != 0 || store.total() != queue || !store.closed {
		t.Errorf("after Close: stats %+v, store has %d, closed %v; want all %d written and the store closed", st, store.total(), store.closed, queue)
	}
}

func TestRecorderRetriesOpen(t *testing.T) {
	var logs syncbuf.Buffer
	store := &recorderTestStore{}
	var attempts atomic.Int64
	allow := make(chan struct{})
	open := func(context.Context) (Store, error) {
		attempts.Add(1)
		select {
		case <-allow:
			return store, nil
		default:
			return nil, errors.New("injected: connection refused")
		}
	}
	r := NewRecorder(open, RecorderOptions{QueueSize: 100, FlushEvery: 5 * time.Millisecond, RetryEvery: 10 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	recorderTestNoBlock(t, "Record", func() {
		for i := 0; i < 3; i++ {
			if !r.Record(recorderTestEval(i)) {
				t.Error("Record refused while the store is down")
			}
		}
	})
	recorderTestWait(t, "the evaluations to count as failed", func() bool { return r.Stats().Failed == 3 })
	recorderTestWait(t, "more attempts to open", func() bool { return attempts.Load() >= 3 })
	close(allow)
	recorderTestWait(t, "the store to open", func() bool { return strings.Contains(logs.String(), "store opened") })
	for i := 0; i < 2; i++ {
		r.Record(recorderTestEval(i))
	}
	recorderTestWait(t, "the evaluations to be written", func() bool { return r.Stats().Recorded == 2 })
	recorderTestClose(t, r)
	if n := strings.Count(logs.String(), "cannot open the store"); n != 1 {
		t.Errorf("%d log lines about the failing open, want 1 for the whole streak:\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), "injected: connection refused") {
		t.Errorf("the log does not say why:\n%s", logs.String())
	}
}

func TestRecorderLogsOneLinePerFailureStreak(t *testing.T) {
	var logs syncbuf.Buffer
	store := &recorderTestStore{}
	store.failing.Store(true)
	r := NewRecorder(func(context.Context) (Store, error) { return store, nil },
		RecorderOptions{QueueSize: 100, FlushEvery: 5 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	for i := 1; i <= 4; i++ {
		r.Record(recorderTestEval(i))
		recorderTestWait(t, "a failed batch", func() bool { return r.Stats().Failed == uint64(i) })
	}
	store.failing.Store(false)
	r.Record(recorderTestEval(9))
	recorderTestWait(t, "a written batch", func() bool { return r.Stats().Recorded == 1 })
	store.failing.Store(true)
	r.Record(recorderTestEval(10))
	recorderTestWait(t, "a failed batch", func() bool { return r.Stats().Failed == 5 })
	recorderTestClose(t, r)
	out := logs.String()
	if n := strings.Count(out, "writing to the store failed"); n != 2 {
		t.Errorf("%d failure lines for two streaks, want 2:\n%s", n, out)
	}
	if !strings.Contains(out, "works again") || !strings.Contains(out, "lost_messages=4") {
		t.Errorf("no line saying writing resumed after 4 lost:\n%s", out)
	}
}

func TestRecorderCloseFlushesIntoTheStore(t *testing.T) {
	path := filepath.Join(t.TempDir(), "reports.db")
	r := NewRecorder(func(ctx context.Context) (Store, error) { return Open(ctx, path) },
		RecorderOptions{QueueSize: 1000, BatchSize: 1000, FlushEvery: time.Hour})
	for i := 0; i < 15; i++ {
		if !r.Record(recorderTestEval(1 + i/10)) {
			t.Fatal("Record refused")
		}
	}
	// Not recordable: refused without counting.
	report := recorderTestEval(3)
	report.IsReport = true
	if r.Record(report) || r.Record(nil) {
		t.Error("report mail or nil was recorded")
	}
	recorderTestClose(t, r)
	if st := r.Stats(); st.Recorded != 15 || st.Dropped != 0 || st.Queued != 0 {
		t.Errorf("stats %+v, want 15 recorded", st)
	}
	if r.Record(recorderTestEval(1)) {
		t.Error("Record after Close queued")
	}
	if st := r.Stats(); st.Dropped != 1 {
		t.Errorf("Record after Close: %d dropped, want 1", st.Dropped)
	}
	s := storeTestOpen(t, path)
	_, rows, err := s.Rows(storeTestContext(t), "example.com", storeTestDay)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 || rows[0].Count != 10 || rows[1].Count != 5 {
		t.Errorf("rows %+v, want counts 10 and 5", rows)
	}
}

func TestRecorderCloseIsBoundedByItsContext(t *testing.T) {
	store := &recorderTestStore{release: make(chan struct{})}
	r := NewRecorder(func(context.Context) (Store, error) { return store, nil },
		RecorderOptions{QueueSize: 10, FlushEvery: time.Millisecond})
	r.Record(recorderTestEval(1))
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := r.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Close with a hung store = %v, want the context's error", err)
	}
	close(store.release)
	recorderTestClose(t, r) // the goroutine ends once the store returns
}

func TestRecorderConcurrentRecordsAddUp(t *testing.T) {
	const (
		sessions = 32
		each     = 200
	)
	path := filepath.Join(t.TempDir(), "reports.db")
	r := NewRecorder(func(ctx context.Context) (Store, error) { return Open(ctx, path) },
		RecorderOptions{QueueSize: sessions * each, BatchSize: 100, FlushEvery: 5 * time.Millisecond})
	var wg sync.WaitGroup
	for g := 0; g < sessions; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < each; i++ {
				if !r.Record(recorderTestEval(i % 7)) {
					t.Error("Record refused below the queue size")
					return
				}
			}
		}(g)
	}
	wg.Wait()
	recorderTestClose(t, r)
	if st := r.Stats(); st.Recorded != sessions*each {
		t.Errorf("stats %+v, want %d recorded", st, sessions*each)
	}
	s := storeTestOpen(t, path)
	_, rows, err := s.Rows(storeTestContext(t), "example.com", storeTestDay)
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, row := range rows {
		total += row.Count
	}
	if len(rows) != 7 || total != sessions*each {
		t.Errorf("%d rows with %d messages, want 7 with %d", len(rows), total, sessions*each)
	}
}

func TestRecorderAggregate(t *testing.T) {
	a1, a2, b := storeTestEntry("192.0.2.1"), storeTestEntry("192.0.2.1"), storeTestEntry("192.0.2.2")
	a2.Seen, a2.Policy.P = a2.Seen.Add(time.Minute), "none"
	bad := storeTestEntry("192.0.2.3")
	bad.Row.Domain = ""
	got := recorderAggregate([]Entry{a1, b, a2, bad, bad})
	if len(got) != 4 {
		t.Fatalf("%d entries, want 4 (a, b, and the two unusable ones as they were)", len(got))
	}
	if got[0].Row.Count != 2 || got[0].Policy.P != "none" || !got[0].Seen.Equal(a2.Seen) || got[1].Row.Count != 1 {
		t.Errorf("aggregated %+v", got[:2])
	}
}

// TestRecorderSurvivesAPostgresOutage stops the database under a running
// recorder: Record keeps returning, the loss is counted, and writing
// resumes when the database is back.
func TestRecorderSurvivesAPostgresOutage(t *testing.T) {
	dir, err := os.MkdirTemp("", "reports-outage-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	srv, err := pgtest.Start(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Stop(); err != nil {
			t.Error(err)
		}
	})
	dsn, err := srv.CreateDatabase("outage")
	if err != nil {
		t.Fatal(err)
	}
	var logs syncbuf.Buffer
	r := NewRecorder(func(ctx context.Context) (Store, error) { return Open(ctx, dsn) },
		RecorderOptions{QueueSize: 1000, FlushEvery: 10 * time.Millisecond, RetryEvery: 50 * time.Millisecond,
			Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	for i := 0; i < 5; i++ {
		r.Record(recorderTestEval(i))
	}
	recorderTestWait(t, "the first writes", func() bool { return r.Stats().Recorded == 5 })

	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	recorderTestWait(t, "failures to be counted while the database is down", func() bool {
		recorderTestNoBlock(t, "Record with the database down", func() { r.Record(recorderTestEval(1)) })
		return r.Stats().Failed > 0
	})
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	before := r.Stats().Recorded
	recorderTestWait(t, "writing to resume after the restart", func() bool {
		r.Record(recorderTestEval(2))
		return r.Stats().Recorded > before
	})
	recorderTestClose(t, r)
	st := r.Stats()
	if st.Dropped != 0 || st.Queued != 0 {
		t.Errorf("stats %+v: nothing should be dropped or left", st)
	}
	s := storeTestOpen(t, dsn)
	_, rows, err := s.Rows(storeTestContext(t), "example.com", storeTestDay)
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, row := range rows {
		total += row.Count
	}
	if total != int64(st.Recorded) {
		t.Errorf("the database holds %d messages, the recorder counted %d written", total, st.Recorded)
	}
	if !strings.Contains(logs.String(), "writing to the store failed") || !strings.Contains(logs.String(), "works again") {
		t.Errorf("the outage and the recovery are not logged:\n%s", logs.String())
	}
	t.Logf("through the outage: %+v", st)
}
