package testdns

import (
	"errors"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

const exampleZone = "../../testdata/dns/example.zone"

// exchange sends one query with a plain miekg/dns client. bufsize 0 means no
// EDNS0.
func exchange(t *testing.T, s *Server, network, name string, qtype uint16, bufsize uint16) (*dns.Msg, error) {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	if bufsize > 0 {
		m.SetEdns0(bufsize, false)
	}
	c := &dns.Client{Net: network, Timeout: 300 * time.Millisecond}
	r, _, err := c.Exchange(m, s.Addr())
	return r, err
}

func mustExchange(t *testing.T, s *Server, network, name string, qtype uint16, bufsize uint16) *dns.Msg {
	t.Helper()
	r, err := exchange(t, s, network, name, qtype, bufsize)
	if err != nil {
		t.Fatalf("query %s/%s over %s: %v", name, dns.TypeToString[qtype], network, err)
	}
	return r
}

// txtOf returns the TXT strings of the answer's TXT records, one joined
// string per record.
func txtOf(m *dns.Msg) []string {
	var out []string
	for _, rr := range m.Answer {
		if txt, ok := rr.(*dns.TXT); ok {
			out = append(out, strings.Join(txt.Txt, ""))
		}
	}
	return out
}

func TestAnswers(t *testing.T) {
	s := Start(t)
	s.AddZoneFile(t, exampleZone)
	s.AddZoneText(t, "other.test.", `
$TTL 60
@        IN TXT "v=spf1 -all"
a.b.c    IN A   192.0.2.9
alias    IN CNAME a.b.c
loop1    IN CNAME loop2
loop2    IN CNAME loop1
dangling IN CNAME nowhere
`)

	tests := []struct {
		name      string
		qname     string
		qtype     uint16
		rcode     int
		answers   int    // number of answer RRs
		soa       string // owner of the SOA expected in the authority section, "" for none
		firstType uint16 // type of the first answer RR, when answers > 0
	}{
		{"TXT", "example.com", dns.TypeTXT, dns.RcodeSuccess, 1, "", dns.TypeTXT},
		{"case-insensitive", "EXAMPLE.Com.", dns.TypeTXT, dns.RcodeSuccess, 1, "", dns.TypeTXT},
		{"MX", "example.com", dns.TypeMX, dns.RcodeSuccess, 2, "", dns.TypeMX},
		{"NXDOMAIN", "nope.example.com", dns.TypeTXT, dns.RcodeNameError, 0, "example.com.", 0},
		{"NODATA", "mx2.example.com", dns.TypeTXT, dns.RcodeSuccess, 0, "example.com.", 0},
		{"NODATA at empty non-terminal", "_domainkey.example.com", dns.TypeTXT, dns.RcodeSuccess, 0, "example.com.", 0},
		{"empty non-terminal deeper", "b.c.other.test", dns.TypeA, dns.RcodeSuccess, 0, "other.test.", 0},
		{"synthesized SOA", "zzz.other.test", dns.TypeA, dns.RcodeNameError, 0, "other.test.", 0},
		{"CNAME chased", "alias.other.test", dns.TypeA, dns.RcodeSuccess, 2, "", dns.TypeCNAME},
		{"CNAME for another type", "alias.other.test", dns.TypeTXT, dns.RcodeSuccess, 1, "other.test.", dns.TypeCNAME},
		{"CNAME itself", "alias.other.test", dns.TypeCNAME, dns.RcodeSuccess, 1, "", dns.TypeCNAME},
		{"CNAME to the apex", "www.example.com", dns.TypeA, dns.RcodeSuccess, 2, "", dns.TypeCNAME},
		{"CNAME to nowhere", "dangling.other.test", dns.TypeA, dns.RcodeNameError, 1, "other.test.", dns.TypeCNAME},
		{"CNAME loop bounded", "loop1.other.test", dns.TypeA, dns.RcodeSuccess, maxCNAMEHops, "", dns.TypeCNAME},
		{"unknown name without zone", "x.y.unknown.test", dns.TypeTXT, dns.RcodeNameError, 0, "unknown.test.", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := mustExchange(t, s, "udp", tt.qname, tt.qtype, 1232)
			if r.Rcode != tt.rcode {
				t.Errorf("rcode = %s, want %s", dns.RcodeToString[r.Rcode], dns.RcodeToString[tt.rcode])
			}
			if !r.Authoritative {
				t.Error("AA bit not set")
			}
			if len(r.Answer) != tt.answers {
				t.Fatalf("answers = %d, want %d: %v", len(r.Answer), tt.answers, r.Answer)
			}
			if tt.answers > 0 && r.Answer[0].Header().Rrtype != tt.firstType {
				t.Errorf("first answer %v, want type %s", r.Answer[0], dns.TypeToString[tt.firstType])
			}
			var soa string
			for _, rr := range r.Ns {
				if rr.Header().Rrtype == dns.TypeSOA {
					soa = rr.Header().Name
				}
			}
			if soa != tt.soa {
				t.Errorf("authority SOA owner = %q, want %q (authority %v)", soa, tt.soa, r.Ns)
			}
		})
	}
}

func TestSpecialCharacterNames(t *testing.T) {
	s := Start(t)
	s.AddRR(t, "o'brien.example.net. 300 IN A 192.0.2.1") // as written in a zone file
	s.AddRR(t, `a\@b.example.net. 300 IN A 192.0.2.2`)    // escaped
	s.SetTXT(`x"y.example.net`, "quoted")
	tests := []struct {
		qname string
		qtype uint16
	}{
		{"o'brien.example.net", dns.TypeA},
		{`O\'Brien.example.net`, dns.TypeA},
		{"a@b.example.net", dns.TypeA},
		{`x"y.example.net`, dns.TypeTXT},
	}
	for _, tt := range tests {
		t.Run(tt.qname, func(t *testing.T) {
			r := mustExchange(t, s, "udp", tt.qname, tt.qtype, 0)
			if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
				t.Fatalf("got %v", r)
			}
		})
	}
	if n := s.QueryCount("o'brien.example.net", dns.TypeA); n != 2 {
		t.Errorf("QueryCount = %d, want 2", n)
	}
}

func TestChaseCNAMEOff(t *testing.T) {
	s := Start(t)
	s.AddRR(t, "sel._domainkey.customer.test. 300 IN CNAME sel.esp.test.")
	s.AddRR(t, `sel.esp.test. 300 IN TXT "v=DKIM1; p="`)
	s.SetChaseCNAME(false)
	r := mustExchange(t, s, "udp", "sel._domainkey.customer.test", dns.TypeTXT, 1232)
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 || r.Answer[0].Header().Rrtype != dns.TypeCNAME {
		t.Fatalf("want only the CNAME, got %v", r)
	}
}

func TestTruncationAndTCP(t *testing.T) {
	s := Start(t)
	// A 4096-bit RSA key record is about 740 bytes.
	big := "v=DKIM1; k=rsa; p=" + strings.Repeat("MIIC", 180)
	s.SetTXT("big._domainkey.example.com", big)

	tests := []struct {
		name      string
		network   string
		bufsize   uint16
		truncated bool
	}{
		{"UDP without EDNS0", "udp", 0, true},
		{"UDP with small EDNS0", "udp", 600, true},
		{"UDP with EDNS0 1232", "udp", 1232, false},
		{"TCP", "tcp", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := mustExchange(t, s, tt.network, "big._domainkey.example.com", dns.TypeTXT, tt.bufsize)
			if r.Truncated != tt.truncated {
				t.Fatalf("TC = %v, want %v", r.Truncated, tt.truncated)
			}
			if tt.truncated {
				return
			}
			if got := txtOf(r); len(got) != 1 || got[0] != big {
				t.Fatalf("TXT = %q, want the %d-byte value", got, len(big))
			}
		})
	}
}

func TestSetTXT(t *testing.T) {
	s := Start(t)
	tests := []struct {
		name    string
		values  []string
		strings [][]int // lengths of the character-strings of each record
	}{
		{"short", []string{"v=spf1 -all"}, [][]int{{11}}},
		{"exactly 255", []string{strings.Repeat("a", 255)}, [][]int{{255}}},
		{"256 splits", []string{strings.Repeat("a", 256)}, [][]int{{255, 1}}},
		{"long key", []string{strings.Repeat("k", 700)}, [][]int{{255, 255, 190}}},
		{"two records", []string{"one", "two"}, [][]int{{3}, {3}}},
		{"empty value", []string{""}, [][]int{{0}}},
		{"raw bytes", []string{"a\"b\\c\x00\xff;"}, [][]int{{8}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s.SetTXT("set.example.com", tt.values...)
			r := mustExchange(t, s, "tcp", "set.example.com", dns.TypeTXT, 0)
			if len(r.Answer) != len(tt.values) {
				t.Fatalf("answers = %d, want %d", len(r.Answer), len(tt.values))
			}
			// Check the raw wire form: pack each record's strings.
			for i, rr := range r.Answer {
				txt := rr.(*dns.TXT)
				buf := make([]byte, 2048)
				off, err := dns.PackRR(txt, buf, 0, nil, false)
				if err != nil {
					t.Fatal(err)
				}
				rdata := buf[off-int(txt.Hdr.Rdlength) : off]
				var lens []int
				var raw []byte
				for len(rdata) > 0 {
					n := int(rdata[0])
					lens = append(lens, n)
					raw = append(raw, rdata[1:1+n]...)
					rdata = rdata[1+n:]
				}
				if !equalInts(lens, tt.strings[i]) {
					t.Errorf("record %d string lengths = %v, want %v", i, lens, tt.strings[i])
				}
				if string(raw) != tt.values[i] {
					t.Errorf("record %d raw value = %q, want %q", i, raw, tt.values[i])
				}
			}
		})
	}
	s.SetTXT("set.example.com")
	if r := mustExchange(t, s, "udp", "set.example.com", dns.TypeTXT, 0); r.Rcode != dns.RcodeNameError {
		t.Errorf("after SetTXT with no values: rcode %s, want NXDOMAIN", dns.RcodeToString[r.Rcode])
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestFailureInjection(t *testing.T) {
	s := Start(t)
	s.AddZoneFile(t, exampleZone)

	tests := []struct {
		name    string
		inject  func()
		rcode   int
		timeout bool
	}{
		{"SERVFAIL", func() { s.Fail("_dmarc.example.com", dns.RcodeServerFailure) }, dns.RcodeServerFailure, false},
		{"REFUSED", func() { s.Fail("_dmarc.example.com.", dns.RcodeRefused) }, dns.RcodeRefused, false},
		{"drop", func() { s.Drop("_DMARC.example.com") }, 0, true},
		{"cleared", func() {}, dns.RcodeSuccess, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.inject()
			defer s.Clear("_dmarc.example.com")
			for _, network := range []string{"udp", "tcp"} {
				r, err := exchange(t, s, network, "_dmarc.example.com", dns.TypeTXT, 1232)
				if tt.timeout {
					var nerr net.Error
					if err == nil || !errors.As(err, &nerr) || !nerr.Timeout() {
						t.Errorf("%s: want a timeout, got %v, %v", network, r, err)
					}
					continue
				}
				if err != nil {
					t.Fatalf("%s: %v", network, err)
				}
				if r.Rcode != tt.rcode {
					t.Errorf("%s: rcode = %s, want %s", network, dns.RcodeToString[r.Rcode], dns.RcodeToString[tt.rcode])
				}
			}
		})
	}
}

func TestMutationsAndCounters(t *testing.T) {
	s := Start(t)
	s.AddRR(t, `k1._domainkey.example.org. 300 IN TXT "v=DKIM1; p=AAAA"`)
	s.AddRR(t, `k1._domainkey.example.org. 300 IN TXT "v=DKIM1; p=AAAA"`) // duplicate, ignored
	s.AddRR(t, "example.org. 300 IN A 192.0.2.7")

	if got := txtOf(mustExchange(t, s, "udp", "k1._domainkey.example.org", dns.TypeTXT, 0)); len(got) != 1 {
		t.Fatalf("TXT = %q, want one record", got)
	}
	s.Remove("K1._domainkey.example.org", dns.TypeTXT)
	if r := mustExchange(t, s, "udp", "k1._domainkey.example.org", dns.TypeTXT, 0); r.Rcode != dns.RcodeNameError {
		t.Errorf("after Remove: rcode %s, want NXDOMAIN", dns.RcodeToString[r.Rcode])
	}
	s.Remove("example.org", dns.TypeANY)
	if r := mustExchange(t, s, "udp", "example.org", dns.TypeA, 0); r.Rcode != dns.RcodeNameError {
		t.Errorf("after Remove ANY: rcode %s, want NXDOMAIN", dns.RcodeToString[r.Rcode])
	}
	if got := s.QueryCount("K1._DOMAINKEY.example.org.", dns.TypeTXT); got != 2 {
		t.Errorf("QueryCount = %d, want 2", got)
	}
	if got := s.Queries(); got != 3 {
		t.Errorf("Queries = %d, want 3", got)
	}

	// Replace swaps everything at once.
	s.Replace(&dns.A{Hdr: dns.RR_Header{Name: "new.example.org.", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 1}, A: net.IPv4(192, 0, 2, 8)})
	if r := mustExchange(t, s, "udp", "new.example.org", dns.TypeA, 0); len(r.Answer) != 1 {
		t.Errorf("after Replace: %v", r)
	}
}

func TestDefaultTTL(t *testing.T) {
	s := Start(t)
	s.SetTXT("a.example.net", "x")
	if r := mustExchange(t, s, "udp", "a.example.net", dns.TypeTXT, 0); r.Answer[0].Header().Ttl != 0 {
		t.Errorf("default TTL = %d, want 0", r.Answer[0].Header().Ttl)
	}
	s.SetDefaultTTL(120)
	s.SetTXT("a.example.net", "x")
	if r := mustExchange(t, s, "udp", "a.example.net", dns.TypeTXT, 0); r.Answer[0].Header().Ttl != 120 {
		t.Errorf("TTL = %d, want 120", r.Answer[0].Header().Ttl)
	}
	r := mustExchange(t, s, "udp", "b.example.net", dns.TypeTXT, 0)
	if soa, ok := r.Ns[0].(*dns.SOA); !ok || soa.Minttl != 120 || soa.Hdr.Ttl != 120 {
		t.Errorf("synthesized SOA = %v, want TTL and minimum 120", r.Ns)
	}
}

func TestZoneErrors(t *testing.T) {
	s, err := New("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.LoadZone(strings.NewReader("@ IN TXT \"unterminated\n"), "example.com.", "bad.zone"); err == nil {
		t.Error("LoadZone accepted a bad zone")
	}
	if err := s.LoadZoneFile("testdata/does-not-exist.zone"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("LoadZoneFile(missing) = %v, want ErrNotExist", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestAddrAccessors(t *testing.T) {
	s := Start(t)
	if s.IP() != "127.0.0.1" || s.Port() == 0 || s.Addr() != net.JoinHostPort(s.IP(), strconv.Itoa(s.Port())) {
		t.Errorf("Addr %q, IP %q, Port %d", s.Addr(), s.IP(), s.Port())
	}
	// Both protocols listen on the same port.
	for _, network := range []string{"udp", "tcp"} {
		if _, err := exchange(t, s, network, "x.test", dns.TypeA, 0); err != nil {
			t.Errorf("%s: %v", network, err)
		}
	}
}

func TestFreeLoopback53(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root to bind port 53: run the tests as root")
	}
	addr := FreeLoopback53(t)
	host, port, err := net.SplitHostPort(addr)
	if err != nil || port != "53" || !strings.HasPrefix(host, "127.") || host == "127.0.0.1" || host == "127.0.0.53" {
		t.Fatalf("FreeLoopback53 = %q", addr)
	}
	s := Start(t, WithAddr(addr))
	s.SetTXT("p53.example.com", "ok")
	if got := txtOf(mustExchange(t, s, "udp", "p53.example.com", dns.TypeTXT, 0)); len(got) != 1 || got[0] != "ok" {
		t.Errorf("TXT = %q", got)
	}
	if s.Addr() != addr || s.Port() != 53 {
		t.Errorf("Addr = %q, want %q", s.Addr(), addr)
	}
}
