package policy

import (
	"net/netip"
	"strings"
	"time"

	"github.com/authmilter/authmilter/policy/dmarc"
	"github.com/authmilter/authmilter/policy/mailaddr"
)

// Evaluation is one inbound DMARC evaluation as an aggregate report
// (RFC 9990 §2.1) needs it. It is made for every inbound message whose
// From domain has a DMARC Policy Record, and handed to the daemon in the
// Decision; the reports package records it. It holds no message content
// beyond the domains and the client's address.
type Evaluation struct {
	// Time is when the evaluation finished.
	Time time.Time
	// QueueID is the MTA's queue ID, for logs.
	QueueID string
	// PolicyDomain is the reporting domain: where the DMARC Policy Record
	// that applied was found (policy_published/domain).
	PolicyDomain string
	// HeaderFrom is the Author Domain (identifiers/header_from).
	HeaderFrom string
	// SourceIP is the SMTP client's address (row/source_ip).
	SourceIP netip.Addr
	// EnvelopeFrom is the RFC 5321 MAIL FROM domain, empty for a null
	// sender (identifiers/envelope_from).
	EnvelopeFrom string
	// EnvelopeTo is the domain of the first recipient
	// (identifiers/envelope_to).
	EnvelopeTo string
	// Helo is the HELO/EHLO name the client gave.
	Helo string
	// SPF is the SPF check that DMARC used (auth_results/spf).
	SPF SPFEvaluation
	// DKIM holds every DKIM signature verified (auth_results/dkim).
	DKIM []DKIMEvaluation
	// Published is the Policy Record that applied (policy_published).
	Published PublishedPolicy
	// DiscoveryMethod is "treewalk" (RFC 9989) or "psl" (RFC 7489).
	DiscoveryMethod string
	// Result is the DMARC result: pass, fail, temperror or permerror.
	Result string
	// DKIMAligned and SPFAligned are "pass" or "fail": whether an aligned
	// identifier passed (policy_evaluated/dkim, spf).
	DKIMAligned, SPFAligned string
	// Disposition is the policy actually applied to the message: none,
	// quarantine or reject (policy_evaluated/disposition).
	Disposition string
	// Overrides explain a Disposition that differs from the policy that
	// the record asks for (policy_evaluated/reason).
	Overrides []Override
	// IsReport is true when the message is itself a DMARC report (its
	// Subject starts "Report Domain:" as RFC 9990 §4.4 names report mail,
	// or it is a multipart/report): reports about reports are never made,
	// so recorders skip it.
	IsReport bool
}

// SPFEvaluation is the SPF result that DMARC used.
type SPFEvaluation struct {
	// Domain is the domain checked.
	Domain string
	// Scope is "mfrom" or "helo".
	Scope string
	// Result is the RFC 7208 result.
	Result string
}

// DKIMEvaluation is one verified DKIM signature.
type DKIMEvaluation struct {
	// Domain and Selector are the signature's d= and s=.
	Domain, Selector string
	// Result is the RFC 8601 result (pass, fail, neutral, policy,
	// temperror, permerror).
	Result string
	// HumanResult is the reason of a failure, for human_result.
	HumanResult string
}

// PublishedPolicy is a DMARC Policy Record's tags as RFC 9990's
// policy_published reports them.
type PublishedPolicy struct {
	// P, SP and NP are the policies; SP and NP empty when absent.
	P, SP, NP string
	// PSD is "y", "n" or "u"; Testing is "y" or "n" (t, or legacy pct=0).
	PSD, Testing string
	// ADKIM and ASPF are "r" or "s".
	ADKIM, ASPF string
	// FO is the fo tag as published, e.g. "0" or "1:d".
	FO string
	// RUA are the aggregate report URIs, and RUALimits their size limits
	// in bytes (0: none).
	RUA       []string
	RUALimits []int64
}

// Override types of policy_evaluated/reason (RFC 9990 §2.1,
// PolicyOverrideType).
const (
	OverrideLocalPolicy    = "local_policy"
	OverridePolicyTestMode = "policy_test_mode"
)

// Override is one reason why the applied disposition differs from the
// published policy.
type Override struct {
	// Type is one of RFC 9990's PolicyOverrideType values.
	Type string
	// Comment says more, for people.
	Comment string
}

// newEvaluation builds the Evaluation of a DMARC result that found a
// Policy Record; nil when none applied (nothing to report to anyone).
func (m *Message) newEvaluation(res *dmarc.Result, sigs []DKIMResult, spfRes spfOutcome, applied string, now time.Time) *Evaluation {
	if res == nil || res.Record == nil || res.PolicyDomain == "" {
		return nil
	}
	rec := res.Record
	e := &Evaluation{
		Time:            now.UTC(),
		QueueID:         m.env.QueueID,
		PolicyDomain:    res.PolicyDomain,
		HeaderFrom:      res.FromDomain,
		SourceIP:        m.env.ClientIP.Unmap(),
		Helo:            strings.ToLower(strings.TrimSuffix(m.env.Helo, ".")),
		DiscoveryMethod: m.p.dmarcMode().String(),
		Result:          res.Outcome,
		DKIMAligned:     passFail(res.AlignedDKIM),
		SPFAligned:      passFail(res.AlignedSPF),
		Disposition:     applied,
		Published: PublishedPolicy{
			P: rec.P, SP: rec.SP, NP: rec.NP, PSD: rec.PSD, Testing: yesNo(rec.Testing()),
			ADKIM: rec.ADKIM, ASPF: rec.ASPF, FO: strings.Join(rec.FO, ":"),
			RUA: rec.RUA, RUALimits: rec.RUALimits,
		},
	}
	e.IsReport = isReportMail(m.header)
	if _, d, ok := spfSender(m.env.MailFrom); ok && m.env.MailFrom != "" {
		e.EnvelopeFrom = d
	}
	if len(m.env.Rcpts) > 0 {
		if d, err := mailaddr.AddressDomain(strings.Trim(m.env.Rcpts[0], "<> ")); err == nil {
			e.EnvelopeTo = d
		}
	}
	scope := "mfrom"
	if spfRes.identity == "helo" {
		scope = "helo"
	}
	e.SPF = SPFEvaluation{Domain: spfRes.domain, Scope: scope, Result: spfRes.result}
	for _, s := range sigs {
		e.DKIM = append(e.DKIM, DKIMEvaluation{Domain: s.Domain, Selector: s.Selector, Result: s.Result, HumanResult: s.Reason})
	}
	// With enforcement on, a lower disposition comes from an override
	// (ARC) that inbound.go reports itself.
	if res.Outcome == dmarc.OutcomeFail && res.Disposition != applied && !m.p.cfg.DMARC.Enforce {
		e.Overrides = append(e.Overrides, Override{Type: OverrideLocalPolicy, Comment: "DMARC enforcement is off (dmarc.enforce = false)"})
	}
	if res.Outcome == dmarc.OutcomeFail && res.Testing && res.Policy != "none" {
		e.Overrides = append(e.Overrides, Override{Type: OverridePolicyTestMode, Comment: "t=y: policy applied one level lower"})
	}
	return e
}

func (p *Policy) dmarcMode() dmarc.Mode {
	if p.cfg.DMARC.Mode == "psl" {
		return dmarc.PSL
	}
	return dmarc.TreeWalk
}

func passFail(ok bool) string {
	if ok {
		return "pass"
	}
	return "fail"
}

func yesNo(ok bool) string {
	if ok {
		return "y"
	}
	return "n"
}

// isReportMail tells whether a message looks like DMARC report mail: an
// aggregate report's Subject ("Report Domain: ... Submitter: ...", RFC
// 9990 §4.4) or a failure report's multipart/report Content-Type.
func isReportMail(header []HeaderField) bool {
	for _, v := range fieldValues(header, "Subject") {
		const prefix = "Report Domain:"
		if v = strings.TrimSpace(v); len(v) >= len(prefix) && strings.EqualFold(v[:len(prefix)], prefix) {
			return true
		}
	}
	for _, v := range fieldValues(header, "Content-Type") {
		if strings.HasPrefix(strings.ToLower(strings.TrimSpace(v)), "multipart/report") {
			return true
		}
	}
	return false
}
