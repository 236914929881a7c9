// Package dnsproc runs the real DNS servers of the integration tests
// (knotd, unbound) as children of the test binary: the one place that knows
// the binaries and what to install, starts a server in the foreground with
// its output captured, waits until it answers, kills it by PID when the test
// ends, and probes loopback addresses before a server is given one.
//
// The DNS worlds built on it (internal/dnstopo, keys/publish/publishtest)
// write their own configurations: only what every knotd configuration
// starts with is here (KnotServerConf).
package dnsproc

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/authmilter/authmilter/internal/syncbuf"
)

// The server binaries and their control tools (Debian paths).
const (
	KnotBinary           = "/usr/sbin/knotd"
	KnotcBinary          = "/usr/sbin/knotc"
	UnboundBinary        = "/usr/sbin/unbound"
	UnboundControlBinary = "/usr/sbin/unbound-control"
	UnboundCheckBinary   = "/usr/sbin/unbound-checkconf"
)

// Require fails t when one of binaries is missing, naming it and what to
// install (hint, e.g. "apt-get install knot"): a test never skips for a
// missing server. who prefixes the message (the calling package).
func Require(t testing.TB, who, hint string, binaries ...string) {
	t.Helper()
	if err := Missing(hint, binaries...); err != nil {
		t.Fatalf("%s: %v", who, err)
	}
}

// Missing returns an error naming the first of binaries that is missing
// and what to install (hint); nil when all are there.
func Missing(hint string, binaries ...string) error {
	for _, b := range binaries {
		if _, err := os.Stat(b); err != nil {
			return fmt.Errorf("%s not found (%v); install it with: %s", b, err, hint)
		}
	}
	return nil
}

// Process is a server running in the foreground as a child of the test
// binary, its standard output and error kept in a buffer.
type Process struct {
	name string // the binary's base name, for messages
	cmd  *exec.Cmd
	logs *syncbuf.Buffer
	done chan struct{}
	err  error // Wait's result, set before done is closed
}

// Start starts the binary path with args and kills it (by PID) when t
// ends. If the test binary dies without running its cleanups, the kernel
// kills the server too (Pdeathsig), so no server outlives a crashed test
// run holding its port.
func Start(t testing.TB, path string, args ...string) (*Process, error) {
	p := &Process{name: filepath.Base(path), logs: &syncbuf.Buffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(path, args...)
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", path, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(p.Stop)
	return p, nil
}

// PID returns the process ID.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Logs returns what the server wrote so far.
func (p *Process) Logs() string { return p.logs.String() }

// Exited reports whether the process has ended, with its exit error.
func (p *Process) Exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// Stop kills the process by its PID and waits for it; the servers hold
// nothing worth a clean shutdown. Stopping an ended process does nothing.
func (p *Process) Stop() {
	if done, _ := p.Exited(); done {
		return
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

// WaitReady calls ready every 50 ms until it returns nil. It gives up with
// the server's log when the process exits or ctx ends (then with ready's
// last error).
func (p *Process) WaitReady(ctx context.Context, ready func(context.Context) error) error {
	for {
		err := ready(ctx)
		if err == nil {
			return nil
		}
		if done, exitErr := p.Exited(); done {
			return fmt.Errorf("%s exited (%v): %s", p.name, exitErr, p.Logs())
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s does not answer: %v; log:\n%s", p.name, err, p.Logs())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// AnswersSOA asks addr for the SOA record of zone and returns nil when the
// answer holds it. recursive asks a resolver (recursion desired); otherwise
// the server must answer authoritatively, which knotd does only once it has
// loaded the zone.
func AnswersSOA(ctx context.Context, addr, zone string, recursive bool) error {
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(zone), dns.TypeSOA)
	q.RecursionDesired = recursive
	c := &dns.Client{Timeout: 3 * time.Second}
	r, _, err := c.ExchangeContext(ctx, q, addr)
	if err != nil {
		return err
	}
	if r.Rcode != dns.RcodeSuccess || (!recursive && !r.Authoritative) {
		return fmt.Errorf("SOA %s at %s: %s (aa=%v)", dns.Fqdn(zone), addr, dns.RcodeToString[r.Rcode], r.Authoritative)
	}
	for _, rr := range r.Answer {
		if _, ok := rr.(*dns.SOA); ok {
			return nil
		}
	}
	return fmt.Errorf("SOA %s at %s: no SOA in the answer", dns.Fqdn(zone), addr)
}

// CanBind checks that addr ("ip:port") can be bound for UDP and TCP.
func CanBind(addr string) error {
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return err
	}
	pc.Close()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	return l.Close()
}

// FreeLoopbackAddr finds a port on 127.0.0.1 that is free for both UDP and
// TCP and returns "127.0.0.1:port". Another process may take it before the
// server binds it: callers retry the start.
func FreeLoopbackAddr() (string, error) {
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", err
		}
		addr := l.Addr().String()
		pc, err := net.ListenPacket("udp", addr)
		l.Close()
		if err != nil {
			continue
		}
		pc.Close()
		return addr, nil
	}
	return "", errors.New("no free port on 127.0.0.1")
}

// NewSecret makes a random HMAC-SHA256 TSIG secret (base64) and writes it
// alone to file (mode 0600), as keys.publish.tsig_secret_file reads it.
func NewSecret(file string) (string, error) {
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", fmt.Errorf("tsig secret: %w", err)
	}
	secret := base64.StdEncoding.EncodeToString(raw)
	if err := os.WriteFile(file, []byte(secret+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("tsig secret file: %w", err)
	}
	return secret, nil
}

// KnotControlSocket is the control socket (for knotc) of the knotd whose
// directory is dir.
func KnotControlSocket(dir string) string { return filepath.Join(dir, "knot.sock") }

// KnotServerConf returns the sections every test knotd configuration
// starts with: everything (pid file, journal database, control socket) in
// dir, listening on listen ("ip@port"), logging to stderr (the Process's
// log). The caller appends its keys, ACLs, templates and zones.
func KnotServerConf(dir, listen string) string {
	return fmt.Sprintf(`server:
    rundir: "%[1]s"
    listen: %[2]s
    pidfile: "%[1]s/knot.pid"
log:
  - target: stderr
    any: info
database:
    storage: "%[1]s/db"
control:
    listen: "%[3]s"
`, dir, listen, KnotControlSocket(dir))
}

// ZoneRead returns what knotd holds in zone at owner of type rrtype (""
// for every type) from its zone contents (knotc zone-read on the control
// socket sock): unlike a query it never answers from a wildcard. Each
// record is one trimmed line of knotc's output ("[zone.] owner TTL TYPE
// data"); an owner without records gives nil.
func ZoneRead(ctx context.Context, sock, zone, owner, rrtype string) ([]string, error) {
	args := []string{"-s", sock, "zone-read", dns.Fqdn(zone), dns.Fqdn(owner)}
	if rrtype != "" {
		args = append(args, rrtype)
	}
	out, err := Run(ctx, KnotcBinary, args...)
	if err != nil {
		// knotc reports an owner without records as an error ("no such
		// name in the zone" in 3.2).
		if strings.Contains(out, "no such") || strings.Contains(out, "not exist") {
			return nil, nil
		}
		return nil, err
	}
	var recs []string
	for _, l := range strings.Split(out, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			recs = append(recs, l)
		}
	}
	return recs, nil
}

// Run runs a control tool (knotc, unbound-control, a configuration
// checker) and returns its output, with the output in the error when it
// fails.
func Run(ctx context.Context, name string, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}
