package reports

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"
)

// migration is one step of the schema. Its statements are applied in
// order, in the transaction that records its version; "{{id}}" stands for
// the dialect's automatically numbered primary key.
type migration struct {
	version    int
	statements []string
}

// migrations is the schema's history, oldest first. Never edit a step
// that has shipped: add one.
//
// Days are stored as text "YYYY-MM-DD" (readable, and ordered as the days
// are); times as microseconds since the Unix epoch; a row's lists
// (overrides, DKIM and SPF results) as JSON arrays of arrays of strings.
var migrations = []migration{{
	version: 1,
	statements: []string{
		// Aggregated rows (RFC 9990 "record"): one per reporting domain,
		// UTC day and identical results, found by row_key, a hash of
		// everything in the row but its count.
		`CREATE TABLE report_rows (
			domain TEXT NOT NULL,
			day TEXT NOT NULL,
			row_key TEXT NOT NULL,
			source_ip TEXT NOT NULL,
			count BIGINT NOT NULL CHECK (count >= 0),
			header_from TEXT NOT NULL,
			envelope_from TEXT NOT NULL,
			envelope_to TEXT NOT NULL,
			helo TEXT NOT NULL,
			disposition TEXT NOT NULL,
			dkim_aligned TEXT NOT NULL,
			spf_aligned TEXT NOT NULL,
			overrides TEXT NOT NULL,
			dkim TEXT NOT NULL,
			spf TEXT NOT NULL,
			PRIMARY KEY (domain, day, row_key)
		)`,
		`CREATE INDEX report_rows_day ON report_rows (day, domain)`,
		// The policy published per domain and day, as last seen.
		`CREATE TABLE report_policies (
			domain TEXT NOT NULL,
			day TEXT NOT NULL,
			seen_us BIGINT NOT NULL,
			discovery_method TEXT NOT NULL,
			p TEXT NOT NULL,
			sp TEXT NOT NULL,
			np TEXT NOT NULL,
			psd TEXT NOT NULL,
			testing TEXT NOT NULL,
			adkim TEXT NOT NULL,
			aspf TEXT NOT NULL,
			fo TEXT NOT NULL,
			rua TEXT NOT NULL,
			rua_limits TEXT NOT NULL,
			PRIMARY KEY (domain, day)
		)`,
		// Who generates the report of a domain and day, and how that
		// ended: claimed, sent, skipped or failed.
		`CREATE TABLE report_claims (
			domain TEXT NOT NULL,
			day TEXT NOT NULL,
			owner TEXT NOT NULL,
			claimed_us BIGINT NOT NULL,
			status TEXT NOT NULL,
			PRIMARY KEY (domain, day)
		)`,
		// Every recorded outcome, failed attempts included.
		`CREATE TABLE report_outcomes (
			id {{id}},
			domain TEXT NOT NULL,
			day TEXT NOT NULL,
			report_id TEXT NOT NULL,
			owner TEXT NOT NULL,
			status TEXT NOT NULL,
			destinations TEXT NOT NULL,
			detail TEXT NOT NULL,
			bytes BIGINT NOT NULL,
			time_us BIGINT NOT NULL
		)`,
		`CREATE INDEX report_outcomes_day ON report_outcomes (day)`,
		// Imported reports and their records.
		`CREATE TABLE feedback_reports (
			id {{id}},
			org_name TEXT NOT NULL,
			report_id TEXT NOT NULL,
			email TEXT NOT NULL,
			extra_contact_info TEXT NOT NULL,
			begin_us BIGINT NOT NULL,
			end_us BIGINT NOT NULL,
			errors TEXT NOT NULL,
			domain TEXT NOT NULL,
			policy TEXT NOT NULL,
			imported_us BIGINT NOT NULL,
			UNIQUE (org_name, report_id)
		)`,
		`CREATE INDEX feedback_reports_begin ON feedback_reports (begin_us)`,
		`CREATE TABLE feedback_rows (
			report BIGINT NOT NULL REFERENCES feedback_reports (id) ON DELETE CASCADE,
			seq BIGINT NOT NULL,
			day TEXT NOT NULL,
			source_ip TEXT NOT NULL,
			count BIGINT NOT NULL CHECK (count >= 0),
			header_from TEXT NOT NULL,
			envelope_from TEXT NOT NULL,
			envelope_to TEXT NOT NULL,
			helo TEXT NOT NULL,
			disposition TEXT NOT NULL,
			dkim_aligned TEXT NOT NULL,
			spf_aligned TEXT NOT NULL,
			overrides TEXT NOT NULL,
			dkim TEXT NOT NULL,
			spf TEXT NOT NULL,
			PRIMARY KEY (report, seq)
		)`,
	},
}, {
	version: 2,
	statements: []string{
		// The status pages sum imported rows by day for every domain, and
		// by policy domain for one domain's page (feedback_rows' primary
		// key then finds each report's rows).
		`CREATE INDEX feedback_rows_day ON feedback_rows (day)`,
		`CREATE INDEX feedback_reports_domain ON feedback_reports (domain)`,
	},
}, {
	version: 3,
	statements: []string{
		// The sums of each domain's rows per day (and reporting
		// organisation), kept by the writers in the rows' transaction, so
		// that the status pages read one row per domain and day instead of
		// one per source. Aligned means "pass", as the rows store it;
		// "neither" is messages - pass. Backfilled from the rows.
		`CREATE TABLE report_day_totals (
			domain TEXT NOT NULL,
			day TEXT NOT NULL,
			messages BIGINT NOT NULL,
			dkim_aligned BIGINT NOT NULL,
			spf_aligned BIGINT NOT NULL,
			pass BIGINT NOT NULL,
			PRIMARY KEY (domain, day)
		)`,
		`CREATE INDEX report_day_totals_day ON report_day_totals (day)`,
		`CREATE TABLE feedback_day_totals (
			domain TEXT NOT NULL,
			org_name TEXT NOT NULL,
			day TEXT NOT NULL,
			messages BIGINT NOT NULL,
			dkim_aligned BIGINT NOT NULL,
			spf_aligned BIGINT NOT NULL,
			pass BIGINT NOT NULL,
			PRIMARY KEY (domain, org_name, day)
		)`,
		`CREATE INDEX feedback_day_totals_day ON feedback_day_totals (day)`,
		`INSERT INTO report_day_totals (domain, day, messages, dkim_aligned, spf_aligned, pass)
			SELECT w.domain, w.day, CAST(SUM(w.count) AS BIGINT),
				CAST(SUM(CASE WHEN w.dkim_aligned = 'pass' THEN w.count ELSE 0 END) AS BIGINT),
				CAST(SUM(CASE WHEN w.spf_aligned = 'pass' THEN w.count ELSE 0 END) AS BIGINT),
				CAST(SUM(CASE WHEN w.dkim_aligned = 'pass' OR w.spf_aligned = 'pass' THEN w.count ELSE 0 END) AS BIGINT)
			FROM report_rows w GROUP BY w.domain, w.day`,
		`INSERT INTO feedback_day_totals (domain, org_name, day, messages, dkim_aligned, spf_aligned, pass)
			SELECT r.domain, r.org_name, w.day, CAST(SUM(w.count) AS BIGINT),
				CAST(SUM(CASE WHEN w.dkim_aligned = 'pass' THEN w.count ELSE 0 END) AS BIGINT),
				CAST(SUM(CASE WHEN w.spf_aligned = 'pass' THEN w.count ELSE 0 END) AS BIGINT),
				CAST(SUM(CASE WHEN w.dkim_aligned = 'pass' OR w.spf_aligned = 'pass' THEN w.count ELSE 0 END) AS BIGINT)
			FROM feedback_rows w JOIN feedback_reports r ON r.id = w.report
			GROUP BY r.domain, r.org_name, w.day`,
	},
}}

// migrationLockKey is the PostgreSQL advisory lock that serialises
// migrations of one database by several processes (an arbitrary constant:
// "authmilt" in ASCII).
const migrationLockKey int64 = 0x617574686d696c74

// migrate brings the database's schema up to the last version of list, in
// one transaction: on PostgreSQL under an advisory lock, on SQLite under
// the write lock that BEGIN IMMEDIATE takes, so that processes opening one
// fresh database at once wait for each other instead of failing. A
// database newer than list is refused: this binary would misread it.
func migrate(ctx context.Context, db *sql.DB, d dialect, list []migration) error {
	latest := list[len(list)-1].version
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	if d.postgres {
		if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock($1)", migrationLockKey); err != nil {
			return fmt.Errorf("migrate: lock: %w", err)
		}
	}
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_version (
		version BIGINT NOT NULL PRIMARY KEY,
		applied_us BIGINT NOT NULL
	)`); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	var current int
	if err := tx.QueryRowContext(ctx, "SELECT COALESCE(MAX(version), 0) FROM schema_version").Scan(&current); err != nil {
		return fmt.Errorf("migrate: read schema version: %w", err)
	}
	if current > latest {
		return fmt.Errorf("the database's schema version %d is newer than this authmilter knows (%d): use a newer authmilter with it", current, latest)
	}
	for _, m := range list {
		if m.version <= current {
			continue
		}
		for i, stmt := range m.statements {
			if _, err := tx.ExecContext(ctx, strings.ReplaceAll(stmt, "{{id}}", d.idColumn())); err != nil {
				return fmt.Errorf("migrate to version %d, statement %d: %w", m.version, i+1, err)
			}
		}
		if _, err := tx.ExecContext(ctx, d.bind("INSERT INTO schema_version (version, applied_us) VALUES (?, ?)"),
			m.version, dbTime(time.Now())); err != nil {
			return fmt.Errorf("migrate to version %d: %w", m.version, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("migrate: commit: %w", err)
	}
	return nil
}
