package main

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/authmilter/authmilter/keys"
	"github.com/authmilter/authmilter/keys/dnsserver"
	"github.com/authmilter/authmilter/policy"
)

// keyDNSTestConfig is a config serving delegated selector zones and the
// CNAME-target zone dkim.myesp.example, with keys in dir.
func keyDNSTestConfig(dir string) *policy.Config {
	cfg := policy.DefaultConfig()
	cfg.Keys.Dir = dir
	cfg.Keys.Publish.CNAMEZone = "dkim.myesp.example"
	cfg.Keys.Publish.CNAMEDomains = []string{"cname.example"}
	cfg.DNS.Timeout.Duration = 2 * time.Second
	cfg.KeyDNS.Listen = []string{"127.0.0.1:0"}
	cfg.KeyDNS.Zones = []string{"myesp._domainkey.*", "dkim.myesp.example"}
	cfg.KeyDNS.Nameservers = []string{"ns1.myesp.example", "ns2.myesp.example"}
	cfg.KeyDNS.TTL.Duration, cfg.KeyDNS.NegativeTTL.Duration = 30*time.Second, 10*time.Second
	return cfg
}

// keyDNSTable generates keys (domain/selector) in a new key folder.
func keyDNSTable(t *testing.T, ids ...string) (string, *keys.Table) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "keys")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		d, s, _ := strings.Cut(id, "/")
		if _, err := keys.Generate(dir, d, s, "ed25519"); err != nil {
			t.Fatal(err)
		}
	}
	tab, err := keys.LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	return dir, tab
}

func key(t *testing.T, tab *keys.Table, domain, selector string) *keys.Key {
	t.Helper()
	for _, k := range tab.Keys(domain) {
		if k.Selector == selector {
			return k
		}
	}
	t.Fatalf("no key %s/%s", domain, selector)
	return nil
}

func TestKeyDNSName(t *testing.T) {
	dir, tab := keyDNSTable(t, "customer.example/s1.myesp", "customer.example/other", "cname.example/c1")
	cfg := keyDNSTestConfig(dir)
	cases := []struct {
		domain, selector, name string
		served                 bool
	}{
		{"customer.example", "s1.myesp", "s1.myesp._domainkey.customer.example", true},
		{"customer.example", "other", "other._domainkey.customer.example", false},
		{"cname.example", "c1", "c1.cname.example.dkim.myesp.example", true},
	}
	for _, c := range cases {
		name, served := newKeyDNSPlan(cfg, nil).name(key(t, tab, c.domain, c.selector))
		if name != c.name || served != c.served {
			t.Errorf("%s/%s: %q %v, want %q %v", c.domain, c.selector, name, served, c.name, c.served)
		}
	}
	off := keyDNSTestConfig(dir)
	off.KeyDNS.Zones = nil
	if _, served := newKeyDNSPlan(off, nil).name(key(t, tab, "customer.example", "s1.myesp")); served {
		t.Error("served with [keydns] off")
	}
}

func TestCheckKeyDNS(t *testing.T) {
	dir, tab := keyDNSTable(t, "customer.example/s1.myesp", "cname.example/c1")
	cfg := keyDNSTestConfig(dir)
	if err := (*keyDNS)(nil).check(cfg, tab); err != nil {
		t.Fatalf("good config: %v", err)
	}
	overlap := keyDNSTestConfig(dir)
	overlap.KeyDNS.Zones = append(overlap.KeyDNS.Zones, "myesp.example")
	if err := (*keyDNS)(nil).check(overlap, tab); err == nil || !strings.Contains(err.Error(), "zones overlap") {
		t.Fatalf("overlapping zones: %v", err)
	}
	empty := keyDNSTestConfig(dir)
	empty.KeyDNS.Zones = append(empty.KeyDNS.Zones, "nokeys.myesp.example")
	if err := (*keyDNS)(nil).check(empty, tab); err == nil || !strings.Contains(err.Error(), "does not contain any key") {
		t.Fatalf("zone without keys: %v", err)
	}
	off := keyDNSTestConfig(dir)
	off.KeyDNS.Zones = nil
	if err := (*keyDNS)(nil).check(off, tab); err != nil {
		t.Fatalf("off: %v", err)
	}
}

func TestKeyDNSConfigTSIG(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "transfer.key")
	bind := "key \"transfer\" {\n\talgorithm hmac-sha512;\n\tsecret \"c2VjcmV0LXNlY3JldC1zZWNyZXQ=\";\n};\n"
	if err := os.WriteFile(file, []byte(bind), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := keyDNSTestConfig(dir)
	cfg.KeyDNS.TSIGName, cfg.KeyDNS.TSIGSecretFile = "transfer", file
	dc, err := keyDNSConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if dc.TSIG == nil || dc.TSIG.Secret != "c2VjcmV0LXNlY3JldC1zZWNyZXQ=" || dc.TSIG.Algorithm != "hmac-sha512" {
		t.Fatalf("TSIG %+v", dc.TSIG)
	}
	os.Chmod(file, 0o644)
	if _, err := keyDNSConfig(cfg); err == nil || !strings.Contains(err.Error(), "keydns.tsig_secret_file") {
		t.Fatalf("secret readable by others: %v", err)
	}
}

func TestKeyDNSUpdate(t *testing.T) {
	dir, tab := keyDNSTable(t, "customer.example/s1.myesp", "cname.example/c1")
	cfg := keyDNSTestConfig(dir)
	k, err := startKeyDNS(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer k.stop()
	k.updateFrom(cfg, tab)
	if _, ok := k.srv.Zones().TXT("s1.myesp._domainkey.customer.example"); !ok {
		t.Fatal("key not served after update")
	}
	// A config whose zones cannot be built: the zones served stay.
	bad := keyDNSTestConfig(dir)
	bad.KeyDNS.Zones = append(bad.KeyDNS.Zones, "nokeys.myesp.example")
	k.updateFrom(bad, tab)
	if _, ok := k.srv.Zones().TXT("s1.myesp._domainkey.customer.example"); !ok || k.buildErrors.Load() != 1 {
		t.Fatalf("after a failed build: served %v, build errors %d", ok, k.buildErrors.Load())
	}
	// The zones check built are the ones served next.
	_, tab2 := keyDNSTable(t, "customer.example/s2.myesp", "cname.example/c2")
	if err := k.check(cfg, tab2); err != nil {
		t.Fatal(err)
	}
	z := k.built.z
	k.updateFrom(cfg, tab2)
	if k.srv.Zones() != z {
		t.Error("update built the zones again")
	}
}

// lookupFake resolves nameservers from a map.
func lookupFake(m map[string][]string) func(context.Context, string) ([]net.IPAddr, error) {
	return func(_ context.Context, host string) ([]net.IPAddr, error) {
		ips, ok := m[host]
		if !ok {
			return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
		}
		var out []net.IPAddr
		for _, ip := range ips {
			out = append(out, net.IPAddr{IP: net.ParseIP(ip)})
		}
		return out, nil
	}
}

func TestKeyDNSPublication(t *testing.T) {
	dir, tab := keyDNSTable(t, "customer.example/s1.myesp", "cname.example/c1")
	cfg := keyDNSTestConfig(dir)
	// Two servers on one port at two loopback addresses, for the two
	// nameservers; the second serves nothing until it is given the zones.
	dc, err := keyDNSConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	z, err := dnsserver.Build(dc, tab, cfg.Keys.CNAMEZoneFor, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	dc.Listen = []string{"127.0.0.1:0"}
	one, err := dnsserver.New(dc, nil)
	if err != nil {
		t.Fatal(err)
	}
	one.Swap(z)
	if err := one.Start(); err != nil {
		t.Fatal(err)
	}
	defer one.Close()
	_, port, _ := net.SplitHostPort(one.Addrs()[0])
	dc.Listen = []string{"127.0.0.2:" + port}
	two, err := dnsserver.New(dc, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := two.Start(); err != nil {
		t.Fatalf("second server on the same port: %v", err)
	}
	defer two.Close()
	plan := func(ns map[string][]string) *keyDNSPlan {
		p := newKeyDNSPlan(cfg, lookupFake(ns))
		p.port = port
		return p
	}
	k := key(t, tab, "cname.example", "c1")
	name, _ := plan(nil).name(k)
	check := func(ns map[string][]string) (string, string) {
		r := plan(ns).publication(context.Background(), k, name)
		return string(r.State), r.Detail
	}
	both := map[string][]string{"ns1.myesp.example": {"127.0.0.1"}, "ns2.myesp.example": {"127.0.0.2"}}
	if st, detail := check(both); st != string(keys.Partial) || !strings.Contains(detail, "ns2.myesp.example (127.0.0.2:"+port+")") {
		t.Fatalf("second server without zones: %s %q, want partial naming ns2", st, detail)
	}
	two.Swap(z2(t, dc, tab, cfg))
	r := plan(both).publication(context.Background(), k, name)
	if r.State != keys.Published || len(r.TXT) != 1 || r.TXT[0] != keys.FormatRecord(k) || r.Zone != "dkim.myesp.example" ||
		r.RecordTTL != 30*time.Second || r.NegativeTTL != 10*time.Second {
		t.Fatalf("both serve it: %+v", r)
	}
	// A nameserver that does not answer, or whose address is unknown, is
	// a temporary failure.
	if st, detail := check(map[string][]string{"ns1.myesp.example": {"127.0.0.1"}, "ns2.myesp.example": {"127.0.0.3"}}); st != string(keys.TempError) {
		t.Fatalf("nameserver not answering: %s %q, want temperror", st, detail)
	}
	if st, detail := check(map[string][]string{"ns1.myesp.example": {"127.0.0.1"}}); st != string(keys.TempError) || !strings.Contains(detail, "ns2.myesp.example") {
		t.Fatalf("nameserver without address: %s %q", st, detail)
	}
	// A key the servers have another record for.
	other := key(t, tab, "customer.example", "s1.myesp")
	r = plan(both).publication(context.Background(), other, name)
	if r.State != keys.Partial || !strings.Contains(r.Detail, "ns1.myesp.example") || !strings.Contains(r.Detail, "ns2.myesp.example") {
		t.Fatalf("another key's record: %s %q", r.State, r.Detail)
	}
}

// z2 builds the zones again (a Zones value goes to one server only).
func z2(t *testing.T, dc dnsserver.Config, tab *keys.Table, cfg *policy.Config) *dnsserver.Zones {
	t.Helper()
	z, err := dnsserver.Build(dc, tab, cfg.Keys.CNAMEZoneFor, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return z
}
