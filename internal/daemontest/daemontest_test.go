package daemontest

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestTail(t *testing.T) {
	if got := Tail("a\nb\nc\n", 2); got != "b\nc" {
		t.Errorf("Tail = %q", got)
	}
	if got := Tail("a", 5); got != "a" {
		t.Errorf("Tail short = %q", got)
	}
}

func TestWaitLog(t *testing.T) {
	logs := "one x=1\ntwo msg=listening y=2\nthree msg=listening z=3\n"
	line, _ := WaitLog(t, func() string { return logs }, nil, "msg=listening", 0, time.Second, time.Millisecond)
	if line != "two msg=listening y=2" {
		t.Errorf("from 0: %q", line)
	}
	from := strings.Index(logs, "three")
	if line, _ = WaitLog(t, func() string { return logs }, nil, "listening", from, time.Second, time.Millisecond); line != "three msg=listening z=3" {
		t.Errorf("after an offset: %q", line)
	}
}

func TestMetric(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "# HELP x\nauthmilter_reloads_total{result=\"ok\"} 3\nauthmilter_reloads_total{result=\"error\"} 1.5")
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	for series, want := range map[string]float64{`authmilter_reloads_total{result="ok"}`: 3, `authmilter_reloads_total{result="error"}`: 1.5, "absent": 0} {
		if got, err := Metric(addr, series); err != nil || got != want {
			t.Errorf("Metric(%s) = %v, %v; want %v", series, got, err, want)
		}
	}
}

// cleanupRecorder is a testing.TB whose cleanups run when the test says
// and whose failures are recorded, to check what StartRun does at the end.
type cleanupRecorder struct {
	testing.TB
	cleanups []func()
	errors   []string
}

func (r *cleanupRecorder) Helper()             {}
func (r *cleanupRecorder) Cleanup(f func())    { r.cleanups = append(r.cleanups, f) }
func (r *cleanupRecorder) Failed() bool        { return len(r.errors) > 0 }
func (r *cleanupRecorder) Logf(string, ...any) {}
func (r *cleanupRecorder) Errorf(format string, args ...any) {
	r.errors = append(r.errors, fmt.Sprintf(format, args...))
}

func (r *cleanupRecorder) runCleanups() {
	for i := len(r.cleanups) - 1; i >= 0; i-- {
		r.cleanups[i]()
	}
}

// fakeDaemon writes a stand-in for the authmilter binary: it prints its
// arguments and "msg=listening", then the extra line, and waits for a
// signal.
func fakeDaemon(t *testing.T, extra string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "authmilter")
	script := "#!/bin/sh\necho \"args: $*\"\necho msg=listening\necho '" + extra + "'\nexec sleep 600\n"
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestStartRun(t *testing.T) {
	for _, tc := range []struct {
		name, extra string
		wantError   string
	}{
		{"clean", "msg=ready", ""},
		{"data race", "WARNING: DATA RACE", "authmilter racy reported a data race"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &cleanupRecorder{TB: t}
			p := StartRun(r, "racy", fakeDaemon(t, tc.extra), "/etc/authmilter.toml")
			WaitLog(t, p.Logs.String, p.Done, tc.extra, 0, time.Minute, 10*time.Millisecond)
			if !strings.Contains(p.Logs.String(), "args: run -config /etc/authmilter.toml") {
				t.Errorf("started with the wrong arguments:\n%s", p.Logs.String())
			}
			r.runCleanups()
			select {
			case <-p.Done:
			default:
				t.Error("the daemon still runs after the cleanup")
			}
			if got := strings.Join(r.errors, "\n"); tc.wantError == "" && got != "" || !strings.Contains(got, tc.wantError) {
				t.Errorf("errors %q, want %q", got, tc.wantError)
			}
		})
	}
}
