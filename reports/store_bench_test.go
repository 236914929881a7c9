package reports

import (
	"context"
	"net/netip"
	"path/filepath"
	"testing"
)

// storeBenchBatches are batches of 500 entries as the recorder writes
// them: 40 sources per batch, a tenth of them new, so that most writes
// add to existing rows and some make new ones.
func storeBenchBatches(n int) [][]Entry {
	batches := make([][]Entry, n)
	for b := range batches {
		batch := make([]Entry, 500)
		for i := range batch {
			e := storeTestEntry("192.0.2.1")
			src := i % 40
			if src < 4 {
				src = 1000 + b*4 + src // new this batch
			}
			e.Row.SourceIP = netip.AddrFrom4([4]byte{10, byte(src >> 16), byte(src >> 8), byte(src)})
			batch[i] = e
		}
		batches[b] = batch
	}
	return batches
}

func storeBenchAdd(b *testing.B, database string) {
	ctx := context.Background()
	s, err := Open(ctx, database)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	batches := storeBenchBatches(64)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := s.Add(ctx, batches[i%len(batches)]); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N*500)/b.Elapsed().Seconds(), "entries/s")
}

// BenchmarkStoreAddSQLite measures Add of 500-entry batches into SQLite.
func BenchmarkStoreAddSQLite(b *testing.B) {
	storeBenchAdd(b, filepath.Join(b.TempDir(), "reports.db"))
}

// BenchmarkStoreAddPostgres measures Add of 500-entry batches into
// PostgreSQL (the test server: fsync off).
func BenchmarkStoreAddPostgres(b *testing.B) {
	storeBenchAdd(b, storeTestPostgresDSN(b))
}

// BenchmarkRecorderRecord measures Record, the cost a milter session pays
// per message, with the default queue size and the writer running beside
// it (into a store that only counts).
func BenchmarkRecorderRecord(b *testing.B) {
	r := NewRecorder(func(ctx context.Context) (Store, error) { return &recorderTestStore{}, nil },
		RecorderOptions{QueueSize: 10000})
	e := recorderTestEval(1)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			r.Record(e)
		}
	})
	b.StopTimer()
	r.Close(context.Background())
	b.ReportMetric(float64(r.Stats().Dropped)/float64(b.N), "dropped/op")
}
