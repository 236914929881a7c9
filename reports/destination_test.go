package reports

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/authmilter/authmilter/internal/testdns"
	"github.com/authmilter/authmilter/policy/resolve"
)

func TestParseDestination(t *testing.T) {
	tests := []struct {
		uri      string
		addr     string // "" when refused
		wantHost string
	}{
		{"mailto:dmarc@example.com", "dmarc@example.com", "example.com"},
		{"MAILTO:Dmarc@Example.COM", "Dmarc@example.com", "example.com"},
		{"mailto:dmarc@example.com?subject=hello", "dmarc@example.com", "example.com"},
		{"mailto:dmarc%40x@example.com", "", ""}, // two @ after decoding
		{"mailto:d%2Bm@example.com", "d+m@example.com", "example.com"},
		{"mailto:dmarc@bücher.example", "dmarc@xn--bcher-kva.example", "xn--bcher-kva.example"},
		{"mailto:a@example.com%2Cb@example.net", "", ""}, // two addresses
		{"mailto:a@example.com%0D%0ARCPT%20TO:<x@y.example>", "", ""},
		{"mailto:a b@example.com", "", ""},
		{"mailto:-oQ/tmp@example.com", "-oQ/tmp@example.com", "example.com"}, // refused later, by the mailers
		{"mailto:nobody", "", ""},
		{"mailto:a@localhost", "", ""},
		{"mailto:a@" + strings.Repeat("x", 64) + ".example", "", ""},
		{"https://reports.example.com/dmarc", "", ""},
		{"dmarc@example.com", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.uri, func(t *testing.T) {
			d, err := parseDestination(tt.uri, 1234)
			if tt.addr == "" {
				if err == nil {
					t.Fatalf("accepted as %+v, want refused", d)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			wantEq(t, d.Address+" "+d.Host, tt.addr+" "+tt.wantHost)
			if d.Limit != 1234 || d.URI != tt.uri {
				t.Errorf("destination %+v lost its URI or limit", d)
			}
		})
	}
}

// sendTestDNS starts a real DNS server and returns the production resolver
// pointed at it, with short timeouts and no cache.
func sendTestDNS(t *testing.T) (*testdns.Server, *resolve.Resolver) {
	t.Helper()
	srv := testdns.Start(t)
	r, err := resolve.New(resolve.Config{Servers: []string{srv.Addr()}, Timeout: 2 * time.Second, CacheSize: -1})
	if err != nil {
		t.Fatal(err)
	}
	return srv, r
}

// TestVerifyDestination: RFC 9990 "Verifying External Destinations"
// against a real DNS server.
func TestVerifyDestination(t *testing.T) {
	srv, res := sendTestDNS(t)
	srv.AddZoneText(t, "", `
example.com._report._dmarc.reports.example.net. 300 IN TXT "v=DMARC1"
example.com._report._dmarc.override.example.net. 300 IN TXT "v=DMARC1; rua=mailto:other-box@override.example.net!50k,https://override.example.net/x"
example.com._report._dmarc.hijack.example.net. 300 IN TXT "v=DMARC1; rua=mailto:victim@victim.example"
example.com._report._dmarc.notdmarc.example.net. 300 IN TXT "v=spf1 -all" "" 
example.com._report._dmarc.lower.example.net. 300 IN TXT "v=dmarc1"
example.com._report._dmarc.badpolicy.example.net. 300 IN TXT "v=DMARC1; p=bogus"
example.com._report._dmarc.many.example.net. 300 IN TXT "hello"
example.com._report._dmarc.many.example.net. 300 IN TXT "v=DMARC1;"
`)
	srv.Fail("example.com._report._dmarc.servfail.example.net", dns.RcodeServerFailure)
	srv.Drop("example.com._report._dmarc.timeout.example.net")

	tests := []struct {
		name, policyDomain, uri string
		want                    string // addresses to use, comma-separated
		wantErr                 error  // errUnverified or ErrTemporary
		wantQueries             int
	}{
		{"same domain", "example.com", "mailto:dmarc@example.com", "dmarc@example.com", nil, 0},
		{"same organization", "news.example.com", "mailto:dmarc@reports.example.com", "dmarc@reports.example.com", nil, 0},
		{"same organization, ccTLD", "shop.example.co.uk", "mailto:d@example.co.uk", "d@example.co.uk", nil, 0},
		{"authorized", "example.com", "mailto:agg@reports.example.net", "agg@reports.example.net", nil, 1},
		{"override on the same host", "example.com", "mailto:agg@override.example.net", "other-box@override.example.net", nil, 1},
		{"override to another host", "example.com", "mailto:agg@hijack.example.net", "", errUnverified, 1},
		{"no record (NXDOMAIN)", "example.com", "mailto:agg@nowhere.example.net", "", errUnverified, 1},
		{"record is not DMARC1", "example.com", "mailto:agg@notdmarc.example.net", "", errUnverified, 1},
		{"version is case-sensitive", "example.com", "mailto:agg@lower.example.net", "", errUnverified, 1},
		{"invalid policy tags do not matter", "example.com", "mailto:agg@badpolicy.example.net", "agg@badpolicy.example.net", nil, 1},
		{"one good record among others", "example.com", "mailto:agg@many.example.net", "agg@many.example.net", nil, 1},
		{"SERVFAIL is temporary", "example.com", "mailto:agg@servfail.example.net", "", ErrTemporary, 1},
		{"timeout is temporary", "example.com", "mailto:agg@timeout.example.net", "", ErrTemporary, -1},
		{"name over DNS limits", strings.Repeat("a", 60) + "." + strings.Repeat("b", 60) + "." + strings.Repeat("c", 60) + ".example",
			"mailto:agg@" + strings.Repeat("d", 40) + ".example.net", "", errUnverified, 0},
		{"malformed policy domain", "bad domain", "mailto:agg@reports.example.net", "", errUnverified, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := parseDestination(tt.uri, 0)
			if err != nil {
				t.Fatal(err)
			}
			before := srv.Queries()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			got, err := verifyDestination(ctx, res, tt.policyDomain, d)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("got %v, %v; want an error wrapping %v", got, err, tt.wantErr)
				}
				if tt.wantErr == errUnverified && errors.Is(err, ErrTemporary) {
					t.Errorf("an unauthorized destination is reported as temporary: %v", err)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			var addrs []string
			for _, g := range got {
				addrs = append(addrs, g.Address)
			}
			wantEq(t, strings.Join(addrs, ","), tt.want)
			if q := srv.Queries() - before; tt.wantQueries >= 0 && q != tt.wantQueries {
				t.Errorf("%d DNS queries, want %d", q, tt.wantQueries)
			}
		})
	}
}

// TestVerifyDestinationOverrideLimit: an overriding rua brings its own
// size limit.
func TestVerifyDestinationOverrideLimit(t *testing.T) {
	srv, res := sendTestDNS(t)
	srv.SetTXT("example.com._report._dmarc.override.example.net", "v=DMARC1; rua=mailto:box@override.example.net!50k")
	d, _ := parseDestination("mailto:agg@override.example.net", 10<<20)
	got, err := verifyDestination(context.Background(), res, "example.com", d)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Limit != 50<<10 {
		t.Errorf("got %+v, want one destination with the override's 50k limit", got)
	}
}
