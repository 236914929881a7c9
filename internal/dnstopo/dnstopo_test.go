package dnstopo

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"
	"github.com/miekg/dns"
)

// waitLong bounds the polls of these tests: generous for a busy 2-core
// machine; no test asserts how long anything took.
const waitLong = 60 * time.Second

// esp is the world most tests use: a provider with a CNAME target zone
// and a selector zone for customer.example, which the customer has not
// delegated yet.
func esp(t *testing.T, mod func(*Options)) *World {
	t.Helper()
	o := Options{
		ProviderZones: []string{"dkim.myesp.example", "myesp._domainkey.customer.example"},
		CustomerZones: []string{"customer.example", "cnamecust.example"},
	}
	if mod != nil {
		mod(&o)
	}
	return Start(t, o)
}

// TestDelegatedSelectorZone: a TXT record published by RFC 2136 on the
// primary is seen through the resolver once the customer delegates the
// selector zone, and not before (the customer's own server answers
// NXDOMAIN).
func TestDelegatedSelectorZone(t *testing.T) {
	w := esp(t, nil)
	name := "sel1.myesp._domainkey.customer.example."
	w.Add(t, name+` TXT "v=DKIM1; p=before"`)
	w.WaitSynced(t)
	// Not delegated: the public path ends at the customer's server.
	w.WaitTXT(t, name, waitLong, "undelegated", func(txt []string, rcode int) bool {
		return rcode == dns.RcodeNameError && len(txt) == 0
	})
	w.Delegate(t, "myesp._domainkey.customer.example")
	got := w.WaitTXT(t, name, waitLong, "after delegation", func(txt []string, rcode int) bool {
		return rcode == dns.RcodeSuccess && len(txt) == 1
	})
	if got[0] != "v=DKIM1; p=before" {
		t.Fatalf("TXT through the delegation = %q", got)
	}
	// Both authoritative servers of the selector zone serve it.
	for _, s := range []*Server{w.Primary, w.Secondary} {
		txt, err := s.TXT(context.Background(), name)
		if err != nil || len(txt) != 1 {
			t.Fatalf("%s: TXT %s = %q, %v", s.Name, name, txt, err)
		}
	}
	// The customer's server refers to the provider's nameservers.
	m, err := w.Customers.Query(context.Background(), name, dns.TypeTXT)
	if err != nil {
		t.Fatal(err)
	}
	var ns []string
	for _, rr := range m.Ns {
		if n, ok := rr.(*dns.NS); ok {
			ns = append(ns, n.Ns)
		}
	}
	slices.Sort(ns)
	if want := []string{"ns1.myesp.example.", "ns2.myesp.example."}; !slices.Equal(ns, want) || m.Authoritative {
		t.Fatalf("customers' server: referral NS %q (aa=%v), want %q", ns, m.Authoritative, want)
	}
	// Undelegating takes the record off the public path again.
	w.Undelegate(t, "myesp._domainkey.customer.example")
	w.WaitTXT(t, name, waitLong, "after undelegation", func(txt []string, rcode int) bool {
		return rcode == dns.RcodeNameError
	})
}

// TestHeldSecondary: while transfers are held the secondary serves the old
// serial and not the new record; releasing syncs it.
func TestHeldSecondary(t *testing.T) {
	w := esp(t, func(o *Options) { o.Delegated = []string{"myesp._domainkey.customer.example"} })
	zone := "myesp._domainkey.customer.example"
	name := "held." + zone + "."
	before, err := w.Secondary.Serial(zone)
	if err != nil {
		t.Fatal(err)
	}
	w.HoldTransfers(t)
	w.Add(t, name+` TXT "v=DKIM1; p=held"`)
	primary, err := w.Primary.Serial(zone)
	if err != nil {
		t.Fatal(err)
	}
	if primary == before {
		t.Fatalf("primary serial %d did not change with the update", primary)
	}
	if txt, err := w.Primary.TXT(context.Background(), name); err != nil || len(txt) != 1 {
		t.Fatalf("primary: TXT %s = %q, %v", name, txt, err)
	}
	// The primary NOTIFYs at once; a held secondary must still lag a while
	// later. Poll for a few seconds that it keeps the old serial.
	for range 20 {
		s, err := w.Secondary.Serial(zone)
		if err != nil {
			t.Fatal(err)
		}
		if s != before {
			t.Fatalf("held secondary moved from serial %d to %d", before, s)
		}
		if txt, err := w.Secondary.TXT(context.Background(), name); err != nil || len(txt) != 0 {
			t.Fatalf("held secondary: TXT %s = %q, %v", name, txt, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	w.ReleaseTransfers(t)
	if s, err := w.Secondary.Serial(zone); err != nil || s != primary {
		t.Fatalf("released secondary: serial %d, %v; want %d", s, err, primary)
	}
	if txt, err := w.Secondary.TXT(context.Background(), name); err != nil || len(txt) != 1 {
		t.Fatalf("released secondary: TXT %s = %q, %v", name, txt, err)
	}
	// Not held any more: the next update reaches the secondary by NOTIFY.
	w.Add(t, "next."+zone+`. TXT "x"`)
	w.WaitSynced(t)
	// Holding again works too.
	w.HoldTransfers(t)
	held, _ := w.Secondary.Serial(zone)
	w.Add(t, "again."+zone+`. TXT "x"`)
	time.Sleep(500 * time.Millisecond)
	if s, _ := w.Secondary.Serial(zone); s != held {
		t.Fatalf("held again: secondary moved from %d to %d", held, s)
	}
	w.ReleaseTransfers(t)
}

// TestCNAMEIntoProviderZone: a selector CNAME'd from the customer's zone
// into the provider's CNAME target zone resolves to the provider's TXT.
func TestCNAMEIntoProviderZone(t *testing.T) {
	w := esp(t, nil)
	target := "s1.cnamecust.example.dkim.myesp.example."
	w.Add(t, target+` TXT "v=DKIM1; p=cname"`)
	w.Add(t, "s1._domainkey.cnamecust.example. CNAME "+target)
	w.WaitSynced(t)
	got := w.WaitTXT(t, "s1._domainkey.cnamecust.example", waitLong, "through the CNAME", func(txt []string, rcode int) bool {
		return rcode == dns.RcodeSuccess && len(txt) == 1
	})
	if got[0] != "v=DKIM1; p=cname" {
		t.Fatalf("TXT = %q", got)
	}
	m, err := w.Resolver.Query(context.Background(), "s1._domainkey.cnamecust.example", dns.TypeTXT)
	if err != nil {
		t.Fatal(err)
	}
	if c, ok := m.Answer[0].(*dns.CNAME); !ok || c.Target != target {
		t.Fatalf("answer does not start with the CNAME: %v", m.Answer)
	}
}

// TestNegativeCaching: a name asked for before it is published stays
// NXDOMAIN through the resolver (served from its cache) after the primary
// has it, until the zone's negative TTL passes; flushing the cache shows
// it at once.
func TestNegativeCaching(t *testing.T) {
	const zone = "myesp._domainkey.customer.example"
	w := esp(t, func(o *Options) {
		o.Delegated = []string{zone}
		o.NegativeTTLs = map[string]uint32{zone: 8}
	})
	for i, flush := range []bool{false, true} {
		name := fmt.Sprintf("neg%d.%s.", i, zone)
		ctx := context.Background()
		m, err := w.Resolver.Query(ctx, name, dns.TypeTXT)
		if err != nil || m.Rcode != dns.RcodeNameError {
			t.Fatalf("before publication: %v, %v", m, err)
		}
		if soa := negSOA(m); soa == nil || soa.Minttl != 8 || soa.Hdr.Name != zone+"." {
			t.Fatalf("before publication: NXDOMAIN without the zone's SOA (minimum 8): %v", m.Ns)
		}
		w.Add(t, name+` TXT "v=DKIM1; p=late"`)
		w.WaitSynced(t)
		// Both servers have it now; the resolver still answers from the
		// negative cache, with a TTL counting down from 8.
		m, err = w.Resolver.Query(ctx, name, dns.TypeTXT)
		if err != nil {
			t.Fatal(err)
		}
		if flush {
			if err := w.Resolver.FlushName(name); err != nil {
				t.Fatal(err)
			}
		} else {
			soa := negSOA(m)
			if m.Rcode != dns.RcodeNameError || soa == nil || soa.Hdr.Ttl > 8 {
				t.Fatalf("right after publication: want the cached NXDOMAIN, got %v", m)
			}
		}
		w.WaitTXT(t, name, waitLong, "after the negative TTL", func(txt []string, rcode int) bool {
			return rcode == dns.RcodeSuccess && len(txt) == 1
		})
	}
}

// negSOA returns the SOA of a negative answer.
func negSOA(m *dns.Msg) *dns.SOA {
	for _, rr := range m.Ns {
		if s, ok := rr.(*dns.SOA); ok {
			return s
		}
	}
	return nil
}

// TestReceiversVerifyThroughResolver: a message signed with a key whose
// record was published on the primary (delegated selector) and one whose
// record sits behind a customer CNAME both verify with dkimpy and OpenDKIM
// through the resolver; a record that is gone makes both fail.
func TestReceiversVerifyThroughResolver(t *testing.T) {
	w := esp(t, func(o *Options) { o.Delegated = []string{"myesp._domainkey.customer.example"} })
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	record := "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(der)
	w.Add(t, "dec2026.myesp._domainkey.customer.example. TXT "+txtData(record))
	w.Add(t, "s1.cnamecust.example.dkim.myesp.example. TXT "+txtData(record))
	w.Add(t, "s1._domainkey.cnamecust.example. CNAME s1.cnamecust.example.dkim.myesp.example.")
	w.WaitSynced(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, c := range []struct{ domain, selector string }{
		{"customer.example", "dec2026.myesp"},
		{"cnamecust.example", "s1"},
	} {
		msg := sign(t, key, c.domain, c.selector)
		if err := w.Verify(ctx, msg); err != nil {
			t.Fatalf("d=%s s=%s: %v", c.domain, c.selector, err)
		}
	}
	// Remove the CNAME'd record: both receivers must now fail, which shows
	// they really looked it up through the resolver.
	w.Remove(t, "s1.cnamecust.example.dkim.myesp.example. TXT")
	w.WaitSynced(t)
	w.WaitTXT(t, "s1._domainkey.cnamecust.example", waitLong, "after removal", func(txt []string, rcode int) bool {
		return len(txt) == 0
	})
	msg := sign(t, key, "cnamecust.example", "s1")
	for _, v := range []Verdict{w.VerifyDkimpy(ctx, msg), w.VerifyOpenDKIM(ctx, msg)} {
		if v.Err != nil || v.Pass || len(v.Results) != 1 {
			t.Fatalf("after the record was removed: %v", v)
		}
	}
}

// txtData quotes a TXT value in 255-byte strings.
func txtData(s string) string {
	var parts []string
	for len(s) > 255 {
		parts = append(parts, `"`+s[:255]+`"`)
		s = s[255:]
	}
	return strings.Join(append(parts, `"`+s+`"`), " ")
}

// sign signs a small message with go-msgauth (the library authmilter signs
// with) as d=domain s=selector.
func sign(t *testing.T, key crypto.Signer, domain, selector string) []byte {
	t.Helper()
	msg := "From: a@" + domain + "\r\nTo: b@example.org\r\nSubject: dnstopo\r\nDate: Mon, 07 Dec 2026 10:00:00 +0000\r\nMessage-ID: <1@" + domain + ">\r\n\r\nHello.\r\n"
	var out bytes.Buffer
	err := dkim.Sign(&out, strings.NewReader(msg), &dkim.SignOptions{
		Domain: domain, Selector: selector, Signer: key,
		HeaderCanonicalization: dkim.CanonicalizationRelaxed, BodyCanonicalization: dkim.CanonicalizationRelaxed,
	})
	if err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// TestZoneData: ZoneData reads a server's own records, which a query
// cannot tell from wildcard answers.
func TestZoneData(t *testing.T) {
	w := Start(t, Options{CustomerZones: []string{"wild.example"},
		Records: []string{`*._domainkey.wild.example. TXT "w"`, `a._domainkey.wild.example. TXT "a"`}})
	ctx := context.Background()
	tests := []struct {
		owner     string
		own, resp []string
	}{
		{"a._domainkey.wild.example", []string{`a._domainkey.wild.example. 2 TXT "a"`}, []string{"a"}},
		{"b._domainkey.wild.example", nil, []string{"w"}},
		{"*._domainkey.wild.example", []string{`*._domainkey.wild.example. 2 TXT "w"`}, []string{"w"}},
	}
	for _, tt := range tests {
		own, err := w.Customers.ZoneData(ctx, "wild.example", tt.owner, "TXT")
		if err != nil {
			t.Fatal(err)
		}
		if len(own) != len(tt.own) || (len(own) == 1 && !strings.HasSuffix(own[0], tt.own[0])) {
			t.Errorf("ZoneData %s = %q, want %q", tt.owner, own, tt.own)
		}
		txt, err := w.Customers.TXT(ctx, tt.owner)
		if err != nil || !slices.Equal(txt, tt.resp) {
			t.Errorf("TXT %s = %q, %v; want %q", tt.owner, txt, err, tt.resp)
		}
	}
}
