package policy

import (
	"context"
	"net"
	"strings"
	"testing"

	"github.com/authmilter/authmilter/keys"
)

// tempFailDNS fails every TXT lookup temporarily (a DNS outage).
type tempFailDNS struct{ fakeDNS }

func (*tempFailDNS) LookupTXT(_ context.Context, name string) ([]string, error) {
	return nil, &net.DNSError{Err: "i/o timeout", Name: name, IsTimeout: true, IsTemporary: true}
}

// TestOnUnsigned: outbound.on_unsigned = "tempfail" defers mail from a
// domain that has keys but no active key (451 4.7.0), whatever the reason
// (not published yet, DNS failing); mail from domains without keys, mail
// whose From cannot be read and inbound mail are never deferred for it.
// The reason is told apart: no_active_key, or dns_temperror when the keys
// could not be looked up.
func TestOnUnsigned(t *testing.T) {
	dir := t.TempDir()
	copyKey(t, dir, "unpub.example", "s1", "rsa2048-pkcs8.pem")
	copyKey(t, dir, "example.com", "s1", "ed25519-pkcs8.pem")
	compile := func(t *testing.T, onUnsigned string, r Resolver) *Policy {
		t.Helper()
		cfg, err := ParseConfig("t.toml", []byte("[keys]\ndir = \""+dir+"\"\n[outbound]\non_unsigned = \""+onUnsigned+"\"\n"))
		if err != nil {
			t.Fatal(err)
		}
		pol, err := Compile(context.Background(), cfg, r)
		if err != nil {
			t.Fatal(err)
		}
		return pol
	}
	dns := &fakeDNS{}
	tab, err := keys.LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	dns.publish(tab.Keys("example.com")[0])

	tests := []struct {
		name       string
		onUnsigned string
		r          Resolver
		from       string
		action     Action
		reason     string
	}{
		{"accept, not published", "accept", dns, "a@unpub.example", Accept, ReasonNoActiveKey},
		{"tempfail, not published", "tempfail", dns, "a@unpub.example", TempFail, ReasonNoActiveKey},
		{"tempfail, DNS down", "tempfail", &tempFailDNS{}, "a@unpub.example", TempFail, ReasonDNSTempError},
		{"accept, DNS down", "accept", &tempFailDNS{}, "a@unpub.example", Accept, ReasonDNSTempError},
		{"tempfail, no key folder", "tempfail", dns, "a@other.example", Accept, ReasonNoKey},
		{"tempfail, From unparsable", "tempfail", dns, "<a@unpub.example", Accept, ReasonFromUnparsable},
		{"tempfail, signed", "tempfail", dns, "a@example.com", Accept, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pol := compile(t, tt.onUnsigned, tt.r)
			_, d := signMessage(t, pol, "From: "+tt.from+"\r\nSubject: x\r\n\r\nbody\r\n")
			if d.Action != tt.action || d.UnsignedReason != tt.reason {
				t.Fatalf("action %v reason %q, want %v %q", d.Action, d.UnsignedReason, tt.action, tt.reason)
			}
			if d.Action == TempFail && (d.SMTPCode != 451 || d.SMTPStatus != "4.7.0" || !strings.Contains(d.SMTPText, "unpub.example")) {
				t.Errorf("tempfail reply %d %s %q, want 451 4.7.0 naming the domain", d.SMTPCode, d.SMTPStatus, d.SMTPText)
			}
			if d.Action == TempFail && len(d.Prepend) != 0 {
				t.Errorf("a deferred message still gets header fields: %v", d.Prepend)
			}
		})
	}
	// Inbound mail from a domain of ours is not deferred.
	pol := compile(t, "tempfail", dns)
	header, body, _ := SplitMessage([]byte("From: a@unpub.example\r\n\r\nbody\r\n"))
	m := pol.Begin(&Envelope{ClientIP: mustAddr("198.51.100.1")}, header)
	m.Write(body)
	if d := m.Finish(); d.Action != Accept {
		t.Errorf("inbound mail deferred: %v", d.Action)
	}
}

// TestPartlySignedIsLogged: a domain with an RSA and an Ed25519 key of
// which only one is active is signed with that one, and the decision line
// names the algorithm it was not signed with.
func TestPartlySignedIsLogged(t *testing.T) {
	dir := t.TempDir()
	copyKey(t, dir, "example.com", "s1", "rsa2048-pkcs8.pem")
	copyKey(t, dir, "example.com", "s1e", "ed25519-pkcs8.pem")
	tab, err := keys.LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	dns := &fakeDNS{}
	for _, k := range tab.Keys("example.com") {
		if k.Selector == "s1e" {
			dns.publish(k)
		}
	}
	cfg, err := ParseConfig("t.toml", []byte("[keys]\ndir = \""+dir+"\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	pol, err := Compile(context.Background(), cfg, dns)
	if err != nil {
		t.Fatal(err)
	}
	_, d := signMessage(t, pol, "From: a@example.com\r\n\r\nbody\r\n")
	if d.Signatures != 1 {
		t.Fatalf("%d signatures, want 1", d.Signatures)
	}
	var got string
	for _, a := range d.Log {
		if a.Key == "not_signed_with" {
			got = a.Value.String()
		}
	}
	if got != "example.com/rsa-sha256" {
		t.Errorf("not_signed_with = %q, want example.com/rsa-sha256 (log %v)", got, d.Log)
	}
}
