package main

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/authmilter/authmilter/keys"
	"github.com/authmilter/authmilter/policy"
)

// testPool is a pool of two keys of each algorithm, made once per test
// binary (RSA generation is slow).
var testPool struct {
	dir string
	p   *pool
}

func getPool(t *testing.T) *pool {
	t.Helper()
	if testPool.p == nil {
		dir, err := os.MkdirTemp("", "scale-pool-")
		if err != nil {
			t.Fatal(err)
		}
		testPool.dir = filepath.Join(dir, "pool")
		if testPool.p, err = loadPool(testPool.dir, 2); err != nil {
			t.Fatal(err)
		}
	}
	return testPool.p
}

func TestMain(m *testing.M) {
	code := m.Run()
	if testPool.dir != "" {
		os.RemoveAll(filepath.Dir(testPool.dir))
	}
	os.Exit(code)
}

func TestPoolIsReused(t *testing.T) {
	p := getPool(t)
	before, err := os.Stat(filepath.Join(testPool.dir, "rsa-00.pem"))
	if err != nil {
		t.Fatal(err)
	}
	again, err := loadPool(testPool.dir, 2)
	if err != nil {
		t.Fatal(err)
	}
	after, err := os.Stat(filepath.Join(testPool.dir, "rsa-00.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if again.sum != p.sum || !after.ModTime().Equal(before.ModTime()) {
		t.Fatalf("a complete pool was generated again (sum %s → %s)", p.sum, again.sum)
	}
	if len(again.rsa) != 2 || len(again.ed) != 2 {
		t.Fatalf("pool of %d RSA and %d Ed25519 keys, want 2 and 2", len(again.rsa), len(again.ed))
	}
}

// tableFiles lists the key files of a table folder, relative to it.
func tableFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if strings.HasSuffix(path, ".pem") {
			rel, _ := filepath.Rel(dir, path)
			out = append(out, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestBuildTableLayoutAndModes(t *testing.T) {
	p := getPool(t)
	dir := filepath.Join(t.TempDir(), "8")
	reused, err := buildTable(dir, 8, p)
	if err != nil {
		t.Fatal(err)
	}
	if reused {
		t.Fatal("a new table was reported as reused")
	}
	got := strings.Join(tableFiles(t, dir), " ")
	want := "d000001.example/2026-11.pem d000002.example/2026-11.pem d000003.example/2026-11.pem " +
		"d000004.example/2026-11.pem d000004.example/2026-11e.pem d000005.example/2026-11.pem " +
		"d000006.example/2026-11.pem d000007.example/2026-11.pem d000008.example/2026-11.pem d000008.example/2026-11e.pem"
	if got != want {
		t.Fatalf("files:\n%s\nwant:\n%s", got, want)
	}
	for _, c := range []struct {
		path string
		mode os.FileMode
	}{
		{"", 0o700},
		{"d000004.example", 0o700},
		{"d000004.example/2026-11e.pem", 0o600},
		{tableMarker, 0o600},
	} {
		fi, err := os.Stat(filepath.Join(dir, c.path))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != c.mode {
			t.Errorf("%s: mode %v, want %v", c.path, fi.Mode().Perm(), c.mode)
		}
		if c.mode == 0o600 && c.path != tableMarker && !fi.ModTime().Equal(keyTime) {
			t.Errorf("%s: mtime %v, want %v", c.path, fi.ModTime(), keyTime)
		}
	}
	// The daemon's own loader takes every key and nothing else.
	table, err := keys.LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(table.All()); n != keyCount(8) {
		t.Errorf("keys.LoadDir found %d keys, want %d", n, keyCount(8))
	}
	if ign := table.Ignored(); len(ign) > 0 {
		t.Errorf("keys.LoadDir ignored %v", ign)
	}
	// Domain 5 uses pool RSA key (5-1) mod 2 = 0, domain 8's Ed25519 key
	// is (8/4-1) mod 2 = 1.
	for _, c := range []struct {
		file string
		key  poolKey
	}{
		{"d000005.example/2026-11.pem", p.rsa[0]},
		{"d000002.example/2026-11.pem", p.rsa[1]},
		{"d000008.example/2026-11e.pem", p.ed[1]},
	} {
		data, err := os.ReadFile(filepath.Join(dir, c.file))
		if err != nil {
			t.Fatal(err)
		}
		if string(data) != string(c.key.pem) {
			t.Errorf("%s is not the expected pool key", c.file)
		}
	}
}

func TestBuildTableReusesTheCache(t *testing.T) {
	p := getPool(t)
	root := t.TempDir()
	dir := filepath.Join(root, "t")
	if _, err := buildTable(dir, 4, p); err != nil {
		t.Fatal(err)
	}
	// Something the daemon leaves (its publication state) survives a
	// reuse, and shows that nothing was rebuilt.
	sentinel := filepath.Join(dir, ".authmilter-publication.json")
	if err := os.WriteFile(sentinel, []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	reused, err := buildTable(dir, 4, p)
	if err != nil {
		t.Fatal(err)
	}
	if _, serr := os.Stat(sentinel); !reused || serr != nil {
		t.Fatalf("same size: reused %v, sentinel %v; want the table kept as it is", reused, serr)
	}

	// Another size in the same folder: rebuilt.
	reused, err = buildTable(dir, 2, p)
	if err != nil {
		t.Fatal(err)
	}
	if _, serr := os.Stat(sentinel); reused || serr == nil {
		t.Fatalf("other size: reused %v, sentinel left (%v); want a rebuilt table", reused, serr)
	}
	if n := len(tableFiles(t, dir)); n != 2 {
		t.Fatalf("rebuilt table has %d keys, want 2", n)
	}

	// Another pool: rebuilt.
	other := *p
	other.sum = "another pool"
	if reused, err = buildTable(dir, 2, &other); err != nil || reused {
		t.Fatalf("other pool: reused %v, error %v; want a rebuilt table", reused, err)
	}

	// An interrupted build leaves only the .building folder: the next
	// build replaces it.
	if err := os.MkdirAll(filepath.Join(root, "u.building", "junk"), 0o700); err != nil {
		t.Fatal(err)
	}
	if reused, err = buildTable(filepath.Join(root, "u"), 1, p); err != nil || reused {
		t.Fatalf("after an interrupted build: reused %v, error %v", reused, err)
	}
	if _, err := os.Stat(filepath.Join(root, "u.building")); err == nil {
		t.Fatal("the .building folder was left behind")
	}
}

func TestBuildTableLeavesForeignFoldersAlone(t *testing.T) {
	p := getPool(t)
	dir := t.TempDir()
	mine := filepath.Join(dir, "notes.txt")
	if err := os.WriteFile(mine, []byte("not a key table"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := buildTable(dir, 2, p); err == nil || !strings.Contains(err.Error(), "not made by this tool") {
		t.Fatalf("error %v, want a refusal", err)
	}
	if _, err := os.Stat(mine); err != nil {
		t.Fatalf("a foreign file was removed: %v", err)
	}
}

func TestRecordsMatchTheKeys(t *testing.T) {
	p := getPool(t)
	recs := p.records(8)
	if len(recs) != keyCount(8) {
		t.Fatalf("%d records, want %d", len(recs), keyCount(8))
	}
	err := p.tableKeys(8, func(k tableKey) error {
		txt, ok := recs[k.recordName()]
		if !ok {
			t.Errorf("no record %s", k.recordName())
			return nil
		}
		rec, err := keys.ParseRecord(strings.Join(txt, ""))
		if err != nil {
			t.Errorf("%s: %v", k.recordName(), err)
			return nil
		}
		pub, err := rec.ParsePublicKey()
		if err != nil {
			t.Errorf("%s: %v", k.recordName(), err)
			return nil
		}
		block, _ := pem.Decode(k.key.pem)
		priv, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		if !pub.(interface{ Equal(crypto.PublicKey) bool }).Equal(priv.(crypto.Signer).Public()) {
			t.Errorf("%s does not publish the key of %s/%s", k.recordName(), k.domain, k.selector)
		}
		for _, s := range txt {
			if len(s) > 255 {
				t.Errorf("%s: character-string of %d bytes", k.recordName(), len(s))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestKeyServerAnswersAndCounts(t *testing.T) {
	p := getPool(t)
	srv := newKeyServer("example.", p.records(4))
	srv.set("large._domainkey.d000002.example.", []string{strings.Repeat("a", 255), strings.Repeat("b", 255), strings.Repeat("c", 255)})
	if err := srv.start(); err != nil {
		t.Fatal(err)
	}
	defer srv.stop()
	rsaName := "2026-11._domainkey.d000001.example."
	edName := "2026-11e._domainkey.d000004.example."
	cases := []struct {
		name     string
		qname    string
		qtype    uint16
		net      string
		edns     bool
		rcode    int
		answers  int
		soa      bool // an SOA with TTL 0 and minimum 0 in the authority section
		truncate bool
	}{
		{"RSA record over TCP", rsaName, dns.TypeTXT, "tcp", false, dns.RcodeSuccess, 1, false, false},
		{"RSA record over UDP with EDNS0", rsaName, dns.TypeTXT, "udp", true, dns.RcodeSuccess, 1, false, false},
		{"RSA record over UDP without EDNS0", rsaName, dns.TypeTXT, "udp", false, dns.RcodeSuccess, 1, false, false},
		{"large record over UDP without EDNS0: truncated", "large._domainkey.d000002.example.", dns.TypeTXT, "udp", false, dns.RcodeSuccess, 0, false, true},
		{"large record over TCP", "large._domainkey.d000002.example.", dns.TypeTXT, "tcp", false, dns.RcodeSuccess, 1, false, false},
		{"Ed25519 record, other case", strings.ToUpper(edName), dns.TypeTXT, "udp", true, dns.RcodeSuccess, 1, false, false},
		{"no such selector", "nokey._domainkey.d000001.example.", dns.TypeTXT, "udp", true, dns.RcodeNameError, 0, true, false},
		{"no such domain", "d999999.example.", dns.TypeTXT, "udp", true, dns.RcodeNameError, 0, true, false},
		{"record name, other type", rsaName, dns.TypeA, "udp", true, dns.RcodeSuccess, 0, true, false},
		{"empty non-terminal", "_domainkey.d000001.example.", dns.TypeTXT, "udp", true, dns.RcodeSuccess, 0, true, false},
		{"apex SOA", "example.", dns.TypeSOA, "udp", true, dns.RcodeSuccess, 1, false, false},
		{"outside the zone", "example.com.", dns.TypeTXT, "udp", true, dns.RcodeRefused, 0, false, false},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := new(dns.Msg)
			m.SetQuestion(c.qname, c.qtype)
			if c.edns {
				m.SetEdns0(1232, false)
			}
			cl := &dns.Client{Net: c.net, Timeout: 10 * time.Second}
			r, _, err := cl.Exchange(m, srv.addr)
			if err != nil {
				t.Fatal(err)
			}
			if r.Rcode != c.rcode || len(r.Answer) != c.answers || r.Truncated != c.truncate {
				t.Fatalf("rcode %s, %d answers, truncated %v; want %s, %d, %v\n%v",
					dns.RcodeToString[r.Rcode], len(r.Answer), r.Truncated, dns.RcodeToString[c.rcode], c.answers, c.truncate, r)
			}
			for _, rr := range r.Answer {
				if rr.Header().Ttl != 0 {
					t.Errorf("answer TTL %d, want 0", rr.Header().Ttl)
				}
			}
			if c.soa {
				if len(r.Ns) != 1 {
					t.Fatalf("authority section %v, want the SOA", r.Ns)
				}
				soa := r.Ns[0].(*dns.SOA)
				if soa.Hdr.Ttl != 0 || soa.Minttl != 0 {
					t.Errorf("negative answer's SOA TTL %d, minimum %d; want 0 and 0", soa.Hdr.Ttl, soa.Minttl)
				}
			}
			if got := srv.Queries(); got != int64(i+1) {
				t.Errorf("%d queries counted after %d", got, i+1)
			}
		})
	}
	// A record added while serving is served at once.
	srv.set("added._domainkey.d000001.example.", []string{"v=DKIM1; p="})
	m := new(dns.Msg)
	m.SetQuestion("added._domainkey.d000001.example.", dns.TypeTXT)
	r, _, err := (&dns.Client{Net: "tcp", Timeout: 10 * time.Second}).Exchange(m, srv.addr)
	if err != nil || len(r.Answer) != 1 {
		t.Fatalf("added record: %v %v", r, err)
	}
}

// TestConfigIsValid checks that the config the benchmark writes is one
// the daemon accepts, with the settings meant.
func TestConfigIsValid(t *testing.T) {
	c := daemonConfig{keysDir: "/var/tmp/authmilter-scale/1000", dnsServer: "127.1.2.3:5353",
		milterAddr: "127.0.0.1:20000", metricsAddr: "127.0.0.1:20001", recheck: "1h"}
	cfg, err := policy.ParseConfig("scale.toml", []byte(c.toml()))
	if err != nil {
		t.Fatalf("%v\n%s", err, c.toml())
	}
	if cfg.Keys.Dir != c.keysDir || cfg.Keys.Check != "resolver" || cfg.Keys.ActivateAfter.Duration != 0 ||
		cfg.Keys.Recheck.Duration != time.Hour || !cfg.Keys.RequirePublished || cfg.Log.Format != "json" ||
		cfg.Metrics.Listen != c.metricsAddr || len(cfg.DNS.Servers) != 1 || cfg.DNS.Servers[0] != c.dnsServer {
		t.Fatalf("config read as %+v", cfg)
	}
	// The re-verification phase's settings.
	c.keysExtra = "reverify = \"30s\"\ndns_qps = 1000000\n"
	if cfg, err = policy.ParseConfig("scale.toml", []byte(c.toml())); err != nil {
		t.Fatalf("%v\n%s", err, c.toml())
	}
	if cfg.Keys.Reverify.Duration != 30*time.Second || cfg.Keys.DNSQPS != 1000000 || cfg.Keys.Recheck.Duration != time.Hour {
		t.Fatalf("config with the reverify settings read as %+v", cfg.Keys)
	}
}

func TestParseSignature(t *testing.T) {
	for _, c := range []struct {
		value string
		want  signature
	}{
		{" v=1; a=rsa-sha256; c=relaxed/relaxed; d=D000001.example; s=2026-11;\r\n\tt=1; bh=x; b=y", signature{"d000001.example", "2026-11"}},
		{"v=1; s=bench\r\n add; d=x.example", signature{"x.example", "benchadd"}},
		{"garbage", signature{}},
	} {
		if got := parseSignature(c.value); got != c.want {
			t.Errorf("parseSignature(%q) = %+v, want %+v", c.value, got, c.want)
		}
	}
}

func TestParseFlags(t *testing.T) {
	for _, c := range []struct {
		args []string
		ok   bool
	}{
		{nil, true},
		{[]string{"-domains", "1000, 10000"}, true},
		{[]string{"-domains", "0"}, false},
		{[]string{"-domains", "1000000"}, false},
		{[]string{"-domains", "ten"}, false},
		{[]string{"-pool", "1"}, false},
		{[]string{"-d", "1s", "-warmup", "1s"}, false},
		{[]string{"-idle", "0s"}, false},
		{[]string{"extra"}, false},
	} {
		_, err := parseFlags(c.args)
		if (err == nil) != c.ok {
			t.Errorf("parseFlags(%q): error %v, want ok %v", c.args, err, c.ok)
		}
	}
}

func TestThousands(t *testing.T) {
	for n, want := range map[int64]string{0: "0", 999: "999", 1000: "1,000", 125000: "125,000", 1234567: "1,234,567", -1500: "-1,500"} {
		if got := thousands(n); got != want {
			t.Errorf("thousands(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestLockCacheKeepsOutASecondRun(t *testing.T) {
	dir := t.TempDir()
	unlock, err := lockCache(t.Context(), dir, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lockCache(t.Context(), dir, time.Second); err == nil || !strings.Contains(err.Error(), "another bench/scale run") {
		t.Fatalf("second lock: error %v, want a refusal", err)
	}
	unlock()
	unlock2, err := lockCache(t.Context(), dir, time.Second)
	if err != nil {
		t.Fatalf("lock after unlock: %v", err)
	}
	unlock2()
}

func TestJSONMsg(t *testing.T) {
	for _, c := range []struct {
		line string
		msg  string
		ok   bool
	}{
		{`{"time":"2026-12-06T09:50:06Z","level":"INFO","msg":"reloaded"}`, "reloaded", true},
		{`{"time":"x","level":"INFO","msg":"key activated d=a.example s=s1 a=rsa-sha256","n":1}`, "key activated d=a.example s=s1 a=rsa-sha256", true},
		{`{"time":"x","level":"ERROR","msg":"reload failed; \"quoted\"","error":"e"}`, `reload failed; "quoted"`, true},
		{`time=x level=INFO msg=reloaded`, "", false},
		{`{"msg":"unterminated`, "", false},
	} {
		msg, ok := jsonMsg([]byte(c.line))
		if msg != c.msg || ok != c.ok {
			t.Errorf("jsonMsg(%s) = %q, %v; want %q, %v", c.line, msg, ok, c.msg, c.ok)
		}
	}
}

func TestLogWatch(t *testing.T) {
	w := newLogWatch()
	pr, pw := io.Pipe()
	go w.read(pr)
	d := &daemon{exited: make(chan struct{}), logs: w}
	go func() {
		fmt.Fprintln(pw, `{"time":"x","level":"INFO","msg":"starting"}`)
		fmt.Fprintln(pw, `{"time":"x","level":"INFO","msg":"reloaded"}`)
		fmt.Fprintln(pw, "not json")
		fmt.Fprintln(pw, `{"time":"x","level":"INFO","msg":"reloaded"}`)
		pw.Close()
	}()
	e, i, err := w.waitFor(t.Context(), d, 0, "reloaded", func(m string) bool { return m == "reloaded" }, time.Minute)
	if err != nil || i != 1 || e.msg != "reloaded" {
		t.Fatalf("first: %+v at %d, %v", e, i, err)
	}
	e, i, err = w.waitFor(t.Context(), d, i+1, "reloaded", func(m string) bool { return m == "reloaded" }, time.Minute)
	if err != nil || i != 3 {
		t.Fatalf("second: %+v at %d, %v", e, i, err)
	}
	if n := w.count(0, func(m string) bool { return m == "not json" }); n != 1 {
		t.Errorf("a line that is not JSON counted %d times by its text, want 1", n)
	}
	// A line that never comes: the daemon's exit ends the wait.
	close(d.exited)
	d.cmd = &exec.Cmd{}
	if _, _, err := w.waitFor(t.Context(), d, 4, "never", func(string) bool { return false }, time.Minute); err == nil {
		t.Fatal("waiting past the daemon's exit succeeded")
	}
}

// BenchmarkLogWatchRead: the cost of one daemon log line to the reader
// (a 100,000-domain start logs 125,000 lines at once).
func BenchmarkLogWatchRead(b *testing.B) {
	var buf strings.Builder
	for i := range 1000 {
		fmt.Fprintf(&buf, `{"time":"2026-12-06T09:50:06.452588666Z","level":"INFO","msg":"key activated d=d%06d.example s=2026-11 a=rsa-sha256"}`+"\n", i)
	}
	data := buf.String()
	b.ResetTimer()
	for range b.N {
		newLogWatch().read(strings.NewReader(data))
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*1000), "ns/line")
}
