package main

import (
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/miekg/dns"
)

// keyServer is the authoritative server of the benchmark's zone: it serves
// the TXT records of the key table with TTL 0, and negative answers whose
// SOA has TTL 0 and minimum 0, so that the daemon waits for no cache to
// expire before it activates a key. It counts the queries it receives.
type keyServer struct {
	zone string // fully qualified, lower case
	soa  *dns.SOA

	mu      sync.RWMutex
	records map[string][]string // owner name → TXT strings
	names   map[string]bool     // names that exist without records of their own (empty non-terminals)

	queries atomic.Int64

	addr     string
	udp, tcp *dns.Server
}

// newKeyServer returns a server for zone holding records (owner names
// fully qualified, lower case, all inside zone).
func newKeyServer(zone string, records map[string][]string) *keyServer {
	zone = dns.CanonicalName(zone)
	s := &keyServer{
		zone: zone,
		soa: &dns.SOA{Hdr: dns.RR_Header{Name: zone, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: 0},
			Ns: "ns." + zone, Mbox: "hostmaster." + zone, Serial: 1, Refresh: 3600, Retry: 600, Expire: 86400, Minttl: 0},
		records: map[string][]string{},
		names:   map[string]bool{},
	}
	for name, txt := range records {
		s.set(name, txt)
	}
	return s
}

// set serves txt at name (fully qualified, lower case).
func (s *keyServer) set(name string, txt []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.records[name] = txt
	// Every name between the record and the apex exists (RFC 8020: no
	// NXDOMAIN for a name that has names below it).
	for off, end := dns.NextLabel(name, 0); !end; off, end = dns.NextLabel(name, off) {
		parent := name[off:]
		if parent == s.zone || s.names[parent] {
			break
		}
		s.names[parent] = true
	}
}

// Queries returns the number of queries received so far.
func (s *keyServer) Queries() int64 { return s.queries.Load() }

// start listens on UDP and TCP on the same port of a random 127.x.y.z
// address and serves until stop.
func (s *keyServer) start() error {
	var lastErr error
	for range 20 {
		ip := net.IPv4(127, byte(1+rand.IntN(250)), byte(rand.IntN(256)), byte(1+rand.IntN(250)))
		pc, err := net.ListenPacket("udp", net.JoinHostPort(ip.String(), "0"))
		if err != nil {
			lastErr = err
			continue
		}
		port := pc.LocalAddr().(*net.UDPAddr).Port
		ln, err := net.Listen("tcp", net.JoinHostPort(ip.String(), strconv.Itoa(port)))
		if err != nil {
			pc.Close()
			lastErr = err
			continue
		}
		s.addr = pc.LocalAddr().String()
		s.udp = &dns.Server{PacketConn: pc, Handler: s}
		s.tcp = &dns.Server{Listener: ln, Handler: s}
		// The sockets are bound: queries wait in their buffers until the
		// servers read them.
		go s.udp.ActivateAndServe()
		go s.tcp.ActivateAndServe()
		return nil
	}
	return fmt.Errorf("DNS server: no free UDP and TCP port pair on 127.0.0.0/8: %w", lastErr)
}

// stop closes the sockets.
func (s *keyServer) stop() {
	if s.udp != nil {
		s.udp.Shutdown()
	}
	if s.tcp != nil {
		s.tcp.Shutdown()
	}
}

// maxUDP is the largest UDP answer we send whatever the client offers.
const maxUDP = 4096

// ServeDNS implements dns.Handler.
func (s *keyServer) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	s.queries.Add(1)
	resp := s.answer(req)
	if resp == nil {
		return
	}
	if _, udp := w.RemoteAddr().(*net.UDPAddr); udp {
		size := dns.MinMsgSize
		if opt := req.IsEdns0(); opt != nil {
			size = min(max(int(opt.UDPSize()), dns.MinMsgSize), maxUDP)
		}
		resp.Truncate(size)
	}
	w.WriteMsg(resp)
}

// answer builds the reply to req; nil drops it (not a query).
func (s *keyServer) answer(req *dns.Msg) *dns.Msg {
	if req.Response {
		return nil
	}
	resp := new(dns.Msg)
	resp.SetReply(req)
	resp.Authoritative = true
	resp.RecursionAvailable = false
	if opt := req.IsEdns0(); opt != nil {
		resp.SetEdns0(maxUDP, false)
	}
	if req.Opcode != dns.OpcodeQuery {
		resp.Rcode = dns.RcodeNotImplemented
		return resp
	}
	if len(req.Question) != 1 {
		resp.Rcode = dns.RcodeFormatError
		return resp
	}
	q := req.Question[0]
	name := strings.ToLower(q.Name)
	if q.Qclass != dns.ClassINET || !dns.IsSubDomain(s.zone, name) {
		resp.Rcode = dns.RcodeRefused
		resp.Authoritative = false
		return resp
	}
	s.mu.RLock()
	txt, ok := s.records[name]
	exists := ok || s.names[name] || name == s.zone
	s.mu.RUnlock()
	switch {
	case name == s.zone && (q.Qtype == dns.TypeSOA || q.Qtype == dns.TypeANY):
		resp.Answer = append(resp.Answer, dns.Copy(s.soa))
	case name == s.zone && q.Qtype == dns.TypeNS:
		resp.Answer = append(resp.Answer, &dns.NS{Hdr: dns.RR_Header{Name: s.zone, Rrtype: dns.TypeNS, Class: dns.ClassINET}, Ns: s.soa.Ns})
	case ok && (q.Qtype == dns.TypeTXT || q.Qtype == dns.TypeANY):
		resp.Answer = append(resp.Answer, &dns.TXT{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 0}, Txt: txt})
	case exists:
		resp.Ns = append(resp.Ns, dns.Copy(s.soa)) // NODATA
	default:
		resp.Rcode = dns.RcodeNameError
		resp.Ns = append(resp.Ns, dns.Copy(s.soa))
	}
	return resp
}
