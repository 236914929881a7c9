package reports

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Outcomes of one domain's report (Sent.Status). Sent, skipped and failed
// are recorded in the store; the others only returned.
const (
	// StatusSent: delivered to at least one destination, and no
	// destination is left to retry.
	StatusSent = "sent"
	// StatusSkipped: no usable destination (no rua, none verified, none
	// with a big enough size limit). Not retried.
	StatusSkipped = "skipped"
	// StatusFailed: a destination failed temporarily beyond the retries,
	// or all failed; a later run retries.
	StatusFailed = "failed"
	// StatusDryRun: built and verified, not sent (SendOptions.DryRun).
	StatusDryRun = "dry-run"
	// StatusWritten: written to SendOptions.OutDir.
	StatusWritten = "written"
	// StatusNotClaimed: another host holds the claim, or the report was
	// already sent or skipped.
	StatusNotClaimed = "not-claimed"
)

// Defaults of SendOptions' zero values.
const (
	DefaultLease         = time.Hour
	DefaultMaxReportSize = 10 << 20
	DefaultRetries       = 3
	DefaultRetryWait     = 30 * time.Second
)

// SendOptions says which reports Send makes and how.
type SendOptions struct {
	// Day is the reporting day, midnight UTC (other times are truncated
	// to their UTC day): a report covers [Day, Day+24h), and its
	// date_range ends at the day's last second (begin+86399), so that
	// consecutive reports do not overlap.
	Day time.Time
	// Domains, when not empty, limits the reports to these policy domains.
	Domains []string
	// DryRun builds and verifies everything and reports what would be
	// sent, but sends and records nothing.
	DryRun bool
	// OutDir, when set, writes each report there under its RFC 9990 file
	// name instead of mailing it (no destination checks, no claims,
	// nothing recorded).
	OutDir string
	// Owner names this process in claims and records; it must differ
	// between processes (an owner may always take its own claim back).
	// Default: the host name and the process ID.
	Owner string
	// Lease is how long a claim keeps other hosts away. Default 1h.
	Lease time.Duration
	// MaxReportSize bounds a report message when a rua URI gives no
	// "!size" limit of its own. Default 10 MiB.
	MaxReportSize int64
	// Retries is how many times a temporary failure (DNS, MTA) is retried
	// after the first try, RetryWait apart. Default 3 and 30s; a negative
	// Retries means no retry.
	Retries   int
	RetryWait time.Duration
	// Now is the clock (Date headers, records). Default time.Now.
	Now func() time.Time
}

// DefaultOwner names this process in report claims: host name and process
// ID, so that two runs on one host (the daemon's send_at and a cron job)
// never take each other's claims for their own.
func DefaultOwner() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "localhost"
	}
	return fmt.Sprintf("%s/%d", host, os.Getpid())
}

func (o SendOptions) withDefaults() SendOptions {
	o.Day = DayOf(o.Day)
	if o.Owner == "" {
		o.Owner = DefaultOwner()
	}
	if o.Lease <= 0 {
		o.Lease = DefaultLease
	}
	if o.MaxReportSize <= 0 {
		o.MaxReportSize = DefaultMaxReportSize
	}
	switch {
	case o.Retries == 0:
		o.Retries = DefaultRetries
	case o.Retries < 0:
		o.Retries = 0
	}
	if o.RetryWait <= 0 {
		o.RetryWait = DefaultRetryWait
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// Generator makes and sends the aggregate reports of one day, from the
// rows in Store, to the rua destinations that pass verification through
// Resolver, by way of Mailer.
type Generator struct {
	Store    Store
	Resolver TXTResolver
	Mailer   Mailer
	Meta     Meta
	// Logger gets one line per decision (a skipped destination, a sent
	// report, a failure). Nil: no logs.
	Logger *slog.Logger
}

// Send makes the reports of o.Day: for each reporting domain with rows on
// that day, it claims the domain's report (skipping it when another host
// has it or it is done), reads its policy and rows, keeps the mailto: rua
// destinations that pass verification and whose size limit a report can
// meet, builds the report (split into several when the smallest limit
// asks for it), mails every part to every destination, and records the
// outcome with Finish: "sent", "skipped" (no usable destination, no rua)
// or "failed" (retries exhausted or every destination refused: a later
// run tries again). It returns one Sent per domain, also for DryRun
// ("dry-run") and OutDir ("written") runs, which claim and record
// nothing. A failure of one domain never stops the others; the error is
// for a run that could not start (bad options, the store unreadable).
func (g *Generator) Send(ctx context.Context, o SendOptions) ([]Sent, error) {
	o = o.withDefaults()
	if _, err := plainAddress(g.Meta.Email); err != nil {
		return nil, fmt.Errorf("reports: send: generator email: %w", err)
	}
	if g.Store == nil {
		return nil, errors.New("reports: send: no store")
	}
	if o.OutDir == "" && (g.Mailer == nil || g.Resolver == nil) && !o.DryRun {
		return nil, errors.New("reports: send: a mailer and a resolver are needed to send")
	}
	if o.DryRun && g.Resolver == nil {
		return nil, errors.New("reports: send: a resolver is needed to verify destinations")
	}
	domains, err := g.Store.Domains(ctx, o.Day)
	if err != nil {
		return nil, fmt.Errorf("reports: send %s: list domains: %w", o.Day.Format(time.DateOnly), err)
	}
	if len(o.Domains) > 0 {
		domains = slices.DeleteFunc(domains, func(d string) bool { return !domainListed(o.Domains, d) })
	}
	if o.OutDir != "" {
		if err := os.MkdirAll(o.OutDir, 0o750); err != nil {
			return nil, fmt.Errorf("reports: send: %w", err)
		}
	}
	out := make([]Sent, 0, len(domains))
	for _, d := range domains {
		if err := ctx.Err(); err != nil {
			return out, fmt.Errorf("reports: send: %w", err)
		}
		out = append(out, g.sendDomain(ctx, o, d))
	}
	return out, nil
}

// domainListed reports whether d is in list (case and a trailing dot
// ignored).
func domainListed(list []string, d string) bool {
	norm := func(s string) string { return strings.ToLower(strings.TrimSuffix(strings.TrimSpace(s), ".")) }
	return slices.ContainsFunc(list, func(s string) bool { return norm(s) == norm(d) })
}

// domainRun is the work on one domain's report.
type domainRun struct {
	g      *Generator
	o      SendOptions
	domain string
	log    *slog.Logger
	sent   Sent
	// details are the reasons for skipped and failed destinations.
	details []string
	// temporary is set when something may pass on a later run.
	temporary bool
}

func (g *Generator) logger() *slog.Logger {
	if g.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return g.Logger
}

// sendDomain makes, sends and records one domain's report.
func (g *Generator) sendDomain(ctx context.Context, o SendOptions, domain string) Sent {
	r := &domainRun{
		g: g, o: o, domain: domain,
		log:  g.logger().With("domain", genClip(domain, genMaxDomain), "day", o.Day.Format(time.DateOnly)),
		sent: Sent{Domain: domain, Day: o.Day, Owner: o.Owner},
	}
	record := !o.DryRun && o.OutDir == ""
	if record {
		ok, err := g.Store.Claim(ctx, domain, o.Day, o.Owner, o.Lease)
		if err != nil {
			r.log.Error("reports: claim failed", "err", err)
			r.sent.Status, r.sent.Detail, r.sent.Time = StatusFailed, "claim: "+err.Error(), o.Now()
			return r.sent
		}
		if !ok {
			r.log.Info("reports: not claimed: done already or another host has it")
			r.sent.Status, r.sent.Time = StatusNotClaimed, o.Now()
			return r.sent
		}
	}
	r.run(ctx)
	r.sent.Detail = strings.Join(r.details, "; ")
	r.sent.Time = o.Now()
	if record {
		// Record the outcome even when ctx was cancelled meanwhile, so the
		// claim does not linger until its lease ends.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if err := g.Store.Finish(fctx, r.sent); err != nil {
			r.log.Error("reports: recording the outcome failed", "status", r.sent.Status, "err", err)
			r.sent.Detail = strings.TrimPrefix(r.sent.Detail+"; record: "+err.Error(), "; ")
		}
	}
	return r.sent
}

// run sets r.sent's Status, ReportID, Destinations and Bytes.
func (r *domainRun) run(ctx context.Context) {
	p, rows, err := r.g.Store.Rows(ctx, r.domain, r.o.Day)
	if err != nil {
		r.fail(true, "read rows: %v", err)
		return
	}
	if len(rows) == 0 {
		r.skip("no rows")
		return
	}
	if p.Domain == "" {
		p.Domain = r.domain
	}
	rb := &reportBuilder{
		meta: r.g.Meta, policy: p, domain: r.domain, day: r.o.Day,
		begin: r.o.Day, end: r.o.Day.Add(24*time.Hour - time.Second),
		longestTo: r.g.Meta.Email,
	}
	if rb.meta.OrgName == "" {
		rb.meta.OrgName = r.g.Meta.submitter()
	}
	if r.o.OutDir != "" {
		r.write(rb, rows)
		return
	}
	dests := r.destinations(ctx, p)
	if len(dests) == 0 {
		if r.temporary {
			r.sent.Status = StatusFailed
		} else {
			r.skip("no usable destination")
		}
		return
	}
	parts, dests := r.fit(rb, rows, dests)
	if len(dests) == 0 {
		switch {
		case r.sent.Status != "":
		case r.temporary:
			r.sent.Status = StatusFailed
		default:
			r.skip("no destination accepts a report this large")
		}
		return
	}
	for _, part := range parts {
		r.sent.Bytes += int64(len(part.Gzip))
	}
	r.sent.ReportID = joinIDs(parts)
	if r.o.DryRun {
		r.sent.Status = StatusDryRun
		for _, d := range dests {
			r.sent.Destinations = append(r.sent.Destinations, d.URI)
		}
		r.log.Info("reports: dry run: would send", "report_id", r.sent.ReportID, "parts", len(parts), "to", r.sent.Destinations)
		return
	}
	r.deliver(ctx, rb, parts, dests)
}

// destinations parses and verifies the policy's rua URIs, in order, and
// returns the usable ones (without duplicates).
func (r *domainRun) destinations(ctx context.Context, p Policy) []destination {
	if len(p.RUA) == 0 {
		r.details = append(r.details, "the policy has no rua")
		return nil
	}
	var out []destination
	seen := map[string]bool{}
	for i, uri := range p.RUA {
		var limit int64
		if i < len(p.RUALimits) {
			limit = p.RUALimits[i]
		}
		d, err := parseDestination(uri, limit)
		if err != nil {
			r.skipDest(uri, err)
			continue
		}
		var verified []destination
		err = r.retry(ctx, "verify "+d.Address, func() error {
			var err error
			verified, err = verifyDestination(ctx, r.g.Resolver, p.Domain, d)
			return err
		})
		if err != nil {
			if errors.Is(err, ErrTemporary) {
				r.failDest(uri, true, err)
			} else {
				r.skipDest(uri, err)
			}
			continue
		}
		for _, v := range verified {
			if !seen[v.Address] {
				seen[v.Address] = true
				out = append(out, v)
			}
		}
	}
	return out
}

// fit splits the rows for the smallest size limit among dests. A
// destination whose limit is smaller than a report with a single record
// is dropped with a reason (RFC 7489 §7.2.1.1 lets a receiver skip a
// report over the limit), and the split is redone for the rest.
func (r *domainRun) fit(rb *reportBuilder, rows []Row, dests []destination) ([]reportPart, []destination) {
	for _, d := range dests {
		if len(d.Address) > len(rb.longestTo) {
			rb.longestTo = d.Address
		}
	}
	for len(dests) > 0 {
		limit := r.limitOf(dests[0])
		for _, d := range dests[1:] {
			limit = min(limit, r.limitOf(d))
		}
		parts, err := rb.split(rows, limit)
		var tooLarge *errRecordTooLarge
		switch {
		case err == nil:
			if len(parts) > 1 {
				r.log.Info("reports: report split to fit the size limit", "parts", len(parts), "limit", limit)
			}
			return parts, dests
		case errors.As(err, &tooLarge):
			dests = slices.DeleteFunc(dests, func(d destination) bool {
				if r.limitOf(d) < tooLarge.need {
					r.skipDest(d.URI, fmt.Errorf("size limit of %d bytes: %w", r.limitOf(d), err))
					return true
				}
				return false
			})
		default:
			r.fail(false, "build report: %v", err)
			return nil, nil
		}
	}
	return nil, nil
}

// limitOf is a destination's size limit: its own, else MaxReportSize.
func (r *domainRun) limitOf(d destination) int64 {
	if d.Limit > 0 {
		return d.Limit
	}
	return r.o.MaxReportSize
}

// deliver mails every part to every destination, retrying temporary
// failures, and sets the status.
func (r *domainRun) deliver(ctx context.Context, rb *reportBuilder, parts []reportPart, dests []destination) {
	delivered := 0
	for _, d := range dests {
		err := r.deliverTo(ctx, rb, parts, d)
		if err != nil {
			r.failDest(d.URI, errors.Is(err, ErrTemporary), err)
			continue
		}
		delivered++
		r.sent.Destinations = append(r.sent.Destinations, d.URI)
		r.log.Info("reports: report sent", "to", d.Address, "report_id", r.sent.ReportID, "parts", len(parts), "bytes", r.sent.Bytes)
	}
	switch {
	case r.temporary:
		// A destination may still take it: a later run sends again (the
		// same report IDs and file names, so receivers can drop what they
		// already have).
		r.sent.Status = StatusFailed
	case delivered > 0:
		r.sent.Status = StatusSent
	default:
		r.sent.Status = StatusFailed
	}
}

// deliverTo mails every part to one destination; the first part that
// fails for good stops it.
func (r *domainRun) deliverTo(ctx context.Context, rb *reportBuilder, parts []reportPart, d destination) error {
	for _, part := range parts {
		msg, err := ReportMessage(ReportMail{
			Meta: rb.meta, To: d.Address, Domain: r.domain, ReportID: part.ID,
			Begin: rb.begin, End: rb.end, FileName: part.FileName, Report: part.Gzip, Date: r.o.Now(),
		})
		if err != nil {
			return err
		}
		err = r.retry(ctx, "send to "+d.Address, func() error {
			return r.g.Mailer.Send(ctx, r.g.Meta.Email, []string{d.Address}, msg)
		})
		if err != nil {
			return fmt.Errorf("report %s: %w", part.ID, err)
		}
	}
	return nil
}

// retry runs f until it succeeds, fails for good, or has failed
// temporarily 1+Retries times, waiting RetryWait between tries.
func (r *domainRun) retry(ctx context.Context, what string, f func() error) error {
	for attempt := 0; ; attempt++ {
		err := f()
		if err == nil || !errors.Is(err, ErrTemporary) || attempt >= r.o.Retries {
			return err
		}
		r.log.Warn("reports: temporary failure, will retry", "what", what, "attempt", attempt+1, "wait", r.o.RetryWait, "err", err)
		t := time.NewTimer(r.o.RetryWait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w: %w (%w)", ErrTemporary, err, ctx.Err())
		case <-t.C:
		}
	}
}

// write puts the report files into OutDir (split by MaxReportSize).
func (r *domainRun) write(rb *reportBuilder, rows []Row) {
	parts, err := rb.split(rows, r.o.MaxReportSize)
	if err != nil {
		r.fail(false, "build report: %v", err)
		return
	}
	for _, part := range parts {
		path := filepath.Join(r.o.OutDir, part.FileName)
		if err := writeFileAtomic(path, part.Gzip); err != nil {
			r.fail(false, "write: %v", err)
			return
		}
		r.sent.Destinations = append(r.sent.Destinations, path)
		r.sent.Bytes += int64(len(part.Gzip))
		r.log.Info("reports: report written", "file", path, "report_id", part.ID)
	}
	r.sent.ReportID = joinIDs(parts)
	r.sent.Status = StatusWritten
}

// writeFileAtomic writes data to path through a temporary file in the
// same directory, so a reader never sees half a report.
func writeFileAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".report-*.tmp")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, werr := f.Write(data)
	cerr := f.Close()
	if err := errors.Join(werr, cerr); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Chmod(tmp, 0o640); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// joinIDs lists the parts' report IDs, comma-separated.
func joinIDs(parts []reportPart) string {
	ids := make([]string, len(parts))
	for i, p := range parts {
		ids[i] = p.ID
	}
	return strings.Join(ids, ",")
}

func (r *domainRun) skip(reason string) {
	r.sent.Status = StatusSkipped
	r.details = append(r.details, reason)
	r.log.Info("reports: report skipped", "reason", reason)
}

func (r *domainRun) fail(temporary bool, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	r.sent.Status = StatusFailed
	r.temporary = r.temporary || temporary
	r.details = append(r.details, msg)
	r.log.Error("reports: report failed", "err", msg)
}

// skipDest notes a destination left out for good.
func (r *domainRun) skipDest(uri string, err error) {
	r.details = append(r.details, fmt.Sprintf("skipped %s: %v", quoteURI(uri), err))
	r.log.Warn("reports: destination skipped", "uri", genClip(uri, 200), "reason", err)
}

// failDest notes a destination that failed; temporary failures make the
// report "failed" so that a later run retries.
func (r *domainRun) failDest(uri string, temporary bool, err error) {
	r.temporary = r.temporary || temporary
	r.details = append(r.details, fmt.Sprintf("failed %s: %v", quoteURI(uri), err))
	r.log.Error("reports: destination failed", "uri", genClip(uri, 200), "temporary", temporary, "err", err)
}
