// Package esp_test runs the real authmilter binary as an email service
// provider would (issue 9): keygen, rotate from "cron" (-test-now), keys
// -json and sign, against a real DNS topology (internal/dnstopo: Knot DNS
// root, the provider's primary and a secondary that can lag, the
// customers' server, an unbound resolver), with every signature verified by
// dkimpy and OpenDKIM through the resolver, as receivers do it.
package esp_test

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
	"testing"
	"time"

	"github.com/authmilter/authmilter/internal/daemontest"
	"github.com/authmilter/authmilter/internal/dnstopo"
	"github.com/authmilter/authmilter/internal/syncbuf"
	"github.com/authmilter/authmilter/internal/testbin"
)

var binary string

func TestMain(m *testing.M) { testbin.Main(m, &binary) }

// waitDNS bounds every poll for a DNS state. Generous for a busy 2-core
// machine; the tests never assert how long anything took.
const waitDNS = 90 * time.Second

// result is one run of the binary.
type result struct {
	args           []string
	stdout, stderr string
	code           int
}

// String shows the run for failure messages.
func (r result) String() string {
	return fmt.Sprintf("authmilter %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(r.args, " "), r.code, r.stdout, r.stderr)
}

// run runs the binary with stdin.
func run(t *testing.T, stdin []byte, args ...string) result {
	t.Helper()
	r := testbin.Run(t, binary, 2*time.Minute, stdin, args...)
	return result{args, r.Stdout, r.Stderr, r.Code}
}

// world starts the DNS topology with the provider zones every scenario
// shares, plus more.
func world(t *testing.T, o dnstopo.Options) *dnstopo.World {
	t.Helper()
	o.ProviderZones = append([]string{"dkim.myesp.example"}, o.ProviderZones...)
	return dnstopo.Start(t, o)
}

// cfgOpts are what differs between the providers' configurations.
type cfgOpts struct {
	// selectorFormat is keys.selector_format (default "%b%Y.myesp" unless
	// alternate is set).
	selectorFormat string
	// alternate is keys.alternate.
	alternate []string
	// cnameDomains is keys.publish.cname_domains.
	cnameDomains []string
	// zones are more keys.publish zones.
	zones []string
	// extra is TOML appended after [keys.publish] (targets, then
	// [[signing.rule]]s); without rules, one rule from = "*" is added.
	extra string
}

// provider is one installation of authmilter: a config, a key folder and
// the daemon.
type provider struct {
	w         *dnstopo.World
	dir       string
	cfg       string
	daemonLog *syncbuf.Buffer
}

// newProvider writes a config whose resolver is the world's unbound, that
// publishes to the provider's primary with its TSIG key and checks
// publication on every nameserver, and starts the daemon.
func newProvider(t *testing.T, w *dnstopo.World, o cfgOpts) *provider {
	t.Helper()
	dir := t.TempDir()
	var scheme string
	switch {
	case len(o.alternate) > 0:
		scheme = fmt.Sprintf("alternate = [%q, %q]\n", o.alternate[0], o.alternate[1])
	case o.selectorFormat != "":
		scheme = fmt.Sprintf("selector_format = %q\n", o.selectorFormat)
	default:
		scheme = "selector_format = \"%b%Y.myesp\"\n"
	}
	zones := append([]string{"myesp._domainkey.*", "dkim.myesp.example"}, o.zones...)
	var cname string
	if len(o.cnameDomains) > 0 {
		cname = fmt.Sprintf("cname_zone = \"dkim.myesp.example\"\ncname_domains = %s\n", tomlList(o.cnameDomains))
	}
	extra := o.extra
	if !strings.Contains(extra, "[[signing.rule]]") {
		extra += "\n[[signing.rule]]\nfrom = \"*\"\n"
	}
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
recheck = "1s"
rotate_after = "30d"
grace = "7d"
activate_after = "0s"
check = "nameservers"
%s
[keys.publish]
server = %q
tsig_name = %q
tsig_secret_file = %q
ttl = 2
zones = %s
%s%s`, "unix:"+filepath.Join(dir, "milter.sock"), w.Resolver.Addr, filepath.Join(dir, "keys"), scheme, w.Primary.Addr(), w.ProviderTSIG.Name,
		w.ProviderTSIG.SecretFile, tomlList(zones), cname, extra)
	if err := os.Mkdir(filepath.Join(dir, "keys"), 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "authmilter.toml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	p := &provider{w: w, dir: dir, cfg: path}
	if r := p.run(t, nil, "check"); r.code != 0 {
		t.Fatalf("config refused:\n%s\n%s", cfg, r)
	}
	p.startDaemon(t)
	return p
}

// startDaemon starts `authmilter run` as the provider runs it all the
// time: it picks up new keys at each keys.recheck (1s here), checks their
// publication and records since when each record has been published
// everywhere (the publication file that keys and sign read). It is
// stopped with SIGTERM (by PID) when the test ends.
func (p *provider) startDaemon(t *testing.T) {
	t.Helper()
	logs := &syncbuf.Buffer{}
	cmd := exec.Command(binary, "run", "-config", p.cfg)
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	p.daemonLog = logs
	daemontest.StopAtCleanup(t, cmd, done, func() {
		if t.Failed() {
			t.Logf("authmilter run (%s) log, last 40 lines:\n%s", p.cfg, tail(logs.String(), 40))
		}
	})
	daemontest.WaitLog(t, logs.String, done, "listening", 0, 30*time.Second, 50*time.Millisecond)
}

// tail returns the last n lines of s.
func tail(s string, n int) string { return daemontest.Tail(s, n) }

// tomlList renders a list of strings.
func tomlList(list []string) string {
	q := make([]string, len(list))
	for i, s := range list {
		q[i] = fmt.Sprintf("%q", s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// run runs a subcommand with the provider's config.
func (p *provider) run(t *testing.T, stdin []byte, cmd string, args ...string) result {
	t.Helper()
	return run(t, stdin, append([]string{cmd, "-config", p.cfg}, args...)...)
}

// keygen runs keygen and fails the test unless it succeeds.
func (p *provider) keygen(t *testing.T, args ...string) result {
	t.Helper()
	r := p.run(t, nil, "keygen", args...)
	if r.code != 0 {
		t.Fatalf("keygen failed:\n%s", r)
	}
	return r
}

// rotate runs rotate -all as cron would at the simulated time now.
func (p *provider) rotate(t *testing.T, now time.Time, args ...string) result {
	t.Helper()
	return p.run(t, nil, "rotate", append([]string{"-all", "-test-now", now.UTC().Format(time.RFC3339)}, args...)...)
}

// keyRow is a row of `keys -json` (the fields the scenarios rely on).
type keyRow struct {
	Domain    string    `json:"domain"`
	Selector  string    `json:"selector"`
	Algorithm string    `json:"algorithm"`
	Created   time.Time `json:"created"`
	// DNS is the publication state (keys/record.go): published, partial,
	// delegation-missing, mismatch, foreign, revoked, temperror, missing,
	// waiting.
	DNS     string `json:"dns"`
	Detail  string `json:"dns_detail"`
	Active  bool   `json:"active"`
	Why     string `json:"why_inactive"`
	Problem string `json:"problem"`
	// Rules are the signing rules that use the key.
	Rules json.RawMessage `json:"rules"`
	// Retired marks a key of retired/, listed while its retirement is
	// checked (its record must no longer give a usable key).
	Retired bool `json:"retired"`
}

// String shows a row for failure messages.
func (k keyRow) String() string {
	s := fmt.Sprintf("%s/%s dns=%s active=%v", k.Domain, k.Selector, k.DNS, k.Active)
	if k.Detail != "" {
		s += " (" + k.Detail + ")"
	}
	if k.Why != "" {
		s += " why_inactive=" + k.Why
	}
	if k.Retired {
		s += " retired"
	}
	return s
}

// keys runs `keys -json` and returns its rows (its exit status says
// whether there are problems; the rows are printed either way).
func (p *provider) keys(t *testing.T) ([]keyRow, result) {
	t.Helper()
	r := p.run(t, nil, "keys", "-json")
	var rows []keyRow
	if err := json.Unmarshal([]byte(r.stdout), &rows); err != nil {
		t.Fatalf("keys -json: bad output: %v\n%s", err, r)
	}
	return rows, r
}

// row returns the row of the key domain/selector of the key table (not a
// retired one), if any.
func row(rows []keyRow, domain, selector string) (keyRow, bool) {
	for _, k := range rows {
		if !k.Retired && strings.EqualFold(k.Domain, domain) && strings.EqualFold(k.Selector, selector) {
			return k, true
		}
	}
	return keyRow{}, false
}

// waitKey polls `keys -json` until the row of domain/selector satisfies
// ok, and returns it; after waitDNS it fails the test with the last
// output and the resolver's view.
func (p *provider) waitKey(t *testing.T, domain, selector, what string, ok func(keyRow) bool) keyRow {
	t.Helper()
	deadline := time.Now().Add(waitDNS)
	for {
		rows, r := p.keys(t)
		if k, found := row(rows, domain, selector); found && ok(k) {
			return k
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s/%s: not %s after %v:\n%s\nresolver's delegation for the record:\n%s", domain, selector, what, waitDNS, r,
				p.w.Resolver.Lookup(selector+"._domainkey."+domain))
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// waitActive waits until domain/selector is published and active.
func (p *provider) waitActive(t *testing.T, domain, selector string) keyRow {
	t.Helper()
	return p.waitKey(t, domain, selector, "published and active", func(k keyRow) bool {
		return k.DNS == "published" && k.Active
	})
}

// firstKey runs keygen for domain at a provider that has no key yet, and
// waits until the one key it made is published and active; it returns the
// key's selector.
func (p *provider) firstKey(t *testing.T, domain string) string {
	t.Helper()
	r := p.keygen(t, "-d", domain)
	rows, _ := p.keys(t)
	if len(rows) != 1 {
		t.Fatalf("keys after keygen: %v\n%s", rows, r)
	}
	p.waitActive(t, domain, rows[0].Selector)
	return rows[0].Selector
}

// msgSeq makes every message unique.
var msgSeq atomic.Int64

// sign signs a message From user@fromDomain with `authmilter sign` and
// returns the signed message and its signatures. It fails the test unless
// sign succeeds.
func (p *provider) sign(t *testing.T, fromDomain string) ([]byte, []signature) {
	t.Helper()
	msg, sigs, r := p.trySign(t, fromDomain)
	if r.code != 0 || len(sigs) == 0 {
		t.Fatalf("sign From %s: no signature:\n%s", fromDomain, r)
	}
	return msg, sigs
}

// signsWith signs a message From user@from (sign), fails the test unless
// it carries exactly the one signature want, and verifies it at both
// receivers (verify, what names it in failures); it returns the message.
func (p *provider) signsWith(t *testing.T, from string, want signature, what string) []byte {
	t.Helper()
	msg, sigs := p.sign(t, from)
	if len(sigs) != 1 || sigs[0] != want {
		t.Fatalf("%s: signatures %v, want d=%s s=%s", what, sigs, want.d, want.s)
	}
	p.verify(t, msg, what)
	return msg
}

// trySign is sign without the checks.
func (p *provider) trySign(t *testing.T, fromDomain string) ([]byte, []signature, result) {
	t.Helper()
	n := msgSeq.Add(1)
	msg := fmt.Sprintf("From: Sender <user@%[1]s>\r\nTo: rcpt@receiver.example\r\nSubject: esp scenario %[2]d\r\n"+
		"Date: %[3]s\r\nMessage-ID: <esp-%[2]d@%[1]s>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nMessage %[2]d.\r\n",
		fromDomain, n, time.Now().UTC().Format(time.RFC1123Z))
	r := p.run(t, []byte(msg), "sign")
	return []byte(r.stdout), signatures([]byte(r.stdout)), r
}

// signature is the d= and s= of one DKIM-Signature.
type signature struct{ d, s string }

var (
	sigField = regexp.MustCompile(`(?ims)^DKIM-Signature:(.*?)\r?\n(?:[^ \t])`)
	tagD     = regexp.MustCompile(`(?:^|;)\s*d\s*=\s*([^;\s]+)`)
	tagS     = regexp.MustCompile(`(?:^|;)\s*s\s*=\s*([^;\s]+)`)
)

// signatures reads the DKIM-Signature fields of a message.
func signatures(msg []byte) []signature {
	head, _, _ := bytes.Cut(msg, []byte("\r\n\r\n"))
	head = append(head, "\r\nX: x"...)
	var out []signature
	for _, m := range sigField.FindAllSubmatch(head, -1) {
		v := strings.NewReplacer("\r\n", "", "\n", "", "\t", " ").Replace(string(m[1]))
		var s signature
		if d := tagD.FindStringSubmatch(v); d != nil {
			s.d = strings.ToLower(d[1])
		}
		if x := tagS.FindStringSubmatch(v); x != nil {
			s.s = strings.ToLower(x[1])
		}
		out = append(out, s)
	}
	return out
}

// verify checks msg with dkimpy and OpenDKIM through the resolver.
func (p *provider) verify(t *testing.T, msg []byte, what string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := p.w.Verify(ctx, msg); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// monthly returns the simulated cron times: the first of the month after
// next (at least 31 days from now, more than rotate_after after keygen),
// then every 31 days, so that each run falls in its own month and every
// newest key is older than rotate_after (30d).
func monthly(n int) []time.Time {
	now := time.Now().UTC()
	start := time.Date(now.Year(), now.Month()+2, 1, 10, 0, 0, 0, time.UTC)
	out := make([]time.Time, n)
	for i := range out {
		out[i] = start.Add(time.Duration(i) * 31 * 24 * time.Hour)
	}
	return out
}

// monthSelector is what "%b%Y.myesp" makes at t.
func monthSelector(t time.Time) string {
	return strings.ToLower(t.Format("Jan2006")) + ".myesp"
}
