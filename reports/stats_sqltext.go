package reports

import (
	"fmt"
	"strings"
)

// The statistics queries' text. Each is one statement with GROUP BY, its
// cost growing with the rows of the days asked, never with round trips;
// written once with ? placeholders for both databases. DomainTotals and
// DayTotals read the per-day totals (one row per domain and day, and
// organisation), Sources the rows themselves (it needs their addresses).

// maxSourceHeaderFrom is how many From domains SourceTotals lists per
// source.
const maxSourceHeaderFrom = 5

// statsSums are the Totals of the rows aliased w, in the order that
// totalsTargets reads them. Aligned means policy_evaluated says "pass" (both
// writers store it in lower case); the sums are cast because PostgreSQL
// sums BIGINT as NUMERIC.
const statsSums = `CAST(SUM(w.count) AS BIGINT) AS messages,
	CAST(SUM(CASE WHEN w.dkim_aligned = 'pass' THEN w.count ELSE 0 END) AS BIGINT) AS dkim,
	CAST(SUM(CASE WHEN w.spf_aligned = 'pass' THEN w.count ELSE 0 END) AS BIGINT) AS spf,
	CAST(SUM(CASE WHEN w.dkim_aligned = 'pass' OR w.spf_aligned = 'pass' THEN w.count ELSE 0 END) AS BIGINT) AS pass,
	CAST(SUM(CASE WHEN w.dkim_aligned <> 'pass' AND w.spf_aligned <> 'pass' THEN w.count ELSE 0 END) AS BIGINT) AS neither`

// statsTotalsSums are the Totals of the per-day totals rows aliased w, in
// the same order as statsSums.
const statsTotalsSums = `CAST(SUM(w.messages) AS BIGINT) AS messages, CAST(SUM(w.dkim_aligned) AS BIGINT) AS dkim,
	CAST(SUM(w.spf_aligned) AS BIGINT) AS spf, CAST(SUM(w.pass) AS BIGINT) AS pass,
	CAST(SUM(w.messages - w.pass) AS BIGINT) AS neither`

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
	// sums are the Totals of the rows: statsSums or statsTotalsSums.
	sums string
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
	r := statsRows{from: "report_rows w", domain: "w.domain", sums: statsSums}
	if q.Imported {
		r = statsRows{from: "feedback_rows w JOIN feedback_reports r ON r.id = w.report", domain: "r.domain", org: "r.org_name", sums: statsSums}
	}
	return r.selecting(days, domain), nil
}

// statsDayTotalsOf checks q and returns the per-day totals it selects:
// the sums of the same rows as statsRowsOf's, kept by the writers.
func statsDayTotalsOf(q StatsQuery) (statsRows, error) {
	days, domain, err := checkStatsQuery(q)
	if err != nil {
		return statsRows{}, err
	}
	r := statsRows{from: "report_day_totals w", domain: "w.domain", sums: statsTotalsSums}
	if q.Imported {
		r = statsRows{from: "feedback_day_totals w", domain: "w.domain", org: "w.org_name", sums: statsTotalsSums}
	}
	return r.selecting(days, domain), nil
}

// selecting adds the conditions of days and domain ("" for every domain)
// to r.
func (r statsRows) selecting(days statsDays, domain string) statsRows {
	r.where = "w.day >= ? AND w.day < ?"
	r.args = []any{days.since, days.until}
	if domain != "" {
		r.where += " AND " + r.domain + " = ?"
		r.args = append(r.args, domain)
	}
	return r
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

// domainTotalsQuery is DomainTotals' query and its arguments: the sums
// per domain (g), their number (c) and the page of them (p). An empty page
// is one row with the number and NULLs.
func (d dialect) domainTotalsQuery(q StatsQuery, search string, offset, limit int) (string, []any, error) {
	q.Domain = ""
	rows, err := statsDayTotalsOf(q)
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
		return "", nil, err
	}
	where, args := rows.where, rows.args
	if search != "" {
		// Stored domains are in lower case (dbDomain), so a lower-case
		// pattern is a case-insensitive match on both databases.
		where += " AND " + rows.domain + ` LIKE ? ESCAPE '\'`
		args = append(args, "%"+dbEscapeLike(strings.ToLower(search))+"%")
	}
	args = append(args, limit, offset)
	order := "messages DESC, " + d.bytewise("domain")
	query := `WITH g AS (SELECT ` + rows.domain + ` AS domain, ` + rows.sums + `
			FROM ` + rows.from + ` WHERE ` + where + ` GROUP BY ` + rows.domain + `)
		SELECT c.total, p.domain, ` + prefixed("p.", statsTotalsColumns) + `
		FROM (SELECT COUNT(*) AS total FROM g) c
		LEFT JOIN (SELECT * FROM g ORDER BY ` + order + ` LIMIT ? OFFSET ?) p ON 1 = 1
		ORDER BY p.messages DESC, ` + d.bytewise("p.domain")
	return query, args, nil
}

// dayTotalsQuery is DayTotals' query and its arguments.
func (d dialect) dayTotalsQuery(q StatsQuery) (string, []any, error) {
	rows, err := statsDayTotalsOf(q)
	if err != nil {
		return "", nil, err
	}
	query := `SELECT w.day, ` + rows.orgColumn() + `, ` + rows.sums + `
		FROM ` + rows.from + ` WHERE ` + rows.where + `
		GROUP BY ` + rows.groupBy("w.day") + `
		ORDER BY ` + rows.orderBy(d, "w.day")
	return query, rows.args, nil
}

// sourcesQuery is Sources' query and its arguments: the sums per source
// and From domain (f), the top sources (s), and the From domains of those,
// numbered (h). Each source comes as one row per From domain listed, or
// one row with a NULL From domain.
func (d dialect) sourcesQuery(q StatsQuery, limit int) (string, []any, error) {
	rows, err := statsRowsOf(q)
	if err == nil {
		err = checkStatsLimit(limit)
	}
	if err != nil {
		return "", nil, err
	}
	b := d.bytewise
	order := "neither DESC, messages DESC, " + b("ip") + ", " + b("org")
	query := `WITH f AS (SELECT w.source_ip AS ip, ` + rows.orgColumn() + `, lower(w.header_from) AS hf, ` + rows.sums + `
			FROM ` + rows.from + ` WHERE ` + rows.where + `
			GROUP BY ` + rows.groupBy("w.source_ip", "lower(w.header_from)") + `),
		s AS (SELECT ip, org, ` + statsResums + ` FROM f GROUP BY ip, org ORDER BY ` + order + ` LIMIT ?),
		h AS (SELECT f.ip, f.org, f.hf, ROW_NUMBER() OVER (PARTITION BY f.ip, f.org ORDER BY ` + b("f.hf") + `) AS n
			FROM f JOIN s ON s.ip = f.ip AND s.org = f.org WHERE f.hf <> '')
		SELECT s.ip, s.org, h.hf, ` + prefixed("s.", statsTotalsColumns) + `
		FROM s LEFT JOIN h ON h.ip = s.ip AND h.org = s.org AND h.n <= ?
		ORDER BY s.neither DESC, s.messages DESC, ` + b("s.ip") + `, ` + b("s.org") + `, ` + b("h.hf")
	args := append(append([]any(nil), rows.args...), limit, maxSourceHeaderFrom)
	return query, args, nil
}
