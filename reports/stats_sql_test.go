package reports

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"
)

// The statistics tests' days: statsTestSince to statsTestUntil (excluded)
// is the range most cases ask for, and the fixtures put rows just outside
// it too.
var (
	statsTestSince = time.Date(2026, 3, 10, 0, 0, 0, 0, time.UTC)
	statsTestUntil = statsTestSince.AddDate(0, 0, 3)
)

// statsTestDay is the fixtures' day n (0 is statsTestSince).
func statsTestDay(n int) time.Time { return statsTestSince.AddDate(0, 0, n) }

// statsTestEach runs fn on the store tests' backends and on a PostgreSQL
// database whose collation is not bytewise (ICU's en-US: "_" before "%",
// "-" after "_"), so that every order the tests expect is seen to come
// from the queries, not from the test cluster's C locale.
func statsTestEach(t *testing.T, fn func(t *testing.T, database string)) {
	storeTestEach(t, fn)
	t.Run("postgres-icu", func(t *testing.T) {
		t.Parallel()
		fn(t, statsTestICUDatabase(t))
	})
}

// statsTestICUDatabase creates a database with ICU's en-US collation on
// the shared server and returns its URL.
func statsTestICUDatabase(t *testing.T) string {
	t.Helper()
	ctx := storeTestContext(t)
	srv := storeTestPostgres(t)
	admin, err := sql.Open("pgx", storeTestPostgresDSN(t))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	name := fmt.Sprintf("stats_icu_%d", storeTestPG.n.Add(1))
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+name+
		" TEMPLATE template0 ENCODING 'UTF8' LOCALE 'C' LOCALE_PROVIDER icu ICU_LOCALE 'en-US'"); err != nil {
		t.Fatalf("a database with ICU collation (Debian's postgresql is built with ICU): %v", err)
	}
	dsn := srv.DSN(name)
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var underscoreFirst bool
	if err := db.QueryRowContext(ctx, "SELECT 'a_b' < 'a%b'").Scan(&underscoreFirst); err != nil || !underscoreFirst {
		t.Fatalf("the ICU database sorts bytewise (%v): the test would prove nothing", err)
	}
	return dsn
}

// statsTestRow is a row of count messages with the given alignments.
func statsTestRow(domain string, day int, ip string, count int64, dkim, spf, headerFrom string) Row {
	return Row{
		Domain: domain, Day: statsTestDay(day), SourceIP: netip.MustParseAddr(ip), Count: count,
		HeaderFrom: headerFrom, EnvelopeFrom: headerFrom, Disposition: "none", DKIMAligned: dkim, SPFAligned: spf,
	}
}

// statsTestRecorded are the recorded rows: several domains, days and
// sources, a domain and a From domain in other cases, domains with LIKE's
// metacharacters, a source with six From domains, and rows of the days
// just before and at the end of the range.
func statsTestRecorded() []Entry {
	rows := []Row{
		statsTestRow("example.com", 0, "192.0.2.1", 10, "pass", "pass", "example.com"),
		statsTestRow("example.com", 0, "192.0.2.2", 5, "fail", "pass", "News.Example.com"),
		statsTestRow("EXAMPLE.COM", 1, "192.0.2.2", 3, "pass", "fail", "news.example.com"),
		statsTestRow("example.com", 1, "203.0.113.9", 7, "fail", "fail", "example.com"),
		statsTestRow("example.com", -1, "192.0.2.1", 100, "fail", "fail", "example.com"),
		statsTestRow("example.com", 3, "192.0.2.1", 100, "fail", "fail", "example.com"),
		statsTestRow("example.org", 0, "198.51.100.1", 4, "pass", "fail", "example.org"),
		statsTestRow("a_b.example", 1, "192.0.2.5", 2, "pass", "pass", "a_b.example"),
		statsTestRow("a%b.example", 1, "192.0.2.5", 2, "fail", "fail", "a%b.example"),
		statsTestRow("axb.example", 1, "192.0.2.5", 20, "pass", "fail", "axb.example"),
		statsTestRow(`a\b.example`, 1, "192.0.2.5", 1, "fail", "fail", `a\b.example`),
	}
	for _, from := range []string{"f6.example", "f2.example", "f4.example", "f1.example", "f5.example", "f3.example"} {
		rows = append(rows, statsTestRow("example.com", 2, "203.0.113.9", 1, "fail", "fail", from))
	}
	entries := make([]Entry, len(rows))
	for i, r := range rows {
		entries[i] = Entry{Row: r, Policy: Policy{Domain: r.Domain, P: "reject"}, Seen: r.Day}
	}
	return entries
}

// statsTestImported are received reports: two organisations about
// example.com (one spelling it in capitals), one about example.org, and
// one whose only row is outside the range. Rows carry their own days.
func statsTestImported() []*Feedback {
	report := func(org, id, domain string, rows ...Row) *Feedback {
		return &Feedback{
			OrgName: org, ReportID: id, Begin: statsTestSince, End: statsTestUntil,
			Policy: Policy{Domain: domain, P: "reject"}, Rows: rows,
		}
	}
	return []*Feedback{
		report("Org A", "a1", "example.com",
			statsTestRow("ignored.example", 0, "192.0.2.1", 100, "pass", "pass", "example.com"),
			statsTestRow("ignored.example", 1, "192.0.2.1", 50, "pass", "fail", "example.com"),
			statsTestRow("ignored.example", 0, "2001:db8::1", 8, "fail", "fail", "example.com")),
		report("Org B", "b1", "EXAMPLE.com",
			statsTestRow("", 0, "192.0.2.1", 20, "fail", "pass", "Example.com"),
			statsTestRow("", 0, "2001:db8::1", 2, "fail", "fail", "mail.example.com")),
		report("Org A", "a2", "example.org",
			statsTestRow("", 1, "198.51.100.1", 9, "fail", "fail", "example.org")),
		report("Org A", "a3", "example.com",
			statsTestRow("", 3, "192.0.2.1", 1000, "fail", "fail", "example.com")),
	}
}

// statsTestStore opens database with both fixtures stored.
func statsTestStore(t *testing.T, database string) Store {
	t.Helper()
	s := storeTestOpen(t, database)
	ctx := storeTestContext(t)
	if err := s.Add(ctx, statsTestRecorded()); err != nil {
		t.Fatal(err)
	}
	for _, f := range statsTestImported() {
		if ok, err := s.Import(ctx, f); err != nil || !ok {
			t.Fatalf("Import %s: %v, %v", f.ReportID, ok, err)
		}
	}
	return s
}

// statsTestQuery is the usual range, of domain, recorded or imported.
func statsTestQuery(imported bool, domain string) StatsQuery {
	return StatsQuery{Imported: imported, Domain: domain, Since: statsTestSince, Until: statsTestUntil}
}

// tot spells Totals briefly: messages, DKIM, SPF, pass, neither.
func tot(messages, dkim, spf, pass, neither int64) Totals {
	return Totals{Messages: messages, DKIMAligned: dkim, SPFAligned: spf, Pass: pass, Neither: neither}
}

func TestStatsDomainTotals(t *testing.T) {
	all := []DomainTotals{
		{"example.com", tot(31, 13, 15, 18, 13)},
		{"axb.example", tot(20, 20, 0, 20, 0)},
		{"example.org", tot(4, 4, 0, 4, 0)},
		// A tie, by name in byte order: % before _.
		{"a%b.example", tot(2, 0, 0, 0, 2)},
		{"a_b.example", tot(2, 2, 2, 2, 0)},
		{`a\b.example`, tot(1, 0, 0, 0, 1)},
	}
	imported := []DomainTotals{
		{"example.com", tot(180, 150, 120, 170, 10)},
		{"example.org", tot(9, 0, 0, 0, 9)},
	}
	tests := []struct {
		name          string
		q             StatsQuery
		search        string
		offset, limit int
		want          []DomainTotals
		total         int
	}{
		{"all", statsTestQuery(false, ""), "", 0, 1000, all, 6},
		{"domain ignored", statsTestQuery(false, "example.org"), "", 0, 1000, all, 6},
		{"first page", statsTestQuery(false, ""), "", 0, 2, all[:2], 6},
		{"middle page", statsTestQuery(false, ""), "example", 2, 2, all[2:4], 6},
		{"last page, short", statsTestQuery(false, ""), "", 4, 5, all[4:], 6},
		{"past the end still counts", statsTestQuery(false, ""), "", 6, 10, nil, 6},
		{"far past the end", statsTestQuery(false, ""), "", 1 << 40, 1, nil, 6},
		{"search ignores case", statsTestQuery(false, ""), "EXAMPLE.COM", 0, 10, all[:1], 1},
		{"search is a substring", statsTestQuery(false, ""), "ample.o", 0, 10, all[2:3], 1},
		{"underscore is literal", statsTestQuery(false, ""), "a_b", 0, 10, all[4:5], 1},
		{"lone underscore", statsTestQuery(false, ""), "_", 0, 10, all[4:5], 1},
		{"percent is literal", statsTestQuery(false, ""), "a%b", 0, 10, all[3:4], 1},
		{"lone percent", statsTestQuery(false, ""), "%", 0, 10, all[3:4], 1},
		{"backslash is literal", statsTestQuery(false, ""), `\`, 0, 10, all[5:], 1},
		{"no match", statsTestQuery(false, ""), "nothing", 0, 10, nil, 0},
		{"range without rows", StatsQuery{Since: statsTestDay(10), Until: statsTestDay(20)}, "", 0, 10, nil, 0},
		{"one day", StatsQuery{Since: statsTestDay(0), Until: statsTestDay(1)}, "", 0, 10,
			[]DomainTotals{{"example.com", tot(15, 10, 15, 15, 0)}, {"example.org", tot(4, 4, 0, 4, 0)}}, 2},
		{"imported", statsTestQuery(true, ""), "", 0, 10, imported, 2},
		{"imported, searched", statsTestQuery(true, ""), ".ORG", 0, 10, imported[1:], 1},
		{"imported, past the end", statsTestQuery(true, ""), "", 2, 10, nil, 2},
	}
	statsTestEach(t, func(t *testing.T, database string) {
		s := statsTestStore(t, database)
		ctx := storeTestContext(t)
		for _, tc := range tests {
			got, total, err := s.DomainTotals(ctx, tc.q, tc.search, tc.offset, tc.limit)
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
				continue
			}
			if !reflect.DeepEqual(got, tc.want) || total != tc.total {
				t.Errorf("%s:\n got %v, total %d\nwant %v, total %d", tc.name, got, total, tc.want, tc.total)
			}
		}
	})
}

func TestStatsDayTotals(t *testing.T) {
	day := func(n int, org string, t Totals) DayTotals {
		return DayTotals{Day: statsTestDay(n), Org: org, Totals: t}
	}
	exampleCom := []DayTotals{day(0, "", tot(15, 10, 15, 15, 0)), day(1, "", tot(10, 3, 0, 3, 7)), day(2, "", tot(6, 0, 0, 0, 6))}
	tests := []struct {
		name string
		q    StatsQuery
		want []DayTotals
	}{
		{"one domain", statsTestQuery(false, "example.com"), exampleCom},
		{"domain in capitals", statsTestQuery(false, "Example.COM"), exampleCom},
		{"every domain", statsTestQuery(false, ""),
			[]DayTotals{day(0, "", tot(19, 14, 15, 19, 0)), day(1, "", tot(35, 25, 2, 25, 10)), day(2, "", tot(6, 0, 0, 0, 6))}},
		{"since's day in, until's day out",
			StatsQuery{Domain: "example.com", Since: statsTestDay(1).Add(23 * time.Hour), Until: statsTestDay(2).Add(time.Hour)},
			exampleCom[1:2]},
		{"the days around the range", StatsQuery{Domain: "example.com", Since: statsTestDay(-1), Until: statsTestDay(4)},
			append(append([]DayTotals{day(-1, "", tot(100, 0, 0, 0, 100))}, exampleCom...), day(3, "", tot(100, 0, 0, 0, 100)))},
		{"metacharacters are not patterns", statsTestQuery(false, "a_b.example"), []DayTotals{day(1, "", tot(2, 2, 2, 2, 0))}},
		{"unknown domain", statsTestQuery(false, "example.net"), nil},
		{"imported, per organisation", statsTestQuery(true, "example.com"),
			[]DayTotals{day(0, "Org A", tot(108, 100, 100, 100, 8)), day(0, "Org B", tot(22, 0, 20, 20, 2)), day(1, "Org A", tot(50, 50, 0, 50, 0))}},
		{"imported, every domain", statsTestQuery(true, ""),
			[]DayTotals{day(0, "Org A", tot(108, 100, 100, 100, 8)), day(0, "Org B", tot(22, 0, 20, 20, 2)), day(1, "Org A", tot(59, 50, 0, 50, 9))}},
		{"imported, a row's own day counts", StatsQuery{Imported: true, Domain: "example.com", Since: statsTestDay(3), Until: statsTestDay(4)},
			[]DayTotals{day(3, "Org A", tot(1000, 0, 0, 0, 1000))}},
		{"imported, recorded domain only", statsTestQuery(true, "axb.example"), nil},
	}
	statsTestEach(t, func(t *testing.T, database string) {
		s := statsTestStore(t, database)
		ctx := storeTestContext(t)
		for _, tc := range tests {
			got, err := s.DayTotals(ctx, tc.q)
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
				continue
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("%s:\n got %v\nwant %v", tc.name, got, tc.want)
			}
		}
	})
}

func TestStatsSources(t *testing.T) {
	src := func(ip, org string, t Totals, from ...string) SourceTotals {
		return SourceTotals{IP: netip.MustParseAddr(ip), Org: org, HeaderFrom: from, Totals: t}
	}
	exampleCom := []SourceTotals{
		// Six From domains: the first five in byte order.
		src("203.0.113.9", "", tot(13, 0, 0, 0, 13), "example.com", "f1.example", "f2.example", "f3.example", "f4.example"),
		src("192.0.2.1", "", tot(10, 10, 10, 10, 0), "example.com"),
		// Two spellings of one From domain.
		src("192.0.2.2", "", tot(8, 3, 5, 8, 0), "news.example.com"),
	}
	tests := []struct {
		name  string
		q     StatsQuery
		limit int
		want  []SourceTotals
	}{
		{"one domain", statsTestQuery(false, "example.com"), 10, exampleCom},
		{"limit", statsTestQuery(false, "EXAMPLE.com"), 2, exampleCom[:2]},
		{"every domain", statsTestQuery(false, ""), 1000, []SourceTotals{
			exampleCom[0],
			src("192.0.2.5", "", tot(25, 22, 2, 22, 3), "a%b.example", `a\b.example`, "a_b.example", "axb.example"),
			exampleCom[1], exampleCom[2],
			src("198.51.100.1", "", tot(4, 4, 0, 4, 0), "example.org"),
		}},
		{"unknown domain", statsTestQuery(false, "example.net"), 10, nil},
		{"imported, per organisation", statsTestQuery(true, "example.com"), 10, []SourceTotals{
			src("2001:db8::1", "Org A", tot(8, 0, 0, 0, 8), "example.com"),
			src("2001:db8::1", "Org B", tot(2, 0, 0, 0, 2), "mail.example.com"),
			src("192.0.2.1", "Org A", tot(150, 150, 100, 150, 0), "example.com"),
			src("192.0.2.1", "Org B", tot(20, 0, 20, 20, 0), "example.com"),
		}},
		{"imported, limit 1", statsTestQuery(true, "example.com"), 1, []SourceTotals{
			src("2001:db8::1", "Org A", tot(8, 0, 0, 0, 8), "example.com"),
		}},
	}
	statsTestEach(t, func(t *testing.T, database string) {
		s := statsTestStore(t, database)
		ctx := storeTestContext(t)
		for _, tc := range tests {
			got, err := s.Sources(ctx, tc.q, tc.limit)
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
				continue
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("%s:\n got %v\nwant %v", tc.name, got, tc.want)
			}
		}
	})
}

// TestStatsSourceWithoutFromDomain lists a source whose rows have no From
// domain with an empty list, not a null one.
func TestStatsSourceWithoutFromDomain(t *testing.T) {
	statsTestEach(t, func(t *testing.T, database string) {
		s := storeTestOpen(t, database)
		ctx := storeTestContext(t)
		r := statsTestRow("example.com", 0, "192.0.2.1", 1, "fail", "fail", "")
		if err := s.Add(ctx, []Entry{{Row: r}}); err != nil {
			t.Fatal(err)
		}
		got, err := s.Sources(ctx, statsTestQuery(false, "example.com"), 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 || got[0].HeaderFrom == nil || len(got[0].HeaderFrom) != 0 {
			t.Errorf("Sources = %#v, want one source with an empty HeaderFrom", got)
		}
	})
}

// statsTestCall is one StatsReader call, for the tests that attack every
// method alike.
type statsTestCall struct {
	name string
	call func(ctx context.Context, s StatsReader) error
}

// statsTestCalls calls each method with q, search, offset and limit.
func statsTestCalls(q StatsQuery, search string, offset, limit int) []statsTestCall {
	return []statsTestCall{
		{"DomainTotals", func(ctx context.Context, s StatsReader) error {
			_, _, err := s.DomainTotals(ctx, q, search, offset, limit)
			return err
		}},
		{"DayTotals", func(ctx context.Context, s StatsReader) error {
			_, err := s.DayTotals(ctx, q)
			return err
		}},
		{"Sources", func(ctx context.Context, s StatsReader) error {
			_, err := s.Sources(ctx, q, limit)
			return err
		}},
	}
}

func TestStatsRefusesQueriesOutOfBounds(t *testing.T) {
	day0 := statsTestSince
	ok := statsTestQuery(false, "example.com")
	with := func(f func(*StatsQuery)) StatsQuery {
		q := ok
		f(&q)
		return q
	}
	long := strings.Repeat("a", MaxStatsTextBytes-len(".example")) + ".example"
	tests := []struct {
		name          string
		q             StatsQuery
		search        string
		offset, limit int
		// refused lists the methods that must refuse; the others must
		// answer.
		refused string
	}{
		{"in bounds", ok, "", 0, 10, ""},
		{"same day", with(func(q *StatsQuery) { q.Until = q.Since }), "", 0, 10, "DomainTotals DayTotals Sources"},
		{"same UTC day, later hour", with(func(q *StatsQuery) { q.Until = q.Since.Add(23 * time.Hour) }), "", 0, 10, "DomainTotals DayTotals Sources"},
		{"backwards", with(func(q *StatsQuery) { q.Since, q.Until = q.Until, q.Since }), "", 0, 10, "DomainTotals DayTotals Sources"},
		{"zero times", with(func(q *StatsQuery) { q.Since, q.Until = time.Time{}, time.Time{} }), "", 0, 10, "DomainTotals DayTotals Sources"},
		{"since zero", with(func(q *StatsQuery) { q.Since = time.Time{} }), "", 0, 10, "DomainTotals DayTotals Sources"},
		{"366 days", with(func(q *StatsQuery) { q.Since, q.Until = day0, day0.AddDate(0, 0, MaxStatsDays) }), "", 0, 10, ""},
		{"367 days", with(func(q *StatsQuery) { q.Since, q.Until = day0, day0.AddDate(0, 0, MaxStatsDays+1) }), "", 0, 10, "DomainTotals DayTotals Sources"},
		{"far future", with(func(q *StatsQuery) { q.Since, q.Until = day0, time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC) }), "", 0, 10, "DomainTotals DayTotals Sources"},
		{"domain of 253 bytes", with(func(q *StatsQuery) { q.Domain = long }), "", 0, 10, ""},
		// DomainTotals ignores the domain.
		{"domain of 254 bytes", with(func(q *StatsQuery) { q.Domain = "a" + long }), "", 0, 10, "DayTotals Sources"},
		{"domain of a megabyte", with(func(q *StatsQuery) { q.Domain = strings.Repeat("a", 1<<20) }), "", 0, 10, "DayTotals Sources"},
		{"domain not UTF-8", with(func(q *StatsQuery) { q.Domain = "ex\xffample.com" }), "", 0, 10, "DayTotals Sources"},
		{"domain with NUL", with(func(q *StatsQuery) { q.Domain = "example.com\x00" }), "", 0, 10, "DayTotals Sources"},
		{"search of 253 bytes", ok, long, 0, 10, ""},
		{"search of 254 bytes", ok, "a" + long, 0, 10, "DomainTotals"},
		{"search not UTF-8", ok, "\xc3", 0, 10, "DomainTotals"},
		{"search with NUL", ok, "\x00", 0, 10, "DomainTotals"},
		{"limit 1", ok, "", 0, 1, ""},
		{"limit 1000", ok, "", 0, MaxStatsLimit, ""},
		{"limit 0", ok, "", 0, 0, "DomainTotals Sources"},
		{"limit -1", ok, "", 0, -1, "DomainTotals Sources"},
		{"limit 1001", ok, "", 0, MaxStatsLimit + 1, "DomainTotals Sources"},
		{"limit huge", ok, "", 0, 1 << 62, "DomainTotals Sources"},
		{"offset -1", ok, "", -1, 10, "DomainTotals"},
		{"offset most negative", ok, "", -1 << 63, 10, "DomainTotals"},
		{"offset huge", ok, "", 1<<63 - 1, 10, ""},
	}
	statsTestEach(t, func(t *testing.T, database string) {
		s := statsTestStore(t, database)
		ctx := storeTestContext(t)
		for _, tc := range tests {
			for _, imported := range []bool{false, true} {
				q := tc.q
				q.Imported = imported
				for _, c := range statsTestCalls(q, tc.search, tc.offset, tc.limit) {
					err := c.call(ctx, s)
					name := fmt.Sprintf("%s: %s (imported %v)", tc.name, c.name, imported)
					switch refuse := strings.Contains(" "+tc.refused+" ", " "+c.name+" "); {
					case refuse && !errors.Is(err, ErrBadStatsQuery):
						t.Errorf("%s: err = %v, want ErrBadStatsQuery", name, err)
					case refuse && !strings.Contains(err.Error(), "reports: "):
						t.Errorf("%s: err = %v, want the store named", name, err)
					case !refuse && err != nil:
						t.Errorf("%s: %v", name, err)
					}
				}
			}
		}
	})
}

func TestStatsCancelledContext(t *testing.T) {
	statsTestEach(t, func(t *testing.T, database string) {
		s := statsTestStore(t, database)
		ctx, cancel := context.WithCancel(storeTestContext(t))
		cancel()
		for _, c := range statsTestCalls(statsTestQuery(false, ""), "", 0, 10) {
			if err := c.call(ctx, s); !errors.Is(err, context.Canceled) || errors.Is(err, ErrBadStatsQuery) {
				t.Errorf("%s with a cancelled context: err = %v, want context.Canceled", c.name, err)
			}
		}
		// The store still answers afterwards.
		if _, err := s.DayTotals(storeTestContext(t), statsTestQuery(false, "")); err != nil {
			t.Errorf("after a cancelled call: %v", err)
		}
	})
}

// TestStatsClosedStore: a store that fails gives an error that is not
// ErrBadStatsQuery (a page says the store is unavailable, not 400).
func TestStatsClosedStore(t *testing.T) {
	statsTestEach(t, func(t *testing.T, database string) {
		s, err := Open(storeTestContext(t), database)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		for _, c := range statsTestCalls(statsTestQuery(false, ""), "", 0, 10) {
			if err := c.call(storeTestContext(t), s); err == nil || errors.Is(err, ErrBadStatsQuery) {
				t.Errorf("%s on a closed store: err = %v, want a store error", c.name, err)
			}
		}
	})
}
