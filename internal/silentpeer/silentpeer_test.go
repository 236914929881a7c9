package silentpeer

import (
	"errors"
	"net"
	"os"
	"testing"
	"time"
)

// TestNeverAnswers: several clients connect, write, and read nothing
// before their own deadline; the peer closes them when its test ends.
func TestNeverAnswers(t *testing.T) {
	var conns []net.Conn
	t.Run("peer", func(t *testing.T) {
		addr := Listen(t)
		for range 3 {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			conns = append(conns, c)
			if _, err := c.Write([]byte("hello?\r\n")); err != nil {
				t.Fatal(err)
			}
			c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			if n, err := c.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("read %d bytes, %v; want nothing until the deadline", n, err)
			}
		}
	})
	// The subtest ended: its cleanup closed the peer's side.
	for i, c := range conns {
		c.SetReadDeadline(time.Now().Add(time.Minute))
		if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("connection %d: %v, want closed by the peer", i, err)
		}
		c.Close()
	}
}
