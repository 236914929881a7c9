package reports

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/mail"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestFileName(t *testing.T) {
	begin, end := genTestBegin, genTestEnd
	tests := []struct {
		name, receiver, domain, id, want string
	}{
		{"RFC example form", "mail.receiver.example", "example.com", "", "mail.receiver.example!example.com!1796428800!1796515199.xml.gz"},
		{"with unique-id", "Mail.Receiver.Example.", "EXAMPLE.com", "20261205ab", "mail.receiver.example!example.com!1796428800!1796515199!20261205ab.xml.gz"},
		{"path traversal", "mx.example", "../../etc/passwd", "", "mx.example!_._.__etc_passwd!1796428800!1796515199.xml.gz"},
		{"leading dot and slash", "mx.example", "./.hidden/x", "", "mx.example!__.hidden_x!1796428800!1796515199.xml.gz"},
		{"empty names", "", "", "", "unknown!unknown!1796428800!1796515199.xml.gz"},
		{"unique-id reduced to alnum", "mx.example", "example.com", "a/b.c!d", "mx.example!example.com!1796428800!1796515199!abcd.xml.gz"},
		{"control characters", "mx.example", "a\r\nb\x00c", "", "mx.example!a__b_c!1796428800!1796515199.xml.gz"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := FileName(tt.receiver, tt.domain, begin, end, tt.id)
			wantEq(t, got, tt.want)
			if strings.ContainsAny(got, "/\x00") || strings.HasPrefix(got, ".") {
				t.Errorf("%q is not a safe file name", got)
			}
		})
	}
	if long := FileName("mx.example", strings.Repeat("a", 5000), begin, end, ""); len(long) > 300 {
		t.Errorf("file name of a 5000-byte domain is %d bytes long", len(long))
	}
}

// sendTestMail is a report message's input for the tests.
func sendTestMail(t *testing.T) (ReportMail, []byte) {
	t.Helper()
	doc, err := BuildReport(genTestMeta, "20261205a1b2c3d4e5f60718", genTestPolicy(), genTestRows(), genTestBegin, genTestEnd)
	if err != nil {
		t.Fatal(err)
	}
	name := FileName("mx.receiver.example", "example.com", genTestBegin, genTestEnd, "20261205a1b2c3d4e5f60718")
	gz, err := gzipReport(doc, strings.TrimSuffix(name, ".gz"))
	if err != nil {
		t.Fatal(err)
	}
	return ReportMail{
		Meta: genTestMeta, To: "dmarc@example.com", Domain: "example.com", ReportID: "20261205a1b2c3d4e5f60718",
		Begin: genTestBegin, End: genTestEnd, FileName: name, Report: gz,
		Date: time.Date(2026, 12, 6, 1, 15, 0, 0, time.UTC),
	}, doc
}

// subjectRE is RFC 9990's dmarc-subject after unfolding.
var subjectRE = regexp.MustCompile(`^Report +Domain: +([A-Za-z0-9._-]+) +Submitter: +([A-Za-z0-9._-]+) +Report-ID: +<([A-Za-z0-9]+)>$`)

// sendOpenMessage parses a report message and returns its header and the
// attachment (file name, decompressed XML).
func sendOpenMessage(t *testing.T, raw []byte) (mail.Header, string, []byte) {
	t.Helper()
	for i, line := range strings.Split(string(raw), "\r\n") {
		if len(line) > 998 {
			t.Fatalf("line %d is %d bytes long (RFC 5322 §2.1.1: at most 998)", i, len(line))
		}
	}
	if bytes.Contains(bytes.ReplaceAll(raw, []byte("\r\n"), nil), []byte("\n")) {
		t.Fatal("the message has a bare LF")
	}
	msg, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("parse report message: %v", err)
	}
	mt, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/mixed" {
		t.Fatalf("Content-Type %q: %v", msg.Header.Get("Content-Type"), err)
	}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	var fileName string
	var doc []byte
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("read MIME part: %v", err)
		}
		ct, _, _ := mime.ParseMediaType(part.Header.Get("Content-Type"))
		if ct != "application/gzip" {
			continue
		}
		if te := part.Header.Get("Content-Transfer-Encoding"); te != "base64" {
			t.Errorf("attachment Content-Transfer-Encoding %q, want base64", te)
		}
		disp, dp, err := mime.ParseMediaType(part.Header.Get("Content-Disposition"))
		if err != nil || disp != "attachment" {
			t.Errorf("Content-Disposition %q: %v", part.Header.Get("Content-Disposition"), err)
		}
		fileName = dp["filename"]
		zr, err := gzip.NewReader(base64.NewDecoder(base64.StdEncoding, part))
		if err != nil {
			t.Fatalf("attachment is not gzip: %v", err)
		}
		if doc, err = io.ReadAll(zr); err != nil {
			t.Fatalf("gunzip attachment: %v", err)
		}
	}
	if doc == nil {
		t.Fatal("no application/gzip attachment")
	}
	return msg.Header, fileName, doc
}

func TestReportMessage(t *testing.T) {
	rm, doc := sendTestMail(t)
	raw, err := ReportMessage(rm)
	if err != nil {
		t.Fatal(err)
	}
	compareSendGolden(t, "testdata/send/message.eml", raw)
	h, fileName, got := sendOpenMessage(t, raw)
	if !bytes.Equal(got, doc) {
		t.Error("the attachment does not unpack to the report")
	}
	wantEq(t, fileName, rm.FileName)
	m := subjectRE.FindStringSubmatch(h.Get("Subject"))
	if m == nil {
		t.Fatalf("Subject %q does not match RFC 9990's dmarc-subject", h.Get("Subject"))
	}
	wantEq(t, m[1]+" "+m[2]+" "+m[3], "example.com mx.receiver.example 20261205a1b2c3d4e5f60718")
	wantEq(t, h.Get("To"), "<dmarc@example.com>")
	wantEq(t, h.Get("Message-Id"), "<20261205a1b2c3d4e5f60718@mx.receiver.example>")
	from, err := mail.ParseAddress(h.Get("From"))
	if err != nil || from.Address != genTestMeta.Email || from.Name != genTestMeta.OrgName {
		t.Errorf("From %q: %v", h.Get("From"), err)
	}
}

// TestReportMessageHeaderInjection: a domain or org name from the store
// or config can never add a header field or break the Subject.
func TestReportMessageHeaderInjection(t *testing.T) {
	rm, _ := sendTestMail(t)
	rm.Domain = "evil.example\r\nBcc: victim@example.net\r\nX-Injected: yes"
	rm.Meta.OrgName = "Org\r\nBcc: victim2@example.net"
	raw, err := ReportMessage(rm)
	if err != nil {
		t.Fatal(err)
	}
	h, _, _ := sendOpenMessage(t, raw)
	for _, name := range []string{"Bcc", "X-Injected"} {
		if v := h.Get(name); v != "" {
			t.Errorf("header %s: %q was injected", name, v)
		}
	}
	if !subjectRE.MatchString(h.Get("Subject")) {
		t.Errorf("Subject %q does not match RFC 9990's dmarc-subject", h.Get("Subject"))
	}
	for _, bad := range []string{"victim@example.net", "victim2@example.net"} {
		head, _, _ := bytes.Cut(raw, []byte("\r\n\r\n"))
		if bytes.Contains(head, []byte("\r\n"+bad)) {
			t.Errorf("%s starts a header line", bad)
		}
	}

	// Hostile addresses are refused, not written.
	for _, to := range []string{"a@b.example\r\nBcc: c@d.example", "Name <a@b.example>", "a@b.example,c@d.example", ""} {
		rm, _ := sendTestMail(t)
		rm.To = to
		if _, err := ReportMessage(rm); err == nil {
			t.Errorf("To %q was accepted", to)
		}
	}
}

// sendManyRows makes n distinct rows, varied enough not to compress away.
func sendManyRows(n int) []Row {
	rows := make([]Row, n)
	for i := range rows {
		rows[i] = Row{
			Domain: "example.com", Day: genTestDay,
			SourceIP: netip.AddrFrom4([4]byte{198, 51, byte(i >> 8), byte(i)}), Count: int64(i + 1),
			HeaderFrom: fmt.Sprintf("h%x.example.com", i*7919), EnvelopeFrom: fmt.Sprintf("bounce%x.example.net", i*104729),
			Disposition: "none", DKIMAligned: "fail", SPFAligned: "pass",
			DKIM: []DKIMAuth{{Domain: fmt.Sprintf("d%x.example.org", i*31), Selector: fmt.Sprintf("s%x", i*17), Result: "fail", HumanResult: fmt.Sprintf("body hash %x did not verify", i*99991)}},
			SPF:  []SPFAuth{{Domain: fmt.Sprintf("bounce%x.example.net", i*104729), Scope: "mfrom", Result: "pass"}},
		}
	}
	return rows
}

// TestSplitFitsLimit: many rows and a small limit give several complete
// reports, each message within the limit and valid, whose records
// together are exactly the input, in order.
func TestSplitFitsLimit(t *testing.T) {
	rows := sendManyRows(1500)
	rb := &reportBuilder{meta: genTestMeta, policy: genTestPolicy(), domain: "example.com", day: genTestDay,
		begin: genTestBegin, end: genTestEnd, longestTo: "a-rather-long-recipient-address@reports.example.com"}
	const limit = 20000
	parts, err := rb.split(rows, limit)
	if err != nil {
		t.Fatal(err)
	}
	if len(parts) < 3 {
		t.Fatalf("%d parts; the test needs a limit that forces a split", len(parts))
	}
	var docs [][]byte
	var got []string
	ids := map[string]bool{}
	for _, part := range parts {
		if ids[part.ID] {
			t.Errorf("report_id %s used twice", part.ID)
		}
		ids[part.ID] = true
		msg, err := ReportMessage(ReportMail{Meta: genTestMeta, To: rb.longestTo, Domain: "example.com", ReportID: part.ID,
			Begin: rb.begin, End: rb.end, FileName: part.FileName, Report: part.Gzip, Date: time.Now()})
		if err != nil {
			t.Fatal(err)
		}
		if len(msg) > limit {
			t.Errorf("part %s: message of %d bytes is over the limit %d", part.ID, len(msg), limit)
		}
		_, _, doc := sendOpenMessage(t, msg)
		docs = append(docs, doc)
		f := genParse(t, doc)
		wantEq(t, f.Metadata.ReportID, part.ID)
		wantEq(t, fmt.Sprint(f.Metadata.DateRange.Begin, "-", f.Metadata.DateRange.End), fmt.Sprint(genTestBegin.Unix(), "-", genTestEnd.Unix()))
		if !strings.Contains(part.FileName, "!"+part.ID+".xml.gz") {
			t.Errorf("file name %s does not carry the report_id %s", part.FileName, part.ID)
		}
		for _, rec := range f.Records {
			got = append(got, fmt.Sprint(rec.Row.SourceIP, " ", rec.Row.Count, " ", rec.Identifiers.HeaderFrom))
		}
	}
	var want []string
	for _, r := range rows {
		want = append(want, fmt.Sprint(r.SourceIP, " ", r.Count, " ", r.HeaderFrom))
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("the parts hold %d records, not the %d input rows in order", len(got), len(want))
	}
	genValidate(t, docs...)
}

// TestSplitRecordTooLarge: a limit below one record's report is an error
// that says how much is needed.
func TestSplitRecordTooLarge(t *testing.T) {
	rb := &reportBuilder{meta: genTestMeta, policy: genTestPolicy(), domain: "example.com", day: genTestDay,
		begin: genTestBegin, end: genTestEnd, longestTo: "dmarc@example.com"}
	_, err := rb.split(sendManyRows(3), 500)
	var tooLarge *errRecordTooLarge
	if !errors.As(err, &tooLarge) || tooLarge.need <= 500 {
		t.Fatalf("split with a 500-byte limit: %v, want errRecordTooLarge", err)
	}
}

// TestReportIDStable: the same report gets the same ID (a resend keeps
// its file name), different content another one.
func TestReportIDStable(t *testing.T) {
	rb := &reportBuilder{meta: genTestMeta, policy: genTestPolicy(), domain: "example.com", day: genTestDay,
		begin: genTestBegin, end: genTestEnd, longestTo: "dmarc@example.com"}
	a, err := rb.build(genTestRows())
	if err != nil {
		t.Fatal(err)
	}
	b, _ := rb.build(genTestRows())
	c, _ := rb.build(genTestRows()[:1])
	if a.ID != b.ID || !bytes.Equal(a.Gzip, b.Gzip) {
		t.Errorf("the same report got IDs %s and %s", a.ID, b.ID)
	}
	if a.ID == c.ID {
		t.Errorf("different reports share the ID %s", a.ID)
	}
	if len(a.ID) != reportIDLen || !strings.HasPrefix(a.ID, "20261205") || alnumOnly(a.ID) != a.ID {
		t.Errorf("report_id %q is not YYYYMMDD and 16 hex digits", a.ID)
	}
}

// TestSearchFit: whatever the guess, the count found fits and is within
// 0.5% of the largest that does.
func TestSearchFit(t *testing.T) {
	for _, tt := range []struct{ n, largest, guess int }{
		{1000, 400, 400}, {1000, 400, 1}, {1000, 400, 1000}, {1000, 400, 390}, {1000, 400, 410},
		{1000, 1000, 3}, {1000, 1, 500}, {1000, 0, 500}, {1, 1, 1}, {100000, 31337, 20000},
	} {
		probes := 0
		got, err := searchFit(tt.n, tt.guess, func(k int) (bool, error) {
			probes++
			if k < 1 || k > tt.n {
				t.Fatalf("probed %d outside [1, %d]", k, tt.n)
			}
			return k <= tt.largest, nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if got > tt.largest || float64(got) < float64(tt.largest)*0.995 {
			t.Errorf("n=%d largest=%d guess=%d: got %d", tt.n, tt.largest, tt.guess, got)
		}
		if probes > 40 {
			t.Errorf("n=%d largest=%d guess=%d: %d probes", tt.n, tt.largest, tt.guess, probes)
		}
	}
}
