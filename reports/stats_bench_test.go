package reports

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"testing"
)

// The statistics benchmarks' store: statsBenchDays days of
// statsBenchDomains domains with statsBenchSources sources each, recorded
// and imported alike (600,000 rows of each).
const (
	statsBenchDays    = 30
	statsBenchDomains = 1000
	statsBenchSources = 20
)

// statsBenchRow is source src's row of domain d on day n; a quarter of
// the sources fail DMARC, a quarter pass by SPF only.
func statsBenchRow(d, n, src int) Row {
	dkim, spf := "pass", "pass"
	switch src % 4 {
	case 0:
		dkim, spf = "fail", "fail"
	case 1:
		dkim = "fail"
	}
	domain := fmt.Sprintf("customer%04d.example", d)
	return Row{
		Domain: domain, Day: statsTestDay(n), SourceIP: netip.AddrFrom4([4]byte{10, byte(d >> 8), byte(d), byte(src)}),
		Count: int64(1 + src), HeaderFrom: domain, EnvelopeFrom: domain, Disposition: "none", DKIMAligned: dkim, SPFAligned: spf,
	}
}

// statsBenchStore fills an SQLite store: the recorded rows through Add in
// batches of a day's rows of 50 domains, and one imported report per
// domain and day.
func statsBenchStore(b *testing.B) Store {
	ctx := context.Background()
	s, err := Open(ctx, filepath.Join(b.TempDir(), "reports.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	for n := 0; n < statsBenchDays; n++ {
		var batch []Entry
		for d := 0; d < statsBenchDomains; d++ {
			f := &Feedback{OrgName: fmt.Sprintf("Org %d", d%3), ReportID: fmt.Sprintf("%d-%d", d, n),
				Begin: statsTestDay(n), End: statsTestDay(n + 1), Policy: Policy{Domain: fmt.Sprintf("customer%04d.example", d)}}
			for src := 0; src < statsBenchSources; src++ {
				r := statsBenchRow(d, n, src)
				batch = append(batch, Entry{Row: r, Seen: r.Day})
				f.Rows = append(f.Rows, r)
			}
			if _, err := s.Import(ctx, f); err != nil {
				b.Fatal(err)
			}
			if len(batch) >= 50*statsBenchSources {
				if err := s.Add(ctx, batch); err != nil {
					b.Fatal(err)
				}
				batch = batch[:0]
			}
		}
	}
	return s
}

// BenchmarkStatsSQLite measures the status pages' queries over 30 days of
// 1,000 domains × 20 sources in SQLite, recorded and imported: what one
// DMARC page costs the daemon.
func BenchmarkStatsSQLite(b *testing.B) {
	s := statsBenchStore(b)
	q := StatsQuery{Since: statsTestDay(0), Until: statsTestDay(statsBenchDays)}
	for _, imported := range []bool{false, true} {
		q.Imported = imported
		kind := "recorded"
		if imported {
			kind = "imported"
		}
		one := q
		one.Domain = "customer0500.example"
		cases := []struct {
			name string
			run  func(ctx context.Context) error
		}{
			{"DayTotals/one-domain", func(ctx context.Context) error { _, err := s.DayTotals(ctx, one); return err }},
			{"DayTotals/all-domains", func(ctx context.Context) error { _, err := s.DayTotals(ctx, q); return err }},
			{"DomainTotals/first-page", func(ctx context.Context) error {
				_, _, err := s.DomainTotals(ctx, q, "", 0, 50)
				return err
			}},
			{"DomainTotals/search", func(ctx context.Context) error {
				_, _, err := s.DomainTotals(ctx, q, "R05", 0, 50)
				return err
			}},
			{"Sources/one-domain", func(ctx context.Context) error { _, err := s.Sources(ctx, one, 100); return err }},
		}
		for _, c := range cases {
			b.Run(kind+"/"+c.name, func(b *testing.B) {
				ctx := context.Background()
				for i := 0; i < b.N; i++ {
					if err := c.run(ctx); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
