package publishtest

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/authmilter/authmilter/internal/dnsproc"
)

// AddRR adds records, in zone file syntax with fully qualified names (e.g.
// "default._domainkey.example.com. 300 IN TXT \"v=DKIM1; p=...\""), to
// zone by a TSIG-signed dynamic update: how a test puts someone else's
// records into the server. It fails the test if the server refuses.
func (k *Knot) AddRR(t testing.TB, zone string, rrs ...string) {
	t.Helper()
	k.Update(t, zone, nil, rrs)
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

// KnotcBinary is Knot's control tool, which reads a zone's own contents.
const KnotcBinary = dnsproc.KnotcBinary

// ZoneTXT returns the TXT records that zone itself holds at name, each
// record's strings joined, from the server's zone contents (knotc
// zone-read): unlike a query it never answers from a wildcard, so a test
// can tell a name's own record from a synthesized one. nil if none.
func (k *Knot) ZoneTXT(t testing.TB, zone, name string) []string {
	t.Helper()
	dnsproc.Require(t, "publishtest", InstallHint, KnotcBinary)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	lines, err := dnsproc.ZoneRead(ctx, dnsproc.KnotControlSocket(k.Dir), zone, name, "TXT")
	if err != nil {
		t.Fatalf("publishtest: %v", err)
	}
	var recs []string
	for _, l := range lines {
		// "[zone.] name TTL TXT "..." ..."
		if _, rest, ok := strings.Cut(l, "] "); ok {
			rr, err := dns.NewRR(rest)
			if err != nil {
				t.Fatalf("publishtest: knotc zone-read line %q: %v", l, err)
			}
			if txt, ok := rr.(*dns.TXT); ok {
				recs = append(recs, strings.Join(txt.Txt, ""))
			}
		}
	}
	return recs
}
