package reports

import (
	"context"
	"errors"
	"sort"
	"strings"
	"sync"
	"time"
)

// importMemStore is a Store that keeps imported reports in memory, for the
// importer's tests (the other methods are not needed there).
type importMemStore struct {
	mu      sync.Mutex
	reports map[string]*Feedback
	// failImport makes Import fail, as a database that is down.
	failImport error
}

func newImportMemStore() *importMemStore {
	return &importMemStore{reports: map[string]*Feedback{}}
}

var errImportMemStoreUnused = errors.New("importMemStore: not implemented")

func (m *importMemStore) Add(context.Context, []Entry) error { return errImportMemStoreUnused }
func (m *importMemStore) Domains(context.Context, time.Time) ([]string, error) {
	return nil, errImportMemStoreUnused
}
func (m *importMemStore) Rows(context.Context, string, time.Time) (Policy, []Row, error) {
	return Policy{}, nil, errImportMemStoreUnused
}
func (m *importMemStore) Claim(context.Context, string, time.Time, string, time.Duration) (bool, error) {
	return false, errImportMemStoreUnused
}
func (m *importMemStore) Finish(context.Context, Sent) error { return errImportMemStoreUnused }
func (m *importMemStore) SentSince(context.Context, time.Time) ([]Sent, error) {
	return nil, errImportMemStoreUnused
}
func (m *importMemStore) Prune(context.Context, time.Time) (int64, error) {
	return 0, errImportMemStoreUnused
}
func (m *importMemStore) Close() error { return nil }

func (m *importMemStore) Import(_ context.Context, f *Feedback) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failImport != nil {
		return false, m.failImport
	}
	key := f.OrgName + "\x00" + f.ReportID
	if _, ok := m.reports[key]; ok {
		return false, nil
	}
	m.reports[key] = f
	return true, nil
}

func (m *importMemStore) Received(_ context.Context, domain string, since time.Time) ([]ReceivedRow, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []ReceivedRow
	for _, f := range m.reports {
		if f.Begin.Before(since) {
			continue
		}
		for _, r := range f.Rows {
			if r.Domain == domain || strings.HasSuffix(r.Domain, "."+domain) {
				out = append(out, ReceivedRow{Row: r, OrgName: f.OrgName, ReportID: f.ReportID, Begin: f.Begin, End: f.End})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].ReportID != out[j].ReportID {
			return out[i].ReportID < out[j].ReportID
		}
		return out[i].SourceIP.Less(out[j].SourceIP)
	})
	return out, nil
}

func (m *importMemStore) count() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.reports)
}
