package reports

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"time"
)

// Claim statuses in report_claims; the last three are Sent.Status values.
const (
	claimHeld    = "claimed"
	claimSent    = "sent"
	claimSkipped = "skipped"
	claimFailed  = "failed"
)

// Claim reserves the report of domain and day for owner. It wins when no
// claim exists, when the last attempt failed, when owner already holds
// the claim, or when another owner's claim is older than lease (that host
// died while sending); never once the report was sent or skipped.
//
// One statement decides, so that hosts racing for one report need no lock
// of their own: the INSERT wins if there was no claim, and the
// conditional update of ON CONFLICT wins if the claim could be taken over.
// PostgreSQL locks the conflicting row and checks the condition against
// its newest version; SQLite runs one writer at a time. Either way exactly
// one racer sees a row changed. Owners should be unique per process
// (host and PID), since an owner may always retake its own claim.
func (s *sqlStore) Claim(ctx context.Context, domain string, day time.Time, owner string, lease time.Duration) (bool, error) {
	now := time.Now()
	domain, owner = dbDomain(domain), boundText(owner, maxMetaBytes)
	q := `INSERT INTO report_claims (domain, day, owner, claimed_us, status) VALUES (?, ?, ?, ?, '` + claimHeld + `')
		ON CONFLICT (domain, day) DO UPDATE SET owner = excluded.owner, claimed_us = excluded.claimed_us, status = excluded.status
		WHERE report_claims.status = '` + claimFailed + `'
		OR (report_claims.status = '` + claimHeld + `' AND (report_claims.owner = excluded.owner OR report_claims.claimed_us < ?))`
	res, err := s.db.ExecContext(ctx, s.d.bind(q), domain, dbDay(day), owner, dbTime(now), dbTime(now.Add(-lease)))
	if err != nil {
		return false, s.wrap("claim "+domain+"/"+dbDay(day), err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, s.wrap("claim "+domain+"/"+dbDay(day), err)
	}
	return n == 1, nil
}

// Finish records the outcome of a claimed report and sets the claim's
// status to it, in one transaction. A "failed" outcome lets a later Claim
// retry, but never undoes a report that another host sent or skipped in
// the meantime (after this host's lease ran out).
func (s *sqlStore) Finish(ctx context.Context, sent Sent) error {
	sent = boundSent(sent)
	sent.Domain = dbDomain(sent.Domain)
	op := "finish " + sent.Domain + "/" + dbDay(sent.Day)
	switch sent.Status {
	case claimSent, claimSkipped, claimFailed:
	default:
		return s.wrap(op, fmt.Errorf("status %q, want sent, skipped or failed", sent.Status))
	}
	if sent.Domain == "" {
		return s.wrap(op, fmt.Errorf("no domain"))
	}
	if sent.Time.IsZero() {
		sent.Time = time.Now()
	}
	destinations, _ := json.Marshal(dbNonNil(sent.Destinations))
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		q := `INSERT INTO report_claims (domain, day, owner, claimed_us, status) VALUES (?, ?, ?, ?, ?)
			ON CONFLICT (domain, day) DO UPDATE SET owner = excluded.owner, claimed_us = excluded.claimed_us, status = excluded.status
			WHERE excluded.status <> '` + claimFailed + `' OR report_claims.status NOT IN ('` + claimSent + `', '` + claimSkipped + `')`
		if _, err := tx.ExecContext(ctx, s.d.bind(q), sent.Domain, dbDay(sent.Day), sent.Owner, dbTime(sent.Time), sent.Status); err != nil {
			return err
		}
		q = `INSERT INTO report_outcomes (domain, day, report_id, owner, status, destinations, detail, bytes, time_us)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`
		_, err := tx.ExecContext(ctx, s.d.bind(q), sent.Domain, dbDay(sent.Day), sent.ReportID, sent.Owner, sent.Status,
			string(destinations), sent.Detail, sent.Bytes, dbTime(sent.Time))
		return err
	})
	if err != nil {
		return s.wrap(op, err)
	}
	return nil
}

// SentSince lists the outcomes recorded for days on or after since's UTC
// day, by day, domain and time.
func (s *sqlStore) SentSince(ctx context.Context, since time.Time) ([]Sent, error) {
	q := `SELECT domain, day, report_id, owner, status, destinations, detail, bytes, time_us FROM report_outcomes
		WHERE day >= ? ORDER BY day, domain, time_us, id`
	rows, err := s.db.QueryContext(ctx, s.d.bind(q), dbDay(since))
	if err != nil {
		return nil, s.wrap("sent since", err)
	}
	defer rows.Close()
	var out []Sent
	for rows.Next() {
		var sent Sent
		var day, destinations string
		var us int64
		if err := rows.Scan(&sent.Domain, &day, &sent.ReportID, &sent.Owner, &sent.Status, &destinations, &sent.Detail, &sent.Bytes, &us); err != nil {
			return nil, s.wrap("sent since", err)
		}
		if sent.Day, err = dbParseDay(day); err != nil {
			return nil, s.wrap("sent since", err)
		}
		if err := dbDecodeJSON(destinations, &sent.Destinations); err != nil {
			return nil, s.wrap("sent since", err)
		}
		sent.Time = dbParseTime(us)
		out = append(out, sent)
	}
	if err := rows.Err(); err != nil {
		return nil, s.wrap("sent since", err)
	}
	return out, nil
}
