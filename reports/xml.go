package reports

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/net/publicsuffix"
)

// Section names below are RFC 9990's; its section numbers are not cited
// because the published numbering could not be checked here.

// generatorName is report_metadata/generator.
const generatorName = "authmilter"

// Caps on what one value may add to a report. Rows come from a store that
// recorded what remote clients said; a value longer than any real one is
// cut rather than allowed to blow up a report (and its size split).
const (
	// genMaxDomain bounds domain names and selectors (a DNS name has at
	// most 253 octets in text form; a little slack for a trailing dot).
	genMaxDomain = 255
	// genMaxText bounds free text: comments, human_result, org_name,
	// extra_contact_info, email.
	genMaxText = 1024
	// genMaxDKIM is how many DKIM results one record lists: RFC 9990 "DKIM
	// Signatures in Aggregate Reports" says a report SHOULD contain no more
	// than 100 signatures for a given row, in decreasing priority.
	genMaxDKIM = 100
	// genMaxReasons bounds the override reasons of one record.
	genMaxReasons = 10
)

// Meta is the report generator's identity: report_metadata's org_name,
// email and extra_contact_info. Email is also the envelope sender and the
// From of report mail, and its domain names the Mail Receiver in file
// names and Subjects.
type Meta struct {
	OrgName, Email, ExtraContactInfo string
}

// submitter is the Mail Receiver's domain: the domain of Meta.Email.
func (m Meta) submitter() string {
	_, domain, _ := strings.Cut(m.Email, "@")
	return domain
}

// The report document, RFC 9990 "Description of the content XML file", in
// the namespace that IANA registered for it.
// The element order follows the tables: first level elements, record,
// policy_evaluated and auth_results MUST be in the order listed.
type genFeedback struct {
	XMLName  xml.Name    `xml:"urn:ietf:params:xml:ns:dmarc-2.0 feedback"`
	Version  string      `xml:"version"`
	Metadata genMetadata `xml:"report_metadata"`
	Policy   genPolicy   `xml:"policy_published"`
	Records  []genRecord `xml:"record"`
}

type genMetadata struct {
	OrgName          string       `xml:"org_name"`
	Email            string       `xml:"email"`
	ExtraContactInfo string       `xml:"extra_contact_info,omitempty"`
	ReportID         string       `xml:"report_id"`
	DateRange        genDateRange `xml:"date_range"`
	Generator        string       `xml:"generator"`
}

type genDateRange struct {
	Begin int64 `xml:"begin"`
	End   int64 `xml:"end"`
}

// genPolicy is policy_published. The schema has no psd element, so
// Policy.PSD is not reported.
type genPolicy struct {
	Domain          string `xml:"domain"`
	DiscoveryMethod string `xml:"discovery_method,omitempty"`
	P               string `xml:"p"`
	SP              string `xml:"sp,omitempty"`
	NP              string `xml:"np,omitempty"`
	FO              string `xml:"fo,omitempty"`
	ADKIM           string `xml:"adkim,omitempty"`
	ASPF            string `xml:"aspf,omitempty"`
	Testing         string `xml:"testing,omitempty"`
}

type genRecord struct {
	Row         genRow         `xml:"row"`
	Identifiers genIdentifiers `xml:"identifiers"`
	AuthResults genAuthResults `xml:"auth_results"`
}

type genRow struct {
	SourceIP        string             `xml:"source_ip"`
	Count           int64              `xml:"count"`
	PolicyEvaluated genPolicyEvaluated `xml:"policy_evaluated"`
}

type genPolicyEvaluated struct {
	Disposition string      `xml:"disposition"`
	DKIM        string      `xml:"dkim"`
	SPF         string      `xml:"spf"`
	Reasons     []genReason `xml:"reason"`
}

type genReason struct {
	Type    string `xml:"type"`
	Comment string `xml:"comment,omitempty"`
}

// genIdentifiers: envelope_from is written even when empty, since RFC
// 9990 says it MAY be present but empty for a null reverse-path.
type genIdentifiers struct {
	HeaderFrom   string `xml:"header_from"`
	EnvelopeFrom string `xml:"envelope_from"`
	EnvelopeTo   string `xml:"envelope_to,omitempty"`
}

type genAuthResults struct {
	DKIM []genDKIM `xml:"dkim"`
	SPF  *genSPF   `xml:"spf"`
}

type genDKIM struct {
	Domain      string `xml:"domain"`
	Selector    string `xml:"selector"`
	Result      string `xml:"result"`
	HumanResult string `xml:"human_result,omitempty"`
}

type genSPF struct {
	Domain string `xml:"domain"`
	Scope  string `xml:"scope,omitempty"`
	Result string `xml:"result"`
}

// BuildReport renders one aggregate report: the XML document in RFC
// 9990's format (namespace urn:ietf:params:xml:ns:dmarc-2.0) about policy
// p, with one record per row, for the reporting period from begin to end
// (date_range, UNIX seconds, as given). Every value is escaped; values
// that the schema restricts are mapped to its nearest valid value (see
// the gen* mapping functions), so the document always validates. It
// fails when there are no rows (a report has at least one record) or the
// Meta lacks an org name or email.
func BuildReport(m Meta, reportID string, p Policy, rows []Row, begin, end time.Time) ([]byte, error) {
	if len(rows) == 0 {
		return nil, errors.New("reports: build report: no rows (a report needs at least one record)")
	}
	if strings.TrimSpace(m.OrgName) == "" || strings.TrimSpace(m.Email) == "" {
		return nil, errors.New("reports: build report: org_name and email are required")
	}
	doc := genFeedback{
		Version: "1.0",
		Metadata: genMetadata{
			OrgName:          genClip(m.OrgName, genMaxText),
			Email:            genClip(m.Email, genMaxText),
			ExtraContactInfo: genClip(m.ExtraContactInfo, genMaxText),
			ReportID:         genClip(reportID, genMaxText),
			DateRange:        genDateRange{Begin: begin.Unix(), End: end.Unix()},
			Generator:        generatorName,
		},
		Policy:  genPolicyOf(p),
		Records: make([]genRecord, 0, len(rows)),
	}
	for i := range rows {
		doc.Records = append(doc.Records, genRecordOf(&rows[i]))
	}
	var buf bytes.Buffer
	buf.WriteString(xml.Header)
	enc := xml.NewEncoder(&buf)
	enc.Indent("", "  ")
	if err := enc.Encode(doc); err != nil {
		return nil, fmt.Errorf("reports: build report for %q: %w", genClip(p.Domain, genMaxDomain), err)
	}
	buf.WriteByte('\n')
	return buf.Bytes(), nil
}

// genPolicyOf maps policy_published. p is required: a missing or invalid
// p is reported as "none", which is how RFC 9989 treats a record without
// a valid p that still asks for reports. Optional tags with values the
// schema does not know are left out rather than invented.
func genPolicyOf(p Policy) genPolicy {
	return genPolicy{
		Domain:          genClip(p.Domain, genMaxDomain),
		DiscoveryMethod: genOneOf(p.DiscoveryMethod, "", "psl", "treewalk"),
		P:               genOneOf(p.P, "none", "none", "quarantine", "reject"),
		SP:              genOneOf(p.SP, "", "none", "quarantine", "reject"),
		NP:              genOneOf(p.NP, "", "none", "quarantine", "reject"),
		FO:              genClip(p.FO, genMaxDomain),
		ADKIM:           genOneOf(p.ADKIM, "", "r", "s"),
		ASPF:            genOneOf(p.ASPF, "", "r", "s"),
		Testing:         genOneOf(p.Testing, "", "y", "n"),
	}
}

func genRecordOf(r *Row) genRecord {
	rec := genRecord{
		Row: genRow{
			SourceIP: genSourceIP(r),
			Count:    max(r.Count, 0),
			PolicyEvaluated: genPolicyEvaluated{
				Disposition: genOneOf(r.Disposition, "none", "none", "pass", "quarantine", "reject"),
				DKIM:        genOneOf(r.DKIMAligned, "fail", "pass", "fail"),
				SPF:         genOneOf(r.SPFAligned, "fail", "pass", "fail"),
			},
		},
		Identifiers: genIdentifiers{
			HeaderFrom:   genClip(r.HeaderFrom, genMaxDomain),
			EnvelopeFrom: genClip(r.EnvelopeFrom, genMaxDomain),
			EnvelopeTo:   genClip(r.EnvelopeTo, genMaxDomain),
		},
	}
	for i, o := range r.Overrides {
		if i == genMaxReasons {
			break
		}
		rec.Row.PolicyEvaluated.Reasons = append(rec.Row.PolicyEvaluated.Reasons, genReasonOf(o))
	}
	for _, d := range genDKIMByPriority(r.HeaderFrom, r.DKIM) {
		rec.AuthResults.DKIM = append(rec.AuthResults.DKIM, genDKIMOf(d))
	}
	if len(r.SPF) > 0 {
		rec.AuthResults.SPF = genSPFOf(r.SPF[0])
	}
	return rec
}

// genSourceIP is row/source_ip in RFC 3986 §3.2.2 form (IPv4-mapped
// addresses as IPv4). A row without a valid address (a store fault) gets
// the unspecified address rather than text the schema's users cannot
// parse.
func genSourceIP(r *Row) string {
	if !r.SourceIP.IsValid() {
		return "0.0.0.0"
	}
	return r.SourceIP.Unmap().WithZone("").String()
}

// genReasonOf maps an override to PolicyOverrideType (RFC 9990 "Policy
// Override Reason"); an unknown type becomes "other" with the original
// type kept in the comment.
func genReasonOf(o Override) genReason {
	typ := genOneOf(o.Type, "", "local_policy", "mailing_list", "other", "policy_test_mode", "trusted_forwarder")
	comment := o.Comment
	if typ == "" {
		typ = "other"
		comment = strings.TrimSpace("type " + strconv.Quote(genClip(o.Type, 64)) + ": " + comment)
	}
	return genReason{Type: typ, Comment: genClip(comment, genMaxText)}
}

// genDKIMOf maps one DKIM result. Results outside RFC 8601 §2.7.1 are
// mapped to their RFC 8601 names where one exists (the RFC 5451 "hardfail",
// "tempfail", "permfail"), else to "neutral" ("the signature could not be
// processed") with the original in human_result.
func genDKIMOf(d DKIMAuth) genDKIM {
	human := d.HumanResult
	res := strings.ToLower(strings.TrimSpace(d.Result))
	switch res {
	case "none", "pass", "fail", "policy", "neutral", "temperror", "permerror":
	case "hardfail":
		res = "fail"
	case "tempfail":
		res = "temperror"
	case "permfail":
		res = "permerror"
	default:
		human = strings.TrimSpace("result " + strconv.Quote(genClip(d.Result, 64)) + " " + human)
		res = "neutral"
	}
	return genDKIM{
		Domain:      genClip(d.Domain, genMaxDomain),
		Selector:    genClip(d.Selector, genMaxDomain),
		Result:      res,
		HumanResult: genClip(human, genMaxText),
	}
}

// genSPFOf maps the SPF result. The schema's only scope is "mfrom" (RFC
// 9990: only the MAIL FROM identity is used in DMARC), so a HELO check is
// reported without a scope. Results outside RFC 8601 §2.7.2 take their
// RFC 8601 name ("hardfail" is fail, "error"/"tempfail" temperror,
// "unknown"/"permfail" permerror) or else "neutral".
func genSPFOf(s SPFAuth) *genSPF {
	res := strings.ToLower(strings.TrimSpace(s.Result))
	switch res {
	case "none", "pass", "fail", "softfail", "policy", "neutral", "temperror", "permerror":
	case "hardfail":
		res = "fail"
	case "error", "tempfail":
		res = "temperror"
	case "unknown", "permfail":
		res = "permerror"
	default:
		res = "neutral"
	}
	scope := ""
	if strings.EqualFold(s.Scope, "mfrom") {
		scope = "mfrom"
	}
	return &genSPF{Domain: genClip(s.Domain, genMaxDomain), Scope: scope, Result: res}
}

// genDKIMByPriority orders DKIM results as RFC 9990 "DKIM Signatures in
// Aggregate Reports" prefers them and keeps the first genMaxDKIM: passing
// signatures in strict alignment with the From domain, then in relaxed
// alignment (same organizational domain, by the public suffix list), then
// other passing ones, then the rest. The order within a class is kept.
func genDKIMByPriority(headerFrom string, sigs []DKIMAuth) []DKIMAuth {
	if len(sigs) <= 1 {
		return sigs
	}
	from := strings.ToLower(strings.TrimSuffix(headerFrom, "."))
	fromOrg := genOrgDomain(from)
	rank := func(d DKIMAuth) int {
		if !strings.EqualFold(strings.TrimSpace(d.Result), "pass") {
			return 3
		}
		dom := strings.ToLower(strings.TrimSuffix(d.Domain, "."))
		switch {
		case dom == from:
			return 0
		case genOrgDomain(dom) == fromOrg:
			return 1
		}
		return 2
	}
	out := slices.Clone(sigs)
	slices.SortStableFunc(out, func(a, b DKIMAuth) int { return rank(a) - rank(b) })
	if len(out) > genMaxDKIM {
		out = out[:genMaxDKIM]
	}
	return out
}

// genOrgDomain approximates a domain's Organizational Domain by the public
// suffix list (publicsuffix.EffectiveTLDPlusOne, RFC 7489's method). RFC
// 9989 finds it by the DNS Tree Walk instead; for deciding whether two
// names belong to one organization, the list is a close and DNS-free
// approximation. A name that is itself a public suffix (or not a valid
// name) is its own organizational domain.
func genOrgDomain(name string) string {
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	if org, err := publicsuffix.EffectiveTLDPlusOne(name); err == nil {
		return org
	}
	return name
}

// genOneOf returns v lowercased when it is one of allowed, else def.
func genOneOf(v, def string, allowed ...string) string {
	v = strings.ToLower(strings.TrimSpace(v))
	if slices.Contains(allowed, v) {
		return v
	}
	return def
}

// genClip makes s safe to report: invalid UTF-8 replaced, cut to at most
// n bytes on a character boundary. Characters that XML 1.0 cannot carry
// (control characters) are replaced by encoding/xml when it escapes.
func genClip(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
}
