package reports

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"sort"
	"strings"
	"time"
)

// dbChunkRows is how many rows one INSERT writes: fewer statements per
// batch, and far below both databases' limits on bound parameters
// (15 columns × 100 = 1,500).
const dbChunkRows = 100

// dbRowColumns are the columns of report_rows that Add writes, and
// feedback_rows shares all but the first three (domain, day, row_key)
// with it.
const dbRowColumns = "domain, day, row_key, source_ip, count, header_from, envelope_from, envelope_to, helo, " +
	"disposition, dkim_aligned, spf_aligned, overrides, dkim, spf"

// dbPolicyColumns are the columns of report_policies.
const dbPolicyColumns = "domain, day, seen_us, discovery_method, p, sp, np, psd, testing, adkim, aspf, fo, rua, rua_limits"

// dbRow is a row ready to be written: bounded, its lists encoded, its key
// computed.
type dbRow struct {
	row                  Row
	day                  string
	key                  string
	overrides, dkim, spf string
}

// newDBRow bounds r, checks what the store needs of it, and encodes it.
func newDBRow(r Row) (dbRow, error) {
	r = boundRow(r)
	r.Domain = dbDomain(r.Domain)
	switch {
	case r.Domain == "":
		return dbRow{}, errors.New("row without a domain")
	case r.Day.IsZero():
		return dbRow{}, fmt.Errorf("row of %s without a day", r.Domain)
	case !r.SourceIP.IsValid():
		return dbRow{}, fmt.Errorf("row of %s without a valid source IP", r.Domain)
	}
	r.SourceIP = r.SourceIP.Unmap()
	r.Day = DayOf(r.Day)
	d := dbRow{
		row:       r,
		day:       dbDay(r.Day),
		overrides: dbEncodeLists(r.Overrides, func(o Override) []string { return []string{o.Type, o.Comment} }),
		dkim: dbEncodeLists(r.DKIM, func(a DKIMAuth) []string {
			return []string{a.Domain, a.Selector, a.Result, a.HumanResult}
		}),
		spf: dbEncodeLists(r.SPF, func(a SPFAuth) []string { return []string{a.Domain, a.Scope, a.Result} }),
	}
	d.key = d.rowKey()
	return d, nil
}

// rowKey identifies the row's identical results: a SHA-256 of everything
// in it but the domain and day (the other parts of the key) and the
// count, each field preceded by its length so that no two rows spell the
// same input. Stored: changing it splits a day's rows in two.
func (d dbRow) rowKey() string {
	r := d.row
	h := sha256.New()
	var n [binary.MaxVarintLen64]byte
	for _, f := range [...]string{"v1", r.SourceIP.String(), r.HeaderFrom, r.EnvelopeFrom, r.EnvelopeTo, r.Helo,
		r.Disposition, r.DKIMAligned, r.SPFAligned, d.overrides, d.dkim, d.spf} {
		h.Write(n[:binary.PutUvarint(n[:], uint64(len(f)))])
		io.WriteString(h, f)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// values are the row's columns after domain, day and row_key.
func (d dbRow) values() []any {
	r := d.row
	return []any{r.SourceIP.String(), r.Count, r.HeaderFrom, r.EnvelopeFrom, r.EnvelopeTo, r.Helo,
		r.Disposition, r.DKIMAligned, r.SPFAligned, d.overrides, d.dkim, d.spf}
}

// dbDomain is the stored form of a reporting domain: domains compare
// without case, so one report gathers them.
func dbDomain(domain string) string {
	return strings.ToLower(boundText(domain, maxNameBytes))
}

// Add aggregates entries into their rows, adds them to the per-day totals
// and keeps the newest policy per domain and day, in one transaction.
// Identical entries are summed first; rows, totals and policies are
// written in that order, each in key order, so that concurrent Adds on
// PostgreSQL lock rows in one order and never deadlock.
func (s *sqlStore) Add(ctx context.Context, entries []Entry) error {
	if len(entries) == 0 {
		return nil
	}
	rows, policies, err := dbAggregate(entries)
	if err != nil {
		return s.wrap("add", err)
	}
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		for start := 0; start < len(rows); start += dbChunkRows {
			chunk := rows[start:min(start+dbChunkRows, len(rows))]
			args := make([]any, 0, len(chunk)*15)
			for _, r := range chunk {
				args = append(args, r.row.Domain, r.day, r.key)
				args = append(args, r.values()...)
			}
			q := "INSERT INTO report_rows (" + dbRowColumns + ") VALUES " + dbPlaceholders(len(chunk), 15) +
				" ON CONFLICT (domain, day, row_key) DO UPDATE SET count = report_rows.count + excluded.count"
			if _, err := tx.ExecContext(ctx, s.d.bind(q), args...); err != nil {
				return fmt.Errorf("rows: %w", err)
			}
		}
		totals := dbTotals{}
		for _, r := range rows {
			totals.add(dbTotalsKey{domain: r.row.Domain, day: r.day}, r.row)
		}
		if err := s.addTotals(ctx, tx, totals, false); err != nil {
			return err
		}
		for start := 0; start < len(policies); start += dbChunkRows {
			chunk := policies[start:min(start+dbChunkRows, len(policies))]
			args := make([]any, 0, len(chunk)*14)
			for _, p := range chunk {
				args = append(args, p.domain, p.day, dbTime(p.seen))
				args = append(args, dbPolicyValues(p.policy)...)
			}
			q := "INSERT INTO report_policies (" + dbPolicyColumns + ") VALUES " + dbPlaceholders(len(chunk), 14) +
				` ON CONFLICT (domain, day) DO UPDATE SET seen_us = excluded.seen_us,
				discovery_method = excluded.discovery_method, p = excluded.p, sp = excluded.sp, np = excluded.np,
				psd = excluded.psd, testing = excluded.testing, adkim = excluded.adkim, aspf = excluded.aspf,
				fo = excluded.fo, rua = excluded.rua, rua_limits = excluded.rua_limits
				WHERE excluded.seen_us >= report_policies.seen_us`
			if _, err := tx.ExecContext(ctx, s.d.bind(q), args...); err != nil {
				return fmt.Errorf("policies: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return s.wrap("add", err)
	}
	return nil
}

// dbPolicyEntry is the newest policy of one domain and day in a batch.
type dbPolicyEntry struct {
	domain, day string
	seen        time.Time
	policy      Policy
}

// dbAggregate sums identical entries and keeps the newest policy per
// domain and day, both sorted by key.
func dbAggregate(entries []Entry) ([]dbRow, []dbPolicyEntry, error) {
	rows := make(map[[3]string]*dbRow, len(entries))
	policies := make(map[[2]string]*dbPolicyEntry)
	for i, e := range entries {
		if e.Row.Count < 1 {
			return nil, nil, fmt.Errorf("entry %d: count %d, want at least 1", i, e.Row.Count)
		}
		r, err := newDBRow(e.Row)
		if err != nil {
			return nil, nil, fmt.Errorf("entry %d: %w", i, err)
		}
		if e.Policy.Domain != "" && dbDomain(e.Policy.Domain) != r.row.Domain {
			return nil, nil, fmt.Errorf("entry %d: policy of %q in a row of %q", i, e.Policy.Domain, r.row.Domain)
		}
		k := [3]string{r.row.Domain, r.day, r.key}
		if have, ok := rows[k]; ok {
			have.row.Count += r.row.Count
		} else {
			rows[k] = &r
		}
		pk := [2]string{r.row.Domain, r.day}
		if have, ok := policies[pk]; !ok || !e.Seen.Before(have.seen) {
			p := boundPolicy(e.Policy)
			p.Domain = r.row.Domain
			policies[pk] = &dbPolicyEntry{domain: r.row.Domain, day: r.day, seen: e.Seen, policy: p}
		}
	}
	sortedRows := make([]dbRow, 0, len(rows))
	for _, r := range rows {
		sortedRows = append(sortedRows, *r)
	}
	sort.Slice(sortedRows, func(i, j int) bool {
		a, b := sortedRows[i], sortedRows[j]
		if a.row.Domain != b.row.Domain {
			return a.row.Domain < b.row.Domain
		}
		if a.day != b.day {
			return a.day < b.day
		}
		return a.key < b.key
	})
	sortedPolicies := make([]dbPolicyEntry, 0, len(policies))
	for _, p := range policies {
		sortedPolicies = append(sortedPolicies, *p)
	}
	sort.Slice(sortedPolicies, func(i, j int) bool {
		a, b := sortedPolicies[i], sortedPolicies[j]
		if a.domain != b.domain {
			return a.domain < b.domain
		}
		return a.day < b.day
	})
	return sortedRows, sortedPolicies, nil
}

// dbPolicyValues are a policy's columns after domain, day and seen_us.
func dbPolicyValues(p Policy) []any {
	rua, _ := json.Marshal(dbNonNil(p.RUA))
	limits, _ := json.Marshal(dbNonNil(p.RUALimits))
	return []any{p.DiscoveryMethod, p.P, p.SP, p.NP, p.PSD, p.Testing, p.ADKIM, p.ASPF, p.FO, string(rua), string(limits)}
}

// Domains lists the reporting domains with rows on day, sorted.
func (s *sqlStore) Domains(ctx context.Context, day time.Time) ([]string, error) {
	rows, err := s.db.QueryContext(ctx, s.d.bind("SELECT DISTINCT domain FROM report_rows WHERE day = ?"), dbDay(day))
	if err != nil {
		return nil, s.wrap("domains", err)
	}
	defer rows.Close()
	var domains []string
	for rows.Next() {
		var d string
		if err := rows.Scan(&d); err != nil {
			return nil, s.wrap("domains", err)
		}
		domains = append(domains, d)
	}
	if err := rows.Err(); err != nil {
		return nil, s.wrap("domains", err)
	}
	// Sorted here, not by the database, whose collation may differ.
	sort.Strings(domains)
	return domains, nil
}

// Rows returns the policy and the rows of one domain and day, ordered by
// source IP and then by row key (a stable order of the rest).
func (s *sqlStore) Rows(ctx context.Context, domain string, day time.Time) (Policy, []Row, error) {
	domain, dayText := dbDomain(domain), dbDay(day)
	p := Policy{Domain: domain}
	var rua, limits string
	err := s.db.QueryRowContext(ctx, s.d.bind("SELECT "+dbPolicyColumns+" FROM report_policies WHERE domain = ? AND day = ?"),
		domain, dayText).Scan(new(string), new(string), new(int64), &p.DiscoveryMethod, &p.P, &p.SP, &p.NP, &p.PSD,
		&p.Testing, &p.ADKIM, &p.ASPF, &p.FO, &rua, &limits)
	switch {
	case errors.Is(err, sql.ErrNoRows):
	case err != nil:
		return Policy{}, nil, s.wrap("rows of "+domain, err)
	default:
		if err := errors.Join(dbDecodeJSON(rua, &p.RUA), dbDecodeJSON(limits, &p.RUALimits)); err != nil {
			return Policy{}, nil, s.wrap("rows of "+domain, err)
		}
	}
	q := "SELECT row_key, " + dbRowScanColumns + " FROM report_rows WHERE domain = ? AND day = ?"
	res, err := s.db.QueryContext(ctx, s.d.bind(q), domain, dayText)
	if err != nil {
		return Policy{}, nil, s.wrap("rows of "+domain, err)
	}
	defer res.Close()
	type keyed struct {
		key string
		row Row
	}
	var all []keyed
	for res.Next() {
		var k keyed
		var ip, dayCol string
		r, targets := dbRowScanTargets(&ip, &dayCol)
		if err := res.Scan(append([]any{&k.key}, targets...)...); err != nil {
			return Policy{}, nil, s.wrap("rows of "+domain, err)
		}
		if k.row, err = r.finish(domain, ip, dayCol); err != nil {
			return Policy{}, nil, s.wrap("rows of "+domain, err)
		}
		all = append(all, k)
	}
	if err := res.Err(); err != nil {
		return Policy{}, nil, s.wrap("rows of "+domain, err)
	}
	sort.Slice(all, func(i, j int) bool {
		if c := all[i].row.SourceIP.Compare(all[j].row.SourceIP); c != 0 {
			return c < 0
		}
		return all[i].key < all[j].key
	})
	out := make([]Row, len(all))
	for i, k := range all {
		out[i] = k.row
	}
	return p, out, nil
}

// dbRowScanColumns are the columns that dbRowScanTargets reads, in both
// report_rows and feedback_rows.
const dbRowScanColumns = "day, source_ip, count, header_from, envelope_from, envelope_to, helo, " +
	"disposition, dkim_aligned, spf_aligned, overrides, dkim, spf"

// dbScannedRow receives the columns of dbRowScanColumns.
type dbScannedRow struct {
	row                  Row
	overrides, dkim, spf string
}

// dbRowScanTargets returns a row to scan into and the Scan targets of
// dbRowScanColumns; the day and source IP go to dayCol and ip.
func dbRowScanTargets(ip, dayCol *string) (*dbScannedRow, []any) {
	r := &dbScannedRow{}
	return r, []any{dayCol, ip, &r.row.Count, &r.row.HeaderFrom, &r.row.EnvelopeFrom, &r.row.EnvelopeTo, &r.row.Helo,
		&r.row.Disposition, &r.row.DKIMAligned, &r.row.SPFAligned, &r.overrides, &r.dkim, &r.spf}
}

// finish decodes what Scan could not: the day, the address and the lists.
func (r *dbScannedRow) finish(domain, ip, dayCol string) (Row, error) {
	row := r.row
	row.Domain = domain
	var err error
	if row.Day, err = dbParseDay(dayCol); err != nil {
		return Row{}, err
	}
	if row.SourceIP, err = netip.ParseAddr(ip); err != nil {
		return Row{}, fmt.Errorf("stored source IP: %w", err)
	}
	row.Overrides, err = dbDecodeLists(r.overrides, 2, func(f []string) Override { return Override{Type: f[0], Comment: f[1]} })
	if err != nil {
		return Row{}, err
	}
	row.DKIM, err = dbDecodeLists(r.dkim, 4, func(f []string) DKIMAuth {
		return DKIMAuth{Domain: f[0], Selector: f[1], Result: f[2], HumanResult: f[3]}
	})
	if err != nil {
		return Row{}, err
	}
	row.SPF, err = dbDecodeLists(r.spf, 3, func(f []string) SPFAuth { return SPFAuth{Domain: f[0], Scope: f[1], Result: f[2]} })
	if err != nil {
		return Row{}, err
	}
	return row, nil
}

// dbEncodeLists stores a list of records as a JSON array of arrays of
// strings: compact, and independent of the Go field names.
func dbEncodeLists[T any](list []T, fields func(T) []string) string {
	out := make([][]string, len(list))
	for i, v := range list {
		out[i] = fields(v)
	}
	b, _ := json.Marshal(out)
	return string(b)
}

// dbDecodeLists reads what dbEncodeLists stored; an empty list is nil.
func dbDecodeLists[T any](stored string, width int, build func([]string) T) ([]T, error) {
	var raw [][]string
	if err := json.Unmarshal([]byte(stored), &raw); err != nil {
		return nil, fmt.Errorf("stored list %.40q: %w", stored, err)
	}
	if len(raw) == 0 {
		return nil, nil
	}
	out := make([]T, len(raw))
	for i, f := range raw {
		if len(f) != width {
			return nil, fmt.Errorf("stored list %.40q: %d fields, want %d", stored, len(f), width)
		}
		out[i] = build(f)
	}
	return out, nil
}

// dbDecodeJSON reads a stored JSON list into v, leaving an empty list nil.
func dbDecodeJSON[T any](stored string, v *[]T) error {
	if err := json.Unmarshal([]byte(stored), v); err != nil {
		return fmt.Errorf("stored list %.40q: %w", stored, err)
	}
	if len(*v) == 0 {
		*v = nil
	}
	return nil
}

// dbNonNil makes a nil list encode as [] rather than null.
func dbNonNil[T any](list []T) []T {
	if list == nil {
		return []T{}
	}
	return list
}

// dbPlaceholders is n groups of width ? placeholders: "(?, ?), (?, ?)".
func dbPlaceholders(n, width int) string {
	group := "(" + strings.Repeat("?, ", width-1) + "?)"
	return strings.Repeat(group+", ", n-1) + group
}
