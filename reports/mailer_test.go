package reports

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// sinkMessage is one message an smtpSink accepted.
type sinkMessage struct {
	From string
	To   []string
	Data []byte
}

// smtpSink is a small SMTP server for the tests, on 127.0.0.1 with a free
// port. Reply decides the answer to each command (by the 0-based
// connection number and the verb: "MAIL", "RCPT", "DATA", or "." for the
// end of the message); "" is the normal positive answer. With Mute set it
// accepts connections and never says a word.
type smtpSink struct {
	Addr  string
	Reply func(conn int, verb string) string
	Mute  bool

	ln       net.Listener
	mu       sync.Mutex
	conns    int
	open     []net.Conn
	messages []sinkMessage
	wg       sync.WaitGroup
}

func startSMTPSink(t *testing.T, configure func(*smtpSink)) *smtpSink {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &smtpSink{Addr: ln.Addr().String(), ln: ln}
	if configure != nil {
		configure(s)
	}
	s.wg.Add(1)
	go s.serve()
	t.Cleanup(func() {
		ln.Close()
		s.mu.Lock()
		for _, c := range s.open {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

func (s *smtpSink) serve() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		n := s.conns
		s.conns++
		s.open = append(s.open, c)
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer c.Close()
			c.SetDeadline(time.Now().Add(time.Minute))
			s.session(n, c)
		}()
	}
}

// Connections is how many connections the sink accepted.
func (s *smtpSink) Connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns
}

// Messages returns the messages accepted so far.
func (s *smtpSink) Messages() []sinkMessage {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]sinkMessage(nil), s.messages...)
}

func (s *smtpSink) session(n int, c net.Conn) {
	r := textproto.NewReader(bufio.NewReader(c))
	if s.Mute {
		r.ReadLine() // until the client gives up
		return
	}
	say := func(line string) bool {
		_, err := fmt.Fprintf(c, "%s\r\n", line)
		return err == nil
	}
	reply := func(verb, normal string) (string, bool) {
		if s.Reply != nil {
			if r := s.Reply(n, verb); r != "" {
				return r, false
			}
		}
		return normal, true
	}
	say("220 sink.test ESMTP")
	var cur sinkMessage
	for {
		line, err := r.ReadLine()
		if err != nil {
			return
		}
		verb, arg, _ := strings.Cut(line, " ")
		switch strings.ToUpper(verb) {
		case "EHLO", "HELO":
			say("250-sink.test\r\n250 8BITMIME")
		case "MAIL":
			answer, ok := reply("MAIL", "250 ok")
			if ok {
				cur = sinkMessage{From: sinkPath(arg)}
			}
			say(answer)
		case "RCPT":
			answer, ok := reply("RCPT", "250 ok")
			if ok {
				cur.To = append(cur.To, sinkPath(arg))
			}
			say(answer)
		case "DATA":
			answer, ok := reply("DATA", "354 go ahead")
			say(answer)
			if !ok {
				continue
			}
			data, err := r.ReadDotBytes()
			if err != nil {
				return
			}
			answer, ok = reply(".", "250 queued")
			if ok {
				cur.Data = data
				s.mu.Lock()
				s.messages = append(s.messages, cur)
				s.mu.Unlock()
			}
			say(answer)
		case "RSET", "NOOP":
			say("250 ok")
		case "QUIT":
			say("221 bye")
			return
		default:
			say("502 not implemented")
		}
	}
}

// sinkPath extracts the address of "FROM:<a@b> BODY=8BITMIME".
func sinkPath(arg string) string {
	_, rest, _ := strings.Cut(arg, "<")
	addr, _, _ := strings.Cut(rest, ">")
	return addr
}

func TestSMTPMailer(t *testing.T) {
	msg := []byte("Subject: test\r\n\r\n.leading dot\r\nbody\r\n")
	tests := []struct {
		name      string
		reply     func(int, string) string
		wantErr   bool
		temporary bool
	}{
		{"accepted", nil, false, false},
		{"4xx to RCPT is temporary", func(_ int, v string) string { return map[string]string{"RCPT": "450 4.2.0 mailbox busy"}[v] }, true, true},
		{"4xx at end of data is temporary", func(_ int, v string) string { return map[string]string{".": "451 4.3.0 try later"}[v] }, true, true},
		{"5xx to RCPT is permanent", func(_ int, v string) string { return map[string]string{"RCPT": "550 5.1.1 no such user"}[v] }, true, false},
		{"5xx to MAIL is permanent", func(_ int, v string) string { return map[string]string{"MAIL": "553 5.7.1 sender refused"}[v] }, true, false},
		{"5xx at end of data is permanent", func(_ int, v string) string { return map[string]string{".": "552 5.3.4 too big"}[v] }, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sink := startSMTPSink(t, func(s *smtpSink) { s.Reply = tt.reply })
			err := NewSMTPMailer(sink.Addr, "mx.receiver.example").Send(context.Background(), "reports@mx.receiver.example", []string{"dmarc@example.com"}, msg)
			if tt.wantErr {
				if err == nil {
					t.Fatal("no error")
				}
				if errors.Is(err, ErrTemporary) != tt.temporary {
					t.Fatalf("errors.Is(%v, ErrTemporary) = %v, want %v", err, !tt.temporary, tt.temporary)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := sink.Messages()
			if len(got) != 1 || got[0].From != "reports@mx.receiver.example" || strings.Join(got[0].To, ",") != "dmarc@example.com" {
				t.Fatalf("sink got %+v", got)
			}
			if want := bytes.ReplaceAll(msg, []byte("\r\n"), []byte("\n")); !bytes.Equal(got[0].Data, want) {
				t.Errorf("message arrived as %q, want %q", got[0].Data, want)
			}
		})
	}
}

// TestSMTPMailerUnreachable: a refused connection and a server that never
// answers (within the caller's deadline) are temporary.
func TestSMTPMailerUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	mute := startSMTPSink(t, func(s *smtpSink) { s.Mute = true })
	for name, addr := range map[string]string{"refused": closed, "silent server": mute.Addr} {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			defer cancel()
			err := NewSMTPMailer(addr, "mx.example").Send(ctx, "a@mx.example", []string{"b@example.com"}, []byte("x\r\n"))
			if !errors.Is(err, ErrTemporary) {
				t.Fatalf("got %v, want a temporary error", err)
			}
		})
	}
}

// TestMailersRefuseHostileEnvelope: addresses that could inject SMTP
// commands or command-line options never reach the MTA.
func TestMailersRefuseHostileEnvelope(t *testing.T) {
	sink := startSMTPSink(t, nil)
	script, argvFile, _ := sendmailScript(t, 0)
	bad := [][2]string{
		{"a@mx.example\r\nRCPT TO:<victim@example.net>", "b@example.com"},
		{"a@mx.example", "b@example.com>\r\nDATA"},
		{"a@mx.example", "-oQ/tmp/x@example.com"},
		{"-X/tmp/log@mx.example", "b@example.com"},
		{"a@mx.example", ""},
	}
	for _, m := range []Mailer{NewSMTPMailer(sink.Addr, "mx.example"), NewSendmailMailer(script)} {
		for _, env := range bad {
			if err := m.Send(context.Background(), env[0], []string{env[1]}, []byte("x\r\n")); err == nil {
				t.Errorf("%T accepted from %q to %q", m, env[0], env[1])
			}
		}
	}
	if sink.Connections() != 0 {
		t.Errorf("the SMTP mailer connected %d times for hostile envelopes", sink.Connections())
	}
	if _, err := os.Stat(argvFile); err == nil {
		t.Error("sendmail ran for a hostile envelope")
	}
}

// sendmailScript writes a sendmail stand-in that records its arguments
// (one a line) and standard input and exits with status.
func sendmailScript(t *testing.T, status int) (script, argvFile, stdinFile string) {
	t.Helper()
	dir := t.TempDir()
	argvFile, stdinFile = filepath.Join(dir, "argv"), filepath.Join(dir, "stdin")
	script = filepath.Join(dir, "sendmail")
	body := fmt.Sprintf("#!/bin/sh\nprintf '%%s\\n' \"$@\" > %q\ncat > %q\necho 'sendmail says hi' >&2\nexit %d\n", argvFile, stdinFile, status)
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	return script, argvFile, stdinFile
}

func TestSendmailMailer(t *testing.T) {
	msg := []byte("Subject: test\r\n\r\nbody\r\n")
	tests := []struct {
		status    int
		wantErr   bool
		temporary bool
	}{
		{0, false, false},
		{75, true, true},
		{1, true, false},
		{67, true, false}, // EX_NOUSER
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint("exit ", tt.status), func(t *testing.T) {
			script, argvFile, stdinFile := sendmailScript(t, tt.status)
			err := NewSendmailMailer(script).Send(context.Background(), "reports@mx.example", []string{"a@example.com", "b@example.net"}, msg)
			argv, rerr := os.ReadFile(argvFile)
			if rerr != nil {
				t.Fatalf("the script did not run: %v", rerr)
			}
			wantEq(t, string(argv), "-i\n-f\nreports@mx.example\n--\na@example.com\nb@example.net\n")
			stdin, _ := os.ReadFile(stdinFile)
			if !bytes.Equal(stdin, msg) {
				t.Errorf("stdin %q, want %q", stdin, msg)
			}
			if !tt.wantErr {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				t.Fatal("no error")
			}
			if errors.Is(err, ErrTemporary) != tt.temporary {
				t.Errorf("errors.Is(%v, ErrTemporary) = %v, want %v", err, !tt.temporary, tt.temporary)
			}
			if !strings.Contains(err.Error(), "sendmail says hi") {
				t.Errorf("error %q lacks the command's output", err)
			}
		})
	}
	t.Run("missing command", func(t *testing.T) {
		err := NewSendmailMailer(filepath.Join(t.TempDir(), "nope")).Send(context.Background(), "a@mx.example", []string{"b@example.com"}, msg)
		if err == nil || errors.Is(err, ErrTemporary) {
			t.Errorf("got %v, want a permanent error", err)
		}
	})
	t.Run("hanging command times out", func(t *testing.T) {
		script := filepath.Join(t.TempDir(), "sendmail")
		if err := os.WriteFile(script, []byte("#!/bin/sh\nexec sleep 60\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		err := NewSendmailMailer(script).Send(ctx, "a@mx.example", []string{"b@example.com"}, msg)
		if !errors.Is(err, ErrTemporary) {
			t.Errorf("got %v, want a temporary error", err)
		}
	})
}
