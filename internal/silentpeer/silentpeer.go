// Package silentpeer is a TCP server for tests that accepts every
// connection and never sends a byte: a database, an SMTP server or any
// other peer that hangs. Clients must bound their own waits; this is
// what the tests that use it check.
package silentpeer

import (
	"net"
	"sync"
	"testing"
)

// Listen starts a silent peer on a free port of 127.0.0.1 and returns its
// host:port. The listener and every connection it accepted are closed
// when the test ends.
func Listen(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu     sync.Mutex
		held   []net.Conn
		closed bool
	)
	accepted := make(chan struct{})
	go func() {
		defer close(accepted)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			if closed {
				c.Close()
			} else {
				held = append(held, c) // never answered
			}
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-accepted
		mu.Lock()
		closed = true
		for _, c := range held {
			c.Close()
		}
		mu.Unlock()
	})
	return ln.Addr().String()
}
