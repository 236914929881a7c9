package e2e

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/textproto"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"
)

// sink is an SMTP server that stores every message it is given, byte for
// byte (CRLF line ends, dot-unstuffed), as the MTA delivered it.
type sink struct {
	dir  string // each message is also written here (kept with E2E_KEEP=1)
	ln   net.Listener
	port int
	mu   sync.Mutex
	msgs []*sunk
	wg   sync.WaitGroup
}

// sunk is one delivered message.
type sunk struct {
	Helo  string
	From  string
	Rcpts []string
	Data  []byte
}

func startSink(dir string) (*sink, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", sinkIP+":0")
	if err != nil {
		return nil, err
	}
	s := &sink{dir: dir, ln: ln, port: ln.Addr().(*net.TCPAddr).Port}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				s.serve(c)
			}()
		}
	}()
	return s, nil
}

func (s *sink) close() {
	s.ln.Close()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
	}
}

func (s *sink) serve(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Minute))
	r := bufio.NewReader(c)
	w := bufio.NewWriter(c)
	reply := func(line string) {
		w.WriteString(line + "\r\n")
		w.Flush()
	}
	reply("220 sink.test ESMTP e2e sink")
	var cur sunk
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimRight(line, "\r\n")
		verb, arg, _ := strings.Cut(line, " ")
		switch strings.ToUpper(verb) {
		case "EHLO":
			cur = sunk{Helo: arg}
			// 8BITMIME, so that Postfix never converts a body (which
			// would break signatures); no PIPELINING, no SIZE.
			reply("250-sink.test")
			reply("250 8BITMIME")
		case "HELO":
			cur = sunk{Helo: arg}
			reply("250 sink.test")
		case "MAIL":
			cur.From, cur.Rcpts, cur.Data = pathArg(arg), nil, nil
			reply("250 2.1.0 Ok")
		case "RCPT":
			cur.Rcpts = append(cur.Rcpts, pathArg(arg))
			reply("250 2.1.5 Ok")
		case "DATA":
			reply("354 End data with <CR><LF>.<CR><LF>")
			var data bytes.Buffer
			for {
				l, err := r.ReadString('\n')
				if err != nil {
					return
				}
				if l == ".\r\n" || l == ".\n" {
					break
				}
				l = strings.TrimPrefix(l, ".") // dot-stuffing
				data.WriteString(l)
			}
			m := cur
			m.Data = data.Bytes()
			s.mu.Lock()
			s.msgs = append(s.msgs, &m)
			n := len(s.msgs)
			s.mu.Unlock()
			os.WriteFile(filepath.Join(s.dir, fmt.Sprintf("%03d.eml", n)), m.Data, 0o644)
			reply("250 2.0.0 Ok: stored")
		case "RSET":
			cur = sunk{Helo: cur.Helo}
			reply("250 2.0.0 Ok")
		case "NOOP":
			reply("250 2.0.0 Ok")
		case "QUIT":
			reply("221 2.0.0 Bye")
			return
		default:
			reply("502 5.5.2 Command not recognized")
		}
	}
}

// pathArg extracts the address from "FROM:<a@b> PARAMS".
func pathArg(arg string) string {
	if i := strings.IndexByte(arg, '<'); i >= 0 {
		if j := strings.IndexByte(arg[i:], '>'); j >= 0 {
			return arg[i+1 : i+j]
		}
	}
	return arg
}

// find returns the delivered messages that contain tok.
func (s *sink) find(tok string) []*sunk {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*sunk
	for _, m := range s.msgs {
		if bytes.Contains(m.Data, []byte(tok)) {
			out = append(out, m)
		}
	}
	return out
}

// wait waits for a message that contains tok.
func (s *sink) wait(tok string, timeout time.Duration) (*sunk, error) {
	deadline := time.Now().Add(timeout)
	for {
		if ms := s.find(tok); len(ms) > 0 {
			return ms[0], nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("no message with %q reached the sink within %v", tok, timeout)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

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
