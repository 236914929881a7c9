package web

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/authmilter/authmilter/reports"
)

// TestStoreDown: a store that cannot be opened gives the DMARC pages a
// 503 with the message in p.store-error; the overview and keys pages
// still work. It is opened again only after ReportsRetry.
func TestStoreDown(t *testing.T) {
	clock := newClock()
	o := testOptions(t, clock)
	opens := 0
	store := testStore()
	o.OpenReports = func(context.Context) (reports.Store, error) {
		opens++
		if opens == 1 {
			return nil, errDown
		}
		return store, nil
	}
	o.ReportsRetry = 30 * time.Second
	h := newTestHandler(t, o)
	for _, path := range []string{"/dmarc", "/dmarc/example.com", "/dmarc?format=json"} {
		rec := get(h, "GET", path)
		if rec.Code != 503 {
			t.Fatalf("%s: status %d, want 503", path, rec.Code)
		}
		checkSecurityHeaders(t, rec.Header())
		body := rec.Body.String()
		if !strings.Contains(body, "The reports store is not reachable: dial tcp 127.0.0.1:5432: connection refused") ||
			!strings.Contains(body, "the keys and overview pages still work") {
			t.Errorf("%s: no store message in %s", path, body)
		}
		if !strings.Contains(path, "json") && !strings.Contains(body, `<p class="store-error" role="alert">`) {
			t.Errorf("%s: no p.store-error in %s", path, body)
		}
	}
	for _, path := range []string{"/", "/keys", "/keys/example.com"} {
		if rec := get(h, "GET", path); rec.Code != 200 {
			t.Errorf("%s: status %d with the store down", path, rec.Code)
		}
	}
	if opens != 1 {
		t.Fatalf("opened %d times within ReportsRetry, want 1", opens)
	}
	clock.add(31 * time.Second)
	if rec := get(h, "GET", "/dmarc"); rec.Code != 200 {
		t.Fatalf("after ReportsRetry: status %d: %s", rec.Code, rec.Body)
	}
	get(h, "GET", "/dmarc/example.com")
	if opens != 2 {
		t.Errorf("opened %d times, want 2 (kept open once it worked)", opens)
	}
	if err := h.store.close(); err != nil || !store.closed {
		t.Errorf("close: %v, closed %v", err, store.closed)
	}
}

// TestStoreErrors: no store configured, a store without the read side,
// and a query that fails are each a clear 503 on the DMARC pages.
func TestStoreErrors(t *testing.T) {
	failing := testStore()
	failing.err = errors.New("database is locked")
	tests := []struct {
		name string
		open func(context.Context) (reports.Store, error)
		want string
	}{
		{"not configured", nil, "DMARC results are not kept"},
		{"query fails", func(context.Context) (reports.Store, error) { return failing, nil }, "database is locked"},
		{"nil store", func(context.Context) (reports.Store, error) { return nil, nil }, "no store"},
	}
	// (A store without the read side cannot be: reports.Store embeds
	// reports.StatsReader.)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := testOptions(t, newClock())
			o.OpenReports = tt.open
			h := newTestHandler(t, o)
			for _, path := range []string{"/dmarc", "/dmarc/example.com"} {
				rec := get(h, "GET", path)
				if rec.Code != 503 || !strings.Contains(rec.Body.String(), tt.want) || !strings.Contains(rec.Body.String(), `class="store-error"`) {
					t.Errorf("%s: status %d, body %s", path, rec.Code, rec.Body)
				}
			}
			if rec := get(h, "GET", "/keys"); rec.Code != 200 {
				t.Errorf("/keys: status %d", rec.Code)
			}
		})
	}
}

// TestStoreBadQuery: a query the store refuses as out of bounds is the
// request's fault: 400, not 503.
func TestStoreBadQuery(t *testing.T) {
	o := testOptions(t, newClock())
	bad := testStore()
	bad.err = fmt.Errorf("reports: %w: offset too large", reports.ErrBadStatsQuery)
	o.OpenReports = func(context.Context) (reports.Store, error) { return bad, nil }
	h := newTestHandler(t, o)
	if rec := get(h, "GET", "/dmarc/example.com"); rec.Code != 400 {
		t.Errorf("status %d, want 400: %s", rec.Code, rec.Body)
	}
}

// TestStoreQueryContext: the store's queries run with a deadline (the
// request's, bounded by web.request_timeout).
func TestStoreQueryContext(t *testing.T) {
	o := testOptions(t, newClock())
	var deadline bool
	o.OpenReports = func(context.Context) (reports.Store, error) {
		return &ctxStore{fakeStore: testStore(), saw: &deadline}, nil
	}
	h := newTestHandler(t, o)
	if rec := get(h, "GET", "/dmarc"); rec.Code != 200 {
		t.Fatalf("status %d", rec.Code)
	}
	if !deadline {
		t.Error("the query's context had no deadline")
	}
}

type ctxStore struct {
	*fakeStore
	saw *bool
}

func (c *ctxStore) DomainTotals(ctx context.Context, q reports.StatsQuery, search string, offset, limit int) ([]reports.DomainTotals, int, error) {
	_, *c.saw = ctx.Deadline()
	return c.fakeStore.DomainTotals(ctx, q, search, offset, limit)
}
