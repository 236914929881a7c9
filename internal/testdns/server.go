// Package testdns is a small, real, authoritative DNS server for tests.
//
// It listens on UDP and TCP on the same loopback address and answers from
// records loaded as zone-file text (dns.NewZoneParser syntax, with $ORIGIN and
// $TTL), added one by one, or published with SetTXT. Records may be changed
// while the server is serving: tests publish and revoke DKIM keys mid-way.
//
// Behaviour, chosen to look like a real server to stub resolvers (our own
// policy/resolve, Go's net, dnspython, libunbound in forwarding mode):
//
//   - Every answer has the AA bit, and RA when the query asked for recursion.
//   - The server claims every name: a name with no records and no records
//     below it is NXDOMAIN; a name that exists (it has records, or a
//     descendant has) without the asked type is NODATA (NOERROR, no answer).
//     Negative answers carry the SOA of the enclosing zone in the authority
//     section (RFC 2308), synthesized when no SOA was loaded.
//   - A CNAME answers every type but CNAME; its target's records are added
//     when they are local, up to 8 hops (SetChaseCNAME(false) turns this off
//     so that clients must chase the target themselves).
//   - UDP answers larger than the client's EDNS0 buffer (512 bytes without
//     EDNS0) are truncated with TC set, so clients exercise TCP fallback.
//   - Fail and Drop inject SERVFAIL/REFUSED answers or silence per name.
//     SetDropRate silences a random fraction of all queries (drop.go).
//
// Wildcards, delegations (NS referrals) and DNSSEC are not implemented.
//
// Zones: the apex of a name is the longest loaded origin or SOA owner at or
// above it; when there is none, the last two labels of the name (the name
// itself if it is shorter) stand in for it. The apex only decides which SOA
// goes into negative answers.
package testdns

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// maxCNAMEHops bounds CNAME chasing inside the server.
const maxCNAMEHops = 8

// ednsSize is the EDNS0 buffer size the server advertises in its replies.
const ednsSize = 1232

// qkey identifies a question for the per-name counters.
type qkey struct {
	name  string // canonical: lowercase, fully qualified
	qtype uint16
}

// Server is a running test DNS server. All methods are safe for concurrent
// use, including while queries are being answered.
type Server struct {
	addr    string
	udp     *dns.Server
	tcp     *dns.Server
	served  chan error // one value per dns.Server when it stops serving
	closeMu sync.Mutex
	closed  bool

	mu         sync.Mutex
	records    map[string][]dns.RR // by canonical owner name
	zones      map[string]bool     // canonical apex names (origins, SOA owners)
	fails      map[string]int      // canonical name -> rcode
	drops      map[string]bool     // canonical name -> never answer
	rateDrop   rateDrop            // SetDropRate, in drop.go
	queries    int
	counts     map[qkey]int
	defaultTTL uint32
	chaseCNAME bool
}

// New starts a server listening on UDP and TCP at addr ("127.0.0.1:0" picks a
// free port, the same for both protocols). Close stops it.
func New(addr string) (*Server, error) {
	s := &Server{
		records:    make(map[string][]dns.RR),
		zones:      make(map[string]bool),
		fails:      make(map[string]int),
		drops:      make(map[string]bool),
		counts:     make(map[qkey]int),
		chaseCNAME: true,
	}
	pc, l, err := listen(addr)
	if err != nil {
		return nil, fmt.Errorf("testdns: listen on %s: %w", addr, err)
	}
	s.addr = pc.LocalAddr().String()
	s.udp = &dns.Server{PacketConn: pc, Handler: s}
	s.tcp = &dns.Server{Listener: l, Handler: s}
	s.served = make(chan error, 2)
	for _, srv := range []*dns.Server{s.udp, s.tcp} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		go func() { s.served <- srv.ActivateAndServe() }()
		select {
		case <-started:
		case err := <-s.served:
			pc.Close()
			l.Close()
			return nil, fmt.Errorf("testdns: serve on %s: %w", s.addr, err)
		}
	}
	return s, nil
}

// listen opens a UDP and a TCP socket on the same address. With port 0 it
// retries until it finds a port free for both protocols.
func listen(addr string) (net.PacketConn, net.Listener, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, err
	}
	tries := 1
	if port == "0" {
		tries = 20
	}
	for i := 0; ; i++ {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return nil, nil, err
		}
		_, p, _ := net.SplitHostPort(pc.LocalAddr().String())
		l, err := net.Listen("tcp", net.JoinHostPort(host, p))
		if err == nil {
			return pc, l, nil
		}
		pc.Close()
		if i+1 >= tries {
			return nil, nil, err
		}
	}
}

// Close stops the server and waits for it to stop serving. It is safe to
// call more than once.
func (s *Server) Close() error {
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var errs []error
	for _, srv := range []*dns.Server{s.udp, s.tcp} {
		if err := srv.ShutdownContext(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	for range 2 {
		<-s.served // ActivateAndServe returns nil or a closed-socket error on shutdown
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("testdns: close %s: %w", s.addr, err)
	}
	return nil
}

// Addr returns the address the server listens on, as "ip:port".
func (s *Server) Addr() string { return s.addr }

// IP returns the IP address the server listens on.
func (s *Server) IP() string {
	host, _, _ := net.SplitHostPort(s.addr)
	return host
}

// Port returns the port the server listens on (the same for UDP and TCP).
func (s *Server) Port() int {
	_, port, _ := net.SplitHostPort(s.addr)
	p, _ := strconv.Atoi(port)
	return p
}

// SetDefaultTTL sets the TTL, in seconds, of records published by SetTXT and
// of synthesized SOA records (whose minimum field also gets it, so it is the
// negative-caching time). The default is 0: a caching resolver under test
// sees records published or removed mid-test at once.
func (s *Server) SetDefaultTTL(ttl uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.defaultTTL = ttl
}

// SetChaseCNAME sets whether answers include the local records of CNAME
// targets (the default) or only the CNAME, as an authoritative server does
// when the target is in a zone it does not serve.
func (s *Server) SetChaseCNAME(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.chaseCNAME = on
}

// ParseZone parses zone-file text. origin is the initial $ORIGIN (may be
// empty when the text sets $ORIGIN or uses only absolute names); filename is
// used in error messages. $INCLUDE is not allowed.
func ParseZone(r io.Reader, origin, filename string) ([]dns.RR, error) {
	if origin != "" {
		origin = dns.Fqdn(origin)
	}
	zp := dns.NewZoneParser(r, origin, filename)
	var rrs []dns.RR
	for rr, ok := zp.Next(); ok; rr, ok = zp.Next() {
		rrs = append(rrs, rr)
	}
	if err := zp.Err(); err != nil {
		return nil, fmt.Errorf("testdns: parse zone %s: %w", filename, err)
	}
	return rrs, nil
}

// ParseZoneFile reads and parses the zone file at path (see ParseZone).
func ParseZoneFile(path string) ([]dns.RR, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("testdns: %w", err)
	}
	defer f.Close()
	return ParseZone(f, "", path)
}

// LoadZone parses zone-file text (see ParseZone) and adds its records. A
// non-empty origin is also registered as a zone apex.
func (s *Server) LoadZone(r io.Reader, origin, filename string) error {
	rrs, err := ParseZone(r, origin, filename)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if origin != "" {
		s.zones[canon(origin)] = true
	}
	s.addLocked(rrs)
	return nil
}

// LoadZoneFile reads the zone file at path and adds its records.
func (s *Server) LoadZoneFile(path string) error {
	rrs, err := ParseZoneFile(path)
	if err != nil {
		return err
	}
	s.Add(rrs...)
	return nil
}

// Add adds records; exact duplicates of records already served are ignored.
// A SOA record makes its owner a zone apex.
func (s *Server) Add(rrs ...dns.RR) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.addLocked(rrs)
}

// Replace atomically replaces every record and zone apex with rrs. Failure
// injection, counters and settings are kept.
func (s *Server) Replace(rrs ...dns.RR) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.records = make(map[string][]dns.RR)
	s.zones = make(map[string]bool)
	s.addLocked(rrs)
}

func (s *Server) addLocked(rrs []dns.RR) {
	for _, rr := range rrs {
		rr = dns.Copy(rr)
		name := canon(rr.Header().Name)
		if rr.Header().Rrtype == dns.TypeSOA {
			s.zones[name] = true
		}
		dup := false
		for _, old := range s.records[name] {
			if dns.IsDuplicate(old, rr) {
				dup = true
				break
			}
		}
		if !dup {
			s.records[name] = append(s.records[name], rr)
		}
	}
}

// Remove deletes the records of type qtype at name; dns.TypeANY deletes all
// records at name.
func (s *Server) Remove(name string, qtype uint16) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.removeLocked(canon(name), qtype)
}

func (s *Server) removeLocked(name string, qtype uint16) {
	if qtype == dns.TypeANY {
		delete(s.records, name)
		return
	}
	var keep []dns.RR
	for _, rr := range s.records[name] {
		if rr.Header().Rrtype != qtype {
			keep = append(keep, rr)
		}
	}
	if len(keep) == 0 {
		delete(s.records, name)
		return
	}
	s.records[name] = keep
}

// SetTXT replaces the TXT records at name with one record per value (none:
// the TXT records are removed). Values are raw bytes: each is split into
// character-strings of at most 255 bytes, as RFC 7208 §3.3 and RFC 6376
// §3.6.2.2 expect for long SPF records and DKIM keys. The TTL is the
// default TTL (see SetDefaultTTL).
func (s *Server) SetTXT(name string, values ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cname := canon(name)
	s.removeLocked(cname, dns.TypeTXT)
	for _, v := range values {
		rr := &dns.TXT{
			Hdr: dns.RR_Header{Name: dns.Fqdn(name), Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: s.defaultTTL},
			Txt: SplitTXT(v),
		}
		s.records[cname] = append(s.records[cname], rr)
	}
}

// SplitTXT splits a raw TXT value into character-strings of at most 255
// bytes each, escaped in the presentation form miekg/dns keeps in dns.TXT
// (backslash, double quote and non-printable bytes escaped). An empty value
// is one empty string.
func SplitTXT(v string) []string {
	if v == "" {
		return []string{""}
	}
	var out []string
	for len(v) > 0 {
		n := min(len(v), 255)
		out = append(out, escapeTXT(v[:n]))
		v = v[n:]
	}
	return out
}

// escapeTXT escapes raw bytes the way miekg/dns expects TXT strings: it
// unescapes \X and \DDD when packing.
func escapeTXT(raw string) string {
	var b strings.Builder
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		switch {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < ' ' || c > '~':
			fmt.Fprintf(&b, "\\%03d", c)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// Fail makes every query for name (any type) answer with rcode, for example
// dns.RcodeServerFailure or dns.RcodeRefused, until Clear.
func (s *Server) Fail(name string, rcode int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fails[canon(name)] = rcode
}

// Drop makes the server never answer queries for name (any type), which
// clients see as a timeout, until Clear.
func (s *Server) Drop(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.drops[canon(name)] = true
}

// Clear undoes Fail and Drop for name.
func (s *Server) Clear(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.fails, canon(name))
	delete(s.drops, canon(name))
}

// Queries returns the number of queries received, over UDP and TCP,
// including failed and dropped ones.
func (s *Server) Queries() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queries
}

// QueryCount returns the number of queries received for name and qtype
// (name is case-insensitive, with or without the trailing dot).
func (s *Server) QueryCount(name string, qtype uint16) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts[qkey{canon(name), qtype}]
}

// ServeDNS answers one query. It implements dns.Handler.
func (s *Server) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	resp := new(dns.Msg)
	switch {
	case req.Response:
		return // never answer answers
	case req.Opcode != dns.OpcodeQuery:
		resp.SetRcode(req, dns.RcodeNotImplemented)
	case len(req.Question) != 1:
		resp.SetRcodeFormatError(req)
	case req.Question[0].Qclass != dns.ClassINET:
		resp.SetRcode(req, dns.RcodeRefused)
	default:
		resp.SetReply(req)
		if !s.answer(resp, req.Question[0]) {
			return // dropped
		}
	}
	resp.Authoritative = true
	resp.RecursionAvailable = req.RecursionDesired

	size := dns.MinMsgSize
	if opt := req.IsEdns0(); opt != nil {
		resp.SetEdns0(ednsSize, false)
		size = max(int(opt.UDPSize()), dns.MinMsgSize)
	}
	if _, udp := w.RemoteAddr().(*net.UDPAddr); udp {
		resp.Truncate(size)
	}
	// A failed write means the client went away; nothing to do in a test server.
	_ = w.WriteMsg(resp)
}

// answer fills resp for question q; it reports false when the query must be
// dropped.
func (s *Server) answer(resp *dns.Msg, q dns.Question) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	name := canon(q.Name)
	s.queries++
	s.counts[qkey{name, q.Qtype}]++
	if s.drops[name] || s.dropRandomLocked() {
		return false
	}
	if rcode, ok := s.fails[name]; ok {
		resp.Rcode = rcode
		return true
	}

	cur := name
	for hop := 0; ; hop++ {
		rrs := s.records[cur]
		if q.Qtype != dns.TypeCNAME {
			if cname := firstOfType(rrs, dns.TypeCNAME); cname != nil {
				resp.Answer = append(resp.Answer, dns.Copy(cname))
				if !s.chaseCNAME || hop+1 >= maxCNAMEHops {
					return true
				}
				cur = canon(cname.(*dns.CNAME).Target)
				continue
			}
		}
		found := false
		for _, rr := range rrs {
			if q.Qtype == dns.TypeANY || rr.Header().Rrtype == q.Qtype {
				resp.Answer = append(resp.Answer, dns.Copy(rr))
				found = true
			}
		}
		if found {
			return true
		}
		// Negative answer for cur (RFC 2308); with CNAMEs before it, the
		// rcode is about the last name of the chain (RFC 6604 §2.1).
		if !s.existsLocked(cur) {
			resp.Rcode = dns.RcodeNameError
		}
		resp.Ns = append(resp.Ns, s.soaLocked(cur))
		return true
	}
}

// canon returns the key for a name: lowercase, fully qualified, in the
// presentation form miekg/dns gives names it unpacks. The zone parser keeps
// names as written (o'brien.example.), while a query for the same name
// arrives escaped (o\'brien.example.); a pack and unpack round trip makes
// both the same.
func canon(name string) string {
	buf := make([]byte, 256)
	off, err := dns.PackDomainName(dns.Fqdn(name), buf, 0, nil, false)
	if err == nil {
		name, _, err = dns.UnpackDomainName(buf[:off], 0)
	}
	if err != nil {
		return dns.CanonicalName(name) // not a valid name: it will match nothing useful
	}
	return strings.ToLower(name)
}

func firstOfType(rrs []dns.RR, t uint16) dns.RR {
	for _, rr := range rrs {
		if rr.Header().Rrtype == t {
			return rr
		}
	}
	return nil
}

// existsLocked reports whether name has records or a descendant has (an
// empty non-terminal exists, RFC 8020).
func (s *Server) existsLocked(name string) bool {
	if len(s.records[name]) > 0 {
		return true
	}
	for owner := range s.records {
		if owner != name && dns.IsSubDomain(name, owner) {
			return true
		}
	}
	return false
}

// apexLocked returns the zone apex for name (see the package comment).
func (s *Server) apexLocked(name string) string {
	best := ""
	for z := range s.zones {
		if dns.IsSubDomain(z, name) && dns.CountLabel(z) > dns.CountLabel(best) {
			best = z
		}
	}
	if best != "" {
		return best
	}
	labels := dns.SplitDomainName(name)
	if len(labels) <= 2 {
		return name
	}
	return dns.Fqdn(strings.Join(labels[len(labels)-2:], "."))
}

// soaLocked returns the SOA for negative answers about name: the loaded one
// at the apex, or a synthesized one.
func (s *Server) soaLocked(name string) dns.RR {
	apex := s.apexLocked(name)
	if soa := firstOfType(s.records[apex], dns.TypeSOA); soa != nil {
		return dns.Copy(soa)
	}
	return &dns.SOA{
		Hdr:     dns.RR_Header{Name: apex, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: s.defaultTTL},
		Ns:      "ns.testdns.invalid.",
		Mbox:    "hostmaster.testdns.invalid.",
		Serial:  1,
		Refresh: 3600,
		Retry:   600,
		Expire:  86400,
		Minttl:  s.defaultTTL,
	}
}
