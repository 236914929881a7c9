//go:build soak

package soak

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/authmilter/authmilter/internal/daemontest"
	"github.com/authmilter/authmilter/internal/testbin"
)

// binary is the authmilter binary built by TestMain.
var binary string

func TestMain(m *testing.M) { testbin.Main(m, &binary) }

// daemon is a running `authmilter run` whose stderr goes to a file (10,000
// message lines are too many to keep re-reading from memory).
type daemon struct {
	cmd     *exec.Cmd
	logPath string
	sock    string
	metrics string // host:port of /metrics
	done    chan struct{}
}

// freePort returns a free TCP port on 127.0.0.1.
func freePort(t testing.TB) string { return daemontest.FreePort(t) }

// startDaemon writes a config (a unix socket in dir, metrics on a free
// port, DNS from dnsAddr with a per-query timeout, keys from keyDir, plus
// extra TOML for [keys]), starts `authmilter run` and waits until it listens. It is stopped
// with SIGTERM (by PID) when the test ends.
func startDaemon(t testing.TB, dir, dnsAddr, dnsTimeout, keyDir, extra string) *daemon {
	t.Helper()
	d := &daemon{
		logPath: filepath.Join(dir, "authmilter.log"),
		sock:    filepath.Join(dir, "authmilter.sock"),
		metrics: freePort(t),
		done:    make(chan struct{}),
	}
	cfgPath := filepath.Join(dir, "authmilter.toml")
	conf := fmt.Sprintf(`listen = ["unix:%s"]
authserv_id = "mx.soak.example"
shutdown_timeout = "10s"
[dns]
servers = [%q]
timeout = %q
[outbound]
networks = ["127.0.0.0/8"]
[reports]
record = false

[metrics]
listen = %q
[log]
level = "info"
[keys]
check = "resolver"
dir = %q
%s`, d.sock, dnsAddr, dnsTimeout, d.metrics, keyDir, extra)
	if err := os.WriteFile(cfgPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(d.logPath)
	if err != nil {
		t.Fatal(err)
	}
	d.cmd = exec.Command(binary, "run", "-config", cfgPath)
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	logf.Close() // the child has its own descriptor
	go func() { d.cmd.Wait(); close(d.done) }()
	daemontest.StopAtCleanup(t, d.cmd, d.done, nil)
	d.waitLog(t, "msg=listening", 0, 30*time.Second)
	return d
}

// logs returns the daemon's log so far.
func (d *daemon) logs(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile(d.logPath)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// logLen returns the length of the log so far, to wait for lines after it.
func (d *daemon) logLen(t testing.TB) int { return len(d.logs(t)) }

// waitLog waits for a log line containing substr after offset from and
// returns the line and when it was seen.
func (d *daemon) waitLog(t testing.TB, substr string, from int, timeout time.Duration) (string, time.Time) {
	t.Helper()
	// The log is a file of thousands of lines: read it less often.
	return daemontest.WaitLog(t, func() string { return d.logs(t) }, d.done, substr, from, timeout, 20*time.Millisecond)
}

func tail(s string, n int) string { return daemontest.Tail(s, n) }

// metric returns the value of a counter or gauge line of /metrics, e.g.
// `authmilter_reloads_total{result="error"}`; 0 when absent.
func (d *daemon) metric(t testing.TB, series string) float64 {
	t.Helper()
	v, err := daemontest.Metric(d.metrics, series)
	if err != nil {
		// Called from the load's goroutines too: no t.Fatal there.
		t.Error(err)
	}
	return v
}

// logfmt parses one line of slog's text format into its attributes.
// Values are bare or double-quoted with Go escapes.
func logfmt(line string) map[string]string {
	out := map[string]string{}
	for line != "" {
		line = strings.TrimLeft(line, " ")
		k, rest, ok := strings.Cut(line, "=")
		if !ok {
			break
		}
		var v string
		if strings.HasPrefix(rest, `"`) {
			// Find the closing quote, skipping escaped ones.
			end := 1
			for end < len(rest) && rest[end] != '"' {
				if rest[end] == '\\' {
					end++
				}
				end++
			}
			end = min(end+1, len(rest))
			if u, err := strconv.Unquote(rest[:end]); err == nil {
				v = u
			} else {
				v = rest[:end]
			}
			line = rest[end:]
		} else {
			v, line, _ = strings.Cut(rest, " ")
		}
		out[k] = v
	}
	return out
}
