// Package daemontest holds what the tests that run the real `authmilter
// run` binary share (test/reload, test/soak, test/esp): a free port, the
// end of a log, waiting for a log line, reading one series of /metrics,
// and stopping the daemon by SIGTERM when the test ends.
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
