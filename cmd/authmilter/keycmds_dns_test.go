package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/authmilter/authmilter/keys"
	"github.com/authmilter/authmilter/keys/publish/publishtest"
)

// dnsWorld is a provider's key table against real DNS: a customers' server
// (.1) with customer.example (which delegates myesp._domainkey to the
// provider), customer2.example (which does not) and cname.example (CNAME
// mode); the provider's two nameservers (.2, .3); Unbound as the resolver.
type dnsWorld struct {
	dir, cfg      string
	ns1, ns2      *publishtest.Knot
	k             map[string]*keys.Key // by domain/selector
	foreignRecord string
}

func newDNSWorld(t *testing.T) *dnsWorld {
	t.Helper()
	w := &dnsWorld{dir: filepath.Join(t.TempDir(), "keys"), k: map[string]*keys.Key{}}
	gen := func(domain, sel string) *keys.Key {
		k, err := keys.Generate(w.dir, domain, sel, "ed25519")
		if err != nil {
			t.Fatal(err)
		}
		w.k[domain+"/"+sel] = k
		return k
	}
	rec := func(id string) string { return `"` + keys.FormatRecord(w.k[id]) + `"` }
	for _, id := range []string{"customer.example/2026-11.myesp", "customer.example/2026-12.myesp", "customer.example/foreign",
		"customer.example/old", "customer.example/gone", "customer2.example/2026-11.myesp", "cname.example/s1", "cname.example/s2"} {
		d, s, _ := strings.Cut(id, "/")
		gen(d, s)
	}
	otherDir := t.TempDir()
	other, err := keys.Generate(otherDir, "customer.example", "foreign", "ed25519")
	if err != nil {
		t.Fatal(err)
	}
	w.foreignRecord = keys.FormatRecord(other)
	for _, id := range []string{"customer.example/old", "customer.example/gone"} {
		if _, err := keys.Retire(w.k[id]); err != nil {
			t.Fatal(err)
		}
	}

	n := publishtest.NewNet(t)
	soa := func(origin, ns string, minimum int) string {
		return fmt.Sprintf("$ORIGIN %s.\n$TTL 600\n@ IN SOA %s hostmaster 1 3600 600 86400 %d\n", origin, ns, minimum)
	}
	prov := "@ IN NS ns1.provider.example.\n@ IN NS ns2.provider.example.\n"
	customers := map[string]string{
		"customer.example": soa("customer.example", "ns.customer.example.", 300) + "@ IN NS ns.customer.example.\nns IN A " + n.IP(1) + "\n" +
			"myesp._domainkey IN NS ns1.provider.example.\nmyesp._domainkey IN NS ns2.provider.example.\n" +
			"foreign._domainkey IN TXT \"" + w.foreignRecord + "\"\n" +
			"old._domainkey IN TXT " + rec("customer.example/old") + "\n",
		"customer2.example": soa("customer2.example", "ns.customer.example.", 300) + "@ IN NS ns.customer.example.\n",
		"cname.example": soa("cname.example", "ns.customer.example.", 300) + "@ IN NS ns.customer.example.\n" +
			"s1._domainkey IN CNAME s1.cname.example.dkim.provider.example.\n",
	}
	provider := map[string]string{
		"provider.example": soa("provider.example", "ns1.provider.example.", 120) + prov + "ns1 IN A " + n.IP(2) + "\nns2 IN A " + n.IP(3) + "\n" +
			"s1.cname.example.dkim IN TXT " + rec("cname.example/s1") + "\n" +
			"s2.cname.example.dkim IN TXT " + rec("cname.example/s2") + "\n",
		"myesp._domainkey.customer.example": soa("myesp._domainkey.customer.example", "ns1.provider.example.", 60) + prov +
			"2026-11 IN TXT " + rec("customer.example/2026-11.myesp") + "\n",
		"myesp._domainkey.customer2.example": soa("myesp._domainkey.customer2.example", "ns1.provider.example.", 60) + prov +
			"2026-11 IN TXT " + rec("customer2.example/2026-11.myesp") + "\n",
	}
	publishtest.StartZones(t, n.IP(1), customers)
	w.ns1 = publishtest.StartZones(t, n.IP(2), provider)
	w.ns2 = publishtest.StartZones(t, n.IP(3), provider)
	// The primary has the December key; the secondary lags behind.
	w.ns1.Update(t, "myesp._domainkey.customer.example", nil,
		[]string{"2026-12.myesp._domainkey.customer.example. 600 IN TXT " + rec("customer.example/2026-12.myesp")})
	u := publishtest.StartUnbound(t, map[string][]string{
		"customer.example": {n.IP(1)}, "customer2.example": {n.IP(1)}, "cname.example": {n.IP(1)}, "provider.example": {n.IP(2), n.IP(3)},
	})
	w.cfg = filepath.Join(t.TempDir(), "authmilter.toml")
	conf := fmt.Sprintf("[dns]\nservers = [%q]\ntimeout = \"3s\"\n[keys]\ndir = %q\n[keys.publish]\nserver = %q\ncname_zone = \"dkim.provider.example\"\ncname_domains = [\"cname.example\"]\n",
		u.Addr, w.dir, n.IP(2))
	if err := os.WriteFile(w.cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	return w
}

// TestKeysNameservers runs `authmilter keys` with keys.check =
// "nameservers" against real DNS: every state with its per-nameserver
// detail and the records a customer must add, the activation wait read
// from the daemon's saved file, and retired keys whose record stays.
func TestKeysNameservers(t *testing.T) {
	w := newDNSWorld(t)
	type want struct {
		dns    string
		active bool
		why    string
	}
	check := func(t *testing.T, wants map[string]want) []keyInfo {
		t.Helper()
		out, stderr, err := run(keysF, "-config", w.cfg, "-json")
		var ee exitError
		if !errors.As(err, &ee) || ee != 1 {
			t.Fatalf("keys: %v, want exit 1 (a retired key's record is still there); stderr %s", err, stderr)
		}
		if !strings.Contains(stderr, "warning: retired key customer.example/old is still usable") ||
			!strings.Contains(stderr, "remove the record old._domainkey.customer.example. TXT") {
			t.Errorf("stderr does not warn about the retired key:\n%s", stderr)
		}
		if strings.Contains(stderr, "customer.example/gone") {
			t.Errorf("a retired key without a record is reported:\n%s", stderr)
		}
		var rows []keyInfo
		if err := json.Unmarshal([]byte(out), &rows); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		seen := 0
		for _, r := range rows {
			id := r.Domain + "/" + r.Selector
			if r.Retired {
				continue
			}
			wt, ok := wants[id]
			if !ok {
				t.Errorf("unexpected row %s", id)
				continue
			}
			seen++
			if r.DNS != wt.dns || r.Active != wt.active || !strings.Contains(r.Why, wt.why) {
				t.Errorf("%s: %s active=%v why %q (%s); want %s %v %q", id, r.DNS, r.Active, r.Why, r.Detail, wt.dns, wt.active, wt.why)
			}
		}
		if seen != len(wants) {
			t.Errorf("%d rows, want %d", seen, len(wants))
		}
		return rows
	}
	row := func(rows []keyInfo, id string) keyInfo {
		for _, r := range rows {
			if r.Domain+"/"+r.Selector == id {
				return r
			}
		}
		t.Fatalf("no row %s", id)
		return keyInfo{}
	}

	// The daemon never ran: the published keys wait for DNS caches.
	rows := check(t, map[string]want{
		"customer.example/2026-11.myesp":  {"waiting", false, "waiting for DNS caches until"},
		"customer.example/2026-12.myesp":  {"partial", false, "not on every nameserver"},
		"customer.example/foreign":        {"foreign", false, "someone else's record"},
		"customer2.example/2026-11.myesp": {"delegation-missing", false, "customer must add"},
		"cname.example/s1":                {"waiting", false, "waiting"},
		"cname.example/s2":                {"delegation-missing", false, "customer must add"},
	})
	if r := row(rows, "customer.example/2026-11.myesp"); r.ActiveFrom == nil || r.Check == nil || r.Check.Zone != "myesp._domainkey.customer.example" ||
		len(r.Check.Nameservers) != 2 || r.NegativeTTL != 60 || r.RecordTTL != 600 {
		t.Errorf("waiting key: %+v %+v", r, r.Check)
	}
	if r := row(rows, "customer.example/2026-12.myesp"); r.Check == nil || len(r.Check.Nameservers) != 2 ||
		r.Check.Nameservers[0].State != keys.Published || r.Check.Nameservers[1].State != keys.Missing {
		t.Errorf("partial key: %+v", r.Check)
	}
	if r := row(rows, "customer2.example/2026-11.myesp"); r.Check == nil || strings.Join(r.Check.Add, "|") !=
		"myesp._domainkey.customer2.example. NS ns1.provider.example.|myesp._domainkey.customer2.example. NS ns2.provider.example." {
		t.Errorf("delegation missing: %+v", r.Check)
	}
	if r := row(rows, "cname.example/s2"); r.Check == nil || strings.Join(r.Check.Add, "|") != "s2._domainkey.cname.example. CNAME s2.cname.example.dkim.provider.example." {
		t.Errorf("CNAME missing: %+v", r.Check)
	}
	if r := row(rows, "cname.example/s1"); r.Check == nil || strings.Join(r.Check.CNAMEs, " ") != "s1.cname.example.dkim.provider.example" {
		t.Errorf("CNAME'd key: %+v", r.Check)
	}
	for _, r := range rows {
		if r.Retired && r.Selector == "old" && (r.Retirement == nil || r.Retirement.Retired || !r.Retirement.OldKey) {
			t.Errorf("retired old: %+v", r.Retirement)
		}
		if r.Retired && r.Selector == "gone" && (r.Retirement == nil || !r.Retirement.Retired) {
			t.Errorf("retired gone: %+v", r.Retirement)
		}
	}

	// The table says the same, with the nameservers and the records to add.
	table, _, _ := run(keysF, "-config", w.cfg)
	for _, s := range []string{
		"customer.example/2026-12.myesp: partial: served by ns1.provider.example",
		"  nameserver ns2.provider.example " + w.ns2.Addr + ": missing: no such name 2026-12.myesp._domainkey.customer.example (NXDOMAIN)",
		"  the customer must add:\n    myesp._domainkey.customer2.example. NS ns1.provider.example.\n    myesp._domainkey.customer2.example. NS ns2.provider.example.\n",
		"the public path found: the public path ends at zone customer2.example, which has no NS records for myesp._domainkey.customer2.example",
		"    s2._domainkey.cname.example. CNAME s2.cname.example.dkim.provider.example.\n",
		"retired (PROBLEM: its selector still gives a key)",
	} {
		if !strings.Contains(table, s) {
			t.Errorf("table lacks %q:\n%s", s, table)
		}
	}

	// The daemon saw the November key published everywhere long ago: it
	// is active; the CNAME'd key still waits.
	var lg keys.LastGood
	k := w.k["customer.example/2026-11.myesp"]
	lg.Published(keys.RecordName(k.Domain, k.Selector), []string{keys.FormatRecord(k)}, time.Minute, time.Now().Add(-time.Hour), k)
	if err := lg.Save(keys.PublicationPath(w.dir)); err != nil {
		t.Fatal(err)
	}
	rows = check(t, map[string]want{
		"customer.example/2026-11.myesp":  {"published", true, ""},
		"customer.example/2026-12.myesp":  {"partial", false, "not on every nameserver"},
		"customer.example/foreign":        {"foreign", false, "someone else's record"},
		"customer2.example/2026-11.myesp": {"delegation-missing", false, "customer must add"},
		"cname.example/s1":                {"waiting", false, "waiting"},
		"cname.example/s2":                {"delegation-missing", false, "customer must add"},
	})
	if r := row(rows, "customer.example/2026-11.myesp"); r.PublishedSince == nil || time.Since(*r.PublishedSince) < 30*time.Minute {
		t.Errorf("published since: %v", r.PublishedSince)
	}
	if data, err := os.ReadFile(keys.PublicationPath(w.dir)); err != nil || strings.Contains(string(data), "cname.example") {
		t.Errorf("keys wrote the daemon's file: %v\n%s", err, data)
	}

	// The secondary catches up: the December key is published everywhere.
	w.ns2.Update(t, "myesp._domainkey.customer.example", nil,
		[]string{"2026-12.myesp._domainkey.customer.example. 600 IN TXT \"" + keys.FormatRecord(w.k["customer.example/2026-12.myesp"]) + "\""})
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, _, _ := run(keysF, "-config", w.cfg, "-json", "-d", "customer.example")
		var rows []keyInfo
		json.Unmarshal([]byte(out), &rows)
		if r := row(rows, "customer.example/2026-12.myesp"); r.DNS == "waiting" {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("after the secondary caught up: %s %s", r.DNS, r.Detail)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
