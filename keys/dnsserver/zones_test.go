package dnsserver

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/authmilter/authmilter/keys"
)

// The fixture: a provider serving delegated selector zones
// (myesp._domainkey.<customer>) and a CNAME-target zone
// (dkim.myesp.example), on 1 December 2026.
var (
	fixtureNow = time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	longDomain = strings.Repeat("l", 63) + "." + strings.Repeat("m", 40) + ".example"
	day        = func(m time.Month, d int) time.Time { return time.Date(2026, m, d, 0, 0, 0, 0, time.UTC) }
)

func fixtureKeys() []tkey {
	return []tkey{
		{domain: "customer.example", selector: "2026-11.myesp", kind: "ed", created: day(11, 1)},
		{domain: "customer.example", selector: "2026-12.myesp", kind: "ed", created: day(11, 25)},
		{domain: longDomain, selector: "big.myesp", kind: "rsa", created: day(10, 1)},
		{domain: "cname.example", selector: "s1", kind: "ed", created: day(11, 10)},
		{domain: "other.example", selector: "s1", kind: "ed", created: day(11, 11)},
		{domain: "testing.example", selector: "t.myesp", kind: "ed", created: day(11, 12), testing: true},
	}
}

func fixtureRetired() []tretired {
	return []tretired{
		{domain: "customer.example", selector: "2026-10.myesp", alg: keys.Ed25519SHA256, retired: day(11, 28)},
		{domain: "customer.example", selector: "2026-09.myesp", alg: keys.RSASHA256, retired: day(11, 1)}, // revoked until 8 Nov
		{domain: "cname.example", selector: "s0", retired: day(11, 29)},                                   // algorithm unknown: RSA
	}
}

func fixtureConfig() Config {
	return Config{
		Zones:       []string{"myesp._domainkey.*", "dkim.myesp.example"},
		Nameservers: []string{"ns1.myesp.example", "ns2.myesp.example"},
		TTL:         time.Hour,
		NegativeTTL: 5 * time.Minute,
		RevokedFor:  7 * 24 * time.Hour,
	}
}

func fixtureCNAME(domain string) string {
	if domain == "cname.example" {
		return "dkim.myesp.example"
	}
	return ""
}

// fixtureTable writes the fixture's key folder and returns it.
func fixtureTable(t testing.TB) (string, *keys.Table) {
	t.Helper()
	dir := t.TempDir()
	writeTable(t, dir, fixtureKeys(), fixtureRetired())
	return dir, loadTable(t, dir)
}

func fixtureZones(t testing.TB) *Zones {
	t.Helper()
	_, tab := fixtureTable(t)
	z, err := Build(fixtureConfig(), tab, fixtureCNAME, fixtureNow)
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	return z
}

func TestBuildZonesAndSerials(t *testing.T) {
	z := fixtureZones(t)
	wantZones := []string{
		"myesp._domainkey." + longDomain + ".",
		"myesp._domainkey.customer.example.",
		"dkim.myesp.example.",
		"myesp._domainkey.testing.example.",
	}
	got := z.Apexes()
	slices.Sort(got)
	slices.Sort(wantZones)
	if !slices.Equal(got, wantZones) {
		t.Fatalf("zones %q, want %q", got, wantZones)
	}
	serials := []struct {
		zone string
		want time.Time
	}{
		// The newest of: keys created 1 and 25 Nov, a key retired 28
		// Nov, a revocation ended 8 Nov.
		{"myesp._domainkey.customer.example", day(11, 28)},
		{"dkim.myesp.example", day(11, 29)},
		{"myesp._domainkey." + longDomain, day(10, 1)},
	}
	for _, c := range serials {
		s, ok := z.Serial(c.zone)
		if !ok || s != uint32(c.want.Unix()) {
			t.Errorf("serial of %s = %d (%v), want %d (%s)", c.zone, s, ok, c.want.Unix(), c.want)
		}
	}
	txt := []struct {
		name, want string
		ok         bool
	}{
		{"2026-11.myesp._domainkey.customer.example", "v=DKIM1; k=ed25519; p=", true}, // prefix
		{"2026-10.myesp._domainkey.customer.example", "v=DKIM1; k=ed25519; p=", true}, // revoked: all of it
		{"2026-09.myesp._domainkey.customer.example", "", false},                      // revocation over
		{"s1.cname.example.dkim.myesp.example", "v=DKIM1; k=ed25519; p=", true},
		{"s0.cname.example.dkim.myesp.example", "v=DKIM1; k=rsa; p=", true},
		{"s1._domainkey.cname.example", "", false}, // CNAME mode: not at the domain
		{"s1._domainkey.other.example", "", false}, // in no zone
		{"t.myesp._domainkey.testing.example", "v=DKIM1; k=ed25519; t=y; p=", true},
	}
	for _, c := range txt {
		v, ok := z.TXT(c.name)
		if ok != c.ok || !strings.HasPrefix(v, c.want) {
			t.Errorf("TXT %s = %q %v, want prefix %q %v", c.name, v, ok, c.want, c.ok)
		}
	}
	if v, _ := z.TXT("2026-10.myesp._domainkey.customer.example"); v != keys.RevokedRecord(keys.Ed25519SHA256) {
		t.Errorf("revoked record %q", v)
	}
	if got := z.ZoneOf("X.2026-11.MYESP._domainkey.customer.example."); got != "myesp._domainkey.customer.example." {
		t.Errorf("ZoneOf = %q", got)
	}
	if got := z.ZoneOf("s1._domainkey.other.example"); got != "" {
		t.Errorf("ZoneOf outside = %q", got)
	}
}

func TestBuildErrors(t *testing.T) {
	_, tab := fixtureTable(t)
	cases := []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"overlapping zones", func(c *Config) { c.Zones = append(c.Zones, "myesp.example") }, "zones overlap"},
		{"overlapping patterns", func(c *Config) { c.Zones = append(c.Zones, "_domainkey.customer.example") }, "zones overlap"},
		{"zone without keys", func(c *Config) { c.Zones = append(c.Zones, "nokeys.example") }, `zone "nokeys.example" does not contain any key`},
		{"pattern without keys", func(c *Config) { c.Zones = append(c.Zones, "other._domainkey.*") }, "does not contain any key"},
		{"zone listed twice", func(c *Config) { c.Zones = append(c.Zones, "DKIM.myesp.example.") }, "listed twice"},
		{"bad zone", func(c *Config) { c.Zones = []string{"a b.example"} }, "want a domain name"},
		{"top-level zone", func(c *Config) { c.Zones = []string{"example"} }, "below a top-level domain"},
		{"no zones", func(c *Config) { c.Zones = nil }, "no zones"},
		{"no nameservers", func(c *Config) { c.Nameservers = nil }, "nameserver"},
		{"bad nameserver", func(c *Config) { c.Nameservers = []string{"ns 1.example"} }, "not a host name"},
		{"bad hostmaster", func(c *Config) { c.Hostmaster = "a b@@" }, "hostmaster"},
		{"zero TTL", func(c *Config) { c.TTL = 0 }, "ttl"},
		{"negative TTL too small", func(c *Config) { c.NegativeTTL = time.Millisecond }, "negative_ttl"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := fixtureConfig()
			c.edit(&cfg)
			_, err := Build(cfg, tab, fixtureCNAME, fixtureNow)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err %v, want one containing %q", err, c.want)
			}
		})
	}
}

func TestBuildSameRecordName(t *testing.T) {
	// In CNAME mode (a.b, selector c) and (b, selector c.a) have the same
	// target name: c.a.b.<zone>.
	dir := t.TempDir()
	writeTable(t, dir, []tkey{
		{domain: "a.b.example", selector: "c", kind: "ed", created: day(11, 1)},
		{domain: "b.example", selector: "c.a", kind: "ed", created: day(11, 1)},
	}, nil)
	cfg := fixtureConfig()
	cfg.Zones = []string{"dkim.myesp.example"}
	_, err := Build(cfg, loadTable(t, dir), func(string) string { return "dkim.myesp.example" }, fixtureNow)
	if err == nil || !strings.Contains(err.Error(), "two keys have the record name c.a.b.example.dkim.myesp.example.") {
		t.Fatalf("err %v", err)
	}
}

func TestHostmaster(t *testing.T) {
	cases := []struct{ in, want string }{
		{"hostmaster@myesp.example", "hostmaster.myesp.example."},
		{"john.doe@myesp.example", `john\.doe.myesp.example.`},
		{"dns.myesp.example", "dns.myesp.example."},
		{"DNS.MyEsp.Example.", "dns.myesp.example."},
	}
	for _, c := range cases {
		got, err := rname(c.in)
		if err != nil || got != c.want {
			t.Errorf("rname(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
	}
}

func TestTwoBuildsAgree(t *testing.T) {
	// Two instances reading one key folder: same zones, serials and
	// values, whatever order or time they build in.
	dir, tab := fixtureTable(t)
	a, err := Build(fixtureConfig(), tab, fixtureCNAME, fixtureNow)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Build(fixtureConfig(), loadTable(t, dir), fixtureCNAME, fixtureNow.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(a.Apexes(), b.Apexes()) {
		t.Fatalf("apexes differ: %q %q", a.Apexes(), b.Apexes())
	}
	for _, apex := range a.Apexes() {
		sa, _ := a.Serial(apex)
		sb, _ := b.Serial(apex)
		if sa != sb {
			t.Errorf("%s: serials %d and %d", apex, sa, sb)
		}
	}
	for i := range a.recs {
		va, vb := a.recs[i].value(), b.recs[i].value()
		if a.recs[i].name != b.recs[i].name || va != vb {
			t.Errorf("record %d: %s %q and %s %q", i, a.recs[i].name, va, b.recs[i].name, vb)
		}
	}
}

func TestFollowSerials(t *testing.T) {
	dir, tab := fixtureTable(t)
	build := func(tab *keys.Table, now time.Time) *Zones {
		t.Helper()
		z, err := Build(fixtureConfig(), tab, fixtureCNAME, now)
		if err != nil {
			t.Fatal(err)
		}
		return z
	}
	const cust = "myesp._domainkey.customer.example."
	serial := func(z *Zones) uint32 {
		s, _ := z.Serial(cust)
		return s
	}
	first := build(tab, fixtureNow)
	if changed := first.follow(nil); len(changed) != 4 {
		t.Fatalf("first swap: changed %q, want every zone", changed)
	}
	base := serial(first)

	// Nothing changed: same serials, nothing to notify.
	same := build(loadTable(t, dir), fixtureNow)
	if changed := same.follow(first); len(changed) != 0 || serial(same) != base {
		t.Fatalf("unchanged: changed %q serial %d want %d", changed, serial(same), base)
	}

	// A key removed by hand: no newer timestamp, so the old serial + 1.
	removeKey(t, dir, "customer.example", "2026-11.myesp")
	removed := build(loadTable(t, dir), fixtureNow)
	changed := removed.follow(same)
	if !slices.Equal(changed, []string{cust}) || serial(removed) != base+1 {
		t.Fatalf("removed by hand: changed %q serial %d want %d", changed, serial(removed), base+1)
	}

	// A new key created later: its creation time is the serial.
	created := fixtureNow.Add(-time.Hour)
	writeTable(t, dir, []tkey{{domain: "customer.example", selector: "2027-01.myesp", kind: "ed", created: created}}, nil)
	added := build(loadTable(t, dir), fixtureNow)
	if changed := added.follow(removed); !slices.Equal(changed, []string{cust}) || serial(added) != uint32(created.Unix()) {
		t.Fatalf("key added: changed %q serial %d want %d", changed, serial(added), created.Unix())
	}

	// The revocation of 2026-10.myesp ends on 5 Dec: the record goes, and
	// the serial is the moment it went.
	later := day(12, 6)
	expired := build(loadTable(t, dir), later)
	if _, ok := expired.TXT("2026-10.myesp._domainkey.customer.example"); ok {
		t.Fatal("revoked record still served after revoked_for")
	}
	if changed := expired.follow(added); !slices.Contains(changed, cust) || serial(expired) != uint32(day(12, 5).Unix()) {
		t.Fatalf("revocation ended: changed %q serial %d want %d", changed, serial(expired), day(12, 5).Unix())
	}
}

func TestSerialGreater(t *testing.T) {
	cases := []struct {
		a, b uint32
		want bool
	}{
		{2, 1, true}, {1, 2, false}, {1, 1, false}, {0, 0xffffffff, true}, {0x80000000, 1, true}, {1, 0x80000001, false},
	}
	for _, c := range cases {
		if got := serialGreater(c.a, c.b); got != c.want {
			t.Errorf("serialGreater(%d, %d) = %v", c.a, c.b, got)
		}
	}
}

func TestMatchName(t *testing.T) {
	// The cases of policy.ZoneMatches, whose semantics matchName copies.
	for _, c := range []struct {
		pattern, zone string
		match         bool
	}{
		{"myesp._domainkey.*", "myesp._domainkey.customer.example", true},
		{"myesp._domainkey.*", "myesp._domainkey.a.b.example", true},
		{"myesp._domainkey.*", "other._domainkey.customer.example", false},
		{"myesp._domainkey.*", "myesp._domainkey", false},
		{"dkim.myesp.example", "dkim.myesp.example", true},
		{"dkim.myesp.example", "x.dkim.myesp.example", false},
		{"*.myesp.example", "dkim.myesp.example", true},
		{"*.myesp.example", "a.b.myesp.example", true},
		{"*.myesp.example", "myesp.example", false},
		{"a.*.example", "a.b.c.example", true},
		{"a.*.example", "a.example", false},
	} {
		if got := matchName(strings.Split(c.pattern, "."), c.zone); got != c.match {
			t.Errorf("matchName(%q, %q) = %v, want %v", c.pattern, c.zone, got, c.match)
		}
	}
}

func TestMatcher(t *testing.T) {
	m, err := NewMatcher(fixtureConfig().Zones)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ name, want string }{
		{"2027-01.MyEsp._domainkey.new-customer.example", "myesp._domainkey.new-customer.example."},
		{"s9.other.example.dkim.myesp.example.", "dkim.myesp.example."},
		{"s1._domainkey.other.example", ""},
	} {
		if got, err := m.ZoneOf(c.name); err != nil || got != c.want {
			t.Errorf("ZoneOf(%q) = %q, %v; want %q", c.name, got, err, c.want)
		}
	}
	if _, err := NewMatcher([]string{"bad zone"}); err == nil {
		t.Error("NewMatcher accepted a bad zone")
	}
}

// TestOffboardedCustomer: a domain whose keys are all retired (a customer
// who left) still has its last record served revoked for RevokedFor, and
// its zone is then gone.
func TestOffboardedCustomer(t *testing.T) {
	dir := t.TempDir()
	ks := []tkey{{domain: "stays.example", selector: "s.myesp", kind: "ed", created: day(11, 1)}}
	rs := []tretired{{domain: "left.example", selector: "s.myesp", alg: keys.Ed25519SHA256, retired: day(11, 28)}}
	writeTable(t, dir, ks, rs)
	tab := loadTable(t, dir)
	if len(tab.Keys("left.example")) != 0 || len(tab.Retired("left.example")) != 1 {
		t.Fatalf("fixture: left.example has %d keys and %d retired", len(tab.Keys("left.example")), len(tab.Retired("left.example")))
	}
	cfg := fixtureConfig()
	cfg.Zones = []string{"myesp._domainkey.*"}
	z, err := Build(cfg, tab, fixtureCNAME, fixtureNow)
	if err != nil {
		t.Fatal(err)
	}
	if txt, ok := z.TXT("s.myesp._domainkey.left.example."); !ok || !strings.HasSuffix(txt, "p=") {
		t.Errorf("the offboarded customer's record: %q, %v; want it revoked", txt, ok)
	}
	z, err = Build(cfg, tab, fixtureCNAME, day(11, 28).Add(cfg.RevokedFor+time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if zone := z.ZoneOf("s.myesp._domainkey.left.example."); zone != "" {
		t.Errorf("after revoked_for, still served in zone %q", zone)
	}
}
