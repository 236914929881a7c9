package reports

import (
	"fmt"
	"os"
	"testing"

	"github.com/authmilter/authmilter/internal/pgtest"
	"github.com/authmilter/authmilter/internal/testbin"
)

var (
	// binary is the authmilter binary built by TestMain.
	binary string
	// pg is the package's PostgreSQL server, or pgErr why it did not start.
	pg    *pgtest.Server
	pgErr error
)

// TestMain builds the binary and starts one PostgreSQL server for the
// package (a few seconds each), and stops and removes both at the end.
func TestMain(m *testing.M) {
	path, cleanup, err := testbin.Build()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = path
	dir, err := os.MkdirTemp("/tmp", "authmilter-reports-pg-")
	if err == nil {
		pg, pgErr = pgtest.Start(dir)
	} else {
		pgErr = err
	}
	code := m.Run()
	if pg != nil {
		if err := pg.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
	}
	if dir != "" {
		os.RemoveAll(dir)
	}
	cleanup()
	os.Exit(code)
}

// needPostgres returns the package's PostgreSQL server, or fails the test
// with why it could not be started (a missing package says which).
func needPostgres(t *testing.T) *pgtest.Server {
	t.Helper()
	if pg == nil {
		t.Fatalf("PostgreSQL for the fleet test: %v", pgErr)
	}
	return pg
}
