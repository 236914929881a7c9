package reports

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"mime"
	"net/mail"
	"strconv"
	"strings"
	"time"
)

// FileName is RFC 9990's name for a gzip'd report file ("Report
// Delivery", "Email"):
//
//	receiver "!" policy-domain "!" begin-timestamp "!" end-timestamp [ "!" unique-id ] ".xml.gz"
//
// receiver is the Mail Receiver's domain (Meta.Email's), begin and end
// the date_range, uniqueID the report_id (RFC 9990 asks the unique-id and
// the Report-ID to be identical; "" leaves it out). Domains are lowercased
// and reduced to letters, digits, '.', '-' and '_', and the unique-id to
// letters and digits, so a hostile domain from the store can never put a
// path separator or a leading dot into the name: the result is safe as a
// file name in any directory.
func FileName(receiver, policyDomain string, begin, end time.Time, uniqueID string) string {
	var b strings.Builder
	b.WriteString(fileDomain(receiver))
	b.WriteByte('!')
	b.WriteString(fileDomain(policyDomain))
	b.WriteByte('!')
	b.WriteString(strconv.FormatInt(begin.Unix(), 10))
	b.WriteByte('!')
	b.WriteString(strconv.FormatInt(end.Unix(), 10))
	if id := alnumOnly(uniqueID); id != "" {
		b.WriteByte('!')
		b.WriteString(id)
	}
	b.WriteString(".xml.gz")
	return b.String()
}

// fileDomain reduces a domain to file-name-safe characters (see FileName);
// an empty result is "unknown".
func fileDomain(d string) string {
	d = strings.ToLower(strings.TrimSuffix(d, "."))
	out := make([]byte, 0, min(len(d), genMaxDomain))
	for i := 0; i < len(d) && len(out) < genMaxDomain; i++ {
		c := d[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_':
		case c == '.' && len(out) > 0 && out[len(out)-1] != '.':
		default:
			c = '_'
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return "unknown"
	}
	return string(out)
}

func alnumOnly(s string) string {
	var b strings.Builder
	for i := 0; i < len(s) && b.Len() < 64; i++ {
		if c := s[i]; c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
			b.WriteByte(c)
		}
	}
	return b.String()
}

// ReportMail is what ReportMessage puts into one report message.
type ReportMail struct {
	// Meta is the generator: From, Submitter, and the text part.
	Meta Meta
	// To is the recipient address (a plain addr-spec).
	To string
	// Domain is the policy domain the report is about.
	Domain string
	// ReportID is the report_id, repeated as the Subject's Report-ID and
	// in the Message-ID.
	ReportID string
	// Begin and End are the date_range, for the text part.
	Begin, End time.Time
	// FileName is the attachment's name (see FileName).
	FileName string
	// Report is the gzip'd XML report.
	Report []byte
	// Date is the message's Date.
	Date time.Time
}

// ReportMessage builds the whole report message (RFC 9990 "Report
// Delivery", "Email"): an RFC 5322 / MIME message whose Subject is
// "Report Domain: <policy domain> Submitter: <receiver> Report-ID: <id>"
// (folded as the RFC's example), with a short text/plain part for people
// and the report as an application/gzip attachment, base64, with a
// Content-Disposition naming the file. Lines end in CRLF. Header values
// that come from the store (the domain) are reduced to safe characters,
// so they can never add a header field or break the Subject's syntax.
func ReportMessage(r ReportMail) ([]byte, error) {
	from, err := plainAddress(r.Meta.Email)
	if err != nil {
		return nil, fmt.Errorf("reports: report message: from: %w", err)
	}
	to, err := plainAddress(r.To)
	if err != nil {
		return nil, fmt.Errorf("reports: report message: to: %w", err)
	}
	if len(r.Report) == 0 {
		return nil, errors.New("reports: report message: empty report")
	}
	domain := headerDomain(r.Domain)
	submitter := headerDomain(r.Meta.submitter())
	id := alnumOnly(r.ReportID)
	if id == "" {
		return nil, fmt.Errorf("reports: report message: report ID %q has no letters or digits", genClip(r.ReportID, 64))
	}
	fileName := r.FileName
	if fileName == "" || strings.ContainsAny(fileName, "\"\\\r\n/") {
		return nil, fmt.Errorf("reports: report message: bad file name %q", genClip(fileName, 300))
	}
	boundary := "=_authmilter_" + id

	var b bytes.Buffer
	header := func(name, value string) {
		b.WriteString(name)
		b.WriteString(": ")
		b.WriteString(value)
		b.WriteString("\r\n")
	}
	fromAddr := mail.Address{Name: headerText(r.Meta.OrgName), Address: from}
	header("From", fromAddr.String())
	header("To", "<"+to+">")
	// RFC 9990: dmarc-subject = "Report" 1*FWS "Domain:" 1*FWS domain-name
	// 1*FWS "Submitter:" 1*FWS domain-name 1*FWS [ "Report-ID:" 1*FWS ridtxt ].
	header("Subject", "Report Domain: "+domain+"\r\n Submitter: "+submitter+"\r\n Report-ID: <"+id+">")
	header("Date", r.Date.UTC().Format(time.RFC1123Z))
	// RFC 9990 lets the Message-ID carry the report's ridtxt.
	header("Message-ID", "<"+id+"@"+submitter+">")
	// RFC 3834: machine-generated, so no auto-replies to it.
	header("Auto-Submitted", "auto-generated")
	header("MIME-Version", "1.0")
	header("Content-Type", `multipart/mixed; boundary="`+boundary+`"`)
	b.WriteString("\r\n")
	b.WriteString("This is a multi-part message in MIME format.\r\n")

	b.WriteString("\r\n--" + boundary + "\r\n")
	header("Content-Type", "text/plain; charset=us-ascii")
	header("Content-Transfer-Encoding", "7bit")
	b.WriteString("\r\n")
	fmt.Fprintf(&b, "This is a DMARC aggregate report (RFC 9990) for the domain %s\r\n", domain)
	fmt.Fprintf(&b, "from %s, covering %s to %s UTC.\r\n", submitter,
		r.Begin.UTC().Format("2006-01-02 15:04:05"), r.End.UTC().Format("2006-01-02 15:04:05"))
	fmt.Fprintf(&b, "Report-ID: %s\r\n", id)
	b.WriteString("The report is the attached gzip'd XML file.\r\n")

	b.WriteString("\r\n--" + boundary + "\r\n")
	header("Content-Type", mime.FormatMediaType("application/gzip", map[string]string{"name": fileName}))
	header("Content-Transfer-Encoding", "base64")
	header("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": fileName}))
	b.WriteString("\r\n")
	writeBase64Lines(&b, r.Report)
	b.WriteString("\r\n--" + boundary + "--\r\n")
	return b.Bytes(), nil
}

// writeBase64Lines writes data in base64, 76 characters a line (RFC 2045
// §6.8).
func writeBase64Lines(b *bytes.Buffer, data []byte) {
	enc := base64.StdEncoding.EncodeToString(data)
	for len(enc) > 76 {
		b.WriteString(enc[:76])
		b.WriteString("\r\n")
		enc = enc[76:]
	}
	b.WriteString(enc)
}

// headerDomain makes a domain safe for a header field: lowercased, at most
// 253 characters, and only letters, digits, '.', '-' and '_' (others,
// CR and LF included, become '_'); empty is "unknown".
func headerDomain(d string) string {
	d = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(d), "."))
	out := make([]byte, 0, min(len(d), 253))
	for i := 0; i < len(d) && len(out) < 253; i++ {
		c := d[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			c = '_'
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return "unknown"
	}
	return string(out)
}

// headerText makes free text (the org name) one line of printable
// characters, at most 200 bytes; mail.Address encodes what is not ASCII.
func headerText(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, genClip(s, 200))
	return strings.TrimSpace(s)
}

// plainAddress checks that a is a plain addr-spec (no display name, no
// comments, no control characters or spaces, ASCII) and returns it.
func plainAddress(a string) (string, error) {
	if a == "" || len(a) > 320 {
		return "", fmt.Errorf("address %q: empty or too long", genClip(a, 64))
	}
	for i := 0; i < len(a); i++ {
		if c := a[i]; c <= ' ' || c >= 0x7f || c == '<' || c == '>' || c == '(' || c == ')' || c == ',' || c == ';' {
			return "", fmt.Errorf("address %q: character 0x%02x not allowed", genClip(a, 64), c)
		}
	}
	p, err := mail.ParseAddress(a)
	if err != nil || p.Name != "" || p.Address != a {
		return "", fmt.Errorf("address %q is not a plain mail address", genClip(a, 64))
	}
	return a, nil
}

// gzipReport compresses an XML report. The gzip header names the XML file
// and carries no time, so the same report always compresses to the same
// bytes.
func gzipReport(doc []byte, xmlName string) ([]byte, error) {
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	zw.Name = xmlName
	if _, err := zw.Write(doc); err != nil {
		return nil, fmt.Errorf("reports: gzip report: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("reports: gzip report: %w", err)
	}
	return b.Bytes(), nil
}

// reportIDLen is the length of every report_id: 8 digits of the day and 16
// hex digits.
const reportIDLen = 24

// reportIDFor derives a report_id from the report's content: the UTC day
// (YYYYMMDD) and 64 bits of the SHA-256 of the policy domain and the XML
// built with a placeholder ID. Letters and digits only, since RFC 9990
// wants the Report-ID and the file name's unique-id (1*(ALPHA / DIGIT))
// identical. The same report is always the same ID, so a report resent by
// a later run (after a failure) keeps its file name, as RFC 9990 "Email"
// requires of re-sent reports, and receivers can drop the duplicate; a
// report with other content (another part, more rows) gets another ID.
func reportIDFor(day time.Time, domain string, placeholderDoc []byte) string {
	h := sha256.New()
	h.Write([]byte(strings.ToLower(domain)))
	h.Write([]byte{0})
	h.Write(placeholderDoc)
	return day.UTC().Format("20060102") + hex.EncodeToString(h.Sum(nil)[:8])
}

// placeholderReportID stands for the report_id in the draft whose hash
// gives the real one.
var placeholderReportID = strings.Repeat("0", reportIDLen)

// reportPart is one report ready to send: its ID, file name and gzip'd
// XML.
type reportPart struct {
	ID       string
	FileName string
	Gzip     []byte
	Rows     int
}

// errRecordTooLarge: a single record does not fit the size limit.
type errRecordTooLarge struct {
	need, limit int64
}

func (e *errRecordTooLarge) Error() string {
	return fmt.Sprintf("a report with a single record needs %d bytes, over the limit of %d", e.need, e.limit)
}

// reportBuilder makes the reports of one domain and day, split so that
// every report message fits a size limit.
type reportBuilder struct {
	meta       Meta
	policy     Policy
	domain     string
	day        time.Time
	begin, end time.Time
	// longestTo is the longest recipient address, for measuring messages.
	longestTo string
}

// build makes the finished report of rows: its ID derived from the content.
func (rb *reportBuilder) build(rows []Row) (reportPart, error) {
	draft, err := BuildReport(rb.meta, placeholderReportID, rb.policy, rows, rb.begin, rb.end)
	if err != nil {
		return reportPart{}, err
	}
	id := reportIDFor(rb.day, rb.domain, draft)
	doc, err := BuildReport(rb.meta, id, rb.policy, rows, rb.begin, rb.end)
	if err != nil {
		return reportPart{}, err
	}
	name := FileName(rb.meta.submitter(), rb.domain, rb.begin, rb.end, id)
	gz, err := gzipReport(doc, strings.TrimSuffix(name, ".gz"))
	if err != nil {
		return reportPart{}, err
	}
	return reportPart{ID: id, FileName: name, Gzip: gz, Rows: len(rows)}, nil
}

// messageSize is the size of the message that carries part to the
// longest recipient.
func (rb *reportBuilder) messageSize(part reportPart) (int64, error) {
	msg, err := ReportMessage(ReportMail{
		Meta: rb.meta, To: rb.longestTo, Domain: rb.domain, ReportID: part.ID,
		Begin: rb.begin, End: rb.end, FileName: part.FileName, Report: part.Gzip, Date: rb.begin,
	})
	if err != nil {
		return 0, err
	}
	return int64(len(msg)), nil
}

// splitSlack is kept free below the limit while searching with the
// placeholder report_id: the real ID compresses a little differently
// (tens of bytes at most).
const splitSlack = 256

// draftSize is the size of the message for rows[:n] with the placeholder
// report_id: one build, where a finished part takes two.
func (rb *reportBuilder) draftSize(rows []Row) (int64, error) {
	doc, err := BuildReport(rb.meta, placeholderReportID, rb.policy, rows, rb.begin, rb.end)
	if err != nil {
		return 0, err
	}
	name := FileName(rb.meta.submitter(), rb.domain, rb.begin, rb.end, placeholderReportID)
	gz, err := gzipReport(doc, strings.TrimSuffix(name, ".gz"))
	if err != nil {
		return 0, err
	}
	return rb.messageSize(reportPart{ID: placeholderReportID, FileName: name, Gzip: gz})
}

// split cuts rows into consecutive parts whose whole report message fits
// limit bytes, each near the largest possible, and builds them. Each part
// is a complete report with its own report_id and the same date_range. A
// row that does not fit alone fails with *errRecordTooLarge.
//
// The search measures drafts (one build each): the size of all rows and
// of one row give the average size of a row, from which each part's row
// count is guessed; a gallop from the guess and a bisection then find the
// count within 0.5% (packing the last few rows is not worth more builds).
// So a split costs a few builds per part, each of about one part's rows.
func (rb *reportBuilder) split(rows []Row, limit int64) ([]reportPart, error) {
	n := len(rows)
	sizeAll, err := rb.draftSize(rows)
	if err != nil {
		return nil, err
	}
	if sizeAll <= limit-splitSlack {
		part, err := rb.finish(rows, limit)
		if err != nil {
			return nil, err
		}
		return []reportPart{part}, nil
	}
	sizeOne, err := rb.draftSize(rows[:1])
	if err != nil {
		return nil, err
	}
	if sizeOne > limit {
		return nil, &errRecordTooLarge{need: sizeOne, limit: limit}
	}
	perRow := max(float64(sizeAll-sizeOne)/float64(max(n-1, 1)), 1)
	guess := 1 + int(float64(limit-splitSlack-sizeOne)/perRow)
	var parts []reportPart
	for start := 0; start < n; {
		rest := rows[start:]
		k, err := searchFit(len(rest), guess, func(k int) (bool, error) {
			size, err := rb.draftSize(rest[:k])
			return size <= limit-splitSlack, err
		})
		if err != nil {
			return nil, err
		}
		part, err := rb.finish(rest[:max(k, 1)], limit)
		if err != nil {
			return nil, err
		}
		parts = append(parts, part)
		start += part.Rows
		guess = max(part.Rows, 1)
	}
	return parts, nil
}

// finish builds the part of rows for real and checks the size actually
// sent, giving back rows in the unlikely case that the real report_id
// made it too big.
func (rb *reportBuilder) finish(rows []Row, limit int64) (reportPart, error) {
	k := len(rows)
	for {
		part, err := rb.build(rows[:k])
		if err != nil {
			return reportPart{}, err
		}
		size, err := rb.messageSize(part)
		if err != nil {
			return reportPart{}, err
		}
		if size <= limit {
			return part, nil
		}
		if k == 1 {
			return reportPart{}, &errRecordTooLarge{need: size, limit: limit}
		}
		k = max(1, k-max(1, k/100))
	}
}

// searchFit returns k in [1, n] such that fits(k) and, within 0.5%, not
// fits(k+1) (n when fits(n)); 0 when not even fits(1). It starts from
// guess, gallops (steps doubling from 1% of the guess) to a bracket, and
// bisects it. fits must grow false as k grows, as report sizes do.
func searchFit(n, guess int, fits func(int) (bool, error)) (int, error) {
	guess = min(max(guess, 1), n)
	ok, err := fits(guess)
	if err != nil {
		return 0, err
	}
	step := max(1, guess/100)
	lo, hi := 0, n+1 // fits(lo) unless lo is 0; not fits(hi) unless hi is n+1
	if ok {
		lo = guess
		for lo < n {
			next := min(n, lo+step)
			if ok, err = fits(next); err != nil {
				return 0, err
			}
			if !ok {
				hi = next
				break
			}
			lo, step = next, step*2
		}
		if lo == n {
			return n, nil
		}
	} else {
		hi = guess
		for hi > 1 {
			next := max(1, hi-step)
			if ok, err = fits(next); err != nil {
				return 0, err
			}
			if ok {
				lo = next
				break
			}
			hi, step = next, step*2
		}
		if lo == 0 {
			return 0, nil
		}
	}
	for hi-lo > max(1, lo/200) {
		mid := lo + (hi-lo)/2
		if ok, err = fits(mid); err != nil {
			return 0, err
		}
		if ok {
			lo = mid
		} else {
			hi = mid
		}
	}
	return lo, nil
}
