package reports

import (
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// Limits on what one StatsReader call may ask. The status pages pass the
// query parameters of a request through; these keep one request's cost
// bounded whatever it asks.
const (
	// MaxStatsDays is the longest range of days a query may cover: a year,
	// leap day included.
	MaxStatsDays = 366
	// MaxStatsLimit is the most domains or sources one call returns.
	MaxStatsLimit = 1000
	// MaxStatsTextBytes bounds StatsQuery.Domain and the search text: a
	// domain name in text form has at most 253 octets.
	MaxStatsTextBytes = 253
)

// ErrBadStatsQuery is wrapped by the StatsReader errors that come from the
// query itself (a range, limit, offset or text out of bounds), not from
// the database: a page answers them with 400, the others with a message
// that the store is unavailable.
var ErrBadStatsQuery = errors.New("bad statistics query")

// statsDays are a query's checked UTC days in their stored form: since
// included, until excluded.
type statsDays struct {
	since, until string
}

// checkStatsQuery checks q's range and domain and returns its days, and
// its domain in stored form (lower case; "" for every domain).
func checkStatsQuery(q StatsQuery) (statsDays, string, error) {
	since, until := DayOf(q.Since), DayOf(q.Until)
	switch {
	case !since.Before(until):
		return statsDays{}, "", fmt.Errorf("%w: since %s is not before until %s (as UTC days)",
			ErrBadStatsQuery, dbDay(since), dbDay(until))
	case until.Sub(since) > MaxStatsDays*24*time.Hour:
		return statsDays{}, "", fmt.Errorf("%w: %s to %s is more than %d days",
			ErrBadStatsQuery, dbDay(since), dbDay(until), MaxStatsDays)
	}
	if err := checkStatsText("domain", q.Domain); err != nil {
		return statsDays{}, "", err
	}
	return statsDays{since: dbDay(since), until: dbDay(until)}, strings.ToLower(q.Domain), nil
}

// checkStatsText refuses a domain or search text that no stored domain
// can match and that PostgreSQL would refuse to read: too long, not UTF-8,
// or with a NUL byte.
func checkStatsText(what, s string) error {
	switch {
	case len(s) > MaxStatsTextBytes:
		return fmt.Errorf("%w: %s of %d bytes, at most %d", ErrBadStatsQuery, what, len(s), MaxStatsTextBytes)
	case !utf8.ValidString(s) || strings.ContainsRune(s, 0):
		return fmt.Errorf("%w: %s is not UTF-8 text", ErrBadStatsQuery, what)
	}
	return nil
}

// checkStatsLimit refuses a limit outside 1 to MaxStatsLimit.
func checkStatsLimit(limit int) error {
	if limit < 1 || limit > MaxStatsLimit {
		return fmt.Errorf("%w: limit %d, want 1 to %d", ErrBadStatsQuery, limit, MaxStatsLimit)
	}
	return nil
}
