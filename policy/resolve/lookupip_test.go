package resolve

import (
	"context"
	"fmt"
	"testing"

	"github.com/miekg/dns"
)

// TestLookupIP checks single-family lookups: one query of the asked type
// only, literals of the family, and "not found" for no address of it.
func TestLookupIP(t *testing.T) {
	s := exampleServer(t)
	r, _ := newTest(t, Config{}, s)
	ctx := context.Background()
	tests := []struct {
		network, host, want string
		notFound            bool
	}{
		{"ip4", "host.example.net", "[192.0.2.10 192.0.2.11]", false},
		{"ip6", "host.example.net", "[2001:db8::10]", false},
		{"ip", "host.example.net", "[192.0.2.10 192.0.2.11 2001:db8::10]", false},
		{"ip4", "alias.example.net", "[192.0.2.10 192.0.2.11]", false},
		{"ip4", "v6only.example.net", "[]", true},
		{"ip6", "v4only.example.net", "[]", true},
		{"ip4", "nowhere.example.net", "[]", true},
		{"ip4", "192.0.2.99", "[192.0.2.99]", false},
		{"ip6", "192.0.2.99", "[]", true},
		{"ip6", "2001:db8::99", "[2001:db8::99]", false},
	}
	for _, tt := range tests {
		ips, err := r.LookupIP(ctx, tt.network, tt.host)
		if got := fmt.Sprint(ips); got != tt.want || IsNotFound(err) != tt.notFound || (err != nil && !tt.notFound) {
			t.Errorf("LookupIP(%s, %s) = %s, %v; want %s (not found %v)", tt.network, tt.host, got, err, tt.want, tt.notFound)
		}
	}
	if n := s.QueryCount("v4only.example.net", dns.TypeA); n != 0 {
		t.Errorf("%d A queries for an ip6 lookup", n)
	}
	if n := s.QueryCount("v6only.example.net", dns.TypeAAAA); n != 0 {
		t.Errorf("%d AAAA queries for an ip4 lookup", n)
	}
}
