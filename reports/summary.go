package reports

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"golang.org/x/net/publicsuffix"
)

// PTRResolver is what Summarize needs for reverse names: PTR lookups and,
// to confirm a name (forward-confirmed reverse DNS), address lookups.
// *net.Resolver and policy/resolve's *Resolver have both.
type PTRResolver interface {
	LookupAddr(ctx context.Context, addr string) ([]string, error)
	LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error)
}

// Bounds of the reverse lookups of one summary: the failing and busiest
// sources are looked up, in parallel, each within its own time.
const (
	summaryMaxPTRLookups = 200
	summaryPTRParallel   = 8
	summaryPTRTimeout    = 5 * time.Second
	// summaryMaxPTRNames is how many PTR names of one address are checked
	// forward.
	summaryMaxPTRNames = 4
)

// The states of a source's reverse name (SourceSummary.Reverse).
const (
	// ReverseVerified: the PTR name resolves back to the address.
	ReverseVerified = "verified"
	// ReverseUnverified: a PTR name that does not resolve back to the
	// address; anyone can publish such a name.
	ReverseUnverified = "unverified"
	// ReverseNone: the address has no PTR record.
	ReverseNone = "none"
	// ReverseFailed: the lookup failed (timeout, server failure).
	ReverseFailed = "lookup failed"
	// ReverseNotLookedUp: beyond the lookup bound, or no resolver given.
	ReverseNotLookedUp = "not looked up"
)

// OrgUnknown is SourceSummary.Org when no verified reverse name tells it.
const OrgUnknown = "unknown"

// Summary is the domain owner's view of received reports for one domain
// over a period: who sends as the domain, and how much of it passes.
type Summary struct {
	// Domain is the summarized domain; its subdomains' records are in.
	Domain string `json:"domain"`
	// Since and Until bound the reports' begin times (Until exclusive;
	// zero: unbounded).
	Since time.Time `json:"since"`
	Until time.Time `json:"until"`
	// Reports is the number of reports with records here, Messages the
	// number of messages they count, DMARCPass of which passed DMARC
	// (DKIM or SPF aligned and passing).
	Reports       int64   `json:"reports"`
	Messages      int64   `json:"messages"`
	DMARCPass     int64   `json:"dmarc_pass"`
	DMARCPassRate float64 `json:"dmarc_pass_rate"`
	// Reporters are the reporting organisations, most messages first.
	Reporters []ReporterSummary `json:"reporters"`
	// Sources are the sending addresses, those with most messages
	// failing DMARC first, then by volume.
	Sources []SourceSummary `json:"sources"`
}

// ReporterSummary is what one reporting organisation saw.
type ReporterSummary struct {
	OrgName       string  `json:"org_name"`
	Reports       int64   `json:"reports"`
	Messages      int64   `json:"messages"`
	DMARCPass     int64   `json:"dmarc_pass"`
	DMARCPassRate float64 `json:"dmarc_pass_rate"`
}

// SourceSummary is one sending source: its IP, reverse name (verified
// forward-confirmed or not), org (the organizational domain of a verified
// reverse name, e.g. "google.com", or "unknown"), messages, DKIM-aligned
// pass, SPF-aligned pass and DMARC pass (either aligned) counts and shares
// (0 to 1), dispositions (counts of none/quarantine/reject, and any other
// value reported), the From domains it used, and the reporting orgs that
// saw it.
type SourceSummary struct {
	IP          netip.Addr `json:"ip"`
	ReverseName string     `json:"reverse_name"`
	// Reverse is one of the Reverse* states.
	Reverse           string           `json:"reverse"`
	Org               string           `json:"org"`
	Messages          int64            `json:"messages"`
	DKIMAlignedPass   int64            `json:"dkim_aligned_pass"`
	SPFAlignedPass    int64            `json:"spf_aligned_pass"`
	DMARCPass         int64            `json:"dmarc_pass"`
	DMARCFail         int64            `json:"dmarc_fail"`
	DKIMAlignedRate   float64          `json:"dkim_aligned_pass_rate"`
	SPFAlignedRate    float64          `json:"spf_aligned_pass_rate"`
	DMARCPassRate     float64          `json:"dmarc_pass_rate"`
	Dispositions      map[string]int64 `json:"dispositions"`
	HeaderFromDomains []string         `json:"header_from_domains"`
	ReportingOrgs     []string         `json:"reporting_orgs"`
}

// sourceSums is a SourceSummary being added up, with the sets its lists
// come from.
type sourceSums struct {
	SourceSummary
	headerFrom, orgs map[string]bool
}

// Summarize computes the summary of rows (as Store.Received returns them)
// about domain and its subdomains (reported under them, or with such a
// From domain) whose report began in [since, until)
// (a zero bound is open): sources sorted failing first (most messages that
// failed DMARC, then volume), PTR lookups bounded (at most 200 sources
// looked up, 8 at a time, each within 5 s; the rest "not looked up"). ptr
// may be nil: no lookups.
func Summarize(ctx context.Context, domain string, rows []ReceivedRow, ptr PTRResolver, since, until time.Time) Summary {
	return summarize(ctx, domain, rows, ptr, since, until, summaryPTRTimeout)
}

// summarize is Summarize with the lookup timeout as a parameter.
func summarize(ctx context.Context, domain string, rows []ReceivedRow, ptr PTRResolver, since, until time.Time, timeout time.Duration) Summary {
	domain = domainName(strings.TrimSpace(domain))
	s := Summary{Domain: domain, Since: since, Until: until}
	reports := map[string]bool{}
	reporters := map[string]*ReporterSummary{}
	reporterReports := map[string]bool{}
	sources := map[netip.Addr]*sourceSums{}
	for _, r := range rows {
		if !inSummary(domain, r, since, until) {
			continue
		}
		pass := r.DKIMAligned == "pass" || r.SPFAligned == "pass"
		key := r.OrgName + "\x00" + r.ReportID
		if !reports[key] {
			reports[key] = true
			s.Reports++
		}
		s.Messages += r.Count
		rep := reporters[r.OrgName]
		if rep == nil {
			rep = &ReporterSummary{OrgName: r.OrgName}
			reporters[r.OrgName] = rep
		}
		if !reporterReports[key] {
			reporterReports[key] = true
			rep.Reports++
		}
		rep.Messages += r.Count
		src := sources[r.SourceIP]
		if src == nil {
			src = &sourceSums{
				SourceSummary: SourceSummary{IP: r.SourceIP, Reverse: ReverseNotLookedUp, Org: OrgUnknown,
					Dispositions: map[string]int64{"none": 0, "quarantine": 0, "reject": 0}},
				headerFrom: map[string]bool{}, orgs: map[string]bool{},
			}
			sources[r.SourceIP] = src
		}
		src.Messages += r.Count
		if pass {
			s.DMARCPass += r.Count
			rep.DMARCPass += r.Count
			src.DMARCPass += r.Count
		} else {
			src.DMARCFail += r.Count
		}
		if r.DKIMAligned == "pass" {
			src.DKIMAlignedPass += r.Count
		}
		if r.SPFAligned == "pass" {
			src.SPFAlignedPass += r.Count
		}
		src.Dispositions[cmp.Or(r.Disposition, "unknown")] += r.Count
		if r.HeaderFrom != "" {
			src.headerFrom[r.HeaderFrom] = true
		}
		src.orgs[r.OrgName] = true
	}
	s.DMARCPassRate = rate(s.DMARCPass, s.Messages)
	for _, rep := range reporters {
		rep.DMARCPassRate = rate(rep.DMARCPass, rep.Messages)
		s.Reporters = append(s.Reporters, *rep)
	}
	slices.SortFunc(s.Reporters, func(a, b ReporterSummary) int {
		return cmp.Or(cmp.Compare(b.Messages, a.Messages), strings.Compare(a.OrgName, b.OrgName))
	})
	for _, src := range sources {
		src.DKIMAlignedRate = rate(src.DKIMAlignedPass, src.Messages)
		src.SPFAlignedRate = rate(src.SPFAlignedPass, src.Messages)
		src.DMARCPassRate = rate(src.DMARCPass, src.Messages)
		src.HeaderFromDomains = sortedKeys(src.headerFrom)
		src.ReportingOrgs = sortedKeys(src.orgs)
		s.Sources = append(s.Sources, src.SourceSummary)
	}
	slices.SortFunc(s.Sources, func(a, b SourceSummary) int {
		return cmp.Or(cmp.Compare(b.DMARCFail, a.DMARCFail), cmp.Compare(b.Messages, a.Messages), a.IP.Compare(b.IP))
	})
	if ptr != nil {
		lookUpReverse(ctx, ptr, s.Sources[:min(len(s.Sources), summaryMaxPTRLookups)], timeout)
	}
	return s
}

// inSummary reports whether r belongs to the summary of domain over
// [since, until): reported under domain or a subdomain, or with such a
// From domain (a subdomain's mail reported under its parent's policy).
func inSummary(domain string, r ReceivedRow, since, until time.Time) bool {
	if !inDomainTree(domain, r.Domain) && !inDomainTree(domain, r.HeaderFrom) {
		return false
	}
	if !since.IsZero() && r.Begin.Before(since) {
		return false
	}
	return until.IsZero() || r.Begin.Before(until)
}

// inDomainTree reports whether name is domain or one of its subdomains.
func inDomainTree(domain, name string) bool {
	name = strings.ToLower(name)
	return name == domain || strings.HasSuffix(name, "."+domain)
}

// rate is part/whole, 0 for an empty whole.
func rate(part, whole int64) float64 {
	if whole == 0 {
		return 0
	}
	return float64(part) / float64(whole)
}

// sortedKeys returns the keys of a set, sorted.
func sortedKeys(set map[string]bool) []string {
	out := make([]string, 0, len(set))
	for k := range set {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// lookUpReverse fills the reverse name, its state and the org of each
// source, summaryPTRParallel at a time.
func lookUpReverse(ctx context.Context, ptr PTRResolver, sources []SourceSummary, timeout time.Duration) {
	sem := make(chan struct{}, summaryPTRParallel)
	var wg sync.WaitGroup
	for i := range sources {
		wg.Add(1)
		sem <- struct{}{}
		go func(src *SourceSummary) {
			defer func() { <-sem; wg.Done() }()
			lctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			src.ReverseName, src.Reverse = reverseName(lctx, ptr, src.IP)
			if src.Reverse == ReverseVerified {
				src.Org = orgOfName(src.ReverseName)
			}
		}(&sources[i])
	}
	wg.Wait()
}

// reverseName returns the reverse name of ip and its state: the first PTR
// name that resolves back to ip (verified), else the first PTR name
// (unverified).
func reverseName(ctx context.Context, ptr PTRResolver, ip netip.Addr) (string, string) {
	names, err := ptr.LookupAddr(ctx, ip.String())
	if err != nil {
		var de *net.DNSError
		if errors.As(err, &de) && de.IsNotFound {
			return "", ReverseNone
		}
		return "", ReverseFailed
	}
	if len(names) == 0 {
		return "", ReverseNone
	}
	var first string
	for i, raw := range names[:min(len(names), summaryMaxPTRNames)] {
		name := domainName(cleanText([]byte(raw)))
		if i == 0 {
			first = name
		}
		if name != "" && resolvesTo(ctx, ptr, name, ip) {
			return name, ReverseVerified
		}
	}
	return first, ReverseUnverified
}

// resolvesTo reports whether name has ip among its addresses.
func resolvesTo(ctx context.Context, ptr PTRResolver, name string, ip netip.Addr) bool {
	addrs, err := ptr.LookupIPAddr(ctx, name)
	if err != nil {
		return false
	}
	for _, a := range addrs {
		if got, ok := netip.AddrFromSlice(a.IP); ok && got.Unmap() == ip {
			return true
		}
	}
	return false
}

// orgOfName is the organizational domain of a host name by the public
// suffix list (mail-ed1-f49.google.com: google.com).
func orgOfName(name string) string {
	org, err := publicsuffix.EffectiveTLDPlusOne(name)
	if err != nil {
		return name
	}
	return org
}

// WriteText renders the summary for a terminal: totals, the reporters, and
// the sources in aligned columns with percentages.
func (s *Summary) WriteText(w io.Writer) error {
	ew := &errWriter{w: w}
	ew.printf("DMARC aggregate reports about %s, %s\n", safeText(s.Domain), summaryPeriod(s.Since, s.Until))
	ew.printf("%d reports from %d reporters: %d messages, %s passed DMARC, %d failed\n",
		s.Reports, len(s.Reporters), s.Messages, percent(s.DMARCPass, s.Messages), s.Messages-s.DMARCPass)
	if len(s.Sources) == 0 {
		ew.printf("\nNo report about this domain in the period.\n")
		return ew.err
	}

	ew.printf("\n")
	tw := tabwriter.NewWriter(ew, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "REPORTER\tREPORTS\tMESSAGES\tDMARC PASS\n")
	for _, r := range s.Reporters {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\n", safeText(r.OrgName), r.Reports, r.Messages, percent(r.DMARCPass, r.Messages))
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	ew.printf("\nSources, failing first:\n")
	tw = tabwriter.NewWriter(ew, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "SOURCE IP\tREVERSE NAME\tORG\tMESSAGES\tDMARC FAIL\tDMARC PASS\tDKIM ALIGNED\tSPF ALIGNED\tNONE/QUAR/REJ\tFROM\tREPORTED BY\n")
	for _, src := range s.Sources {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n",
			src.IP, reverseText(src), safeText(src.Org), src.Messages, src.DMARCFail,
			percent(src.DMARCPass, src.Messages), percent(src.DKIMAlignedPass, src.Messages),
			percent(src.SPFAlignedPass, src.Messages), dispositionText(src.Dispositions),
			listText(src.HeaderFromDomains), listText(src.ReportingOrgs))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	return ew.err
}

// errWriter keeps the first write error, so that rendering code stays
// straight.
type errWriter struct {
	w   io.Writer
	err error
}

// Write writes to the underlying writer unless an earlier write failed.
func (e *errWriter) Write(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	n, err := e.w.Write(p)
	e.err = err
	return n, err
}

func (e *errWriter) printf(format string, args ...any) {
	fmt.Fprintf(e, format, args...)
}

// summaryPeriod words the period of a summary.
func summaryPeriod(since, until time.Time) string {
	const layout = "2006-01-02 15:04 UTC"
	switch {
	case since.IsZero() && until.IsZero():
		return "all reports"
	case until.IsZero():
		return "reports since " + since.UTC().Format(layout)
	case since.IsZero():
		return "reports before " + until.UTC().Format(layout)
	}
	return "reports from " + since.UTC().Format(layout) + " to " + until.UTC().Format(layout)
}

// percent renders part/whole as a percentage with one decimal.
func percent(part, whole int64) string {
	if whole == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f%%", 100*float64(part)/float64(whole))
}

// reverseText renders a reverse name with its state.
func reverseText(src SourceSummary) string {
	switch src.Reverse {
	case ReverseVerified:
		return safeText(src.ReverseName)
	case ReverseUnverified:
		return safeText(src.ReverseName) + " (unverified)"
	}
	return "(" + src.Reverse + ")"
}

// dispositionText renders none/quarantine/reject counts, and the others
// reported (RFC 9990's "pass", say) after them.
func dispositionText(d map[string]int64) string {
	text := fmt.Sprintf("%d/%d/%d", d["none"], d["quarantine"], d["reject"])
	for _, k := range sortedKeys(boolSet(d)) {
		if k != "none" && k != "quarantine" && k != "reject" && d[k] != 0 {
			text += fmt.Sprintf(" %s:%d", safeText(k), d[k])
		}
	}
	return text
}

// boolSet returns the keys of m as a set.
func boolSet(m map[string]int64) map[string]bool {
	set := make(map[string]bool, len(m))
	for k := range m {
		set[k] = true
	}
	return set
}

// listText renders a list compactly: at most three items and a count of
// the rest.
func listText(items []string) string {
	if len(items) == 0 {
		return "-"
	}
	shown := make([]string, 0, 3)
	for _, it := range items[:min(len(items), 3)] {
		shown = append(shown, safeText(it))
	}
	text := strings.Join(shown, ",")
	if len(items) > 3 {
		text += fmt.Sprintf(" +%d", len(items)-3)
	}
	return text
}

// safeText makes a stored string safe for a terminal (it may come from a
// store that another program filled) and keeps tabs out of the columns.
func safeText(s string) string {
	if s == "" {
		return "-"
	}
	return cleanText([]byte(s))
}
