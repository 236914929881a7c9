package reports

import (
	"context"
	"net/netip"
	"time"
)

// StatsQuery selects the rows the status pages sum: the recorded rows
// (our inbound evaluations, by reporting domain) or, with Imported, the
// rows of the reports received as a domain owner (by the domain of their
// policy_published).
type StatsQuery struct {
	// Imported selects received reports instead of recorded rows.
	Imported bool
	// Domain limits the sums to one domain (exact, case-insensitive);
	// empty: every domain.
	Domain string
	// Since and Until bound the UTC days (Since's day included, Until's
	// excluded); for imported reports, a row counts on its day.
	Since, Until time.Time
}

// Totals are the sums of rows: messages, and how many of them were
// aligned by DKIM, by SPF, by either (DMARC pass) or by neither.
type Totals struct {
	Messages    int64 `json:"messages"`
	DKIMAligned int64 `json:"dkim_aligned"`
	SPFAligned  int64 `json:"spf_aligned"`
	// Pass is DKIM or SPF aligned (DMARC pass); Neither the rest.
	Pass    int64 `json:"dmarc_pass"`
	Neither int64 `json:"neither"`
}

// DomainTotals are one domain's sums over the query's days.
type DomainTotals struct {
	Domain string `json:"domain"`
	Totals
}

// DayTotals are the sums of one domain on one UTC day, and for imported
// reports of one reporting organisation (Org; "" for recorded rows).
type DayTotals struct {
	Day time.Time `json:"day"`
	Org string    `json:"org,omitempty"`
	Totals
}

// SourceTotals are the sums of one sending address (and, for imported
// reports, one reporting organisation).
type SourceTotals struct {
	IP  netip.Addr `json:"ip"`
	Org string     `json:"org,omitempty"`
	// HeaderFrom is the From domains it used (at most 5, sorted).
	HeaderFrom []string `json:"header_from"`
	Totals
}

// StatsReader is the read side the status pages use. sqlStore implements
// it for SQLite and PostgreSQL; every method is one query with GROUP BY,
// so its cost grows with the rows of the days asked, never with
// round trips. An error caused by the query itself (Since not before
// Until, more than MaxStatsDays days, a limit outside 1 to MaxStatsLimit,
// a negative offset, a domain or search text longer than
// MaxStatsTextBytes or not UTF-8) wraps ErrBadStatsQuery.
type StatsReader interface {
	// DomainTotals returns the domains of q (q.Domain ignored) whose name
	// contains search (case-insensitive; "" all), most messages first
	// (then by name), offset and limit applied, and how many matched.
	DomainTotals(ctx context.Context, q StatsQuery, search string, offset, limit int) ([]DomainTotals, int, error)
	// DayTotals returns the sums per day (and per organisation when
	// imported) of q.Domain (every domain when empty), oldest day first,
	// then by organisation.
	DayTotals(ctx context.Context, q StatsQuery) ([]DayTotals, error)
	// Sources returns the sending addresses of q.Domain (every domain
	// when empty), those with the most messages that failed DMARC
	// (Neither) first, then by messages, at most limit.
	Sources(ctx context.Context, q StatsQuery, limit int) ([]SourceTotals, error)
}
