package web

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/authmilter/authmilter/keys"
)

// Limits of the query parameters.
const (
	// maxQuery is the longest search string: a domain name's length.
	maxQuery = 253
	// minPer, maxPer and defaultPer bound the domains on one page; maxPer
	// bounds the size of a page's HTML.
	minPer, maxPer, defaultPer = 10, 500, 50
	// minDays, maxDays and defaultDays bound the DMARC pages' period.
	minDays, maxDays, defaultDays = 1, 90, 30
	// maxPage keeps page numbers within int arithmetic.
	maxPage = 1_000_000
)

// badRequest is a request's fault: it is answered with status 400 and the
// message.
type badRequest struct{ msg string }

func (e badRequest) Error() string { return e.msg }

func badf(format string, args ...any) error { return badRequest{fmt.Sprintf(format, args...)} }

// query is a request's parsed query string.
type query struct{ v url.Values }

// parseQuery parses the raw query of r strictly: malformed escapes, text
// that is not UTF-8 and a parameter given twice are refused.
func parseQuery(r *http.Request) (query, error) {
	v, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return query{}, badf("the query string is malformed: %v", err)
	}
	for name, vals := range v {
		if !utf8.ValidString(name) {
			return query{}, badf("a query parameter's name is not UTF-8")
		}
		if len(vals) > 1 {
			return query{}, badf("the query parameter %q is given %d times", name, len(vals))
		}
		if !utf8.ValidString(vals[0]) {
			return query{}, badf("the query parameter %q is not UTF-8", name)
		}
	}
	return query{v}, nil
}

// text returns a parameter's value ("" when absent).
func (q query) text(name string) string { return q.v.Get(name) }

// search returns the search string q: at most maxQuery bytes, lower case.
func (q query) search() (string, error) {
	s := strings.TrimSpace(q.text("q"))
	if len(s) > maxQuery {
		return "", badf("q is %d bytes long; at most %d (a domain name's length)", len(s), maxQuery)
	}
	for _, c := range s {
		if c < 0x20 || c == 0x7f {
			return "", badf("q holds a control character")
		}
	}
	return strings.ToLower(s), nil
}

// intParam returns a whole-number parameter within [lo, hi], def when absent.
func (q query) intParam(name string, lo, hi, def int) (int, error) {
	s := q.text(name)
	if s == "" {
		if _, given := q.v[name]; given {
			return 0, badf("%s is empty; give a number from %d to %d", name, lo, hi)
		}
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < lo || n > hi {
		return 0, badf("%s must be a number from %d to %d, got %q", name, lo, hi, clip(s))
	}
	return n, nil
}

// paging returns page (1-based) and per.
func (q query) paging() (page, per int, err error) {
	if page, err = q.intParam("page", 1, maxPage, 1); err != nil {
		return 0, 0, err
	}
	if per, err = q.intParam("per", minPer, maxPer, defaultPer); err != nil {
		return 0, 0, err
	}
	return page, per, nil
}

// keyStates are the values of the keys page's state filter.
var keyStates = []string{
	string(keys.Published), string(keys.Waiting), string(keys.Missing), string(keys.Mismatch),
	string(keys.Revoked), string(keys.TempError), string(keys.Partial), string(keys.DelegationMissing),
	string(keys.Foreign), string(keys.Unchecked), filterProblem, filterInactive,
}

// The state filters that are not a key state.
const (
	// filterProblem: domains with any warning.
	filterProblem = "problem"
	// filterInactive: domains with keys but none active.
	filterInactive = "inactive"
)

// stateFilter returns the state parameter ("" for all).
func (q query) stateFilter() (string, error) {
	s := q.text("state")
	if s == "" {
		return "", nil
	}
	for _, st := range keyStates {
		if s == st {
			return s, nil
		}
	}
	return "", badf("state must be one of %s, got %q", strings.Join(keyStates, ", "), clip(s))
}

// clip shortens a hostile value for an error message.
func clip(s string) string {
	if len(s) <= 40 {
		return s
	}
	cut := 40
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// pageCount returns the number of pages of total items, at least 1.
func pageCount(total, per int) int {
	if total == 0 {
		return 1
	}
	return (total + per - 1) / per
}
