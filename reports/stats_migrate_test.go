package reports

import (
	"context"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// TestStatsIndexesMigrateAnOldDatabase opens, with this binary, a
// database that a version-1 binary made and filled: the statistics
// indexes are added, the data stays, and the statistics read it.
func TestStatsIndexesMigrateAnOldDatabase(t *testing.T) {
	storeTestEach(t, func(t *testing.T, database string) {
		ctx := storeTestContext(t)
		db, d := migrateTestDB(t, database)
		totalsTestFillOld(t, db, d, 1, func(ctx context.Context, old *sqlStore) {
			if err := old.Add(ctx, statsTestRecorded()); err != nil {
				t.Fatal(err)
			}
			for _, f := range statsTestImported() {
				if _, err := old.Import(ctx, f); err != nil {
					t.Fatal(err)
				}
			}
		})
		old := &sqlStore{db: db, d: d, name: "version 1"}
		if got := statsTestIndexes(t, old); len(got) != 0 {
			t.Fatalf("version 1 has the statistics indexes already: %q", got)
		}

		s := storeTestOpen(t, database)
		if v, want := migrateTestVersion(t, db), migrations[len(migrations)-1].version; v != want {
			t.Errorf("schema version %d after Open, want %d", v, want)
		}
		if got, want := statsTestIndexes(t, old), []string{"feedback_reports_domain", "feedback_rows_day"}; !reflect.DeepEqual(got, want) {
			t.Errorf("indexes %q, want %q", got, want)
		}
		got, err := s.DayTotals(ctx, statsTestQuery(true, "example.com"))
		if err != nil || len(got) != 3 || got[0].Messages != 108 {
			t.Errorf("imported day totals after the upgrade = %v, %v", got, err)
		}
		if _, total, err := s.DomainTotals(ctx, statsTestQuery(false, ""), "", 0, 10); err != nil || total != 6 {
			t.Errorf("recorded domains after the upgrade: %d, %v", total, err)
		}
	})
}

// statsTestIndexes lists the statistics indexes that s's database has.
func statsTestIndexes(t *testing.T, s *sqlStore) []string {
	t.Helper()
	q := "SELECT name FROM sqlite_master WHERE type = 'index' AND name IN ('feedback_rows_day', 'feedback_reports_domain') ORDER BY name"
	if s.d.postgres {
		q = "SELECT indexname FROM pg_indexes WHERE indexname IN ('feedback_rows_day', 'feedback_reports_domain') ORDER BY indexname"
	}
	rows, err := s.db.QueryContext(storeTestContext(t), q)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		names = append(names, n)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return names
}

// TestStatsSQLitePlansUseTheIndexes checks SQLite's plans of the real
// queries: one domain's rows and totals are found through its domain
// (imported rows: the policy domain, then each report's rows), every
// domain's through the day, never by reading a whole table.
func TestStatsSQLitePlansUseTheIndexes(t *testing.T) {
	ctx := storeTestContext(t)
	s := storeTestOpen(t, filepath.Join(t.TempDir(), "reports.db")).(*sqlStore)
	type built struct {
		query string
		args  []any
		err   error
	}
	build := func(query string, args []any, err error) built { return built{query, args, err} }
	const (
		reportsByDomain = "USING INDEX feedback_reports_domain (domain=?)"
		rowsOfAReport   = "USING INDEX sqlite_autoindex_feedback_rows_1 (report=?)"
		importedByDay   = "USING INDEX feedback_rows_day (day>? AND day<?)"
		recordedByKey   = "USING INDEX sqlite_autoindex_report_rows_1 (domain=? AND day>? AND day<?)"
		recordedByDay   = "USING INDEX report_rows_day (day>? AND day<?)"
		// DomainTotals and DayTotals read the per-day totals.
		importedTotalsByDomain = "USING INDEX sqlite_autoindex_feedback_day_totals_1 (domain=?)"
		importedTotalsByDay    = "USING INDEX feedback_day_totals_day (day>? AND day<?)"
		recordedTotalsByKey    = "USING INDEX sqlite_autoindex_report_day_totals_1 (domain=? AND day>? AND day<?)"
		recordedTotalsByDay    = "USING INDEX report_day_totals_day (day>? AND day<?)"
	)
	tests := []struct {
		name string
		built
		want []string
	}{
		{"imported, one domain's days", build(s.d.dayTotalsQuery(statsTestQuery(true, "example.com"))), []string{importedTotalsByDomain}},
		{"imported, one domain's sources", build(s.d.sourcesQuery(statsTestQuery(true, "example.com"), 10)), []string{reportsByDomain, rowsOfAReport}},
		{"imported, every domain's days", build(s.d.dayTotalsQuery(statsTestQuery(true, ""))), []string{importedTotalsByDay}},
		{"imported, domains", build(s.d.domainTotalsQuery(statsTestQuery(true, ""), "x", 0, 10)), []string{importedTotalsByDay}},
		{"recorded, one domain's days", build(s.d.dayTotalsQuery(statsTestQuery(false, "example.com"))), []string{recordedTotalsByKey}},
		{"recorded, one domain's sources", build(s.d.sourcesQuery(statsTestQuery(false, "example.com"), 10)), []string{recordedByKey}},
		{"recorded, every domain's days", build(s.d.dayTotalsQuery(statsTestQuery(false, ""))), []string{recordedTotalsByDay}},
		{"recorded, domains", build(s.d.domainTotalsQuery(statsTestQuery(false, ""), "x", 0, 10)), []string{recordedTotalsByDay}},
	}
	for _, tc := range tests {
		if tc.err != nil {
			t.Fatal(tc.err)
		}
		rows, err := s.db.QueryContext(ctx, "EXPLAIN QUERY PLAN "+tc.query, tc.args...)
		if err != nil {
			t.Fatal(err)
		}
		var plan []string
		for rows.Next() {
			var id, parent, unused int
			var detail string
			if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, detail)
		}
		rows.Close()
		text := strings.Join(plan, "\n")
		for _, w := range tc.want {
			if !strings.Contains(text, w) {
				t.Errorf("%s: the plan does not use %s:\n%s", tc.name, w, text)
			}
		}
		if strings.Contains(text, "SCAN w") || strings.Contains(text, "SCAN r") {
			t.Errorf("%s: the plan reads a whole table:\n%s", tc.name, text)
		}
	}
}
