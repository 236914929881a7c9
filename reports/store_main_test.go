package reports

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/authmilter/authmilter/internal/pgtest"
)

// The package's tests share one private PostgreSQL server, started by the
// first test that needs it and stopped by TestMain; each test gets a
// fresh database of its own.
var storeTestPG struct {
	once sync.Once
	dir  string
	srv  *pgtest.Server
	err  error
	n    atomic.Int64
}

func TestMain(m *testing.M) {
	code := m.Run()
	if storeTestPG.srv != nil {
		if err := storeTestPG.srv.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	if storeTestPG.dir != "" {
		os.RemoveAll(storeTestPG.dir)
	}
	os.Exit(code)
}

// storeTestPostgres returns the shared server, starting it once.
func storeTestPostgres(t testing.TB) *pgtest.Server {
	t.Helper()
	storeTestPG.once.Do(func() {
		// Under /tmp, not t.TempDir: the postgres user must reach it.
		storeTestPG.dir, storeTestPG.err = os.MkdirTemp("", "reports-pg-")
		if storeTestPG.err == nil {
			storeTestPG.srv, storeTestPG.err = pgtest.Start(storeTestPG.dir)
		}
	})
	if storeTestPG.err != nil {
		t.Fatalf("PostgreSQL for the store tests: %v", storeTestPG.err)
	}
	return storeTestPG.srv
}

// storeTestPostgresDSN is the URL of a fresh database on the shared
// server.
func storeTestPostgresDSN(t testing.TB) string {
	t.Helper()
	srv := storeTestPostgres(t)
	dsn, err := srv.CreateDatabase(fmt.Sprintf("store_test_%d", storeTestPG.n.Add(1)))
	if err != nil {
		t.Fatal(err)
	}
	return dsn
}

// storeTestBackends are the two databases every store test runs against:
// each gives the Open argument of a fresh, empty database.
var storeTestBackends = []struct {
	name     string
	database func(t testing.TB) string
}{
	{"sqlite", func(t testing.TB) string { return filepath.Join(t.TempDir(), "reports.db") }},
	{"postgres", storeTestPostgresDSN},
}

// storeTestEach runs fn once per backend, in parallel subtests, with the
// Open argument of a fresh database.
func storeTestEach(t *testing.T, fn func(t *testing.T, database string)) {
	for _, b := range storeTestBackends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			fn(t, b.database(t))
		})
	}
}

// storeTestOpen opens database and closes it when the test ends.
func storeTestOpen(t testing.TB, database string) Store {
	t.Helper()
	s, err := Open(storeTestContext(t), database)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s
}

// storeTestContext bounds one test's database calls generously.
func storeTestContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}
