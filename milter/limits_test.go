package milter

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"net"
	"os"
	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/authmilter/authmilter/internal/miltertest"
)

// heapInUse returns the live heap after a collection.
func heapInUse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// negotiate dials e and completes option negotiation as Postfix does.
func negotiate(t testing.TB, e *env) net.Conn {
	t.Helper()
	return negotiateWith(t, e, optneg)
}

// negotiateWith dials e and completes option negotiation with the OPTNEG
// packet opt.
func negotiateWith(t testing.TB, e *env, opt []byte) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	c.Write(opt)
	if r, err := readReply(c, 10*time.Second); err != nil || r.code != 'O' {
		t.Fatalf("negotiation: %v %v", r, err)
	}
	return c
}

// Finding 1: 500 header packets of 1 MB each grew the heap to 541 MB (the
// session's copy and go-milter's own). Now what is kept is bounded by
// limits.max_header_bytes, whatever arrives.
func TestHeaderFloodMemoryBound(t *testing.T) {
	e := start(t, "")
	base := heapInUse()
	// Connect, MAIL, RCPT and EOH answered (their SMFIP_NR_* not offered):
	// the EOH reply says that every header field has been handled.
	c := negotiateWith(t, e, packet('O', binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil,
		6), 0x1ff), 0x1fffff&^uint32(allNoReply&^gomilter.OptNoHeaderReply))))
	defer c.Close()
	w := bufio.NewWriterSize(c, 1<<20)
	for _, cmd := range []string{"connect 198.51.100.7", "mail <x@example.com>", "rcpt <postmaster@test.example>"} {
		b, _ := streamPackets(cmd)
		w.Write(b)
	}
	big, _ := streamPackets("bigheader X-Big 1000000")
	for i := 0; i < 500; i++ {
		w.Write(big)
	}
	eoh, _ := streamPackets("eoh")
	w.Write(eoh)
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 4; i++ { // connect, mail, rcpt, eoh
		if r, err := readReply(c, 60*time.Second); err != nil || r.code != 'c' {
			t.Fatalf("reply %d: %v %v", i, r, err)
		}
	}
	// Every header field has been handled by now, and the transaction is
	// still open: this is the peak.
	grown := int64(heapInUse()) - int64(base)
	t.Logf("heap grew by %.1f MiB after 500 MB of header fields", float64(grown)/(1<<20))
	if grown > 32<<20 {
		t.Errorf("heap grew by %d MiB, want < 32 MiB", grown>>20)
	}
	eom, _ := streamPackets("eom")
	c.Write(eom)
	for {
		r, err := readReply(c, 30*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if r.code == 'y' {
			if !bytes.HasPrefix(r.data, []byte("552 5.3.4")) {
				t.Fatalf("reply %q, want 552 5.3.4", r.data)
			}
			break
		}
	}
}

// Finding 3: a client that claims a 1 MiB packet and sends nothing made the
// daemon allocate the whole claim (1,000 such connections: +1 GB).
func TestClaimedLengthMemoryBound(t *testing.T) {
	const conns = 800
	e := start(t, "")
	base := heapInUse()
	var cs []net.Conn
	defer func() {
		for _, c := range cs {
			c.Close()
		}
	}()
	claim := append(binary.BigEndian.AppendUint32(nil, 1<<20), 'B', 'x')
	for i := 0; i < conns; i++ {
		c := negotiate(t, e)
		cs = append(cs, c)
		c.Write(claim)
	}
	// The daemon reads the claims as they come; take the largest heap seen
	// over a moment.
	var peak int64
	for i := 0; i < 10; i++ {
		peak = max(peak, int64(heapInUse())-int64(base))
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("heap grew by %.1f MiB for %d connections claiming 1 MiB each", float64(peak)/(1<<20), conns)
	if peak > 64<<20 {
		t.Errorf("heap grew by %d MiB, want < 64 MiB (%d KiB per connection)", peak>>20, peak/conns>>10)
	}
}

// Issue 14: a connection held the whole body chunk being read (64 KiB
// from Postfix), so 64 connections sending large messages kept 4 MiB of
// body in the heap, plus the garbage of growing each buffer. Body chunks
// are now handed on from the read buffer as they arrive.
func TestBodyChunkMemoryBound(t *testing.T) {
	const conns = 200
	e := start(t, "")
	var head []byte
	for _, cmd := range []string{"connect 127.0.0.1", "mail <a@example.com>", "rcpt <b@example.org>", "header From: a@example.com", "eoh"} {
		b, err := streamPackets(cmd)
		if err != nil {
			t.Fatal(err)
		}
		head = append(head, b...)
	}
	// A 64 KiB chunk of which 60 KiB arrive.
	chunk := append(binary.BigEndian.AppendUint32(nil, 1+64<<10), 'B')
	chunk = append(chunk, bytes.Repeat([]byte("a line of the body\r\n"), 60<<10/20)...)
	base := heapInUse()
	var cs []net.Conn
	defer func() {
		for _, c := range cs {
			c.Close()
		}
	}()
	for i := 0; i < conns; i++ {
		c := negotiate(t, e)
		cs = append(cs, c)
		c.Write(head)
		c.Write(chunk)
	}
	var peak int64
	for i := 0; i < 10; i++ {
		peak = max(peak, int64(heapInUse())-int64(base))
		time.Sleep(50 * time.Millisecond)
	}
	perConn := peak / conns
	t.Logf("heap grew by %.1f MiB for %d connections in the middle of a 64 KiB body chunk: %d KiB each", float64(peak)/(1<<20), conns, perConn>>10)
	if perConn > 40<<10 {
		t.Errorf("%d KiB per connection in the middle of a body chunk, want < 40 KiB", perConn>>10)
	}
}

// flakyListener fails Accept with EMFILE a number of times, as a process
// out of descriptors does.
type flakyListener struct {
	net.Listener
	failures atomic.Int32
}

func (l *flakyListener) Accept() (net.Conn, error) {
	if l.failures.Add(-1) >= 0 {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return l.Listener.Accept()
}

// Finding 2: the daemon ended on the first failed accept (descriptor
// exhaustion). It now retries with backoff and serves again.
func TestAcceptErrorsAreRetried(t *testing.T) {
	e := start(t, "")
	// A second server on the same policy, whose listener fails first.
	srv := &Server{Policy: e.pol.Load, Logger: e.srv.Logger}
	if err := srv.Listen([]string{"inet:127.0.0.1:0"}, 0o600, ""); err != nil {
		t.Fatal(err)
	}
	fl := &flakyListener{Listener: srv.listeners[0]}
	fl.failures.Store(8)
	srv.listeners[0] = fl
	served := make(chan error, 1)
	go func() { served <- srv.Serve() }()
	defer srv.Close()
	tx := miltertest.Transaction{ClientIP: "127.0.0.1", MailFrom: "a@example.com", RcptTo: []string{"b@example.org"}, QueueID: "AFTEREMFILE"}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := miltertest.Run(ctx, "tcp", srv.Addrs()[0].String(), tx, []byte("From: a@example.com\r\n\r\nbody\r\n"))
	if err != nil {
		t.Fatalf("not served after accept errors: %v", err)
	}
	if n := bytes.Count(res.Message, []byte("DKIM-Signature:")); n != 2 {
		t.Fatalf("%d signatures, want 2", n)
	}
	select {
	case err := <-served:
		t.Fatalf("Serve returned: %v", err)
	default:
	}
	if fl.failures.Load() >= 0 {
		t.Fatalf("the listener's failures were not all seen")
	}
	if !bytes.Contains([]byte(e.logs.String()), []byte("accept failed; retrying")) {
		t.Errorf("accept failure not logged")
	}
}

// Finding 2: connections beyond limits.max_connections wait, and are served
// as soon as one closes.
func TestMaxConnections(t *testing.T) {
	e := start(t, "[limits]\nmax_connections = 3\n")
	var open []net.Conn
	for i := 0; i < 3; i++ {
		open = append(open, negotiate(t, e))
	}
	defer func() {
		for _, c := range open {
			c.Close()
		}
	}()
	extra, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	extra.Write(optneg)
	if r, err := readReply(extra, 500*time.Millisecond); err == nil {
		t.Fatalf("fourth connection served over the limit of 3: %q", r.code)
	}
	open[0].Close()
	open = open[1:]
	if r, err := readReply(extra, 20*time.Second); err != nil || r.code != 'O' {
		t.Fatalf("fourth connection not served after one closed: %v %v", r, err)
	}
	if !bytes.Contains([]byte(e.logs.String()), []byte("connection limit reached")) {
		t.Errorf("limit not logged:\n%s", e.logs.String())
	}
}
