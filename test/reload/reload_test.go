package reload

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/authmilter/authmilter/internal/testdns"
	"github.com/authmilter/authmilter/keys"
)

const (
	oldRSA = "example.com/2026-10/rsa-sha256"
	newRSA = "example.com/2026-11/rsa-sha256"
	oldEd  = "example.com/2026-10e/ed25519-sha256"
)

// TestReloadUnderLoad is issue 3's reload test: messages flow over
// concurrent milter connections while SIGHUP arrives every 50 ms and the
// key folder, the config and DNS change under the daemon.
func TestReloadUnderLoad(t *testing.T) {
	const (
		total   = 2400 // messages
		conns   = 12   // concurrent milter connections
		perConn = 8    // transactions per connection before it is replaced
	)
	tmp := t.TempDir()
	dns := testdns.Start(t)
	keyDir := filepath.Join(tmp, "keys")
	for _, k := range []*keys.Key{genKey(t, keyDir, "example.com", "2026-10", "rsa-2048"), genKey(t, keyDir, "example.com", "2026-10e", "ed25519")} {
		dns.SetTXT(keys.RecordName(k.Domain, k.Selector), keys.FormatRecord(k))
	}
	cfgPath, sock, metrics := writeConfig(t, tmp, dns.Addr(), keyDir, "recheck = \"2s\"\n")
	goodCfg, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, cfgPath, sock, metrics)

	began := time.Now()
	l := &load{sock: sock, res: newVerifier(t, dns.Addr()), conns: conns, perConn: perConn}
	ctx, cancel := context.WithTimeout(context.Background(), 70*time.Second)
	defer cancel()
	loadDone := make(chan struct{})
	go func() { l.run(ctx, total); close(loadDone) }()

	// SIGHUP every 50 ms for the whole run.
	stopHUP := make(chan struct{})
	hupDone := make(chan int)
	go func() {
		n := 0
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stopHUP:
				hupDone <- n
				return
			case <-tick.C:
				if d.cmd.Process.Signal(syscall.SIGHUP) == nil {
					n++
				}
			}
		}
	}()

	// 1. A new key appears in the folder, unpublished: never used.
	l.waitCount(t, 400, 30*time.Second)
	newKey := genKey(t, keyDir, "example.com", "2026-11", "rsa-2048")
	tAdded := time.Now()
	d.waitLog(t, `msg="key not usable" key=example.com/2026-11 state=missing`, 0, 5*time.Second)

	// 2. A broken config on reload: the old snapshot stays, the failure is
	// logged with its reason and counted.
	l.waitCount(t, 700, 30*time.Second)
	errorsBefore := d.metric(t, `authmilter_reloads_total{result="error"}`)
	from := d.logLen()
	// The config is replaced atomically (SIGHUPs arrive every 50 ms: a
	// non-atomic write can be read half-written, even empty).
	writeFileAtomic(t, cfgPath, []byte("listen = [\"unix:/x\"\n[keys\ndir = 42\n"))
	failLine, tBroken := d.waitLog(t, "reload failed; keeping the previous config and keys", from, 5*time.Second)
	if !strings.Contains(failLine, cfgPath) {
		t.Errorf("the failed reload's log line does not name the config file: %s", failLine)
	}
	brokenAt := int(l.count.Load())
	l.waitCount(t, brokenAt+300, 30*time.Second) // signing goes on with the old keys
	writeFileAtomic(t, cfgPath, goodCfg)
	from = d.logLen()
	d.waitLog(t, "msg=reloaded", from, 5*time.Second)
	tRestored := time.Now()
	errorsAfter := d.metric(t, `authmilter_reloads_total{result="error"}`)
	if errorsAfter <= errorsBefore {
		t.Errorf("failed reloads not counted: authmilter_reloads_total{result=\"error\"} %v -> %v", errorsBefore, errorsAfter)
	}

	// 3. The new key is published: the daemon switches to it and says so.
	l.waitCount(t, 1200, 30*time.Second)
	from = d.logLen()
	tPub := time.Now()
	dns.SetTXT(keys.RecordName(newKey.Domain, newKey.Selector), keys.FormatRecord(newKey))
	_, tSwitch := d.waitLog(t, "key activated d=example.com s=2026-11 a=rsa-sha256 (replaces 2026-10)", from, 5*time.Second)
	switchAt := int(l.count.Load())

	select {
	case <-loadDone:
	case <-ctx.Done():
		t.Fatalf("load did not finish: %d of %d messages", l.count.Load(), total)
	}
	close(stopHUP)
	hups := <-hupDone
	elapsed := time.Since(began)

	results := l.snapshot()
	var failed, unsigned, badVerify, unpublishedUse, oldAfterSwitch, afterSwitch, duringBroken, whileUnpublished int
	for _, s := range results {
		if s.err != nil {
			failed++
			if failed <= 5 {
				t.Errorf("message failed: %v", s.err)
			}
			continue
		}
		if len(s.selectors) != 2 || s.selectors[1] != oldEd || (s.selectors[0] != oldRSA && s.selectors[0] != newRSA) {
			unsigned++
			if unsigned <= 5 {
				t.Errorf("message signed with %q, want [%s or %s, %s]", s.selectors, oldRSA, newRSA, oldEd)
			}
			continue
		}
		for _, v := range s.verify {
			if !strings.HasSuffix(v, ": pass") {
				badVerify++
				if badVerify <= 5 {
					t.Errorf("signature does not verify: %s", v)
				}
			}
		}
		if len(s.verify) != 2 {
			badVerify++
		}
		rsa := s.selectors[0]
		if rsa == newRSA && !s.end.After(tPub) {
			unpublishedUse++
		}
		if s.start.After(tAdded) && s.end.Before(tPub) {
			whileUnpublished++
		}
		if s.start.After(tBroken) && s.end.Before(tRestored) {
			duringBroken++
			if rsa != oldRSA {
				t.Errorf("message signed during the broken config with %s", rsa)
			}
		}
		if s.start.After(tSwitch) {
			afterSwitch++
			if rsa != newRSA {
				oldAfterSwitch++
			}
		}
	}
	okReloads := d.metric(t, `authmilter_reloads_total{result="ok"}`)
	errReloads := d.metric(t, `authmilter_reloads_total{result="error"}`)
	t.Logf("reload under load: %d messages over %d milter connections (%d at a time, %d transactions each) in %s (%.0f msgs/s); "+
		"%d SIGHUPs sent, reloads ok=%v error=%v; failed=%d unsigned=%d bad-signatures=%d; "+
		"%d messages while the new key was unpublished, %d while the config was broken, %d begun after the switch (switch logged after message %d, key published after %d, config broken after %d)",
		len(results), l.connCount.Load(), conns, perConn, elapsed.Round(time.Millisecond), float64(len(results))/elapsed.Seconds(),
		hups, okReloads, errReloads, failed, unsigned, badVerify, whileUnpublished, duringBroken, afterSwitch, switchAt, 1200, brokenAt)
	if len(results) != total {
		t.Errorf("%d results, want %d", len(results), total)
	}
	if failed+unsigned+badVerify > 0 {
		t.Errorf("%d failed, %d unsigned or wrongly signed, %d bad signatures; want none", failed, unsigned, badVerify)
	}
	if unpublishedUse > 0 {
		t.Errorf("%d messages signed with 2026-11 before its record was published", unpublishedUse)
	}
	if oldAfterSwitch > 0 {
		t.Errorf("%d of %d messages begun after the switch was logged still carry 2026-10", oldAfterSwitch, afterSwitch)
	}
	if whileUnpublished < 100 || duringBroken < 100 || afterSwitch < 500 {
		t.Errorf("phases too short to show anything: %d unpublished, %d broken, %d after switch", whileUnpublished, duringBroken, afterSwitch)
	}
	if hups < 20 || okReloads < 20 {
		t.Errorf("only %d SIGHUPs, %v successful reloads", hups, okReloads)
	}
}

// TestFailedReloads breaks the config or the key folder in each way a
// reload can fail: the daemon keeps signing with the snapshot it has, logs
// why, counts the failure, and recovers on the next good reload.
func TestFailedReloads(t *testing.T) {
	tmp := t.TempDir()
	dns := testdns.Start(t)
	keyDir := filepath.Join(tmp, "keys")
	k := genKey(t, keyDir, "example.com", "2026-10", "rsa-2048")
	dns.SetTXT(keys.RecordName(k.Domain, k.Selector), keys.FormatRecord(k))
	cfgPath, sock, metrics := writeConfig(t, tmp, dns.Addr(), keyDir, "recheck = \"1h\"\n")
	goodCfg, _ := os.ReadFile(cfgPath)
	d := startDaemon(t, cfgPath, sock, metrics)
	r := newVerifier(t, dns.Addr())
	check := func(t *testing.T) {
		t.Helper()
		l := &load{sock: sock, res: r, conns: 2, perConn: 3}
		l.run(context.Background(), 6)
		for _, s := range l.snapshot() {
			if s.err != nil || len(s.selectors) != 1 || s.selectors[0] != oldRSA || len(s.verify) != 1 || !strings.HasSuffix(s.verify[0], ": pass") {
				t.Fatalf("message: %v signed %q verify %q, want %s passing", s.err, s.selectors, s.verify, oldRSA)
			}
		}
	}
	newer := filepath.Join(keyDir, "example.com", "2026-11.pem")
	tests := []struct {
		name    string
		breakIt func(t *testing.T)
		fixIt   func(t *testing.T)
		wantLog string
	}{
		{"config syntax", func(t *testing.T) { os.WriteFile(cfgPath, []byte("listen = [\n"), 0o600) },
			func(t *testing.T) { os.WriteFile(cfgPath, goodCfg, 0o600) }, cfgPath},
		{"unknown config key", func(t *testing.T) {
			os.WriteFile(cfgPath, append(append([]byte(nil), goodCfg...), "bogus = 1\n"...), 0o600)
		},
			func(t *testing.T) { os.WriteFile(cfgPath, goodCfg, 0o600) }, "unknown key keys.bogus"},
		{"bad value", func(t *testing.T) {
			os.WriteFile(cfgPath, []byte(strings.Replace(string(goodCfg), `recheck = "1h"`, `recheck = "soon"`, 1)), 0o600)
		}, func(t *testing.T) { os.WriteFile(cfgPath, goodCfg, 0o600) }, "recheck"},
		{"key readable by others", func(t *testing.T) {
			genKey(t, keyDir, "example.com", "2026-11", "rsa-2048")
			os.Chmod(newer, 0o644)
		}, func(t *testing.T) { os.Remove(newer) }, "readable by group or others"},
		{"not a key", func(t *testing.T) { os.WriteFile(newer, []byte("-----BEGIN NOTHING-----\n"), 0o600) },
			func(t *testing.T) { os.Remove(newer) }, "example.com/2026-11"},
		{"weak key", func(t *testing.T) {
			data, err := os.ReadFile("../../testdata/keys/rsa512-pkcs1.pem")
			if err != nil {
				t.Fatal(err)
			}
			os.WriteFile(newer, data, 0o600)
		}, func(t *testing.T) { os.Remove(newer) }, "at least 1024"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			check(t)
			before := d.metric(t, `authmilter_reloads_total{result="error"}`)
			tt.breakIt(t)
			from := d.logLen()
			d.hup(t)
			line, _ := d.waitLog(t, "reload failed; keeping the previous config and keys", from, 5*time.Second)
			if !strings.Contains(line, tt.wantLog) {
				t.Errorf("log line does not say why (%q): %s", tt.wantLog, line)
			}
			if after := d.metric(t, `authmilter_reloads_total{result="error"}`); after != before+1 {
				t.Errorf("authmilter_reloads_total{result=\"error\"} %v -> %v, want +1", before, after)
			}
			check(t) // still signing with the old snapshot
			tt.fixIt(t)
			from = d.logLen()
			d.hup(t)
			d.waitLog(t, "msg=reloaded", from, 5*time.Second)
			check(t)
		})
	}
}

// TestDNSOutageKeepsKeys: a DNS failure while the daemon rechecks its keys
// leaves the published keys active (the last good answer is used); a
// record that is really removed deactivates its key, and that is logged.
func TestDNSOutageKeepsKeys(t *testing.T) {
	tmp := t.TempDir()
	dns := testdns.Start(t)
	keyDir := filepath.Join(tmp, "keys")
	k := genKey(t, keyDir, "example.com", "2026-10", "rsa-2048")
	name := keys.RecordName(k.Domain, k.Selector)
	dns.SetTXT(name, keys.FormatRecord(k))
	// A reload does not look up keys already found published: the
	// reverification cycle does, here every 10s.
	cfgPath, sock, metrics := writeConfig(t, tmp, dns.Addr(), keyDir, "recheck = \"1s\"\nreverify = \"10s\"\n")
	d := startDaemon(t, cfgPath, sock, metrics)
	signs := func(t *testing.T, want string) {
		t.Helper()
		l := &load{sock: sock, conns: 1, perConn: 2} // no verification: DNS is down
		l.run(context.Background(), 2)
		for _, s := range l.snapshot() {
			if s.err != nil || strings.Join(s.selectors, ",") != want {
				t.Fatalf("message: %v signed %q, want %q", s.err, s.selectors, want)
			}
		}
	}
	signs(t, oldRSA)
	for _, outage := range []struct {
		name  string
		start func()
	}{
		{"SERVFAIL", func() { dns.Fail(name, 2) }},
		{"timeout", func() { dns.Drop(name) }},
	} {
		t.Run(outage.name, func(t *testing.T) {
			outage.start()
			from := d.logLen()
			d.hup(t)
			d.waitLog(t, "msg=reloaded", from, 10*time.Second)
			d.waitLog(t, `msg="key record lookup failed; using the last good answer" name=`+name, from, 40*time.Second)
			// Rechecks during the outage, too.
			time.Sleep(2500 * time.Millisecond)
			if strings.Contains(d.logs.String()[from:], "key deactivated") {
				t.Errorf("a DNS outage deactivated the key:\n%s", d.logs.String()[from:])
			}
			signs(t, oldRSA)
			dns.Clear(name)
		})
	}
	// The record is withdrawn for real: the key stops signing, loudly.
	from := d.logLen()
	dns.SetTXT(name)
	d.waitLog(t, "key record no longer published; reloading", from, 40*time.Second)
	d.waitLog(t, "key deactivated d=example.com s=2026-10 a=rsa-sha256; nothing replaces it", from, 10*time.Second)
	signs(t, "")
}

// TestUnusableNewKey adds a newer key whose record is wrong in each way the
// publication check knows: the daemon keeps signing with the previous key,
// logs why the new one is not used, and switches once the record is right.
func TestUnusableNewKey(t *testing.T) {
	tmp := t.TempDir()
	dns := testdns.Start(t)
	keyDir := filepath.Join(tmp, "keys")
	old := genKey(t, keyDir, "example.com", "2026-10", "rsa-2048")
	dns.SetTXT(keys.RecordName(old.Domain, old.Selector), keys.FormatRecord(old))
	cfgPath, sock, metrics := writeConfig(t, tmp, dns.Addr(), keyDir, "recheck = \"1h\"\n")
	d := startDaemon(t, cfgPath, sock, metrics)
	r := newVerifier(t, dns.Addr())
	signs := func(t *testing.T, want string) {
		t.Helper()
		l := &load{sock: sock, res: r, conns: 2, perConn: 2}
		l.run(context.Background(), 4)
		for _, s := range l.snapshot() {
			if s.err != nil || strings.Join(s.selectors, ",") != want || len(s.verify) != 1 || !strings.HasSuffix(s.verify[0], ": pass") {
				t.Fatalf("message: %v signed %q verified %q, want %s passing", s.err, s.selectors, s.verify, want)
			}
		}
	}
	newKey := genKey(t, keyDir, "example.com", "2026-11", "rsa-2048")
	edKey := genKey(t, tmp, "other.example", "x", "ed25519")
	name := keys.RecordName(newKey.Domain, newKey.Selector)
	tests := []struct {
		name  string
		txt   []string
		state keys.State
	}{
		{"missing", nil, keys.Missing},
		{"another key", []string{keys.FormatRecord(old)}, keys.Mismatch},
		{"wrong k=", []string{"v=DKIM1; k=ed25519; p=" + edKey.PublicKeyData()}, keys.Mismatch},
		{"invalid record", []string{"v=DKIM1; k=rsa; p=!!!not base64"}, keys.Mismatch},
		{"two records", []string{keys.FormatRecord(newKey), keys.FormatRecord(newKey)}, keys.Mismatch},
		{"revoked", []string{"v=DKIM1; k=rsa; p="}, keys.Revoked},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dns.SetTXT(name, tt.txt...)
			from := d.logLen()
			d.hup(t)
			d.waitLog(t, "msg=reloaded", from, 5*time.Second)
			if !strings.Contains(d.logs.String()[from:], `msg="key not usable" key=example.com/2026-11 state=`+string(tt.state)) {
				t.Errorf("no log line says why 2026-11 is not used (%s):\n%s", tt.state, d.logs.String()[from:])
			}
			signs(t, oldRSA)
		})
	}
	from := d.logLen()
	dns.SetTXT(name, keys.FormatRecord(newKey))
	d.hup(t)
	d.waitLog(t, "key activated d=example.com s=2026-11 a=rsa-sha256 (replaces 2026-10)", from, 5*time.Second)
	signs(t, newRSA)
}
