package esp_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/authmilter/authmilter/internal/dnstopo"
	"github.com/miekg/dns"
)

// TestDelegatedSelectorZone: customer.example delegates
// myesp._domainkey.customer.example to the provider's nameservers; keygen
// publishes <%b%Y>.myesp._domainkey.customer.example on the primary, the
// secondary follows, keys says published and active, and a signature
// d=customer.example verifies at both receivers through the resolver.
func TestDelegatedSelectorZone(t *testing.T) {
	w := world(t, dnstopo.Options{
		ProviderZones: []string{"myesp._domainkey.customer.example"},
		CustomerZones: []string{"customer.example"},
		Delegated:     []string{"myesp._domainkey.customer.example"},
	})
	p := newProvider(t, w, cfgOpts{})
	before := monthSelector(time.Now())
	p.keygen(t, "-d", "customer.example")
	sel := before
	if rows, _ := p.keys(t); len(rows) == 1 && rows[0].Selector != before && rows[0].Selector == monthSelector(time.Now()) {
		sel = rows[0].Selector // the month changed during keygen
	}
	name := sel + "._domainkey.customer.example."
	w.WaitSynced(t)
	for _, s := range []*dnstopo.Server{w.Primary, w.Secondary} {
		txt, err := s.TXT(context.Background(), name)
		if err != nil || len(txt) != 1 || !strings.Contains(txt[0], "p=") {
			t.Fatalf("%s: TXT %s = %q, %v (keygen must publish the key in the delegated selector zone)", s.Name, name, txt, err)
		}
	}
	p.waitActive(t, "customer.example", sel)
	p.signsWith(t, "customer.example", signature{"customer.example", sel}, "delegated customer")
}

// TestCNAMECustomerAlternating: a CNAME'd customer with alternating
// selectors s1/s2. keygen publishes s1 at s1.cnamecust.example.<cname_zone>
// and prints the CNAMEs the customer must add; until the customer adds
// them the key is delegation-missing, naming the CNAME. Once added (both,
// once), s1 signs; rotate makes s2 at the other CNAME target, and both
// signatures verify.
func TestCNAMECustomerAlternating(t *testing.T) {
	w := world(t, dnstopo.Options{CustomerZones: []string{"cnamecust.example"}})
	p := newProvider(t, w, cfgOpts{alternate: []string{"s1", "s2"}, cnameDomains: []string{"cnamecust.example"}})
	r := p.keygen(t, "-d", "cnamecust.example")
	out := r.stdout + r.stderr
	for _, want := range []string{"s1._domainkey.cnamecust.example", "s1.cnamecust.example.dkim.myesp.example"} {
		if !strings.Contains(out, want) {
			t.Errorf("keygen does not print the CNAME the customer must add (want %q):\n%s", want, r)
		}
	}
	w.WaitSynced(t)
	if txt, err := w.Secondary.TXT(context.Background(), "s1.cnamecust.example.dkim.myesp.example"); err != nil || len(txt) != 1 {
		t.Fatalf("secondary: TXT at the CNAME target = %q, %v", txt, err)
	}
	k := p.waitKey(t, "cnamecust.example", "s1", "delegation-missing", func(k keyRow) bool { return k.DNS == "delegation-missing" })
	if !strings.Contains(k.Detail, "s1._domainkey.cnamecust.example") || !strings.Contains(k.Detail, "s1.cnamecust.example.dkim.myesp.example") ||
		!strings.Contains(strings.ToUpper(k.Detail), "CNAME") {
		t.Errorf("delegation-missing must name the CNAME to add: %v", k)
	}
	if k.Active {
		t.Errorf("a key the public path cannot see is active: %v", k)
	}
	// The customer adds both CNAMEs once.
	w.Add(t, "s1._domainkey.cnamecust.example. CNAME s1.cnamecust.example.dkim.myesp.example.",
		"s2._domainkey.cnamecust.example. CNAME s2.cnamecust.example.dkim.myesp.example.")
	p.waitActive(t, "cnamecust.example", "s1")
	m1 := p.signsWith(t, "cnamecust.example", signature{"cnamecust.example", "s1"}, "s1 through the CNAME")

	at := monthly(1)[0]
	r = p.rotate(t, at)
	if r.code != 0 {
		t.Fatalf("rotate:\n%s", r)
	}
	w.WaitSynced(t)
	if txt, err := w.Primary.TXT(context.Background(), "s2.cnamecust.example.dkim.myesp.example"); err != nil || len(txt) != 1 {
		t.Fatalf("rotate did not publish s2 at its CNAME target: %q, %v\n%s", txt, err, r)
	}
	p.waitActive(t, "cnamecust.example", "s2")
	p.signsWith(t, "cnamecust.example", signature{"cnamecust.example", "s2"}, "s2 through the CNAME")
	p.verify(t, m1, "s1 after rotation (not retired yet)")
}

// TestPerCustomerSelector: the provider signs with its own d= and a
// selector per customer, chosen by [[signing.rule]]; keys -json names the
// rules that use each key.
func TestPerCustomerSelector(t *testing.T) {
	w := world(t, dnstopo.Options{})
	p := newProvider(t, w, cfgOpts{zones: []string{"myesp.example"}, extra: `
[[signing.rule]]
from = "acme.example"
domain = "myesp.example"
selector = "s1024_acme"

[[signing.rule]]
from = "oceanic.example"
domain = "myesp.example"
selector = "s1024_oceanic"
`})
	for _, sel := range []string{"s1024_acme", "s1024_oceanic"} {
		r := p.keygen(t, "-d", "myesp.example", "-s", sel, "-a", "rsa-1024")
		if !strings.Contains(r.stderr, "1024") {
			t.Errorf("keygen -a rsa-1024 gives no warning:\n%s", r)
		}
	}
	w.WaitSynced(t)
	for _, c := range []struct{ from, sel, other string }{{"acme.example", "s1024_acme", "oceanic"}, {"oceanic.example", "s1024_oceanic", "acme"}} {
		k := p.waitActive(t, "myesp.example", c.sel)
		if rules := string(k.Rules); !strings.Contains(rules, c.from) || strings.Contains(rules, c.other) {
			t.Errorf("keys -json: %s rules = %s, want the rule from = %q only", c.sel, rules, c.from)
		}
		p.signsWith(t, c.from, signature{"myesp.example", c.sel}, "From "+c.from)
	}
}

// TestLaggingSecondary: while the secondary does not transfer, a new key
// published on the primary is "partial" (naming ns2) and not active: sign
// keeps the old key. Once the secondary catches up, the new key is
// published and signs.
func TestLaggingSecondary(t *testing.T) {
	w := world(t, dnstopo.Options{
		ProviderZones: []string{"myesp._domainkey.customer.example"},
		CustomerZones: []string{"customer.example"},
		Delegated:     []string{"myesp._domainkey.customer.example"},
	})
	p := newProvider(t, w, cfgOpts{})
	old := p.firstKey(t, "customer.example")

	w.HoldTransfers(t)
	at := monthly(1)[0]
	sel := monthSelector(at)
	r := p.rotate(t, at)
	t.Logf("rotate with the secondary held:\n%s", r)
	if strings.Contains(r.stdout+r.stderr, "NS ns1.myesp.example") {
		t.Errorf("rotate tells the customer to add the NS records of a delegation that exists (the secondary only lags):\n%s", r)
	}
	if txt, err := w.Primary.TXT(context.Background(), sel+"._domainkey.customer.example"); err != nil || len(txt) != 1 {
		t.Fatalf("rotate did not publish %s on the primary: %q, %v\n%s", sel, txt, err, r)
	}
	k := p.waitKey(t, "customer.example", sel, "partial", func(k keyRow) bool { return k.DNS == "partial" })
	if !strings.Contains(k.Detail, "ns2.myesp.example") && !strings.Contains(k.Detail, dnstopo.SecondaryIP) {
		t.Errorf("partial must name the lagging nameserver (ns2.myesp.example): %v", k)
	}
	if k.Active {
		t.Errorf("a partially published key is active: %v", k)
	}
	// The old key signs, every time: a resolver may ask either nameserver
	// (each sign starts from a cold cache, as a new receiver does), and a
	// receiver asking the lagging one would fail.
	for i := range 10 {
		if err := w.Resolver.FlushName(sel + "._domainkey.customer.example"); err != nil {
			t.Fatal(err)
		}
		msg, sigs := p.sign(t, "customer.example")
		if sigs[0] != (signature{"customer.example", old}) {
			t.Fatalf("sign #%d with the new key partial: signatures %v, want the old key s=%s", i+1, sigs, old)
		}
		if i == 0 {
			p.verify(t, msg, "old key while the secondary lags")
		}
	}
	if rows, _ := p.keys(t); !slices.ContainsFunc(rows, func(k keyRow) bool { return k.Selector == sel && k.DNS == "partial" && !k.Active }) {
		t.Fatalf("new key no longer partial while the secondary is still held: %v", rows)
	}

	w.ReleaseTransfers(t)
	p.waitActive(t, "customer.example", sel)
	p.signsWith(t, "customer.example", signature{"customer.example", sel}, "new key after the secondary caught up")
}

// TestMissingDelegation: the customer has not delegated the selector zone:
// the key is "delegation-missing" with the NS records to add, and does not
// sign; once the customer adds them, it is published and signs.
func TestMissingDelegation(t *testing.T) {
	w := world(t, dnstopo.Options{
		ProviderZones: []string{"myesp._domainkey.customer.example"},
		CustomerZones: []string{"customer.example"},
	})
	p := newProvider(t, w, cfgOpts{})
	r := p.keygen(t, "-d", "customer.example")
	rows, _ := p.keys(t)
	if len(rows) != 1 {
		t.Fatalf("keys after keygen: %v\n%s", rows, r)
	}
	sel := rows[0].Selector
	k := p.waitKey(t, "customer.example", sel, "delegation-missing", func(k keyRow) bool { return k.DNS == "delegation-missing" })
	for _, want := range []string{"myesp._domainkey.customer.example", "ns1.myesp.example", "ns2.myesp.example"} {
		if !strings.Contains(k.Detail, want) {
			t.Errorf("delegation-missing must give the NS records to add (want %q): %v", want, k)
		}
	}
	if !strings.Contains(strings.ToUpper(k.Detail), "NS") {
		t.Errorf("delegation-missing does not say NS: %v", k)
	}
	if k.Active {
		t.Errorf("undelegated key is active: %v", k)
	}
	if _, sigs, _ := p.trySign(t, "customer.example"); len(sigs) != 0 {
		t.Fatalf("signed with a key receivers cannot find: %v", sigs)
	}
	w.Delegate(t, "myesp._domainkey.customer.example")
	p.waitActive(t, "customer.example", sel)
	p.signsWith(t, "customer.example", signature{"customer.example", sel}, "after the customer delegated")
}

// foreignRecord makes another provider's DKIM key record.
func foreignRecord(t *testing.T) string {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(der)
}

// quoteTXT renders a TXT value as zone file strings of at most 255 bytes.
func quoteTXT(s string) string {
	var parts []string
	for len(s) > 255 {
		parts = append(parts, `"`+s[:255]+`"`)
		s = s[255:]
	}
	return strings.Join(append(parts, `"`+s+`"`), " ")
}

// hostedTarget is a [[keys.publish.target]] for the customers' server:
// the provider also hosts hosted.example's DNS there.
func hostedTarget(w *dnstopo.World, zone string) string {
	return `
[[keys.publish.target]]
server = "` + w.Customers.Addr() + `"
zones = ["` + zone + `"]
tsig_name = "` + w.CustomersTSIG.Name + `"
tsig_secret_file = "` + w.CustomersTSIG.SecretFile + `"
ttl = 2
`
}

// TestForeignRecord: `keygen -s default` where default._domainkey holds
// another provider's key is refused and the record stays; with -force the
// record is replaced by ours and signs.
func TestForeignRecord(t *testing.T) {
	theirs := foreignRecord(t)
	name := "default._domainkey.hosted.example."
	w := world(t, dnstopo.Options{
		CustomerZones: []string{"hosted.example"},
		Records:       []string{name + " TXT " + quoteTXT(theirs)},
	})
	p := newProvider(t, w, cfgOpts{extra: hostedTarget(w, "hosted.example")})
	r := p.run(t, nil, "keygen", "-d", "hosted.example", "-s", "default")
	if r.code == 0 {
		t.Errorf("keygen over another provider's record succeeded:\n%s", r)
	}
	if !strings.Contains(r.stderr, "default._domainkey.hosted.example") || !strings.Contains(r.stderr, "-force") {
		t.Errorf("the refusal must name the record and the -force override:\n%s", r)
	}
	txt, err := w.Customers.TXT(context.Background(), name)
	if err != nil || len(txt) != 1 || txt[0] != theirs {
		t.Fatalf("the other provider's record was changed: %q, %v", txt, err)
	}
	if rows, _ := p.keys(t); len(rows) > 0 {
		k, ok := row(rows, "hosted.example", "default")
		if ok && (k.Active || k.DNS != "foreign") {
			t.Errorf("after the refusal: %v, want state foreign, not active", k)
		}
	}

	r = p.run(t, nil, "keygen", "-d", "hosted.example", "-s", "default", "-force")
	if r.code != 0 {
		t.Fatalf("keygen -force:\n%s", r)
	}
	txt, err = w.Customers.TXT(context.Background(), name)
	if err != nil || len(txt) != 1 || txt[0] == theirs {
		t.Fatalf("keygen -force did not replace the record: %q, %v\n%s", txt, err, r)
	}
	p.waitActive(t, "hosted.example", "default")
	p.signsWith(t, "hosted.example", signature{"hosted.example", "default"}, "after -force")
}

// TestWildcardKeepsRetiredKey: a wildcard *._domainkey record holding a
// retired key's record keeps that key usable after rotate removed its own
// record: keys warns and exits non-zero, and stops once the wildcard is
// gone.
func TestWildcardKeepsRetiredKey(t *testing.T) {
	w := world(t, dnstopo.Options{CustomerZones: []string{"wild.example"}})
	// One-label selectors: a wildcard *._domainkey covers "dec2026", but
	// not "dec2026.myesp" once any "<x>.myesp" exists (the empty
	// non-terminal myesp._domainkey stops it, RFC 4592).
	p := newProvider(t, w, cfgOpts{selectorFormat: "%b%Y", extra: hostedTarget(w, "wild.example")})
	old := p.firstKey(t, "wild.example")
	oldTXT, err := w.Customers.TXT(context.Background(), old+"._domainkey.wild.example")
	if err != nil || len(oldTXT) != 1 {
		t.Fatalf("keygen did not publish on the customers' server: %q, %v", oldTXT, err)
	}
	times := monthly(1)
	r := p.rotate(t, times[0])
	if r.code != 0 {
		t.Fatalf("rotate:\n%s", r)
	}
	sel := strings.TrimSuffix(monthSelector(times[0]), ".myesp")
	p.waitActive(t, "wild.example", sel)
	// The customer's admin copies the old record to a wildcard.
	wildcard := "*._domainkey.wild.example. TXT " + quoteTXT(oldTXT[0])
	w.Add(t, wildcard)
	// Superseded on the next run, retired after grace.
	if r := p.rotate(t, times[0].Add(24*time.Hour)); r.code != 0 {
		t.Fatalf("rotate (superseding):\n%s", r)
	}
	r = p.rotate(t, times[0].Add(9*24*time.Hour))
	t.Logf("rotate (retiring) with the wildcard in place:\n%s", r)
	if _, err := os.Stat(filepath.Join(p.dir, "keys", "wild.example", "retired", old+".pem")); err != nil {
		t.Fatalf("rotate did not retire %s: %v\n%s", old, err, r)
	}
	ctx := context.Background()
	own, err := w.Customers.ZoneData(ctx, "wild.example", old+"._domainkey.wild.example", "TXT")
	if err != nil {
		t.Fatal(err)
	}
	if len(own) != 0 {
		t.Errorf("rotate did not withdraw the retired key's own record (the zone still holds %q):\n%s", own, r)
	}
	if txt, _ := w.Customers.TXT(ctx, old+"._domainkey.wild.example"); len(txt) != 1 || txt[0] != oldTXT[0] {
		t.Fatalf("test setup: the wildcard does not answer for %s: %q", old, txt)
	}
	if !strings.Contains(r.stdout+r.stderr, old) || r.code == 0 {
		t.Errorf("rotate exits 0 while the retired key %s still validates through the wildcard:\n%s", old, r)
	} else if !strings.Contains(r.stdout+r.stderr, "*._domainkey.wild.example") {
		t.Errorf("rotate does not name the wildcard that keeps %s usable:\n%s", old, r)
	}
	k := p.run(t, nil, "keys")
	if k.code == 0 || !strings.Contains(k.stderr, old) {
		t.Errorf("keys must warn about %s (still usable through the wildcard) and exit non-zero:\n%s", old, k)
	}
	if len(own) != 0 {
		return // the warning is about our own record, reported above
	}
	w.Remove(t, "*._domainkey.wild.example. TXT")
	deadline := time.Now().Add(waitDNS)
	for {
		k = p.run(t, nil, "keys")
		if k.code == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("keys still fails after the wildcard was removed:\n%s", k)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// TestRetirement: after grace, rotate retires the superseded key: its file
// moves to retired/, its record leaves both nameservers and the public
// path, keys no longer lists it, and its old signatures stop verifying.
func TestRetirement(t *testing.T) {
	w := world(t, dnstopo.Options{
		ProviderZones: []string{"myesp._domainkey.customer.example"},
		CustomerZones: []string{"customer.example"},
		Delegated:     []string{"myesp._domainkey.customer.example"},
	})
	p := newProvider(t, w, cfgOpts{})
	old := p.firstKey(t, "customer.example")
	m0, _ := p.sign(t, "customer.example")
	p.verify(t, m0, "first key")

	at := monthly(1)[0]
	if r := p.rotate(t, at); r.code != 0 {
		t.Fatalf("rotate:\n%s", r)
	}
	sel := monthSelector(at)
	p.waitActive(t, "customer.example", sel)
	if r := p.rotate(t, at.Add(24*time.Hour)); r.code != 0 {
		t.Fatalf("rotate (superseding):\n%s", r)
	}
	p.verify(t, m0, "superseded key in its grace period")
	r := p.rotate(t, at.Add(9*24*time.Hour))
	if r.code != 0 {
		t.Fatalf("rotate (retiring):\n%s", r)
	}
	if _, err := os.Stat(filepath.Join(p.dir, "keys", "customer.example", "retired", old+".pem")); err != nil {
		t.Fatalf("%s not retired: %v\n%s", old, err, r)
	}
	name := old + "._domainkey.customer.example."
	w.WaitSynced(t)
	for _, s := range []*dnstopo.Server{w.Primary, w.Secondary} {
		if txt, err := s.TXT(context.Background(), name); err != nil || len(txt) != 0 {
			t.Fatalf("%s still serves the retired record: %q, %v", s.Name, txt, err)
		}
	}
	// Until the resolver's cached copy expires (the record's TTL) receivers
	// could still verify with the retired key, and keys rightly says so:
	// wait for the public path to drop it first.
	w.WaitTXT(t, name, waitDNS, "retired key off the public path", func(txt []string, rcode int) bool {
		return len(txt) == 0 && rcode == dns.RcodeNameError
	})
	rows, kr := p.keys(t)
	if _, ok := row(rows, "customer.example", old); ok {
		t.Errorf("keys still lists the retired key as a key of the table:\n%s", kr)
	}
	// keys may show the retired key while it checks that its record is
	// gone, marked retired and inactive.
	for _, k := range rows {
		if strings.EqualFold(k.Selector, old) && (!k.Retired || k.Active || k.DNS == "published") {
			t.Errorf("retired key listed as usable: %v", k)
		}
	}
	if kr.code != 0 {
		t.Errorf("keys fails after a clean retirement:\n%s", kr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, v := range []dnstopo.Verdict{w.VerifyDkimpy(ctx, m0), w.VerifyOpenDKIM(ctx, m0)} {
		if v.Err != nil || v.Pass {
			t.Errorf("a signature of the retired key still verifies (or the receiver failed): %v", v)
		}
	}
	p.signsWith(t, "customer.example", signature{"customer.example", sel}, "current key after the retirement")
}
