package reload

import (
	"context"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/authmilter/authmilter/keys"
	"github.com/authmilter/authmilter/keys/publish/publishtest"
)

// activeFromRE reads the activation time out of a waiting key's log line.
var activeFromRE = regexp.MustCompile(`active from (\S+?Z)`)

// TestActivationWaitsForEveryNameserver runs the daemon with keys.check =
// "nameservers" against real DNS: a customer's zone that delegates the
// provider's selector zone to two nameservers, and Unbound. A key is used
// only once both nameservers and the public path serve it and the DNS
// caches' time (the zone's negative TTL, the record's TTL) has passed since;
// the daemon looks again when that wait ends although keys.recheck is an
// hour, retries a key that only one nameserver has within seconds, and
// remembers across a restart since when a record has been published.
func TestActivationWaitsForEveryNameserver(t *testing.T) {
	tmp := t.TempDir()
	keyDir := filepath.Join(tmp, "keys")
	nov := genKey(t, keyDir, "example.com", "2026-11.myesp", "ed25519")
	time.Sleep(10 * time.Millisecond) // December's key is the newer one
	dec := genKey(t, keyDir, "example.com", "2026-12.myesp", "ed25519")
	rec := func(k *keys.Key) string { return `"` + keys.FormatRecord(k) + `"` }

	n := publishtest.NewNet(t)
	prov := "@ IN NS ns1.provider.example.\n@ IN NS ns2.provider.example.\n"
	publishtest.StartZones(t, n.IP(1), map[string]string{
		"example.com": "$ORIGIN example.com.\n$TTL 60\n@ IN SOA ns hostmaster 1 3600 600 86400 60\n@ IN NS ns\nns IN A " + n.IP(1) + "\n" +
			"myesp._domainkey IN NS ns1.provider.example.\nmyesp._domainkey IN NS ns2.provider.example.\n",
	})
	provider := map[string]string{
		"provider.example": "$ORIGIN provider.example.\n$TTL 60\n@ IN SOA ns1 hostmaster 1 3600 600 86400 60\n" + prov +
			"ns1 IN A " + n.IP(2) + "\nns2 IN A " + n.IP(3) + "\n",
		// Negative TTL 2s, record TTL 3s: a key waits 3s.
		"myesp._domainkey.example.com": "$ORIGIN myesp._domainkey.example.com.\n$TTL 3\n@ 2 IN SOA ns1.provider.example. hostmaster 1 3600 600 86400 2\n" + prov +
			"2026-11 IN TXT " + rec(nov) + "\n",
	}
	ns1 := publishtest.StartZones(t, n.IP(2), provider)
	ns2 := publishtest.StartZones(t, n.IP(3), provider)
	// December's record is on the primary only: the secondary lags.
	ns1.Update(t, "myesp._domainkey.example.com", nil, []string{"2026-12.myesp._domainkey.example.com. 3 IN TXT " + rec(dec)})
	unbound := publishtest.StartUnbound(t, map[string][]string{"example.com": {n.IP(1)}, "provider.example": {n.IP(2), n.IP(3)}})

	cfgPath, sock, metrics := writeConfig(t, tmp, unbound.Addr, keyDir, "recheck = \"1h\"\n")
	editConfig(t, cfgPath, `check = "resolver"`, `check = "nameservers"`)
	d := startDaemon(t, cfgPath, sock, metrics)

	// November's key waits; December's is partial.
	line, _ := d.waitLog(t, `msg="key published; waiting before signing with it" key=example.com/2026-11.myesp`, 0, 30*time.Second)
	novFrom := waitingUntil(t, line)
	d.waitLog(t, `msg="key not usable" key=example.com/2026-12.myesp state=partial`, 0, 30*time.Second)
	if !strings.Contains(d.logs.String(), "not by ns2.provider.example") {
		t.Errorf("the partial key's log does not name the lagging nameserver")
	}
	// Mail that leaves before the wait ends is not signed with it.
	if s := signOne(t, sock); s.end.Before(novFrom) && len(s.selectors) != 0 {
		t.Errorf("signed %q before the key's wait ended (%s)", s.selectors, novFrom)
	}
	// The daemon looks again when the wait ends (keys.recheck is 1h).
	_, activated := d.waitLog(t, "key activated d=example.com s=2026-11.myesp a=ed25519-sha256", 0, 60*time.Second)
	if activated.Before(novFrom) {
		t.Errorf("activated at %s, before the end of its wait %s", activated, novFrom)
	}
	signedWith(t, sock, 2, "example.com/2026-11.myesp/ed25519-sha256")

	// The secondary catches up: within the quick retries December's key
	// waits, then replaces November's.
	from := d.logLen()
	ns2.Update(t, "myesp._domainkey.example.com", nil, []string{"2026-12.myesp._domainkey.example.com. 3 IN TXT " + rec(dec)})
	line, _ = d.waitLog(t, `msg="key published; waiting before signing with it" key=example.com/2026-12.myesp`, from, 90*time.Second)
	decFrom := waitingUntil(t, line)
	_, activated = d.waitLog(t, "key activated d=example.com s=2026-12.myesp a=ed25519-sha256 (replaces 2026-11.myesp)", from, 60*time.Second)
	if activated.Before(decFrom) {
		t.Errorf("activated at %s, before the end of its wait %s", activated, decFrom)
	}
	signedWith(t, sock, 2, "example.com/2026-12.myesp/ed25519-sha256")

	// A restart remembers since when the record is published: no new wait.
	// (The publication file was saved when the key started to wait.)
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(30 * time.Second):
		t.Fatal("daemon did not stop")
	}
	d = startDaemon(t, cfgPath, sock, metrics)
	d.waitLog(t, "key activated d=example.com s=2026-12.myesp a=ed25519-sha256", 0, 30*time.Second)
	if strings.Contains(d.logs.String(), "DNS checks not finished") {
		// That was the saved state; wait for the one DNS gives.
		d.waitLog(t, "keys checked", 0, 30*time.Second)
	}
	signedWith(t, sock, 1, "example.com/2026-12.myesp/ed25519-sha256")
	if strings.Contains(d.logs.String(), "waiting before signing with it\" key=example.com/2026-12.myesp") {
		t.Errorf("after a restart the published key waited again:\n%s", d.logs.String())
	}
}

// signOne drives one message through the daemon, unverified.
func signOne(t *testing.T, sock string) sent {
	t.Helper()
	l := &load{sock: sock, conns: 1, perConn: 1}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l.run(ctx, 1)
	res := l.snapshot()
	if len(res) != 1 || res[0].err != nil {
		t.Fatalf("message not sent: %+v", res)
	}
	return res[0]
}

// waitingUntil returns the activation time a waiting key's log line gives.
func waitingUntil(t *testing.T, line string) time.Time {
	t.Helper()
	m := activeFromRE.FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("no activation time in %q", line)
	}
	at, err := time.Parse(time.RFC3339, m[1])
	if err != nil {
		t.Fatal(err)
	}
	return at
}
