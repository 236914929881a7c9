package reports

import (
	"context"
	"database/sql"
	"fmt"
	"net/netip"
	"strings"
)

// maxSourceHeaderFrom is how many From domains SourceTotals lists per
// source.
const maxSourceHeaderFrom = 5

// statsSums are the Totals of the rows aliased w, in the order that
// scanTotals reads them. Aligned means policy_evaluated says "pass" (both
// writers store it in lower case); the sums are cast because PostgreSQL
// sums BIGINT as NUMERIC.
const statsSums = `CAST(SUM(w.count) AS BIGINT) AS messages,
	CAST(SUM(CASE WHEN w.dkim_aligned = 'pass' THEN w.count ELSE 0 END) AS BIGINT) AS dkim,
	CAST(SUM(CASE WHEN w.spf_aligned = 'pass' THEN w.count ELSE 0 END) AS BIGINT) AS spf,
	CAST(SUM(CASE WHEN w.dkim_aligned = 'pass' OR w.spf_aligned = 'pass' THEN w.count ELSE 0 END) AS BIGINT) AS pass,
	CAST(SUM(CASE WHEN w.dkim_aligned <> 'pass' AND w.spf_aligned <> 'pass' THEN w.count ELSE 0 END) AS BIGINT) AS neither`

// statsResums add up statsSums of a grouped subquery, in the same order.
const statsResums = `CAST(SUM(messages) AS BIGINT) AS messages, CAST(SUM(dkim) AS BIGINT) AS dkim,
	CAST(SUM(spf) AS BIGINT) AS spf, CAST(SUM(pass) AS BIGINT) AS pass, CAST(SUM(neither) AS BIGINT) AS neither`

// statsTotalsColumns names statsSums' columns, for a prefix.
var statsTotalsColumns = []string{"messages", "dkim", "spf", "pass", "neither"}

// statsRows is the rows a query sums, aliased w, with the columns that
// stand for their domain and organisation, and the conditions of the
// query's days and domain with their arguments.
type statsRows struct {
	from   string
	domain string
	// org is the reporting organisation's column; "" for recorded rows,
	// which have none (PostgreSQL refuses a constant in GROUP BY, so the
	// queries leave it out there).
	org   string
	where string
	args  []any
}

// statsRowsOf checks q and returns the rows it selects.
func statsRowsOf(q StatsQuery) (statsRows, error) {
	days, domain, err := checkStatsQuery(q)
	if err != nil {
		return statsRows{}, err
	}
	r := statsRows{from: "report_rows w", domain: "w.domain"}
	if q.Imported {
		r = statsRows{from: "feedback_rows w JOIN feedback_reports r ON r.id = w.report", domain: "r.domain", org: "r.org_name"}
	}
	r.where = "w.day >= ? AND w.day < ?"
	r.args = []any{days.since, days.until}
	if domain != "" {
		r.where += " AND " + r.domain + " = ?"
		r.args = append(r.args, domain)
	}
	return r, nil
}

// orgColumn is the organisation as a selected column.
func (r statsRows) orgColumn() string {
	if r.org == "" {
		return "'' AS org"
	}
	return r.org + " AS org"
}

// groupBy lists cols, and the organisation's column when there is one.
func (r statsRows) groupBy(cols ...string) string {
	if r.org != "" {
		cols = append(cols, r.org)
	}
	return strings.Join(cols, ", ")
}

// orderBy is an ORDER BY list: cols, then the organisation's column in
// byte order when there is one. (PostgreSQL reads a selected column's
// alias only when it stands alone, so the column itself is named.)
func (r statsRows) orderBy(d dialect, cols ...string) string {
	if r.org != "" {
		cols = append(cols, d.bytewise(r.org))
	}
	return strings.Join(cols, ", ")
}

// bytewise orders a text column by its bytes, as Go's sort does, whatever
// the database's collation: pages must not reorder between databases.
func (d dialect) bytewise(col string) string {
	if d.postgres {
		return col + ` COLLATE "C"`
	}
	return col
}

// prefixed qualifies names with prefix and joins them.
func prefixed(prefix string, names []string) string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = prefix + n
	}
	return strings.Join(out, ", ")
}

// DomainTotals returns the domains of q (q.Domain ignored) whose name
// contains search, most messages first and then by name, the page of
// offset and limit, and how many domains matched. The total is a COUNT
// over the same grouped rows in the same query, so that it also comes
// back for a page past the end.
func (s *sqlStore) DomainTotals(ctx context.Context, q StatsQuery, search string, offset, limit int) ([]DomainTotals, int, error) {
	const op = "domain totals"
	q.Domain = ""
	rows, err := statsRowsOf(q)
	if err == nil {
		err = checkStatsText("search", search)
	}
	if err == nil {
		err = checkStatsLimit(limit)
	}
	if err == nil && offset < 0 {
		err = fmt.Errorf("%w: offset %d, want 0 or more", ErrBadStatsQuery, offset)
	}
	if err != nil {
		return nil, 0, s.wrap(op, err)
	}
	where, args := rows.where, rows.args
	if search != "" {
		// Stored domains are in lower case (dbDomain), so a lower-case
		// pattern is a case-insensitive match on both databases.
		where += " AND " + rows.domain + ` LIKE ? ESCAPE '\'`
		args = append(args, "%"+dbEscapeLike(strings.ToLower(search))+"%")
	}
	args = append(args, limit, offset)
	order := "messages DESC, " + s.d.bytewise("domain")
	query := `WITH g AS (SELECT ` + rows.domain + ` AS domain, ` + statsSums + `
			FROM ` + rows.from + ` WHERE ` + where + ` GROUP BY ` + rows.domain + `)
		SELECT c.total, p.domain, ` + prefixed("p.", statsTotalsColumns) + `
		FROM (SELECT COUNT(*) AS total FROM g) c
		LEFT JOIN (SELECT * FROM g ORDER BY ` + order + ` LIMIT ? OFFSET ?) p ON 1 = 1
		ORDER BY p.messages DESC, ` + s.d.bytewise("p.domain")
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
	rows, err := statsRowsOf(q)
	if err != nil {
		return nil, s.wrap(op, err)
	}
	query := `SELECT w.day, ` + rows.orgColumn() + `, ` + statsSums + `
		FROM ` + rows.from + ` WHERE ` + rows.where + `
		GROUP BY ` + rows.groupBy("w.day") + `
		ORDER BY ` + rows.orderBy(s.d, "w.day")
	res, err := s.db.QueryContext(ctx, s.d.bind(query), rows.args...)
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
// order. One query: the sums per source and From domain (f), the top
// sources (s), and the From domains of those numbered (h).
func (s *sqlStore) Sources(ctx context.Context, q StatsQuery, limit int) ([]SourceTotals, error) {
	const op = "sources"
	rows, err := statsRowsOf(q)
	if err == nil {
		err = checkStatsLimit(limit)
	}
	if err != nil {
		return nil, s.wrap(op, err)
	}
	b := s.d.bytewise
	order := "neither DESC, messages DESC, " + b("ip") + ", " + b("org")
	query := `WITH f AS (SELECT w.source_ip AS ip, ` + rows.orgColumn() + `, lower(w.header_from) AS hf, ` + statsSums + `
			FROM ` + rows.from + ` WHERE ` + rows.where + `
			GROUP BY ` + rows.groupBy("w.source_ip", "lower(w.header_from)") + `),
		s AS (SELECT ip, org, ` + statsResums + ` FROM f GROUP BY ip, org ORDER BY ` + order + ` LIMIT ?),
		h AS (SELECT f.ip, f.org, f.hf, ROW_NUMBER() OVER (PARTITION BY f.ip, f.org ORDER BY ` + b("f.hf") + `) AS n
			FROM f JOIN s ON s.ip = f.ip AND s.org = f.org WHERE f.hf <> '')
		SELECT s.ip, s.org, h.hf, ` + prefixed("s.", statsTotalsColumns) + `
		FROM s LEFT JOIN h ON h.ip = s.ip AND h.org = s.org AND h.n <= ?
		ORDER BY s.neither DESC, s.messages DESC, ` + b("s.ip") + `, ` + b("s.org") + `, ` + b("h.hf")
	args := append(append([]any(nil), rows.args...), limit, maxSourceHeaderFrom)
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
