// Package reporttest holds what the tests of DMARC aggregate reports
// share (cmd/authmilter, test/reports, test/e2e): the RFC 9990 schema and
// its check with the real xmllint, and the report read back from a report
// message as an MTA delivered it.
package reporttest

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
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// maxReportBytes bounds a gunzipped report read back: a test's reports
// are far smaller, and a runaway one must not take the machine's memory.
const maxReportBytes = 64 << 20

// schemaPath is the RFC 9990 schema, from the repository's root.
var schemaPath = filepath.Join("reports", "testdata", "rfc9990.xsd")

// Schema returns the absolute path of RFC 9990's schema. It fails the
// test when xmllint is not installed (saying which Debian package has it)
// or the schema is not found above the test's folder.
func Schema(t testing.TB) string {
	t.Helper()
	if _, err := exec.LookPath("xmllint"); err != nil {
		t.Fatalf("xmllint is needed to validate reports: install the Debian package libxml2-utils (%v)", err)
	}
	root, err := repoRoot()
	if err != nil {
		t.Fatalf("the RFC 9990 schema: %v", err)
	}
	return filepath.Join(root, schemaPath)
}

// repoRoot is the nearest folder at or above the working directory that
// holds the schema (a test runs in its package's folder).
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, schemaPath)); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no %s in any folder above the working directory", schemaPath)
		}
		dir = parent
	}
}

// Validate checks doc against the schema at xsd (see Schema) with the
// real xmllint, without network access; a failure is an error of the test
// that names what (a file name, a domain) and shows xmllint's complaint.
func Validate(t testing.TB, xsd, what string, doc []byte) {
	t.Helper()
	cmd := exec.Command("xmllint", "--noout", "--nonet", "--schema", xsd, "-")
	cmd.Stdin = bytes.NewReader(doc)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("%s: the report does not validate against RFC 9990's schema: %v\n%s\n%s", what, err, out, doc)
	}
}

// subjectRE is RFC 9990's Subject with its folding undone:
// "Report Domain: <domain> Submitter: <receiver> Report-ID: <id>".
var subjectRE = regexp.MustCompile(`^Report Domain: (\S+) Submitter: \S+ Report-ID: \S+`)

// AttachedXML returns the gunzipped report of a report message, after
// checking what RFC 9990 asks of the message: the Subject, and an
// application/gzip part in base64 whose file name ends in ".xml.gz" and
// names the policy domain ("receiver!domain!begin!end[!id].xml.gz").
// domain is the policy domain the report must be about; "" takes the one
// in the Subject. A message that cannot be read fails the test.
func AttachedXML(t testing.TB, raw []byte, domain string) []byte {
	t.Helper()
	msg, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("report mail: %v\n%s", err, raw)
	}
	subject := strings.Join(strings.Fields(msg.Header.Get("Subject")), " ")
	if m := subjectRE.FindStringSubmatch(subject); m == nil {
		t.Errorf("report Subject %q, want \"Report Domain: %s Submitter: ... Report-ID: ...\"", subject, domain)
	} else if domain == "" {
		domain = m[1]
	} else if m[1] != domain {
		t.Errorf("report Subject %q is not about %s", subject, domain)
	}
	x, err := gzipPart(msg, domain)
	if err != nil {
		t.Fatalf("%s: report mail: %v\n%s", domain, err, raw)
	}
	return x
}

// gzipPart finds the first application/gzip part of msg, checks its
// encoding and file name, and gunzips it.
func gzipPart(msg *mail.Message, domain string) ([]byte, error) {
	mt, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil || !strings.HasPrefix(mt, "multipart/") {
		return nil, fmt.Errorf("Content-Type %q is not multipart (%v)", msg.Header.Get("Content-Type"), err)
	}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	for {
		p, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			return nil, errors.New("no application/gzip part")
		}
		if err != nil {
			return nil, err
		}
		if ct, _, _ := mime.ParseMediaType(p.Header.Get("Content-Type")); ct != "application/gzip" {
			continue
		}
		if cte := p.Header.Get("Content-Transfer-Encoding"); !strings.EqualFold(cte, "base64") {
			return nil, fmt.Errorf("the attachment's Content-Transfer-Encoding is %q, want base64", cte)
		}
		if name := p.FileName(); !strings.HasSuffix(name, ".xml.gz") || !strings.Contains(name, "!"+domain+"!") {
			return nil, fmt.Errorf("the attachment's file name %q is not receiver!%s!begin!end[!id].xml.gz", name, domain)
		}
		zr, err := gzip.NewReader(base64.NewDecoder(base64.StdEncoding, p))
		if err != nil {
			return nil, fmt.Errorf("attachment: %w", err)
		}
		x, err := io.ReadAll(io.LimitReader(zr, maxReportBytes+1))
		if err != nil {
			return nil, fmt.Errorf("attachment: %w", err)
		}
		if len(x) > maxReportBytes {
			return nil, fmt.Errorf("attachment: more than %d bytes gunzipped", maxReportBytes)
		}
		return x, nil
	}
}
