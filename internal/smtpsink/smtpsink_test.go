package smtpsink

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/smtp"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// send is one transaction with net/smtp, the client the reports mailer
// uses.
func send(t *testing.T, addr, from string, to []string, msg []byte) error {
	t.Helper()
	c, err := smtp.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("client.test"); err != nil {
		return err
	}
	if err := c.Mail(from); err != nil {
		return err
	}
	for _, r := range to {
		if err := c.Rcpt(r); err != nil {
			return err
		}
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write(msg); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	return c.Quit()
}

// replyCode is the SMTP code of err, 0 if it is no SMTP reply.
func replyCode(err error) int {
	var te *textproto.Error
	if errors.As(err, &te) {
		return te.Code
	}
	return 0
}

func TestKeepsMessagesAsSent(t *testing.T) {
	s := Start(t)
	msg := []byte("Subject: one\r\n\r\n.leading dot\r\n..two dots\r\nlast line\r\n")
	if err := send(t, s.Addr(), "Bounce@Sender.Test", []string{"a@rcpt.test", "B@rcpt.test"}, msg); err != nil {
		t.Fatal(err)
	}
	got := s.Messages()
	if len(got) != 1 {
		t.Fatalf("%d messages, want 1", len(got))
	}
	m := got[0]
	if m.Helo != "client.test" || m.From != "Bounce@Sender.Test" || strings.Join(m.Rcpts, ",") != "a@rcpt.test,B@rcpt.test" {
		t.Errorf("envelope %q %q %q", m.Helo, m.From, m.Rcpts)
	}
	if !bytes.Equal(m.Data, msg) {
		t.Errorf("data %q, want %q (CRLF kept, dot-stuffing undone)", m.Data, msg)
	}
	if s.Connections() != 1 {
		t.Errorf("%d connections, want 1", s.Connections())
	}
	if n := len(s.Find("two dots")); n != 1 {
		t.Errorf("Find: %d messages", n)
	}
	if m, err := s.Wait("Subject: one", time.Minute); err != nil || m.From != "Bounce@Sender.Test" {
		t.Errorf("Wait: %v %+v", err, m)
	}
	if _, err := s.Wait("absent token", 10*time.Millisecond); err == nil {
		t.Error("Wait found a message that was never sent")
	}
}

func TestFailNext(t *testing.T) {
	for _, tc := range []struct {
		at   Stage
		code int
	}{
		{AtMail, 553},
		{AtRcpt, 450},
		{AtData, 554},
		{AtEndOfData, 451},
	} {
		t.Run(string(tc.at), func(t *testing.T) {
			s := Start(t)
			s.FailNext(2, tc.at, fmt.Sprintf("%d planned failure", tc.code))
			for i := range 2 {
				err := send(t, s.Addr(), "a@sender.test", []string{"b@rcpt.test"}, []byte("x\r\n"))
				if replyCode(err) != tc.code {
					t.Errorf("transaction %d: %v, want a %d reply", i, err, tc.code)
				}
			}
			if err := send(t, s.Addr(), "a@sender.test", []string{"b@rcpt.test"}, []byte("x\r\n")); err != nil {
				t.Errorf("third transaction: %v, want accepted", err)
			}
			if n := len(s.Messages()); n != 1 {
				t.Errorf("%d messages kept, want only the accepted one", n)
			}
		})
	}
}

func TestFailNextZeroCancels(t *testing.T) {
	s := Start(t)
	s.FailNext(1000, AtEndOfData, "554 5.7.1 no")
	if err := send(t, s.Addr(), "a@sender.test", []string{"b@rcpt.test"}, []byte("x\r\n")); replyCode(err) != 554 {
		t.Fatalf("refused transaction: %v", err)
	}
	s.FailNext(0, AtEndOfData, "")
	if err := send(t, s.Addr(), "a@sender.test", []string{"b@rcpt.test"}, []byte("x\r\n")); err != nil {
		t.Fatalf("after cancelling: %v", err)
	}
}

// dialRaw opens a session without a client library, for what one would
// refuse to send.
func dialRaw(t *testing.T, addr string) *textproto.Conn {
	t.Helper()
	c, err := textproto.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, _, err := c.ReadResponse(220); err != nil {
		t.Fatal(err)
	}
	return c
}

// cmd sends a command line and checks the reply's code.
func cmd(t *testing.T, c *textproto.Conn, want int, line string) {
	t.Helper()
	if err := c.PrintfLine("%s", line); err != nil {
		t.Fatal(err)
	}
	if _, msg, err := c.ReadResponse(want); err != nil {
		t.Fatalf("%.40q: %v %s", line, err, msg)
	}
}

// TestMessageTooBig: a message over MaxMessageBytes, in short lines and
// as one line far longer than the reader's buffer, is refused with 552
// and not kept, and the session goes on in step.
func TestMessageTooBig(t *testing.T) {
	const limit = 10000
	s, err := Listen("127.0.0.1:0", Options{MaxMessageBytes: limit})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	c := dialRaw(t, s.Addr())
	cmd(t, c, 250, "EHLO attacker.test")
	for _, body := range []string{
		strings.Repeat("0123456789abcdef\r\n", limit/18+1),
		strings.Repeat("x", 5*limit) + "\r\n",
	} {
		cmd(t, c, 250, "MAIL FROM:<a@sender.test>")
		cmd(t, c, 250, "RCPT TO:<b@rcpt.test>")
		cmd(t, c, 354, "DATA")
		cmd(t, c, 552, body+".")
	}
	cmd(t, c, 250, "MAIL FROM:<a@sender.test>")
	cmd(t, c, 250, "RCPT TO:<b@rcpt.test>")
	cmd(t, c, 354, "DATA")
	cmd(t, c, 250, strings.Repeat("y", limit-2)+"\r\n.")
	if got := s.Messages(); len(got) != 1 || len(got[0].Data) != limit {
		t.Errorf("kept %d messages, want only the last one of %d bytes", len(got), limit)
	}
}

// TestCommandLineTooLong: a command line over maxCommandBytes gets 500
// and the connection is closed.
func TestCommandLineTooLong(t *testing.T) {
	s := Start(t)
	c := dialRaw(t, s.Addr())
	cmd(t, c, 500, "EHLO "+strings.Repeat("h", 2*maxCommandBytes))
	if _, err := c.ReadLine(); err == nil {
		t.Error("the connection stayed open after an over-long command")
	}
}

// TestOutOfOrderCommands: RCPT before MAIL and DATA before RCPT are
// refused, and nothing is kept.
func TestOutOfOrderCommands(t *testing.T) {
	s := Start(t)
	c := dialRaw(t, s.Addr())
	cmd(t, c, 250, "HELO client.test")
	cmd(t, c, 503, "RCPT TO:<b@rcpt.test>")
	cmd(t, c, 250, "MAIL FROM:<a@sender.test>")
	cmd(t, c, 503, "DATA")
	cmd(t, c, 250, "RSET")
	cmd(t, c, 502, "VRFY b")
	cmd(t, c, 221, "QUIT")
	if n := len(s.Messages()); n != 0 {
		t.Errorf("%d messages kept", n)
	}
}

func TestDirKeepsCopies(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "sink")
	s, err := Listen("127.0.0.1:0", Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	for _, body := range []string{"first\r\n", "second\r\n"} {
		if err := send(t, s.Addr(), "a@sender.test", []string{"b@rcpt.test"}, []byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	for name, want := range map[string]string{"001.eml": "first\r\n", "002.eml": "second\r\n"} {
		if b, err := os.ReadFile(filepath.Join(dir, name)); err != nil || string(b) != want {
			t.Errorf("%s: %q, %v; want %q", name, b, err, want)
		}
	}
}

// TestCloseEndsOpenSessions: Close returns although a client holds a
// session open and silent, and later connections are refused.
func TestCloseEndsOpenSessions(t *testing.T) {
	s, err := Listen("127.0.0.1:0", Options{})
	if err != nil {
		t.Fatal(err)
	}
	c := dialRaw(t, s.Addr())
	cmd(t, c, 250, "EHLO client.test")
	s.Close()
	s.Close() // twice is fine
	if _, err := c.ReadLine(); err == nil {
		t.Error("the session is still open after Close")
	}
	if nc, err := net.Dial("tcp", s.Addr()); err == nil {
		nc.Close()
		t.Error("the sink still accepts connections after Close")
	}
}
