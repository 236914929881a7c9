package web

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/authmilter/authmilter/reports"
)

// storeDown is a reports store that cannot be used: the DMARC pages say
// so with status 503, the other pages work.
type storeDown struct{ cause string }

func (e storeDown) Error() string {
	return "The reports store is not reachable: " + e.cause + "; the keys and overview pages still work"
}

// lazyStore opens the reports store when a DMARC page first needs it and
// keeps it open; after a failed open it tries again at most every retry.
type lazyStore struct {
	open  func(ctx context.Context) (reports.Store, error)
	retry time.Duration
	now   func() time.Time

	mu      sync.Mutex
	store   reports.Store
	stats   reports.StatsReader
	lastErr error
	lastTry time.Time
	closed  bool
}

func newLazyStore(open func(ctx context.Context) (reports.Store, error), retry time.Duration, now func() time.Time) *lazyStore {
	return &lazyStore{open: open, retry: retry, now: now}
}

// get returns the store's read side, opening it if needed.
func (l *lazyStore) get(ctx context.Context) (reports.StatsReader, error) {
	if l.open == nil {
		return nil, storeDown{"DMARC results are not kept ([reports] database is not set)"}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, storeDown{"the status pages are shutting down"}
	}
	if l.stats != nil {
		return l.stats, nil
	}
	now := l.now()
	if l.lastErr != nil && now.Sub(l.lastTry) < l.retry {
		return nil, storeDown{fmt.Sprintf("%v (tried at %s; next try after %s)", l.lastErr,
			l.lastTry.UTC().Format(time.RFC3339), l.lastTry.Add(l.retry).UTC().Format(time.RFC3339))}
	}
	l.lastTry = now
	s, err := l.open(ctx)
	if err == nil && s == nil {
		err = errors.New("no store")
	}
	if err != nil {
		l.lastErr = err
		return nil, storeDown{err.Error()}
	}
	l.store, l.stats, l.lastErr = s, s, nil
	return s, nil
}

// close closes the store if it was opened.
func (l *lazyStore) close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	if l.store == nil {
		return nil
	}
	err := l.store.Close()
	l.store, l.stats = nil, nil
	return err
}
