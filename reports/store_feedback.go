package reports

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// dbFeedbackPolicy is how an imported report's policy_published is
// stored: JSON with names of its own, independent of the Go fields.
type dbFeedbackPolicy struct {
	DiscoveryMethod string   `json:"discovery_method,omitempty"`
	P               string   `json:"p,omitempty"`
	SP              string   `json:"sp,omitempty"`
	NP              string   `json:"np,omitempty"`
	PSD             string   `json:"psd,omitempty"`
	Testing         string   `json:"t,omitempty"`
	ADKIM           string   `json:"adkim,omitempty"`
	ASPF            string   `json:"aspf,omitempty"`
	FO              string   `json:"fo,omitempty"`
	RUA             []string `json:"rua,omitempty"`
	RUALimits       []int64  `json:"rua_limits,omitempty"`
}

// Import stores a received report with its rows, and adds them to the
// per-day totals, in one transaction: all or nothing. A report whose org
// name and report_id are already stored changes nothing and gives false.
func (s *sqlStore) Import(ctx context.Context, f *Feedback) (bool, error) {
	if f == nil {
		return false, s.wrap("import", errors.New("no report"))
	}
	b := boundFeedback(*f)
	b.Policy.Domain = dbDomain(b.Policy.Domain)
	op := fmt.Sprintf("import report %q of %q", b.ReportID, b.OrgName)
	switch {
	case b.OrgName == "" || b.ReportID == "":
		return false, s.wrap(op, errors.New("no org_name or report_id"))
	case b.Policy.Domain == "":
		return false, s.wrap(op, errors.New("no policy_published domain"))
	}
	p := b.Policy
	policy, _ := json.Marshal(dbFeedbackPolicy{
		DiscoveryMethod: p.DiscoveryMethod, P: p.P, SP: p.SP, NP: p.NP, PSD: p.PSD, Testing: p.Testing,
		ADKIM: p.ADKIM, ASPF: p.ASPF, FO: p.FO, RUA: p.RUA, RUALimits: p.RUALimits,
	})
	reportErrors, _ := json.Marshal(dbNonNil(b.Errors))
	imported := false
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		q := `INSERT INTO feedback_reports (org_name, report_id, email, extra_contact_info, begin_us, end_us, errors,
			domain, policy, imported_us) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (org_name, report_id) DO NOTHING RETURNING id`
		var id int64
		err := tx.QueryRowContext(ctx, s.d.bind(q), b.OrgName, b.ReportID, b.Email, b.ExtraContactInfo,
			dbTime(b.Begin), dbTime(b.End), string(reportErrors), p.Domain, string(policy), dbTime(time.Now())).Scan(&id)
		if errors.Is(err, sql.ErrNoRows) {
			return nil // a duplicate
		}
		if err != nil {
			return err
		}
		totals := dbTotals{}
		for start := 0; start < len(b.Rows); start += dbChunkRows {
			chunk := b.Rows[start:min(start+dbChunkRows, len(b.Rows))]
			args := make([]any, 0, len(chunk)*15)
			for i, r := range chunk {
				r.Domain = p.Domain
				if r.Day.IsZero() {
					r.Day = DayOf(b.Begin)
				}
				row, err := newDBRow(r)
				if err != nil {
					return fmt.Errorf("record %d: %w", start+i+1, err)
				}
				totals.add(dbTotalsKey{domain: p.Domain, org: b.OrgName, day: row.day}, row.row)
				args = append(args, id, start+i, row.day)
				args = append(args, row.values()...)
			}
			q := "INSERT INTO feedback_rows (report, seq, " + dbRowScanColumns + ") VALUES " + dbPlaceholders(len(chunk), 15)
			if _, err := tx.ExecContext(ctx, s.d.bind(q), args...); err != nil {
				return fmt.Errorf("records %d to %d: %w", start+1, start+len(chunk), err)
			}
		}
		if err := s.addTotals(ctx, tx, totals, true); err != nil {
			return err
		}
		imported = true
		return nil
	})
	if err != nil {
		return false, s.wrap(op, err)
	}
	return imported, nil
}

// Received returns the rows of imported reports whose range begins on or
// after since and that are about domain: reports whose policy domain is
// domain, and rows whose header From is domain or one of its subdomains
// (a subdomain's mail reported under its organisational domain's policy,
// or the other way round). Ordered by report begin, report and record.
func (s *sqlStore) Received(ctx context.Context, domain string, since time.Time) ([]ReceivedRow, error) {
	domain = strings.TrimSuffix(dbDomain(domain), ".")
	q := `SELECT r.org_name, r.report_id, r.begin_us, r.end_us, r.domain, ` + dbPrefixColumns("w.", dbRowScanColumns) + `
		FROM feedback_rows w JOIN feedback_reports r ON r.id = w.report
		WHERE r.begin_us >= ? AND (r.domain = ? OR lower(w.header_from) = ? OR lower(w.header_from) LIKE ? ESCAPE '\')
		ORDER BY r.begin_us, r.org_name, r.report_id, w.seq`
	rows, err := s.db.QueryContext(ctx, s.d.bind(q), dbTime(since), domain, domain, "%."+dbEscapeLike(domain))
	if err != nil {
		return nil, s.wrap("received for "+domain, err)
	}
	defer rows.Close()
	var out []ReceivedRow
	for rows.Next() {
		var rr ReceivedRow
		var begin, end int64
		var reportDomain, ip, day string
		r, targets := dbRowScanTargets(&ip, &day)
		if err := rows.Scan(append([]any{&rr.OrgName, &rr.ReportID, &begin, &end, &reportDomain}, targets...)...); err != nil {
			return nil, s.wrap("received for "+domain, err)
		}
		if rr.Row, err = r.finish(reportDomain, ip, day); err != nil {
			return nil, s.wrap("received for "+domain, err)
		}
		rr.Begin, rr.End = dbParseTime(begin), dbParseTime(end)
		out = append(out, rr)
	}
	if err := rows.Err(); err != nil {
		return nil, s.wrap("received for "+domain, err)
	}
	return out, nil
}

// dbPrefixColumns qualifies each of a comma-separated list of columns.
func dbPrefixColumns(prefix, columns string) string {
	parts := strings.Split(columns, ", ")
	for i, c := range parts {
		parts[i] = prefix + c
	}
	return strings.Join(parts, ", ")
}

// dbEscapeLike makes s match itself in a LIKE pattern with ESCAPE '\'.
func dbEscapeLike(s string) string {
	return strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(s)
}
