package policy

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/authmilter/authmilter/keys"
)

// fakeDNS is an in-memory TXT resolver for unit tests; integration tests
// use a real DNS server.
type fakeDNS struct {
	mu  sync.Mutex
	txt map[string][]string
}

func (f *fakeDNS) LookupTXT(_ context.Context, name string) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if v, ok := f.txt[strings.TrimSuffix(strings.ToLower(name), ".")]; ok {
		return v, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}

func (f *fakeDNS) LookupMX(_ context.Context, name string) ([]*net.MX, error) {
	return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}

func (f *fakeDNS) LookupIPAddr(_ context.Context, name string) ([]net.IPAddr, error) {
	return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}

func (f *fakeDNS) LookupAddr(_ context.Context, addr string) ([]string, error) {
	return nil, &net.DNSError{Err: "no such host", Name: addr, IsNotFound: true}
}

func (f *fakeDNS) publish(k *keys.Key) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.txt == nil {
		f.txt = map[string][]string{}
	}
	f.txt[keys.RecordName(k.Domain, k.Selector)] = []string{keys.FormatRecord(k)}
}

func copyKey(t testing.TB, dir, domain, selector, src string) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "testdata", "keys", src))
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(dir, domain), 0o700)
	if err := os.WriteFile(filepath.Join(dir, domain, selector+".pem"), data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// testPolicy compiles a policy over a key dir with example.com (RSA and
// Ed25519), fbl.esp.example (RSA) and all keys published in a fakeDNS.
func testPolicy(t testing.TB, extra string) (*Policy, *fakeDNS) {
	t.Helper()
	dir := t.TempDir()
	copyKey(t, dir, "example.com", "2026-11", "rsa2048-pkcs8.pem")
	copyKey(t, dir, "example.com", "2026-11e", "ed25519-pkcs8.pem")
	copyKey(t, dir, "fbl.esp.example", "esp1", "rsa2048-pkcs1.pem")
	cfg, err := ParseConfig("test.toml", []byte("keys.dir = \""+dir+"\"\nkeys.require_published = false\n"+extra))
	if err != nil {
		t.Fatal(err)
	}
	dns := &fakeDNS{}
	pol, err := Compile(context.Background(), cfg, dns)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range pol.Table().All() {
		dns.publish(k)
	}
	return pol, dns
}

func TestDirection(t *testing.T) {
	pol, _ := testPolicy(t, "[outbound]\nnetworks = [\"192.0.2.0/24\", \"2001:db8::/32\"]\n")
	tests := []struct {
		name string
		env  Envelope
		want bool
	}{
		{"inside v4 network", Envelope{ClientIP: netip.MustParseAddr("192.0.2.7")}, true},
		{"v4-mapped v6", Envelope{ClientIP: netip.MustParseAddr("::ffff:192.0.2.7")}, true},
		{"inside v6 network", Envelope{ClientIP: netip.MustParseAddr("2001:db8::25")}, true},
		{"outside", Envelope{ClientIP: netip.MustParseAddr("198.51.100.1")}, false},
		{"smtp auth", Envelope{ClientIP: netip.MustParseAddr("198.51.100.1"), AuthUser: "alice"}, true},
		{"daemon name", Envelope{ClientIP: netip.MustParseAddr("198.51.100.1"), DaemonName: "ORIGINATING"}, true},
		{"other daemon name", Envelope{ClientIP: netip.MustParseAddr("198.51.100.1"), DaemonName: "MTA"}, false},
		{"no address", Envelope{}, false},
	}
	for _, tt := range tests {
		if got, why := pol.Direction(&tt.env); got != tt.want {
			t.Errorf("%s: outbound = %v (%s), want %v", tt.name, got, why, tt.want)
		}
	}
}

func TestSigningKeys(t *testing.T) {
	ids := func(ks []*keys.Key) string {
		var s []string
		for _, k := range ks {
			s = append(s, k.ID())
		}
		return strings.Join(s, ",")
	}
	tests := []struct {
		name, rules, from, want string
	}{
		{"default catch-all", "", "example.com", "example.com/2026-11,example.com/2026-11e"},
		{"catch-all no key", "", "other.example", ""},
		{"case and dot", "", "EXAMPLE.com.", "example.com/2026-11,example.com/2026-11e"},
		{"subdomain without own keys signs with parent",
			"[[signing.rule]]\nfrom = \"example.com\"\nsubdomains = true\n", "news.example.com", "example.com/2026-11,example.com/2026-11e"},
		{"subdomain not matched without subdomains",
			"[[signing.rule]]\nfrom = \"example.com\"\n", "news.example.com", ""},
		{"customer plus provider",
			"[[signing.rule]]\nfrom = \"*\"\n[[signing.rule]]\nfrom = \"*\"\ndomain = \"fbl.esp.example\"\n", "example.com",
			"example.com/2026-11,example.com/2026-11e,fbl.esp.example/esp1"},
		{"no duplicates",
			"[[signing.rule]]\nfrom = \"example.com\"\n[[signing.rule]]\nfrom = \"*\"\n", "example.com", "example.com/2026-11,example.com/2026-11e"},
		{"provider only for unknown customer",
			"[[signing.rule]]\nfrom = \"*\"\n[[signing.rule]]\nfrom = \"*\"\ndomain = \"fbl.esp.example\"\n", "nokey.example", "fbl.esp.example/esp1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pol, _ := testPolicy(t, tt.rules)
			if got := ids(pol.SigningKeys(tt.from)); got != tt.want {
				t.Errorf("SigningKeys(%q) = %q, want %q", tt.from, got, tt.want)
			}
		})
	}
}

func TestSignedHeaderKeys(t *testing.T) {
	pol, _ := testPolicy(t, "[signing]\nheaders = [\"From\", \"To\", \"Subject\", \"X-Extra\"]\noversign = [\"From\", \"Subject\"]\n")
	hdr := []HeaderField{{"From", " a@example.com"}, {"To", " b@x"}, {"to", " c@x"}, {"Received", " x"}}
	got := strings.Join(pol.signedHeaderKeys(hdr), ":")
	if want := "From:From:To:To:Subject"; got != want {
		t.Errorf("h= %q, want %q", got, want)
	}
}

// signMessage runs raw through the policy as an outbound transaction and
// returns the signed message.
func signMessage(t testing.TB, pol *Policy, raw string) ([]byte, *Decision) {
	t.Helper()
	header, body, err := SplitMessage([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	env := &Envelope{ClientIP: netip.MustParseAddr("127.0.0.1"), QueueID: "Q1"}
	m := pol.Begin(env, header)
	// Feed the body in small chunks to cross chunk boundaries.
	for len(body) > 0 {
		n := min(7, len(body))
		m.Write(body[:n])
		body = body[n:]
	}
	d := m.Finish()
	var out bytes.Buffer
	for _, f := range d.Prepend {
		out.WriteString(f.Name + ":" + f.Value + "\r\n")
	}
	_, body, _ = SplitMessage([]byte(raw))
	for _, f := range header {
		out.WriteString(f.Name + ":" + f.Value + "\r\n")
	}
	out.WriteString("\r\n")
	out.Write(body)
	return out.Bytes(), d
}

func TestSignVerifyRoundTrip(t *testing.T) {
	msgs := map[string]string{
		"plain":       "From: Alice <alice@example.com>\r\nTo: bob@example.org\r\nSubject: hi\r\n\r\nHello.\r\n",
		"odd spacing": "From:alice@example.com\r\nSubject:\tfolded\r\n  twice\r\n\tthrice \r\nTo:  b@x\r\n\r\nbody  \r\n\r\n\r\n",
		"empty body":  "From: alice@example.com\r\nSubject: nothing\r\n\r\n",
		"lf only":     "From: alice@example.com\nSubject: unix\n\nline\n",
	}
	for _, canon := range []string{"relaxed/relaxed", "simple/simple", "relaxed/simple", "simple/relaxed"} {
		pol, dns := testPolicy(t, "[signing]\ncanonicalization = \""+canon+"\"\n")
		for name, raw := range msgs {
			t.Run(canon+"/"+name, func(t *testing.T) {
				signed, d := signMessage(t, pol, raw)
				if len(d.Prepend) != 2 {
					t.Fatalf("got %d signatures, want 2 (log %v)", len(d.Prepend), d.Log)
				}
				header, body, _ := SplitMessage(signed)
				res := VerifyDKIM(context.Background(), dns, header, bytes.NewReader(body), 5)
				if len(res) != 2 {
					t.Fatalf("verified %d signatures", len(res))
				}
				for _, r := range res {
					if r.Result != "pass" {
						t.Errorf("%s/%s: %s (%s)", r.Domain, r.Selector, r.Result, r.Reason)
					}
				}
				if !strings.Contains(d.Prepend[0].Value, "c="+canon) || strings.Contains(d.Prepend[0].Value, "l=") {
					t.Errorf("signature %q", d.Prepend[0].Value)
				}
				// Tampering with the body breaks both signatures.
				tampered := bytes.Replace(signed, []byte("\r\n\r\n"), []byte("\r\n\r\nX"), 1)
				header, body, _ = SplitMessage(tampered)
				for _, r := range VerifyDKIM(context.Background(), dns, header, bytes.NewReader(body), 5) {
					if r.Result != "fail" {
						t.Errorf("tampered: %s/%s: %s", r.Domain, r.Selector, r.Result)
					}
				}
			})
		}
	}
}

func TestNotSigned(t *testing.T) {
	pol, _ := testPolicy(t, "")
	tests := []struct{ name, raw, reason string }{
		{"no from", "Subject: x\r\n\r\nbody\r\n", "no From"},
		{"two from fields", "From: a@example.com\r\nFrom: b@example.com\r\n\r\nbody\r\n", "2 From fields"},
		{"two addresses", "From: a@example.com, b@example.com\r\n\r\nbody\r\n", "2 mailboxes"},
		{"unbalanced", "From: <a@example.com\r\n\r\nbody\r\n", "malformed"},
		{"no key", "From: a@other.example\r\n\r\nbody\r\n", "no active key for other.example"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, d := signMessage(t, pol, tt.raw)
			if len(d.Prepend) != 0 || d.Action != Accept {
				t.Fatalf("signed or not accepted: %+v", d)
			}
			var why string
			for _, a := range d.Log {
				if a.Key == "not_signed" {
					why = a.Value.String()
				}
			}
			if !strings.Contains(strings.ToLower(why), strings.ToLower(tt.reason)) {
				t.Errorf("not_signed = %q, want %q", why, tt.reason)
			}
		})
	}
}

func TestInboundNeverSigned(t *testing.T) {
	pol, _ := testPolicy(t, "")
	header, body, _ := SplitMessage([]byte("From: alice@example.com\r\n\r\nbody\r\n"))
	m := pol.Begin(&Envelope{ClientIP: netip.MustParseAddr("198.51.100.1")}, header)
	m.Write(body)
	d := m.Finish()
	for _, f := range d.Prepend {
		if strings.EqualFold(f.Name, "DKIM-Signature") {
			t.Fatal("inbound message signed")
		}
	}
}

func TestRequirePublished(t *testing.T) {
	dir := t.TempDir()
	copyKey(t, dir, "example.com", "2026-10", "rsa2048-pkcs1.pem")
	copyKey(t, dir, "example.com", "2026-11", "rsa2048-pkcs8.pem")
	cfg, err := ParseConfig("t.toml", []byte("[keys]\ndir = \""+dir+"\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	dns := &fakeDNS{}
	pol, err := Compile(context.Background(), cfg, dns)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(pol.ActiveKeys("example.com")); n != 0 {
		t.Fatalf("%d keys active with nothing published", n)
	}
	old := pol.Table().Keys("example.com")[0]
	dns.publish(old)
	pol2, _ := Compile(context.Background(), cfg, dns)
	if a := pol2.ActiveKeys("example.com"); len(a) != 1 || a[0].Selector != "2026-10" {
		t.Fatalf("active = %v, want the published 2026-10", a)
	}
	dns.publish(pol2.Table().Keys("example.com")[1])
	pol3, _ := Compile(context.Background(), cfg, dns)
	if a := pol3.ActiveKeys("example.com"); len(a) != 1 || a[0].Selector != "2026-11" {
		t.Fatalf("active = %v, want 2026-11 once published", a)
	}
	changes := KeyChanges(pol2, pol3)
	if len(changes) != 1 || changes[0] != "key activated d=example.com s=2026-11 a=rsa-sha256 (replaces 2026-10)" {
		t.Errorf("changes = %q", changes)
	}
}

// A provider signs each customer's mail with its own d= and a selector per
// customer, plus a feedback-loop signature with its ordinary key.
func TestPerRuleSelector(t *testing.T) {
	dir := t.TempDir()
	copyKey(t, dir, "bigcommunications.com", "s1024_acme", "rsa1024-pkcs1.pem")
	copyKey(t, dir, "bigcommunications.com", "s1024_oceanicairlines", "rsa2048-pkcs1.pem")
	copyKey(t, dir, "bigcommunications.com", "fbl", "rsa2048-pkcs8.pem")
	// The customer keys are the newest: they must still not become the
	// domain's active key for the feedback-loop rule.
	st := &keys.DomainState{Keys: map[string]*keys.KeyState{
		"fbl":                   {Created: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)},
		"s1024_acme":            {Created: time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)},
		"s1024_oceanicairlines": {Created: time.Date(2026, 7, 1, 0, 0, 0, 0, time.UTC)},
	}}
	if err := st.Save(filepath.Join(dir, "bigcommunications.com")); err != nil {
		t.Fatal(err)
	}
	rules := `
[[signing.rule]]
from = "acme.com"
subdomains = true
domain = "bigcommunications.com"
selector = "s1024_acme"
[[signing.rule]]
from = "oceanicairlines.com"
subdomains = true
domain = "bigcommunications.com"
selector = "s1024_oceanicairlines"
[[signing.rule]]
from = "*"
domain = "bigcommunications.com"
`
	cfg, err := ParseConfig("test.toml", []byte("keys.dir = \""+dir+"\"\nkeys.require_published = false\n"+rules))
	if err != nil {
		t.Fatal(err)
	}
	pol, err := Compile(context.Background(), cfg, &fakeDNS{})
	if err != nil {
		t.Fatal(err)
	}
	ids := func(ks []*keys.Key) string {
		var s []string
		for _, k := range ks {
			s = append(s, k.Selector)
		}
		return strings.Join(s, ",")
	}
	for _, c := range []struct{ from, want string }{
		{"news.acme.com", "s1024_acme,fbl"},
		{"oceanicairlines.com", "s1024_oceanicairlines,fbl"},
		{"other.example", "fbl"},
	} {
		if got := ids(pol.SigningKeys(c.from)); got != c.want {
			t.Errorf("SigningKeys(%q) = %q, want %q", c.from, got, c.want)
		}
	}
	for _, k := range pol.Table().Keys("bigcommunications.com") {
		rules := strings.Join(pol.RulesUsing(k), "; ")
		switch k.Selector {
		case "s1024_acme":
			if !strings.Contains(rules, "signing.rule[0]") || strings.Contains(rules, "rule[2]") {
				t.Errorf("RulesUsing(%s) = %q", k.Selector, rules)
			}
		case "fbl":
			if rules != "signing.rule[2] from=* domain=bigcommunications.com" {
				t.Errorf("RulesUsing(fbl) = %q", rules)
			}
		}
	}
	// Unpublished, the rule's key signs nothing (and no other key stands in).
	cfg.Keys.RequirePublished = true
	dns := &fakeDNS{}
	for _, k := range pol.Table().All() {
		if k.Selector != "s1024_acme" {
			dns.publish(k)
		}
	}
	cfg.Keys.Check = "resolver"
	pol, err = Compile(context.Background(), cfg, dns)
	if err != nil {
		t.Fatal(err)
	}
	if got := ids(pol.SigningKeys("acme.com")); got != "fbl" {
		t.Errorf("unpublished rule key: SigningKeys = %q, want fbl only", got)
	}
}

func TestRuleSelectorNeedsDomain(t *testing.T) {
	_, err := ParseConfig("t.toml", []byte("[[signing.rule]]\nfrom = \"*\"\nselector = \"s1\"\n"))
	if err == nil || !strings.Contains(err.Error(), "signing.rule[0].selector") {
		t.Fatalf("err = %v, want a signing.rule[0].selector error", err)
	}
}
