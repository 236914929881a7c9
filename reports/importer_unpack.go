package reports

import (
	"archive/zip"
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/mail"
	"net/textproto"
	"path"
	"strings"
)

// Limits of mail messages, fixed: real report mails have one or two parts.
const (
	maxMIMEParts = 64 // parts of one multipart
	maxMIMEDepth = 8  // multipart nesting
	maxMailDepth = 2  // a message, and one forwarded inside it (message/rfc822)
)

// unpacker takes an input apart: mail, then at most one archive layer
// (gzip or zip), then XML. It collects the reports; any error refuses the
// whole input.
type unpacker struct {
	lim ImportLimits
	out []*Feedback
	// mailDepth counts the mail messages open around the current part.
	mailDepth int
}

// input parses one input or attachment held in memory.
func (u *unpacker) input(data []byte) error {
	switch sniff(head(data)) {
	case kindGzip:
		return u.gzip(data)
	case kindZip:
		return u.zip(data)
	case kindXML:
		return u.xml(bytes.NewReader(data))
	case kindMail:
		return u.mail(data)
	}
	return notReport(data)
}

// notReport says why data, which is no gzip, zip, XML or mail, is refused.
func notReport(data []byte) error {
	switch sniff(head(data)) {
	case kindEmpty:
		return errors.New("input is empty")
	case kindHTML:
		return errors.New("input is an HTML page, not a DMARC aggregate report")
	case kindUTF16:
		return errors.New("input is UTF-16 text; only UTF-8 (or US-ASCII, ISO-8859-1, windows-1252) XML is read")
	case kindMail:
		return errors.New("a mail message inside a mail message is only read as a message/rfc822 part")
	}
	return errors.New("not a DMARC aggregate report: neither XML, gzip, zip nor a mail message")
}

// head returns the first bytes of data, enough to sniff.
func head(data []byte) []byte {
	return data[:min(len(data), 512)]
}

// gzip decompresses data and parses the XML inside.
func (u *unpacker) gzip(data []byte) error {
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		return gzipError(err)
	}
	if err := u.archived(zr, "gzip"); err != nil {
		return gzipError(err)
	}
	return nil
}

// gzipError names the usual gzip failures plainly.
func gzipError(err error) error {
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("gzip data is truncated: %w", err)
	case errors.Is(err, gzip.ErrChecksum), errors.Is(err, gzip.ErrHeader):
		return fmt.Errorf("gzip data is corrupt: %w", err)
	}
	return err
}

// zip parses each entry of a zip archive: it must be a .xml file with a
// plain name, and there may be at most MaxZipEntries (counted before any
// is read).
func (u *unpacker) zip(data []byte) error {
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		return fmt.Errorf("zip archive is unreadable: %w", err)
	}
	if len(zr.File) > u.lim.MaxZipEntries {
		return fmt.Errorf("zip archive has %d entries, more than %d", len(zr.File), u.lim.MaxZipEntries)
	}
	for _, f := range zr.File {
		if err := u.zipEntry(f); err != nil {
			return fmt.Errorf("zip entry %q: %w", cleanText([]byte(f.Name)), err)
		}
	}
	return nil
}

// zipEntry parses one entry of a zip archive.
func (u *unpacker) zipEntry(f *zip.File) error {
	if f.FileInfo().IsDir() {
		return nil
	}
	if !safeEntryName(f.Name) {
		return errors.New("unsafe path (absolute, .. or backslash)")
	}
	if !strings.EqualFold(path.Ext(f.Name), ".xml") {
		return errors.New("not a .xml file")
	}
	if f.Flags&0x1 != 0 {
		return errors.New("encrypted")
	}
	rc, err := f.Open()
	if err != nil {
		return err
	}
	defer rc.Close()
	return u.archived(rc, "zip")
}

// safeEntryName reports whether a zip entry name stays inside the folder it
// would be extracted to (we extract nothing, but such a name is hostile).
func safeEntryName(name string) bool {
	if name == "" || strings.ContainsAny(name, "\\\x00") || strings.HasPrefix(name, "/") {
		return false
	}
	for _, part := range strings.Split(name, "/") {
		if part == ".." {
			return false
		}
	}
	return true
}

// archived parses the decompressed content r of an archive (of kind
// "gzip" or "zip"): it must be XML; a second archive layer is refused.
func (u *unpacker) archived(r io.Reader, kind string) error {
	br := bufio.NewReaderSize(r, 4096)
	first, err := br.Peek(512)
	if err != nil && err != io.EOF && !errors.Is(err, bufio.ErrBufferFull) {
		return err
	}
	switch k := sniff(first); k {
	case kindXML:
		return u.xml(br)
	case kindGzip, kindZip:
		return fmt.Errorf("%s inside %s: nested archives are refused", kindName(k), kind)
	default:
		return fmt.Errorf("%s content: %w", kind, notReport(first))
	}
}

// kindName names an archive kind.
func kindName(k sniffKind) string {
	if k == kindGzip {
		return "gzip"
	}
	return "zip"
}

// xml parses one XML document and keeps the report.
func (u *unpacker) xml(r io.Reader) error {
	f, err := decodeFeedback(newSizeCap(r, u.lim.MaxXMLBytes), u.lim)
	if err != nil {
		return err
	}
	u.out = append(u.out, f)
	return nil
}

// errXMLTooBig is returned by a sizeCap past its limit.
var errXMLTooBig = errors.New("decompressed XML is larger than the limit")

// sizeCap reads from r and fails once more than max bytes came, so that a
// decompression bomb stops at the limit.
type sizeCap struct {
	r         io.Reader
	left, max int64
}

// newSizeCap returns a reader of r that fails past max bytes.
func newSizeCap(r io.Reader, max int64) *sizeCap {
	return &sizeCap{r: r, left: max, max: max}
}

// Read reads from the underlying reader, failing past the limit.
func (c *sizeCap) Read(p []byte) (int, error) {
	if c.left < 0 {
		return 0, fmt.Errorf("%w (%d bytes)", errXMLTooBig, c.max)
	}
	if int64(len(p)) > c.left+1 {
		p = p[:c.left+1]
	}
	n, err := c.r.Read(p)
	c.left -= int64(n)
	if c.left < 0 {
		return 0, fmt.Errorf("%w (%d bytes)", errXMLTooBig, c.max)
	}
	return n, err
}

// mail parses an RFC 5322 message and every report attached to it; at
// least one must be there.
func (u *unpacker) mail(data []byte) error {
	if u.mailDepth >= maxMailDepth {
		return errors.New("mail messages nested too deep")
	}
	u.mailDepth++
	defer func() { u.mailDepth-- }()
	if bytes.HasPrefix(data, []byte("From ")) {
		// An mbox "From " line before the header.
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			data = data[i+1:]
		}
	}
	msg, err := mail.ReadMessage(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("mail message header: %w", err)
	}
	before := len(u.out)
	if err := u.mimePart(textproto.MIMEHeader(msg.Header), msg.Body, 0); err != nil {
		return err
	}
	if len(u.out) == before {
		return errors.New("mail message has no DMARC report attachment (XML, gzip or zip)")
	}
	return nil
}

// mimePart parses one MIME entity: the parts of a multipart, a forwarded
// message, or a leaf that may be a report.
func (u *unpacker) mimePart(h textproto.MIMEHeader, body io.Reader, depth int) error {
	mediaType, params := mediaTypeOf(h)
	switch {
	case strings.HasPrefix(mediaType, "multipart/"):
		return u.multipart(body, params["boundary"], depth)
	case mediaType == "message/rfc822":
		data, err := u.partBody(h, body)
		if err != nil {
			return err
		}
		return u.mail(data)
	}
	name := attachmentName(h, params)
	if name == "" && (mediaType == "text/plain" || mediaType == "text/html") {
		return nil // the message's text, not an attachment
	}
	data, err := u.partBody(h, body)
	if err != nil {
		return fmt.Errorf("attachment %q: %w", name, err)
	}
	switch sniff(head(data)) {
	case kindGzip, kindZip, kindXML:
		if err := u.input(data); err != nil {
			return fmt.Errorf("attachment %q: %w", name, err)
		}
	default:
		if looksLikeReportName(name) {
			return fmt.Errorf("attachment %q: %w", name, notReport(data))
		}
	}
	return nil
}

// multipart parses the parts of a multipart entity.
func (u *unpacker) multipart(body io.Reader, boundary string, depth int) error {
	if depth >= maxMIMEDepth {
		return fmt.Errorf("MIME parts nested deeper than %d", maxMIMEDepth)
	}
	if boundary == "" {
		return errors.New("multipart without a boundary")
	}
	mr := multipart.NewReader(body, boundary)
	for i := 0; ; i++ {
		p, err := mr.NextRawPart()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("MIME: %w", err)
		}
		if i >= maxMIMEParts {
			return fmt.Errorf("more than %d MIME parts", maxMIMEParts)
		}
		if err := u.mimePart(p.Header, p, depth+1); err != nil {
			return err
		}
	}
}

// mediaTypeOf returns the lowercased media type of a MIME entity
// (text/plain when absent or unreadable) and its parameters.
func mediaTypeOf(h textproto.MIMEHeader) (string, map[string]string) {
	ct := h.Get("Content-Type")
	if ct == "" {
		return "text/plain", nil
	}
	mediaType, params, err := mime.ParseMediaType(ct)
	if mediaType == "" || (err != nil && !errors.Is(err, mime.ErrInvalidMediaParameter)) {
		return "application/octet-stream", nil
	}
	return mediaType, params
}

// attachmentName returns the file name of a MIME part, from
// Content-Disposition or the Content-Type name parameter.
func attachmentName(h textproto.MIMEHeader, ctParams map[string]string) string {
	if _, params, err := mime.ParseMediaType(h.Get("Content-Disposition")); err == nil && params["filename"] != "" {
		return cleanText([]byte(params["filename"]))
	}
	return cleanText([]byte(ctParams["name"]))
}

// looksLikeReportName reports whether an attachment's name says it is a
// report, so that content which is not one is an error, not skipped.
func looksLikeReportName(name string) bool {
	n := strings.ToLower(name)
	return strings.HasSuffix(n, ".xml") || strings.HasSuffix(n, ".gz") || strings.HasSuffix(n, ".zip")
}

// partBody reads a MIME part's body, undoing its Content-Transfer-Encoding.
// The input is bounded already; the decoded body is smaller.
func (u *unpacker) partBody(h textproto.MIMEHeader, body io.Reader) ([]byte, error) {
	var r io.Reader
	switch cte := strings.ToLower(strings.TrimSpace(h.Get("Content-Transfer-Encoding"))); cte {
	case "base64":
		r = base64.NewDecoder(base64.StdEncoding, &base64Cleaner{r: body})
	case "quoted-printable":
		r = quotedprintable.NewReader(body)
	case "", "7bit", "8bit", "binary":
		r = body
	default:
		return nil, fmt.Errorf("unknown Content-Transfer-Encoding %q", cleanText([]byte(cte)))
	}
	data, err := readInput(r, u.lim.MaxInputBytes)
	if err != nil {
		return nil, fmt.Errorf("MIME body: %w", err)
	}
	return data, nil
}

// base64Cleaner drops the spaces and tabs some mailers leave in base64
// lines; line breaks the decoder ignores itself.
type base64Cleaner struct {
	r io.Reader
}

// Read reads from the underlying reader without spaces and tabs.
func (c *base64Cleaner) Read(p []byte) (int, error) {
	for {
		n, err := c.r.Read(p)
		j := 0
		for _, b := range p[:n] {
			if b != ' ' && b != '\t' {
				p[j] = b
				j++
			}
		}
		if j > 0 || err != nil {
			return j, err
		}
	}
}
