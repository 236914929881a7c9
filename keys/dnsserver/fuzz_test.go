package dnsserver

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// FuzzServe feeds packets through the request handler the UDP and TCP
// loops use. It must never panic, and every answer must be a DNS message
// answering the request (same ID, QR set) that fits the transport.
func FuzzServe(f *testing.F) {
	seeds := []*dns.Msg{
		question("2026-11.myesp._domainkey.customer.example.", dns.TypeTXT),
		question("myesp._domainkey.customer.example.", dns.TypeSOA),
		question("myesp._domainkey.customer.example.", dns.TypeAXFR),
		question("myesp._domainkey.customer.example.", dns.TypeIXFR),
		question("nope.dkim.myesp.example.", dns.TypeANY),
		question("big.myesp._domainkey."+longDomain+".", dns.TypeTXT),
	}
	edns := question("s1.cname.example.dkim.myesp.example.", dns.TypeTXT)
	edns.SetEdns0(4096, true)
	seeds = append(seeds, edns)
	signed := question("myesp._domainkey.customer.example.", dns.TypeAXFR)
	signed.SetTsig("transfer.", dns.HmacSHA256, 300, time.Now().Unix())
	for _, m := range seeds {
		raw, err := m.Pack()
		if m.IsTsig() != nil {
			raw, _, err = dns.TsigGenerate(m, testSecret, "", false)
		}
		if err != nil {
			f.Fatal(err)
		}
		f.Add(raw, false)
		f.Add(raw, true)
	}
	raw, _, err := dns.TsigGenerate(signed, testSecret, "", false)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(raw, true)
	f.Add([]byte("\x00\x01\x00\x00\x00\x01\x00\x00\x00\x00\x00\x01\x00\x00\x10\x00\x01\x00\x00\x29\x10\x00\x00\x01\x00\x00\x00"), false)

	cfg := fixtureConfig()
	cfg.AllowTransfer = []string{"127.0.0.0/8"}
	cfg.TSIG = &TSIGKey{Name: "transfer.", Secret: testSecret}
	s := testServer(f, cfg)
	src := netip.MustParseAddr("127.0.0.1")
	f.Fuzz(func(t *testing.T, raw []byte, tcp bool) {
		s.serve(raw, src, tcp, func(b []byte) error {
			m := new(dns.Msg)
			if err := m.Unpack(b); err != nil {
				t.Fatalf("answer does not parse: %v\n%x", err, b)
			}
			if !m.Response || len(raw) < 2 || m.Id != binary.BigEndian.Uint16(raw) {
				t.Fatalf("answer %v to request %x", m, raw)
			}
			if !tcp && len(b) > maxUDPSize {
				t.Fatalf("UDP answer of %d bytes", len(b))
			}
			if tcp && len(b) > dns.MaxMsgSize {
				t.Fatalf("TCP answer of %d bytes", len(b))
			}
			return nil
		})
	})
}
