package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/authmilter/authmilter/internal/daemontest"
	"github.com/authmilter/authmilter/internal/loadmsg"
	"github.com/authmilter/authmilter/internal/miltertest"
)

// daemonConfig is what the benchmark's config file for one daemon holds.
type daemonConfig struct {
	keysDir, dnsServer, milterAddr, metricsAddr string
	recheck                                     string
	// keysExtra are more [keys] settings, for binaries that know them.
	keysExtra string
}

// toml is the config file: only settings that every authmilter version
// since the key checks were added knows, so that an older binary can be
// measured with the same file.
func (c daemonConfig) toml() string {
	q := strconv.Quote
	return fmt.Sprintf(`# written by bench/scale
listen = [%s]
authserv_id = "scale.test"

[dns]
servers = [%s]

[keys]
dir = %s
check = "resolver"
activate_after = "0s"
recheck = %s
%s
[metrics]
listen = %s

[log]
level = "info"
format = "json"
`, q("inet:"+c.milterAddr), q(c.dnsServer), q(c.keysDir), q(c.recheck), c.keysExtra, q(c.metricsAddr))
}

// daemon is one running `authmilter run`.
type daemon struct {
	cmd         *exec.Cmd
	started     time.Time
	exited      chan struct{}
	logs        *logWatch
	milterAddr  string
	metricsAddr string
}

// startDaemon runs binary with the config cfg written to cfgPath; its log
// is also copied to logPath unless that is empty.
func startDaemon(binary, cfgPath string, cfg daemonConfig, logPath string) (*daemon, error) {
	if err := os.WriteFile(cfgPath, []byte(cfg.toml()), 0o600); err != nil {
		return nil, err
	}
	cmd := exec.Command(binary, "run", "-config", cfgPath)
	// A benchmark killed outright (SIGKILL, where no cleanup runs) must
	// not leave a daemon behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stdout = os.Stderr
	if f, ok := stderr.(*os.File); ok {
		// A larger pipe (1 MiB, the unprivileged limit) absorbs bursts of
		// log lines. F_SETPIPE_SZ is 1031; syscall has no name for it.
		syscall.Syscall(syscall.SYS_FCNTL, f.Fd(), 1031, 1<<20)
	}
	var logFile *os.File
	if logPath != "" {
		if logFile, err = os.Create(logPath); err != nil {
			return nil, err
		}
	}
	d := &daemon{cmd: cmd, exited: make(chan struct{}), logs: newLogWatch(), milterAddr: cfg.milterAddr, metricsAddr: cfg.metricsAddr}
	d.started = time.Now()
	if err := cmd.Start(); err != nil {
		if logFile != nil {
			logFile.Close()
		}
		return nil, fmt.Errorf("start %s: %w", binary, err)
	}
	go func() {
		var r io.Reader = stderr
		if logFile != nil {
			r = io.TeeReader(stderr, logFile)
		}
		d.logs.read(r)
		cmd.Wait()
		if logFile != nil {
			logFile.Close()
		}
		close(d.exited)
	}()
	return d, nil
}

// pid is the daemon's process ID.
func (d *daemon) pid() int { return d.cmd.Process.Pid }

// stop ends the daemon by SIGTERM, and by SIGKILL if it is still there
// after a generous shutdown.
func (d *daemon) stop() error {
	select {
	case <-d.exited:
		return nil
	default:
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
		return nil
	case <-time.After(60 * time.Second):
		d.cmd.Process.Kill()
		<-d.exited
		return errors.New("authmilter did not stop within 60 s of SIGTERM; killed")
	}
}

// failure describes what went wrong, with the end of the daemon's log.
func (d *daemon) failure(format string, args ...any) error {
	state := "running"
	select {
	case <-d.exited:
		state = "exited: " + d.cmd.ProcessState.String()
	default:
	}
	return fmt.Errorf("%s (authmilter %s); its log ends:\n%s", fmt.Sprintf(format, args...), state, d.logs.tail(30))
}

// metric reads one series of the daemon's /metrics.
func (d *daemon) metric(series string) (float64, error) {
	return daemontest.Metric(d.metricsAddr, series)
}

// logEntry is one log line of the daemon, with when it was read.
type logEntry struct {
	at   time.Time
	msg  string // the "msg" of a JSON line, else the whole line
	line string // the line, shortened
}

// logWatch collects the daemon's log lines as they come.
type logWatch struct {
	mu      sync.Mutex
	entries []logEntry
	changed chan struct{} // closed and replaced at a new line if waiting
	waiting bool          // someone waits on changed
}

func newLogWatch() *logWatch { return &logWatch{changed: make(chan struct{})} }

// maxLine bounds the part of a log line that is kept (a 100,000-key start
// logs one line per key).
const maxLine = 400

// read reads lines from r until it ends.
// It must keep up with the daemon: a daemon whose stderr pipe is full
// waits in its log calls, and a start that logs 125,000 "key activated"
// lines would then be measured slower than it is.
func (w *logWatch) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		e := logEntry{at: time.Now(), msg: line}
		if m, ok := jsonMsg(sc.Bytes()); ok {
			e.msg = m
		}
		if len(line) > maxLine {
			line = line[:maxLine] + "..."
		}
		if len(e.msg) > maxLine {
			e.msg = e.msg[:maxLine]
		}
		e.line = line
		w.mu.Lock()
		w.entries = append(w.entries, e)
		if w.waiting {
			close(w.changed)
			w.changed = make(chan struct{})
			w.waiting = false
		}
		w.mu.Unlock()
	}
	io.Copy(io.Discard, r)
}

// jsonMsg returns the "msg" of a log/slog JSON line. slog writes time,
// level and msg first, so the first "msg":" is the field; a value with
// escapes is left to encoding/json.
func jsonMsg(line []byte) (string, bool) {
	const key = `"msg":"`
	i := bytes.Index(line, []byte(key))
	if i < 0 {
		return "", false
	}
	start := i + len(key)
	for j := start; j < len(line); j++ {
		switch line[j] {
		case '\\':
			var v struct {
				Msg string `json:"msg"`
			}
			if json.Unmarshal(line, &v) != nil {
				return "", false
			}
			return v.Msg, true
		case '"':
			return string(line[start:j]), true
		}
	}
	return "", false
}

// mark returns the number of lines read so far, for waitFor's from.
func (w *logWatch) mark() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.entries)
}

// waitFor waits for the first line at or after index from whose msg
// satisfies match, and returns it with its index.
func (w *logWatch) waitFor(ctx context.Context, d *daemon, from int, what string, match func(msg string) bool, timeout time.Duration) (logEntry, int, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		w.mu.Lock()
		for ; from < len(w.entries); from++ {
			if match(w.entries[from].msg) {
				e := w.entries[from]
				w.mu.Unlock()
				return e, from, nil
			}
		}
		changed := w.changed
		w.waiting = true
		w.mu.Unlock()
		select {
		case <-changed:
		case <-d.exited:
			// The reader may have the last lines still to hand over.
			if w.mark() > from {
				continue
			}
			return logEntry{}, 0, d.failure("authmilter exited while waiting for the log line %s", what)
		case <-deadline.C:
			return logEntry{}, 0, d.failure("no log line %s within %s", what, timeout)
		case <-ctx.Done():
			return logEntry{}, 0, ctx.Err()
		}
	}
}

// tail returns the last n lines.
func (w *logWatch) tail(n int) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var b strings.Builder
	for _, e := range w.entries[max(0, len(w.entries)-n):] {
		b.WriteString(e.line)
		b.WriteByte('\n')
	}
	return b.String()
}

// count returns how many lines from index from on have a msg that
// satisfies match.
func (w *logWatch) count(from int, match func(string) bool) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, e := range w.entries[min(from, len(w.entries)):] {
		if match(e.msg) {
			n++
		}
	}
	return n
}

// procStatus reads fields of /proc/PID/status in KiB (VmRSS, VmHWM).
func procStatus(pid int, fields ...string) (map[string]int64, error) {
	data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return nil, err
	}
	out := map[string]int64{}
	for _, line := range strings.Split(string(data), "\n") {
		name, rest, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		for _, f := range fields {
			if name == f {
				v, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
				if err != nil {
					return nil, fmt.Errorf("/proc/%d/status: %q: %w", pid, line, err)
				}
				out[f] = v
			}
		}
	}
	for _, f := range fields {
		if _, ok := out[f]; !ok {
			return nil, fmt.Errorf("/proc/%d/status has no %s", pid, f)
		}
	}
	return out, nil
}

// resetPeak sets the process's VmHWM back to its current RSS.
func resetPeak(pid int) error {
	return os.WriteFile(filepath.Join("/proc", strconv.Itoa(pid), "clear_refs"), []byte("5"), 0)
}

// signature is the d= and s= of one DKIM-Signature.
type signature struct{ domain, selector string }

// probe sends one outbound message From domain and returns the signatures
// the milter added; the error is that of the milter connection.
func probe(ctx context.Context, addr, domain string) ([]signature, error) {
	tx := miltertest.Transaction{ClientHost: "localhost", ClientIP: "127.0.0.1", Helo: "localhost",
		MailFrom: "sender@" + domain, RcptTo: []string{"rcpt@example.org"}, QueueID: "SCALE1", LeadingSpace: true}
	res, err := miltertest.Run(ctx, "tcp", addr, tx, loadmsg.Generate(2048, "scale", domain, "example.org"))
	if err != nil {
		return nil, err
	}
	var out []signature
	for _, m := range res.Modifications {
		if strings.EqualFold(m.HeaderName, "DKIM-Signature") {
			out = append(out, parseSignature(m.HeaderValue))
		}
	}
	return out, nil
}

// parseSignature reads d= and s= from a DKIM-Signature value.
func parseSignature(v string) signature {
	var s signature
	for _, tag := range strings.Split(v, ";") {
		name, val, ok := strings.Cut(tag, "=")
		if !ok {
			continue
		}
		val = strings.Join(strings.Fields(val), "")
		switch strings.TrimSpace(name) {
		case "d":
			s.domain = strings.ToLower(val)
		case "s":
			s.selector = strings.ToLower(val)
		}
	}
	return s
}

// freeAddr returns a free "127.0.0.1:port" for TCP.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}
