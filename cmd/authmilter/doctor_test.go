package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/authmilter/authmilter/policy/doctor"
)

func TestParseDoctorArgs(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		domains []string
		ips     []string
		sels    []string
		err     string
	}{
		{args: []string{"acme.example", "-ip", "192.0.2.25", "b.example", "-selector", "s1", "-ip", "::1", "c.example"},
			domains: []string{"acme.example", "b.example", "c.example"}, ips: []string{"192.0.2.25", "::1"}, sels: []string{"s1"}},
		{args: []string{"-json", "x.example"}, domains: []string{"x.example"}},
		{args: []string{"not a domain"}, domains: []string{"not a domain"}},
		{args: []string{"-json", "-csv", "x.example"}, err: "exclude"},
		{args: []string{"-timeout", "0s", "x.example"}, err: "positive"},
		{args: []string{"-nosuchflag"}, err: "bad flag"},
	} {
		a, err := parseDoctorArgs(tc.args, io.Discard)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: err %v, want %q", tc.args, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.args, err)
			continue
		}
		if strings.Join(a.domains, "|") != strings.Join(tc.domains, "|") || strings.Join(a.ips, "|") != strings.Join(tc.ips, "|") ||
			strings.Join(a.selectors, "|") != strings.Join(tc.sels, "|") {
			t.Errorf("%q: domains %q ips %q selectors %q", tc.args, a.domains, a.ips, a.selectors)
		}
	}
}

func TestDoctorIPs(t *testing.T) {
	got, err := doctorIPs([]string{"192.0.2.25", "::ffff:192.0.2.26"}, []string{"192.0.2.25", "2001:db8::1"})
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Addr{netip.MustParseAddr("192.0.2.25"), netip.MustParseAddr("192.0.2.26"), netip.MustParseAddr("2001:db8::1")}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("got %v, want %v", got, want)
		}
	}
	if _, err := doctorIPs([]string{"192.0.2.300"}, nil); err == nil || !strings.Contains(err.Error(), "-ip") {
		t.Errorf("bad -ip: %v", err)
	}
	if _, err := doctorIPs(nil, []string{"mx.example"}); err == nil || !strings.Contains(err.Error(), "outbound.ips") {
		t.Errorf("bad outbound.ips: %v", err)
	}
}

func TestParseDoctorDomains(t *testing.T) {
	in := "# customers\n\nacme.example\n  b.example  # trailing comment\n\t\r\nc.example\r\n"
	got, err := parseDoctorDomains(strings.NewReader(in), "list")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, "|") != "acme.example|b.example|c.example" {
		t.Errorf("got %q", got)
	}
}

// TestParseDoctorDomainsLimits attacks each bound of a -f file: too many
// lines (blank ones count: they cost reading too), a line longer than a
// domain name, a huge line without a newline (refused after 4 KiB, not
// read whole).
func TestParseDoctorDomainsLimits(t *testing.T) {
	name253 := strings.Repeat("a", 249) + ".com"
	for _, tc := range []struct {
		name string
		in   io.Reader
		err  string
	}{
		{"lines", strings.NewReader(strings.Repeat("x.example\n", doctorMaxFileLines+1)), "more than 100000 lines"},
		{"blank lines", strings.NewReader(strings.Repeat("\n", doctorMaxFileLines+1)), "more than 100000 lines"},
		{"long line", strings.NewReader("ok.example\n" + name253 + "x\n"), "line 2: 254 bytes"},
		{"endless line", io.LimitReader(neverEnding('a'), 1<<30), "line 1: longer than 4096 bytes"},
	} {
		_, err := parseDoctorDomains(tc.in, "f")
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s: err %v, want %q", tc.name, err, tc.err)
		}
	}
	// At the bounds: accepted.
	lines := strings.Repeat("x.example\n", doctorMaxFileLines-1) + "  " + name253 + "  # max\n"
	got, err := parseDoctorDomains(strings.NewReader(lines), "f")
	if err != nil || len(got) != doctorMaxFileLines || got[len(got)-1] != name253 {
		t.Errorf("at the bounds: %d domains, %v", len(got), err)
	}
}

// neverEnding is an endless reader of one byte.
type neverEnding byte

func (b neverEnding) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(b)
	}
	return len(p), nil
}

// TestDoctorUsageErrors: what cannot run exits 3 with a message, and
// never 2 (which means the domain has errors).
func TestDoctorUsageErrors(t *testing.T) {
	dir := t.TempDir()
	badCfg := filepath.Join(dir, "bad.toml")
	if err := os.WriteFile(badCfg, []byte("[dns\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	long := filepath.Join(dir, "long.txt")
	if err := os.WriteFile(long, []byte(strings.Repeat("a", 300)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"-json", "-csv", "x.example"}, "exclude"},
		{[]string{"-ip", "nope", "-config", writeDoctorConfig(t), "x.example"}, `-ip "nope"`},
		{[]string{"-config", badCfg, "x.example"}, "bad.toml"},
		{[]string{"-config", writeDoctorConfig(t), "-f", long}, "longer than a domain name"},
		{[]string{"-config", writeDoctorConfig(t), "-f", filepath.Join(dir, "missing")}, "no such file"},
		{[]string{"-config", writeDoctorConfig(t)}, "key table has no domain"},
		{[]string{"-bogus"}, "flag provided but not defined"},
	} {
		var stdout, stderr bytes.Buffer
		err := runDoctor(context.Background(), tc.args, &stdout, &stderr)
		var ee exitError
		if !errors.As(err, &ee) || ee != doctorExitUsage {
			t.Errorf("%q: err %v, want exit %d", tc.args, err, doctorExitUsage)
		}
		if !strings.Contains(stderr.String(), tc.msg) || stdout.Len() != 0 {
			t.Errorf("%q: stderr %q (want %q), stdout %q", tc.args, stderr.String(), tc.msg, stdout.String())
		}
	}
}

// writeDoctorConfig writes a config with an empty key table and a DNS
// server that is never asked.
func writeDoctorConfig(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	keysDir := filepath.Join(dir, "keys")
	if err := os.MkdirAll(keysDir, 0o700); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "authmilter.toml")
	conf := "[dns]\nservers = [\"127.0.0.1:9\"]\ntimeout = \"1s\"\n[keys]\ndir = \"" + keysDir + "\"\ncheck = \"resolver\"\n"
	if err := os.WriteFile(p, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestDoctorHelp: -h prints the usage with the exit statuses, and exits 0.
func TestDoctorHelp(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if err := runDoctor(context.Background(), []string{"-h"}, &stdout, &stderr); err != nil {
		t.Errorf("-h: %v", err)
	}
	if !strings.Contains(stderr.String(), "usage: authmilter doctor DOMAIN...") || !strings.Contains(stderr.String(), "3 bad command line or config, or output failed") {
		t.Errorf("-h printed %q", stderr.String())
	}
}

// TestDoctorWriteError: a report that cannot be written exits 3, not 1
// (warnings) or 0.
func TestDoctorWriteError(t *testing.T) {
	var stderr bytes.Buffer
	err := runDoctor(context.Background(), []string{"-config", writeDoctorConfig(t), "not a domain"}, failingWriter{}, &stderr)
	var ee exitError
	if !errors.As(err, &ee) || ee != doctorExitUsage || !strings.Contains(stderr.String(), "write the report") {
		t.Errorf("err %v, stderr %q", err, stderr.String())
	}
}

// failingWriter fails every write, like a closed pipe.
type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("broken pipe") }

func TestDoctorExit(t *testing.T) {
	for _, tc := range []struct {
		statuses []doctor.Severity
		want     int
	}{
		{nil, 0}, {[]doctor.Severity{doctor.OK}, 0}, {[]doctor.Severity{doctor.OK, doctor.Warn}, 1},
		{[]doctor.Severity{doctor.Error, doctor.Warn, doctor.OK}, 2},
	} {
		var reports []*doctor.Report
		for _, s := range tc.statuses {
			reports = append(reports, &doctor.Report{Status: s})
		}
		got := 0
		var ee exitError
		if err := doctorExit(reports); errors.As(err, &ee) {
			got = int(ee)
		}
		if got != tc.want {
			t.Errorf("%v: exit %d, want %d", tc.statuses, got, tc.want)
		}
	}
}

// TestRunDoctorPool: reports come back in input order, whatever order
// the checks end in, and never more than the workers run at once.
func TestRunDoctorPool(t *testing.T) {
	var domains []string
	for i := range 100 {
		domains = append(domains, fmt.Sprintf("d%03d.example", i))
	}
	var mu sync.Mutex
	running, most := 0, 0
	reports := runDoctorPool(domains, 8, func(d string) *doctor.Report {
		mu.Lock()
		running++
		most = max(most, running)
		mu.Unlock()
		// Later domains take less time: they finish out of order.
		var n int
		fmt.Sscanf(d, "d%03d.example", &n)
		time.Sleep(time.Duration(100-n) * 20 * time.Microsecond)
		mu.Lock()
		running--
		mu.Unlock()
		return &doctor.Report{Domain: d}
	})
	for i, r := range reports {
		if r.Domain != domains[i] {
			t.Fatalf("report %d is %s, want %s", i, r.Domain, domains[i])
		}
	}
	if most > 8 || most < 1 {
		t.Errorf("%d checks ran at once, want 1 to 8", most)
	}
	if got := runDoctorPool(nil, 8, nil); len(got) != 0 {
		t.Errorf("no domains: %v", got)
	}
}

// FuzzParseDoctorDomains: whatever the file holds, the result is a list
// of trimmed, non-empty names without comments, each at most 253 bytes,
// or an error.
func FuzzParseDoctorDomains(f *testing.F) {
	f.Add("acme.example\n# c\n\n b.example # x\r\n")
	f.Add(strings.Repeat("a", 300))
	f.Add("\x00\xff#\n\t")
	f.Fuzz(func(t *testing.T, in string) {
		got, err := parseDoctorDomains(strings.NewReader(in), "fuzz")
		if err != nil {
			return
		}
		for _, d := range got {
			if d == "" || len(d) > doctorMaxNameLen || strings.Contains(d, "#") || strings.TrimSpace(d) != d || strings.Contains(d, "\n") {
				t.Fatalf("bad name %q from %q", d, in)
			}
		}
	})
}
