// Package daemontest holds what the tests that run the real `authmilter
// run` binary share (test/reload, test/reports, test/soak, test/esp): a
// free port, starting the daemon with its log kept, the end of a log,
// waiting for a log line, reading one series of /metrics, and stopping the
// daemon by SIGTERM when the test ends.
package daemontest

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/authmilter/authmilter/internal/syncbuf"
)

// FreePort returns a free TCP "127.0.0.1:port".
func FreePort(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// Tail returns the last n lines of s.
func Tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// WaitLog polls logs every poll until a line containing substr appears
// after offset from, and returns the whole line and when it was seen. It
// fails the test when the daemon exits first (exited is closed) or after
// timeout, with the end of the log.
func WaitLog(t testing.TB, logs func() string, exited <-chan struct{}, substr string, from int, timeout, poll time.Duration) (string, time.Time) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		all := logs()
		from = min(from, len(all))
		if i := strings.Index(all[from:], substr); i >= 0 {
			seen := time.Now()
			start := strings.LastIndexByte(all[:from+i], '\n') + 1
			line, _, _ := strings.Cut(all[start:], "\n")
			return line, seen
		}
		select {
		case <-exited:
			t.Fatalf("authmilter exited while waiting for %q:\n%s", substr, Tail(all, 40))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no log line with %q within %s:\n%s", substr, timeout, Tail(all[from:], 40))
		}
		time.Sleep(poll)
	}
}

// Metric returns the value of one counter or gauge line of the /metrics
// page at addr (host:port), e.g. `authmilter_reloads_total{result="error"}`;
// 0 when the series is absent.
func Metric(addr, series string) (float64, error) {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return 0, fmt.Errorf("metrics: %w", err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return 0, fmt.Errorf("metrics: %q: %w", sc.Text(), err)
			}
			return f, nil
		}
	}
	return 0, sc.Err()
}

// StopAtCleanup stops cmd (whose Wait closes exited) with SIGTERM, by its
// PID, when the test ends; a daemon still running 15 s later is killed and
// the test fails. then, if not nil, runs after it stopped (to check or show
// its log).
func StopAtCleanup(t testing.TB, cmd *exec.Cmd, exited <-chan struct{}, then func()) {
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-exited
			t.Errorf("authmilter did not stop on SIGTERM")
		}
		if then != nil {
			then()
		}
	})
}

// Process is an `authmilter run` that a test started.
type Process struct {
	Cmd  *exec.Cmd
	Logs *syncbuf.Buffer // its standard output and error
	Done <-chan struct{} // closed when it has exited
}

// StartRun starts `binary run -config cfgPath` and stops it at the test's
// end (StopAtCleanup). Then the test fails if the log reports a data race
// (a binary built with -race), and shows the log's last 60 lines if it
// failed; name, if not "", tells a test's daemons apart in those
// messages. StartRun
// does not wait for the daemon to listen: see WaitLog.
func StartRun(t testing.TB, name, binary, cfgPath string) *Process {
	t.Helper()
	label := strings.TrimSpace("authmilter " + name)
	logs := &syncbuf.Buffer{}
	cmd := exec.Command(binary, "run", "-config", cfgPath)
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: %v", label, err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	StopAtCleanup(t, cmd, done, func() {
		if strings.Contains(logs.String(), "WARNING: DATA RACE") {
			t.Errorf("%s reported a data race:\n%s", label, logs.String())
		}
		if t.Failed() {
			t.Logf("%s log (last 60 lines):\n%s", label, Tail(logs.String(), 60))
		}
	})
	return &Process{Cmd: cmd, Logs: logs, Done: done}
}
