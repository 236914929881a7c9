package doctor_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/authmilter/authmilter/policy/doctor"
)

// goldenCase is one doctor run over the test zones: its text and JSON
// outputs are compared with testdata/golden/<name>.txt and .json, its exit
// status with exit, and check asserts what a regenerated golden file must
// not lose: each planted problem's code with its subject and fix.
type goldenCase struct {
	name  string
	args  func(w *world) []string
	exit  int
	check func(t *testing.T, reps []*doctor.Report)
}

var goldenCases = []goldenCase{
	{name: "acme", exit: 2,
		args: func(w *world) []string {
			// outbound.ips adds ownMTA; -selector esp1 is the ESP's.
			return []string{"acme.example", "-config", w.acmeCfg, "-ip", strayHost, "-ip", websiteHost, "-selector", "esp1"}
		},
		check: func(t *testing.T, reps []*doctor.Report) {
			rep := one(t, reps, "acme.example")
			// 12 lookups; include:news.example brings the 11th.
			f := need(t, rep, "spf-too-many-lookups", "include:news.example")
			if !strings.Contains(f.Message, "12") || !strings.Contains(f.Message, "include:news.example") {
				t.Errorf("spf-too-many-lookups does not say 12 lookups and which include goes over: %+v", f)
			}
			need(t, rep, "dmarc-rua-unauthorized", "reports.example")
			if len(findings(rep, "dkim-key-too-small"))+len(findings(rep, "dkim-key-weak")) == 0 {
				t.Errorf("no dkim-key-too-small or dkim-key-weak for the 1024-bit esp1 key:\n%+v", rep.Findings)
			}
			for _, f := range append(findings(rep, "dkim-key-too-small"), findings(rep, "dkim-key-weak")...) {
				if f.Subject != "esp1" || f.Fix == "" || f.Severity == doctor.OK {
					t.Errorf("key size finding: %+v", f)
				}
			}
			need(t, rep, "dkim-testing", "esp1")
			needOK(t, rep, "dkim-own-key-published", ownSelector)
			// Past the lookup limit nothing but ownMTA (ip4:, first) passes.
			needOK(t, rep, "spf-host-pass", ownMTA)
			need(t, rep, "spf-host-permerror", strayHost)
			need(t, rep, "spf-host-permerror", websiteHost)
			need(t, rep, "hosts-no-ptr", strayHost)
		}},
	{name: "voids", exit: 2,
		args: func(w *world) []string { return []string{"-config", w.plainCfg, "voids.example"} },
		check: func(t *testing.T, reps []*doctor.Report) {
			rep := one(t, reps, "voids.example")
			f := need(t, rep, "spf-too-many-void-lookups", "")
			if !strings.Contains(f.Message, "3") {
				t.Errorf("spf-too-many-void-lookups does not count 3: %+v", f)
			}
		}},
	{name: "wild", exit: 2,
		args: func(w *world) []string {
			return []string{"-config", w.plainCfg, "wild.example", "-selector", "s1", "-selector", "google"}
		},
		check: func(t *testing.T, reps []*doctor.Report) {
			rep := one(t, reps, "wild.example")
			// The wildcard's "v=spf1 -all" at a selector is not a key.
			for _, sel := range []string{"s1", "google"} {
				bad := 0
				for _, f := range rep.Findings {
					if f.Check != doctor.CheckDKIM || f.Subject != sel {
						continue
					}
					if f.Severity == doctor.OK {
						t.Errorf("selector %s of the wildcard is called fine: %+v", sel, f)
					} else if f.Fix != "" {
						bad++
					}
				}
				if bad == 0 {
					t.Errorf("no finding with a fix says selector %s is not a DKIM key:\n%+v", sel, rep.Findings)
				}
			}
		}},
	{name: "slow", exit: 2,
		args: func(w *world) []string { return []string{"-config", w.slowCfg, "slow.example"} },
		check: func(t *testing.T, reps []*doctor.Report) {
			rep := one(t, reps, "slow.example")
			f := need(t, rep, "dmarc-dns-error", "")
			if !strings.Contains(f.Message, "timeout") || !strings.Contains(f.Message, "_dmarc.slow.example") {
				t.Errorf("dmarc-dns-error does not say timeout and the name: %+v", f)
			}
			for _, f := range rep.Findings {
				if f.Check == doctor.CheckDMARC && f.Code != "dmarc-dns-error" {
					t.Errorf("a DMARC verdict despite the timeout: %+v", f)
				}
			}
		}},
	{name: "good", exit: 0,
		args: func(w *world) []string {
			return []string{"-config", w.plainCfg, "good.example", "-ip", "192.0.2.50", "-selector", "sel1"}
		},
		check: func(t *testing.T, reps []*doctor.Report) {
			rep := one(t, reps, "good.example")
			for _, f := range rep.Findings {
				if f.Severity != doctor.OK {
					t.Errorf("good.example: %+v", f)
				}
			}
			needOK(t, rep, "spf-host-pass", "192.0.2.50")
		}},
	{name: "warn", exit: 1,
		args: func(w *world) []string { return []string{"-config", w.plainCfg, "warn.example", "-selector", "sel1"} },
		check: func(t *testing.T, reps []*doctor.Report) {
			rep := one(t, reps, "warn.example")
			if rep.Status != doctor.Warn {
				t.Errorf("status %s", rep.Status)
			}
			need(t, rep, "dmarc-monitoring-only", "")
		}},
	{name: "nx", exit: 2,
		args: func(w *world) []string { return []string{"-config", w.plainCfg, "nx.example"} },
		check: func(t *testing.T, reps []*doctor.Report) {
			need(t, one(t, reps, "nx.example"), "domain-not-found", "")
		}},
	{name: "invalid", exit: 2,
		args: func(w *world) []string { return []string{"-config", w.plainCfg, "not a domain"} },
		check: func(t *testing.T, reps []*doctor.Report) {
			rep := one(t, reps, "not a domain")
			need(t, rep, "domain-invalid", "")
			if len(rep.Findings) != 1 {
				t.Errorf("checks ran on a name that is not a domain: %+v", rep.Findings)
			}
		}},
	// Several domains: printed in the order given, the worst decides the
	// exit status; the key table's own key is reported for acme only.
	{name: "several", exit: 2,
		args: func(w *world) []string {
			return []string{"-config", w.acmeCfg, "good.example", "nx.example", "warn.example", "-selector", "sel1"}
		},
		check: func(t *testing.T, reps []*doctor.Report) {
			var got []string
			for _, r := range reps {
				got = append(got, r.Domain+"="+r.Status.String())
			}
			// outbound.ips (ownMTA) is not in good's or warn's SPF.
			if strings.Join(got, " ") != "good.example=error nx.example=error warn.example=error" {
				t.Errorf("domains: %s", strings.Join(got, " "))
			}
		}},
}

// TestGolden runs doctor over each case, text and -json, and compares
// both with the golden files.
func TestGolden(t *testing.T) {
	w := newWorld(t)
	for _, tc := range goldenCases {
		t.Run(tc.name, func(t *testing.T) {
			args := tc.args(w)
			text := w.run(t, args...)
			if text.Code != tc.exit {
				t.Errorf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", text.Code, tc.exit, text.Stdout, text.Stderr)
			}
			golden(t, tc.name+".txt", w.normalise(text.Stdout))
			js := w.run(t, append(args, "-json")...)
			if js.Code != tc.exit {
				t.Errorf("-json: exit %d, want %d\nstderr:\n%s", js.Code, tc.exit, js.Stderr)
			}
			golden(t, tc.name+".json", w.normalise(js.Stdout))
			tc.check(t, jsonReports(t, js.Stdout))
		})
	}
}

// TestBulkFile checks domains listed in a -f file, with comments, as CSV:
// one row per finding, the domains in the file's order.
func TestBulkFile(t *testing.T) {
	w := newWorld(t)
	list := filepath.Join(t.TempDir(), "domains.txt")
	if err := os.WriteFile(list, []byte("# our customers\nwarn.example\n\ngood.example # the model\nnx.example\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := w.run(t, "-config", w.plainCfg, "-csv", "-f", list, "-selector", "sel1")
	if r.Code != 2 {
		t.Errorf("exit %d, want 2\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	lines := strings.Split(strings.TrimSpace(r.Stdout), "\n")
	if lines[0] != "domain,check,severity,code,subject,message,fix" {
		t.Fatalf("header %q", lines[0])
	}
	var order []string
	for _, l := range lines[1:] {
		d, _, _ := strings.Cut(l, ",")
		if len(order) == 0 || order[len(order)-1] != d {
			order = append(order, d)
		}
	}
	if strings.Join(order, " ") != "warn.example good.example nx.example" {
		t.Errorf("domains in the CSV: %q", order)
	}
	if !strings.Contains(r.Stdout, "nx.example,domain,error,domain-not-found,") {
		t.Errorf("no domain-not-found row:\n%s", r.Stdout)
	}
}

// one returns the report for domain, which must be the only one.
func one(t *testing.T, reps []*doctor.Report, domain string) *doctor.Report {
	t.Helper()
	if len(reps) != 1 || reps[0].Domain != domain {
		t.Fatalf("want one report for %q, got %d", domain, len(reps))
	}
	return reps[0]
}

// need asserts a finding with code whose subject contains subject (any
// subject when ""), not ok, with a fix, and returns it.
func need(t *testing.T, rep *doctor.Report, code, subject string) doctor.Finding {
	t.Helper()
	for _, f := range findings(rep, code) {
		if strings.Contains(f.Subject, subject) {
			if f.Severity == doctor.OK || f.Fix == "" || f.Message == "" {
				t.Errorf("%s: %s is %s, fix %q, message %q", rep.Domain, code, f.Severity, f.Fix, f.Message)
			}
			return f
		}
	}
	t.Errorf("%s: no %s finding about %q; findings:\n%s", rep.Domain, code, subject, codes(rep))
	return doctor.Finding{}
}

// needOK asserts an ok finding with code about subject.
func needOK(t *testing.T, rep *doctor.Report, code, subject string) doctor.Finding {
	t.Helper()
	for _, f := range findings(rep, code) {
		if f.Subject == subject {
			if f.Severity != doctor.OK {
				t.Errorf("%s: %s about %s is %s: %s", rep.Domain, code, subject, f.Severity, f.Message)
			}
			return f
		}
	}
	t.Errorf("%s: no %s finding about %q; findings:\n%s", rep.Domain, code, subject, codes(rep))
	return doctor.Finding{}
}

// codes lists a report's findings, one a line, for failure messages.
func codes(rep *doctor.Report) string {
	var b strings.Builder
	for _, f := range rep.Findings {
		b.WriteString("  " + f.Severity.String() + " " + f.Code + " [" + f.Subject + "] " + f.Message + "\n")
	}
	return b.String()
}

// TestKeyTableDomainsAndNoWrites: with -config and no domain, doctor
// checks the key table's domains; it changes nothing in the config's
// directory (key table, state files) while doing so.
func TestKeyTableDomainsAndNoWrites(t *testing.T) {
	w := newWorld(t)
	dir := filepath.Dir(w.acmeCfg)
	before := snapshot(t, dir)
	r := w.run(t, "-config", w.acmeCfg)
	if r.Code != 2 || !strings.HasPrefix(r.Stdout, "acme.example: error") {
		t.Errorf("exit %d, want 2 for acme.example\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	if strings.Contains(r.Stdout, "\n\n") {
		t.Errorf("more than the key table's one domain:\n%s", r.Stdout)
	}
	if after := snapshot(t, dir); after != before {
		t.Errorf("doctor changed %s:\nbefore:\n%s\nafter:\n%s", dir, before, after)
	}
}

// snapshot lists every file under dir with its mode, size and time.
func snapshot(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "%s %s %d %s\n", path, fi.Mode(), fi.Size(), fi.ModTime().Format(time.RFC3339Nano))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// TestUsageExit: a command line or config that cannot be used exits 3,
// which no report gives, with a message.
func TestUsageExit(t *testing.T) {
	w := newWorld(t)
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"-json", "-csv", "good.example"}, "exclude"},
		{[]string{"-config", filepath.Join(t.TempDir(), "missing.toml"), "good.example"}, "missing.toml"},
		{[]string{"-config", w.plainCfg}, "key table has no domain"},
		{[]string{"-config", w.plainCfg, "-ip", "999.1.1.1", "good.example"}, "not an IP address"},
	} {
		r := w.run(t, tc.args...)
		if r.Code != 3 || !strings.Contains(r.Stderr, tc.msg) || r.Stdout != "" {
			t.Errorf("%q: exit %d, stderr %q (want 3 and %q), stdout %q", tc.args, r.Code, r.Stderr, tc.msg, r.Stdout)
		}
	}
}
