package reports

import (
	"archive/zip"
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"fmt"
	"io"
	"strings"
	"testing"
)

// limitReport returns a small valid report whose record element is
// repeated records times, with extra inserted into the first record's
// auth_results and meta into report_metadata.
func limitReport(records int, meta, extra string) string {
	var b strings.Builder
	b.WriteString(`<?xml version="1.0"?><feedback><report_metadata><org_name>attacker.example</org_name>` +
		`<email>a@attacker.example</email><report_id>limits</report_id>` +
		`<date_range><begin>1777593600</begin><end>1777679999</end></date_range>` + meta + `</report_metadata>` +
		`<policy_published><domain>example.com</domain><p>none</p></policy_published>`)
	for i := range records {
		b.WriteString(`<record><row><source_ip>192.0.2.1</source_ip><count>1</count>` +
			`<policy_evaluated><disposition>none</disposition><dkim>fail</dkim><spf>fail</spf></policy_evaluated></row>` +
			`<identifiers><header_from>example.com</header_from></identifiers><auth_results>`)
		if i == 0 {
			b.WriteString(extra)
		}
		b.WriteString(`</auth_results></record>`)
	}
	b.WriteString(`</feedback>`)
	return b.String()
}

func gzipBytes(t *testing.T, parts ...io.Reader) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range parts {
		if _, err := io.Copy(zw, p); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// zipBytes builds a zip archive of name/content pairs.
func zipBytes(t *testing.T, entries ...[2]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, e := range entries {
		w, err := zw.Create(e[0])
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(w, e[1]); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// repeatReader yields b n times without holding it all.
func repeatReader(b string, n int) io.Reader {
	rs := make([]io.Reader, n)
	for i := range rs {
		rs[i] = strings.NewReader(b)
	}
	return io.MultiReader(rs...)
}

// mailWith wraps body parts in a multipart/mixed message with boundary.
func mailWith(boundary string, parts ...string) string {
	var b strings.Builder
	b.WriteString("From: r@reporter.example\r\nSubject: report\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"" + boundary + "\"\r\n\r\n")
	for _, p := range parts {
		b.WriteString("--" + boundary + "\r\n" + p + "\r\n")
	}
	b.WriteString("--" + boundary + "--\r\n")
	return b.String()
}

func gzipPart(t *testing.T, xml string) string {
	return "Content-Type: application/gzip; name=\"r.xml.gz\"\r\nContent-Transfer-Encoding: base64\r\n\r\n" +
		base64.StdEncoding.EncodeToString(gzipBytes(t, strings.NewReader(xml)))
}

// TestParseReportsLimitAttacks attacks every limit with an input generated
// here (too large to commit, or parameterized by the limit).
func TestParseReportsLimitAttacks(t *testing.T) {
	small := ImportLimits{MaxInputBytes: 64 << 10, MaxXMLBytes: 256 << 10, MaxZipEntries: 4, MaxRecords: 10, MaxDepth: 8}
	ok := limitReport(1, "", "")
	manyEntries := make([][2]string, 1000)
	for i := range manyEntries {
		manyEntries[i] = [2]string{fmt.Sprintf("r%d.xml", i), ok}
	}
	dkim := `<dkim><domain>example.com</domain><result>fail</result></dkim>`
	nestedMIME := gzipPart(t, ok)
	for i := range 9 {
		nestedMIME = fmt.Sprintf("Content-Type: multipart/mixed; boundary=\"N%d\"\r\n\r\n--N%d\r\n%s\r\n--N%d--", i, i, nestedMIME, i)
	}
	manyParts := make([]string, 70)
	for i := range manyParts {
		manyParts[i] = "Content-Type: text/plain\r\n\r\nhello"
	}
	forwarded := "Content-Type: message/rfc822\r\n\r\n" + mailWith("F1", gzipPart(t, ok))
	forwardedTwice := "Content-Type: message/rfc822\r\n\r\n" + mailWith("F2", forwarded)

	tests := []struct {
		name  string
		input func(t *testing.T) []byte
		lim   ImportLimits
		want  string // error substring; "" means accepted
	}{
		{"input over MaxInputBytes", func(*testing.T) []byte { return []byte(limitReport(300, "", "")) }, small, "input is larger than 65536 bytes"},
		{"gzip bomb stops at MaxXMLBytes", func(t *testing.T) []byte {
			return gzipBytes(t, strings.NewReader("<feedback><report_metadata><org_name>"), repeatReader(strings.Repeat("A", 1<<20), 4))
		}, small, "decompressed XML is larger than the limit (262144 bytes)"},
		{"gzip bomb of the default 64 MiB", func(t *testing.T) []byte {
			return gzipBytes(t, strings.NewReader("<feedback><!-- "), repeatReader(strings.Repeat(" ", 1<<20), 65))
		}, ImportLimits{}, "decompressed XML is larger than the limit (67108864 bytes)"},
		{"gzip bomb of zeros", func(t *testing.T) []byte {
			return gzipBytes(t, repeatReader(string(make([]byte, 1<<20)), 8))
		}, small, "gzip content: not a DMARC aggregate report"},
		{"zip with 1000 entries", func(t *testing.T) []byte { return zipBytes(t, manyEntries...) }, ImportLimits{}, "zip archive has 1000 entries, more than 16"},
		{"zip bomb entry", func(t *testing.T) []byte {
			return zipBytes(t, [2]string{"r.xml", "<feedback><!-- " + strings.Repeat(" ", 1<<20)})
		}, small, "decompressed XML is larger than the limit"},
		{"zip entry is a gzip", func(t *testing.T) []byte {
			return zipBytes(t, [2]string{"r.xml", string(gzipBytes(t, strings.NewReader(ok)))})
		}, small, "gzip inside zip: nested archives are refused"},
		{"zip entry in a folder is fine", func(t *testing.T) []byte { return zipBytes(t, [2]string{"a/b/r.XML", ok}) }, small, ""},
		{"zip entry with a backslash", func(t *testing.T) []byte { return zipBytes(t, [2]string{`..\..\r.xml`, ok}) }, small, "unsafe path"},
		{"too many records", func(*testing.T) []byte { return []byte(limitReport(11, "", "")) }, small, "report has more than 10 records"},
		{"records at the limit", func(*testing.T) []byte { return []byte(limitReport(10, "", "")) }, small, ""},
		{"too deep for MaxDepth", func(*testing.T) []byte {
			return []byte(strings.Replace(ok, "</feedback>", "<a><b><c><d><e><f><g><h></h></g></f></e></d></c></b></a></feedback>", 1))
		}, small, "XML elements nested deeper than 8"},
		{"too many dkim results", func(*testing.T) []byte { return []byte(limitReport(1, "", strings.Repeat(dkim, 101))) }, ImportLimits{}, "a record has more than 100 <record/auth_results/dkim> elements"},
		{"100 dkim results", func(*testing.T) []byte { return []byte(limitReport(1, "", strings.Repeat(dkim, 100))) }, ImportLimits{}, ""},
		{"too many errors", func(*testing.T) []byte {
			return []byte(limitReport(1, strings.Repeat("<error>x</error>", 101), ""))
		}, ImportLimits{}, "more than 100 <error> elements"},
		{"MIME nested too deep", func(*testing.T) []byte { return []byte(mailWith("B", nestedMIME)) }, ImportLimits{}, "MIME parts nested deeper than 8"},
		{"too many MIME parts", func(*testing.T) []byte { return []byte(mailWith("B", manyParts...)) }, ImportLimits{}, "more than 64 MIME parts"},
		{"forwarded report", func(*testing.T) []byte { return []byte(mailWith("B", forwarded)) }, ImportLimits{}, ""},
		{"forwarded twice", func(*testing.T) []byte { return []byte(mailWith("B", forwardedTwice)) }, ImportLimits{}, "mail messages nested too deep"},
		{"UTF-16", func(*testing.T) []byte { return []byte("\xff\xfe<\x00f\x00") }, ImportLimits{}, "UTF-16"},
		{"no root", func(*testing.T) []byte { return []byte(`<?xml version="1.0"?><!-- nothing -->`) }, ImportLimits{}, "no <feedback> element"},
		{"entity reference without DOCTYPE", func(*testing.T) []byte {
			return []byte(strings.Replace(ok, "attacker.example</org_name>", "&lol;</org_name>", 1))
		}, ImportLimits{}, "XML syntax error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := ParseReports(bytes.NewReader(tt.input(t)), "attack", tt.lim)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				checkSaneFeedback(t, out, tt.lim.withDefaults())
				return
			}
			if err == nil {
				t.Fatalf("accepted %d reports, want refused with %q", len(out), tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error = %q\nwant it to contain %q", err, tt.want)
			}
		})
	}
}

// TestParseReportsTextIsCleaned: long fields are cut, control and
// bidirectional characters replaced, whitespace collapsed.
func TestParseReportsTextIsCleaned(t *testing.T) {
	long := strings.Repeat("é", 600) // 1200 bytes
	xml := strings.Replace(limitReport(1, "<extra_contact_info>"+long+"</extra_contact_info>", ""),
		"attacker.example</org_name>", "evil&#x85;\u202egro.elpmaxe \n\t  corp</org_name>", 1)
	out, err := ParseReports(strings.NewReader(xml), "text", ImportLimits{})
	if err != nil {
		t.Fatal(err)
	}
	f := out[0]
	// U+0085 (NEL) is white space; U+202E (right-to-left override) is not
	// printed as such.
	if want := "evil \uFFFDgro.elpmaxe corp"; f.OrgName != want {
		t.Errorf("OrgName = %q, want %q", f.OrgName, want)
	}
	if len(f.ExtraContactInfo) != maxTextBytes || f.ExtraContactInfo != long[:maxTextBytes] {
		t.Errorf("ExtraContactInfo has %d bytes, want it cut at %d on a character boundary", len(f.ExtraContactInfo), maxTextBytes)
	}
}

// TestCleanText covers the text cleaning alone.
func TestCleanText(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{"  a  b \r\n c ", "a b c"},
		{"\x1b[31mred", "\uFFFD[31mred"},
		{"bad \xff byte", "bad \uFFFD byte"},
		{strings.Repeat("x", 2000), strings.Repeat("x", maxTextBytes)},
		{strings.Repeat("x", maxTextBytes-1) + " y", strings.Repeat("x", maxTextBytes-1)},
	}
	for _, tt := range tests {
		if got := cleanText([]byte(tt.in)); got != tt.want {
			t.Errorf("cleanText(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
