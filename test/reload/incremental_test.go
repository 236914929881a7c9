package reload

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/authmilter/authmilter/internal/testdns"
	"github.com/authmilter/authmilter/keys"
)

// TestIncrementalReload: with 40 published keys, a SIGHUP with nothing
// changed looks up no record; a new key is the only one looked up at the
// next SIGHUP and signs right after it; the published keys are looked up
// again on the keys.reverify cycle, each once per cycle, within
// keys.dns_qps; and a record removed is noticed by that cycle, which
// deactivates its key.
func TestIncrementalReload(t *testing.T) {
	tmp := t.TempDir()
	srv := testdns.Start(t)
	keyDir := filepath.Join(tmp, "keys")
	var all []*keys.Key
	for i := range 40 {
		k := genKey(t, keyDir, fmt.Sprintf("d%02d.example", i), "s1", "ed25519")
		srv.SetTXT(keys.RecordName(k.Domain, k.Selector), keys.FormatRecord(k))
		all = append(all, k)
	}
	const period = 10 * time.Second
	cfgPath, sock, metrics := writeConfig(t, tmp, srv.Addr(), keyDir,
		fmt.Sprintf("recheck = \"1h\"\nreverify = %q\ndns_qps = 8\n", period))
	d := startDaemon(t, cfgPath, sock, metrics)
	waitMetric(t, d, "authmilter_active_keys", 40)
	txtQueries := func() int {
		n := 0
		for _, k := range all {
			n += srv.QueryCount(keys.RecordName(k.Domain, k.Selector), dns.TypeTXT)
		}
		return n
	}
	if n := txtQueries(); n != 40 {
		t.Fatalf("start looked up %d records, want each of the 40 once", n)
	}

	// Nothing changed: no lookup.
	before := txtQueries()
	from := d.logLen()
	d.hup(t)
	d.waitLog(t, "msg=reloaded", from, 10*time.Second)
	if n := txtQueries() - before; n > 2 {
		// The reverifier may have taken one or two meanwhile.
		t.Errorf("a reload with nothing changed looked up %d records", n)
	}

	// A new key: looked up at the SIGHUP, and active after it.
	nk := genKey(t, keyDir, "d00.example", "s2", "ed25519")
	name := keys.RecordName(nk.Domain, nk.Selector)
	srv.SetTXT(name, keys.FormatRecord(nk))
	from = d.logLen()
	d.hup(t)
	d.waitLog(t, "key activated d=d00.example s=s2", from, 10*time.Second)
	if n := srv.QueryCount(name, dns.TypeTXT); n != 1 {
		t.Errorf("the new key's record was looked up %d times, want 1", n)
	}

	// The cycle: within 1.5 periods every published key is looked up
	// again, none more than twice, at no more than dns_qps (8) on average.
	start, base := time.Now(), txtQueries()
	deadline := start.Add(period*3/2 + 10*time.Second)
	for {
		done := true
		for _, k := range all[1:] { // d00's s1 is no longer active: not reverified
			if srv.QueryCount(keys.RecordName(k.Domain, k.Selector), dns.TypeTXT) < 2 {
				done = false
			}
		}
		if done {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not every published key was looked up again within %s (reverify %s)", time.Since(start), period)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, k := range all {
		if n := srv.QueryCount(keys.RecordName(k.Domain, k.Selector), dns.TypeTXT); n > 3 {
			t.Errorf("%s looked up %d times within one cycle", k.ID(), n)
		}
	}
	if v := d.metric(t, "authmilter_key_reverifications_total"); v < 39 {
		t.Errorf("authmilter_key_reverifications_total = %v, want at least 39", v)
	}
	if n, el := txtQueries()-base, time.Since(start); float64(n) > 8*el.Seconds()+8 {
		t.Errorf("%d lookups in %s: more than dns_qps = 8", n, el.Round(time.Second))
	}

	// A record removed is noticed by the cycle alone (no SIGHUP).
	gone := all[5]
	srv.SetTXT(keys.RecordName(gone.Domain, gone.Selector))
	from = d.logLen()
	d.waitLog(t, "key deactivated d="+gone.Domain+" s=s1", from, period*3/2+10*time.Second)
}

// waitMetric waits until series reaches want.
func waitMetric(t *testing.T, d *daemon, series string, want float64) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for d.metric(t, series) != want {
		if time.Now().After(deadline) {
			t.Fatalf("%s = %v, want %v", series, d.metric(t, series), want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
