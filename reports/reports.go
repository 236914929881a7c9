// Package reports keeps DMARC aggregate reports (RFC 9990): it records the
// daemon's inbound DMARC evaluations into a store (an SQLite file, or a
// PostgreSQL database that a fleet of MX hosts shares), aggregates them per
// reporting domain, UTC day, source IP and identical results, generates
// and mails the daily reports, and imports the reports that other
// receivers send to a domain owner, for a summary.
//
// It takes policy's Evaluation records; neither policy nor milter imports
// it.
package reports

import (
	"context"
	"net/netip"
	"time"
)

// Row is one aggregated report record (RFC 9990 §2.1, "record"): the
// messages from one source IP, about one reporting domain, on one UTC
// day, whose identifiers and results were all identical.
type Row struct {
	// Domain is the reporting domain (policy_published/domain): where the
	// DMARC record that applied was found.
	Domain string
	// Day is the UTC day, midnight UTC.
	Day time.Time
	// SourceIP is the sending client's address.
	SourceIP netip.Addr
	// Count is the number of messages.
	Count int64
	// HeaderFrom, EnvelopeFrom and EnvelopeTo are the identifiers
	// (domains); EnvelopeFrom is empty for a null sender, EnvelopeTo when
	// unknown.
	HeaderFrom, EnvelopeFrom, EnvelopeTo string
	// Helo is the client's HELO name.
	Helo string
	// Disposition is the policy applied: none, quarantine or reject.
	Disposition string
	// DKIMAligned and SPFAligned are "pass" or "fail"
	// (policy_evaluated/dkim and spf).
	DKIMAligned, SPFAligned string
	// Overrides are the policy_evaluated reasons.
	Overrides []Override
	// DKIM and SPF are the auth_results.
	DKIM []DKIMAuth
	SPF  []SPFAuth
}

// Override is a policy_evaluated/reason: a PolicyOverrideType and a
// comment.
type Override struct {
	Type, Comment string
}

// DKIMAuth is one auth_results/dkim entry.
type DKIMAuth struct {
	Domain, Selector, Result, HumanResult string
}

// SPFAuth is one auth_results/spf entry; Scope is "mfrom" or "helo".
type SPFAuth struct {
	Domain, Scope, Result string
}

// Policy is policy_published: the DMARC record that applied, as last seen
// on the day, and where its rua sends reports.
type Policy struct {
	// Domain is the reporting domain.
	Domain string
	// DiscoveryMethod is "treewalk" or "psl".
	DiscoveryMethod string
	// P, SP, NP, PSD, Testing ("y"/"n"), ADKIM, ASPF, FO as published.
	P, SP, NP, PSD, Testing, ADKIM, ASPF, FO string
	// RUA are the aggregate report URIs and RUALimits their size limits in
	// bytes (0: none), in the order of the record.
	RUA       []string
	RUALimits []int64
}

// Entry is what one or more identical evaluations add to the store: a Row
// (Count messages) and the policy seen with them.
type Entry struct {
	Row    Row
	Policy Policy
	// Seen is when the newest of the evaluations happened; the newest
	// policy of a domain and day wins.
	Seen time.Time
}

// Sent is the record of one report's sending (or the decision not to).
type Sent struct {
	Domain string
	Day    time.Time
	// ReportID is the report_id of the generated report.
	ReportID string
	// Owner names the host (or CLI run) that generated it.
	Owner string
	// Status is "sent", "skipped" (no usable destination) or "failed".
	Status string
	// Destinations are the URIs the report went to; Detail says why a
	// destination was skipped or failed.
	Destinations []string
	Detail       string
	// Bytes is the size of the compressed report.
	Bytes int64
	// Time is when the outcome was recorded.
	Time time.Time
}

// Feedback is one aggregate report received from another organisation
// (RFC 9990 or RFC 7489 format), as imported by a domain owner.
type Feedback struct {
	// OrgName, Email and ReportID are report_metadata's.
	OrgName, Email, ExtraContactInfo, ReportID string
	// Begin and End are the date_range.
	Begin, End time.Time
	// Errors are report_metadata/error entries.
	Errors []string
	// Policy is policy_published (Domain set, DiscoveryMethod may be empty).
	Policy Policy
	// Rows are the records; their Domain is Policy.Domain and Day the UTC
	// day of Begin.
	Rows []Row
}

// ReceivedRow is a row of an imported report, with the report it came from.
type ReceivedRow struct {
	Row
	OrgName, ReportID string
	Begin, End        time.Time
}

// Store keeps recorded evaluations, the record of sent reports, and
// imported reports. Implementations are safe for concurrent use, and
// several processes (and hosts, for PostgreSQL) may use one database at
// once.
type Store interface {
	// Add aggregates entries into their rows (same Domain, Day, SourceIP
	// and identical results: Count is added) and keeps the newest Policy
	// per domain and day, in one transaction.
	Add(ctx context.Context, entries []Entry) error
	// Domains lists the reporting domains with rows on day, sorted.
	Domains(ctx context.Context, day time.Time) ([]string, error)
	// Rows returns the policy and the rows of one domain and day, in a
	// stable order (source IP, then the rest).
	Rows(ctx context.Context, domain string, day time.Time) (Policy, []Row, error)
	// Claim reserves the report of domain and day for owner. It returns
	// false when it was already sent or skipped, or when another owner
	// holds a claim younger than lease; so when several hosts run at once,
	// exactly one of them sends each report.
	Claim(ctx context.Context, domain string, day time.Time, owner string, lease time.Duration) (bool, error)
	// Finish records the outcome of a claimed report and releases the
	// claim. A "failed" outcome lets a later Claim retry.
	Finish(ctx context.Context, s Sent) error
	// SentSince lists the outcomes recorded for days on or after since.
	SentSince(ctx context.Context, since time.Time) ([]Sent, error)
	// Import stores a received report; false (and no change) when a report
	// with the same org name and report_id is already stored. All or
	// nothing.
	Import(ctx context.Context, f *Feedback) (bool, error)
	// Received returns the rows of imported reports about domain (and its
	// subdomains' records reported under it) whose range begins on or
	// after since.
	Received(ctx context.Context, domain string, since time.Time) ([]ReceivedRow, error)
	// Prune deletes rows, sent records and imported reports of days before
	// before, and returns how many rows went.
	Prune(ctx context.Context, before time.Time) (int64, error)
	// Close releases the database.
	Close() error
	// StatsReader sums rows for the status pages.
	StatsReader
}

// DayOf is the UTC day of t, as Row.Day holds it.
func DayOf(t time.Time) time.Time {
	y, m, d := t.UTC().Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
}
