package interop

import (
	"fmt"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// miniDNS is a minimal authoritative TXT server for these tests, on port 53
// of a random 127.x.y.z address (OpenDKIM's libunbound can only use port
// 53). It has the method names of internal/testdns so that the tests can
// move to it unchanged.
type miniDNS struct {
	addr string
	mu   sync.Mutex
	txt  map[string][]string
	srvs []*dns.Server
}

func startDNS(t *testing.T) *miniDNS {
	t.Helper()
	m := &miniDNS{txt: map[string][]string{}}
	var lastErr error
	for try := 0; try < 50; try++ {
		addr := fmt.Sprintf("127.%d.%d.%d:53", 1+rand.IntN(254), rand.IntN(256), 1+rand.IntN(254))
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			lastErr = err
			continue
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			pc.Close()
			lastErr = err
			continue
		}
		m.addr = addr
		for _, s := range []*dns.Server{{PacketConn: pc, Handler: m}, {Listener: ln, Handler: m}} {
			started := make(chan struct{})
			s.NotifyStartedFunc = func() { close(started) }
			m.srvs = append(m.srvs, s)
			go s.ActivateAndServe()
			select {
			case <-started:
			case <-time.After(5 * time.Second):
				t.Fatal("DNS server did not start")
			}
		}
		t.Cleanup(func() {
			for _, s := range m.srvs {
				s.Shutdown()
			}
		})
		return m
	}
	t.Fatalf("no free loopback port 53 (the tests need to bind port 53, as root): %v", lastErr)
	return nil
}

// Addr is "ip:53".
func (m *miniDNS) Addr() string { return m.addr }

// IP is the server's address.
func (m *miniDNS) IP() string { return strings.TrimSuffix(m.addr, ":53") }

// SetTXT replaces the TXT records of name; no values removes the name.
func (m *miniDNS) SetTXT(name string, values ...string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	name = dns.CanonicalName(name)
	if len(values) == 0 {
		delete(m.txt, name)
		return
	}
	m.txt[name] = values
}

func (m *miniDNS) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	resp := new(dns.Msg)
	resp.SetReply(req)
	resp.Authoritative = true
	resp.RecursionAvailable = req.RecursionDesired
	if len(req.Question) == 1 {
		q := req.Question[0]
		m.mu.Lock()
		vals, ok := m.txt[dns.CanonicalName(q.Name)]
		m.mu.Unlock()
		switch {
		case !ok:
			resp.Rcode = dns.RcodeNameError
		case q.Qtype == dns.TypeTXT:
			for _, v := range vals {
				var parts []string
				for len(v) > 255 {
					parts, v = append(parts, v[:255]), v[255:]
				}
				resp.Answer = append(resp.Answer, &dns.TXT{
					Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60},
					Txt: append(parts, v),
				})
			}
		}
	}
	if opt := req.IsEdns0(); opt != nil {
		resp.SetEdns0(1232, false)
	}
	w.WriteMsg(resp)
}
