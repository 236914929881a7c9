// Package cli_test runs the real authmilter binary: check, sign, verify,
// keygen and the daemon's start and graceful stop.
package cli_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/authmilter/authmilter/internal/miltertest"
	"github.com/authmilter/authmilter/internal/testbin"
	"github.com/authmilter/authmilter/internal/testdns"
)

var binary string

func TestMain(m *testing.M) { testbin.Main(m, &binary) }

type result struct {
	stdout, stderr string
	code           int
}

func run(t *testing.T, stdin []byte, args ...string) result {
	t.Helper()
	r := testbin.Run(t, binary, 60*time.Second, stdin, args...)
	return result{r.Stdout, r.Stderr, r.Code}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// setup writes a config with its own key folder and DNS server, makes an
// RSA and an Ed25519 key with keygen and publishes both records.
func setup(t *testing.T) (cfgPath string, dns *testdns.Server) {
	t.Helper()
	dir := t.TempDir()
	dns = testdns.Start(t)
	cfgPath = filepath.Join(dir, "authmilter.toml")
	cfg := fmt.Sprintf(`listen = ["inet:127.0.0.1:%d", "unix:%s/run/authmilter.sock"]
authserv_id = "mx.cli.test"
[dns]
servers = [%q]
[keys]
check = "resolver"
dir = %q
[reports]
record = false

[metrics]
listen = "127.0.0.1:%d"
`, freePort(t), dir, dns.Addr(), filepath.Join(dir, "keys"), freePort(t))
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, a := range []struct{ sel, algo string }{{"2026-11", "rsa-2048"}, {"2026-11e", "ed25519"}} {
		r := run(t, nil, "keygen", "-config", cfgPath, "-d", "example.com", "-s", a.sel, "-a", a.algo, "-format", "value")
		if r.code != 0 {
			t.Fatalf("keygen: %d %s", r.code, r.stderr)
		}
		dns.SetTXT(a.sel+"._domainkey.example.com", strings.TrimSpace(r.stdout))
	}
	return cfgPath, dns
}

func TestCheck(t *testing.T) {
	cfg, _ := setup(t)
	if r := run(t, nil, "check", "-config", cfg); r.code != 0 || !strings.Contains(r.stderr, "OK (2 keys") {
		t.Errorf("check good config: %d %q", r.code, r.stderr)
	}
	bad := filepath.Join(t.TempDir(), "bad.toml")
	os.WriteFile(bad, []byte("authserv_id = \"x\"\n\n[signing]\ncanonicalisation = \"relaxed\"\n"), 0o644)
	r := run(t, nil, "check", "-config", bad)
	if r.code == 0 || !strings.Contains(r.stderr, "bad.toml:4") || !strings.Contains(r.stderr, "signing.canonicalisation") {
		t.Errorf("check bad config: %d %q", r.code, r.stderr)
	}
	if r := run(t, nil, "check", "-config", "/nonexistent.toml"); r.code == 0 || !strings.Contains(r.stderr, "no such file") {
		t.Errorf("check missing config: %d %q", r.code, r.stderr)
	}
	// An insecure key fails check with its name.
	keyDir := filepath.Join(filepath.Dir(cfg), "keys", "example.com")
	os.Chmod(filepath.Join(keyDir, "2026-11.pem"), 0o644)
	if r := run(t, nil, "check", "-config", cfg); r.code == 0 || !strings.Contains(r.stderr, "example.com/2026-11") || !strings.Contains(r.stderr, "chmod 600") {
		t.Errorf("check insecure key: %d %q", r.code, r.stderr)
	}
}

func TestSignThenVerify(t *testing.T) {
	cfg, dns := setup(t)
	msg := []byte("From: Alice <alice@example.com>\nTo: bob@example.org\nSubject: offline\n\nHello\n")
	signed := run(t, msg, "sign", "-config", cfg)
	if signed.code != 0 || strings.Count(signed.stdout, "DKIM-Signature:") != 2 {
		t.Fatalf("sign: %d %q\n%s", signed.code, signed.stderr, signed.stdout)
	}
	if !strings.Contains(signed.stderr, "signed=example.com/2026-11/rsa-sha256,example.com/2026-11e/ed25519-sha256") {
		t.Errorf("sign log: %q", signed.stderr)
	}
	v := run(t, []byte(signed.stdout), "verify", "-config", cfg)
	if v.code != 0 || strings.Count(v.stdout, "dkim=pass") != 2 {
		t.Fatalf("verify: %d %q %q", v.code, v.stdout, v.stderr)
	}
	tampered := strings.Replace(signed.stdout, "Hello", "Hellp", 1)
	if v := run(t, []byte(tampered), "verify", "-config", cfg); v.code == 0 || !strings.Contains(v.stdout, "dkim=fail") {
		t.Errorf("verify tampered: %d %q", v.code, v.stdout)
	}
	// Revoking the key record makes verification a permanent error.
	dns.SetTXT("2026-11._domainkey.example.com", "v=DKIM1; k=rsa; p=")
	if v := run(t, []byte(signed.stdout), "verify", "-config", cfg); v.code == 0 || strings.Count(v.stdout, "dkim=pass") != 1 {
		t.Errorf("verify revoked: %d %q", v.code, v.stdout)
	}
	// A message from outside outbound.networks is not signed.
	if r := run(t, msg, "sign", "-config", cfg, "-from-ip", "198.51.100.1"); r.code == 0 || !strings.Contains(r.stderr, "inbound") {
		t.Errorf("sign inbound: %d %q", r.code, r.stderr)
	}
	if v := run(t, msg, "verify", "-config", cfg); v.code == 0 || !strings.Contains(v.stdout, "dkim=none") {
		t.Errorf("verify unsigned: %d %q", v.code, v.stdout)
	}
}

// TestDaemonStartsServesAndStopsGracefully runs the daemon, signs a message
// over the unix socket, and checks that SIGTERM waits for an open
// transaction and then exits 0.
func TestDaemonStartsServesAndStopsGracefully(t *testing.T) {
	cfg, _ := setup(t)
	var logs bytes.Buffer
	cmd := exec.Command(binary, "run", "-config", cfg)
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	sock := filepath.Join(filepath.Dir(cfg), "run", "authmilter.sock")
	deadline := time.Now().Add(10 * time.Second)
	for {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon did not listen on %s:\n%s", sock, logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o660 {
		t.Errorf("socket mode: %v %v", fi.Mode(), err)
	}
	ctx := context.Background()
	tx := miltertest.Transaction{ClientIP: "127.0.0.1", MailFrom: "a@example.com", RcptTo: []string{"b@example.org"}, QueueID: "DAEMON1", LeadingSpace: true}
	res, err := miltertest.Run(ctx, "unix", sock, tx, []byte("From: a@example.com\r\nSubject: hi\r\n\r\nbody\r\n"))
	if err != nil || strings.Count(string(res.Message), "DKIM-Signature:") != 2 {
		t.Fatalf("signing over the socket: %v\n%s", err, res.Message)
	}
	// The message is counted in /metrics.
	metrics := fetchMetrics(t, cfg)
	for _, want := range []string{`authmilter_messages_total{action="accept",direction="out"} 1`, "authmilter_signatures_total 2",
		`authmilter_reloads_total{result="ok"} 1`, "authmilter_active_keys 2"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q:\n%s", want, metrics)
		}
	}

	// Open a transaction, send SIGTERM, finish it: it must be signed and
	// the daemon must then exit cleanly.
	c, err := miltertest.NewConn(ctx, "unix", sock, miltertest.Options{LeadingSpace: true})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		tx := miltertest.Transaction{ClientIP: "127.0.0.1", MailFrom: "a@example.com", RcptTo: []string{"b@example.org"}, QueueID: "DAEMON2", ChunkSize: 16}
		res, err := c.Do(ctx, tx, []byte("From: a@example.com\r\nSubject: slow\r\n\r\n"+strings.Repeat("line\r\n", 2000)))
		if err == nil && strings.Count(string(res.Message), "DKIM-Signature:") != 2 {
			err = fmt.Errorf("in-flight message not signed")
		}
		done <- err
	}()
	time.Sleep(5 * time.Millisecond)
	cmd.Process.Signal(syscall.SIGTERM)
	if err := <-done; err != nil {
		t.Errorf("in-flight transaction during SIGTERM: %v", err)
	}
	c.Close()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("daemon exit: %v\n%s", err, logs.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("daemon did not stop:\n%s", logs.String())
	}
	for _, want := range []string{"queue=DAEMON1 dir=out", "queue=DAEMON2 dir=out", "stopping", "stopped"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	}
	if _, err := os.Stat(sock); err == nil {
		t.Errorf("socket %s left behind", sock)
	}
}

// fetchMetrics reads the daemon's /metrics at the address its config names.
func fetchMetrics(t *testing.T, cfgPath string) string {
	t.Helper()
	data, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`\[metrics\]\s*listen = "([^"]+)"`).FindSubmatch(data)
	if m == nil {
		t.Fatalf("no metrics address in %s", cfgPath)
	}
	resp, err := http.Get("http://" + string(m[1]) + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("/metrics: %d %v", resp.StatusCode, err)
	}
	return string(body)
}
