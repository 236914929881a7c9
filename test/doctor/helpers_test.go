package doctor_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/authmilter/authmilter/internal/daemontest"
	"github.com/authmilter/authmilter/internal/testbin"
	"github.com/authmilter/authmilter/internal/testdns"
	"github.com/authmilter/authmilter/policy/doctor"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/golden")

var binary string

func TestMain(m *testing.M) { testbin.Main(m, &binary) }

// Addresses of the world.
const (
	authservID = "mx.receiver.test"
	// ownMTA is our own MTA (outbound.ips, ip4: first in acme's SPF).
	ownMTA = "192.0.2.25"
	// strayHost is in no SPF record and has no reverse DNS.
	strayHost = "203.0.113.99"
	// websiteHost is authorized only by acme's a:www.acme.example, the
	// 12th lookup: beyond the limit.
	websiteHost = "198.51.100.240"
	// ownSelector is our own key for acme.example, made by keygen.
	ownSelector = "own2026"
)

// world is the test DNS server with every zone of testdata/zones, and two
// configs: acme's (its key table with our key, outbound.ips, a milter
// socket) and a plain one (no keys, no outbound.ips) for other domains.
type world struct {
	dns      *testdns.Server
	acmeCfg  string
	plainCfg string
	// slowCfg is plainCfg with a 1 s DNS timeout, for the timeout case;
	// the others wait 5 s, so that a busy machine does not turn a slow
	// answer into a timeout that the golden files do not have.
	slowCfg string
	sock    string
	// ownRecord is our key's record value, whose p= is normalised in the
	// golden files (a new key is made each run).
	ownRecord string
}

func newWorld(t *testing.T) *world {
	t.Helper()
	w := &world{dns: testdns.Start(t)}
	zones, err := filepath.Glob(filepath.Join("testdata", "zones", "*.zone"))
	if err != nil || len(zones) == 0 {
		t.Fatalf("no zones: %v", err)
	}
	for _, z := range zones {
		w.dns.AddZoneFile(t, z)
	}
	// slow.example's DMARC name never answers: a timeout.
	w.dns.Drop("_dmarc.slow.example")

	dir := t.TempDir()
	w.sock = filepath.Join(dir, "authmilter.sock")
	w.acmeCfg = writeConfig(t, filepath.Join(dir, "acme"), w.dns.Addr(), "5s", w.sock, `ips = ["`+ownMTA+`"]`)
	w.plainCfg = writeConfig(t, filepath.Join(dir, "plain"), w.dns.Addr(), "5s", filepath.Join(dir, "plain.sock"), "")
	w.slowCfg = writeConfig(t, filepath.Join(dir, "slow"), w.dns.Addr(), "1s", filepath.Join(dir, "slow.sock"), "")
	out := testbin.MustRun(t, binary, "keygen", "-config", w.acmeCfg, "-d", "acme.example", "-s", ownSelector,
		"-a", "ed25519", "-format", "value", "-no-publish")
	w.ownRecord = strings.TrimSpace(out)
	if !strings.HasPrefix(w.ownRecord, "v=DKIM1;") {
		t.Fatalf("keygen -format value printed %q", out)
	}
	w.dns.SetTXT(ownSelector+"._domainkey.acme.example", w.ownRecord)
	return w
}

// writeConfig writes a config into dir: DNS from dnsAddr with
// dnsTimeout, a key table of its own,
// a unix socket, outbound mail only from 127.0.0.1 (so every test IP is
// inbound), no report recording, and outboundExtra under [outbound].
func writeConfig(t *testing.T, dir, dnsAddr, dnsTimeout, sock, outboundExtra string) string {
	t.Helper()
	keysDir := filepath.Join(dir, "keys")
	if err := os.MkdirAll(keysDir, 0o700); err != nil {
		t.Fatal(err)
	}
	conf := fmt.Sprintf(`listen = ["unix:%s"]
authserv_id = %q
shutdown_timeout = "10s"

[dns]
servers = [%q]
timeout = %q

[outbound]
networks = ["127.0.0.1/32"]
%s

[keys]
dir = %q
check = "resolver"
activate_after = "0s"

[reports]
record = false

[metrics]
listen = ""
`, sock, authservID, dnsAddr, dnsTimeout, outboundExtra, keysDir)
	p := filepath.Join(dir, "authmilter.toml")
	if err := os.WriteFile(p, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// doctorRunTimeout bounds one doctor run: far above what any takes (the
// slowest waits for a few 1 s DNS timeouts), so only a hang hits it.
const doctorRunTimeout = 3 * time.Minute

// run runs `authmilter doctor args...`.
func (w *world) run(t *testing.T, args ...string) testbin.Result {
	t.Helper()
	return testbin.Run(t, binary, doctorRunTimeout, nil, append([]string{"doctor"}, args...)...)
}

// portRE matches an address with a port on the loopback network: the
// resolver's own ports change every run, the test server's too.
var portRE = regexp.MustCompile(`127\.0\.0\.1:[0-9]+`)

// normalise removes from doctor's output what changes between runs: the
// DNS server's and the resolver's ports, and our key's public key.
func (w *world) normalise(s string) string {
	s = portRE.ReplaceAllString(s, "127.0.0.1:PORT")
	if _, p, ok := strings.Cut(w.ownRecord, "p="); ok && p != "" {
		s = strings.ReplaceAll(s, p, "OWN-PUBLIC-KEY")
	}
	return s
}

// golden compares got with testdata/golden/name, or rewrites the file
// with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", "golden", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./test/doctor -update to write it)", err)
	}
	if !bytes.Equal(want, []byte(got)) {
		t.Errorf("%s differs from the golden file (go test ./test/doctor -update rewrites it):\n%s", path, lineDiff(string(want), got))
	}
}

// lineDiff shows the lines of want and got that differ, with their line
// numbers.
func lineDiff(want, got string) string {
	wl, gl := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	shown := 0
	for i := 0; i < max(len(wl), len(gl)) && shown < 40; i++ {
		var w, g string
		if i < len(wl) {
			w = wl[i]
		}
		if i < len(gl) {
			g = gl[i]
		}
		if w != g {
			fmt.Fprintf(&b, "line %d:\n- %s\n+ %s\n", i+1, w, g)
			shown++
		}
	}
	return b.String()
}

// jsonReports parses the output of doctor -json.
func jsonReports(t *testing.T, out string) []*doctor.Report {
	t.Helper()
	var doc struct {
		Version int              `json:"version"`
		Domains []*doctor.Report `json:"domains"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("doctor -json: %v\n%s", err, out)
	}
	if doc.Version != doctor.JSONVersion {
		t.Errorf("doctor -json: version %d", doc.Version)
	}
	return doc.Domains
}

// findings returns the findings of rep with code.
func findings(rep *doctor.Report, code string) []doctor.Finding {
	var out []doctor.Finding
	for _, f := range rep.Findings {
		if f.Code == code {
			out = append(out, f)
		}
	}
	return out
}

// daemonLog shows the end of a daemon's log.
func daemonLog(p *daemontest.Process) string { return daemontest.Tail(p.Logs.String(), 40) }
