// Package milter is the daemon side of authmilter: it listens on unix and
// inet sockets, speaks the milter protocol through go-milter, collects each
// transaction (client, HELO, macros, envelope, header fields in order, body
// stream) and applies the policy's decision as milter actions. It makes no
// authentication decision of its own.
package milter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/authmilter/authmilter/policy"
)

// Observer is told what happens, for metrics. Its methods are called from
// session goroutines and must be safe for concurrent use.
type Observer interface {
	// MessageDone is called once per finished message with the decision
	// applied; failed is true when applying it hit an internal error.
	MessageDone(d *policy.Decision, failed bool)
	// ConnectionEvent is called with "open" and "close" for every MTA
	// connection, and with other events ("refused_limit", "timeout",
	// "accept_error", "bad_packet") as they happen.
	ConnectionEvent(event string)
}

// Server serves milter connections with the policy snapshot that Policy
// returns at the start of each transaction.
type Server struct {
	// Policy returns the current snapshot; a transaction calls it once.
	Policy func() *policy.Policy
	// Logger receives the per-message lines and errors.
	Logger *slog.Logger
	// Observer, if set, is told about every finished message.
	Observer Observer

	mu        sync.Mutex
	listeners []net.Listener
	servers   []*gomilter.Server
	inflight  atomic.Int64 // open transactions
	conns     atomic.Int64 // open MTA connections (and slots being accepted)
	closing   atomic.Bool
	chanOnce  sync.Once
	freed     chan struct{} // a connection closed
	closed    chan struct{} // Close was called
	closeOnce sync.Once
}

// Options negotiated with the MTA: we add, change and delete header fields
// and quarantine; we need no DATA or unknown-command events; no command
// before the end of the message is answered (the SMFIP_NR_* flags of
// allNoReply: one round trip per message instead of one per command, see
// session.reply); header fields carry their leading space
// (SMFIP_HDR_LEADSPC) so that they can be rebuilt byte for byte. Flags the
// MTA does not offer are masked off by negotiatingConn, and the commands
// are then answered as before.
const (
	actions  = gomilter.OptAddHeader | gomilter.OptChangeHeader | gomilter.OptQuarantine
	protocol = gomilter.OptNoUnknown | gomilter.OptNoData | allNoReply | gomilter.OptHeaderLeadingSpace
)

// Listen opens every socket in specs ("unix:/path", "inet:host:port"). Unix
// sockets get mode perm and, if group is set, that group; a stale socket
// file is replaced.
func (s *Server) Listen(specs []string, perm os.FileMode, group string) error {
	for _, spec := range specs {
		network, addr, err := policy.ParseListen(spec)
		if err != nil {
			return err
		}
		var ln net.Listener
		if network == "unix" {
			ln, err = listenUnix(addr, perm, group)
		} else {
			ln, err = net.Listen("tcp", addr)
		}
		if err != nil {
			s.Close()
			return fmt.Errorf("listen %s: %w", spec, err)
		}
		s.mu.Lock()
		s.listeners = append(s.listeners, ln)
		s.mu.Unlock()
	}
	return nil
}

func listenUnix(path string, perm os.FileMode, group string) (net.Listener, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("%s exists and is not a socket", path)
		}
		// A live daemon answers on it; a stale file from a crash does not.
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("%s is in use by another process", path)
		}
		os.Remove(path)
	}
	// Like systemd's RuntimeDirectory=, create the socket's folder when
	// it is missing (it lives under /run, which is emptied at boot).
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(true)
	if err := os.Chmod(path, perm); err != nil {
		ln.Close()
		return nil, fmt.Errorf("chmod %s: %w", path, err)
	}
	if group != "" {
		g, err := user.LookupGroup(group)
		if err != nil {
			ln.Close()
			return nil, fmt.Errorf("socket group: %w", err)
		}
		gid, _ := strconv.Atoi(g.Gid)
		if err := os.Chown(path, -1, gid); err != nil {
			ln.Close()
			return nil, fmt.Errorf("chown %s: %w", path, err)
		}
	}
	return ln, nil
}

// Addrs returns the addresses actually listened on (useful with port 0).
func (s *Server) Addrs() []net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []net.Addr
	for _, ln := range s.listeners {
		out = append(out, ln.Addr())
	}
	return out
}

// Serve serves every listener until Close; it returns the first error that
// is not a normal shutdown.
func (s *Server) Serve() error {
	s.mu.Lock()
	lns := append([]net.Listener(nil), s.listeners...)
	s.mu.Unlock()
	errc := make(chan error, len(lns))
	for _, ln := range lns {
		tl := &trackingListener{Listener: ln, srv: s}
		ms := &gomilter.Server{
			Actions:  actions,
			Protocol: protocol,
			// go-milter calls NewMilter right after Accept in the same
			// goroutine, so the conn that Accept just returned is this
			// session's.
			NewMilter: func() gomilter.Milter {
				return s.newSession(tl.last.Load())
			},
		}
		s.mu.Lock()
		s.servers = append(s.servers, ms)
		s.mu.Unlock()
		go func() {
			err := ms.Serve(tl)
			if s.closing.Load() || errors.Is(err, gomilter.ErrServerClosed) || errors.Is(err, net.ErrClosed) {
				err = nil
			}
			errc <- err
		}()
	}
	var first error
	for range lns {
		if err := <-errc; err != nil && first == nil {
			first = err
			s.Close()
		}
	}
	return first
}

// Close stops accepting connections. Open transactions continue; use
// Shutdown to wait for them.
func (s *Server) Close() {
	s.closing.Store(true)
	s.closeOnce.Do(func() { close(s.closedChan()) })
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ln := range s.listeners {
		ln.Close()
	}
}

// Shutdown stops accepting and waits until every open transaction has
// finished or ctx is done.
func (s *Server) Shutdown(ctx context.Context) error {
	s.Close()
	// Polled rather than a WaitGroup: a connection still open may start a
	// new transaction while we wait, which WaitGroup forbids.
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for s.inflight.Load() > 0 {
		select {
		case <-tick.C:
		case <-ctx.Done():
			return fmt.Errorf("shutdown: %d transactions still open: %w", s.inflight.Load(), ctx.Err())
		}
	}
	// The MTA still owes the end of its exchange (Postfix sends two ABORTs
	// after each message, then QUIT): let it, briefly, so that it does not
	// see a broken connection. Idle connections are not waited for.
	linger := time.NewTimer(shutdownLinger)
	defer linger.Stop()
	for s.conns.Load() > 0 {
		select {
		case <-tick.C:
		case <-linger.C:
			return nil
		case <-ctx.Done():
			return nil
		}
	}
	return nil
}

// shutdownLinger is how long Shutdown lets connections wind down after the
// last transaction ended.
const shutdownLinger = time.Second

// trackingListener wraps accepted connections in negotiatingConn and
// remembers the last one for NewMilter. Its Accept never fails while the
// listener is open: go-milter's Serve returns on the first Accept error, so
// a temporary failure (descriptor exhaustion: "accept4: too many open
// files") would otherwise end the daemon.
type trackingListener struct {
	net.Listener
	srv  *Server
	last atomic.Pointer[negotiatingConn]
}

// Backoff after a failed accept, as net/http does: from 5 ms doubling up to
// 1 s, so the daemon serves again as soon as descriptors are free.
const (
	acceptBackoffMin = 5 * time.Millisecond
	acceptBackoffMax = time.Second
)

func (l *trackingListener) Accept() (net.Conn, error) {
	var backoff time.Duration
	var failedSince time.Time
	for {
		if err := l.srv.reserveSlot(); err != nil {
			return nil, err
		}
		c, err := l.Listener.Accept()
		if err != nil {
			l.srv.connClosed()
			if l.srv.closing.Load() || errors.Is(err, net.ErrClosed) {
				return nil, err
			}
			l.srv.event("accept_error")
			if backoff == 0 {
				backoff = acceptBackoffMin
				failedSince = time.Now()
				l.srv.Logger.Error("accept failed; retrying", "listener", l.Addr().String(), "error", err.Error())
			} else {
				backoff = min(2*backoff, acceptBackoffMax)
			}
			if !l.srv.sleep(backoff) {
				return nil, net.ErrClosed
			}
			continue
		}
		if backoff != 0 {
			l.srv.Logger.Info("accepting again", "listener", l.Addr().String(), "after", time.Since(failedSince).Round(time.Millisecond).String())
		}
		nc := &negotiatingConn{Conn: c, srv: l.srv}
		l.last.Store(nc)
		l.srv.event("open")
		return nc, nil
	}
}

// limits returns the limits of the current policy snapshot (they apply to
// the next packet after a reload).
func (s *Server) limits() policy.LimitsConfig {
	if s.Policy != nil {
		if p := s.Policy(); p != nil {
			return p.Config().Limits
		}
	}
	return policy.DefaultConfig().Limits
}

// event tells the observer about a connection event.
func (s *Server) event(name string) {
	if s.Observer != nil {
		s.Observer.ConnectionEvent(name)
	}
}

// reserveSlot takes one of limits.max_connections for the connection about
// to be accepted, waiting (the MTA's connection stays in the listen
// backlog) while all are in use. It fails only when the server closes.
func (s *Server) reserveSlot() error {
	waiting := false
	for {
		if s.closing.Load() {
			return net.ErrClosed
		}
		n, max := s.conns.Load(), int64(s.limits().MaxConnections)
		if n < max {
			if s.conns.CompareAndSwap(n, n+1) {
				if waiting {
					s.Logger.Info("below the connection limit again; accepting", "open", n)
				}
				return nil
			}
			continue
		}
		if !waiting {
			waiting = true
			s.event("refused_limit")
			s.Logger.Warn("connection limit reached; new connections wait", "limit", max)
		}
		// The tick catches a limit raised by a reload.
		select {
		case <-s.slotFreed():
		case <-s.closedChan():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// connClosed releases a connection's slot.
func (s *Server) connClosed() {
	s.conns.Add(-1)
	select {
	case s.slotFreed() <- struct{}{}:
	default:
	}
}

func (s *Server) slotFreed() chan struct{} {
	s.initChans()
	return s.freed
}

// closedChan is closed by Close.
func (s *Server) closedChan() chan struct{} {
	s.initChans()
	return s.closed
}

// initChans makes the server's channels: a Server is a plain struct
// literal, with no constructor.
func (s *Server) initChans() {
	s.chanOnce.Do(func() {
		s.freed = make(chan struct{}, 1)
		s.closed = make(chan struct{})
	})
}

// sleep waits d or until the server closes; false means it closed.
func (s *Server) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return !s.closing.Load()
	case <-s.closedChan():
		return false
	}
}
