package reports

import (
	"strings"
	"time"
	"unicode/utf8"

	"github.com/authmilter/authmilter/policy"
)

// Limits on what one row, policy or imported report may put in the store.
// Everything recorded comes from the network (a client's HELO, a
// signature's d= and s=, an imported report's text), so every string and
// list is bounded on the way in: longer values are cut, not refused, so
// that one odd message still counts.
const (
	// maxNameBytes bounds domains, selectors and HELO names: a DNS name
	// has at most 255 octets (RFC 1035 §2.3.4).
	maxNameBytes = 255
	// maxHumanBytes bounds human_result and override comments.
	maxHumanBytes = 256
	// maxTokenBytes bounds results, dispositions, scopes and policy tags.
	maxTokenBytes = 32
	// maxURIBytes bounds one rua URI.
	maxURIBytes = 1024
	// maxRUA bounds the rua URIs kept per policy.
	maxRUA = 16
	// maxDKIMResults, maxSPFResults and maxOverrides bound the lists of
	// one row.
	maxDKIMResults = 32
	maxSPFResults  = 8
	maxOverrides   = 8
	// maxMetaBytes bounds an imported report's org_name, email and
	// report_id; maxExtraBytes its extra_contact_info and each error.
	maxMetaBytes  = 256
	maxExtraBytes = 1024
	// maxFeedbackErrors bounds the report_metadata/error entries kept.
	maxFeedbackErrors = 32
	// maxSentDetailBytes bounds Sent.Detail; maxSentDestinations the
	// destinations of one outcome.
	maxSentDetailBytes  = 4096
	maxSentDestinations = 64
)

// EntryFromEvaluation converts one policy.Evaluation to an Entry of Count
// 1; ok is false for evaluations that are not recorded: nil, report mail
// itself (IsReport: reports about reports are never made, RFC 9990 §4.4),
// no PolicyDomain, or no valid SourceIP. An Evaluation without a Time is
// taken as happening now.
func EntryFromEvaluation(e *policy.Evaluation) (Entry, bool) {
	if e == nil || e.IsReport || e.PolicyDomain == "" || !e.SourceIP.IsValid() {
		return Entry{}, false
	}
	seen := e.Time
	if seen.IsZero() {
		seen = time.Now()
	}
	seen = seen.UTC()
	row := Row{
		Domain:       e.PolicyDomain,
		Day:          DayOf(seen),
		SourceIP:     e.SourceIP.Unmap(),
		Count:        1,
		HeaderFrom:   e.HeaderFrom,
		EnvelopeFrom: e.EnvelopeFrom,
		EnvelopeTo:   e.EnvelopeTo,
		Helo:         e.Helo,
		Disposition:  e.Disposition,
		DKIMAligned:  e.DKIMAligned,
		SPFAligned:   e.SPFAligned,
	}
	for _, o := range e.Overrides {
		row.Overrides = append(row.Overrides, Override{Type: o.Type, Comment: o.Comment})
	}
	for _, d := range e.DKIM {
		row.DKIM = append(row.DKIM, DKIMAuth{Domain: d.Domain, Selector: d.Selector, Result: d.Result, HumanResult: d.HumanResult})
	}
	if e.SPF.Domain != "" || e.SPF.Result != "" {
		row.SPF = []SPFAuth{{Domain: e.SPF.Domain, Scope: e.SPF.Scope, Result: e.SPF.Result}}
	}
	pub := e.Published
	p := Policy{
		Domain:          e.PolicyDomain,
		DiscoveryMethod: e.DiscoveryMethod,
		P:               pub.P, SP: pub.SP, NP: pub.NP, PSD: pub.PSD, Testing: pub.Testing,
		ADKIM: pub.ADKIM, ASPF: pub.ASPF, FO: pub.FO,
		RUA:       append([]string(nil), pub.RUA...),
		RUALimits: append([]int64(nil), pub.RUALimits...),
	}
	return Entry{Row: boundRow(row), Policy: boundPolicy(p), Seen: seen}, true
}

// boundRow cuts a row's strings and lists to the store's limits and makes
// empty lists nil, so that a row's key and its round trip do not depend
// on how an empty list was spelt.
func boundRow(r Row) Row {
	r.Domain = boundText(r.Domain, maxNameBytes)
	r.HeaderFrom = boundText(r.HeaderFrom, maxNameBytes)
	r.EnvelopeFrom = boundText(r.EnvelopeFrom, maxNameBytes)
	r.EnvelopeTo = boundText(r.EnvelopeTo, maxNameBytes)
	r.Helo = boundText(r.Helo, maxNameBytes)
	r.Disposition = boundText(r.Disposition, maxTokenBytes)
	r.DKIMAligned = boundText(r.DKIMAligned, maxTokenBytes)
	r.SPFAligned = boundText(r.SPFAligned, maxTokenBytes)
	r.Overrides = boundList(r.Overrides, maxOverrides, func(o Override) Override {
		return Override{Type: boundText(o.Type, maxTokenBytes), Comment: boundText(o.Comment, maxHumanBytes)}
	})
	r.DKIM = boundList(r.DKIM, maxDKIMResults, func(d DKIMAuth) DKIMAuth {
		return DKIMAuth{
			Domain: boundText(d.Domain, maxNameBytes), Selector: boundText(d.Selector, maxNameBytes),
			Result: boundText(d.Result, maxTokenBytes), HumanResult: boundText(d.HumanResult, maxHumanBytes),
		}
	})
	r.SPF = boundList(r.SPF, maxSPFResults, func(s SPFAuth) SPFAuth {
		return SPFAuth{Domain: boundText(s.Domain, maxNameBytes), Scope: boundText(s.Scope, maxTokenBytes), Result: boundText(s.Result, maxTokenBytes)}
	})
	return r
}

// boundPolicy cuts a policy's strings and lists to the store's limits. A
// RUALimits longer than RUA is cut to it.
func boundPolicy(p Policy) Policy {
	p.Domain = boundText(p.Domain, maxNameBytes)
	p.DiscoveryMethod = boundText(p.DiscoveryMethod, maxTokenBytes)
	for _, tag := range []*string{&p.P, &p.SP, &p.NP, &p.PSD, &p.Testing, &p.ADKIM, &p.ASPF, &p.FO} {
		*tag = boundText(*tag, maxTokenBytes)
	}
	p.RUA = boundList(p.RUA, maxRUA, func(u string) string { return boundText(u, maxURIBytes) })
	p.RUALimits = boundList(p.RUALimits, len(p.RUA), func(n int64) int64 { return n })
	return p
}

// boundFeedback cuts an imported report's metadata, policy and rows to the
// store's limits.
func boundFeedback(f Feedback) Feedback {
	f.OrgName = boundText(f.OrgName, maxMetaBytes)
	f.Email = boundText(f.Email, maxMetaBytes)
	f.ReportID = boundText(f.ReportID, maxMetaBytes)
	f.ExtraContactInfo = boundText(f.ExtraContactInfo, maxExtraBytes)
	f.Errors = boundList(f.Errors, maxFeedbackErrors, func(s string) string { return boundText(s, maxExtraBytes) })
	f.Policy = boundPolicy(f.Policy)
	rows := make([]Row, len(f.Rows))
	for i, r := range f.Rows {
		rows[i] = boundRow(r)
	}
	f.Rows = rows
	return f
}

// boundSent cuts an outcome's strings and destinations to the store's
// limits.
func boundSent(s Sent) Sent {
	s.Domain = boundText(s.Domain, maxNameBytes)
	s.ReportID = boundText(s.ReportID, maxMetaBytes)
	s.Owner = boundText(s.Owner, maxMetaBytes)
	s.Status = boundText(s.Status, maxTokenBytes)
	s.Destinations = boundList(s.Destinations, maxSentDestinations, func(u string) string { return boundText(u, maxURIBytes) })
	s.Detail = boundText(s.Detail, maxSentDetailBytes)
	return s
}

// boundText makes s storable text of at most max bytes: invalid UTF-8
// becomes U+FFFD and NUL bytes go (PostgreSQL's text refuses both), and
// the result is cut at a character boundary.
func boundText(s string, limit int) string {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	if strings.IndexByte(s, 0) >= 0 {
		s = strings.ReplaceAll(s, "\x00", "")
	}
	if len(s) <= limit {
		return s
	}
	cut := limit
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
}

// boundList keeps the first limit elements of list, each passed through
// bound; an empty list becomes nil.
func boundList[T any](list []T, limit int, bound func(T) T) []T {
	if len(list) > limit {
		list = list[:limit]
	}
	if len(list) == 0 {
		return nil
	}
	out := make([]T, len(list))
	for i, v := range list {
		out[i] = bound(v)
	}
	return out
}
