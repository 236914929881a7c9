package testdns

import (
	"errors"
	"math/rand/v2"
	"net"
	"strings"
	"syscall"
	"testing"

	"github.com/miekg/dns"
)

// Option configures Start.
type Option func(*options)

type options struct {
	addr string
}

// WithAddr makes Start listen on addr instead of 127.0.0.1 with a random
// free port, for example on FreeLoopback53's address for peers that can only
// talk to port 53.
func WithAddr(addr string) Option {
	return func(o *options) { o.addr = addr }
}

// Start starts a server for the test and shuts it down when the test ends.
// It fails the test if the server cannot listen.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	o := options{addr: "127.0.0.1:0"}
	for _, opt := range opts {
		opt(&o)
	}
	s, err := New(o.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s
}

// AddZoneText parses zone-file text with the initial origin (see ParseZone)
// and adds its records; it fails the test on a syntax error.
func (s *Server) AddZoneText(t testing.TB, origin, text string) {
	t.Helper()
	if err := s.LoadZone(strings.NewReader(text), origin, "zone text for "+origin); err != nil {
		t.Fatal(err)
	}
}

// AddZoneFile parses the zone file at path and adds its records; it fails
// the test if the file cannot be read or parsed.
func (s *Server) AddZoneFile(t testing.TB, path string) {
	t.Helper()
	if err := s.LoadZoneFile(path); err != nil {
		t.Fatal(err)
	}
}

// AddRR parses one record in zone-file syntax (relative names are relative
// to the root; the TTL defaults to 3600) and adds it; it fails the test on a
// syntax error.
func (s *Server) AddRR(t testing.TB, rr string) {
	t.Helper()
	r, err := dns.NewRR(rr)
	if err != nil {
		t.Fatalf("testdns: parse record %q: %v", rr, err)
	}
	if r == nil {
		t.Fatalf("testdns: parse record %q: no record", rr)
	}
	s.Add(r)
}

// FreeLoopback53 returns "127.A.B.C:53" for a random loopback address other
// than 127.0.0.1 and 127.0.0.53 whose port 53 is free for both UDP and TCP
// (checked by binding). It skips the test when binding to port 53 is not
// permitted (not root) and fails it when no free address is found.
//
// Another process could take the port between the check and Start; with
// 16 million addresses to choose from, that does not happen in practice.
func FreeLoopback53(t testing.TB) string {
	t.Helper()
	var lastErr error
	for range 50 {
		ip := net.IPv4(127, byte(rand.IntN(256)), byte(rand.IntN(256)), byte(1+rand.IntN(254)))
		// 127.53/16 and 127.54/16 belong to internal/dnstopo's and
		// publishtest's DNS worlds, which other packages run meanwhile.
		if ip.Equal(net.IPv4(127, 0, 0, 1)) || ip.Equal(net.IPv4(127, 0, 0, 53)) || ip[13] == 53 || ip[13] == 54 {
			continue
		}
		addr := net.JoinHostPort(ip.String(), "53")
		err := probe(addr)
		if err == nil {
			return addr
		}
		if errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM) {
			t.Fatalf("testdns: cannot bind port 53: run the tests as root (or with CAP_NET_BIND_SERVICE): %v", err)
		}
		lastErr = err
	}
	t.Fatalf("testdns: no free port 53 on 127.0.0.0/8: %v", lastErr)
	return ""
}

// probe checks that addr can be bound for UDP and TCP.
func probe(addr string) error {
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return err
	}
	defer pc.Close()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	return l.Close()
}
