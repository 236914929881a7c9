package reports

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/authmilter/authmilter/internal/silentpeer"
	"github.com/authmilter/authmilter/internal/smtpsink"
)

func TestSMTPMailer(t *testing.T) {
	msg := []byte("Subject: test\r\n\r\n.leading dot\r\nbody\r\n")
	tests := []struct {
		name      string
		failAt    smtpsink.Stage // with failWith: the sink's reply there
		failWith  string
		wantErr   bool
		temporary bool
	}{
		{"accepted", "", "", false, false},
		{"4xx to RCPT is temporary", smtpsink.AtRcpt, "450 4.2.0 mailbox busy", true, true},
		{"4xx at end of data is temporary", smtpsink.AtEndOfData, "451 4.3.0 try later", true, true},
		{"5xx to RCPT is permanent", smtpsink.AtRcpt, "550 5.1.1 no such user", true, false},
		{"5xx to MAIL is permanent", smtpsink.AtMail, "553 5.7.1 sender refused", true, false},
		{"5xx at end of data is permanent", smtpsink.AtEndOfData, "552 5.3.4 too big", true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sink := smtpsink.Start(t)
			sink.FailNext(1, tt.failAt, tt.failWith)
			err := NewSMTPMailer(sink.Addr(), "mx.receiver.example").Send(context.Background(), "reports@mx.receiver.example", []string{"dmarc@example.com"}, msg)
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
			if len(got) != 1 || got[0].From != "reports@mx.receiver.example" || strings.Join(got[0].Rcpts, ",") != "dmarc@example.com" {
				t.Fatalf("sink got %+v", got)
			}
			if !bytes.Equal(got[0].Data, msg) {
				t.Errorf("message arrived as %q, want %q", got[0].Data, msg)
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
	for name, addr := range map[string]string{"refused": closed, "silent server": silentpeer.Listen(t)} {
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
	sink := smtpsink.Start(t)
	script, argvFile, _ := sendmailScript(t, 0)
	bad := [][2]string{
		{"a@mx.example\r\nRCPT TO:<victim@example.net>", "b@example.com"},
		{"a@mx.example", "b@example.com>\r\nDATA"},
		{"a@mx.example", "-oQ/tmp/x@example.com"},
		{"-X/tmp/log@mx.example", "b@example.com"},
		{"a@mx.example", ""},
	}
	for _, m := range []Mailer{NewSMTPMailer(sink.Addr(), "mx.example"), NewSendmailMailer(script)} {
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
