package reports

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	// The two database drivers: pgx's database/sql driver ("pgx") and the
	// pure-Go SQLite ("sqlite"), so that the binary needs no cgo.
	_ "github.com/jackc/pgx/v5/stdlib"
	_ "modernc.org/sqlite"
)

// sqliteBusyTimeout is how long an SQLite statement waits for another
// connection's (or process's) write lock before it fails: long enough
// that `authmilter reports` runs beside the daemon's recorder.
const sqliteBusyTimeout = 30 * time.Second

// postgresMaxConns bounds one process's connections to PostgreSQL, so that
// a fleet of MX hosts does not exhaust the server's max_connections.
const postgresMaxConns = 8

// MissingFolderError is Open's error for an SQLite file whose folder does
// not exist: on a fresh install that is not a fault (the package or
// systemd makes /var/lib/authmilter), so the recorder says it once as a
// warning and keeps looking.
type MissingFolderError struct{ Folder string }

// Error implements error.
func (e *MissingFolderError) Error() string {
	return "folder " + e.Folder + " does not exist"
}

// Open opens (creating and migrating as needed) the store named by
// database: a "postgres://" or "postgresql://" URL is a PostgreSQL
// database (through pgx), anything else the path of an SQLite file
// (through modernc.org/sqlite). An SQLite file is created with mode 0600
// in a folder that must exist, and used in WAL mode with a busy timeout,
// so that a CLI run and the daemon share it.
func Open(ctx context.Context, database string) (Store, error) {
	if isPostgresURL(database) {
		return openPostgres(ctx, database)
	}
	return openSQLite(ctx, database)
}

func isPostgresURL(database string) bool {
	return strings.HasPrefix(database, "postgres://") || strings.HasPrefix(database, "postgresql://")
}

// sqlStore is the Store of both databases: one SQL implementation, with
// the few differences in dialect.
type sqlStore struct {
	db *sql.DB
	d  dialect
	// name says which database, for errors: the file, or the URL without
	// its password.
	name string
}

// dialect is what differs between SQLite and PostgreSQL. The statements
// are written once, with ? placeholders and the upsert syntax
// (INSERT ... ON CONFLICT) that both share.
type dialect struct {
	// postgres: $n placeholders, identity columns, advisory locks.
	postgres bool
}

// idColumn is the type of an automatically numbered primary key.
func (d dialect) idColumn() string {
	if d.postgres {
		return "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"
	}
	return "INTEGER PRIMARY KEY"
}

// bind rewrites the ? placeholders of query for the database. The store's
// statements have no ? inside string literals.
func (d dialect) bind(query string) string {
	if !d.postgres || !strings.Contains(query, "?") {
		return query
	}
	var b strings.Builder
	b.Grow(len(query) + 16)
	n := 0
	for i := 0; i < len(query); i++ {
		if query[i] == '?' {
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteByte(query[i])
	}
	return b.String()
}

func openSQLite(ctx context.Context, path string) (Store, error) {
	if path == "" {
		return nil, errors.New("reports: open: no database given")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("reports: open sqlite %s: %w", path, err)
	}
	if fi, err := os.Stat(filepath.Dir(abs)); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("reports: open sqlite %s: %w", abs, &MissingFolderError{Folder: filepath.Dir(abs)})
	}
	// Create the file ourselves so that its mode is 0600 whatever the
	// umask; SQLite gives its -wal and -shm files the same mode.
	f, err := os.OpenFile(abs, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("reports: open sqlite %s: %w", abs, err)
	}
	f.Close()
	db, err := sql.Open("sqlite", sqliteDSN(abs))
	if err != nil {
		return nil, fmt.Errorf("reports: open sqlite %s: %w", abs, err)
	}
	// One connection per process: SQLite has one writer at a time anyway,
	// and Go's pool queues this process's statements fairly where SQLite's
	// busy handler would poll.
	db.SetMaxOpenConns(1)
	return newSQLStore(ctx, db, dialect{}, "sqlite "+abs)
}

// sqliteDSN is the driver's name for the file at path abs: a file: URI,
// so that any character may be in the path, with the settings of every
// connection.
func sqliteDSN(abs string) string {
	q := url.Values{}
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", sqliteBusyTimeout.Milliseconds()))
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(NORMAL)")
	q.Add("_pragma", "foreign_keys(1)")
	// Every transaction takes the write lock at BEGIN, so that two writers
	// wait for each other through the busy timeout instead of failing
	// when a read lock cannot be upgraded.
	q.Set("_txlock", "immediate")
	return (&url.URL{Scheme: "file", Path: abs, RawQuery: q.Encode()}).String()
}

// RedactDatabase is a reports.database value for messages and logs: a
// PostgreSQL URL's password, in its user part or a password= parameter,
// is replaced by "xxxxx"; a URL that does not parse is not shown at all
// (it might hold a password).
func RedactDatabase(db string) string {
	if !strings.Contains(db, "://") {
		return db
	}
	u, err := url.Parse(db)
	if err != nil {
		return "(unparsable URL)"
	}
	if q := u.Query(); q.Has("password") {
		q.Set("password", "xxxxx")
		u.RawQuery = q.Encode()
	}
	return u.Redacted()
}

func openPostgres(ctx context.Context, dsn string) (Store, error) {
	name := "postgres " + RedactDatabase(dsn)
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		return nil, fmt.Errorf("reports: open %s: %w", name, err)
	}
	db.SetMaxOpenConns(postgresMaxConns)
	db.SetMaxIdleConns(2)
	db.SetConnMaxIdleTime(5 * time.Minute)
	return newSQLStore(ctx, db, dialect{postgres: true}, name)
}

// newSQLStore checks the connection and brings the schema up to date.
func newSQLStore(ctx context.Context, db *sql.DB, d dialect, name string) (*sqlStore, error) {
	s := &sqlStore{db: db, d: d, name: name}
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, s.wrap("open", err)
	}
	if err := migrate(ctx, db, d, migrations); err != nil {
		db.Close()
		return nil, s.wrap("open", err)
	}
	return s, nil
}

// wrap names the store and the operation in an error.
func (s *sqlStore) wrap(op string, err error) error {
	return fmt.Errorf("reports: %s: %s: %w", s.name, op, err)
}

// Close releases the database.
func (s *sqlStore) Close() error {
	if err := s.db.Close(); err != nil {
		return s.wrap("close", err)
	}
	return nil
}

// inTx runs fn in a transaction, committed when fn returns nil.
func (s *sqlStore) inTx(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	return tx.Commit()
}

// Prune deletes rows, policies, claims, sent records and imported reports
// of days before before's UTC day, with their share of the per-day totals,
// and returns how many rows went.
func (s *sqlStore) Prune(ctx context.Context, before time.Time) (int64, error) {
	day := dbDay(before)
	var rows int64
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, s.d.bind("DELETE FROM report_rows WHERE day < ?"), day)
		if err != nil {
			return err
		}
		if rows, err = res.RowsAffected(); err != nil {
			return err
		}
		for _, q := range []string{
			"DELETE FROM report_day_totals WHERE day < ?",
			"DELETE FROM report_policies WHERE day < ?",
			"DELETE FROM report_claims WHERE day < ?",
			"DELETE FROM report_outcomes WHERE day < ?",
		} {
			if _, err := tx.ExecContext(ctx, s.d.bind(q), day); err != nil {
				return err
			}
		}
		begin := dbTime(DayOf(before))
		if err := s.pruneFeedbackTotals(ctx, tx, begin); err != nil {
			return err
		}
		// feedback_rows go with their report (ON DELETE CASCADE).
		_, err = tx.ExecContext(ctx, s.d.bind("DELETE FROM feedback_reports WHERE begin_us < ?"), begin)
		return err
	})
	if err != nil {
		return 0, s.wrap("prune", err)
	}
	return rows, nil
}

// dbDayLayout is how a UTC day is stored: text that sorts as the days do.
const dbDayLayout = "2006-01-02"

// dbDay is the stored form of t's UTC day.
func dbDay(t time.Time) string { return t.UTC().Format(dbDayLayout) }

// dbParseDay reads a stored day.
func dbParseDay(s string) (time.Time, error) {
	t, err := time.Parse(dbDayLayout, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("stored day %q: %w", s, err)
	}
	return t, nil
}

// dbTime is the stored form of a time: microseconds since the Unix epoch
// (PostgreSQL's precision), 0 for the zero time.
func dbTime(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMicro()
}

// dbParseTime reads a stored time, in UTC.
func dbParseTime(us int64) time.Time {
	if us == 0 {
		return time.Time{}
	}
	return time.UnixMicro(us).UTC()
}
