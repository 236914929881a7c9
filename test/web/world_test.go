package web_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"text/template"
	"time"

	"github.com/authmilter/authmilter/internal/testbin"
	"github.com/authmilter/authmilter/internal/testdns"
	"github.com/authmilter/authmilter/keys"
)

// The test's world: the domains of the key table and what DNS says of
// them, and the addresses mail comes from.
const (
	// goodDomain has an RSA and an Ed25519 key, both published (so both
	// active), and a retired key whose record was left in DNS.
	goodDomain = "good.example"
	goodRSA    = "rsa1"
	goodEd     = "ed1"
	goodOld    = "old"
	// missingDomain's key has no record: inactive, with a warning.
	missingDomain = "missing.example"
	// mismatchDomain's selector holds the record of another key.
	mismatchDomain = "mismatch.example"
	// The one selector of missingDomain and mismatchDomain.
	otherSelector = "s1"

	// goodIP is good.example's own server (its SPF allows it);
	// failingIP sends as good.example without being allowed: the
	// failing source of the DMARC pages, with the biggest volume in the
	// imported reports (4321 + 850 messages).
	goodIP    = "192.0.2.10"
	failingIP = "203.0.113.7"
	// The reporting organisations of testdata/reports.
	orgOne = "Example Receiver One"
	orgTwo = "Example Receiver Two"
	// failingVolumeOne is failingIP's count in orgOne's report.
	failingVolumeOne = 4321

	authservID = "mx.web.test"
)

// world is a key table published (or not) in a DNS server on 127.0.0.1,
// and a reports store (SQLite) with two organisations' reports about
// good.example imported. Daemons started on it share both.
type world struct {
	dir    string
	dns    *testdns.Server
	keyDir string
	db     string
	keys   map[string]*keys.Key // by domain/selector
}

// newWorld makes the keys, publishes their records, and imports the
// reports of testdata/reports (dated yesterday) into a new store.
func newWorld(t *testing.T) *world {
	t.Helper()
	w := &world{dir: t.TempDir(), keys: map[string]*keys.Key{}}
	w.keyDir = filepath.Join(w.dir, "keys")
	w.db = filepath.Join(w.dir, "reports.db")
	gen := func(dir, domain, sel, algo string) *keys.Key {
		k, err := keys.Generate(dir, domain, sel, algo)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	// The retired key is the oldest: made first, then moved aside and
	// recorded as retired in the domain's state, as rotate does (the key
	// table lists retired keys from the state).
	old := gen(w.keyDir, goodDomain, goodOld, "ed25519")
	if _, err := keys.Retire(old); err != nil {
		t.Fatal(err)
	}
	goodDir := filepath.Join(w.keyDir, goodDomain)
	state, err := keys.LoadState(goodDir)
	if err != nil {
		t.Fatal(err)
	}
	ks := state.Key(goodOld)
	ks.Algorithm, ks.Retired = old.Algorithm, time.Now()
	if err := state.Save(goodDir); err != nil {
		t.Fatal(err)
	}
	for _, k := range []struct{ domain, sel, algo string }{
		{goodDomain, goodRSA, "rsa"}, {goodDomain, goodEd, "ed25519"},
		{missingDomain, otherSelector, "ed25519"}, {mismatchDomain, otherSelector, "ed25519"},
	} {
		w.keys[k.domain+"/"+k.sel] = gen(w.keyDir, k.domain, k.sel, k.algo)
	}
	stranger := gen(t.TempDir(), mismatchDomain, otherSelector, "ed25519")

	w.dns = testdns.Start(t)
	w.dns.SetTXT(keys.RecordName(goodDomain, goodRSA), keys.FormatRecord(w.keys[goodDomain+"/"+goodRSA]))
	w.dns.SetTXT(keys.RecordName(goodDomain, goodEd), keys.FormatRecord(w.keys[goodDomain+"/"+goodEd]))
	w.dns.SetTXT(keys.RecordName(goodDomain, goodOld), keys.FormatRecord(old))
	w.dns.SetTXT(keys.RecordName(mismatchDomain, otherSelector), keys.FormatRecord(stranger))
	w.dns.SetTXT(goodDomain, "v=spf1 ip4:"+goodIP+" -all")
	w.dns.SetTXT("_dmarc."+goodDomain, "v=DMARC1; p=none; rua=mailto:dmarc@"+goodDomain)

	w.importReports(t)
	return w
}

// importReports fills in testdata/reports/*.xml.tmpl with yesterday's
// date and imports them with `authmilter reports import`, as an admin
// would.
func (w *world) importReports(t *testing.T) {
	t.Helper()
	tmpls, err := filepath.Glob("testdata/reports/*.xml.tmpl")
	if err != nil || len(tmpls) != 2 {
		t.Fatalf("testdata/reports: %v, %d templates, want 2", err, len(tmpls))
	}
	day := time.Now().UTC().Truncate(24*time.Hour).AddDate(0, 0, -1)
	data := struct{ Begin, End int64 }{day.Unix(), day.Add(24*time.Hour).Unix() - 1}
	out := filepath.Join(w.dir, "received")
	if err := os.Mkdir(out, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, path := range tmpls {
		tmpl, err := template.ParseFiles(path)
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		if err := tmpl.Execute(&b, data); err != nil {
			t.Fatal(err)
		}
		name := strings.TrimSuffix(filepath.Base(path), ".tmpl")
		if err := os.WriteFile(filepath.Join(out, name), []byte(b.String()), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg := w.writeConfig(t, "import", daemonOptions{})
	if got := testbin.MustRun(t, binary, "reports", "import", "-config", cfg.path, out); !strings.Contains(got, "reports stored 2,") {
		t.Fatalf("reports import: %s, want 2 reports stored", got)
	}
}

// daemonOptions are what differs between the tests' daemons.
type daemonOptions struct {
	// database is [reports] database; "" is the world's store.
	database string
	// passwordFile and tokenFile are [web] password_file and token_file
	// ("" for none).
	passwordFile, tokenFile string
	// dnsTimeout is [dns] timeout; "" is 2s.
	dnsTimeout string
}

// daemonConfig is a written config and the addresses it names.
type daemonConfig struct {
	path    string
	sock    string // the milter socket
	metrics string // host:port of /metrics
	web     string // host:port of the status pages
}

// writeConfig writes a daemon's config into a new folder: the milter on
// a unix socket, /metrics and [web] on free ports, DNS from the world's
// server, keys checked through it (keys.check = "resolver": the test
// server does not delegate, so there are no nameservers to ask), every
// key usable for its domain at once.
func (w *world) writeConfig(t *testing.T, name string, o daemonOptions) daemonConfig {
	t.Helper()
	dir := filepath.Join(w.dir, name)
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	db := o.database
	if db == "" {
		db = w.db
	}
	c := daemonConfig{path: filepath.Join(dir, "authmilter.toml"), sock: filepath.Join(dir, "milter.sock"),
		metrics: freePort(t), web: freePort(t)}
	timeout := o.dnsTimeout
	if timeout == "" {
		timeout = "2s"
	}
	var login string
	if o.passwordFile != "" {
		login += fmt.Sprintf("password_file = %q\n", o.passwordFile)
	}
	if o.tokenFile != "" {
		login += fmt.Sprintf("token_file = %q\n", o.tokenFile)
	}
	conf := fmt.Sprintf(`listen = ["unix:%s"]
authserv_id = %q
shutdown_timeout = "10s"

[dns]
servers = [%q]
timeout = %q

[outbound]
networks = ["127.0.0.1/32"]

[keys]
dir = %q
check = "resolver"
require_published = true
activate_after = "0s"

[[signing.rule]]
from = "*"

[metrics]
listen = %q

[log]
level = "info"

[reports]
database = %q
org_name = "Web Test Receiver"
email = "dmarc-reports@web.test"

[web]
listen = %q
%s`, c.sock, authservID, w.dns.Addr(), timeout, w.keyDir, c.metrics, db, c.web, login)
	if err := os.WriteFile(c.path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	return c
}
