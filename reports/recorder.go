package reports

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/authmilter/authmilter/policy"
)

// Recorder defaults.
const (
	defaultRecorderBatchSize  = 500
	defaultRecorderFlushEvery = time.Second
	defaultRecorderRetryEvery = 30 * time.Second
	// recorderOpTimeout bounds one open of the store and one batch
	// written, so that a database that hangs is a failure, not a stuck
	// writer.
	recorderOpTimeout = time.Minute
)

// RecorderOptions configures a Recorder.
type RecorderOptions struct {
	// QueueSize bounds the evaluations held (queued, or in the batch being
	// written); beyond it Record drops and counts. Required; below 1 it is
	// taken as 1.
	QueueSize int
	// BatchSize is how many evaluations one write takes at most. Default
	// 500.
	BatchSize int
	// FlushEvery is how long an evaluation waits at most for its batch to
	// fill. Default 1s.
	FlushEvery time.Duration
	// RetryEvery is how often a failed open of the store is tried again.
	// Default 30s.
	RetryEvery time.Duration
	// Logger receives the recorder's failures. Default slog.Default().
	Logger *slog.Logger
}

// RecorderStats are a Recorder's counters, in evaluations (messages).
type RecorderStats struct {
	// Recorded were written to the store.
	Recorded uint64
	// Dropped were not queued: the queue was full, or the recorder closed.
	Dropped uint64
	// Failed were lost to store errors, a store that could not be opened
	// included.
	Failed uint64
	// Queued are held now, waiting to be written.
	Queued uint64
}

// Recorder writes inbound DMARC evaluations to a store from one goroutine,
// in batches, so that a message never waits for the database: Record only
// queues, and drops (counting) when the bounded queue is full. A store
// that cannot be opened or written loses the evaluations of that time
// (counted as Failed and logged once per streak of failures), and the
// daemon goes on signing and verifying.
type Recorder struct {
	open func(context.Context) (Store, error)
	o    RecorderOptions
	log  *slog.Logger

	queue chan Entry
	// held counts the evaluations queued or in the batch being written;
	// Record admits one only below QueueSize, so that the recorder never
	// holds more.
	held                      atomic.Int64
	recorded, dropped, failed atomic.Uint64
	closed                    atomic.Bool
	stop, done                chan struct{}
	ctx                       context.Context
	cancel                    context.CancelFunc
	closeOnce                 sync.Once
	closeErr                  error
}

// NewRecorder starts the writer goroutine. open is called by that
// goroutine (never by Record), and again every RetryEvery while it fails,
// so that a database that is down at start leaves the daemon running; the
// evaluations of that time are counted as Failed.
func NewRecorder(open func(context.Context) (Store, error), o RecorderOptions) *Recorder {
	if o.QueueSize < 1 {
		o.QueueSize = 1
	}
	if o.BatchSize < 1 {
		o.BatchSize = defaultRecorderBatchSize
	}
	if o.FlushEvery <= 0 {
		o.FlushEvery = defaultRecorderFlushEvery
	}
	if o.RetryEvery <= 0 {
		o.RetryEvery = defaultRecorderRetryEvery
	}
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &Recorder{
		open:   open,
		o:      o,
		log:    log,
		queue:  make(chan Entry, o.QueueSize),
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
		ctx:    ctx,
		cancel: cancel,
	}
	go r.run()
	return r
}

// Record queues the evaluation e and never blocks. It returns false when e
// was not queued: not recordable (see EntryFromEvaluation), or dropped
// because the queue is full or the recorder closed (counted in Dropped).
// Safe for concurrent use by many milter sessions.
func (r *Recorder) Record(e *policy.Evaluation) bool {
	entry, ok := EntryFromEvaluation(e)
	if !ok {
		return false
	}
	if r.closed.Load() {
		r.dropped.Add(1)
		return false
	}
	if r.held.Add(1) > int64(r.o.QueueSize) {
		r.held.Add(-1)
		r.dropped.Add(1)
		return false
	}
	select {
	case r.queue <- entry:
		return true
	default:
		// Cannot happen: the channel holds QueueSize and held admits no
		// more. Kept so that Record can never block.
		r.held.Add(-1)
		r.dropped.Add(1)
		return false
	}
}

// Stats returns the counters.
func (r *Recorder) Stats() RecorderStats {
	held := r.held.Load()
	if held < 0 {
		held = 0
	}
	return RecorderStats{
		Recorded: r.recorded.Load(),
		Dropped:  r.dropped.Load(),
		Failed:   r.failed.Load(),
		Queued:   uint64(held),
	}
}

// Close writes what is queued, stops the goroutine and closes the store it
// opened. When ctx ends first, the write under way is cancelled, what
// remains is counted as Failed, and Close returns ctx's error without
// waiting further (a store that ignores cancellation keeps the goroutine
// until it returns). Record after Close drops.
func (r *Recorder) Close(ctx context.Context) error {
	r.closeOnce.Do(func() {
		r.closed.Store(true)
		close(r.stop)
	})
	select {
	case <-r.done:
		return r.closeErr
	case <-ctx.Done():
		r.cancel()
		return fmt.Errorf("reports: recorder: close: %w", ctx.Err())
	}
}

// recorderWriter is the state of the writer goroutine.
type recorderWriter struct {
	r        *Recorder
	store    Store
	nextOpen time.Time
	// openFailures and writeFailures count the current streaks, so that a
	// streak is logged when it starts and when it ends, not per batch.
	openFailures, writeFailures int
	lostInStreak                uint64
	batch                       []Entry
}

func (r *Recorder) run() {
	defer close(r.done)
	defer r.cancel()
	w := &recorderWriter{r: r, batch: make([]Entry, 0, r.o.BatchSize)}
	w.tryOpen()
	ticker := time.NewTicker(r.o.FlushEvery)
	defer ticker.Stop()
	for {
		select {
		case e := <-r.queue:
			w.batch = append(w.batch, e)
			if len(w.batch) >= r.o.BatchSize {
				w.flush()
			}
		case <-ticker.C:
			if w.store == nil && !time.Now().Before(w.nextOpen) {
				w.tryOpen()
			}
			w.flush()
		case <-r.stop:
			w.drain()
			if w.store != nil {
				if err := w.store.Close(); err != nil {
					r.closeErr = fmt.Errorf("reports: recorder: %w", err)
				}
			}
			return
		}
	}
}

// drain writes everything queued, at Close. A store never opened gets one
// more try.
func (w *recorderWriter) drain() {
	if w.store == nil {
		w.tryOpen()
	}
	for {
		select {
		case e := <-w.r.queue:
			w.batch = append(w.batch, e)
			if len(w.batch) >= w.r.o.BatchSize {
				w.flush()
			}
		default:
			w.flush()
			return
		}
	}
}

// tryOpen opens the store, logging the first failure of a streak and the
// success that ends one.
func (w *recorderWriter) tryOpen() {
	r := w.r
	ctx, cancel := context.WithTimeout(r.ctx, recorderOpTimeout)
	defer cancel()
	store, err := r.open(ctx)
	if err != nil {
		if w.openFailures == 0 {
			var missing *MissingFolderError
			if errors.As(err, &missing) {
				r.log.Warn("reports: DMARC results are not recorded: the store's folder does not exist; create it (mkdir -m 700 "+
					missing.Folder+", owned by the daemon's user) or set reports.database (record = false turns recording off)",
					"folder", missing.Folder, "retry_every", r.o.RetryEvery)
			} else {
				r.log.Error("reports: recorder: cannot open the store; evaluations are lost until it opens",
					"err", err, "retry_every", r.o.RetryEvery)
			}
		}
		w.openFailures++
		w.nextOpen = time.Now().Add(r.o.RetryEvery)
		return
	}
	if w.openFailures > 0 {
		r.log.Info("reports: recorder: store opened", "failed_attempts", w.openFailures)
	}
	w.store, w.openFailures = store, 0
}

// flush writes the batch (identical entries summed) and counts it.
func (w *recorderWriter) flush() {
	r := w.r
	n := len(w.batch)
	if n == 0 {
		return
	}
	defer func() {
		r.held.Add(-int64(n))
		clear(w.batch)
		w.batch = w.batch[:0]
	}()
	if w.store == nil {
		r.failed.Add(uint64(n))
		return
	}
	ctx, cancel := context.WithTimeout(r.ctx, recorderOpTimeout)
	defer cancel()
	if err := w.store.Add(ctx, recorderAggregate(w.batch)); err != nil {
		r.failed.Add(uint64(n))
		if w.writeFailures == 0 {
			r.log.Error("reports: recorder: writing to the store failed; evaluations are lost until it works again",
				"err", err, "messages", n)
		}
		w.writeFailures++
		w.lostInStreak += uint64(n)
		return
	}
	r.recorded.Add(uint64(n))
	if w.writeFailures > 0 {
		r.log.Info("reports: recorder: writing to the store works again",
			"failed_batches", w.writeFailures, "lost_messages", w.lostInStreak)
		w.writeFailures, w.lostInStreak = 0, 0
	}
}

// recorderAggregate sums identical entries (same domain, day and row
// key), keeping the newest policy with each, so that a burst from one
// source is one upsert. Entries the store would refuse are passed on
// as they are, for the store to name.
func recorderAggregate(entries []Entry) []Entry {
	out := make([]Entry, 0, len(entries))
	index := make(map[[3]string]int, len(entries))
	for _, e := range entries {
		d, err := newDBRow(e.Row)
		if err != nil {
			out = append(out, e)
			continue
		}
		k := [3]string{d.row.Domain, d.day, d.key}
		i, ok := index[k]
		if !ok {
			index[k] = len(out)
			out = append(out, e)
			continue
		}
		out[i].Row.Count += e.Row.Count
		if !e.Seen.Before(out[i].Seen) {
			out[i].Seen, out[i].Policy = e.Seen, e.Policy
		}
	}
	return out
}
