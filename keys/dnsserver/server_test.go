package dnsserver

import (
	"context"
	"errors"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

const testSecret = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3I="

// startServer starts a server on 127.0.0.1 (a free port) serving the
// fixture, closed when the test ends.
func startServer(t testing.TB, cfg Config) (*Server, string) {
	t.Helper()
	cfg.Listen = []string{"127.0.0.1:0"}
	s := testServer(t, cfg)
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, s.Addrs()[0]
}

// axfr transfers zone from addr, signed with key when set, and returns
// the records or the error.
func axfr(addr, zone string, key *TSIGKey) ([]dns.RR, error) {
	q := new(dns.Msg)
	q.SetAxfr(zone)
	tr := &dns.Transfer{DialTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second}
	if key != nil {
		name := dns.Fqdn(key.Name)
		q.SetTsig(name, dns.HmacSHA256, 300, time.Now().Unix())
		tr.TsigSecret = map[string]string{name: key.Secret}
	}
	ch, err := tr.In(q, addr)
	if err != nil {
		return nil, err
	}
	var out []dns.RR
	for env := range ch {
		if env.Error != nil {
			return out, env.Error
		}
		out = append(out, env.RR...)
	}
	return out, nil
}

func TestTransfer(t *testing.T) {
	key := &TSIGKey{Name: "transfer.", Algorithm: "hmac-sha256", Secret: testSecret}
	wrong := &TSIGKey{Name: "transfer.", Secret: "b3RoZXItc2VjcmV0"}
	other := &TSIGKey{Name: "other.", Secret: testSecret}
	cases := []struct {
		name   string
		allow  []string
		server *TSIGKey
		client *TSIGKey
		zone   string
		ok     bool
	}{
		{name: "allowed, no TSIG", allow: []string{"127.0.0.0/8"}, zone: "myesp._domainkey.customer.example.", ok: true},
		{name: "not allowed", allow: []string{"10.0.0.0/8"}, zone: "myesp._domainkey.customer.example."},
		{name: "nobody allowed", zone: "myesp._domainkey.customer.example."},
		{name: "TSIG required, unsigned", allow: []string{"127.0.0.1"}, server: key, zone: "myesp._domainkey.customer.example."},
		{name: "TSIG, signed", allow: []string{"127.0.0.1"}, server: key, client: key, zone: "myesp._domainkey.customer.example.", ok: true},
		{name: "TSIG, wrong secret", allow: []string{"127.0.0.1"}, server: key, client: wrong, zone: "myesp._domainkey.customer.example."},
		{name: "TSIG, other key", allow: []string{"127.0.0.1"}, server: key, client: other, zone: "myesp._domainkey.customer.example."},
		{name: "signed, large zone", allow: []string{"127.0.0.1"}, server: key, client: key, zone: "dkim.myesp.example.", ok: true},
		{name: "not an apex", allow: []string{"127.0.0.1"}, zone: "2026-11.myesp._domainkey.customer.example."},
		{name: "not our zone", allow: []string{"127.0.0.1"}, zone: "customer.example."},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := fixtureConfig()
			cfg.AllowTransfer, cfg.TSIG = c.allow, c.server
			s, addr := startServer(t, cfg)
			rrs, err := axfr(addr, c.zone, c.client)
			if !c.ok {
				if err == nil {
					t.Fatalf("transfer succeeded: %v", rrs)
				}
				return
			}
			if err != nil {
				t.Fatalf("transfer: %v", err)
			}
			z := s.Zones()
			if len(rrs) < 4 || rrs[0].Header().Rrtype != dns.TypeSOA || rrs[len(rrs)-1].Header().Rrtype != dns.TypeSOA {
				t.Fatalf("transfer %v: want SOA ... SOA", rrs)
			}
			serial, _ := z.Serial(c.zone)
			if rrs[0].(*dns.SOA).Serial != serial {
				t.Errorf("serial %d, want %d", rrs[0].(*dns.SOA).Serial, serial)
			}
			var names []string
			for _, rr := range rrs {
				if txt, ok := rr.(*dns.TXT); ok {
					names = append(names, txt.Hdr.Name)
					if want, _ := z.TXT(txt.Hdr.Name); strings.Join(txt.Txt, "") != want {
						t.Errorf("%s: %q, want %q", txt.Hdr.Name, strings.Join(txt.Txt, ""), want)
					}
				}
			}
			slices.Sort(names)
			zi := z.zones[c.zone]
			if len(names) != int(z.list[zi].n) {
				t.Errorf("TXT records %q, want %d", names, z.list[zi].n)
			}
		})
	}
}

func TestTransferManyMessages(t *testing.T) {
	// A zone larger than one transfer message: every message signed,
	// the later ones over the previous MAC (miekg's client checks).
	dir := t.TempDir()
	var ks []tkey
	for i := range 120 {
		ks = append(ks, tkey{domain: "d" + strings.Repeat("x", i%7) + string(rune('a'+i%26)) + string(rune('a'+i/26)) + ".example",
			selector: "s1", kind: "rsa", created: day(11, 1)})
	}
	writeTable(t, dir, ks, nil)
	cfg := fixtureConfig()
	cfg.Zones = []string{"dkim.myesp.example"}
	z, err := Build(cfg, loadTable(t, dir), func(string) string { return "dkim.myesp.example" }, fixtureNow)
	if err != nil {
		t.Fatal(err)
	}
	key := &TSIGKey{Name: "transfer.", Secret: testSecret}
	cfg.Listen, cfg.AllowTransfer, cfg.TSIG = []string{"127.0.0.1:0"}, []string{"127.0.0.0/8"}, key
	s, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.Swap(z)
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	q := new(dns.Msg)
	q.SetAxfr("dkim.myesp.example.")
	q.SetTsig("transfer.", dns.HmacSHA256, 300, time.Now().Unix())
	tr := &dns.Transfer{TsigSecret: map[string]string{"transfer.": testSecret}}
	ch, err := tr.In(q, s.Addrs()[0])
	if err != nil {
		t.Fatal(err)
	}
	envelopes, txt := 0, 0
	for env := range ch {
		if env.Error != nil {
			t.Fatalf("envelope %d: %v", envelopes, env.Error)
		}
		envelopes++
		for _, rr := range env.RR {
			if rr.Header().Rrtype == dns.TypeTXT {
				txt++
			}
		}
	}
	if envelopes < 3 || txt != 120 {
		t.Fatalf("%d messages, %d TXT records; want several messages and 120 records", envelopes, txt)
	}
}

func TestUDPTruncationThenTCP(t *testing.T) {
	_, addr := startServer(t, fixtureConfig())
	q := question("big.myesp._domainkey."+longDomain+".", dns.TypeTXT)
	c := &dns.Client{Net: "udp", Timeout: 5 * time.Second}
	r, _, err := c.Exchange(q, addr)
	if err != nil {
		t.Fatal(err)
	}
	if !r.Truncated || len(r.Answer) != 0 {
		t.Fatalf("UDP answer tc=%v answers %d, want TC", r.Truncated, len(r.Answer))
	}
	c.Net = "tcp"
	r, _, err = c.Exchange(q, addr)
	if err != nil {
		t.Fatal(err)
	}
	if r.Truncated || len(r.Answer) != 1 || !r.Authoritative {
		t.Fatalf("TCP answer %v", r)
	}
}

func TestSwapNotifies(t *testing.T) {
	// A fake secondary records the NOTIFYs it gets, checking their TSIG.
	key := &TSIGKey{Name: "transfer.", Secret: testSecret}
	type notify struct {
		zone   string
		serial uint32
	}
	got := make(chan notify, 16)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var tsigErrs sync.Map
	sec := &dns.Server{PacketConn: pc, TsigSecret: map[string]string{"transfer.": testSecret},
		MsgAcceptFunc: func(dh dns.Header) dns.MsgAcceptAction { return dns.MsgAccept },
		Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
			if r.Opcode != dns.OpcodeNotify || r.IsTsig() == nil || w.TsigStatus() != nil {
				tsigErrs.Store(r.Id, w.TsigStatus())
				return
			}
			m := new(dns.Msg)
			m.SetReply(r)
			m.SetTsig("transfer.", dns.HmacSHA256, 300, time.Now().Unix())
			w.WriteMsg(m)
			n := notify{zone: r.Question[0].Name}
			if len(r.Answer) == 1 {
				n.serial = r.Answer[0].(*dns.SOA).Serial
			}
			got <- n
		})}
	go sec.ActivateAndServe()
	defer sec.Shutdown()

	dir, tab := fixtureTable(t)
	cfg := fixtureConfig()
	cfg.Notify, cfg.TSIG = []string{pc.LocalAddr().String()}, key
	cfg.Listen = []string{"127.0.0.1:0"}
	s, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	z, err := Build(cfg, tab, fixtureCNAME, fixtureNow)
	if err != nil {
		t.Fatal(err)
	}
	s.Swap(z)
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	wait := func(what string, n int) []notify {
		t.Helper()
		var out []notify
		deadline := time.After(30 * time.Second)
		for len(out) < n {
			select {
			case x := <-got:
				out = append(out, x)
			case <-deadline:
				var errs []string
				tsigErrs.Range(func(k, v any) bool { errs = append(errs, v.(error).Error()); return true })
				t.Fatalf("%s: %d NOTIFYs %v, want %d (TSIG errors %q)", what, len(out), out, n, errs)
			}
		}
		return out
	}
	if first := wait("first swap", 4); len(first) != 4 {
		t.Fatal(first)
	}

	// Nothing changed: no NOTIFY. A changed zone: one, with the new
	// serial.
	same, err := Build(cfg, loadTable(t, dir), fixtureCNAME, fixtureNow)
	if err != nil {
		t.Fatal(err)
	}
	s.Swap(same)
	removeKey(t, dir, "cname.example", "s1")
	writeTable(t, dir, []tkey{{domain: "cname.example", selector: "s2", kind: "ed", created: day(11, 30)}}, nil)
	changed, err := Build(cfg, loadTable(t, dir), fixtureCNAME, fixtureNow)
	if err != nil {
		t.Fatal(err)
	}
	s.Swap(changed)
	n := wait("after a change", 1)
	if n[0].zone != "dkim.myesp.example." || n[0].serial != uint32(day(11, 30).Unix()) {
		t.Fatalf("NOTIFY %v, want dkim.myesp.example. with serial %d", n[0], day(11, 30).Unix())
	}
	select {
	case x := <-got:
		t.Fatalf("unexpected NOTIFY %v", x)
	case <-time.After(200 * time.Millisecond):
	}
	if st := s.Stats(); st.NotifySent != 5 {
		t.Errorf("NotifySent %d, want 5", st.NotifySent)
	}
}

func TestTCPLimits(t *testing.T) {
	cfg := fixtureConfig()
	cfg.Limits = Limits{TCPConns: 2, TCPQueries: 3, TCPIdle: 300 * time.Millisecond}
	s, addr := startServer(t, cfg)
	q := question("2026-11.myesp._domainkey.customer.example.", dns.TypeTXT)

	// Per connection: three queries are answered, then the server closes.
	conn, err := dns.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	for i := range 3 {
		if err := conn.WriteMsg(q); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.ReadMsg(); err != nil {
			t.Fatalf("query %d: %v", i+1, err)
		}
	}
	conn.WriteMsg(q)
	if _, err := conn.ReadMsg(); err == nil {
		t.Fatal("fourth query on one connection answered")
	}

	// An idle connection is closed.
	idle, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	idle.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := idle.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("idle connection: read %v, want EOF", err)
	}

	// Beyond two connections at once, the next one is closed at once.
	var held []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		held = append(held, c)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for s.Stats().TCPRefused == 0 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		c.Read(make([]byte, 1))
		c.Close()
		if ctx.Err() != nil {
			t.Fatal("no connection refused beyond the limit")
		}
	}
	_ = held
}

func TestStartFails(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	cfg := fixtureConfig()
	cfg.Listen = []string{l.Addr().String()}
	s, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err == nil || !strings.Contains(err.Error(), "listen on") {
		t.Fatalf("Start on a busy port: %v", err)
	}
	s.Close()
}

func TestNewErrors(t *testing.T) {
	cases := []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"bad listen", func(c *Config) { c.Listen = []string{"localhost:53"} }, "listen"},
		{"bad network", func(c *Config) { c.AllowTransfer = []string{"10.0.0.1/8"} }, "bits set"},
		{"bad notify", func(c *Config) { c.Notify = []string{"ns2.example"} }, "notify"},
		{"bad TSIG algorithm", func(c *Config) { c.TSIG = &TSIGKey{Name: "k.", Algorithm: "md5", Secret: testSecret} }, "TSIG algorithm"},
		{"bad TSIG secret", func(c *Config) { c.TSIG = &TSIGKey{Name: "k.", Secret: "not base64!"} }, "not base64"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := fixtureConfig()
			c.edit(&cfg)
			if _, err := New(cfg, nil); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err %v, want %q", err, c.want)
			}
		})
	}
}

func TestParseAddr(t *testing.T) {
	cases := []struct{ in, want string }{
		{"127.0.0.1", "127.0.0.1:53"}, {"127.0.0.1:5353", "127.0.0.1:5353"}, {"::1", "[::1]:53"}, {"[::1]:54", "[::1]:54"}, {"[::1]", "[::1]:53"},
	}
	for _, c := range cases {
		ap, err := ParseAddr(c.in)
		if err != nil || ap.String() != c.want {
			t.Errorf("ParseAddr(%q) = %v, %v; want %s", c.in, ap, err, c.want)
		}
	}
}

func TestNotifyDeadSecondary(t *testing.T) {
	// A port where nothing listens: every NOTIFY fails at once (ICMP port
	// unreachable), and after notifyDown zones the secondary is down.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := pc.LocalAddr().String()
	pc.Close()
	cfg := fixtureConfig()
	cfg.Notify = []string{dead}
	s, _ := startServer(t, cfg)
	deadline := time.Now().Add(60 * time.Second)
	for s.Stats().NotifyFailed < 4 {
		if time.Now().After(deadline) {
			t.Fatalf("stats %+v: want the four zones' NOTIFYs failed", s.Stats())
		}
		time.Sleep(50 * time.Millisecond)
	}
	ap, _ := ParseAddr(dead)
	if !s.notifier.isDown(ap) {
		t.Fatal("secondary not down after four zones failed")
	}
}
