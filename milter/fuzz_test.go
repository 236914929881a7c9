package milter

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/authmilter/authmilter/internal/miltertest"
)

// packet frames one milter command.
func packet(code byte, data []byte) []byte {
	out := binary.BigEndian.AppendUint32(nil, uint32(len(data)+1))
	return append(append(out, code), data...)
}

// optneg is what Postfix 3.7 sends first.
var optneg = packet('O', binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, 6), 0x1ff), 0x1fffff))

// FuzzSession sends arbitrary commands after a valid negotiation: whatever
// an MTA (or anything that connects) sends, the daemon must not crash, must
// not keep a transaction open after the connection is gone, and must go on
// signing for the next client.
func FuzzSession(f *testing.F) {
	seeds := [][]byte{
		append(packet('C', []byte("host\x004\x00\x19127.0.0.1\x00")), packet('M', []byte("<a@example.com>\x00"))...),
		packet('M', []byte("<a@example.com>\x00")),
		append(packet('M', []byte("<a@example.com>\x00")), append(packet('L', []byte("From\x00 a@example.com\x00")), append(packet('N', nil), append(packet('B', []byte("body\r\n")), packet('E', nil)...)...)...)...),
		append(packet('L', []byte("From\x00")), packet('E', nil)...),
		append(packet('D', []byte("Mi\x00Q1\x00{auth_authen}\x00")), packet('M', []byte("\x00"))...),
		append(packet('B', bytes.Repeat([]byte("x"), 100)), packet('A', nil)...),
		{0, 0, 0, 0},
		{0xff, 0xff, 0xff, 0xff, 'B'},
	}
	for _, s := range seeds {
		f.Add(s)
	}
	e := start(f, "")
	// The fuzzer's own log lines are noise here.
	e.srv.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	f.Fuzz(func(t *testing.T, cmds []byte) {
		c, err := net.Dial("tcp", e.addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(2 * time.Second))
		c.Write(optneg)
		c.Write(cmds)
		// End of input, as when an MTA goes away; read what comes back
		// until the daemon closes its side.
		c.(*net.TCPConn).CloseWrite()
		io.Copy(io.Discard, io.LimitReader(c, 1<<20))
		c.Close()

		deadline := time.Now().Add(2 * time.Second)
		for e.srv.inflight.Load() != 0 {
			if time.Now().After(deadline) {
				t.Fatalf("%d transactions still open after the connection closed", e.srv.inflight.Load())
			}
			time.Sleep(time.Millisecond)
		}
		tx := miltertest.Transaction{ClientIP: "127.0.0.1", MailFrom: "a@example.com", RcptTo: []string{"b@example.org"}, QueueID: "AFTER"}
		res, err := miltertest.Run(context.Background(), "tcp", e.addr, tx, []byte("From: a@example.com\r\n\r\nbody\r\n"))
		if err != nil || bytes.Count(res.Message, []byte("DKIM-Signature:")) != 2 {
			t.Fatalf("next client not served: %v", err)
		}
	})
}
