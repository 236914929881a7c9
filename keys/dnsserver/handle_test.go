package dnsserver

import (
	"encoding/binary"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// testServer returns a server (not listening) serving the fixture.
func testServer(t testing.TB, cfg Config) *Server {
	t.Helper()
	s, err := New(cfg, nil)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	s.Swap(fixtureZones(t))
	return s
}

var localhost = netip.MustParseAddr("127.0.0.1")

// exchangeRaw runs raw through the server's request handler and returns
// the answers, each checked to be a valid DNS message.
func exchangeRaw(t testing.TB, s *Server, raw []byte, src netip.Addr, tcp bool) []*dns.Msg {
	t.Helper()
	var out []*dns.Msg
	s.serve(raw, src, tcp, func(b []byte) error {
		if !tcp && len(b) > maxUDPSize {
			t.Errorf("UDP answer of %d bytes", len(b))
		}
		m := new(dns.Msg)
		if err := m.Unpack(b); err != nil {
			t.Fatalf("answer does not parse: %v", err)
		}
		out = append(out, m)
		return nil
	})
	return out
}

// ask sends q and returns the single answer.
func ask(t testing.TB, s *Server, q *dns.Msg, tcp bool) *dns.Msg {
	t.Helper()
	raw, err := q.Pack()
	if err != nil {
		t.Fatal(err)
	}
	out := exchangeRaw(t, s, raw, localhost, tcp)
	if len(out) != 1 {
		t.Fatalf("%d answers, want 1", len(out))
	}
	if out[0].Id != q.Id || !out[0].Response {
		t.Fatalf("answer id %d response %v", out[0].Id, out[0].Response)
	}
	return out[0]
}

func question(name string, qtype uint16) *dns.Msg {
	q := new(dns.Msg)
	q.SetQuestion(name, qtype)
	q.RecursionDesired = false
	return q
}

func TestAnswers(t *testing.T) {
	s := testServer(t, fixtureConfig())
	z := s.Zones()
	custSerial, _ := z.Serial("myesp._domainkey.customer.example")
	longName := "big.myesp._domainkey." + longDomain + "."
	type want struct {
		rcode   int
		aa      bool
		answer  []uint16 // types in the answer section
		soaAuth bool     // SOA in authority, negative TTL
		txt     string   // prefix of the TXT value
		tc      bool
	}
	cases := []struct {
		name  string
		q     *dns.Msg
		tcp   bool
		edns  uint16 // 0: no OPT
		check func(t *testing.T, r *dns.Msg)
		want  want
	}{
		{name: "key record", q: question("2026-11.myesp._domainkey.customer.example.", dns.TypeTXT),
			want: want{rcode: dns.RcodeSuccess, aa: true, answer: []uint16{dns.TypeTXT}, txt: "v=DKIM1; k=ed25519; p="}},
		{name: "case is ignored and echoed", q: question("2026-11.MyEsp._DomainKey.CUSTOMER.example.", dns.TypeTXT),
			want: want{rcode: dns.RcodeSuccess, aa: true, answer: []uint16{dns.TypeTXT}, txt: "v=DKIM1; k=ed25519; p="},
			check: func(t *testing.T, r *dns.Msg) {
				if r.Question[0].Name != "2026-11.MyEsp._DomainKey.CUSTOMER.example." || r.Answer[0].Header().Name != r.Question[0].Name {
					t.Errorf("question %q owner %q", r.Question[0].Name, r.Answer[0].Header().Name)
				}
			}},
		{name: "revoked record", q: question("2026-10.myesp._domainkey.customer.example.", dns.TypeTXT),
			want: want{rcode: dns.RcodeSuccess, aa: true, answer: []uint16{dns.TypeTXT}, txt: "v=DKIM1; k=ed25519; p="},
			check: func(t *testing.T, r *dns.Msg) {
				if got := strings.Join(r.Answer[0].(*dns.TXT).Txt, ""); got != "v=DKIM1; k=ed25519; p=" {
					t.Errorf("revoked record %q", got)
				}
			}},
		{name: "revocation over", q: question("2026-09.myesp._domainkey.customer.example.", dns.TypeTXT),
			want: want{rcode: dns.RcodeNameError, aa: true, soaAuth: true}},
		{name: "SOA at the apex", q: question("myesp._domainkey.customer.example.", dns.TypeSOA),
			want: want{rcode: dns.RcodeSuccess, aa: true, answer: []uint16{dns.TypeSOA}},
			check: func(t *testing.T, r *dns.Msg) {
				soa := r.Answer[0].(*dns.SOA)
				if soa.Serial != custSerial || soa.Ns != "ns1.myesp.example." || soa.Mbox != "hostmaster.myesp._domainkey.customer.example." ||
					soa.Minttl != 300 || soa.Hdr.Ttl != 3600 {
					t.Errorf("SOA %v", soa)
				}
			}},
		{name: "NS at the apex", q: question("myesp._domainkey.customer.example.", dns.TypeNS),
			want: want{rcode: dns.RcodeSuccess, aa: true, answer: []uint16{dns.TypeNS, dns.TypeNS}}},
		{name: "TXT at the apex: no data", q: question("myesp._domainkey.customer.example.", dns.TypeTXT),
			want: want{rcode: dns.RcodeSuccess, aa: true, soaAuth: true}},
		{name: "ANY at the apex: one RRset", q: question("myesp._domainkey.customer.example.", dns.TypeANY),
			want: want{rcode: dns.RcodeSuccess, aa: true, answer: []uint16{dns.TypeSOA}}},
		{name: "ANY at a key", q: question("2026-12.myesp._domainkey.customer.example.", dns.TypeANY),
			want: want{rcode: dns.RcodeSuccess, aa: true, answer: []uint16{dns.TypeTXT}}},
		{name: "A at a key: no data", q: question("2026-12.myesp._domainkey.customer.example.", dns.TypeA),
			want: want{rcode: dns.RcodeSuccess, aa: true, soaAuth: true}},
		{name: "no such name", q: question("nope.myesp._domainkey.customer.example.", dns.TypeTXT),
			want: want{rcode: dns.RcodeNameError, aa: true, soaAuth: true}},
		{name: "below a key", q: question("x.2026-12.myesp._domainkey.customer.example.", dns.TypeTXT),
			want: want{rcode: dns.RcodeNameError, aa: true, soaAuth: true}},
		{name: "CNAME target", q: question("s1.cname.example.dkim.myesp.example.", dns.TypeTXT),
			want: want{rcode: dns.RcodeSuccess, aa: true, answer: []uint16{dns.TypeTXT}, txt: "v=DKIM1; k=ed25519; p="}},
		{name: "empty non-terminal", q: question("cname.example.dkim.myesp.example.", dns.TypeTXT),
			want: want{rcode: dns.RcodeSuccess, aa: true, soaAuth: true}},
		{name: "empty non-terminal higher up", q: question("example.dkim.myesp.example.", dns.TypeTXT),
			want: want{rcode: dns.RcodeSuccess, aa: true, soaAuth: true}},
		{name: "beside an empty non-terminal", q: question("x.example.dkim.myesp.example.", dns.TypeTXT),
			want: want{rcode: dns.RcodeNameError, aa: true, soaAuth: true}},
		{name: "key outside the zones", q: question("s1._domainkey.other.example.", dns.TypeTXT),
			want: want{rcode: dns.RcodeRefused}},
		{name: "parent of a zone", q: question("_domainkey.customer.example.", dns.TypeTXT),
			want: want{rcode: dns.RcodeRefused}},
		{name: "escaped dot is not a label boundary", q: question(`a\.myesp._domainkey.customer.example.`, dns.TypeTXT),
			want: want{rcode: dns.RcodeRefused}},
		{name: "root", q: question(".", dns.TypeNS), want: want{rcode: dns.RcodeRefused}},
		{name: "CHAOS class", q: func() *dns.Msg {
			q := question("version.bind.", dns.TypeTXT)
			q.Question[0].Qclass = dns.ClassCHAOS
			return q
		}(), want: want{rcode: dns.RcodeRefused}},
		{name: "large answer over UDP without EDNS: TC", q: question(longName, dns.TypeTXT),
			want: want{rcode: dns.RcodeSuccess, aa: true, tc: true}},
		{name: "large answer with EDNS", q: question(longName, dns.TypeTXT), edns: 4096,
			want: want{rcode: dns.RcodeSuccess, aa: true, answer: []uint16{dns.TypeTXT}, txt: "v=DKIM1; k=rsa; p="},
			check: func(t *testing.T, r *dns.Msg) {
				opt := r.IsEdns0()
				if opt == nil || opt.UDPSize() != maxUDPSize {
					t.Errorf("OPT %v, want UDP size %d", opt, maxUDPSize)
				}
				if parts := r.Answer[0].(*dns.TXT).Txt; len(parts) != 2 || len(parts[0]) != 255 {
					t.Errorf("TXT strings of %d parts, first %d bytes", len(parts), len(parts[0]))
				}
			}},
		{name: "large answer over TCP", q: question(longName, dns.TypeTXT), tcp: true,
			want: want{rcode: dns.RcodeSuccess, aa: true, answer: []uint16{dns.TypeTXT}, txt: "v=DKIM1; k=rsa; p="}},
		{name: "EDNS version 1", q: question("2026-11.myesp._domainkey.customer.example.", dns.TypeTXT), edns: 1232,
			check: func(t *testing.T, r *dns.Msg) {
				if r.Rcode != dns.RcodeBadVers || r.IsEdns0() == nil || len(r.Answer) != 0 {
					t.Errorf("rcode %s, OPT %v", dns.RcodeToString[r.Rcode], r.IsEdns0())
				}
			}},
		{name: "no OPT without EDNS", q: question("2026-11.myesp._domainkey.customer.example.", dns.TypeTXT),
			want: want{rcode: dns.RcodeSuccess, aa: true, answer: []uint16{dns.TypeTXT}},
			check: func(t *testing.T, r *dns.Msg) {
				if r.IsEdns0() != nil {
					t.Error("OPT in the answer to a query without one")
				}
			}},
		{name: "NOTIFY to us", q: func() *dns.Msg {
			q := new(dns.Msg)
			q.SetNotify("myesp._domainkey.customer.example.")
			return q
		}(), want: want{rcode: dns.RcodeNotImplemented}},
		{name: "UPDATE", q: func() *dns.Msg {
			q := new(dns.Msg)
			q.SetUpdate("myesp._domainkey.customer.example.")
			return q
		}(), want: want{rcode: dns.RcodeNotImplemented}},
		{name: "no question", q: &dns.Msg{MsgHdr: dns.MsgHdr{Id: 7}}, want: want{rcode: dns.RcodeFormatError}},
		{name: "two questions", q: func() *dns.Msg {
			q := question("a.example.", dns.TypeTXT)
			q.Question = append(q.Question, q.Question[0])
			return q
		}(), want: want{rcode: dns.RcodeFormatError}},
		{name: "two OPT records", q: func() *dns.Msg {
			q := question("a.example.", dns.TypeTXT)
			q.SetEdns0(1232, false)
			q.Extra = append(q.Extra, q.Extra[0])
			return q
		}(), want: want{rcode: dns.RcodeFormatError}},
		{name: "records in the answer section", q: func() *dns.Msg {
			q := question("a.example.", dns.TypeTXT)
			q.Answer = append(q.Answer, &dns.A{Hdr: dns.RR_Header{Name: "a.example.", Rrtype: dns.TypeA, Class: dns.ClassINET}})
			return q
		}(), want: want{rcode: dns.RcodeFormatError}},
		{name: "OPT as the question", q: question("a.example.", dns.TypeOPT), want: want{rcode: dns.RcodeFormatError}},
		{name: "AXFR over UDP", q: question("myesp._domainkey.customer.example.", dns.TypeAXFR), want: want{rcode: dns.RcodeFormatError}},
		{name: "AXFR from a network not allowed", q: question("myesp._domainkey.customer.example.", dns.TypeAXFR), tcp: true,
			want: want{rcode: dns.RcodeRefused}},
		{name: "TSIG of a key we do not have", q: func() *dns.Msg {
			q := question("2026-11.myesp._domainkey.customer.example.", dns.TypeTXT)
			q.SetTsig("other.", dns.HmacSHA256, 300, time.Now().Unix())
			return q
		}(), check: func(t *testing.T, r *dns.Msg) {
			ts := r.IsTsig()
			if r.Rcode != dns.RcodeNotAuth || ts == nil || ts.Error != dns.RcodeBadKey || len(r.Answer) != 0 {
				t.Errorf("rcode %s, TSIG %v", dns.RcodeToString[r.Rcode], ts)
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			q := c.q
			if c.edns != 0 {
				q.SetEdns0(c.edns, false)
				if c.name == "EDNS version 1" {
					q.IsEdns0().SetVersion(1)
				}
			}
			if ts := q.IsTsig(); ts != nil {
				raw, _, err := dns.TsigGenerate(q, "c2VjcmV0", "", false)
				if err != nil {
					t.Fatal(err)
				}
				out := exchangeRaw(t, s, raw, localhost, c.tcp)
				if len(out) != 1 {
					t.Fatalf("%d answers", len(out))
				}
				c.check(t, out[0])
				return
			}
			r := ask(t, s, q, c.tcp)
			if c.check != nil {
				c.check(t, r)
				if c.want.rcode == 0 && !c.want.aa {
					return
				}
			}
			w := c.want
			if r.Rcode != w.rcode || r.Authoritative != w.aa || r.Truncated != w.tc {
				t.Fatalf("rcode %s aa %v tc %v, want %s aa %v tc %v\n%v", dns.RcodeToString[r.Rcode], r.Authoritative, r.Truncated,
					dns.RcodeToString[w.rcode], w.aa, w.tc, r)
			}
			var types []uint16
			for _, rr := range r.Answer {
				types = append(types, rr.Header().Rrtype)
			}
			if len(types) != len(w.answer) {
				t.Fatalf("answer %v, want types %v", r.Answer, w.answer)
			}
			for i := range types {
				if types[i] != w.answer[i] {
					t.Fatalf("answer %v, want types %v", r.Answer, w.answer)
				}
			}
			if w.txt != "" {
				got := strings.Join(r.Answer[0].(*dns.TXT).Txt, "")
				if !strings.HasPrefix(got, w.txt) {
					t.Errorf("TXT %q, want prefix %q", got, w.txt)
				}
				if r.Answer[0].Header().Ttl != 3600 {
					t.Errorf("TTL %d", r.Answer[0].Header().Ttl)
				}
			}
			if w.soaAuth {
				if len(r.Ns) != 1 {
					t.Fatalf("authority %v, want the SOA", r.Ns)
				}
				soa, ok := r.Ns[0].(*dns.SOA)
				if !ok || soa.Hdr.Ttl != 300 {
					t.Fatalf("authority %v, want the SOA with TTL 300", r.Ns)
				}
			} else if len(r.Ns) != 0 {
				t.Errorf("authority %v, want none", r.Ns)
			}
		})
	}
}

func TestMalformed(t *testing.T) {
	s := testServer(t, fixtureConfig())
	good, _ := question("2026-11.myesp._domainkey.customer.example.", dns.TypeTXT).Pack()
	response := append([]byte(nil), good...)
	response[2] |= 0x80
	cases := []struct {
		name   string
		raw    []byte
		answer bool // false: dropped
		rcode  int
	}{
		{"empty", nil, false, 0},
		{"short header", good[:11], false, 0},
		{"a response", response, false, 0},
		{"header only, counts say one question", good[:12], true, dns.RcodeFormatError},
		{"cut in the question", good[:20], true, dns.RcodeFormatError},
		{"compression loop", func() []byte {
			b := append([]byte(nil), good[:12]...)
			return append(b, 0xc0, 12, 0, 16, 0, 1)
		}(), true, dns.RcodeFormatError},
		{"garbage", []byte("\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xff\xff\xff\xff"), true, dns.RcodeFormatError},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out := exchangeRaw(t, s, c.raw, localhost, false)
			if !c.answer {
				if len(out) != 0 {
					t.Fatalf("answered %v", out)
				}
				return
			}
			if len(out) != 1 || out[0].Rcode != c.rcode {
				t.Fatalf("answers %v, want rcode %s", out, dns.RcodeToString[c.rcode])
			}
			if out[0].Id != binary.BigEndian.Uint16(c.raw) {
				t.Errorf("id %d", out[0].Id)
			}
		})
	}
}

func TestNoZonesYet(t *testing.T) {
	s, err := New(fixtureConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	r := ask(t, s, question("2026-11.myesp._domainkey.customer.example.", dns.TypeTXT), false)
	if r.Rcode != dns.RcodeRefused {
		t.Fatalf("rcode %s before the first Swap", dns.RcodeToString[r.Rcode])
	}
}

func TestIXFR(t *testing.T) {
	cfg := fixtureConfig()
	cfg.AllowTransfer = []string{"127.0.0.0/8"}
	s := testServer(t, cfg)
	const zone = "myesp._domainkey.customer.example."
	serial, _ := s.Zones().Serial(zone)
	ixfr := func(have uint32) *dns.Msg {
		q := question(zone, dns.TypeIXFR)
		q.Ns = []dns.RR{&dns.SOA{Hdr: dns.RR_Header{Name: zone, Rrtype: dns.TypeSOA, Class: dns.ClassINET}, Ns: ".", Mbox: ".", Serial: have}}
		return q
	}
	cases := []struct {
		name    string
		have    uint32
		tcp     bool
		records int // in all answers
	}{
		{"over UDP: the SOA, meaning use TCP", serial - 1, false, 1},
		{"up to date: the SOA", serial, true, 1},
		{"older: the whole zone, AXFR style", serial - 1, true, 2 + 2 + 3}, // SOA, NS, NS, 3 TXT, SOA
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			raw, err := ixfr(c.have).Pack()
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for _, m := range exchangeRaw(t, s, raw, localhost, c.tcp) {
				if m.Rcode != dns.RcodeSuccess || !m.Authoritative {
					t.Fatalf("answer %v", m)
				}
				n += len(m.Answer)
			}
			if n != c.records {
				t.Fatalf("%d records, want %d", n, c.records)
			}
		})
	}
}
