package reports

import (
	"bufio"
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/encoding/charmap"
)

// Limits of one report that are not configurable: no real report comes near
// them.
const (
	// maxTextBytes is where a text field is cut.
	maxTextBytes = 512
	// maxListItems bounds the error elements of a report and the dkim,
	// spf and reason elements of a record.
	maxListItems = 100
	// maxCount is the largest message count a record may claim.
	maxCount = 1_000_000_000_000
	// maxRange is the longest date_range accepted: a report covers a day,
	// some receivers send a week; a month is absurd.
	maxRange = 31 * 24 * time.Hour
	// maxUnixTime is the end of year 9999, the latest date accepted.
	maxUnixTime = 253402300799
)

// The elements of a report read by path (local names below the root).
// Singletons may appear once in their scope (the report, a record, or one
// dkim, spf or reason entry); list elements open a new scope.
const (
	pathMetadata   = "feedback/report_metadata"
	pathDateRange  = "feedback/report_metadata/date_range"
	pathPolicy     = "feedback/policy_published"
	pathRecord     = "feedback/record"
	pathRow        = "feedback/record/row"
	pathEvaluated  = "feedback/record/row/policy_evaluated"
	pathReason     = "feedback/record/row/policy_evaluated/reason"
	pathIdentifier = "feedback/record/identifiers"
	pathAuth       = "feedback/record/auth_results"
	pathDKIM       = "feedback/record/auth_results/dkim"
	pathSPF        = "feedback/record/auth_results/spf"
)

// frame is one open element.
type frame struct {
	path string
	// set stores the element's text when it is a field we read; nil for
	// containers and unknown elements.
	set func(d *feedbackDecoder, v string) error
}

// feedbackDecoder reads one aggregate report from an XML stream, token by
// token, with its limits: no DOCTYPE, bounded depth, records, list lengths
// and text lengths.
type feedbackDecoder struct {
	lim   ImportLimits
	dec   *xml.Decoder
	stack []frame
	text  []byte
	// scopes hold the singleton paths seen in the report, the current
	// record and the current entry; reused to spare allocations.
	scopes   []map[string]bool
	f        Feedback
	rootSeen bool
	rootDone bool
	records  int
	hasBegin bool
	hasEnd   bool
}

// decodeFeedback reads one report from r.
func decodeFeedback(r io.Reader, lim ImportLimits) (*Feedback, error) {
	dec := xml.NewDecoder(skipBOM(r))
	dec.Strict = true
	dec.CharsetReader = xmlCharsetReader
	d := &feedbackDecoder{lim: lim, dec: dec, scopes: []map[string]bool{{}}}
	if err := d.run(); err != nil {
		return nil, err
	}
	return d.finish()
}

// skipBOM returns r without a leading UTF-8 byte order mark.
func skipBOM(r io.Reader) io.Reader {
	br := bufio.NewReader(r)
	if b, _ := br.Peek(len(utf8BOM)); bytes.Equal(b, utf8BOM) {
		_, _ = br.Discard(len(utf8BOM))
	}
	return br
}

// xmlCharsetReader decodes the encodings that receivers declare besides
// UTF-8; anything else is refused.
func xmlCharsetReader(label string, in io.Reader) (io.Reader, error) {
	switch strings.ToLower(strings.TrimSpace(label)) {
	case "us-ascii", "ascii", "utf8":
		return in, nil
	case "iso-8859-1", "iso8859-1", "iso_8859-1", "latin1", "l1":
		return charmap.ISO8859_1.NewDecoder().Reader(in), nil
	case "windows-1252", "cp1252":
		return charmap.Windows1252.NewDecoder().Reader(in), nil
	}
	return nil, fmt.Errorf("encoding %q is not supported (UTF-8, US-ASCII, ISO-8859-1 and windows-1252 are)", cleanText([]byte(label)))
}

// run reads every token of the document.
func (d *feedbackDecoder) run() error {
	for {
		tok, err := d.dec.Token()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return xmlError(err)
		}
		switch t := tok.(type) {
		case xml.StartElement:
			err = d.start(t)
		case xml.EndElement:
			err = d.end()
		case xml.CharData:
			err = d.chars(t)
		case xml.Directive:
			if hasPrefixFold(t, "doctype html") {
				return errors.New("input is an HTML page, not a DMARC aggregate report")
			}
			return errors.New("DOCTYPE and ENTITY declarations are refused (they can hide an XML bomb or an external entity)")
		}
		if err != nil {
			return err
		}
	}
}

// xmlError words an error of the XML decoder (or of the reader under it).
func xmlError(err error) error {
	var syn *xml.SyntaxError
	if errors.As(err, &syn) {
		return fmt.Errorf("XML syntax error on line %d: %s", syn.Line, syn.Msg)
	}
	return err
}

// start opens an element.
func (d *feedbackDecoder) start(t xml.StartElement) error {
	name := t.Name.Local
	if len(d.stack) == 0 {
		if d.rootDone {
			return errors.New("content after the </feedback> element")
		}
		if name != "feedback" {
			return fmt.Errorf("root element is <%s>, not <feedback>: not a DMARC aggregate report", cleanName(name))
		}
		d.rootSeen = true
	}
	if len(d.stack) >= d.lim.MaxDepth {
		return fmt.Errorf("XML elements nested deeper than %d", d.lim.MaxDepth)
	}
	parent := ""
	if len(d.stack) > 0 {
		top := d.stack[len(d.stack)-1]
		if top.set != nil {
			return fmt.Errorf("<%s> holds an element, not text", shortPath(top.path))
		}
		parent = top.path + "/"
	}
	p := parent + name
	fr := frame{path: p, set: fieldSetter(p)}
	if err := d.open(p, fr.set != nil); err != nil {
		return err
	}
	d.stack = append(d.stack, fr)
	d.text = d.text[:0]
	return nil
}

// open does what opening the element at path p means: a new record or
// entry, or a singleton marked seen.
func (d *feedbackDecoder) open(p string, field bool) error {
	switch p {
	case pathRecord:
		d.records++
		if d.records > d.lim.MaxRecords {
			return fmt.Errorf("report has more than %d records", d.lim.MaxRecords)
		}
		d.f.Rows = append(d.f.Rows, Row{})
		d.pushScope()
		return nil
	case pathDKIM, pathSPF, pathReason:
		r := d.row()
		var n int
		switch p {
		case pathDKIM:
			r.DKIM = append(r.DKIM, DKIMAuth{})
			n = len(r.DKIM)
		case pathSPF:
			r.SPF = append(r.SPF, SPFAuth{})
			n = len(r.SPF)
		default:
			r.Overrides = append(r.Overrides, Override{})
			n = len(r.Overrides)
		}
		if n > maxListItems {
			return fmt.Errorf("a record has more than %d <%s> elements", maxListItems, shortPath(p))
		}
		d.pushScope()
		return nil
	case pathMetadata + "/error":
		if len(d.f.Errors) >= maxListItems {
			return fmt.Errorf("report has more than %d <error> elements", maxListItems)
		}
		return nil
	case pathMetadata, pathDateRange, pathPolicy, pathRow, pathEvaluated, pathIdentifier, pathAuth:
	default:
		if !field {
			return nil // unknown: an extension, generator, pct, version
		}
	}
	scope := d.scopes[len(d.scopes)-1]
	if scope[p] {
		return fmt.Errorf("<%s> appears twice", shortPath(p))
	}
	scope[p] = true
	return nil
}

// pushScope opens a new scope of singletons (a record or an entry).
func (d *feedbackDecoder) pushScope() {
	n := len(d.scopes)
	if n < cap(d.scopes) {
		d.scopes = d.scopes[:n+1]
		clear(d.scopes[n])
		return
	}
	d.scopes = append(d.scopes, map[string]bool{})
}

// end closes the innermost element.
func (d *feedbackDecoder) end() error {
	fr := d.stack[len(d.stack)-1]
	d.stack = d.stack[:len(d.stack)-1]
	if fr.set != nil {
		if err := fr.set(d, cleanText(d.text)); err != nil {
			return err
		}
	}
	switch fr.path {
	case pathRecord:
		scope := d.scopes[len(d.scopes)-1]
		for _, need := range []string{pathRow + "/source_ip", pathRow + "/count"} {
			if !scope[need] {
				return fmt.Errorf("record %d has no <%s>", d.records, shortPath(need))
			}
		}
		d.scopes = d.scopes[:len(d.scopes)-1]
	case pathDKIM, pathSPF, pathReason:
		d.scopes = d.scopes[:len(d.scopes)-1]
	case "feedback":
		d.rootDone = true
	}
	return nil
}

// chars takes text: kept for a field, refused outside the root unless
// blank.
func (d *feedbackDecoder) chars(t xml.CharData) error {
	if len(d.stack) == 0 {
		if strings.TrimSpace(string(t)) != "" {
			return errors.New("text outside the <feedback> element")
		}
		return nil
	}
	if d.stack[len(d.stack)-1].set == nil {
		return nil
	}
	// Keep twice the field limit: whitespace is collapsed before the cut.
	if room := 2*maxTextBytes - len(d.text); room > 0 {
		d.text = append(d.text, t[:min(len(t), room)]...)
	}
	return nil
}

// row returns the current record's row.
func (d *feedbackDecoder) row() *Row {
	return &d.f.Rows[len(d.f.Rows)-1]
}

// fieldSetter returns how the text of the element at path p is stored, or
// nil when p is not a field we read.
func fieldSetter(p string) func(d *feedbackDecoder, v string) error {
	switch p {
	case pathMetadata + "/org_name":
		return func(d *feedbackDecoder, v string) error { d.f.OrgName = v; return nil }
	case pathMetadata + "/email":
		return func(d *feedbackDecoder, v string) error { d.f.Email = v; return nil }
	case pathMetadata + "/extra_contact_info":
		return func(d *feedbackDecoder, v string) error { d.f.ExtraContactInfo = v; return nil }
	case pathMetadata + "/report_id":
		return func(d *feedbackDecoder, v string) error { d.f.ReportID = v; return nil }
	case pathMetadata + "/error":
		return func(d *feedbackDecoder, v string) error { d.f.Errors = append(d.f.Errors, v); return nil }
	case pathDateRange + "/begin":
		return func(d *feedbackDecoder, v string) (err error) {
			d.f.Begin, err = parseUnixTime("begin", v)
			d.hasBegin = err == nil
			return err
		}
	case pathDateRange + "/end":
		return func(d *feedbackDecoder, v string) (err error) {
			d.f.End, err = parseUnixTime("end", v)
			d.hasEnd = err == nil
			return err
		}
	case pathRow + "/source_ip":
		return func(d *feedbackDecoder, v string) (err error) {
			d.row().SourceIP, err = parseSourceIP(v)
			return err
		}
	case pathRow + "/count":
		return func(d *feedbackDecoder, v string) (err error) {
			d.row().Count, err = parseCount(v)
			return err
		}
	}
	if s := policySetter(p); s != nil {
		return s
	}
	return recordSetter(p)
}

// policySetter is fieldSetter for policy_published.
func policySetter(p string) func(d *feedbackDecoder, v string) error {
	var field func(*Policy) *string
	switch p {
	case pathPolicy + "/domain":
		return func(d *feedbackDecoder, v string) error { d.f.Policy.Domain = domainName(v); return nil }
	case pathPolicy + "/discovery_method":
		field = func(p *Policy) *string { return &p.DiscoveryMethod }
	case pathPolicy + "/p":
		field = func(p *Policy) *string { return &p.P }
	case pathPolicy + "/sp":
		field = func(p *Policy) *string { return &p.SP }
	case pathPolicy + "/np":
		field = func(p *Policy) *string { return &p.NP }
	case pathPolicy + "/psd":
		field = func(p *Policy) *string { return &p.PSD }
	case pathPolicy + "/testing":
		field = func(p *Policy) *string { return &p.Testing }
	case pathPolicy + "/adkim":
		field = func(p *Policy) *string { return &p.ADKIM }
	case pathPolicy + "/aspf":
		field = func(p *Policy) *string { return &p.ASPF }
	case pathPolicy + "/fo":
		field = func(p *Policy) *string { return &p.FO }
	default:
		return nil
	}
	return func(d *feedbackDecoder, v string) error { *field(&d.f.Policy) = strings.ToLower(v); return nil }
}

// recordSetter is fieldSetter for the rest of a record.
func recordSetter(p string) func(d *feedbackDecoder, v string) error {
	switch p {
	case pathEvaluated + "/disposition":
		return func(d *feedbackDecoder, v string) error { d.row().Disposition = strings.ToLower(v); return nil }
	case pathEvaluated + "/dkim":
		return func(d *feedbackDecoder, v string) error { d.row().DKIMAligned = strings.ToLower(v); return nil }
	case pathEvaluated + "/spf":
		return func(d *feedbackDecoder, v string) error { d.row().SPFAligned = strings.ToLower(v); return nil }
	case pathReason + "/type":
		return func(d *feedbackDecoder, v string) error { lastOverride(d).Type = strings.ToLower(v); return nil }
	case pathReason + "/comment":
		return func(d *feedbackDecoder, v string) error { lastOverride(d).Comment = v; return nil }
	case pathIdentifier + "/header_from":
		return func(d *feedbackDecoder, v string) error { d.row().HeaderFrom = domainName(v); return nil }
	case pathIdentifier + "/envelope_from":
		return func(d *feedbackDecoder, v string) error { d.row().EnvelopeFrom = domainName(v); return nil }
	case pathIdentifier + "/envelope_to":
		return func(d *feedbackDecoder, v string) error { d.row().EnvelopeTo = domainName(v); return nil }
	case pathDKIM + "/domain":
		return func(d *feedbackDecoder, v string) error { lastDKIM(d).Domain = domainName(v); return nil }
	case pathDKIM + "/selector":
		return func(d *feedbackDecoder, v string) error { lastDKIM(d).Selector = v; return nil }
	case pathDKIM + "/result":
		return func(d *feedbackDecoder, v string) error { lastDKIM(d).Result = strings.ToLower(v); return nil }
	case pathDKIM + "/human_result":
		return func(d *feedbackDecoder, v string) error { lastDKIM(d).HumanResult = v; return nil }
	case pathSPF + "/domain":
		return func(d *feedbackDecoder, v string) error { lastSPF(d).Domain = domainName(v); return nil }
	case pathSPF + "/scope":
		return func(d *feedbackDecoder, v string) error { lastSPF(d).Scope = strings.ToLower(v); return nil }
	case pathSPF + "/result":
		return func(d *feedbackDecoder, v string) error { lastSPF(d).Result = strings.ToLower(v); return nil }
	}
	return nil
}

// lastOverride, lastDKIM and lastSPF return the entry being read.
func lastOverride(d *feedbackDecoder) *Override {
	r := d.row()
	return &r.Overrides[len(r.Overrides)-1]
}

func lastDKIM(d *feedbackDecoder) *DKIMAuth {
	r := d.row()
	return &r.DKIM[len(r.DKIM)-1]
}

func lastSPF(d *feedbackDecoder) *SPFAuth {
	r := d.row()
	return &r.SPF[len(r.SPF)-1]
}

// finish checks the report as a whole and completes its rows.
func (d *feedbackDecoder) finish() (*Feedback, error) {
	f := &d.f
	switch {
	case !d.rootSeen:
		return nil, errors.New("no <feedback> element: not a DMARC aggregate report")
	case f.OrgName == "":
		return nil, errors.New("report_metadata/org_name is missing or empty")
	case f.ReportID == "":
		return nil, errors.New("report_metadata/report_id is missing or empty")
	case !d.hasBegin || !d.hasEnd:
		return nil, errors.New("report_metadata/date_range needs begin and end")
	case f.Policy.Domain == "":
		return nil, errors.New("policy_published/domain is missing or empty")
	case f.End.Before(f.Begin):
		return nil, fmt.Errorf("date_range end %s is before begin %s", f.End.Format(time.RFC3339), f.Begin.Format(time.RFC3339))
	case f.End.Sub(f.Begin) > maxRange:
		return nil, fmt.Errorf("date_range of %s is longer than 31 days", f.End.Sub(f.Begin))
	}
	day := DayOf(f.Begin)
	for i := range f.Rows {
		f.Rows[i].Domain = f.Policy.Domain
		f.Rows[i].Day = day
	}
	return f, nil
}

// parseUnixTime reads a date_range bound: integer seconds since the epoch.
func parseUnixTime(what, v string) (time.Time, error) {
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 || n > maxUnixTime {
		return time.Time{}, fmt.Errorf("date_range %s %q is not a time in seconds since 1970", what, v)
	}
	return time.Unix(n, 0).UTC(), nil
}

// parseSourceIP reads row/source_ip; an IPv4-mapped IPv6 address becomes
// IPv4.
func parseSourceIP(v string) (netip.Addr, error) {
	a, err := netip.ParseAddr(v)
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("row/source_ip %q is not an IP address", v)
	}
	return a.Unmap(), nil
}

// parseCount reads row/count.
func parseCount(v string) (int64, error) {
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("row/count %q is not a number", v)
	}
	if n < 0 || n > maxCount {
		return 0, fmt.Errorf("row/count %d is out of range (0 to %d)", n, int64(maxCount))
	}
	return n, nil
}

// domainName normalizes a domain as reports carry it: lowercase, no
// trailing dot.
func domainName(v string) string {
	return strings.TrimSuffix(strings.ToLower(v), ".")
}

// cleanText makes a text field safe to store and print: valid UTF-8,
// control characters (and bidirectional overrides) replaced, whitespace
// collapsed to single spaces, cut at maxTextBytes on a character boundary.
func cleanText(b []byte) string {
	var sb strings.Builder
	space := false
	for len(b) > 0 {
		r, size := utf8.DecodeRune(b)
		b = b[size:]
		switch {
		case unicode.IsSpace(r):
			space = sb.Len() > 0
			continue
		case r == utf8.RuneError, unicode.IsControl(r), unicode.Is(unicode.Bidi_Control, r):
			r = '\uFFFD'
		}
		need := utf8.RuneLen(r)
		if space {
			need++
		}
		if sb.Len()+need > maxTextBytes {
			break
		}
		if space {
			sb.WriteByte(' ')
			space = false
		}
		sb.WriteRune(r)
	}
	return sb.String()
}

// cleanName is cleanText for element names in messages, shorter.
func cleanName(s string) string {
	s = cleanText([]byte(s))
	if len(s) <= 64 {
		return s
	}
	cut := 64
	for !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}

// shortPath is p without the root, for messages.
func shortPath(p string) string {
	return cleanName(strings.TrimPrefix(p, "feedback/"))
}
