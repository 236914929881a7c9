package reporttest

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/authmilter/authmilter/reports"
)

// recorder is a testing.TB that records failures instead of failing the
// test, to check that the helpers fail where they must. Fatalf ends the
// goroutine, as testing's does.
type recorder struct {
	testing.TB
	mu     sync.Mutex
	errors []string
	fatal  bool
}

func (r *recorder) Helper() {}

func (r *recorder) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errors = append(r.errors, fmt.Sprintf(format, args...))
}

func (r *recorder) Fatalf(format string, args ...any) {
	r.Errorf(format, args...)
	r.mu.Lock()
	r.fatal = true
	r.mu.Unlock()
	runtime.Goexit()
}

// record runs f with a recorder on a goroutine of its own.
func record(t *testing.T, f func(tb testing.TB)) *recorder {
	r := &recorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(r)
	}()
	<-done
	return r
}

// testReport is the send tests' golden report (valid against the schema).
func testReport(t *testing.T) []byte {
	t.Helper()
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	x, err := os.ReadFile(filepath.Join(root, "reports", "testdata", "send", "report.xml"))
	if err != nil {
		t.Fatal(err)
	}
	return x
}

func gzipped(t *testing.T, b []byte) []byte {
	t.Helper()
	var z bytes.Buffer
	zw := gzip.NewWriter(&z)
	zw.Write(b)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return z.Bytes()
}

// reportMessage is a report message about example.com as the reports
// package makes it, carrying report (already gzip'd).
func reportMessage(t *testing.T, gz []byte) []byte {
	t.Helper()
	day := time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC)
	end := day.Add(24*time.Hour - time.Second)
	m, err := reports.ReportMessage(reports.ReportMail{
		Meta: reports.Meta{OrgName: "Example Receiver", Email: "dmarc-reports@mx.receiver.example"},
		To:   "dmarc@example.com", Domain: "example.com", ReportID: "r1",
		Begin: day, End: end, FileName: reports.FileName("mx.receiver.example", "example.com", day, end, "r1"),
		Report: gz, Date: day.Add(25 * time.Hour),
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestAttachedXML(t *testing.T) {
	x := testReport(t)
	good := reportMessage(t, gzipped(t, x))
	for _, domain := range []string{"example.com", ""} {
		var got []byte
		r := record(t, func(tb testing.TB) { got = AttachedXML(tb, good, domain) })
		if len(r.errors) != 0 || !bytes.Equal(got, x) {
			t.Errorf("domain %q: errors %q; got the report back: %v", domain, r.errors, bytes.Equal(got, x))
		}
	}
}

// TestAttachedXMLRefuses: each way a report message can be wrong fails
// the test, with a message that says what.
func TestAttachedXMLRefuses(t *testing.T) {
	good := string(reportMessage(t, gzipped(t, testReport(t))))
	bomb := reportMessage(t, gzipped(t, make([]byte, maxReportBytes+1)))
	for _, tc := range []struct {
		name   string
		msg    string
		domain string
		fatal  bool
		want   string
	}{
		{"another domain", good, "example.net", true, "is not about example.net"},
		{"subject without Report-ID", strings.Replace(good, "\r\n Report-ID:", "\r\n Report:", 1), "", true, "report Subject"},
		{"not multipart", strings.Replace(good, "multipart/mixed", "text/plain", 1), "", true, "is not multipart"},
		{"no gzip part", strings.ReplaceAll(good, "application/gzip", "application/zip"), "", true, "no application/gzip part"},
		{"not base64", strings.Replace(good, "Content-Transfer-Encoding: base64", "Content-Transfer-Encoding: 8bit", 1), "", true, "want base64"},
		{"file name of another domain", strings.ReplaceAll(good, "!example.com!", "!example.org!"), "", true, "file name"},
		{"not gzip", strings.Replace(good, "H4sI", "AAAA", 1), "", true, "attachment"},
		{"gzip bomb", string(bomb), "", true, fmt.Sprintf("more than %d bytes", maxReportBytes)},
		{"not a message", "no header here", "", true, "report mail"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := record(t, func(tb testing.TB) { AttachedXML(tb, []byte(tc.msg), tc.domain) })
			if r.fatal != tc.fatal || !strings.Contains(strings.Join(r.errors, "\n"), tc.want) {
				t.Errorf("fatal %v, errors %q; want fatal %v with %q", r.fatal, r.errors, tc.fatal, tc.want)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	xsd := Schema(t)
	x := testReport(t)
	if r := record(t, func(tb testing.TB) { Validate(tb, xsd, "golden", x) }); len(r.errors) != 0 {
		t.Errorf("the golden report: %q", r.errors)
	}
	bad := bytes.Replace(x, []byte("<version>1.0</version>"), []byte("<version>one</version>"), 1)
	r := record(t, func(tb testing.TB) { Validate(tb, xsd, "bad version", bad) })
	if r.fatal || len(r.errors) != 1 || !strings.HasPrefix(r.errors[0], "bad version: the report does not validate") {
		t.Errorf("a report with a bad version: fatal %v, %q", r.fatal, r.errors)
	}
}
