package main

import (
	"testing"

	"github.com/authmilter/authmilter/policy"
)

// An nsupdate script goes to the target whose zones hold the record (the
// provider's CNAME zone, a delegated selector zone), not always to
// [keys.publish]'s server.
func TestNSUpdateServer(t *testing.T) {
	cfg, err := policy.ParseConfig("t.toml", []byte(`
[keys.publish]
server = "192.0.2.1"
zone = "customer.example"
[[keys.publish.target]]
server = "192.0.2.2:5353"
zones = ["dkim.myesp.example", "myesp._domainkey.*"]
`))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ name, server, zone string }{
		{"s1.cnamecust.example.dkim.myesp.example", "192.0.2.2:5353", ""},
		{"dec2026.myesp._domainkey.customer.example", "192.0.2.2:5353", ""},
		{"mail._domainkey.customer.example", "192.0.2.1:53", "customer.example"},
	} {
		server, zone := nsupdateServer(cfg, c.name)
		if server != c.server || zone != c.zone {
			t.Errorf("nsupdateServer(%s) = %q, %q; want %q, %q", c.name, server, zone, c.server, c.zone)
		}
	}
}
