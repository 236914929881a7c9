package e2e

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"text/template"
	"time"

	"github.com/authmilter/authmilter/internal/interop"
	"github.com/authmilter/authmilter/internal/smtpsink"
	"github.com/authmilter/authmilter/internal/testdns"
)

// The identities the tests use. They match testdata/e2e/dns.zone and the
// MTA configurations there.
const (
	authservID = "mx.test.example"
	ourDomain  = "example.com"    // signed by authmilter (outbound)
	extDomain  = "sender.example" // an outside sender that signs with dkimpy
	extSel     = "ext2026"
	rejDomain  = "reject.example" // p=reject, no way to pass
	rcptDomain = "our.example"    // the inbound recipient domain (Postfix relay_domains)
	rsaSel     = "2026-11"
	edSel      = "2026-11e"
	saslUser   = "submit@example.com"
	saslPass   = "e2e-secret-Pa55"
	internalIP = "127.0.0.1" // in mynetworks and outbound.networks
	externalIP = "127.0.0.2" // outside both
	// sinkIP is where the SMTP sink listens. Not 127.0.0.1: Sendmail counts
	// [127.0.0.1] as itself and will not use it as a smart host.
	sinkIP = "127.0.0.3"
)

// env is everything the tests share: one authmilter binary, one DNS
// server, one sink, the authmilter instances, and the MTAs (started on
// first use). It is torn down by TestMain.
type env struct {
	root    string // private directory under /tmp, mode 0755
	repo    string // repository root
	bin     string // the authmilter binary
	dns     *testdns.Server
	dnsAddr string // "127.x.y.z:53"
	keysDir string
	extKey  []byte // PEM of sender.example's key, for dkimpy
	sink    *smtpsink.Server

	main     *milterProc // Postfix smtpd_milters/non_smtpd_milters, Sendmail
	enforce  *milterProc // [dmarc] enforce = true
	down     *milterProc // stopped and started by TestPostfix/milter_down
	simple   *milterProc // [signing] canonicalization = "simple/simple"
	spy      *spyMilter  // asks for SMFIP_HDR_LEADSPC, as authmilter does
	spyPlain *spyMilter  // asks for nothing

	postfix *postfix // started by getPostfix
	dovecot *proc

	mu       sync.Mutex
	cleanups []func()
}

var (
	theEnv   *env
	envOnce  sync.Once
	envErr   error
	teardown sync.Mutex
)

func TestMain(m *testing.M) {
	code := m.Run()
	if theEnv != nil {
		theEnv.close()
	}
	os.Exit(code)
}

// getEnv sets up the shared environment on first use and fails the test if
// that did not work (the same error for every test).
func getEnv(t *testing.T) *env {
	t.Helper()
	envOnce.Do(func() {
		theEnv = &env{}
		envErr = theEnv.setup()
	})
	if envErr != nil {
		t.Fatalf("e2e setup: %v", envErr)
	}
	return theEnv
}

// missing is the error for a tool that is not installed.
func missing(tool, pkg string, err error) error {
	return fmt.Errorf("%s is not available (%v): install the Debian package %s (or run test/e2e/install-deps.sh as root)", tool, err, pkg)
}

// needTools checks executables; each entry is path or name, and package.
func needTools(tools ...[2]string) error {
	var errs []error
	for _, tp := range tools {
		if _, err := exec.LookPath(tp[0]); err != nil {
			errs = append(errs, missing(tp[0], tp[1], err))
		}
	}
	return errors.Join(errs...)
}

func (e *env) setup() error {
	if os.Geteuid() != 0 {
		return errors.New("the end-to-end tests must run as root (DNS on port 53, Postfix's postdrop, Sendmail)")
	}
	if err := needTools(
		[2]string{"/usr/bin/python3", "python3"},
		[2]string{"opendkim", "opendkim"},
	); err != nil {
		return err
	}
	var err error
	if e.repo, err = filepath.Abs("../.."); err != nil {
		return err
	}
	// Postfix and Dovecot processes that are not root must traverse it.
	if e.root, err = os.MkdirTemp("/tmp", "authmilter-e2e-"); err != nil {
		return err
	}
	if err := os.Chmod(e.root, 0o755); err != nil {
		return err
	}
	if err := watch.start(e.root); err != nil {
		return err
	}
	if err := e.build(); err != nil {
		return err
	}
	if err := e.startDNS(); err != nil {
		return err
	}
	if err := e.makeKeys(); err != nil {
		return err
	}
	if e.sink, err = smtpsink.Listen(sinkIP+":0", smtpsink.Options{Dir: filepath.Join(e.root, "sink")}); err != nil {
		return err
	}
	e.onClose(func() { e.sink.Close() })
	if e.spy, err = startSpy(true); err != nil {
		return err
	}
	e.onClose(func() { e.spy.close() })
	if e.spyPlain, err = startSpy(false); err != nil {
		return err
	}
	e.onClose(func() { e.spyPlain.close() })
	if e.main, err = e.startMilter("main", false, canonRelaxed); err != nil {
		return err
	}
	if e.enforce, err = e.startMilter("enforce", true, canonRelaxed); err != nil {
		return err
	}
	if e.down, err = e.startMilter("down", false, canonRelaxed); err != nil {
		return err
	}
	if e.simple, err = e.startMilter("simple", false, canonSimple); err != nil {
		return err
	}
	return nil
}

// onClose registers f to run at teardown (in reverse order).
func (e *env) onClose(f func()) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.cleanups = append(e.cleanups, f)
}

func (e *env) close() {
	teardown.Lock()
	defer teardown.Unlock()
	e.mu.Lock()
	cl := e.cleanups
	e.cleanups = nil
	e.mu.Unlock()
	for i := len(cl) - 1; i >= 0; i-- {
		cl[i]()
	}
	watch.disarm()
	if e.root != "" && os.Getenv("E2E_KEEP") == "" {
		os.RemoveAll(e.root)
	} else if e.root != "" {
		fmt.Fprintf(os.Stderr, "e2e: kept %s\n", e.root)
	}
}

// build compiles the authmilter binary once.
func (e *env) build() error {
	goBin, err := exec.LookPath("go")
	if err != nil {
		return missing("go", "golang (Go 1.26)", err)
	}
	e.bin = filepath.Join(e.root, "bin", "authmilter")
	cmd := exec.Command(goBin, "build", "-o", e.bin, "./cmd/authmilter")
	cmd.Dir = e.repo
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/authmilter: %v\n%s", err, out)
	}
	return os.Chmod(filepath.Dir(e.bin), 0o755)
}

// startDNS starts testdns on port 53 of a random loopback address (OpenDKIM
// cannot be given another port) and loads testdata/e2e/dns.zone.
func (e *env) startDNS() error {
	var lastErr error
	for range 50 {
		b := make([]byte, 3)
		rand.Read(b)
		ip := net.IPv4(127, b[0], b[1], 1+b[2]%254)
		if ip.Equal(net.IPv4(127, 0, 0, 1)) || ip.Equal(net.IPv4(127, 0, 0, 2)) || ip.Equal(net.IPv4(127, 0, 0, 53)) {
			continue
		}
		s, err := testdns.New(net.JoinHostPort(ip.String(), "53"))
		if err != nil {
			lastErr = err
			continue
		}
		e.dns, e.dnsAddr = s, s.Addr()
		e.onClose(func() { s.Close() })
		return e.dns.LoadZoneFile(filepath.Join(e.repo, "testdata/e2e/dns.zone"))
	}
	return fmt.Errorf("no free port 53 on 127.0.0.0/8: %v", lastErr)
}

// makeKeys generates our keys with `authmilter keygen` and publishes the
// records it prints, and makes sender.example's key for dkimpy.
func (e *env) makeKeys() error {
	e.keysDir = filepath.Join(e.root, "keys")
	cfg, err := e.writeMilterConfig("keygen", 1, false, canonRelaxed)
	if err != nil {
		return err
	}
	for _, k := range []struct{ sel, algo string }{{rsaSel, "rsa-2048"}, {edSel, "ed25519"}} {
		cmd := exec.Command(e.bin, "keygen", "-config", cfg, "-d", ourDomain, "-s", k.sel, "-a", k.algo, "-format", "value")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return fmt.Errorf("authmilter keygen -d %s -s %s: %v: %s", ourDomain, k.sel, err, stderr.String())
		}
		e.dns.SetTXT(k.sel+"._domainkey."+ourDomain, strings.TrimSpace(string(out)))
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	e.extKey = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	rec, err := interop.DNSRecord(e.extKey)
	if err != nil {
		return err
	}
	e.dns.SetTXT(extSel+"._domainkey."+extDomain, rec)
	return nil
}

// render fills the template testdata/e2e/<name> and writes it to dst.
func (e *env) render(name, dst string, data any) error {
	src := filepath.Join(e.repo, "testdata/e2e", name)
	tmpl, err := template.New(filepath.Base(name)).Option("missingkey=error").ParseFiles(src)
	if err != nil {
		return err
	}
	var b bytes.Buffer
	if err := tmpl.Execute(&b, data); err != nil {
		return fmt.Errorf("%s: %w", src, err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	return os.WriteFile(dst, b.Bytes(), 0o644)
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// waitPort waits until addr accepts TCP connections, or p exits.
func waitPort(addr string, timeout time.Duration, p *proc) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if p != nil && p.exited() {
			return fmt.Errorf("%s exited before listening on %s: %v\n%s", p.name, addr, p.waitErr(), p.tail(40))
		}
		if time.Now().After(deadline) {
			msg := fmt.Sprintf("nothing listens on %s after %v: %v", addr, timeout, err)
			if p != nil {
				msg += "\n" + p.tail(40)
			}
			return errors.New(msg)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// proc is a process the tests started; it is stopped by its PID only.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

// startProc starts a process with stdout and stderr appended to logPath.
func startProc(name, logPath string, args ...string) (*proc, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	// Its own process group, so that a terminal's ^C does not reach it
	// before the test has stopped it cleanly.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	watch.add(p, fmt.Sprintf("kill -TERM %d", cmd.Process.Pid))
	go func() {
		p.err = cmd.Wait()
		watch.remove(p)
		f.Close()
		close(p.done)
	}()
	return p, nil
}

// watchdog stops what the tests started when the test binary dies without
// tearing down (go test -timeout panics, a kill): a detached shell waits
// for our PID to go, then runs root/cleanup.sh, which always lists the
// processes running at that moment (by PID) and how to stop them.
type watchdog struct {
	mu   sync.Mutex
	file string
	cmds map[*proc]string
}

var watch = &watchdog{cmds: map[*proc]string{}}

// start writes nothing yet and starts the detached watcher.
func (w *watchdog) start(root string) error {
	w.mu.Lock()
	w.file = filepath.Join(root, "cleanup.sh")
	w.mu.Unlock()
	rm := fmt.Sprintf("rm -rf %s", root)
	if os.Getenv("E2E_KEEP") != "" {
		rm = "true"
	}
	script := fmt.Sprintf("while kill -0 %d 2>/dev/null; do sleep 0.5; done; if [ -f %s ]; then sh %s; sleep 2; %s; fi",
		os.Getpid(), w.file, w.file, rm)
	cmd := exec.Command("sh", "-c", script)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	go cmd.Wait()
	return nil
}

func (w *watchdog) add(p *proc, stop string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.cmds[p] = stop
	w.writeLocked()
}

func (w *watchdog) remove(p *proc) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.cmds, p)
	w.writeLocked()
}

// disarm is called after a clean teardown: nothing is left to stop.
func (w *watchdog) disarm() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.file != "" {
		os.Remove(w.file)
	}
	w.file = ""
}

func (w *watchdog) writeLocked() {
	if w.file == "" {
		return
	}
	var b strings.Builder
	b.WriteString("# written by test/e2e: stops what a dead test run left running\n")
	for _, c := range w.cmds {
		b.WriteString(c + " 2>/dev/null\n")
	}
	os.WriteFile(w.file, []byte(b.String()), 0o644)
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *proc) waitErr() error {
	<-p.done
	return p.err
}

// stop sends SIGTERM to the process and waits; after 10 s it kills it.
func (p *proc) stop() {
	if p.exited() {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

// tail returns the last n lines of the process's log.
func (p *proc) tail(n int) string { return tailFile(p.log, n) }

func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// The two [signing] canonicalization settings the daemons use.
const (
	canonRelaxed = "relaxed/relaxed" // the default
	canonSimple  = "simple/simple"
)

// milterProc is one authmilter daemon.
type milterProc struct {
	name  string
	port  int
	canon string // [signing] canonicalization
	cfg   string
	log   string
	p     *proc
	mu    sync.Mutex
}

func (m *milterProc) addr() string { return fmt.Sprintf("127.0.0.1:%d", m.port) }

// writeMilterConfig renders testdata/e2e/authmilter.toml for an instance.
func (e *env) writeMilterConfig(name string, port int, enforce bool, canon string) (string, error) {
	path := filepath.Join(e.root, "authmilter", name+".toml")
	err := e.render("authmilter.toml", path, map[string]any{
		"Name": name, "Port": port, "DNS": e.dnsAddr, "KeysDir": e.keysDir, "Enforce": enforce,
		"Canonicalization": canon, "ReportsDB": filepath.Join(e.root, "authmilter", name+"-reports.db"),
	})
	return path, err
}

// startMilter starts an authmilter instance on a free port.
func (e *env) startMilter(name string, enforce bool, canon string) (*milterProc, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	cfg, err := e.writeMilterConfig(name, port, enforce, canon)
	if err != nil {
		return nil, err
	}
	m := &milterProc{name: name, port: port, canon: canon, cfg: cfg, log: filepath.Join(e.root, "authmilter", name+".log")}
	if err := e.runMilter(m); err != nil {
		return nil, err
	}
	e.onClose(func() { m.stop() })
	return m, nil
}

// runMilter (re)starts m's daemon and waits until it listens.
func (e *env) runMilter(m *milterProc) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	p, err := startProc("authmilter "+m.name, m.log, e.bin, "run", "-config", m.cfg)
	if err != nil {
		return err
	}
	m.p = p
	return waitPort(m.addr(), 15*time.Second, p)
}

// stop stops m's daemon (SIGTERM, by PID) and waits for it.
func (m *milterProc) stop() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.p != nil {
		m.p.stop()
	}
}

// logLine returns the daemon's "message" log line for a queue ID.
func (m *milterProc) logLine(queueID string) string {
	b, _ := os.ReadFile(m.log)
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, "msg=message") && strings.Contains(l, "queue="+queueID+" ") {
			return l
		}
	}
	return ""
}

// waitLogLine waits for the daemon's log line for queueID: the daemon logs
// after it answers the MTA, so the line may come a moment after delivery.
func (m *milterProc) waitLogLine(queueID string) string {
	deadline := time.Now().Add(5 * time.Second)
	for {
		if l := m.logLine(queueID); l != "" || time.Now().After(deadline) {
			return l
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// token returns a unique marker for one test message.
func token(name string) string {
	b := make([]byte, 6)
	rand.Read(b)
	return "e2e-" + name + "-" + hex.EncodeToString(b)
}
