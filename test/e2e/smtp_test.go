package e2e

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/textproto"
	"regexp"
	"strings"
	"time"
)

// submission is one SMTP transaction a test makes.
type submission struct {
	Server string // host:port
	Source string // local IP to connect from ("": the kernel's choice)
	Helo   string
	User   string // SMTP AUTH PLAIN when set
	Pass   string
	From   string
	To     []string
	Data   []byte // the message, CRLF line ends
}

// smtpError is a reply the server gave where success was expected.
type smtpError struct {
	Stage string
	Code  int
	Msg   string
}

func (e *smtpError) Error() string { return fmt.Sprintf("%s: %d %s", e.Stage, e.Code, e.Msg) }

// queuedRe finds the queue ID in Postfix's "250 2.0.0 Ok: queued as
// 4Xk2..." and Sendmail's "250 2.0.0 5AOJtq1Q031234 Message accepted for
// delivery".
var queuedRe = regexp.MustCompile(`queued as ([0-9A-Za-z]+)|^2\.0\.0 ([0-9A-Za-z]+) Message accepted`)

// send makes the transaction and returns the queue ID from the final
// reply, or an *smtpError.
func send(s submission) (string, error) {
	d := net.Dialer{Timeout: 10 * time.Second}
	if s.Source != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(s.Source)}
	}
	nc, err := d.Dial("tcp", s.Server)
	if err != nil {
		return "", err
	}
	nc.SetDeadline(time.Now().Add(60 * time.Second))
	c := textproto.NewConn(nc)
	defer c.Close()
	step := func(stage string, want int, format string, args ...any) (string, error) {
		if format != "" {
			if err := c.PrintfLine(format, args...); err != nil {
				return "", err
			}
		}
		_, msg, err := c.ReadResponse(want)
		var te *textproto.Error
		if errors.As(err, &te) {
			return "", &smtpError{Stage: stage, Code: te.Code, Msg: te.Msg}
		}
		return msg, err
	}
	if _, err := step("greeting", 220, ""); err != nil {
		return "", err
	}
	helo := s.Helo
	if helo == "" {
		helo = "client.test"
	}
	if _, err := step("EHLO", 250, "EHLO %s", helo); err != nil {
		return "", err
	}
	if s.User != "" {
		cred := base64.StdEncoding.EncodeToString([]byte("\x00" + s.User + "\x00" + s.Pass))
		if _, err := step("AUTH", 235, "AUTH PLAIN %s", cred); err != nil {
			return "", err
		}
	}
	if _, err := step("MAIL", 250, "MAIL FROM:<%s>", s.From); err != nil {
		return "", err
	}
	for _, r := range s.To {
		if _, err := step("RCPT", 25, "RCPT TO:<%s>", r); err != nil {
			return "", err
		}
	}
	if _, err := step("DATA", 354, "DATA"); err != nil {
		return "", err
	}
	var b bytes.Buffer
	for _, l := range strings.SplitAfter(string(s.Data), "\n") {
		if l == "" {
			continue
		}
		if strings.HasPrefix(l, ".") {
			b.WriteByte('.')
		}
		b.WriteString(l)
	}
	if !bytes.HasSuffix(b.Bytes(), []byte("\r\n")) {
		b.WriteString("\r\n")
	}
	b.WriteString(".\r\n")
	if _, err := c.W.Write(b.Bytes()); err != nil {
		return "", err
	}
	if err := c.W.Flush(); err != nil {
		return "", err
	}
	msg, err := step("end of data", 250, "")
	if err != nil {
		return "", err
	}
	step("QUIT", 221, "QUIT")
	if m := queuedRe.FindStringSubmatch(msg); m != nil {
		return m[1] + m[2], nil
	}
	return "", fmt.Errorf("no queue ID in the final reply %q", msg)
}

// crlf turns a message written with \n into one with CRLF line ends.
func crlf(s string) []byte {
	return []byte(strings.ReplaceAll(strings.ReplaceAll(s, "\r\n", "\n"), "\n", "\r\n"))
}

// field is one header field as delivered: name and raw value (after the
// colon, with folding CRLFs kept).
type field struct {
	Name, Value string
}

// unfolded is the value with folding removed and outer space trimmed.
func (f field) unfolded() string {
	v := strings.ReplaceAll(f.Value, "\r\n", "")
	return strings.TrimSpace(strings.ReplaceAll(v, "\n", ""))
}

// headerFields splits a message's header into fields, top to bottom.
func headerFields(msg []byte) []field {
	head := string(msg)
	if i := strings.Index(head, "\r\n\r\n"); i >= 0 {
		head = head[:i+2]
	}
	var out []field
	for _, l := range strings.SplitAfter(head, "\r\n") {
		if l == "" {
			continue
		}
		if (l[0] == ' ' || l[0] == '\t') && len(out) > 0 {
			out[len(out)-1].Value += l
			continue
		}
		name, val, _ := strings.Cut(l, ":")
		out = append(out, field{Name: name, Value: val})
	}
	for i := range out {
		out[i].Value = strings.TrimSuffix(out[i].Value, "\r\n")
	}
	return out
}

// fieldsNamed returns the fields with a name, top to bottom.
func fieldsNamed(fs []field, name string) []field {
	var out []field
	for _, f := range fs {
		if strings.EqualFold(f.Name, name) {
			out = append(out, f)
		}
	}
	return out
}

// names lists the field names, for failure messages.
func names(fs []field) string {
	var n []string
	for _, f := range fs {
		n = append(n, f.Name)
	}
	return strings.Join(n, ", ")
}
