package dnscheck

import (
	"crypto/ed25519"
	"crypto/rand"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/authmilter/authmilter/keys"
)

func TestClassify(t *testing.T) {
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	other, _, _ := ed25519.GenerateKey(rand.Reader)
	p, op := keys.PublicKeyData(pub), keys.PublicKeyData(other)
	tests := []struct {
		name   string
		txts   []string
		known  []string
		want   keys.State
		detail string
	}{
		{"ours", []string{"v=DKIM1; k=ed25519; p=" + p}, nil, keys.Published, ""},
		{"ours among other TXT", []string{"google-site-verification=x", "v=DKIM1; k=ed25519; p=" + p}, nil, keys.Published, ""},
		{"nothing", nil, nil, keys.Missing, "no DKIM record"},
		{"only other TXT", []string{"hello"}, nil, keys.Missing, "1 other TXT"},
		{"two records", []string{"v=DKIM1; k=ed25519; p=" + p, "v=DKIM1; k=ed25519; p=" + op}, nil, keys.Mismatch, "exactly one"},
		{"revoked", []string{"v=DKIM1; k=ed25519; p="}, []string{p}, keys.Revoked, "revoked"},
		{"invalid", []string{"v=DKIM1; p=" + p + "; p=x"}, nil, keys.Mismatch, "invalid"},
		{"bad base64", []string{"v=DKIM1; k=ed25519; p=!!!"}, []string{p}, keys.Mismatch, "base64"},
		{"another key, nothing known", []string{"v=DKIM1; k=ed25519; p=" + op}, nil, keys.Mismatch, "different public key"},
		{"another key of ours", []string{"v=DKIM1; k=ed25519; p=" + op}, []string{p, op}, keys.Mismatch, "different public key"},
		{"another key of ours, known as a record", []string{"v=DKIM1; k=ed25519; p=" + op}, []string{"v=DKIM1; k=ed25519; p=" + op}, keys.Mismatch, "different"},
		{"someone else's key", []string{"v=DKIM1; k=ed25519; p=" + op}, []string{p}, keys.Foreign, "never published"},
		{"wrong k=", []string{"v=DKIM1; k=rsa; p=" + p}, []string{p}, keys.Mismatch, "rsa p="},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, detail := Classify(tt.txts, "s._domainkey.example.com", pub, tt.known)
			if got != tt.want || !strings.Contains(detail, tt.detail) {
				t.Errorf("Classify = %s %q, want %s %q", got, detail, tt.want, tt.detail)
			}
		})
	}
}

func TestSummarize(t *testing.T) {
	pub := func(name, addr string) Server { return Server{Name: name, Addr: addr, State: keys.Published} }
	tests := []struct {
		name                         string
		servers                      []Server
		serving, notServing, unknown int
	}{
		{"all serve", []Server{pub("a", "1"), pub("b", "2")}, 2, 0, 0},
		{"one lags", []Server{pub("a", "1"), {Name: "b", Addr: "2", State: keys.Missing}}, 1, 1, 0},
		{"one times out", []Server{pub("a", "1"), {Name: "b", Addr: "2", State: keys.TempError}}, 1, 0, 1},
		{"no IPv6 here", []Server{pub("a", "1"), {Name: "a", Addr: "[2001:db8::1]:53", State: keys.TempError, Unreachable: true}}, 1, 0, 0},
		{"unreachable and nothing else", []Server{{Name: "a", Addr: "[2001:db8::1]:53", State: keys.TempError, Unreachable: true}}, 0, 0, 1},
		{"an address of a serving nameserver lags", []Server{pub("a", "1"), {Name: "a", Addr: "2", State: keys.Missing}}, 0, 1, 0},
		{"a nameserver without address", []Server{pub("a", "1"), {Name: "b", State: keys.Missing, Unreachable: true}}, 1, 0, 0},
		{"address lookup failed", []Server{pub("a", "1"), {Name: "b", State: keys.TempError}}, 1, 0, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, n, u := summarize(tt.servers)
			if len(s) != tt.serving || len(n) != tt.notServing || len(u) != tt.unknown {
				t.Errorf("summarize = %q / %q / %q, want %d/%d/%d", s, n, u, tt.serving, tt.notServing, tt.unknown)
			}
		})
	}
}

func TestNegativeTTL(t *testing.T) {
	for _, tt := range []struct {
		ttl, minimum uint32
		want         time.Duration
	}{{600, 300, 300 * time.Second}, {60, 3600, 60 * time.Second}, {0, 0, 0}} {
		soa := &dns.SOA{Hdr: dns.RR_Header{Ttl: tt.ttl}, Minttl: tt.minimum}
		if got := negativeTTL(soa); got != tt.want {
			t.Errorf("negativeTTL(%d, %d) = %v, want %v", tt.ttl, tt.minimum, got, tt.want)
		}
	}
	if negativeTTL(nil) != 0 {
		t.Error("no SOA")
	}
}

func TestNew(t *testing.T) {
	for _, tt := range []struct {
		cfg     Config
		wantErr string
	}{
		{Config{Servers: []string{"127.0.0.1:53"}}, ""},
		{Config{}, "no resolvers"},
		{Config{Servers: []string{"127.0.0.1"}}, "ip:port"},
		{Config{Servers: []string{"127.0.0.1:53"}, Mode: "dig"}, "unknown mode"},
		{Config{Servers: []string{"127.0.0.1:53"}, Ours: []string{"ns.example:53"}}, "ip:port"},
	} {
		c, err := New(tt.cfg)
		if (err == nil) != (tt.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
			t.Errorf("New(%+v) = %v, want %q", tt.cfg, err, tt.wantErr)
		}
		if err == nil && c.Mode() != Nameservers {
			t.Errorf("default mode %s", c.Mode())
		}
	}
}

func TestBadNames(t *testing.T) {
	c, _ := New(Config{Servers: []string{"127.0.0.1:9"}})
	if r := c.Check(t.Context(), Query{Domain: "exa mple.com", Selector: "s"}); r.State != keys.Mismatch || !strings.Contains(r.Detail, "not a valid record name") {
		t.Errorf("bad name: %+v", r)
	}
	if r := c.CheckRetired(t.Context(), RetiredQuery{Domain: strings.Repeat("a", 300), Selector: "s"}); r.Retired || r.State != keys.TempError {
		t.Errorf("bad name, retired: %+v", r)
	}
}
