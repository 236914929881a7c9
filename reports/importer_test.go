package reports

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

var updateReceivedGolden = flag.Bool("update-received-golden", false, "test only: rewrite testdata/received/golden from the parser's output")

const (
	receivedGood      = "testdata/received/good"
	receivedGolden    = "testdata/received/golden"
	receivedMalformed = "testdata/received/malformed"
)

// readDirFiles lists the regular files of dir, sorted.
func readDirFiles(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if e.Type().IsRegular() {
			out = append(out, e.Name())
		}
	}
	if len(out) == 0 {
		t.Fatalf("no files in %s", dir)
	}
	return out
}

// TestParseReportsCorpus parses each good report as receivers send them and
// compares it with its golden JSON.
func TestParseReportsCorpus(t *testing.T) {
	for _, name := range readDirFiles(t, receivedGood) {
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join(receivedGood, name))
			if err != nil {
				t.Fatal(err)
			}
			got, err := ParseReports(bytes.NewReader(data), name, ImportLimits{})
			if err != nil {
				t.Fatalf("ParseReports: %v", err)
			}
			checkSaneFeedback(t, got, ImportLimits{}.withDefaults())
			js, err := json.MarshalIndent(got, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			js = append(js, '\n')
			golden := filepath.Join(receivedGolden, name+".json")
			if *updateReceivedGolden {
				if err := os.WriteFile(golden, js, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run the test with -update-received-golden to write it)", err)
			}
			if !bytes.Equal(js, want) {
				t.Errorf("parsed report differs from %s:\n got: %s\nwant: %s", golden, js, want)
			}
		})
	}
}

// TestParseReportsCorpusFacts checks facts of the corpus that the goldens
// must hold, written out independently of them.
func TestParseReportsCorpusFacts(t *testing.T) {
	parse := func(name string) []*Feedback {
		t.Helper()
		data, err := os.ReadFile(filepath.Join(receivedGood, name))
		if err != nil {
			t.Fatal(err)
		}
		out, err := ParseReports(bytes.NewReader(data), name, ImportLimits{})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	may1 := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)

	ms := parse("protection.outlook.com!example.com!1777593600!1777680000.xml.gz")[0]
	if ms.OrgName != "Outlook.com" || len(ms.Rows) != 3 || len(ms.Rows[0].DKIM) != 2 || ms.Rows[0].EnvelopeTo != "outlook.com" {
		t.Errorf("Outlook.com report: %+v", ms)
	}
	if !ms.End.Equal(may1.Add(24*time.Hour)) || !ms.Rows[2].Day.Equal(may1) {
		t.Errorf("Outlook.com range %s..%s, day %s", ms.Begin, ms.End, ms.Rows[2].Day)
	}

	cc := parse("comcast.net!example.com!1777593600!1777679999.xml.gz")[0]
	if cc.OrgName != "comcast.net" || cc.ReportID != "comcast.net:example.com:1777593600:4213" || cc.Policy.Domain != "example.com" || cc.Policy.P != "quarantine" {
		t.Errorf("whitespace, BOM and case not normalized: %+v", cc)
	}
	if r := cc.Rows[0]; r.Count != 8 || r.HeaderFrom != "example.com" || r.EnvelopeFrom != "" || r.DKIM[0].Result != "pass" || r.SPF[0].Scope != "helo" {
		t.Errorf("comcast row: %+v", r)
	}

	latin := parse("fai.example!example.com!1777593600!1777679999.xml")[0]
	if want := "Service postmaster – Société Exemple, Zürich"; latin.ExtraContactInfo != want {
		t.Errorf("windows-1252 text = %q, want %q", latin.ExtraContactInfo, want)
	}
	if ip := latin.Rows[0].SourceIP.String(); ip != "198.51.100.10" {
		t.Errorf("IPv4-mapped source_ip = %s, want it unmapped", ip)
	}

	rfc := parse("mail.example.org!example.com!1777593600!1777679999.xml")[0]
	if rfc.Policy.DiscoveryMethod != "treewalk" || rfc.Policy.NP != "reject" || rfc.Policy.Testing != "n" || len(rfc.Errors) != 1 || len(rfc.Rows) != 3 {
		t.Errorf("RFC 9990 report: %+v", rfc)
	}
	if r := rfc.Rows[1]; r.Disposition != "reject" || len(r.Overrides) != 1 || r.Overrides[0].Type != "local_policy" || len(r.SPF) != 2 || r.SPF[1].Scope != "helo" {
		t.Errorf("RFC 9990 row: %+v", r)
	}

	bundle := parse("mx.example.net-bundle.zip")
	if len(bundle) != 2 || bundle[1].Rows[0].Count != 20 || bundle[1].Rows[0].Domain != "news.example.com" {
		t.Errorf("zip of two reports: %+v", bundle)
	}

	mailru := parse("mail.ru-report.eml")[0]
	if mailru.OrgName != "Mail.Ru" || mailru.Rows[1].SourceIP.String() != "2001:db8:5::6" {
		t.Errorf("mail.ru mail: %+v", mailru)
	}
	google := parse("google.com-report.eml")[0]
	if google.ReportID != "13853291727043170988" || google.Rows[0].Count != 98 {
		t.Errorf("google.com mail: %+v", google)
	}
}

// TestParseReportsMalformed refuses each hostile or broken input of the
// corpus with the reason in its .want file.
func TestParseReportsMalformed(t *testing.T) {
	for _, name := range readDirFiles(t, receivedMalformed) {
		if strings.HasSuffix(name, ".want") {
			continue
		}
		t.Run(name, func(t *testing.T) {
			want, err := os.ReadFile(filepath.Join(receivedMalformed, name+".want"))
			if err != nil {
				t.Fatalf("every malformed input needs a .want file with the expected reason: %v", err)
			}
			data, err := os.ReadFile(filepath.Join(receivedMalformed, name))
			if err != nil {
				t.Fatal(err)
			}
			got, err := ParseReports(bytes.NewReader(data), name, ImportLimits{})
			if err == nil {
				t.Fatalf("accepted, want refused with %q; got %d reports", want, len(got))
			}
			if got != nil {
				t.Errorf("refused input still returned %d reports", len(got))
			}
			if w := strings.TrimSpace(string(want)); !strings.Contains(err.Error(), w) {
				t.Errorf("error = %q\nwant it to contain %q", err, w)
			}
			if !strings.HasPrefix(err.Error(), "reports: "+name+": ") {
				t.Errorf("error %q does not name the input", err)
			}
		})
	}
}

// TestImportCorpusTwice imports the good corpus twice: the second time
// everything is a duplicate. The malformed corpus adds nothing.
func TestImportCorpusTwice(t *testing.T) {
	ctx := context.Background()
	s := newImportMemStore()
	files := readDirFiles(t, receivedGood)
	const reports = 10 // the bundle holds two

	first, err := Import(ctx, s, receivedGood, nil, ImportLimits{})
	if err != nil {
		t.Fatal(err)
	}
	if first.Files != len(files) || first.Reports != reports || first.Duplicates != 0 || first.Refused != 0 || len(first.Errors) != 0 {
		t.Fatalf("first import: %+v", first)
	}
	second, err := Import(ctx, s, receivedGood, nil, ImportLimits{})
	if err != nil {
		t.Fatal(err)
	}
	if second.Files != len(files) || second.Reports != 0 || second.Duplicates != reports || second.Refused != 0 {
		t.Fatalf("second import: %+v", second)
	}

	bad, err := Import(ctx, s, receivedMalformed, nil, ImportLimits{})
	if err != nil {
		t.Fatal(err)
	}
	inputs := 0
	for _, name := range readDirFiles(t, receivedMalformed) {
		if !strings.HasSuffix(name, ".want") {
			inputs++
		}
	}
	// The .want files are inputs too, and are refused as not reports.
	if bad.Reports != 0 || bad.Duplicates != 0 || bad.Refused != bad.Files || bad.Files < inputs || len(bad.Errors) != bad.Refused {
		t.Fatalf("malformed import: %+v", bad)
	}
	if n := s.count(); n != reports {
		t.Errorf("store holds %d reports after the malformed import, want %d (nothing partial)", n, reports)
	}
	for _, e := range bad.Errors {
		if !strings.HasPrefix(e, receivedMalformed+"/") || strings.Count(e, ": ") < 1 {
			t.Errorf("error %q is not \"file: reason\"", e)
		}
	}
}

// TestImportOneFileAndStdin imports a single file and standard input.
func TestImportOneFileAndStdin(t *testing.T) {
	ctx := context.Background()
	s := newImportMemStore()
	path := filepath.Join(receivedGood, "yahoo.com!example.com!1777593600!1777679999.gz")
	res, err := Import(ctx, s, path, nil, ImportLimits{})
	if err != nil || res.Files != 1 || res.Reports != 1 {
		t.Fatalf("Import(file) = %+v, %v", res, err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	res, err = Import(ctx, s, "-", bytes.NewReader(data), ImportLimits{})
	if err != nil || res.Files != 1 || res.Duplicates != 1 {
		t.Fatalf("Import(stdin) = %+v, %v", res, err)
	}
	res, err = Import(ctx, s, "-", strings.NewReader("<html>nope</html>"), ImportLimits{})
	if err != nil || res.Refused != 1 || len(res.Errors) != 1 || !strings.HasPrefix(res.Errors[0], "stdin: input is an HTML page") {
		t.Fatalf("Import(stdin html) = %+v, %v", res, err)
	}
	if _, err := Import(ctx, s, filepath.Join(t.TempDir(), "missing"), nil, ImportLimits{}); err == nil {
		t.Error("Import of a missing path succeeded")
	}
}

// TestImportFolderRefusesSymlinksAndSpecialFiles: a folder's symlinks are
// not followed (not even to a good report) and a FIFO does not block.
func TestImportFolderRefusesSymlinksAndSpecialFiles(t *testing.T) {
	dir := t.TempDir()
	outside := t.TempDir()
	good, err := os.ReadFile(filepath.Join(receivedGood, "mail.example.org!example.com!1777593600!1777679999.xml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(outside, "secret.xml"), good, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(outside, "secret.xml"), filepath.Join(dir, "link.xml")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(dir, "linkdir")); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(dir, "fifo.xml"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "sub", "report.xml"), good, 0o644); err != nil {
		t.Fatal(err)
	}
	s := newImportMemStore()
	res, err := Import(context.Background(), s, dir, nil, ImportLimits{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Files != 4 || res.Reports != 1 || res.Refused != 3 {
		t.Fatalf("Import = %+v; want the file in sub/ stored and fifo, link and linkdir refused", res)
	}
	for _, e := range res.Errors {
		if !strings.Contains(e, "not a regular file") {
			t.Errorf("error %q, want \"not a regular file\"", e)
		}
	}
}

// TestImportStoreFailureStops: a store that fails stops the import with an
// error naming the file and the report.
func TestImportStoreFailureStops(t *testing.T) {
	s := newImportMemStore()
	s.failImport = errors.New("database is down")
	res, err := Import(context.Background(), s, receivedGood, nil, ImportLimits{})
	if err == nil || !strings.Contains(err.Error(), "database is down") || !strings.Contains(err.Error(), receivedGood) {
		t.Fatalf("Import = %+v, %v; want the store's error with the file", res, err)
	}
	if res.Files != 1 || res.Reports != 0 {
		t.Errorf("Import went on after the store failed: %+v", res)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Import(ctx, newImportMemStore(), receivedGood, nil, ImportLimits{}); !errors.Is(err, context.Canceled) {
		t.Errorf("Import with a canceled context = %v", err)
	}
}

// TestImportLimitsDefaults: zero fields take the documented defaults.
func TestImportLimitsDefaults(t *testing.T) {
	got := ImportLimits{MaxRecords: 7, MaxDepth: -1}.withDefaults()
	want := ImportLimits{MaxInputBytes: 32 << 20, MaxXMLBytes: 64 << 20, MaxZipEntries: 16, MaxRecords: 7, MaxDepth: 32}
	if got != want {
		t.Errorf("withDefaults = %+v, want %+v", got, want)
	}
}
