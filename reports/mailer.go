package reports

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/smtp"
	"net/textproto"
	"os/exec"
	"strings"
	"time"
)

// ErrTemporary marks a failure that may pass if tried again later: an MTA
// that answered 4xx or could not be reached, a sendmail that exited with
// EX_TEMPFAIL, a DNS lookup that timed out. Check with errors.Is.
var ErrTemporary = errors.New("temporary failure")

// Mailer hands one message to the MTA, for the envelope sender from and
// the recipients to.
type Mailer interface {
	Send(ctx context.Context, from string, to []string, msg []byte) error
}

// mailTimeout bounds one hand-off to the MTA when the context has no
// earlier deadline: a local MTA answers in seconds, and a stuck one must
// not hold a claim forever.
const mailTimeout = 5 * time.Minute

// NewSMTPMailer returns a Mailer that talks SMTP to addr (host:port) with
// net/smtp, greeting with EHLO helo. When the server offers STARTTLS and
// addr is not a loopback address, the session is encrypted and the
// server's certificate checked against its host name; on loopback (the
// local MTA, the usual case) it stays in clear text, as a self-signed
// certificate there is common and the traffic never leaves the host.
// A 4xx reply, a connection error or a timeout is temporary
// (errors.Is(err, ErrTemporary)); a 5xx reply is permanent. One hand-off
// takes at most 5 minutes, or less when ctx says so.
func NewSMTPMailer(addr, helo string) Mailer {
	return &smtpMailer{addr: addr, helo: helo}
}

type smtpMailer struct {
	addr, helo string
}

func (m *smtpMailer) Send(ctx context.Context, from string, to []string, msg []byte) error {
	if err := checkEnvelope(from, to); err != nil {
		return fmt.Errorf("reports: smtp %s: %w", m.addr, err)
	}
	host, _, err := net.SplitHostPort(m.addr)
	if err != nil {
		return fmt.Errorf("reports: smtp %s: %w", m.addr, err)
	}
	ctx, cancel := context.WithTimeout(ctx, mailTimeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", m.addr)
	if err != nil {
		return fmt.Errorf("%w: reports: smtp %s: %w", ErrTemporary, m.addr, err)
	}
	defer conn.Close()
	// net/smtp has no timeouts of its own: the connection's deadline is
	// the context's, and a cancel ends any read or write at once.
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if err := m.session(conn, host, from, to, msg); err != nil {
		return smtpError(ctx, m.addr, err)
	}
	return nil
}

// session runs one SMTP transaction on conn.
func (m *smtpMailer) session(conn net.Conn, host, from string, to []string, msg []byte) error {
	c, err := smtp.NewClient(conn, host)
	if err != nil {
		return fmt.Errorf("greeting: %w", err)
	}
	defer c.Close()
	if err := c.Hello(m.helo); err != nil {
		return fmt.Errorf("EHLO: %w", err)
	}
	if ok, _ := c.Extension("STARTTLS"); ok && !isLoopbackHost(host) {
		if err := c.StartTLS(&tls.Config{ServerName: host}); err != nil {
			return fmt.Errorf("STARTTLS: %w", err)
		}
	}
	if err := c.Mail(from); err != nil {
		return fmt.Errorf("MAIL FROM: %w", err)
	}
	for _, rcpt := range to {
		if err := c.Rcpt(rcpt); err != nil {
			return fmt.Errorf("RCPT TO:<%s>: %w", rcpt, err)
		}
	}
	w, err := c.Data()
	if err != nil {
		return fmt.Errorf("DATA: %w", err)
	}
	if _, err := w.Write(msg); err != nil {
		return fmt.Errorf("DATA: %w", err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("end of DATA: %w", err)
	}
	// The message is accepted; a failing QUIT changes nothing.
	_ = c.Quit()
	return nil
}

// smtpError classifies a failed session: 5xx replies are permanent,
// anything else (4xx, network, timeout, cancel) temporary.
func smtpError(ctx context.Context, addr string, err error) error {
	var te *textproto.Error
	if errors.As(err, &te) && te.Code >= 500 && te.Code < 600 {
		return fmt.Errorf("reports: smtp %s: %w", addr, err)
	}
	if ctx.Err() != nil {
		err = fmt.Errorf("%w (%w)", err, ctx.Err())
	}
	return fmt.Errorf("%w: reports: smtp %s: %w", ErrTemporary, addr, err)
}

// isLoopbackHost reports whether host is a loopback IP or "localhost".
func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// checkEnvelope refuses envelope addresses that could smuggle commands or
// options (control characters, spaces, a leading '-').
func checkEnvelope(from string, to []string) error {
	if len(to) == 0 {
		return errors.New("no recipients")
	}
	for _, a := range append([]string{from}, to...) {
		if _, err := plainAddress(a); err != nil {
			return err
		}
		if strings.HasPrefix(a, "-") {
			return fmt.Errorf("address %q starts with '-'", a)
		}
	}
	return nil
}

// exTempFail is sendmail's exit status for a temporary failure
// (EX_TEMPFAIL, sysexits.h).
const exTempFail = 75

// NewSendmailMailer returns a Mailer that runs a sendmail-compatible
// command: path -i -f from -- to... with the message on standard input.
// Exit status 75 (EX_TEMPFAIL) and a timeout are temporary
// (errors.Is(err, ErrTemporary)); any other failure, a missing command
// included, is permanent. The command's error output (its first 4 KiB)
// is part of the error.
func NewSendmailMailer(path string) Mailer {
	return &sendmailMailer{path: path}
}

type sendmailMailer struct {
	path string
}

func (m *sendmailMailer) Send(ctx context.Context, from string, to []string, msg []byte) error {
	if err := checkEnvelope(from, to); err != nil {
		return fmt.Errorf("reports: sendmail: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, mailTimeout)
	defer cancel()
	args := append([]string{"-i", "-f", from, "--"}, to...)
	cmd := exec.CommandContext(ctx, m.path, args...)
	cmd.Stdin = bytes.NewReader(msg)
	stderr := &cappedBuffer{max: 4096}
	cmd.Stderr = stderr
	cmd.Stdout = stderr
	cmd.WaitDelay = 10 * time.Second
	err := cmd.Run()
	if err == nil {
		return nil
	}
	detail := strings.TrimSpace(stderr.String())
	if detail != "" {
		err = fmt.Errorf("%w: %s", err, detail)
	}
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("%w: reports: sendmail %s: %w (%w)", ErrTemporary, m.path, err, ctx.Err())
	case errors.As(err, &ee) && ee.ExitCode() == exTempFail:
		return fmt.Errorf("%w: reports: sendmail %s: %w", ErrTemporary, m.path, err)
	}
	return fmt.Errorf("reports: sendmail %s: %w", m.path, err)
}

// cappedBuffer keeps the first max bytes written to it and drops the rest.
type cappedBuffer struct {
	buf bytes.Buffer
	max int
}

func (b *cappedBuffer) Write(p []byte) (int, error) {
	if room := b.max - b.buf.Len(); room > 0 {
		b.buf.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (b *cappedBuffer) String() string { return b.buf.String() }
