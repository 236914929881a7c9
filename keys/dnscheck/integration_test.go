package dnscheck_test

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/authmilter/authmilter/keys"
	"github.com/authmilter/authmilter/keys/dnscheck"
	"github.com/authmilter/authmilter/keys/publish/publishtest"
)

// topo is a small real DNS world: a customer's server (.1) with the
// customer zones, the provider's two nameservers (.2 and .3, each with its
// own copy of the provider's zones, so that one can lag behind), and
// Unbound following the delegations between them. Port 53 everywhere, as
// NS records imply.
type topo struct {
	net      *publishtest.Net
	customer *publishtest.Knot
	ns1, ns2 *publishtest.Knot
	resolver *publishtest.Unbound
	keys     map[string]crypto.PublicKey // by name
	p        map[string]string           // p= by name
}

// zoneText is a zone file: SOA (TTL 600, MINIMUM 300 for the customer's
// zones; TTL 3600, MINIMUM 120 for the provider's), NS and the records.
func zoneText(origin string, soaTTL, minimum int, ns []string, records ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "$ORIGIN %s.\n$TTL 600\n@ %d IN SOA %s hostmaster 1 3600 600 86400 %d\n", origin, soaTTL, ns[0], minimum)
	for _, n := range ns {
		fmt.Fprintf(&b, "@ IN NS %s\n", n)
	}
	for _, r := range records {
		b.WriteString(r + "\n")
	}
	return b.String()
}

// txt is a zone-file TXT value in strings of at most 255 bytes.
func txt(v string) string {
	var parts []string
	for len(v) > 255 {
		parts = append(parts, `"`+v[:255]+`"`)
		v = v[255:]
	}
	return "( " + strings.Join(append(parts, `"`+v+`"`), " ") + " )"
}

func newTopo(t *testing.T) *topo {
	t.Helper()
	tp := &topo{net: publishtest.NewNet(t), keys: map[string]crypto.PublicKey{}, p: map[string]string{}}
	for _, n := range []string{"ours", "ours2", "other", "old", "wild", "cname", "chain", "lag", "retire-lag", "missing-cname", "wrong-cname", "delegated2", "slow"} {
		pub, _, _ := ed25519.GenerateKey(rand.Reader)
		tp.keys[n], tp.p[n] = pub, keys.PublicKeyData(pub)
	}
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tp.keys["rsa"], tp.p["rsa"] = rk.Public(), keys.PublicKeyData(rk.Public())
	rec := func(n string) string { return txt("v=DKIM1; k=ed25519; p=" + tp.p[n]) }
	provNS := []string{"ns1.provider.example.", "ns2.provider.example."}
	ip1, ip2, ip3 := tp.net.IP(1), tp.net.IP(2), tp.net.IP(3)
	customer := map[string]string{
		"customer.example": zoneText("customer.example", 600, 300, []string{"ns.customer.example."},
			"ns IN A "+ip1,
			// The delegated selector zone.
			"myesp._domainkey IN NS ns1.provider.example.",
			"myesp._domainkey IN NS ns2.provider.example.",
			// CNAME mode, one hop and two.
			"s1._domainkey IN CNAME s1.customer.example.dkim.provider.example.",
			"s2._domainkey IN CNAME hop.customer.example.",
			"hop IN CNAME s2.customer.example.dkim.provider.example.",
			"s4._domainkey IN CNAME elsewhere.dkim.provider.example.",
			// Records at the customer's own names.
			"foreign._domainkey IN TXT "+rec("other"),
			"revoked._domainkey IN TXT \"v=DKIM1; k=ed25519; p=\"",
			"old._domainkey IN TXT "+rec("old"),
			"big._domainkey 900 IN TXT "+txt("v=DKIM1; k=rsa; p="+tp.p["rsa"]),
			"loop1._domainkey IN CNAME loop2._domainkey",
			"loop2._domainkey IN CNAME loop1._domainkey",
			"slow._domainkey IN NS ns1.provider.example.",
			"slow._domainkey IN NS ns3.provider.example.",
		),
		"customer2.example": zoneText("customer2.example", 600, 300, []string{"ns.customer.example."}),
		"wild.example": zoneText("wild.example", 600, 300, []string{"ns.customer.example."},
			"*._domainkey IN TXT "+rec("wild")),
	}
	provider := zoneText("provider.example", 3600, 120, provNS,
		"ns1 IN A "+ip2, "ns2 IN A "+ip3, "ns3 IN A "+tp.net.IP(9),
		"s1.customer.example.dkim IN TXT "+rec("cname"),
		"s2.customer.example.dkim IN TXT "+rec("chain"),
		"s3.customer.example.dkim IN TXT "+rec("missing-cname"),
		"elsewhere.dkim IN TXT "+rec("other"),
		"s4.customer.example.dkim IN TXT "+rec("wrong-cname"),
	)
	delegated := zoneText("myesp._domainkey.customer.example", 3600, 60, provNS,
		"2026-11 1200 IN TXT "+rec("ours"),
		"retired IN TXT "+rec("retire-lag"))
	delegated2 := zoneText("myesp._domainkey.customer2.example", 3600, 60, provNS,
		"2026-11 IN TXT "+rec("delegated2"))
	slow := zoneText("slow._domainkey.customer.example", 3600, 60, []string{"ns1.provider.example.", "ns3.provider.example."},
		"k IN TXT "+rec("slow"))
	tp.customer = publishtest.StartZones(t, ip1, customer)
	prov := map[string]string{"provider.example": provider, "myesp._domainkey.customer.example": delegated,
		"myesp._domainkey.customer2.example": delegated2, "slow._domainkey.customer.example": slow}
	tp.ns1 = publishtest.StartZones(t, ip2, prov)
	tp.ns2 = publishtest.StartZones(t, ip3, prov)
	tp.resolver = publishtest.StartUnbound(t, map[string][]string{
		"customer.example": {ip1}, "customer2.example": {ip1}, "wild.example": {ip1},
		"provider.example": {ip2, ip3},
	})
	return tp
}

func (tp *topo) checker(t *testing.T, mode dnscheck.Mode) *dnscheck.Checker {
	t.Helper()
	c, err := dnscheck.New(dnscheck.Config{Servers: []string{tp.resolver.Addr}, Timeout: 3 * time.Second, Mode: mode,
		Ours: []string{tp.ns1.Addr}})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestCheckRealDNS checks records in every state through Unbound and the
// authoritative servers themselves.
func TestCheckRealDNS(t *testing.T) {
	tp := newTopo(t)
	// The provider's primary has a key its secondary has not got yet.
	tp.ns1.Update(t, "myesp._domainkey.customer.example", nil,
		[]string{"2026-12.myesp._domainkey.customer.example. 600 IN TXT \"v=DKIM1; k=ed25519; p=" + tp.p["lag"] + "\""})
	ns := func(parts ...string) []string { return parts }
	tests := []struct {
		name      string
		domain    string
		selector  string
		key       string // name of the expected key
		known     []string
		publishAt string
		mode      dnscheck.Mode
		want      keys.State
		detail    []string // substrings of Detail
		zone      string
		final     string
		cnames    []string
		servers   []string // "name state" per nameserver address
		add       []string
		found     string
		negTTL    time.Duration
		recordTTL time.Duration
	}{
		{name: "delegated selector zone", domain: "customer.example", selector: "2026-11.myesp", key: "ours",
			want: keys.Published, zone: "myesp._domainkey.customer.example", final: "2026-11.myesp._domainkey.customer.example",
			servers: ns("ns1.provider.example published", "ns2.provider.example published"), negTTL: 60 * time.Second, recordTTL: 1200 * time.Second},
		{name: "lagging secondary", domain: "customer.example", selector: "2026-12.myesp", key: "lag",
			want: keys.Partial, detail: ns("served by ns1.provider.example", "not by ns2.provider.example"),
			servers: ns("ns1.provider.example published", "ns2.provider.example missing")},
		{name: "a nameserver does not answer, resolver mode", domain: "customer.example", selector: "k.slow", key: "slow", mode: dnscheck.ResolverOnly,
			want: keys.Published},
		{name: "CNAME mode", domain: "customer.example", selector: "s1", key: "cname", publishAt: "s1.customer.example.dkim.provider.example",
			want: keys.Published, zone: "provider.example", final: "s1.customer.example.dkim.provider.example",
			cnames: ns("s1.customer.example.dkim.provider.example"), negTTL: 120 * time.Second, recordTTL: 600 * time.Second,
			servers: ns("ns1.provider.example published", "ns2.provider.example published")},
		{name: "CNAME chain", domain: "customer.example", selector: "s2", key: "chain",
			want: keys.Published, cnames: ns("hop.customer.example", "s2.customer.example.dkim.provider.example")},
		{name: "customer CNAME missing", domain: "customer.example", selector: "s3", key: "missing-cname", publishAt: "s3.customer.example.dkim.provider.example",
			want: keys.DelegationMissing, add: ns("s3._domainkey.customer.example. CNAME s3.customer.example.dkim.provider.example."),
			found: "no CNAME at s3._domainkey.customer.example: the public path ends at zone customer.example"},
		{name: "customer CNAME points elsewhere", domain: "customer.example", selector: "s4", key: "wrong-cname", known: ns(tp.p["wrong-cname"]),
			publishAt: "s4.customer.example.dkim.provider.example",
			want:      keys.DelegationMissing, add: ns("s4._domainkey.customer.example. CNAME s4.customer.example.dkim.provider.example."),
			found: "the CNAME at s4._domainkey.customer.example points to elsewhere.dkim.provider.example, expected s4.customer.example.dkim.provider.example"},
		{name: "delegation missing", domain: "customer2.example", selector: "2026-11.myesp", key: "delegated2",
			want:  keys.DelegationMissing,
			add:   ns("myesp._domainkey.customer2.example. NS ns1.provider.example.", "myesp._domainkey.customer2.example. NS ns2.provider.example."),
			found: "the public path ends at zone customer2.example, which has no NS records for myesp._domainkey.customer2.example"},
		{name: "foreign record", domain: "customer.example", selector: "foreign", key: "ours", known: ns(tp.p["ours"]),
			want: keys.Foreign, detail: ns("never published")},
		{name: "another key of ours", domain: "customer.example", selector: "foreign", key: "ours", known: ns(tp.p["ours"], tp.p["other"]),
			want: keys.Mismatch, detail: ns("different public key")},
		{name: "revoked", domain: "customer.example", selector: "revoked", key: "ours", want: keys.Revoked,
			servers: ns("ns.customer.example revoked")},
		{name: "missing", domain: "customer.example", selector: "nothing", key: "ours", want: keys.Missing, detail: ns("NXDOMAIN")},
		{name: "long RSA record", domain: "customer.example", selector: "big", key: "rsa", want: keys.Published,
			recordTTL: 900 * time.Second, negTTL: 300 * time.Second},
		{name: "CNAME loop", domain: "customer.example", selector: "loop1", key: "ours", want: keys.TempError},
		{name: "a nameserver does not answer", domain: "customer.example", selector: "k.slow", key: "slow",
			want: keys.TempError, detail: ns("not known yet from ns3.provider.example")},
	}
	ctx := context.Background()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tp.checker(t, cmpOr(tt.mode, dnscheck.Nameservers))
			q := dnscheck.Query{Domain: tt.domain, Selector: tt.selector, Public: tp.keys[tt.key], Known: tt.known, PublishName: tt.publishAt}
			r := c.Check(ctx, q)
			checkResult(t, r, tt.want, tt.detail, tt.servers, tt.add, tt.found)
			if tt.zone != "" && r.Zone != tt.zone {
				t.Errorf("zone %q, want %q", r.Zone, tt.zone)
			}
			if tt.final != "" && r.FinalName != tt.final {
				t.Errorf("final name %q, want %q", r.FinalName, tt.final)
			}
			if tt.cnames != nil && !slices.Equal(r.CNAMEs, tt.cnames) {
				t.Errorf("CNAMEs %q, want %q", r.CNAMEs, tt.cnames)
			}
			if tt.negTTL != 0 && r.NegativeTTL != tt.negTTL {
				t.Errorf("negative TTL %v, want %v", r.NegativeTTL, tt.negTTL)
			}
			if tt.recordTTL != 0 && r.RecordTTL != tt.recordTTL {
				t.Errorf("record TTL %v, want %v", r.RecordTTL, tt.recordTTL)
			}
			if r.State == keys.Published && r.Hold() != max(r.NegativeTTL, r.RecordTTL) {
				t.Errorf("hold %v", r.Hold())
			}
		})
	}
	// Once the secondary has the record too, the key is published.
	tp.ns2.Update(t, "myesp._domainkey.customer.example", nil,
		[]string{"2026-12.myesp._domainkey.customer.example. 600 IN TXT \"v=DKIM1; k=ed25519; p=" + tp.p["lag"] + "\""})
	// (Unbound may have cached the secondary's negative answer for a second.)
	for deadline := time.Now().Add(20 * time.Second); ; {
		r := tp.checker(t, dnscheck.Nameservers).Check(ctx, dnscheck.Query{Domain: "customer.example", Selector: "2026-12.myesp", Public: tp.keys["lag"]})
		if r.State == keys.Published {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the secondary caught up: %s %s", r.State, r.Detail)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// CheckAll keeps the order.
	qs := []dnscheck.Query{
		{Domain: "customer.example", Selector: "nothing", Public: tp.keys["ours"]},
		{Domain: "customer.example", Selector: "2026-11.myesp", Public: tp.keys["ours"]},
	}
	if rs := tp.checker(t, dnscheck.Nameservers).CheckAll(ctx, qs); rs[0].State != keys.Missing || rs[1].State != keys.Published {
		t.Errorf("CheckAll: %s, %s", rs[0].State, rs[1].State)
	}
}

// TestCheckRetiredRealDNS checks retired selectors: removed, revoked, still
// served by a lagging nameserver, and kept alive by a wildcard.
func TestCheckRetiredRealDNS(t *testing.T) {
	tp := newTopo(t)
	// The primary withdrew the retired record; the secondary still has it.
	tp.ns1.Update(t, "myesp._domainkey.customer.example", []string{"retired.myesp._domainkey.customer.example"}, nil)
	tests := []struct {
		name     string
		domain   string
		selector string
		p        string
		current  []string
		mode     dnscheck.Mode
		retired  bool
		state    keys.State
		oldKey   bool
		wildcard bool
		detail   string
	}{
		{name: "removed", domain: "customer.example", selector: "gone", p: tp.p["ours"], retired: true, state: keys.Missing},
		{name: "revoked", domain: "customer.example", selector: "revoked", p: tp.p["ours"], retired: true, state: keys.Revoked},
		{name: "still published", domain: "customer.example", selector: "old", p: tp.p["old"], retired: false, state: keys.Published, oldKey: true,
			detail: "still gives the retired key"},
		{name: "another key at the selector", domain: "customer.example", selector: "foreign", p: tp.p["old"], retired: false, state: keys.Published,
			detail: "still gives a usable key"},
		{name: "the selector's new key does not count", domain: "customer.example", selector: "foreign", p: tp.p["old"], current: []string{tp.p["other"]},
			retired: true, state: keys.Missing},
		// The public path goes to either nameserver: its state may be either.
		{name: "a lagging nameserver still serves it", domain: "customer.example", selector: "retired.myesp", p: tp.p["retire-lag"], retired: false,
			oldKey: true, detail: "nameserver ns2.provider.example"},
		{name: "wildcard", domain: "wild.example", selector: "2026-01", p: tp.p["old"], retired: false, state: keys.Published, wildcard: true,
			detail: "*._domainkey.wild.example"},
		{name: "wildcard, resolver mode", domain: "wild.example", selector: "2026-01", mode: dnscheck.ResolverOnly, retired: false,
			state: keys.Published, wildcard: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tp.checker(t, cmpOr(tt.mode, dnscheck.Nameservers))
			r := c.CheckRetired(context.Background(), dnscheck.RetiredQuery{Domain: tt.domain, Selector: tt.selector, P: tt.p, Current: tt.current})
			if r.Retired != tt.retired || (tt.state != "" && r.State != tt.state) || r.OldKey != tt.oldKey || r.Wildcard != tt.wildcard {
				t.Fatalf("got %+v, want retired %v state %s old key %v wildcard %v", r, tt.retired, tt.state, tt.oldKey, tt.wildcard)
			}
			if !strings.Contains(r.Detail, tt.detail) {
				t.Errorf("detail %q lacks %q", r.Detail, tt.detail)
			}
		})
	}
}

// checkResult fails t unless r has state (else it stops the test), a
// Detail that contains every string of detail, the nameserver states of
// servers ("name state" each; nil: not checked), exactly the records to
// add of add, and a Found that contains found ("": not checked).
func checkResult(t *testing.T, r dnscheck.Result, state keys.State, detail, servers, add []string, found string) {
	t.Helper()
	if r.State != state {
		t.Fatalf("state %s (%s), want %s; result %+v", r.State, r.Detail, state, r)
	}
	for _, d := range detail {
		if !strings.Contains(r.Detail, d) {
			t.Errorf("detail %q lacks %q", r.Detail, d)
		}
	}
	if servers != nil {
		var got []string
		for _, s := range r.Nameservers {
			got = append(got, s.Name+" "+string(s.State))
		}
		if !slices.Equal(got, servers) {
			t.Errorf("nameservers %q, want %q (%+v)", got, servers, r.Nameservers)
		}
	}
	if !slices.Equal(r.Add, add) {
		t.Errorf("records to add %q, want %q", r.Add, add)
	}
	if found != "" && !strings.Contains(r.Found, found) {
		t.Errorf("found %q, want %q", r.Found, found)
	}
}

func cmpOr(a, b dnscheck.Mode) dnscheck.Mode {
	if a != "" {
		return a
	}
	return b
}

// TestDelegationExistsRealDNS: when the customer's delegation (or CNAME)
// is in place, a record the public path does not give yet is not
// DelegationMissing, whichever nameserver the resolver asked and whatever
// it still has cached: the secondary lags, the primary we publish to is
// hidden (not in the NS set), or the resolver has a negative answer cached
// from before the record, the delegation or the CNAME existed. Only a
// delegation to other nameservers is DelegationMissing.
func TestDelegationExistsRealDNS(t *testing.T) {
	n := publishtest.NewNet(t)
	ip1, ip2, ip3 := n.IP(1), n.IP(2), n.IP(3)
	ks := map[string]crypto.PublicKey{}
	p := map[string]string{}
	for _, k := range []string{"lag", "hidden", "cached", "late", "cname", "cname-lag", "other"} {
		pub, _, _ := ed25519.GenerateKey(rand.Reader)
		ks[k], p[k] = pub, keys.PublicKeyData(pub)
	}
	rec := func(k string) string { return txt("v=DKIM1; k=ed25519; p=" + p[k]) }
	rr := func(name, k string) string {
		return name + ". 600 IN TXT \"v=DKIM1; k=ed25519; p=" + p[k] + "\""
	}
	provNS := []string{"ns1.provider.example.", "ns2.provider.example."}
	// Long negative TTLs (SOA MINIMUM 3600): a negative answer the
	// resolver caches outlives the test.
	customer := zoneText("customer.example", 3600, 3600, []string{"ns.customer.example."},
		"ns IN A "+ip1,
		"lag._domainkey IN NS ns1.provider.example.",
		"lag._domainkey IN NS ns2.provider.example.",
		// The provider publishes to a hidden primary (ns1): only ns2 is
		// delegated to.
		"hidden._domainkey IN NS ns2.provider.example.",
		"cached._domainkey IN NS ns1.provider.example.",
		"cached._domainkey IN NS ns2.provider.example.",
		// The customer delegated to their own server.
		"other._domainkey IN NS ns.customer.example.",
		// CNAME mode, to a zone of the provider with a hidden primary.
		"s6._domainkey IN CNAME s6.customer.example.dkim2.provider.example.",
	)
	sub := func(zone string, ns []string) string { return zoneText(zone, 3600, 3600, ns) }
	prov := map[string]string{
		"provider.example": zoneText("provider.example", 3600, 3600, provNS,
			"ns1 IN A "+ip2, "ns2 IN A "+ip3,
			"s5.customer.example.dkim IN TXT "+rec("cname"),
			"dkim2 IN NS ns2.provider.example."),
		"dkim2.provider.example":             sub("dkim2.provider.example", []string{"ns2.provider.example."}),
		"lag._domainkey.customer.example":    sub("lag._domainkey.customer.example", provNS),
		"hidden._domainkey.customer.example": sub("hidden._domainkey.customer.example", []string{"ns2.provider.example."}),
		"cached._domainkey.customer.example": sub("cached._domainkey.customer.example", provNS),
		"late._domainkey.customer.example":   sub("late._domainkey.customer.example", provNS),
		"other._domainkey.customer.example":  sub("other._domainkey.customer.example", provNS),
	}
	cust := publishtest.StartZones(t, ip1, map[string]string{"customer.example": customer,
		"other._domainkey.customer.example": sub("other._domainkey.customer.example", []string{"ns.customer.example."})})
	ns1 := publishtest.StartZones(t, ip2, prov)
	ns2 := publishtest.StartZones(t, ip3, prov)
	stubs := map[string][]string{"customer.example": {ip1}, "provider.example": {ip2, ip3}}
	// The resolver that asks only the secondary for the lagging zone.
	lagStubs := maps.Clone(stubs)
	lagStubs["lag._domainkey.customer.example"] = []string{ip3}
	// A hidden primary is not asked by resolvers: ns1 holds the parent
	// zone too, and would answer from its own copy.
	lagStubs["dkim2.provider.example"] = []string{ip3}
	plain := publishtest.StartUnbound(t, lagStubs)
	caching := publishtest.StartUnboundNegativeCache(t, stubs, time.Hour)

	// Before publication, the caching resolver learns that the names do
	// not exist.
	for _, name := range []string{"k.cached._domainkey.customer.example", "k.late._domainkey.customer.example", "s5._domainkey.customer.example"} {
		m := new(dns.Msg)
		m.SetQuestion(name+".", dns.TypeTXT)
		r, err := dns.Exchange(m, caching.Addr)
		if err != nil || r.Rcode != dns.RcodeNameError {
			t.Fatalf("%s before publication: %v %v", name, r, err)
		}
	}
	// Publication: on the primary only for the lagging and hidden zones,
	// everywhere for the others; the customer adds a delegation and a
	// CNAME.
	ns1.Update(t, "lag._domainkey.customer.example", nil, []string{rr("k.lag._domainkey.customer.example", "lag")})
	ns1.Update(t, "hidden._domainkey.customer.example", nil, []string{rr("k.hidden._domainkey.customer.example", "hidden")})
	ns1.Update(t, "other._domainkey.customer.example", nil, []string{rr("k.other._domainkey.customer.example", "other")})
	ns1.Update(t, "dkim2.provider.example", nil, []string{rr("s6.customer.example.dkim2.provider.example", "cname-lag")})
	for _, s := range []*publishtest.Knot{ns1, ns2} {
		s.Update(t, "cached._domainkey.customer.example", nil, []string{rr("k.cached._domainkey.customer.example", "cached")})
		s.Update(t, "late._domainkey.customer.example", nil, []string{rr("k.late._domainkey.customer.example", "late")})
	}
	cust.Update(t, "customer.example", nil, []string{
		"late._domainkey.customer.example. 600 IN NS ns1.provider.example.",
		"late._domainkey.customer.example. 600 IN NS ns2.provider.example.",
		"s5._domainkey.customer.example. 600 IN CNAME s5.customer.example.dkim.provider.example.",
	})

	ns := func(parts ...string) []string { return parts }
	tests := []struct {
		name      string
		resolver  *publishtest.Unbound
		selector  string
		key       string
		publishAt string
		want      keys.State
		detail    []string
		servers   []string
		add       []string
		found     string
	}{
		{name: "the resolver asks the lagging secondary", resolver: plain, selector: "k.lag", key: "lag",
			want: keys.Partial, detail: ns("served by ns1.provider.example", "not by ns2.provider.example"),
			servers: ns("ns1.provider.example published", "ns2.provider.example missing")},
		{name: "hidden primary, the secondary lags", resolver: plain, selector: "k.hidden", key: "hidden",
			want: keys.Partial, detail: ns(ns1.Addr, "not by ns2.provider.example"),
			servers: ns("ns2.provider.example missing")},
		{name: "delegated to other nameservers", resolver: plain, selector: "k.other", key: "other",
			want:  keys.DelegationMissing,
			add:   ns("other._domainkey.customer.example. NS ns1.provider.example.", "other._domainkey.customer.example. NS ns2.provider.example."),
			found: "zone other._domainkey.customer.example is delegated to ns.customer.example, expected ns1.provider.example, ns2.provider.example"},
		{name: "negative answer cached, every nameserver serves it", resolver: caching, selector: "k.cached", key: "cached",
			want: keys.Partial, detail: ns("negative answer cached", "1h0m0s"),
			servers: ns("ns1.provider.example published", "ns2.provider.example published")},
		{name: "negative answer cached from before the delegation", resolver: caching, selector: "k.late", key: "late",
			want: keys.Partial, detail: ns("negative answer cached", "late._domainkey.customer.example"),
			servers: ns("ns1.provider.example published", "ns2.provider.example published")},
		{name: "negative answer cached from before the CNAME", resolver: caching, selector: "s5", key: "cname",
			publishAt: "s5.customer.example.dkim.provider.example",
			want:      keys.Partial, detail: ns("negative answer cached", "s5.customer.example.dkim.provider.example")},
		{name: "CNAME in place, hidden primary, the secondary lags", resolver: plain, selector: "s6", key: "cname-lag",
			publishAt: "s6.customer.example.dkim2.provider.example",
			want:      keys.Partial, detail: ns("reaches s6.customer.example.dkim2.provider.example", ns1.Addr, "not by ns2.provider.example"),
			servers: ns("ns2.provider.example missing")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := dnscheck.New(dnscheck.Config{Servers: []string{tt.resolver.Addr}, Timeout: 3 * time.Second, Ours: []string{ns1.Addr}})
			if err != nil {
				t.Fatal(err)
			}
			r := c.Check(context.Background(), dnscheck.Query{Domain: "customer.example", Selector: tt.selector, Public: ks[tt.key],
				PublishName: tt.publishAt})
			t.Logf("%s: %s", r.State, r.Detail)
			checkResult(t, r, tt.want, tt.detail, tt.servers, tt.add, tt.found)
		})
	}
}
