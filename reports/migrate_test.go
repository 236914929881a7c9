package reports

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// migrateTestDB opens database with the bare driver, no migration, as an
// older or newer authmilter would have left it.
func migrateTestDB(t *testing.T, database string) (*sql.DB, dialect) {
	t.Helper()
	driver, dsn, d := "sqlite", sqliteDSN(database), dialect{}
	if isPostgresURL(database) {
		driver, dsn, d = "pgx", database, dialect{postgres: true}
	}
	db, err := sql.Open(driver, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db, d
}

func migrateTestVersion(t *testing.T, db *sql.DB) int {
	t.Helper()
	var v int
	if err := db.QueryRowContext(storeTestContext(t), "SELECT MAX(version) FROM schema_version").Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestMigrateUpgradesAnOldSchema(t *testing.T) {
	storeTestEach(t, func(t *testing.T, database string) {
		ctx := storeTestContext(t)
		db, d := migrateTestDB(t, database)
		// A database made by a binary that knew version 1 only, with data.
		totalsTestFillOld(t, db, d, 1, func(ctx context.Context, s *sqlStore) {
			if err := s.Add(ctx, []Entry{storeTestEntry("192.0.2.1")}); err != nil {
				t.Fatal(err)
			}
		})
		s := &sqlStore{db: db, d: d, name: "test"}
		// A later binary adds a step.
		next := append(append([]migration(nil), migrations...), migration{
			version:    migrations[len(migrations)-1].version + 1,
			statements: []string{"CREATE TABLE migrate_test_extra (id {{id}}, note TEXT NOT NULL)", "INSERT INTO migrate_test_extra (note) VALUES ('x')"},
		})
		for i := 0; i < 2; i++ { // the second run finds nothing to do
			if err := migrate(ctx, db, d, next); err != nil {
				t.Fatal(err)
			}
		}
		if v := migrateTestVersion(t, db); v != next[len(next)-1].version {
			t.Errorf("schema version %d, want %d", v, next[len(next)-1].version)
		}
		var notes int
		if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM migrate_test_extra").Scan(&notes); err != nil || notes != 1 {
			t.Errorf("the new step ran %d times (%v), want once", notes, err)
		}
		if _, rows, err := s.Rows(ctx, "example.com", storeTestDay); err != nil || len(rows) != 1 {
			t.Errorf("data before the upgrade: %d rows, %v", len(rows), err)
		}
		// This binary refuses the database the later one left.
		_, err := Open(ctx, database)
		if err == nil || !strings.Contains(err.Error(), "newer than this authmilter knows") {
			t.Errorf("Open of a newer schema: err = %v, want a refusal", err)
		}
	})
}

func TestMigrateFailedStepLeavesTheOldVersion(t *testing.T) {
	storeTestEach(t, func(t *testing.T, database string) {
		ctx := storeTestContext(t)
		db, d := migrateTestDB(t, database)
		broken := append(append([]migration(nil), migrations...), migration{
			version:    migrations[len(migrations)-1].version + 1,
			statements: []string{"CREATE TABLE migrate_test_half (n BIGINT)", "THIS IS NOT SQL"},
		})
		err := migrate(ctx, db, d, broken)
		if err == nil || !strings.Contains(err.Error(), "statement 2") {
			t.Fatalf("err = %v, want the failing statement named", err)
		}
		// Nothing of the broken run stayed, not even version 1.
		var n int
		if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM schema_version").Scan(&n); err == nil && n != 0 {
			t.Errorf("%d versions recorded after a failed migration", n)
		}
		if _, err := Open(ctx, database); err != nil {
			t.Errorf("Open after a failed migration: %v", err)
		}
	})
}

func TestMigrateConcurrentOpensOfAFreshDatabase(t *testing.T) {
	const openers = 8
	storeTestEach(t, func(t *testing.T, database string) {
		ctx := storeTestContext(t)
		var wg sync.WaitGroup
		errs := make(chan error, openers)
		start := make(chan struct{})
		for i := 0; i < openers; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				s, err := Open(ctx, database)
				if err != nil {
					errs <- err
					return
				}
				errs <- s.Close()
			}()
		}
		close(start)
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Error(err)
			}
		}
		db, _ := migrateTestDB(t, database)
		var n int
		if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM schema_version").Scan(&n); err != nil || n != len(migrations) {
			t.Errorf("%d versions recorded (%v), want %d", n, err, len(migrations))
		}
	})
}

func TestOpenSQLiteFile(t *testing.T) {
	ctx := storeTestContext(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "odd ?#% name.db")
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Add(ctx, []Entry{storeTestEntry("192.0.2.1")}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("the store is not at the path given: %v", err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	db, _ := migrateTestDB(t, path)
	var mode string
	if err := db.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil || mode != "wal" {
		t.Errorf("journal mode %q (%v), want wal", mode, err)
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.Contains(e.Name(), "?") && e.Name() != "odd ?#% name.db" && !strings.HasPrefix(e.Name(), "odd ?#% name.db-") {
			t.Errorf("stray file %q", e.Name())
		}
	}
	_, err = Open(ctx, filepath.Join(dir, "missing", "reports.db"))
	if err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("Open in a missing folder: err = %v, want one saying so", err)
	}
	if _, err := Open(ctx, ""); err == nil {
		t.Error("Open(\"\") succeeded")
	}
	garbage := filepath.Join(dir, "garbage.db")
	if err := os.WriteFile(garbage, []byte(strings.Repeat("not a database\n", 1000)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(ctx, garbage); err == nil || !strings.Contains(err.Error(), garbage) {
		t.Errorf("Open of a file that is not a database: err = %v, want one naming it", err)
	}
}

func TestOpenPostgresErrorHidesPassword(t *testing.T) {
	srv := storeTestPostgres(t)
	ctx := storeTestContext(t)
	dsn := strings.Replace(srv.DSN("no_such_database"), "postgres@", "postgres:s3cret@", 1)
	_, err := Open(ctx, dsn)
	if err == nil {
		t.Fatal("Open of a missing database succeeded")
	}
	if strings.Contains(err.Error(), "s3cret") || !strings.Contains(err.Error(), "no_such_database") {
		t.Errorf("err = %v, want the database named and the password hidden", err)
	}
}
