package reload

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/authmilter/authmilter/internal/miltertest"
	"github.com/authmilter/authmilter/internal/testdns"
	"github.com/authmilter/authmilter/keys"
)

// Issue 8 items 7 to 9: a reload never leaves the daemon worse than
// before, SIGTERM is honoured during a reload, the daemon listens (and
// signs with what it knew) while DNS does not answer, and settings changed
// by SIGHUP take effect or are reported.

// writeFileAtomic replaces path the way editors and config management
// should: a temporary file in the same folder, renamed over it.
func writeFileAtomic(t testing.TB, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// editConfig rewrites the config with each old -> new replacement, which
// must all be present.
func editConfig(t testing.TB, path string, pairs ...string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := string(data)
	for i := 0; i < len(pairs); i += 2 {
		if !strings.Contains(s, pairs[i]) {
			t.Fatalf("config has no %q:\n%s", pairs[i], s)
		}
		s = strings.Replace(s, pairs[i], pairs[i+1], 1)
	}
	writeFileAtomic(t, path, []byte(s))
}

// signedWith sends n outbound messages and fails the test unless each is
// signed with exactly want (comma-separated d/s/a, "" for unsigned).
func signedWith(t *testing.T, sock string, n int, want string) {
	t.Helper()
	l := &load{sock: sock, conns: 1, perConn: n}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l.run(ctx, n)
	res := l.snapshot()
	if len(res) != n {
		t.Fatalf("%d of %d messages sent", len(res), n)
	}
	for _, s := range res {
		if s.err != nil || strings.Join(s.selectors, ",") != want {
			t.Fatalf("message: %v, signed %q, want %q", s.err, s.selectors, want)
		}
	}
}

// hupRefused sends SIGHUP and waits for the reload to be refused with a
// reason containing want, counted in authmilter_reloads_total.
func hupRefused(t *testing.T, d *daemon, want string) {
	t.Helper()
	before := d.metric(t, `authmilter_reloads_total{result="error"}`)
	from := d.logLen()
	d.hup(t)
	line, _ := d.waitLog(t, "reload failed; keeping the previous config and keys", from, 20*time.Second)
	if !strings.Contains(line, want) {
		t.Errorf("the refused reload's log line does not say %q: %s", want, line)
	}
	if after := d.metric(t, `authmilter_reloads_total{result="error"}`); after <= before {
		t.Errorf("refused reload not counted: authmilter_reloads_total{result=\"error\"} %v -> %v", before, after)
	}
}

// hupOK sends SIGHUP and waits for the reload to succeed.
func hupOK(t *testing.T, d *daemon) {
	t.Helper()
	from := d.logLen()
	d.hup(t)
	d.waitLog(t, "msg=reloaded", from, 20*time.Second)
}

// check runs `authmilter check` and returns its exit status and stderr.
func check(t *testing.T, cfgPath string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var stderr strings.Builder
	cmd := exec.CommandContext(ctx, binary, "check", "-config", cfgPath)
	cmd.Stderr = &stderr
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), stderr.String()
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0, stderr.String()
}

// oneKey is a daemon's surroundings for most tests here: a DNS server, a
// key folder with example.com/2026-10 (RSA, published) and a config with
// keys.recheck = 1h (rechecks only when a test asks).
type oneKey struct {
	tmp, keyDir            string
	cfgPath, sock, metrics string
	dns                    *testdns.Server
	key                    *keys.Key
	name                   string // the key's record name
}

func newOneKey(t *testing.T) *oneKey {
	t.Helper()
	e := &oneKey{tmp: t.TempDir(), dns: testdns.Start(t)}
	e.keyDir = filepath.Join(e.tmp, "keys")
	e.key = genKey(t, e.keyDir, "example.com", "2026-10", "rsa-2048")
	e.name = keys.RecordName(e.key.Domain, e.key.Selector)
	e.dns.SetTXT(e.name, keys.FormatRecord(e.key))
	e.cfgPath, e.sock, e.metrics = writeConfig(t, e.tmp, e.dns.Addr(), e.keyDir, "recheck = \"1h\"\n")
	return e
}

// start starts the daemon and waits until it signs with the key.
func (e *oneKey) start(t *testing.T) *daemon {
	t.Helper()
	d := startDaemon(t, e.cfgPath, e.sock, e.metrics)
	d.waitLog(t, "key activated d=example.com s=2026-10", 0, 10*time.Second)
	return d
}

// TestReloadRefusesWhatWouldStopSigning: an empty config, a missing or
// unreadable keys.dir, or a key folder suddenly emptied is refused (the old
// keys keep signing, the refusal is logged and counted, and `check` exits
// non-zero for the same), while one domain folder removed on purpose takes
// effect.
func TestReloadRefusesWhatWouldStopSigning(t *testing.T) {
	e := newOneKey(t)
	tmp, keyDir, cfgPath, sock := e.tmp, e.keyDir, e.cfgPath, e.sock
	other := genKey(t, keyDir, "other.example", "2026-10", "rsa-2048")
	e.dns.SetTXT(keys.RecordName(other.Domain, other.Selector), keys.FormatRecord(other))
	goodCfg, _ := os.ReadFile(cfgPath)
	d := e.start(t)
	d.waitLog(t, "key activated d=other.example s=2026-10", 0, 10*time.Second)
	signedWith(t, sock, 2, oldRSA)
	restore := func(t *testing.T) {
		t.Helper()
		writeFileAtomic(t, cfgPath, goodCfg)
		hupOK(t, d)
		signedWith(t, sock, 2, oldRSA)
	}
	// Each case starts from the good config, whatever the previous one left.
	reset := func(t *testing.T) { writeFileAtomic(t, cfgPath, goodCfg) }

	for _, tt := range []struct{ name, text, want string }{
		{"empty config", "", "is empty"},
		{"blank config", "\n  \n\t\n", "is empty"},
		{"comments only", "# authmilter\n# listen = []\n", "is empty"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			reset(t)
			writeFileAtomic(t, cfgPath, []byte(tt.text))
			hupRefused(t, d, tt.want)
			signedWith(t, sock, 2, oldRSA)
			if code, stderr := check(t, cfgPath); code == 0 || !strings.Contains(stderr, "is empty") {
				t.Errorf("check of an empty config: exit %d, %q", code, stderr)
			}
			restore(t)
		})
	}

	t.Run("keys.dir missing", func(t *testing.T) {
		reset(t)
		editConfig(t, cfgPath, fmt.Sprintf("dir = %q", keyDir), fmt.Sprintf("dir = %q", keyDir+"-typo"))
		hupRefused(t, d, "does not exist")
		signedWith(t, sock, 2, oldRSA)
		if code, stderr := check(t, cfgPath); code == 0 || !strings.Contains(stderr, "does not exist") {
			t.Errorf("check with a missing keys.dir: exit %d, %q", code, stderr)
		}
		restore(t)
	})

	t.Run("keys.dir not a folder", func(t *testing.T) {
		reset(t)
		notDir := filepath.Join(tmp, "keys-file")
		os.WriteFile(notDir, []byte("x"), 0o600)
		editConfig(t, cfgPath, fmt.Sprintf("dir = %q", keyDir), fmt.Sprintf("dir = %q", notDir))
		hupRefused(t, d, "not a folder")
		signedWith(t, sock, 2, oldRSA)
		if code, _ := check(t, cfgPath); code == 0 {
			t.Errorf("check with keys.dir a file: exit 0")
		}
		restore(t)
	})

	t.Run("key folder emptied", func(t *testing.T) {
		reset(t)
		// What an unmounted volume looks like: the mount point is there,
		// empty.
		aside := filepath.Join(tmp, "aside")
		os.MkdirAll(aside, 0o700)
		for _, dom := range []string{"example.com", "other.example"} {
			if err := os.Rename(filepath.Join(keyDir, dom), filepath.Join(aside, dom)); err != nil {
				t.Fatal(err)
			}
		}
		hupRefused(t, d, "no keys")
		signedWith(t, sock, 2, oldRSA)
		// The periodic recheck refuses it too (recheck is 1h here; the
		// reload path is the same).
		for _, dom := range []string{"example.com", "other.example"} {
			os.Rename(filepath.Join(aside, dom), filepath.Join(keyDir, dom))
		}
		hupOK(t, d)
		signedWith(t, sock, 2, oldRSA)
	})

	t.Run("one domain removed on purpose", func(t *testing.T) {
		reset(t)
		from := d.logLen()
		if err := os.RemoveAll(filepath.Join(keyDir, "other.example")); err != nil {
			t.Fatal(err)
		}
		hupOK(t, d)
		d.waitLog(t, "key deactivated d=other.example s=2026-10 a=rsa-sha256", from, 5*time.Second)
		signedWith(t, sock, 2, oldRSA)
	})
}

// TestBadKeyFiles: a FIFO named like a key does not hang the reload (nor
// SIGTERM), and key files owned by another user or folders writable by
// others are refused with their path; the old keys keep signing.
func TestBadKeyFiles(t *testing.T) {
	e := newOneKey(t)
	keyDir, cfgPath, sock := e.keyDir, e.cfgPath, e.sock
	d := e.start(t)
	signedWith(t, sock, 1, oldRSA)
	ddir := filepath.Join(keyDir, "example.com")

	t.Run("FIFO", func(t *testing.T) {
		fifo := filepath.Join(ddir, "x.pem")
		if err := syscall.Mkfifo(fifo, 0o600); err != nil {
			t.Fatal(err)
		}
		defer os.Remove(fifo)
		hupRefused(t, d, fifo+": not a regular file")
		signedWith(t, sock, 1, oldRSA)
		if code, stderr := check(t, cfgPath); code == 0 || !strings.Contains(stderr, "not a regular file") {
			t.Errorf("check with a FIFO key: exit %d, %q", code, stderr)
		}
		os.Remove(fifo)
		hupOK(t, d)
	})

	t.Run("owner", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("needs root to give a key file to another user")
		}
		other := genKey(t, keyDir, "example.com", "2026-11", "rsa-2048")
		defer os.Remove(other.Path)
		if err := os.Chown(other.Path, 12345, 12345); err != nil {
			t.Fatal(err)
		}
		hupRefused(t, d, other.Path+" is owned by uid 12345")
		signedWith(t, sock, 1, oldRSA)
		os.Remove(other.Path)
		hupOK(t, d)
	})

	t.Run("folder writable by others", func(t *testing.T) {
		if err := os.Chmod(ddir, 0o777); err != nil {
			t.Fatal(err)
		}
		defer os.Chmod(ddir, 0o700)
		hupRefused(t, d, ddir+" has mode 0777")
		signedWith(t, sock, 1, oldRSA)
		os.Chmod(ddir, 0o700)
		hupOK(t, d)
	})
}

// TestSIGTERMDuringSlowReload: a reload waiting on DNS that does not
// answer does not delay SIGTERM beyond shutdown_timeout, and messages are
// still served meanwhile.
func TestSIGTERMDuringSlowReload(t *testing.T) {
	e := newOneKey(t)
	dns, name, sock := e.dns, e.name, e.sock
	editConfig(t, e.cfgPath, `timeout = "1s"`, `timeout = "60s"`, `shutdown_timeout = "10s"`, `shutdown_timeout = "5s"`)
	d := e.start(t)

	dns.Drop(name) // the reload's key check now waits 60s for an answer
	from := d.logLen()
	d.hup(t)
	d.waitLog(t, "reload requested", from, 5*time.Second)
	// Wait until the reload is really waiting on DNS.
	deadline := time.Now().Add(10 * time.Second)
	for dns.QueryCount(name, 16) < 2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	signedWith(t, sock, 2, oldRSA) // still serving with the snapshot it has
	sent := time.Now()
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-d.done:
		t.Logf("stopped %s after SIGTERM, during a reload", time.Since(sent).Round(time.Millisecond))
	case <-time.After(30 * time.Second):
		t.Fatalf("SIGTERM during a reload: still running after 30s (shutdown_timeout 5s)")
	}
}

// TestStartWithDNSDown: the daemon listens at once even when DNS does not
// answer; it signs with the keys it last saw published (saved in
// keys.dir), and, with nothing saved, it retries the key lookups within
// seconds (not at keys.recheck) and applies outbound.on_unsigned meanwhile.
func TestStartWithDNSDown(t *testing.T) {
	e := newOneKey(t)
	dns, name, keyDir, cfgPath, sock, metrics := e.dns, e.name, e.keyDir, e.cfgPath, e.sock, e.metrics
	editConfig(t, cfgPath, `timeout = "1s"`, `timeout = "30s"`)
	saved := filepath.Join(keyDir, keys.PublicationFile)
	stop := func(d *daemon) {
		d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.done:
		case <-time.After(30 * time.Second):
			t.Fatal("daemon did not stop")
		}
	}

	// 1. DNS answers: the key's publication is saved, at the latest when
	// the daemon stops (which ends a background save's wait).
	d := e.start(t)
	signedWith(t, sock, 1, oldRSA)
	stop(d)
	if data, err := os.ReadFile(saved); err != nil || !strings.Contains(string(data), name) {
		t.Fatalf("publication state not saved in %s at exit: %v", saved, err)
	}
	if _, err := os.Stat(keys.IndexPath(keyDir)); err != nil {
		t.Fatalf("key table index not saved at exit: %v", err)
	}

	// 2. DNS stops answering; a restart listens at once and signs with the
	// saved state: the saved answer names the key file it confirmed, so
	// the key is active without a lookup (it is looked up again on the
	// keys.reverify cycle).
	dns.Drop(name)
	began := time.Now()
	d = startDaemon(t, cfgPath, sock, metrics)
	t.Logf("listening %s after start with DNS not answering", time.Since(began).Round(time.Millisecond))
	d.waitLog(t, "key activated d=example.com s=2026-10", 0, 10*time.Second)
	d.waitLog(t, "key table index used", 0, time.Second)
	signedWith(t, sock, 2, oldRSA)
	if strings.Contains(d.logs.String(), "last known publication state") {
		t.Errorf("a key confirmed by the saved state waited for DNS:\n%s", d.logs.String())
	}
	stop(d)

	// 2b. The same with a file saved by the previous release (version 2,
	// without the key's fingerprint): the daemon waits startWait for DNS,
	// then serves from the saved answer compared with the key itself.
	data, err := os.ReadFile(saved)
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Version int                       `json:"version"`
		Records map[string]map[string]any `json:"records"`
	}
	if err := json.Unmarshal(data, &file); err != nil || file.Version != 3 || len(file.Records) == 0 {
		t.Fatalf("saved state (%v):\n%s", err, data)
	}
	// Version 2 kept the TXT values, and named no key file.
	file.Version = 2
	for _, r := range file.Records {
		delete(r, "key_sha256")
		delete(r, "txt_sha256")
		r["txt"] = []string{keys.FormatRecord(e.key)}
	}
	v2, err := json.Marshal(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(saved, v2, 0o600); err != nil {
		t.Fatal(err)
	}
	d = startDaemon(t, cfgPath, sock, metrics)
	d.waitLog(t, "last known publication state", 0, 10*time.Second)
	signedWith(t, sock, 2, oldRSA)
	stop(d)

	// 3. Nothing saved, DNS down, on_unsigned = "tempfail": mail from the
	// domain is deferred, not sent unsigned; once DNS answers again the key
	// is active within seconds although keys.recheck is 1h.
	os.Remove(saved)
	editConfig(t, cfgPath, `timeout = "30s"`, `timeout = "1s"`, "[outbound]\n", "[outbound]\non_unsigned = \"tempfail\"\n")
	d = startDaemon(t, cfgPath, sock, metrics)
	d.waitLog(t, "retrying", 0, 20*time.Second)
	c, err := miltertest.NewConn(context.Background(), "unix", sock, miltertest.Options{LeadingSpace: true})
	if err != nil {
		t.Fatal(err)
	}
	tx := miltertest.Transaction{ClientIP: "127.0.0.1", MailFrom: "alice@example.com", RcptTo: []string{"bob@example.org"}, QueueID: "DEFER1"}
	res, err := c.Do(context.Background(), tx, []byte("From: alice@example.com\r\nSubject: x\r\n\r\nbody\r\n"))
	c.Close()
	if err != nil {
		t.Fatal(err)
	}
	if res.Accepted() || res.Action.SMTPCode != 451 || !strings.Contains(res.Action.SMTPText, "4.7.0") {
		t.Errorf("mail with no active key under on_unsigned=tempfail: accepted=%v, reply %d %q; want 451 4.7.0", res.Accepted(), res.Action.SMTPCode, res.Action.SMTPText)
	}
	from := d.logLen()
	dns.Clear(name)
	d.waitLog(t, "key activated d=example.com s=2026-10", from, 40*time.Second)
	signedWith(t, sock, 1, oldRSA)
}

// TestSIGHUPSettings: after SIGHUP, metrics.listen, log.level and
// log.format take effect at once; settings that need a restart (listen,
// socket_mode) are named in a warning.
func TestSIGHUPSettings(t *testing.T) {
	e := newOneKey(t)
	cfgPath, sock, metrics := e.cfgPath, e.sock, e.metrics
	d := e.start(t)

	newMetrics := freePort(t)
	extra := freePort(t)
	editConfig(t, cfgPath,
		fmt.Sprintf("listen = [\"unix:%s\"]", sock), fmt.Sprintf("listen = [\"unix:%s\", \"inet:%s\"]\nsocket_mode = \"0600\"", sock, extra),
		fmt.Sprintf("listen = %q", metrics), fmt.Sprintf("listen = %q", newMetrics),
		`level = "info"`, `level = "warn"`+"\nformat = \"json\"")
	from := d.logLen()
	d.hup(t)
	for _, setting := range []string{"listen", "socket_mode"} {
		line, _ := d.waitLog(t, `"setting":"`+setting+`"`, from, 10*time.Second)
		if !strings.Contains(line, "restart") {
			t.Errorf("the warning about %s does not say it needs a restart: %s", setting, line)
		}
	}
	// metrics.listen moved: the new address answers, the old one is closed.
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + newMetrics + "/metrics")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics not served on the new metrics.listen %s: %v", newMetrics, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if c, err := net.DialTimeout("tcp", metrics, time.Second); err == nil {
		c.Close()
		t.Errorf("the old metrics.listen %s still accepts connections", metrics)
	}
	// log.level = warn: the per-message info line is gone; log.format = json.
	signedWith(t, sock, 1, oldRSA)
	time.Sleep(200 * time.Millisecond)
	after := d.logs.String()[from:]
	if strings.Contains(after, `"msg":"message"`) || strings.Contains(after, "msg=message") {
		t.Errorf("log.level = warn still logs messages at info:\n%s", after)
	}
	if !strings.Contains(after, `{"time":`) {
		t.Errorf("log.format = json not applied:\n%s", after)
	}
}
