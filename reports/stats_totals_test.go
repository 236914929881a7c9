package reports

import (
	"context"
	"database/sql"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
)

// totalsTestTables reads both totals tables, or both tables' sums of the
// rows as the statistics queries group them (fromRows), keyed alike.
func totalsTestTables(t *testing.T, db *sql.DB, fromRows bool) map[dbTotalsKey]dbDayTotals {
	t.Helper()
	const sums = `CAST(SUM(w.count) AS BIGINT),
		CAST(SUM(CASE WHEN w.dkim_aligned = 'pass' THEN w.count ELSE 0 END) AS BIGINT),
		CAST(SUM(CASE WHEN w.spf_aligned = 'pass' THEN w.count ELSE 0 END) AS BIGINT),
		CAST(SUM(CASE WHEN w.dkim_aligned = 'pass' OR w.spf_aligned = 'pass' THEN w.count ELSE 0 END) AS BIGINT)`
	queries := []string{
		"SELECT domain, '', day, messages, dkim_aligned, spf_aligned, pass FROM report_day_totals",
		"SELECT domain, org_name, day, messages, dkim_aligned, spf_aligned, pass FROM feedback_day_totals",
	}
	if fromRows {
		queries = []string{
			"SELECT w.domain, '', w.day, " + sums + " FROM report_rows w GROUP BY w.domain, w.day",
			"SELECT r.domain, r.org_name, w.day, " + sums + ` FROM feedback_rows w JOIN feedback_reports r ON r.id = w.report
				GROUP BY r.domain, r.org_name, w.day`,
		}
	}
	out := map[dbTotalsKey]dbDayTotals{}
	for i, q := range queries {
		rows, err := db.QueryContext(storeTestContext(t), q)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var k dbTotalsKey
			var v dbDayTotals
			if err := rows.Scan(&k.domain, &k.org, &k.day, &v.messages, &v.dkim, &v.spf, &v.pass); err != nil {
				t.Fatal(err)
			}
			if i == 1 {
				k.org = "imported: " + k.org // the tables' keys apart
			}
			out[k] = v
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		rows.Close()
	}
	return out
}

// totalsTestCheck fails unless the totals tables equal the sums of the
// rows, key by key, and have want keys.
func totalsTestCheck(t *testing.T, step string, db *sql.DB, want int) {
	t.Helper()
	got, sums := totalsTestTables(t, db, false), totalsTestTables(t, db, true)
	if !reflect.DeepEqual(got, sums) {
		t.Errorf("%s: totals differ from the rows' sums:\n got %v\nwant %v", step, got, sums)
	}
	if len(got) != want {
		t.Errorf("%s: %d keys in the totals, want %d: %v", step, len(got), want, got)
	}
}

// totalsTestDB is the database under s.
func totalsTestDB(t *testing.T, s Store) *sql.DB {
	t.Helper()
	return s.(*sqlStore).db
}

func TestTotalsFollowAddImportAndPrune(t *testing.T) {
	storeTestEach(t, func(t *testing.T, database string) {
		ctx := storeTestContext(t)
		s := storeTestOpen(t, database)
		db := totalsTestDB(t, s)

		// Recorded rows over four days and three domains, in two batches
		// that share keys; one domain in two spellings.
		var first, second []Entry
		for day := -1; day < 3; day++ {
			for i, domain := range []string{"example.com", "example.org", "a_b.example"} {
				r := statsTestRow(domain, day, fmt.Sprintf("192.0.2.%d", i+1), int64(day+2+i), "pass", "fail", domain)
				first = append(first, Entry{Row: r, Seen: r.Day})
				r2 := statsTestRow(strings.ToUpper(domain), day, "203.0.113.9", 3, "fail", "pass", domain)
				second = append(second, Entry{Row: r2, Seen: r2.Day}, Entry{Row: r, Seen: r.Day})
			}
		}
		for _, batch := range [][]Entry{first, second} {
			if err := s.Add(ctx, batch); err != nil {
				t.Fatal(err)
			}
		}
		totalsTestCheck(t, "after Adds", db, 12)

		// Imported reports: the fixtures (rows on days of their own), a
		// report beginning on day -1 with rows on day 0, one beginning on
		// day 1 with a row of day -1, and one with a row of count 0.
		imported := statsTestImported()
		early := statsTestImported()[0]
		early.ReportID, early.Begin = "early", statsTestDay(-1)
		late := statsTestImported()[1]
		late.ReportID, late.Begin = "late", statsTestDay(1)
		late.Rows[1].Day = statsTestDay(-1)
		zero := statsTestImported()[2]
		zero.ReportID, zero.Begin = "zero", statsTestDay(-1)
		zero.Rows[0].Count = 0
		zero.Rows[0].Day = statsTestDay(-1)
		for _, f := range append(imported, early, late, zero) {
			if ok, err := s.Import(ctx, f); err != nil || !ok {
				t.Fatalf("Import %s: %v, %v", f.ReportID, ok, err)
			}
		}
		totalsTestCheck(t, "after Imports", db, 12+7)
		before := totalsTestTables(t, db, false)
		again := statsTestImported()[0]
		again.Rows = append(again.Rows, again.Rows...)
		if ok, err := s.Import(ctx, again); err != nil || ok {
			t.Fatalf("duplicate Import: %v, %v", ok, err)
		}
		if after := totalsTestTables(t, db, false); !reflect.DeepEqual(after, before) {
			t.Errorf("a duplicate Import changed the totals:\n got %v\nwant %v", after, before)
		}

		// Prune before day 0: recorded day -1 goes; of the imported, the
		// reports "early" and "zero" go, with "early"'s rows of day 0 and
		// 1, while "late"'s row of day -1 stays.
		if _, err := s.Prune(ctx, statsTestDay(0)); err != nil {
			t.Fatal(err)
		}
		totalsTestCheck(t, "after Prune", db, 9+6)
		got, err := s.DayTotals(ctx, StatsQuery{Imported: true, Domain: "example.com", Since: statsTestDay(-1), Until: statsTestDay(1)})
		if err != nil {
			t.Fatal(err)
		}
		want := []DayTotals{
			{Day: statsTestDay(-1), Org: "Org B", Totals: tot(2, 0, 0, 0, 2)},
			{Day: statsTestDay(0), Org: "Org A", Totals: tot(108, 100, 100, 100, 8)},
			{Day: statsTestDay(0), Org: "Org B", Totals: tot(42, 0, 40, 40, 2)},
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("imported day totals after Prune:\n got %v\nwant %v", got, want)
		}
		// Everything pruned: nothing left over.
		if _, err := s.Prune(ctx, statsTestDay(10)); err != nil {
			t.Fatal(err)
		}
		totalsTestCheck(t, "after pruning everything", db, 0)
	})
}

// TestTotalsZeroCountRowsKeepTheirDay keeps a day whose only rows count
// 0 when Prune takes another report's rows of that day away: the
// statistics list that domain and day, as the rows' sums did.
func TestTotalsZeroCountRowsKeepTheirDay(t *testing.T) {
	storeTestEach(t, func(t *testing.T, database string) {
		ctx := storeTestContext(t)
		s := storeTestOpen(t, database)
		old := statsTestImported()[2] // example.org, day 1, Org A
		old.ReportID, old.Begin = "old", statsTestDay(-1)
		kept := statsTestImported()[2]
		kept.ReportID = "kept"
		kept.Rows[0].Count = 0
		for _, f := range []*Feedback{old, kept} {
			if ok, err := s.Import(ctx, f); err != nil || !ok {
				t.Fatalf("Import %s: %v, %v", f.ReportID, ok, err)
			}
		}
		if _, err := s.Prune(ctx, statsTestDay(0)); err != nil {
			t.Fatal(err)
		}
		totalsTestCheck(t, "after Prune", totalsTestDB(t, s), 1)
		got, total, err := s.DomainTotals(ctx, statsTestQuery(true, ""), "", 0, 10)
		if want := []DomainTotals{{"example.org", tot(0, 0, 0, 0, 0)}}; err != nil || total != 1 || !reflect.DeepEqual(got, want) {
			t.Errorf("DomainTotals = %v, %d, %v; want %v, 1", got, total, err, want)
		}
	})
}

// TestTotalsConcurrentAddsOnPostgres adds from 8 goroutines over two
// handles of one PostgreSQL database, each batch touching the same keys
// in an order of its own: the totals come out exact, and no Add fails
// (a deadlock would fail one).
func TestTotalsConcurrentAddsOnPostgres(t *testing.T) {
	const (
		writers = 8
		batches = 15
	)
	ctx := storeTestContext(t)
	database := storeTestPostgresDSN(t)
	handles := []Store{storeTestOpen(t, database), storeTestOpen(t, database)}
	domains := []string{"example.com", "example.org", "example.net", "a_b.example"}
	var wg sync.WaitGroup
	errs := make(chan error, writers*batches)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := handles[w%len(handles)]
			for b := 0; b < batches; b++ {
				var batch []Entry
				for i := range domains {
					// Writer w starts at a domain and day of its own.
					domain := domains[(i+w)%len(domains)]
					for day := 0; day < 2; day++ {
						r := statsTestRow(domain, (day+w)%2, fmt.Sprintf("192.0.2.%d", w+1), 1, "pass", "fail", domain)
						batch = append(batch, Entry{Row: r, Seen: r.Day})
					}
				}
				if err := s.Add(ctx, batch); err != nil {
					errs <- fmt.Errorf("writer %d, batch %d: %w", w, b, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	db := totalsTestDB(t, handles[0])
	totalsTestCheck(t, "after concurrent Adds", db, len(domains)*2)
	for k, v := range totalsTestTables(t, db, false) {
		if want := (dbDayTotals{messages: writers * batches, dkim: writers * batches, pass: writers * batches}); v != want {
			t.Errorf("%v: %+v, want %+v", k, v, want)
		}
	}
}

// totalsTestFillOld brings db to version (before 3) and lets fill write
// to it as a binary of that version did: the totals tables exist only
// while fill runs.
func totalsTestFillOld(t *testing.T, db *sql.DB, d dialect, version int, fill func(ctx context.Context, s *sqlStore)) {
	t.Helper()
	ctx := storeTestContext(t)
	if err := migrate(ctx, db, d, migrations[:version]); err != nil {
		t.Fatal(err)
	}
	var creates []string
	for _, m := range migrations {
		if m.version != 3 {
			continue
		}
		for _, stmt := range m.statements {
			if strings.HasPrefix(stmt, "CREATE TABLE") {
				creates = append(creates, stmt)
			}
		}
	}
	for _, stmt := range creates {
		if _, err := db.ExecContext(ctx, stmt); err != nil {
			t.Fatal(err)
		}
	}
	fill(ctx, &sqlStore{db: db, d: d, name: fmt.Sprintf("version %d", version)})
	for _, table := range []string{"report_day_totals", "feedback_day_totals"} {
		if _, err := db.ExecContext(ctx, "DROP TABLE "+table); err != nil {
			t.Fatal(err)
		}
	}
}

// TestTotalsMigrateAVersion2Database opens a version-2 database holding
// rows: the migration fills the totals with the rows' sums, and the
// statistics read what a store filled from scratch reads.
func TestTotalsMigrateAVersion2Database(t *testing.T) {
	storeTestEach(t, func(t *testing.T, database string) {
		db, d := migrateTestDB(t, database)
		totalsTestFillOld(t, db, d, 2, func(ctx context.Context, old *sqlStore) {
			if err := old.Add(ctx, statsTestRecorded()); err != nil {
				t.Fatal(err)
			}
			for _, f := range statsTestImported() {
				if _, err := old.Import(ctx, f); err != nil {
					t.Fatal(err)
				}
			}
		})
		if v := migrateTestVersion(t, db); v != 2 {
			t.Fatalf("schema version %d before Open, want 2", v)
		}
		s := storeTestOpen(t, database)
		if v := migrateTestVersion(t, db); v != 3 {
			t.Errorf("schema version %d after Open, want 3", v)
		}
		totalsTestCheck(t, "after the upgrade", db, 10+5)

		ctx := storeTestContext(t)
		fresh := statsTestStore(t, storeTestBackendLike(t, database))
		for _, imported := range []bool{false, true} {
			q := StatsQuery{Imported: imported, Since: statsTestDay(-5), Until: statsTestDay(5)}
			gotDomains, gotTotal, err1 := s.DomainTotals(ctx, q, "", 0, 100)
			wantDomains, wantTotal, err2 := fresh.DomainTotals(ctx, q, "", 0, 100)
			if err1 != nil || err2 != nil || gotTotal != wantTotal || !reflect.DeepEqual(gotDomains, wantDomains) || len(gotDomains) == 0 {
				t.Errorf("imported %v: upgraded DomainTotals %v, %d, %v; fresh %v, %d, %v",
					imported, gotDomains, gotTotal, err1, wantDomains, wantTotal, err2)
			}
			gotDays, err1 := s.DayTotals(ctx, q)
			wantDays, err2 := fresh.DayTotals(ctx, q)
			if err1 != nil || err2 != nil || !reflect.DeepEqual(gotDays, wantDays) || len(gotDays) == 0 {
				t.Errorf("imported %v: upgraded DayTotals %v, %v; fresh %v, %v", imported, gotDays, err1, wantDays, err2)
			}
		}
	})
}

// storeTestBackendLike is a fresh database of the same kind as database.
func storeTestBackendLike(t *testing.T, database string) string {
	t.Helper()
	if isPostgresURL(database) {
		return storeTestPostgresDSN(t)
	}
	return storeTestBackends[0].database(t)
}
