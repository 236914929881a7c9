package keydns_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/authmilter/authmilter/internal/daemontest"
	"github.com/authmilter/authmilter/internal/dnstopo"
	"github.com/authmilter/authmilter/internal/syncbuf"
	"github.com/authmilter/authmilter/internal/testbin"
	"github.com/authmilter/authmilter/keys"
)

var binary string

func TestMain(m *testing.M) { testbin.Main(m, &binary) }

// waitDNS bounds every poll for a DNS or key state: generous for a busy
// 2-core machine; no test asserts how long anything took.
const waitDNS = 90 * time.Second

// provider is an authmilter installation with [keydns] on: it serves the
// delegated selector zones myesp._domainkey.<customer> itself, as
// ns1/ns2.keydns.myesp.example (both at dnstopo.KeyDNSIP), and publishes
// nothing anywhere else.
type provider struct {
	w    *dnstopo.World
	dir  string
	cfg  string
	logs *syncbuf.Buffer
	cmd  *exec.Cmd
	done chan struct{}
}

func newProvider(t *testing.T, w *dnstopo.World) *provider {
	t.Helper()
	dir := t.TempDir()
	cfg := fmt.Sprintf(`authserv_id = "mx.myesp.example"
listen = [%q]

[dns]
servers = [%q]
timeout = "5s"

[outbound]
networks = ["127.0.0.0/8"]

[reports]
record = false

[metrics]
listen = ""

[keys]
dir = %q
require_published = true
recheck = "1h"
rotate_after = "30d"
grace = "7d"
activate_after = "0s"
selector_format = "%%b%%Y.myesp"

[keydns]
listen = [%q]
zones = ["myesp._domainkey.*"]
nameservers = ["ns1.keydns.myesp.example", "ns2.keydns.myesp.example"]
ttl = "2s"
negative_ttl = "2s"
revoked_for = "30d"

[[signing.rule]]
from = "*"
`, "unix:"+filepath.Join(dir, "milter.sock"), w.Resolver.Addr, filepath.Join(dir, "keys"), dnstopo.KeyDNSIP+":53")
	if err := os.Mkdir(filepath.Join(dir, "keys"), 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "authmilter.toml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return &provider{w: w, dir: dir, cfg: path}
}

// run runs a subcommand with the provider's config.
func (p *provider) run(t *testing.T, stdin []byte, cmd string, args ...string) testbin.Result {
	t.Helper()
	return testbin.Run(t, binary, 2*time.Minute, stdin, append([]string{cmd, "-config", p.cfg}, args...)...)
}

// must runs a subcommand and fails the test unless it succeeds.
func (p *provider) must(t *testing.T, cmd string, args ...string) testbin.Result {
	t.Helper()
	r := p.run(t, nil, cmd, args...)
	if r.Code != 0 {
		t.Fatalf("authmilter %s %s: exit %d\nstdout:\n%s\nstderr:\n%s", cmd, strings.Join(args, " "), r.Code, r.Stdout, r.Stderr)
	}
	return r
}

// start runs the daemon until the test ends.
func (p *provider) start(t *testing.T) {
	t.Helper()
	p.logs = &syncbuf.Buffer{}
	p.cmd = exec.Command(binary, "run", "-config", p.cfg)
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p.done = make(chan struct{})
	go func() { p.cmd.Wait(); close(p.done) }()
	daemontest.StopAtCleanup(t, p.cmd, p.done, func() {
		if t.Failed() {
			t.Logf("authmilter run log, last 60 lines:\n%s", daemontest.Tail(p.logs.String(), 60))
		}
	})
	daemontest.WaitLog(t, p.logs.String, p.done, "keydns: listening", 0, 30*time.Second, 50*time.Millisecond)
}

// reload sends SIGHUP and waits until the daemon says it reloaded.
func (p *provider) reload(t *testing.T) {
	t.Helper()
	from := len(p.logs.String())
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	daemontest.WaitLog(t, p.logs.String, p.done, "msg=reloaded", from, waitDNS, 50*time.Millisecond)
}

// keyRow is a row of `keys -json`.
type keyRow struct {
	Domain   string `json:"domain"`
	Selector string `json:"selector"`
	DNS      string `json:"dns"`
	Detail   string `json:"dns_detail"`
	Active   bool   `json:"active"`
	Why      string `json:"why_inactive"`
	Retired  bool   `json:"retired"`
}

// waitActive polls `keys -json` until domain/selector is published and
// active.
func (p *provider) waitActive(t *testing.T, domain, selector string) {
	t.Helper()
	deadline := time.Now().Add(waitDNS)
	for {
		r := p.run(t, nil, "keys", "-json")
		var rows []keyRow
		if err := json.Unmarshal([]byte(r.Stdout), &rows); err != nil {
			t.Fatalf("keys -json: %v\n%s\n%s", err, r.Stdout, r.Stderr)
		}
		for _, k := range rows {
			if !k.Retired && k.Domain == domain && k.Selector == selector && k.DNS == "published" && k.Active {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s/%s not published and active after %v:\n%s", domain, selector, waitDNS, r.Stdout)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

var msgSeq atomic.Int64

// sign signs a message From user@domain with `authmilter sign` and
// returns it with the s= of its one signature.
func (p *provider) sign(t *testing.T, domain string) ([]byte, string) {
	t.Helper()
	n := msgSeq.Add(1)
	msg := fmt.Sprintf("From: Sender <user@%[1]s>\r\nTo: rcpt@receiver.example\r\nSubject: keydns %[2]d\r\nDate: %[3]s\r\n"+
		"Message-ID: <keydns-%[2]d@%[1]s>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nMessage %[2]d.\r\n",
		domain, n, time.Now().UTC().Format(time.RFC1123Z))
	r := p.run(t, []byte(msg), "sign")
	sels := regexp.MustCompile(`(?m)[;\s]s=([^;\s]+)`).FindAllStringSubmatch(r.Stdout, -1)
	if r.Code != 0 || len(sels) != 1 {
		t.Fatalf("sign From %s: exit %d, selectors %v\n%s\n%s", domain, r.Code, sels, r.Stdout, r.Stderr)
	}
	return []byte(r.Stdout), sels[0][1]
}

// verify checks msg with dkimpy and OpenDKIM through the world's
// resolver.
func (p *provider) verify(t *testing.T, msg []byte, what string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := p.w.Verify(ctx, msg); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// customerRecords reads the records keygen says the customer must have.
func customerRecords(out string) []string {
	var recs []string
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) == 3 && (f[1] == "NS" || f[1] == "CNAME") && strings.HasSuffix(f[0], ".") {
			recs = append(recs, strings.Join(f, " "))
		}
	}
	return recs
}

// serials are the SOA serials of every zone of the world outside
// authmilter: the customer's and the provider's.
func serials(t *testing.T, w *dnstopo.World) string {
	t.Helper()
	var out []string
	for _, s := range []*dnstopo.Server{w.Customers, w.Primary, w.Root} {
		for _, z := range s.Zones {
			n, err := s.Serial(z)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, fmt.Sprintf("%s=%d", z, n))
		}
	}
	return strings.Join(out, " ")
}

// TestDelegatedCustomerRotation is the done-when scenario of issue 10: a
// provider with [keydns] onboards a delegated customer (the customer adds
// the NS records keygen prints, once) and rotates its key with rotate and
// SIGHUP, with no DNS change outside authmilter; messages signed before
// and after the rotation verify with dkimpy and OpenDKIM, which find the
// keys through unbound and the delegation to the daemon's own server.
func TestDelegatedCustomerRotation(t *testing.T) {
	w := dnstopo.Start(t, dnstopo.Options{
		CustomerZones: []string{"customer.example"},
		Records: []string{
			"ns1.keydns.myesp.example. A " + dnstopo.KeyDNSIP,
			"ns2.keydns.myesp.example. A " + dnstopo.KeyDNSIP,
		},
	})
	p := newProvider(t, w)
	const domain = "customer.example"

	// Onboarding: a key, nothing published by anyone but the delegation
	// the customer adds once.
	r := p.must(t, "keygen", "-d", domain)
	if !strings.Contains(r.Stderr, "nothing to publish") {
		t.Fatalf("keygen does not say the built-in server serves the record:\n%s", r.Stderr)
	}
	recs := customerRecords(r.Stderr)
	want := []string{"myesp._domainkey.customer.example. NS ns1.keydns.myesp.example.", "myesp._domainkey.customer.example. NS ns2.keydns.myesp.example."}
	if strings.Join(recs, "|") != strings.Join(want, "|") {
		t.Fatalf("customer records %q, want %q:\n%s", recs, want, r.Stderr)
	}
	w.Add(t, recs...)
	p.start(t)
	first := strings.ToLower(time.Now().UTC().Format("Jan2006")) + ".myesp"
	p.waitActive(t, domain, first)
	before, sel := p.sign(t, domain)
	if sel != first {
		t.Fatalf("signed with %s, want %s", sel, first)
	}
	p.verify(t, before, "signed before the rotation")
	outside := serials(t, w)

	// Rotation: rotate (as cron would, a month and more later), SIGHUP.
	now := time.Now().UTC()
	at := time.Date(now.Year(), now.Month()+2, 1, 10, 0, 0, 0, time.UTC)
	r = p.must(t, "rotate", "-all", "-test-now", at.Format(time.RFC3339))
	second := strings.ToLower(at.Format("Jan2006")) + ".myesp"
	if !strings.Contains(r.Stdout+r.Stderr, second) || !strings.Contains(r.Stdout+r.Stderr, "nothing to publish") {
		t.Fatalf("rotate did not make %s served by the built-in server:\n%s\n%s", second, r.Stdout, r.Stderr)
	}
	p.reload(t)
	p.waitActive(t, domain, second)
	after, sel := p.sign(t, domain)
	if sel != second {
		t.Fatalf("signed with %s after the rotation, want %s", sel, second)
	}
	p.verify(t, after, "signed after the rotation")
	p.verify(t, before, "signed before the rotation, verified after it")

	// Retirement, after the grace period (counted from the first rotate
	// run that sees the new key active): the old record is served
	// revoked, and signatures made with the old key no longer verify.
	p.must(t, "rotate", "-all", "-test-now", at.Add(24*time.Hour).Format(time.RFC3339))
	r = p.must(t, "rotate", "-all", "-test-now", at.Add(9*24*time.Hour).Format(time.RFC3339))
	if !strings.Contains(r.Stdout+r.Stderr, "retired "+first) || !strings.Contains(r.Stdout+r.Stderr, "nothing to withdraw") {
		t.Fatalf("rotate did not retire %s:\n%s\n%s", first, r.Stdout, r.Stderr)
	}
	p.reload(t)
	revoked := keys.RevokedRecord(keys.RSASHA256)
	w.WaitTXT(t, first+"._domainkey."+domain, waitDNS, "revoked record through unbound", func(txt []string, rcode int) bool {
		return len(txt) == 1 && txt[0] == revoked
	})
	p.verify(t, after, "signed with the new key, after the old one was revoked")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, v := range []dnstopo.Verdict{w.VerifyDkimpy(ctx, before), w.VerifyOpenDKIM(ctx, before)} {
		if v.Err != nil || v.Pass {
			t.Errorf("a signature of the revoked key still verifies (or the receiver failed): %v", v)
		}
	}

	if got := serials(t, w); got != outside {
		t.Fatalf("DNS outside authmilter changed during the rotation: %s, then %s", outside, got)
	}
	if bytes.Contains([]byte(p.logs.String()), []byte("level=ERROR")) {
		t.Errorf("errors in the daemon's log:\n%s", daemontest.Tail(p.logs.String(), 40))
	}
}

// TestBadZones: zones that overlap, or that hold no key, are refused by
// check and by the daemon's start, naming the problem.
func TestBadZones(t *testing.T) {
	dir := t.TempDir()
	keysDir := filepath.Join(dir, "keys")
	write := func(zones string) string {
		cfg := fmt.Sprintf(`listen = [%q]
[reports]
record = false

[metrics]
listen = ""
[keys]
dir = %q
require_published = false
[keydns]
listen = [%q]
zones = [%s]
nameservers = ["ns1.myesp.example"]
`, "unix:"+filepath.Join(dir, "milter.sock"), keysDir, daemontest.FreePort(t), zones)
		path := filepath.Join(dir, fmt.Sprintf("c%d.toml", msgSeq.Add(1)))
		if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	good := write(`"myesp._domainkey.*"`)
	if r := testbin.Run(t, binary, time.Minute, nil, "keygen", "-config", good, "-d", "customer.example", "-s", "s1.myesp", "-a", "ed25519"); r.Code != 0 {
		t.Fatalf("keygen: %d\n%s", r.Code, r.Stderr)
	}
	if r := testbin.Run(t, binary, time.Minute, nil, "check", "-config", good); r.Code != 0 {
		t.Fatalf("check of a good config: %d\n%s", r.Code, r.Stderr)
	}
	for _, c := range []struct{ zones, want string }{
		{`"myesp._domainkey.*", "_domainkey.customer.example"`, "zones overlap"},
		{`"myesp._domainkey.*", "dkim.myesp.example"`, `zone "dkim.myesp.example" does not contain any key`},
	} {
		path := write(c.zones)
		if r := testbin.Run(t, binary, time.Minute, nil, "check", "-config", path); r.Code == 0 || !strings.Contains(r.Stderr, c.want) {
			t.Errorf("check with zones %s: exit %d, want an error with %q:\n%s", c.zones, r.Code, c.want, r.Stderr)
		}
		if r := testbin.Run(t, binary, time.Minute, nil, "run", "-config", path); r.Code == 0 || !strings.Contains(r.Stderr, c.want) {
			t.Errorf("run with zones %s: exit %d, want an error with %q:\n%s", c.zones, r.Code, c.want, daemontest.Tail(r.Stderr, 10))
		}
	}
}
