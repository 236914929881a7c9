package dnscheck

import (
	"crypto/ed25519"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/authmilter/authmilter/keys"
)

// FuzzClassify: whatever TXT records a (hostile) name holds, the verdict is
// one of the publication states, never Published unless one record holds
// exactly the wanted key, and nothing panics.
func FuzzClassify(f *testing.F) {
	pub := ed25519.NewKeyFromSeed(make([]byte, 32)).Public().(ed25519.PublicKey)
	own := "v=DKIM1; k=ed25519; p=" + keys.PublicKeyData(pub)
	f.Add(own, "", "")
	f.Add("v=DKIM1; k=rsa; p=", own, "v=spf1 -all")
	f.Add("v=DKIM1; p=AAAA; p=BBBB", "k=ed25519;p="+keys.PublicKeyData(pub)+";t=y", "x")
	f.Fuzz(func(t *testing.T, a, b, known string) {
		var txts []string
		for _, s := range []string{a, b} {
			if s != "" {
				txts = append(txts, s)
			}
		}
		st, detail := Classify(txts, "sel._domainkey.example.com", pub, []string{known})
		switch st {
		case keys.Published, keys.Missing, keys.Mismatch, keys.Revoked, keys.Foreign:
		default:
			t.Fatalf("Classify(%q) = %s (%s): not a state a record can have", txts, st, detail)
		}
		if st == keys.Published {
			found := false
			for _, s := range txts {
				found = found || strings.Contains(strings.ReplaceAll(s, " ", ""), keys.PublicKeyData(pub))
			}
			if !found {
				t.Fatalf("Classify(%q) = published without the key's p=", txts)
			}
		}
	})
}

// FuzzAnswer: whatever message a (hostile) server sends, reading it never
// panics, a referral names at most MaxServers nameservers of a zone that
// encloses the name, and the TTLs the activation waits for come from the
// answer's own records.
func FuzzAnswer(f *testing.F) {
	seed := func(build func(m *dns.Msg)) {
		m := new(dns.Msg)
		m.SetQuestion("s1._domainkey.example.com.", dns.TypeTXT)
		build(m)
		if b, err := m.Pack(); err == nil {
			f.Add(b)
		}
	}
	seed(func(m *dns.Msg) {
		m.Answer = append(m.Answer, &dns.TXT{Hdr: dns.RR_Header{Name: "s1._domainkey.example.com.", Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60},
			Txt: []string{"v=DKIM1; p=", `a\"b\059`}})
	})
	seed(func(m *dns.Msg) {
		for _, n := range []string{"ns1.esp.example.", "ns2.esp.example."} {
			m.Ns = append(m.Ns, &dns.NS{Hdr: dns.RR_Header{Name: "_domainkey.example.com.", Rrtype: dns.TypeNS, Class: dns.ClassINET, Ttl: 60}, Ns: n})
		}
	})
	seed(func(m *dns.Msg) {
		m.Rcode = dns.RcodeNameError
		m.Ns = append(m.Ns, &dns.SOA{Hdr: dns.RR_Header{Name: "example.com.", Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: 300},
			Ns: "ns.example.com.", Mbox: "h.example.com.", Minttl: 2})
		m.Answer = append(m.Answer, &dns.CNAME{Hdr: dns.RR_Header{Name: "s1._domainkey.example.com.", Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: 5},
			Target: "s1.example.com.dkim.esp.example."})
	})
	f.Fuzz(func(t *testing.T, wire []byte) {
		m := new(dns.Msg)
		if m.Unpack(wire) != nil {
			return
		}
		const name = "s1._domainkey.example.com."
		zone, nss := referral(m, name)
		if len(nss) > MaxServers {
			t.Fatalf("referral names %d nameservers, more than %d", len(nss), MaxServers)
		}
		if zone != "" && !dns.IsSubDomain(zone, name) {
			t.Fatalf("referral to %q, which does not enclose %s", zone, name)
		}
		vals, ttl := txtValues(m.Answer, name)
		if len(vals) == 0 && ttl != 0 {
			t.Fatalf("TTL %d without a TXT record", ttl)
		}
		cnameTarget(m.Answer, name)
		if soa := authoritySOA(m, name); soa != nil {
			if d := negativeTTL(soa); d < 0 || d > time.Duration(soa.Hdr.Ttl)*time.Second && d > time.Duration(soa.Minttl)*time.Second {
				t.Fatalf("negative TTL %s from SOA TTL %d, MINIMUM %d", d, soa.Hdr.Ttl, soa.Minttl)
			}
		}
	})
}
