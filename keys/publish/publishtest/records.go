package publishtest

import (
	"testing"
	"time"

	"github.com/miekg/dns"
)

// AddRR adds records, in zone file syntax with fully qualified names (e.g.
// "default._domainkey.example.com. 300 IN TXT \"v=DKIM1; p=...\""), to
// zone by a TSIG-signed dynamic update: how a test puts someone else's
// records into the server. It fails the test if the server refuses.
func (k *Knot) AddRR(t testing.TB, zone string, rrs ...string) {
	t.Helper()
	m := new(dns.Msg)
	m.SetUpdate(dns.Fqdn(zone))
	var add []dns.RR
	for _, s := range rrs {
		rr, err := dns.NewRR(s)
		if err != nil {
			t.Fatalf("publishtest: record %q: %v", s, err)
		}
		add = append(add, rr)
	}
	m.Insert(add)
	k.update(t, m)
}

// RemoveRRset deletes the records of qtype at name from zone by a
// TSIG-signed dynamic update.
func (k *Knot) RemoveRRset(t testing.TB, zone, name string, qtype uint16) {
	t.Helper()
	m := new(dns.Msg)
	m.SetUpdate(dns.Fqdn(zone))
	m.RemoveRRset([]dns.RR{&dns.ANY{Hdr: dns.RR_Header{Name: dns.Fqdn(name), Rrtype: qtype, Class: dns.ClassINET}}})
	k.update(t, m)
}

func (k *Knot) update(t testing.TB, m *dns.Msg) {
	t.Helper()
	c := &dns.Client{Net: "tcp", Timeout: 5 * time.Second, TsigSecret: map[string]string{TSIGName: k.TSIGSecret}}
	m.SetTsig(TSIGName, dns.HmacSHA256, 300, time.Now().Unix())
	r, _, err := c.Exchange(m, k.Addr)
	if err != nil {
		t.Fatalf("publishtest: update of %s: %v", m.Question[0].Name, err)
	}
	if r.Rcode != dns.RcodeSuccess {
		t.Fatalf("publishtest: update of %s: %s\n%s", m.Question[0].Name, dns.RcodeToString[r.Rcode], k.Logs())
	}
}
