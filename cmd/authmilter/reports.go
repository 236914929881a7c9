package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/authmilter/authmilter/policy"
	"github.com/authmilter/authmilter/reports"
)

// reportsUsage is the help of `authmilter reports`.
const reportsUsage = `usage: authmilter reports <command> [flags]

DMARC aggregate reports (RFC 9990), in the store named by reports.database.

Commands:
  send    [-config FILE] [-dry-run] [-out DIR] [-d DOMAIN]... [-day YYYY-MM-DD|today|yesterday]
          make the reports of one UTC day (default yesterday; today gives a partial report)
          and mail them to each reporting domain's rua addresses; one line per domain;
          exit 1 if any failed. -out DIR writes the report files instead of mailing them,
          -dry-run only shows what would be sent; neither records anything.
  list    [-config FILE] [-days N] [-d DOMAIN]... [-json]
          per UTC day and reporting domain: messages, rows, DMARC pass/fail, report status
  import  [-config FILE] FILE|DIR|-...
          store aggregate reports received as a domain owner (XML, .xml.gz, .zip, or a mail
          message carrying one); exit 1 if any input was refused
  summary [-config FILE] -d DOMAIN [-days N] [-json]
          per sending source of DOMAIN's received reports: volume, aligned DKIM/SPF pass
          rates, dispositions; failing sources first
`

// Bounds of the -days flags: a year and a bit covers any sensible keep.
const (
	reportsListDays    = 7
	reportsSummaryDays = 30
	reportsMaxDays     = 400
)

func cmdReports(args []string) error {
	return runReports(args, os.Stdin, os.Stdout, os.Stderr)
}

// runReports runs one `authmilter reports` command with the given streams.
func runReports(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, reportsUsage)
		return exitError(2)
	}
	// An interrupted send leaves claims that a later run takes over when
	// their lease ends; the context lets it stop between steps.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	switch args[0] {
	case "send":
		return reportsSend(ctx, args[1:], stdout, stderr)
	case "list":
		return reportsList(ctx, args[1:], stdout, stderr)
	case "import":
		return reportsImport(ctx, args[1:], stdin, stdout, stderr)
	case "summary":
		return reportsSummary(ctx, args[1:], stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, reportsUsage)
		return nil
	default:
		fmt.Fprintf(stderr, "authmilter reports: unknown command %q\n\n%s", args[0], reportsUsage)
		return exitError(2)
	}
}

// newReportsFlags makes the flag set of `authmilter reports NAME`, with
// -config, its output on stderr and the usage of all reports commands.
func newReportsFlags(name string, stderr io.Writer) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet("reports "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, reportsUsage+"\nFlags of "+name+":\n")
		fs.PrintDefaults()
	}
	return fs, configFlag(fs)
}

// openReportsStore loads the config and opens its reports store.
func openReportsStore(ctx context.Context, cfgPath string) (*policy.Config, reports.Store, error) {
	cfg, _, err := loadConfig(cfgPath)
	if err != nil {
		return nil, nil, err
	}
	st, err := reports.Open(ctx, cfg.Reports.Database)
	if err != nil {
		return nil, nil, fmt.Errorf("reports.database: %w", err) // err names it, without a password
	}
	return cfg, st, nil
}

// domainList is a repeatable flag of domain names, each also a
// comma-separated list.
type domainList []string

func (l *domainList) String() string { return strings.Join(*l, ",") }

func (l *domainList) Set(v string) error {
	for _, d := range strings.Split(v, ",") {
		d = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(d), "."))
		if !isDomainName(d) {
			return fmt.Errorf("%q is not a domain name", d)
		}
		if !slices.Contains(*l, d) {
			*l = append(*l, d)
		}
	}
	return nil
}

// isDomainName accepts a DNS name of letters, digits, hyphens and
// underscores (RFC 1035 lengths), as a reporting domain is.
func isDomainName(d string) bool {
	if d == "" || len(d) > 253 {
		return false
	}
	for _, label := range strings.Split(d, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// parseReportDay reads -day: YYYY-MM-DD, "today" or "yesterday" (UTC); ""
// is yesterday. A day after today is refused: there is nothing to report.
func parseReportDay(s string, now time.Time) (time.Time, error) {
	today := reports.DayOf(now)
	switch s {
	case "", "yesterday":
		return today.AddDate(0, 0, -1), nil
	case "today":
		return today, nil
	}
	day, err := time.Parse("2006-01-02", s)
	if err != nil {
		return time.Time{}, fmt.Errorf("-day %q: want YYYY-MM-DD (UTC), today or yesterday", s)
	}
	if day.After(today) {
		return time.Time{}, fmt.Errorf("-day %s is in the future (today is %s UTC)", s, today.Format("2006-01-02"))
	}
	return day, nil
}

// parseDays checks a -days flag.
func parseDays(n int) error {
	if n < 1 || n > reportsMaxDays {
		return fmt.Errorf("-days %d: want 1 to %d", n, reportsMaxDays)
	}
	return nil
}

// reportOwner names this process in report claims (reports.DefaultOwner).
func reportOwner() string { return reports.DefaultOwner() }

// newReportMailer is the mailer [reports] asks for: the sendmail command
// when reports.sendmail is set, else SMTP to reports.smtp.
func newReportMailer(cfg *policy.Config) reports.Mailer {
	if cfg.Reports.Sendmail != "" {
		return reports.NewSendmailMailer(cfg.Reports.Sendmail)
	}
	return reports.NewSMTPMailer(cfg.Reports.SMTP, cfg.AuthservID)
}

// newReportGenerator builds the report generator for cfg on st.
func newReportGenerator(cfg *policy.Config, st reports.Store, logger *slog.Logger) (*reports.Generator, error) {
	r, err := newResolver(cfg)
	if err != nil {
		return nil, err
	}
	return &reports.Generator{
		Store:    st,
		Resolver: r,
		Mailer:   newReportMailer(cfg),
		Meta:     reports.Meta{OrgName: cfg.ReportsOrgName(), Email: cfg.ReportsContact(), ExtraContactInfo: cfg.Reports.ExtraContactInfo},
		Logger:   logger,
	}, nil
}

func reportsSend(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, cfgPath := newReportsFlags("send", stderr)
	dryRun := fs.Bool("dry-run", false, "build the reports and check their destinations; send and record nothing")
	outDir := fs.String("out", "", "write each report into `DIR` under its RFC 9990 file name instead of mailing it; records nothing")
	dayFlag := fs.String("day", "", "the UTC day to report: YYYY-MM-DD, today (a partial report) or yesterday (default)")
	var domains domainList
	fs.Var(&domains, "d", "only this reporting `DOMAIN` (repeatable, or comma-separated)")
	if err := fs.Parse(args); err != nil {
		return exitError(2)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "authmilter reports send: unexpected argument %q\n", fs.Arg(0))
		return exitError(2)
	}
	day, err := parseReportDay(*dayFlag, time.Now())
	if err != nil {
		return err
	}
	if *outDir != "" {
		if fi, err := os.Stat(*outDir); err != nil || !fi.IsDir() {
			return fmt.Errorf("-out %s: not a folder", *outDir)
		}
	}
	cfg, st, err := openReportsStore(ctx, *cfgPath)
	if err != nil {
		return err
	}
	defer st.Close()
	gen, err := newReportGenerator(cfg, st, newLogger(cfg, stderr))
	if err != nil {
		return err
	}
	sent, err := gen.Send(ctx, reports.SendOptions{
		Day: day, Domains: domains, DryRun: *dryRun, OutDir: *outDir,
		Owner: reportOwner(), MaxReportSize: cfg.Reports.MaxReportSize,
	})
	if !*dryRun && *outDir == "" {
		// From cron, the sending run is also the housekeeping run.
		pruneReports(ctx, st, cfg, time.Now(), newLogger(cfg, stderr))
	}
	if len(sent) == 0 && err == nil {
		fmt.Fprintf(stderr, "authmilter reports send: no DMARC results recorded for %s\n", day.Format("2006-01-02"))
		return nil
	}
	failed := printSendOutcomes(stdout, sent)
	if err != nil {
		return err
	}
	if failed > 0 {
		return exitError(1)
	}
	return nil
}

// sendOutcome is the line `reports send` prints for one domain.
type sendOutcome struct {
	domain, status, detail string
	ids, destinations      []string
}

// printSendOutcomes prints one line per domain (the outcomes of a split
// report joined), and returns how many domains failed.
func printSendOutcomes(w io.Writer, sent []reports.Sent) int {
	var order []string
	by := map[string]*sendOutcome{}
	for _, s := range sent {
		o := by[s.Domain]
		if o == nil {
			o = &sendOutcome{domain: s.Domain, status: s.Status}
			by[s.Domain] = o
			order = append(order, s.Domain)
		}
		o.status = worseStatus(o.status, s.Status)
		if s.ReportID != "" && !slices.Contains(o.ids, s.ReportID) {
			o.ids = append(o.ids, s.ReportID)
		}
		for _, d := range s.Destinations {
			if !slices.Contains(o.destinations, d) {
				o.destinations = append(o.destinations, d)
			}
		}
		if s.Detail != "" && !strings.Contains(o.detail, s.Detail) {
			o.detail = strings.TrimPrefix(o.detail+"; "+s.Detail, "; ")
		}
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DOMAIN\tSTATUS\tREPORT_ID\tDESTINATIONS\tDETAIL")
	failed := 0
	for _, d := range order {
		o := by[d]
		if o.status == reports.StatusFailed {
			failed++
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", oneLine(o.domain), oneLine(o.status), dash(strings.Join(o.ids, ",")),
			dash(strings.Join(o.destinations, ",")), dash(oneLine(o.detail)))
	}
	tw.Flush()
	return failed
}

// worseStatus keeps the outcome that matters most of a split report's
// parts: failed over sent over anything else.
func worseStatus(a, b string) string {
	rank := func(s string) int {
		switch s {
		case reports.StatusFailed:
			return 3
		case reports.StatusSent:
			return 2
		case reports.StatusSkipped:
			return 1
		}
		return 0
	}
	if rank(b) > rank(a) {
		return b
	}
	return a
}

// oneLine keeps a value from the store (which came from DNS and mail)
// to one printable line.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// reportDay is one row of `reports list`: a reporting domain's recorded
// results on one UTC day and what became of its report.
type reportDay struct {
	Day          string   `json:"day"`
	Domain       string   `json:"domain"`
	Messages     int64    `json:"messages"`
	Rows         int      `json:"rows"`
	DMARCPass    int64    `json:"dmarc_pass"`
	DMARCFail    int64    `json:"dmarc_fail"`
	Status       string   `json:"status"`
	ReportIDs    []string `json:"report_ids,omitempty"`
	Destinations []string `json:"destinations,omitempty"`
	Detail       string   `json:"detail,omitempty"`
	Owner        string   `json:"owner,omitempty"`
	// At is when the outcome was recorded.
	At *time.Time `json:"at,omitempty"`
}

// Statuses of a day's report that has no recorded outcome.
const (
	statusCollecting = "collecting" // today: the day is not over
	statusNotSent    = "not sent"
)

func reportsList(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, cfgPath := newReportsFlags("list", stderr)
	days := fs.Int("days", reportsListDays, "list the last `N` UTC days, today included")
	asJSON := fs.Bool("json", false, "print JSON")
	var domains domainList
	fs.Var(&domains, "d", "only this reporting `DOMAIN` (repeatable, or comma-separated)")
	if err := fs.Parse(args); err != nil {
		return exitError(2)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "authmilter reports list: unexpected argument %q\n", fs.Arg(0))
		return exitError(2)
	}
	if err := parseDays(*days); err != nil {
		return err
	}
	_, st, err := openReportsStore(ctx, *cfgPath)
	if err != nil {
		return err
	}
	defer st.Close()
	list, err := listReportDays(ctx, st, reports.DayOf(time.Now()), *days, domains)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(list)
	}
	if len(list) == 0 {
		fmt.Fprintf(stderr, "authmilter reports list: nothing recorded in the last %d days\n", *days)
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DAY\tDOMAIN\tMESSAGES\tROWS\tPASS\tFAIL\tSTATUS\tREPORT_ID\tDETAIL")
	for _, r := range list {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%s\t%s\t%s\n", r.Day, oneLine(r.Domain), r.Messages, r.Rows,
			r.DMARCPass, r.DMARCFail, r.Status, dash(strings.Join(r.ReportIDs, ",")), dash(oneLine(r.Detail)))
	}
	return tw.Flush()
}

// listReportDays collects the rows of `reports list` for the n days up to
// today, newest day first, domains sorted (only the domains listed in
// only, when it is not empty).
func listReportDays(ctx context.Context, st reports.Store, today time.Time, n int, only domainList) ([]reportDay, error) {
	first := today.AddDate(0, 0, -(n - 1))
	sent, err := st.SentSince(ctx, first)
	if err != nil {
		return nil, fmt.Errorf("reports sent since %s: %w", first.Format("2006-01-02"), err)
	}
	type key struct {
		domain string
		day    time.Time
	}
	outcomes := map[key][]reports.Sent{}
	for _, s := range sent {
		k := key{s.Domain, reports.DayOf(s.Day)}
		outcomes[k] = append(outcomes[k], s)
	}
	list := []reportDay{}
	for day := today; !day.Before(first); day = day.AddDate(0, 0, -1) {
		domains, err := st.Domains(ctx, day)
		if err != nil {
			return nil, fmt.Errorf("reports of %s: %w", day.Format("2006-01-02"), err)
		}
		for _, d := range domains {
			if len(only) > 0 && !slices.Contains(only, strings.ToLower(d)) {
				continue
			}
			_, rows, err := st.Rows(ctx, d, day)
			if err != nil {
				return nil, fmt.Errorf("reports of %s, %s: %w", d, day.Format("2006-01-02"), err)
			}
			r := reportDay{Day: day.Format("2006-01-02"), Domain: d, Rows: len(rows), Status: statusNotSent}
			if day.Equal(today) {
				r.Status = statusCollecting
			}
			for _, row := range rows {
				r.Messages += row.Count
				if row.DKIMAligned == "pass" || row.SPFAligned == "pass" {
					r.DMARCPass += row.Count
				} else {
					r.DMARCFail += row.Count
				}
			}
			r.addOutcomes(outcomes[key{d, day}])
			list = append(list, r)
		}
	}
	return list, nil
}

// addOutcomes sets the status from the recorded outcomes: the newest
// decides (a failure retried later and sent is "sent").
func (r *reportDay) addOutcomes(out []reports.Sent) {
	if len(out) == 0 {
		return
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Time.Before(out[j].Time) })
	last := out[len(out)-1]
	at := last.Time.UTC()
	r.Status, r.Detail, r.Owner, r.At = last.Status, last.Detail, last.Owner, &at
	for _, s := range out {
		if s.Time.Equal(last.Time) || s.Status == last.Status {
			if s.ReportID != "" && !slices.Contains(r.ReportIDs, s.ReportID) {
				r.ReportIDs = append(r.ReportIDs, s.ReportID)
			}
			for _, d := range s.Destinations {
				if !slices.Contains(r.Destinations, d) {
					r.Destinations = append(r.Destinations, d)
				}
			}
		}
	}
}

func reportsImport(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs, cfgPath := newReportsFlags("import", stderr)
	if err := fs.Parse(args); err != nil {
		return exitError(2)
	}
	if fs.NArg() == 0 {
		fmt.Fprintln(stderr, "authmilter reports import: name a file, a folder, or - for stdin")
		return exitError(2)
	}
	_, st, err := openReportsStore(ctx, *cfgPath)
	if err != nil {
		return err
	}
	defer st.Close()
	var total reports.ImportResult
	for _, path := range fs.Args() {
		res, err := reports.Import(ctx, st, path, stdin, reports.ImportLimits{})
		total.Files += res.Files
		total.Reports += res.Reports
		total.Duplicates += res.Duplicates
		total.Refused += res.Refused
		total.Errors = append(total.Errors, res.Errors...)
		if err != nil {
			printImportResult(stdout, stderr, total)
			return fmt.Errorf("import %s: %w", path, err)
		}
	}
	printImportResult(stdout, stderr, total)
	if total.Refused > 0 {
		return exitError(1)
	}
	return nil
}

// printImportResult prints the counts, and why each refused input was
// refused on stderr.
func printImportResult(stdout, stderr io.Writer, r reports.ImportResult) {
	fmt.Fprintf(stdout, "files %d, reports stored %d, duplicates %d, refused %d\n", r.Files, r.Reports, r.Duplicates, r.Refused)
	for _, e := range r.Errors {
		fmt.Fprintln(stderr, "refused:", oneLine(e))
	}
}

func reportsSummary(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, cfgPath := newReportsFlags("summary", stderr)
	var domain domainList
	fs.Var(&domain, "d", "the `DOMAIN` whose received reports are summed up")
	days := fs.Int("days", reportsSummaryDays, "reports of the last `N` UTC days, today included")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args); err != nil {
		return exitError(2)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "authmilter reports summary: unexpected argument %q\n", fs.Arg(0))
		return exitError(2)
	}
	if len(domain) != 1 {
		fmt.Fprintln(stderr, "authmilter reports summary: -d DOMAIN is required, once")
		return exitError(2)
	}
	if err := parseDays(*days); err != nil {
		return err
	}
	cfg, st, err := openReportsStore(ctx, *cfgPath)
	if err != nil {
		return err
	}
	defer st.Close()
	now := time.Now().UTC()
	since := reports.DayOf(now).AddDate(0, 0, -(*days - 1))
	rows, err := st.Received(ctx, domain[0], since)
	if err != nil {
		return fmt.Errorf("received reports of %s: %w", domain[0], err)
	}
	r, err := newResolver(cfg)
	if err != nil {
		return err
	}
	sum := reports.Summarize(ctx, domain[0], rows, r, since, now)
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(sum)
	}
	if len(rows) == 0 {
		fmt.Fprintf(stderr, "authmilter reports summary: no reports about %s imported since %s; import them with: authmilter reports import FILE|DIR|-\n",
			domain[0], since.Format("2006-01-02"))
	}
	return sum.WriteText(stdout)
}
