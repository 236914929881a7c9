package dnscheck

import (
	"fmt"
	"slices"
	"testing"

	"github.com/miekg/dns"

	"github.com/authmilter/authmilter/keys"
)

// TestReferral: the zone a referral delegates a name to is the closest
// enclosing NS owner; NS records for other names are ignored, and the NS
// names are bounded.
func TestReferral(t *testing.T) {
	ns := func(owner, target string) dns.RR {
		return &dns.NS{Hdr: dns.RR_Header{Name: owner, Rrtype: dns.TypeNS, Class: dns.ClassINET}, Ns: target}
	}
	var many []dns.RR
	for i := range 40 {
		many = append(many, ns("z.example.", fmt.Sprintf("ns%02d.example.", i)))
	}
	const name = "k.z.example."
	tests := []struct {
		name     string
		authNS   []dns.RR
		wantZone string
		wantNS   []string
	}{
		{name: "no referral", wantZone: ""},
		{name: "referral", authNS: []dns.RR{ns("Z.Example.", "NS2.P.example."), ns("z.example.", "ns1.p.example.")},
			wantZone: "z.example.", wantNS: []string{"ns1.p.example.", "ns2.p.example."}},
		{name: "unrelated NS records are ignored", authNS: []dns.RR{ns("other.example.", "ns.evil."), ns("k.z.example.x.", "ns.evil."), ns("z.example.", "ns1.p.example.")},
			wantZone: "z.example.", wantNS: []string{"ns1.p.example."}},
		{name: "the closest enclosing zone wins", authNS: []dns.RR{ns("example.", "ns.parent."), ns("z.example.", "ns1.p.example."), ns("example.", "ns2.parent.")},
			wantZone: "z.example.", wantNS: []string{"ns1.p.example."}},
		{name: "the name itself", authNS: []dns.RR{ns(name, "ns1.p.example.")}, wantZone: name, wantNS: []string{"ns1.p.example."}},
		{name: "bounded", authNS: many, wantZone: "z.example."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			zone, nss := referral(&dns.Msg{Ns: tt.authNS}, name)
			if zone != tt.wantZone {
				t.Errorf("zone %q, want %q", zone, tt.wantZone)
			}
			if tt.wantNS != nil && !slices.Equal(nss, tt.wantNS) {
				t.Errorf("NS %q, want %q", nss, tt.wantNS)
			}
			if len(nss) > MaxServers {
				t.Errorf("%d NS names, more than %d", len(nss), MaxServers)
			}
		})
	}
}

// TestReferrals: a parent zone's nameserver delegates the zone to us only
// when it refers to that zone with one of our NS names; the ones that did
// not answer count neither way.
func TestReferrals(t *testing.T) {
	ours := []string{"ns1.p.example.", "ns2.p.example."}
	refer := Server{Name: "ns.c.example", Addr: "192.0.2.1:53", State: keys.Missing, referral: "z.c.example.", referralNS: []string{"ns2.p.example."}}
	tests := []struct {
		name            string
		servers         []Server
		wantRefer, lack int
	}{
		{name: "refers to us", servers: []Server{refer}, wantRefer: 1},
		{name: "refers elsewhere", servers: []Server{{Name: "a", Addr: "192.0.2.1:53", State: keys.Missing, referral: "z.c.example.", referralNS: []string{"ns.other."}}}, lack: 1},
		{name: "refers to another zone", servers: []Server{{Name: "a", Addr: "192.0.2.1:53", State: keys.Missing, referral: "y.c.example.", referralNS: ours}}, lack: 1},
		{name: "answers NXDOMAIN", servers: []Server{refer, {Name: "b", Addr: "192.0.2.2:53", State: keys.Missing}}, wantRefer: 1, lack: 1},
		{name: "did not answer", servers: []Server{refer, {Name: "b", Addr: "192.0.2.2:53", State: keys.TempError}}, wantRefer: 1},
		{name: "has no address", servers: []Server{{Name: "b", State: keys.Missing, Unreachable: true}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, l := referrals(tt.servers, "z.c.example.", ours)
			if len(r) != tt.wantRefer || len(l) != tt.lack {
				t.Errorf("refer %q, lack %q; want %d and %d", r, l, tt.wantRefer, tt.lack)
			}
		})
	}
}

// TestDelegatedToUs: a zone is delegated to us when its NS set has one of
// the names our server serves at the apex (the server we publish to may be
// a hidden primary) or one of the addresses we publish to.
func TestDelegatedToUs(t *testing.T) {
	c, err := New(Config{Servers: []string{"127.0.0.1:53"}, Ours: []string{"192.0.2.10:5353"}})
	if err != nil {
		t.Fatal(err)
	}
	nss := []string{"ns1.p.example.", "ns2.p.example."}
	tests := []struct {
		name    string
		servers []Server
		want    bool
	}{
		{name: "one of our names", servers: []Server{{Name: "ns2.p.example", Addr: "192.0.2.3:53"}}, want: true},
		{name: "our address", servers: []Server{{Name: "ns.elsewhere", Addr: "192.0.2.10:53"}}, want: true},
		{name: "other nameservers", servers: []Server{{Name: "ns.c.example", Addr: "192.0.2.1:53"}}},
		{name: "none", servers: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := c.delegatedToUs(tt.servers, nss); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

// TestNotYetServed: a record the public path leads to and our server has
// is Partial when the zone's nameservers answer without it, TempError when
// none of them answered or they are not known, never DelegationMissing.
func TestNotYetServed(t *testing.T) {
	lagging := Server{Name: "ns2.p.example", Addr: "192.0.2.3:53", State: keys.Missing, Detail: "no such name"}
	silent := Server{Name: "ns3.p.example", Addr: "192.0.2.4:53", State: keys.TempError, Detail: "timeout"}
	tests := []struct {
		name    string
		servers []Server
		nsErr   error
		want    keys.State
	}{
		{name: "a lagging secondary", servers: []Server{lagging}, want: keys.Partial},
		{name: "one lags, one is silent", servers: []Server{lagging, silent}, want: keys.Partial},
		{name: "silent", servers: []Server{silent}, want: keys.TempError},
		{name: "nameservers not known", nsErr: fmt.Errorf("SERVFAIL"), want: keys.TempError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := Result{Zone: "z.c.example", Nameservers: tt.servers}
			notYetServed(&res, "192.0.2.10:53", "the public path reaches it", nil, tt.nsErr)
			if res.State != tt.want || len(res.Add) > 0 {
				t.Errorf("%s (%s), add %q; want %s", res.State, res.Detail, res.Add, tt.want)
			}
		})
	}
}
