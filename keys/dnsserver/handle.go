package dnsserver

import (
	"errors"
	"net/netip"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// Sizes of UDP answers (RFC 1035 §4.2.1, RFC 6891 §6.2.5, and the 1232
// bytes of DNS Flag Day 2020 that avoid IP fragmentation).
const (
	minUDPSize = 512
	maxUDPSize = 1232
	// transferChunk is the size at which a zone transfer starts its next
	// message.
	transferChunk = 16 << 10
)

// serve answers one request: raw is the message as received from src,
// over TCP or UDP; send is called with each answer (a zone transfer sends
// several). A message without a full header, or a response, is dropped:
// answering it could feed a loop or an amplification. Everything else
// gets an answer, FORMERR when it cannot be parsed. serve never panics on
// any input (FuzzServe).
func (s *Server) serve(raw []byte, src netip.Addr, tcp bool, send func([]byte) error) {
	if len(raw) < 12 || raw[2]&0x80 != 0 {
		s.stats.dropped.Add(1)
		return
	}
	s.stats.queries.Add(1)
	req := new(dns.Msg)
	if err := req.Unpack(raw); err != nil {
		s.sendRaw(formErr(raw), send)
		return
	}
	z := s.zones.Load()
	resp, tsig := s.answer(z, req, raw, src, tcp)
	if resp == nil {
		return
	}
	if resp.transfer != nil {
		s.transfer(z, req, resp, tsig, send)
		return
	}
	s.sendMsg(resp, tsig, tcp, send)
}

// formErr is the FORMERR answer to a message whose header is readable but
// whose body is not: the header alone, its ID, opcode and RD kept.
func formErr(raw []byte) []byte {
	out := make([]byte, 12)
	copy(out, raw[:2])
	out[2] = 0x80 | raw[2]&0x79 // QR, opcode, RD
	out[3] = dns.RcodeFormatError
	return out
}

// reply is what answer decided: a message, or a zone transfer to stream.
type reply struct {
	msg      *dns.Msg
	transfer *zone
	// udpSize is the largest UDP answer the client takes.
	udpSize int
}

// tsigState is a request's verified TSIG: the answer is signed with it.
type tsigState struct {
	rr  *dns.TSIG
	mac string
}

// answer decides the answer to req. It returns the reply and, when the
// request carried a valid TSIG of our key, the TSIG state to sign with.
func (s *Server) answer(z *Zones, req *dns.Msg, raw []byte, src netip.Addr, tcp bool) (*reply, *tsigState) {
	m := new(dns.Msg)
	m.Id = req.Id
	m.Response = true
	m.Opcode = req.Opcode
	m.RecursionDesired = req.RecursionDesired
	m.CheckingDisabled = req.CheckingDisabled
	r := &reply{msg: m, udpSize: minUDPSize}
	if len(req.Question) == 1 {
		m.Question = req.Question
	}
	if req.Opcode != dns.OpcodeQuery {
		// A NOTIFY to us, an UPDATE, an IQUERY: we are the primary of
		// our zones and take no changes by DNS.
		return s.rcode(r, dns.RcodeNotImplemented), nil
	}
	if len(req.Question) != 1 {
		return s.rcode(r, dns.RcodeFormatError), nil
	}
	opt, tsigRR, ok := checkSections(req)
	if !ok {
		return s.rcode(r, dns.RcodeFormatError), nil
	}
	if opt != nil {
		r.udpSize = min(max(int(opt.UDPSize()), minUDPSize), maxUDPSize)
		m.SetEdns0(maxUDPSize, false)
		if opt.Version() != 0 {
			return s.rcode(r, dns.RcodeBadVers), nil
		}
	}
	var ts *tsigState
	if tsigRR != nil {
		var code uint16
		ts, code = s.checkTSIG(tsigRR, raw)
		if ts == nil {
			s.stats.rcode(dns.RcodeNotAuth)
			m.Rcode = dns.RcodeNotAuth
			m.Extra = append(m.Extra, &dns.TSIG{
				Hdr:       dns.RR_Header{Name: tsigRR.Hdr.Name, Rrtype: dns.TypeTSIG, Class: dns.ClassANY},
				Algorithm: tsigRR.Algorithm, TimeSigned: tsigRR.TimeSigned, Fudge: tsigRR.Fudge,
				OrigId: req.Id, Error: code,
			})
			return r, nil
		}
	}
	q := req.Question[0]
	switch {
	case q.Qclass != dns.ClassINET:
		return s.rcode(r, dns.RcodeRefused), ts
	case q.Qtype == dns.TypeOPT || q.Qtype == dns.TypeTSIG || q.Qtype == dns.TypeTKEY:
		return s.rcode(r, dns.RcodeFormatError), ts
	case q.Qtype == dns.TypeMAILA || q.Qtype == dns.TypeMAILB:
		return s.rcode(r, dns.RcodeNotImplemented), ts
	case q.Qtype == dns.TypeAXFR || q.Qtype == dns.TypeIXFR:
		return s.transferReply(z, r, req, src, tcp, ts), ts
	}
	if z == nil {
		return s.rcode(r, dns.RcodeRefused), ts
	}
	name := strings.ToLower(q.Name)
	off, zi := z.find(name)
	if zi < 0 {
		return s.rcode(r, dns.RcodeRefused), ts
	}
	zn := &z.list[zi]
	apexAsAsked := q.Name[off:]
	m.Authoritative = true
	idx, exists := z.names[name]
	switch {
	case !exists:
		m.Rcode = dns.RcodeNameError
		m.Ns = append(m.Ns, z.soa(zn, apexAsAsked, true))
	case name == zn.apex && (q.Qtype == dns.TypeSOA || q.Qtype == dns.TypeANY):
		// ANY is answered minimally (RFC 8482): one RRset.
		m.Answer = append(m.Answer, z.soa(zn, q.Name, false))
	case name == zn.apex && q.Qtype == dns.TypeNS:
		m.Answer = append(m.Answer, z.nsRecords(q.Name)...)
	case idx != entNode && (q.Qtype == dns.TypeTXT || q.Qtype == dns.TypeANY):
		m.Answer = append(m.Answer, z.txt(&z.recs[idx], q.Name))
	default:
		m.Ns = append(m.Ns, z.soa(zn, apexAsAsked, true))
	}
	s.stats.rcode(m.Rcode)
	return r, ts
}

// rcode sets the answer's response code.
func (s *Server) rcode(r *reply, code int) *reply {
	r.msg.Rcode = code
	s.stats.rcode(code)
	return r
}

// checkSections checks the sections of a query: nothing in the answer
// section, at most one record in the authority section (the SOA of an
// IXFR), at most one OPT record (owned by the root, in the additional
// section) and a TSIG record only as the last record. It returns the OPT
// and TSIG records.
func checkSections(req *dns.Msg) (opt *dns.OPT, tsig *dns.TSIG, ok bool) {
	if len(req.Answer) > 0 || len(req.Ns) > 1 {
		return nil, nil, false
	}
	for _, rr := range req.Ns {
		if rr.Header().Rrtype == dns.TypeOPT || rr.Header().Rrtype == dns.TypeTSIG {
			return nil, nil, false
		}
	}
	for i, rr := range req.Extra {
		switch v := rr.(type) {
		case *dns.OPT:
			if opt != nil || v.Hdr.Name != "." {
				return nil, nil, false
			}
			opt = v
		case *dns.TSIG:
			if i != len(req.Extra)-1 {
				return nil, nil, false
			}
			tsig = v
		}
	}
	return opt, tsig, true
}

// checkTSIG verifies a request's TSIG record. It returns the state to
// sign the answer with, or the TSIG error to report (RFC 8945 §5.2).
func (s *Server) checkTSIG(rr *dns.TSIG, raw []byte) (*tsigState, uint16) {
	k := s.tsig
	if k == nil || !strings.EqualFold(dns.Fqdn(rr.Hdr.Name), k.name) || !strings.EqualFold(dns.Fqdn(rr.Algorithm), k.algorithm) {
		return nil, dns.RcodeBadKey
	}
	if err := dns.TsigVerify(raw, k.secret, "", false); err != nil {
		if errors.Is(err, dns.ErrTime) {
			return nil, dns.RcodeBadTime
		}
		return nil, dns.RcodeBadSig
	}
	return &tsigState{rr: rr, mac: rr.MAC}, 0
}

// transferReply decides a zone transfer request: AXFR over TCP only, from
// an allowed network, signed with our TSIG key when one is configured, for
// the apex of one of our zones. IXFR is answered by a full transfer (RFC
// 1995 §4), or by the SOA alone when the client has our serial, or over
// UDP (where it means "use TCP").
func (s *Server) transferReply(z *Zones, r *reply, req *dns.Msg, src netip.Addr, tcp bool, ts *tsigState) *reply {
	q := req.Question[0]
	if q.Qtype == dns.TypeAXFR && !tcp {
		return s.rcode(r, dns.RcodeFormatError)
	}
	if !s.mayTransfer(src) || (s.tsig != nil && ts == nil) {
		s.stats.transfersRefused.Add(1)
		s.log.Warn("keydns: zone transfer refused", "zone", q.Name, "client", src.String(), "signed", ts != nil)
		return s.rcode(r, dns.RcodeRefused)
	}
	if z == nil {
		return s.rcode(r, dns.RcodeRefused)
	}
	name := strings.ToLower(q.Name)
	zi, ok := z.zones[name]
	if !ok {
		if _, in := z.find(name); in >= 0 {
			return s.rcode(r, dns.RcodeNotAuth)
		}
		return s.rcode(r, dns.RcodeRefused)
	}
	zn := &z.list[zi]
	r.msg.Authoritative = true
	upToDate := false
	if q.Qtype == dns.TypeIXFR && len(req.Ns) == 1 {
		if soa, ok := req.Ns[0].(*dns.SOA); ok && !serialGreater(zn.serial, soa.Serial) {
			upToDate = true
		}
	}
	if q.Qtype == dns.TypeIXFR && (!tcp || upToDate) {
		r.msg.Answer = append(r.msg.Answer, z.soa(zn, q.Name, false))
		s.stats.rcode(dns.RcodeSuccess)
		return r
	}
	r.transfer = zn
	return r
}

// mayTransfer reports whether src is in an AllowTransfer network.
func (s *Server) mayTransfer(src netip.Addr) bool {
	src = src.Unmap()
	for _, p := range s.allow {
		if p.Contains(src) {
			return true
		}
	}
	return false
}

// transfer streams a zone: SOA, NS, the TXT records, SOA again, in
// messages of about transferChunk bytes, each signed when the request was
// (RFC 8945 §5.3.1: the later ones over the previous MAC and the timers).
func (s *Server) transfer(z *Zones, req *dns.Msg, r *reply, ts *tsigState, send func([]byte) error) {
	if !s.transfers.TryAcquire() {
		r.msg.Rcode = dns.RcodeRefused
		r.transfer = nil
		s.stats.transfersRefused.Add(1)
		s.log.Warn("keydns: zone transfer refused: too many at once", "zone", req.Question[0].Name)
		s.sendMsg(r, ts, true, send)
		return
	}
	defer s.transfers.Release()
	s.stats.transfers.Add(1)
	zn := r.transfer
	owner := req.Question[0].Name
	var mac string
	if ts != nil {
		mac = ts.mac
	}
	first := true
	msg := r.msg
	size := 0
	flush := func() error {
		msg.Compress = true
		data, newMAC, err := s.pack(msg, ts, mac, !first)
		if err != nil {
			return err
		}
		mac, first = newMAC, false
		msg = &dns.Msg{MsgHdr: r.msg.MsgHdr}
		msg.Question = r.msg.Question
		size = 0
		return send(data)
	}
	add := func(rr dns.RR) error {
		msg.Answer = append(msg.Answer, rr)
		size += dns.Len(rr)
		if size >= transferChunk {
			return flush()
		}
		return nil
	}
	soa := z.soa(zn, owner, false)
	rrs := append([]dns.RR{soa}, z.nsRecords(owner)...)
	for _, rr := range rrs {
		if err := add(rr); err != nil {
			s.log.Info("keydns: zone transfer ended early", "zone", zn.apex, "err", err)
			return
		}
	}
	for i := range z.recs[zn.first : zn.first+zn.n] {
		rec := &z.recs[int(zn.first)+i]
		if err := add(z.txt(rec, rec.name)); err != nil {
			s.log.Info("keydns: zone transfer ended early", "zone", zn.apex, "err", err)
			return
		}
	}
	msg.Answer = append(msg.Answer, soa)
	if err := flush(); err != nil {
		s.log.Info("keydns: zone transfer ended early", "zone", zn.apex, "err", err)
		return
	}
	s.stats.rcode(dns.RcodeSuccess)
	s.log.Info("keydns: zone transferred", "zone", zn.apex, "serial", zn.serial, "records", zn.n)
}

// sendMsg packs and sends one answer: truncated (TC) to the client's UDP
// size over UDP, signed when the request was.
func (s *Server) sendMsg(r *reply, ts *tsigState, tcp bool, send func([]byte) error) {
	m := r.msg
	m.Compress = true
	if !tcp {
		m.Truncate(r.udpSize)
	}
	var mac string
	if ts != nil {
		mac = ts.mac
	}
	data, _, err := s.pack(m, ts, mac, false)
	if err == nil && !tcp && len(data) > r.udpSize {
		// Only a signed answer gets here (Truncate leaves those alone):
		// send it empty with TC, and the client asks again over TCP.
		m.Answer, m.Ns, m.Truncated = nil, nil, true
		data, _, err = s.pack(m, ts, mac, false)
	}
	if err != nil {
		s.log.Warn("keydns: cannot pack an answer", "err", err)
		return
	}
	if m.Truncated {
		s.stats.truncated.Add(1)
	}
	s.sendRaw(data, send)
}

// pack packs m, signed with our key when ts is set (requestMAC: the MAC
// the signature covers; timersOnly for the later messages of a transfer).
// It returns the MAC of the packed message.
func (s *Server) pack(m *dns.Msg, ts *tsigState, requestMAC string, timersOnly bool) ([]byte, string, error) {
	if ts == nil || s.tsig == nil {
		data, err := m.Pack()
		return data, "", err
	}
	m.SetTsig(ts.rr.Hdr.Name, ts.rr.Algorithm, 300, time.Now().Unix())
	m.Extra[len(m.Extra)-1].(*dns.TSIG).OrigId = m.Id
	return dns.TsigGenerate(m, s.tsig.secret, requestMAC, timersOnly)
}

// sendRaw sends one packed answer.
func (s *Server) sendRaw(data []byte, send func([]byte) error) {
	if len(data) >= 4 {
		s.stats.answers.Add(1)
	}
	if err := send(data); err != nil {
		s.stats.sendErrors.Add(1)
	}
}

// soa returns the zone's SOA record at owner; negative: for the authority
// section of a negative answer, with the negative-caching TTL (RFC 2308
// §3).
func (z *Zones) soa(zn *zone, owner string, negative bool) dns.RR {
	ttl := z.params.ttl
	if negative {
		ttl = min(ttl, z.params.negTTL)
	}
	mbox := z.params.rname
	if mbox == "" {
		mbox = "hostmaster." + zn.apex
	}
	return &dns.SOA{
		Hdr:     dns.RR_Header{Name: owner, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: ttl},
		Ns:      z.params.mname,
		Mbox:    mbox,
		Serial:  zn.serial,
		Refresh: soaRefresh,
		Retry:   soaRetry,
		Expire:  soaExpire,
		Minttl:  z.params.negTTL,
	}
}

// nsRecords returns the zone's NS records at owner.
func (z *Zones) nsRecords(owner string) []dns.RR {
	out := make([]dns.RR, len(z.params.ns))
	for i, ns := range z.params.ns {
		out[i] = &dns.NS{Hdr: dns.RR_Header{Name: owner, Rrtype: dns.TypeNS, Class: dns.ClassINET, Ttl: z.params.ttl}, Ns: ns}
	}
	return out
}

// txt returns a record's TXT record at owner, its value split into
// strings of at most 255 bytes.
func (z *Zones) txt(r *record, owner string) dns.RR {
	return &dns.TXT{Hdr: dns.RR_Header{Name: owner, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: z.params.ttl},
		Txt: splitTXT(r.value())}
}

// splitTXT splits a TXT value into character-strings of at most 255
// bytes (RFC 1035 §3.3.14; RFC 6376 §3.6.2.2 joins them again).
func splitTXT(v string) []string {
	out := make([]string, 0, len(v)/255+1)
	for len(v) > 255 {
		out = append(out, v[:255])
		v = v[255:]
	}
	return append(out, v)
}
