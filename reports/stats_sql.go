package reports

import (
	"context"
	"database/sql"
	"fmt"
	"net/netip"
)

// DomainTotals returns the domains of q (q.Domain ignored) whose name
// contains search, most messages first and then by name, the page of
// offset and limit, and how many domains matched. The total is a COUNT
// over the same grouped rows in the same query, so that it also comes
// back for a page past the end.
func (s *sqlStore) DomainTotals(ctx context.Context, q StatsQuery, search string, offset, limit int) ([]DomainTotals, int, error) {
	const op = "domain totals"
	query, args, err := s.d.domainTotalsQuery(q, search, offset, limit)
	if err != nil {
		return nil, 0, s.wrap(op, err)
	}
	res, err := s.db.QueryContext(ctx, s.d.bind(query), args...)
	if err != nil {
		return nil, 0, s.wrap(op, err)
	}
	defer res.Close()
	var out []DomainTotals
	total := 0
	for res.Next() {
		var domain sql.NullString
		var t statsNullTotals
		if err := res.Scan(append([]any{&total, &domain}, t.targets()...)...); err != nil {
			return nil, 0, s.wrap(op, err)
		}
		if domain.Valid { // not the one row of an empty page
			out = append(out, DomainTotals{Domain: domain.String, Totals: t.totals()})
		}
	}
	if err := res.Err(); err != nil {
		return nil, 0, s.wrap(op, err)
	}
	return out, total, nil
}

// DayTotals returns the sums per UTC day of q.Domain (every domain when
// empty), and per reporting organisation when imported, oldest day first,
// then by organisation.
func (s *sqlStore) DayTotals(ctx context.Context, q StatsQuery) ([]DayTotals, error) {
	const op = "day totals"
	query, args, err := s.d.dayTotalsQuery(q)
	if err != nil {
		return nil, s.wrap(op, err)
	}
	res, err := s.db.QueryContext(ctx, s.d.bind(query), args...)
	if err != nil {
		return nil, s.wrap(op, err)
	}
	defer res.Close()
	var out []DayTotals
	for res.Next() {
		var day string
		var d DayTotals
		if err := res.Scan(append([]any{&day, &d.Org}, totalsTargets(&d.Totals)...)...); err != nil {
			return nil, s.wrap(op, err)
		}
		if d.Day, err = dbParseDay(day); err != nil {
			return nil, s.wrap(op, err)
		}
		out = append(out, d)
	}
	if err := res.Err(); err != nil {
		return nil, s.wrap(op, err)
	}
	return out, nil
}

// Sources returns the sending addresses of q.Domain (every domain when
// empty), and per reporting organisation when imported: most messages
// that failed DMARC first, then most messages, then by address and
// organisation; at most limit, each with its first From domains in byte
// order.
func (s *sqlStore) Sources(ctx context.Context, q StatsQuery, limit int) ([]SourceTotals, error) {
	const op = "sources"
	query, args, err := s.d.sourcesQuery(q, limit)
	if err != nil {
		return nil, s.wrap(op, err)
	}
	res, err := s.db.QueryContext(ctx, s.d.bind(query), args...)
	if err != nil {
		return nil, s.wrap(op, err)
	}
	defer res.Close()
	var out []SourceTotals
	lastIP := ""
	for res.Next() {
		var ip, org string
		var hf sql.NullString
		var t Totals
		if err := res.Scan(append([]any{&ip, &org, &hf}, totalsTargets(&t)...)...); err != nil {
			return nil, s.wrap(op, err)
		}
		// A source's rows come together, one per From domain.
		if n := len(out); n == 0 || lastIP != ip || out[n-1].Org != org {
			lastIP = ip
			addr, err := netip.ParseAddr(ip)
			if err != nil {
				return nil, s.wrap(op, fmt.Errorf("stored source IP: %w", err))
			}
			out = append(out, SourceTotals{IP: addr, Org: org, HeaderFrom: []string{}, Totals: t})
		}
		if hf.Valid {
			last := &out[len(out)-1]
			last.HeaderFrom = append(last.HeaderFrom, hf.String)
		}
	}
	if err := res.Err(); err != nil {
		return nil, s.wrap(op, err)
	}
	return out, nil
}

// totalsTargets are the Scan targets of statsSums' columns.
func totalsTargets(t *Totals) []any {
	return []any{&t.Messages, &t.DKIMAligned, &t.SPFAligned, &t.Pass, &t.Neither}
}

// statsNullTotals receives statsSums' columns from the outer side of a
// LEFT JOIN, which are NULL on an empty page.
type statsNullTotals [5]sql.NullInt64

func (t *statsNullTotals) targets() []any {
	return []any{&t[0], &t[1], &t[2], &t[3], &t[4]}
}

func (t *statsNullTotals) totals() Totals {
	return Totals{Messages: t[0].Int64, DKIMAligned: t[1].Int64, SPFAligned: t[2].Int64, Pass: t[3].Int64, Neither: t[4].Int64}
}
