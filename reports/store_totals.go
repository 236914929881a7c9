package reports

import (
	"context"
	"database/sql"
	"fmt"
	"sort"
)

// The per-day totals tables (report_day_totals, feedback_day_totals) hold
// the sums of the rows of each domain and day, and reporting organisation
// for imported rows: what DomainTotals and DayTotals read. Add and Import
// add to them in the rows' transaction, Prune takes away what it deletes.

// dbTotalsKey is one row of a totals table: the stored domain (as the
// rows have it), the reporting organisation ("" in report_day_totals) and
// the stored day.
type dbTotalsKey struct {
	domain, org, day string
}

// dbDayTotals are the sums of one key's rows, as the tables store them:
// "neither" is messages - pass.
type dbDayTotals struct {
	messages, dkim, spf, pass int64
}

// dbTotals sums rows per key.
type dbTotals map[dbTotalsKey]*dbDayTotals

// add counts a stored row (bounded, as newDBRow leaves it) under k.
// Aligned means "pass", exactly as the statistics queries compare it.
func (m dbTotals) add(k dbTotalsKey, r Row) {
	t := m[k]
	if t == nil {
		t = &dbDayTotals{}
		m[k] = t
	}
	t.messages += r.Count
	if r.DKIMAligned == "pass" {
		t.dkim += r.Count
	}
	if r.SPFAligned == "pass" {
		t.spf += r.Count
	}
	if r.DKIMAligned == "pass" || r.SPFAligned == "pass" {
		t.pass += r.Count
	}
}

// dbKeyedTotals is one key's sums.
type dbKeyedTotals struct {
	key    dbTotalsKey
	totals dbDayTotals
}

// sorted lists the sums in key order (bytes of domain, organisation, day):
// concurrent writers on PostgreSQL then lock the totals in one order and
// never deadlock.
func (m dbTotals) sorted() []dbKeyedTotals {
	out := make([]dbKeyedTotals, 0, len(m))
	for k, t := range m {
		out = append(out, dbKeyedTotals{key: k, totals: *t})
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i].key, out[j].key
		if a.domain != b.domain {
			return a.domain < b.domain
		}
		if a.org != b.org {
			return a.org < b.org
		}
		return a.day < b.day
	})
	return out
}

// addTotals adds m to report_day_totals, or to feedback_day_totals when
// imported, in tx: one upsert per key, in key order.
func (s *sqlStore) addTotals(ctx context.Context, tx *sql.Tx, m dbTotals, imported bool) error {
	table, keyColumns, width := "report_day_totals", "domain, day", 6
	if imported {
		table, keyColumns, width = "feedback_day_totals", "domain, org_name, day", 7
	}
	all := m.sorted()
	for start := 0; start < len(all); start += dbChunkRows {
		chunk := all[start:min(start+dbChunkRows, len(all))]
		args := make([]any, 0, len(chunk)*width)
		for _, t := range chunk {
			args = append(args, t.key.domain)
			if imported {
				args = append(args, t.key.org)
			}
			args = append(args, t.key.day, t.totals.messages, t.totals.dkim, t.totals.spf, t.totals.pass)
		}
		q := "INSERT INTO " + table + " (" + keyColumns + ", messages, dkim_aligned, spf_aligned, pass) VALUES " +
			dbPlaceholders(len(chunk), width) + " ON CONFLICT (" + keyColumns + ") DO UPDATE SET " +
			"messages = " + table + ".messages + excluded.messages, " +
			"dkim_aligned = " + table + ".dkim_aligned + excluded.dkim_aligned, " +
			"spf_aligned = " + table + ".spf_aligned + excluded.spf_aligned, " +
			"pass = " + table + ".pass + excluded.pass"
		if _, err := tx.ExecContext(ctx, s.d.bind(q), args...); err != nil {
			return fmt.Errorf("%s: %w", table, err)
		}
	}
	return nil
}

// pruneFeedbackTotals takes the rows of the imported reports that begin
// before beginUS (the reports Prune deletes next, in tx) out of
// feedback_day_totals. Their rows may lie on days that other reports
// share, so their sums are subtracted rather than whole days deleted; a
// key left with no rows goes.
func (s *sqlStore) pruneFeedbackTotals(ctx context.Context, tx *sql.Tx, beginUS int64) error {
	// CROSS JOIN: SQLite then finds the pruned reports by their begin
	// (and each one's rows), instead of reading every imported row.
	// The pruned rows are summed as the statistics sum rows (statsSums).
	subtract := `UPDATE feedback_day_totals SET
			messages = feedback_day_totals.messages - d.messages,
			dkim_aligned = feedback_day_totals.dkim_aligned - d.dkim,
			spf_aligned = feedback_day_totals.spf_aligned - d.spf,
			pass = feedback_day_totals.pass - d.pass
		FROM (SELECT r.domain AS domain, r.org_name AS org_name, w.day AS day, ` + statsSums + `
			FROM feedback_reports r CROSS JOIN feedback_rows w
			WHERE w.report = r.id AND r.begin_us < ? GROUP BY r.domain, r.org_name, w.day) d
		WHERE feedback_day_totals.domain = d.domain AND feedback_day_totals.org_name = d.org_name
			AND feedback_day_totals.day = d.day`
	if _, err := tx.ExecContext(ctx, s.d.bind(subtract), beginUS); err != nil {
		return fmt.Errorf("feedback_day_totals: subtract: %w", err)
	}
	// A key at zero may still have rows of other reports (of count 0):
	// the statistics list those, so only keys without rows go.
	// Only the keys of the pruned rows are looked at, each by its key.
	empty := `DELETE FROM feedback_day_totals WHERE (domain, org_name, day) IN (
			SELECT r.domain, r.org_name, w.day FROM feedback_rows w JOIN feedback_reports r ON r.id = w.report
			WHERE r.begin_us < ?)
		AND messages = 0 AND NOT EXISTS (
			SELECT 1 FROM feedback_rows w JOIN feedback_reports r ON r.id = w.report
			WHERE r.begin_us >= ? AND r.domain = feedback_day_totals.domain
				AND r.org_name = feedback_day_totals.org_name AND w.day = feedback_day_totals.day)`
	if _, err := tx.ExecContext(ctx, s.d.bind(empty), beginUS, beginUS); err != nil {
		return fmt.Errorf("feedback_day_totals: delete empty days: %w", err)
	}
	return nil
}
