package dnsserver

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

// Defaults of Limits.
const (
	defaultTCPConns     = 256
	defaultTCPQueries   = 65536
	defaultTCPIdle      = 10 * time.Second
	defaultWriteTimeout = 30 * time.Second
	// maxTransfers bounds the zone transfers streamed at once: each holds
	// a TCP connection and a goroutine for as long as the zone takes.
	maxTransfers = 8
	// udpBuffer is the largest UDP query read; a query is a question and
	// a few small records.
	udpBuffer = 4096
)

// Server is the authoritative server: it answers from the Zones last
// given to Swap, on UDP and TCP at every listen address.
type Server struct {
	cfg    Config
	log    *slog.Logger
	listen []netip.AddrPort
	allow  []netip.Prefix
	tsig   *tsigKey
	limits Limits

	zones     atomic.Pointer[Zones]
	swapMu    sync.Mutex
	transfers semaphore
	tcpConns  semaphore
	notifier  *notifier
	stats     counters

	mu      sync.Mutex
	started bool
	closed  bool
	udp     []*net.UDPConn
	tcp     []*net.TCPListener
	conns   map[net.Conn]struct{}
	wg      sync.WaitGroup
}

// tsigKey is a checked TSIG key: canonical name and algorithm.
type tsigKey struct {
	name, algorithm, secret string
}

// TSIG algorithms by their configuration names.
var tsigAlgorithms = map[string]string{
	"hmac-sha1":   dns.HmacSHA1,
	"hmac-sha224": dns.HmacSHA224,
	"hmac-sha256": dns.HmacSHA256,
	"hmac-sha384": dns.HmacSHA384,
	"hmac-sha512": dns.HmacSHA512,
}

// New checks the server part of cfg (listen addresses, transfer networks,
// NOTIFY targets, TSIG key) and returns a Server that listens once Start
// is called. Log receives what the server has to say; nil discards it.
func New(cfg Config, log *slog.Logger) (*Server, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, log: log, limits: cfg.Limits, conns: map[net.Conn]struct{}{}}
	for _, a := range cfg.Listen {
		ap, err := ParseAddr(a)
		if err != nil {
			return nil, fmt.Errorf("keydns: listen: %w", err)
		}
		s.listen = append(s.listen, ap)
	}
	for _, n := range cfg.AllowTransfer {
		p, err := ParsePrefix(n)
		if err != nil {
			return nil, fmt.Errorf("keydns: allow_transfer: %w", err)
		}
		s.allow = append(s.allow, p)
	}
	var notify []netip.AddrPort
	for _, a := range cfg.Notify {
		ap, err := ParseAddr(a)
		if err != nil {
			return nil, fmt.Errorf("keydns: notify: %w", err)
		}
		notify = append(notify, ap)
	}
	if cfg.TSIG != nil {
		k, err := checkTSIGKey(*cfg.TSIG)
		if err != nil {
			return nil, err
		}
		s.tsig = k
	}
	l := &s.limits
	if l.TCPConns <= 0 {
		l.TCPConns = defaultTCPConns
	}
	if l.TCPQueries <= 0 {
		l.TCPQueries = defaultTCPQueries
	}
	if l.TCPIdle <= 0 {
		l.TCPIdle = defaultTCPIdle
	}
	if l.WriteTimeout <= 0 {
		l.WriteTimeout = defaultWriteTimeout
	}
	if l.UDPWorkers <= 0 {
		l.UDPWorkers = 4 * runtime.GOMAXPROCS(0)
	}
	s.transfers = make(semaphore, maxTransfers)
	s.tcpConns = make(semaphore, l.TCPConns)
	s.notifier = newNotifier(s, notify)
	return s, nil
}

// checkTSIGKey checks a TSIG key and canonicalizes its names.
func checkTSIGKey(k TSIGKey) (*tsigKey, error) {
	if k.Name == "" {
		return nil, errors.New("keydns: TSIG key without a name")
	}
	if _, ok := dns.IsDomainName(k.Name); !ok {
		return nil, fmt.Errorf("keydns: TSIG key name %q is not a domain name", k.Name)
	}
	a := strings.ToLower(strings.TrimSuffix(k.Algorithm, "."))
	if a == "" {
		a = "hmac-sha256"
	}
	alg, ok := tsigAlgorithms[a]
	if !ok {
		return nil, fmt.Errorf("keydns: TSIG algorithm %q: want hmac-sha256, hmac-sha384, hmac-sha512, hmac-sha224 or hmac-sha1", k.Algorithm)
	}
	if raw, err := base64.StdEncoding.DecodeString(k.Secret); err != nil || len(raw) == 0 {
		return nil, fmt.Errorf("keydns: TSIG key %s: the secret is not base64", k.Name)
	}
	return &tsigKey{name: dns.CanonicalName(k.Name), algorithm: alg, secret: k.Secret}, nil
}

// ParseAddr parses "ip:port" or "ip" (port 53), IPv6 as "[ip]:port" or
// bare.
func ParseAddr(s string) (netip.AddrPort, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap, nil
	}
	a, err := netip.ParseAddr(strings.Trim(s, "[]"))
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%q: want ip or ip:port", s)
	}
	return netip.AddrPortFrom(a, 53), nil
}

// ParsePrefix parses a network in CIDR notation, or a bare address (that
// address alone).
func ParsePrefix(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		if p != p.Masked() {
			return netip.Prefix{}, fmt.Errorf("%q has bits set after the prefix length (did you mean %s?)", s, p.Masked())
		}
		return p, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q: want a network (CIDR) or an address", s)
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// Start listens on UDP and TCP at every listen address and serves. A
// listen failure closes what was opened and is returned. An address with
// port 0 gets a port that is free for both (see Addrs).
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		return errors.New("keydns: server already started")
	}
	s.started = true
	for _, ap := range s.listen {
		u, t, err := listenBoth(ap)
		if err != nil {
			s.closeListeners()
			return fmt.Errorf("keydns: listen on %s: %w", ap, err)
		}
		s.udp = append(s.udp, u)
		s.tcp = append(s.tcp, t)
	}
	for _, u := range s.udp {
		for range s.limits.UDPWorkers {
			s.wg.Add(1)
			go s.serveUDP(u)
		}
	}
	for _, t := range s.tcp {
		s.wg.Add(1)
		go s.acceptTCP(t)
	}
	s.notifier.start()
	s.log.Info("keydns: listening", "addrs", s.addrsLocked())
	return nil
}

// listenBoth binds UDP and TCP on the same address; with port 0 it looks
// for a port free for both.
func listenBoth(ap netip.AddrPort) (*net.UDPConn, *net.TCPListener, error) {
	for try := 0; ; try++ {
		t, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(ap))
		if err != nil {
			return nil, nil, err
		}
		port := t.Addr().(*net.TCPAddr).Port
		u, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ap.Addr(), uint16(port))))
		if err == nil {
			return u, t, nil
		}
		t.Close()
		if ap.Port() != 0 || try >= 20 {
			return nil, nil, err
		}
	}
}

// Addrs returns the bound addresses ("ip:port", UDP and TCP alike).
func (s *Server) Addrs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addrsLocked()
}

func (s *Server) addrsLocked() []string {
	var out []string
	for _, t := range s.tcp {
		out = append(out, t.Addr().String())
	}
	return out
}

// Close stops serving: listeners and TCP connections are closed, pending
// NOTIFYs dropped, and Close waits for every goroutine of the server.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.closeListeners()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.notifier.stop()
	s.wg.Wait()
	return nil
}

// closeListeners closes the sockets (s.mu held).
func (s *Server) closeListeners() {
	for _, u := range s.udp {
		u.Close()
	}
	for _, t := range s.tcp {
		t.Close()
	}
}

// isClosed reports whether Close was called.
func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// Swap replaces the zones served, at once for every later query (a query
// in progress finishes with the zones it started with). The serials of z
// are settled against the zones served until now (see Build): unchanged
// zones keep theirs. Secondaries are sent a NOTIFY for every zone whose
// serial changed. z must not be given to another Server.
func (s *Server) Swap(z *Zones) {
	if z == nil {
		return
	}
	s.swapMu.Lock()
	prev := s.zones.Load()
	changed := z.follow(prev)
	s.zones.Store(z)
	s.swapMu.Unlock()
	nz, nr := z.Len()
	level := slog.LevelDebug // a recheck that changed nothing
	if len(changed) > 0 {
		level = slog.LevelInfo
	}
	s.log.Log(context.Background(), level, "keydns: zones loaded", "zones", nz, "records", nr, "changed", len(changed))
	s.notifier.enqueue(changed)
}

// Zones returns the zones served now (nil before the first Swap).
func (s *Server) Zones() *Zones { return s.zones.Load() }

// serveUDP reads queries from u until it is closed.
func (s *Server) serveUDP(u *net.UDPConn) {
	defer s.wg.Done()
	buf := make([]byte, udpBuffer)
	for {
		n, from, err := u.ReadFromUDPAddrPort(buf)
		if err != nil {
			if s.isClosed() || errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(time.Millisecond) // e.g. ICMP errors reported on the socket
			continue
		}
		s.serve(buf[:n], from.Addr(), false, func(b []byte) error {
			_, err := u.WriteToUDPAddrPort(b, from)
			return err
		})
	}
}

// acceptTCP accepts connections until l is closed; beyond Limits.TCPConns
// a connection is closed at once.
func (s *Server) acceptTCP(l *net.TCPListener) {
	defer s.wg.Done()
	for {
		c, err := l.AcceptTCP()
		if err != nil {
			if s.isClosed() || errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(5 * time.Millisecond) // out of file descriptors: let some close
			continue
		}
		if !s.tcpConns.TryAcquire() {
			s.stats.tcpRefused.Add(1)
			c.Close()
			continue
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			s.tcpConns.Release()
			return
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serveTCP(c)
	}
}

// serveTCP answers the queries of one connection (RFC 7766): at most
// Limits.TCPQueries, each within Limits.TCPIdle of the previous answer.
func (s *Server) serveTCP(c *net.TCPConn) {
	defer func() {
		c.Close()
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		s.tcpConns.Release()
		s.wg.Done()
	}()
	src := netip.Addr{}
	if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil {
		src = ap.Addr()
	}
	var lenBuf [2]byte
	buf := make([]byte, 512)
	send := func(b []byte) error {
		if len(b) > dns.MaxMsgSize {
			return errors.New("answer too large")
		}
		c.SetWriteDeadline(time.Now().Add(s.limits.WriteTimeout))
		binary.BigEndian.PutUint16(lenBuf[:], uint16(len(b)))
		bufs := net.Buffers{lenBuf[:], b}
		_, err := bufs.WriteTo(c)
		return err
	}
	for range s.limits.TCPQueries {
		c.SetReadDeadline(time.Now().Add(s.limits.TCPIdle))
		var hdr [2]byte
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			return
		}
		n := int(binary.BigEndian.Uint16(hdr[:]))
		if n > cap(buf) {
			buf = make([]byte, n)
		}
		if _, err := io.ReadFull(c, buf[:n]); err != nil {
			return
		}
		failed := false
		s.serve(buf[:n], src, true, func(b []byte) error {
			if failed {
				return errors.New("connection failed")
			}
			if err := send(b); err != nil {
				failed = true
				return err
			}
			return nil
		})
		if failed {
			return
		}
	}
}

// semaphore bounds concurrent use of something.
type semaphore chan struct{}

// TryAcquire takes a slot if one is free.
func (s semaphore) TryAcquire() bool {
	select {
	case s <- struct{}{}:
		return true
	default:
		return false
	}
}

// Release frees a slot.
func (s semaphore) Release() { <-s }

// Stats are the server's counters since New.
type Stats struct {
	// Queries counts the messages received (answered or not); Dropped
	// those dropped unanswered (no header, or a response).
	Queries, Dropped uint64
	// Answers counts the messages sent; SendErrors those that failed.
	Answers, SendErrors uint64
	// Rcodes counts answers by response code name ("NOERROR",
	// "NXDOMAIN", "REFUSED", "FORMERR", "NOTIMP", "NOTAUTH", "other").
	Rcodes map[string]uint64
	// Truncated counts UDP answers sent with TC.
	Truncated uint64
	// Transfers counts zone transfers streamed; TransfersRefused those
	// refused (network, TSIG, too many at once).
	Transfers, TransfersRefused uint64
	// TCPRefused counts connections closed at once (Limits.TCPConns).
	TCPRefused uint64
	// NotifySent counts NOTIFYs acknowledged by a secondary, NotifyFailed
	// those given up on.
	NotifySent, NotifyFailed uint64
}

// counters are the live Stats.
type counters struct {
	queries, dropped, answers, sendErrors, truncated   atomic.Uint64
	transfers, transfersRefused, tcpRefused            atomic.Uint64
	notifySent, notifyFailed                           atomic.Uint64
	noError, nxDomain, refused, formErr, notImp, nAuth atomic.Uint64
	otherRcode                                         atomic.Uint64
}

// rcode counts an answer's response code.
func (c *counters) rcode(code int) {
	switch code {
	case dns.RcodeSuccess:
		c.noError.Add(1)
	case dns.RcodeNameError:
		c.nxDomain.Add(1)
	case dns.RcodeRefused:
		c.refused.Add(1)
	case dns.RcodeFormatError:
		c.formErr.Add(1)
	case dns.RcodeNotImplemented:
		c.notImp.Add(1)
	case dns.RcodeNotAuth:
		c.nAuth.Add(1)
	default:
		c.otherRcode.Add(1)
	}
}

// Stats returns the counters.
func (s *Server) Stats() Stats {
	c := &s.stats
	return Stats{
		Queries: c.queries.Load(), Dropped: c.dropped.Load(),
		Answers: c.answers.Load(), SendErrors: c.sendErrors.Load(),
		Rcodes: map[string]uint64{
			"NOERROR": c.noError.Load(), "NXDOMAIN": c.nxDomain.Load(), "REFUSED": c.refused.Load(),
			"FORMERR": c.formErr.Load(), "NOTIMP": c.notImp.Load(), "NOTAUTH": c.nAuth.Load(),
			"other": c.otherRcode.Load(),
		},
		Truncated: c.truncated.Load(), Transfers: c.transfers.Load(), TransfersRefused: c.transfersRefused.Load(),
		TCPRefused: c.tcpRefused.Load(), NotifySent: c.notifySent.Load(), NotifyFailed: c.notifyFailed.Load(),
	}
}

// notifier sends NOTIFYs (RFC 1996) for changed zones to the secondaries,
// a few at a time, each retried a few times. Zones wait in a set, so a
// zone that changes again before its NOTIFY went out is sent once, with
// its newest serial.
type notifier struct {
	s       *Server
	targets []netip.AddrPort

	mu       sync.Mutex
	pending  map[string]struct{}
	queue    []string
	failures map[netip.AddrPort]int // zones in a row not acknowledged
	wake     chan struct{}
	ctx      context.Context
	cancel   context.CancelFunc
	done     chan struct{}
	running  bool
}

// NOTIFY pacing: notifyParallel at once, notifyAttempts tries each with
// a timeout that doubles from notifyTimeout.
const (
	notifyParallel = 16
	notifyAttempts = 4
	notifyTimeout  = time.Second
)

func newNotifier(s *Server, targets []netip.AddrPort) *notifier {
	ctx, cancel := context.WithCancel(context.Background())
	return &notifier{s: s, targets: targets, pending: map[string]struct{}{}, failures: map[netip.AddrPort]int{}, wake: make(chan struct{}, 1),
		ctx: ctx, cancel: cancel, done: make(chan struct{})}
}

// start runs the sender.
func (n *notifier) start() {
	n.mu.Lock()
	n.running = true
	n.mu.Unlock()
	go n.run()
}

// stop ends the sender and waits for it.
func (n *notifier) stop() {
	n.cancel()
	n.mu.Lock()
	running := n.running
	n.mu.Unlock()
	if running {
		<-n.done
	}
}

// enqueue adds zones to notify.
func (n *notifier) enqueue(zones []string) {
	if len(n.targets) == 0 || len(zones) == 0 {
		return
	}
	n.mu.Lock()
	for _, z := range zones {
		if _, ok := n.pending[z]; !ok {
			n.pending[z] = struct{}{}
			n.queue = append(n.queue, z)
		}
	}
	n.mu.Unlock()
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

// next takes the next zone to notify.
func (n *notifier) next() (string, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.queue) == 0 {
		n.queue = nil // let a large backlog's array go
		return "", false
	}
	z := n.queue[0]
	n.queue = n.queue[1:]
	delete(n.pending, z)
	return z, true
}

func (n *notifier) run() {
	defer close(n.done)
	sem := make(semaphore, notifyParallel)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		z, ok := n.next()
		if !ok {
			select {
			case <-n.ctx.Done():
				return
			case <-n.wake:
				continue
			}
		}
		for _, t := range n.targets {
			select {
			case <-n.ctx.Done():
				return
			case sem <- struct{}{}:
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer sem.Release()
				n.send(z, t)
			}()
		}
	}
}

// send sends one NOTIFY for zone to target, with the serial served at
// the time of sending, until it is acknowledged or notifyAttempts tries
// have failed. A secondary that failed notifyDown zones in a row is
// down: each zone gets one try, and failures are logged once, not per
// zone (100,000 zones to a dead secondary must not take a day of retries
// and log lines).
func (n *notifier) send(zone string, target netip.AddrPort) {
	s := n.s
	serial, ok := s.Zones().Serial(zone)
	if !ok {
		return // the zone is gone
	}
	attempts := notifyAttempts
	if n.isDown(target) {
		attempts = 1
	}
	timeout := notifyTimeout
	var lastErr error
	for i := range attempts {
		err := n.sendOnce(zone, serial, target, timeout)
		if err == nil {
			s.stats.notifySent.Add(1)
			s.log.Debug("keydns: NOTIFY acknowledged", "zone", zone, "serial", serial, "secondary", target.String())
			n.result(target, zone, nil)
			return
		}
		lastErr = err
		var refused rcodeError
		if errors.As(err, &refused) || i == attempts-1 {
			break // a secondary that refuses will refuse again
		}
		select {
		case <-n.ctx.Done():
			return
		case <-time.After(timeout / 2):
		}
		timeout *= 2
	}
	s.stats.notifyFailed.Add(1)
	n.result(target, zone, lastErr)
}

// notifyDown is the number of zones in a row whose NOTIFY a secondary
// did not acknowledge that makes it down.
const notifyDown = 3

// isDown reports whether target is down.
func (n *notifier) isDown(target netip.AddrPort) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.failures[target] >= notifyDown
}

// result notes the outcome of a zone's NOTIFY to target and logs what is
// worth it: each failure while the secondary is up, its going down, and
// its coming back.
func (n *notifier) result(target netip.AddrPort, zone string, err error) {
	n.mu.Lock()
	before := n.failures[target]
	if err == nil {
		delete(n.failures, target)
	} else {
		n.failures[target] = before + 1
	}
	n.mu.Unlock()
	log := n.s.log
	switch {
	case err == nil && before >= notifyDown:
		log.Info("keydns: secondary acknowledges NOTIFYs again", "secondary", target.String())
	case err != nil && before+1 < notifyDown:
		log.Warn("keydns: NOTIFY not acknowledged", "zone", zone, "secondary", target.String(), "err", err)
	case err != nil && before+1 == notifyDown:
		log.Warn("keydns: secondary does not acknowledge NOTIFYs; each zone gets one try until it does", "secondary", target.String(),
			"zones_failed", notifyDown, "err", err)
	}
}

// rcodeError is a NOTIFY answered with an error code.
type rcodeError int

func (e rcodeError) Error() string { return "answered " + dns.RcodeToString[int(e)] }

// sendOnce sends a NOTIFY over UDP from our listen address of target's
// family (secondaries accept NOTIFYs from their primary's address) and
// waits for the acknowledgement.
func (n *notifier) sendOnce(zone string, serial uint32, target netip.AddrPort, timeout time.Duration) error {
	s := n.s
	m := new(dns.Msg)
	m.SetNotify(zone)
	m.Authoritative = true
	m.Answer = []dns.RR{&dns.SOA{Hdr: dns.RR_Header{Name: zone, Rrtype: dns.TypeSOA, Class: dns.ClassINET}, Serial: serial,
		Ns: ".", Mbox: "."}}
	c := &dns.Client{Net: "udp", Timeout: timeout}
	if src, ok := s.sourceFor(target.Addr()); ok {
		c.Dialer = &net.Dialer{Timeout: timeout, LocalAddr: &net.UDPAddr{IP: src.AsSlice()}}
	}
	if k := s.tsig; k != nil {
		m.SetTsig(k.name, k.algorithm, 300, time.Now().Unix())
		c.TsigSecret = map[string]string{k.name: k.secret}
	}
	ctx, cancel := context.WithTimeout(n.ctx, timeout+time.Second)
	defer cancel()
	r, _, err := c.ExchangeContext(ctx, m, target.String())
	if err != nil {
		return err
	}
	if r.Rcode != dns.RcodeSuccess {
		return rcodeError(r.Rcode)
	}
	return nil
}

// sourceFor returns our listen address to send to dst from: one of the
// same family that is not the unspecified address.
func (s *Server) sourceFor(dst netip.Addr) (netip.Addr, bool) {
	for _, ap := range s.listen {
		a := ap.Addr()
		if !a.IsUnspecified() && a.Is4() == dst.Unmap().Is4() {
			return a, true
		}
	}
	return netip.Addr{}, false
}
