// Package smtpsink is a small real SMTP server for tests: it takes every
// message it is given and keeps it with its envelope, byte for byte as it
// came over the wire (CRLF line ends kept, dot-stuffing undone), or
// answers a chosen reply to the next transactions at a chosen stage. It
// offers 8BITMIME and nothing else (no PIPELINING, SIZE, STARTTLS or AUTH),
// so that an MTA relaying to it never converts a body.
//
// It is for tests only: it listens where it is told (a free port of
// 127.0.0.1 for Start) and stops when the test ends or on Close.
package smtpsink

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// DefaultMaxMessageBytes bounds one message when Options.MaxMessageBytes
// is 0: far above any report or test message, far below what would hurt
// the test machine.
const DefaultMaxMessageBytes = 64 << 20

// sessionTimeout ends a connection whose client went silent; generous,
// for a busy machine.
const sessionTimeout = 2 * time.Minute

// Message is one message the sink took.
type Message struct {
	Helo  string   // the EHLO or HELO argument
	From  string   // the MAIL FROM address, as sent, without <>
	Rcpts []string // the RCPT TO addresses, as sent, without <>
	Data  []byte   // the message: CRLF line ends kept, dot-stuffing undone
}

// Stage is the point of a transaction where a planned reply is given
// instead of the positive one.
type Stage string

// The stages FailNext can answer at.
const (
	AtMail      Stage = "MAIL" // the reply to MAIL FROM
	AtRcpt      Stage = "RCPT" // the reply to every RCPT TO
	AtData      Stage = "DATA" // the reply to DATA (instead of 354)
	AtEndOfData Stage = "."    // the reply after the message (it is not kept)
)

// Options tunes a sink made by Listen.
type Options struct {
	// Dir, when set, receives a copy of each message kept, named
	// 001.eml, 002.eml, ... in arrival order (for a human after a test).
	Dir string
	// MaxMessageBytes bounds one message's data; a longer message is
	// refused with 552 and not kept. 0 means DefaultMaxMessageBytes.
	MaxMessageBytes int
}

// Server is a running sink. Its methods are safe for concurrent use.
type Server struct {
	ln   net.Listener
	opts Options
	wg   sync.WaitGroup

	mu       sync.Mutex
	open     map[net.Conn]struct{}
	closed   bool
	conns    int
	msgs     []Message
	failN    int
	failAt   Stage
	failWith string
}

// Listen starts a sink on addr (host:port; port 0 picks a free one).
func Listen(addr string, opts Options) (*Server, error) {
	if opts.MaxMessageBytes == 0 {
		opts.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if opts.Dir != "" {
		if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
			return nil, fmt.Errorf("smtpsink: %w", err)
		}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("smtpsink: %w", err)
	}
	s := &Server{ln: ln, opts: opts, open: map[net.Conn]struct{}{}}
	s.wg.Add(1)
	go s.accept()
	return s, nil
}

// Start starts a sink on a free port of 127.0.0.1, closed when the test
// ends.
func Start(t testing.TB) *Server {
	t.Helper()
	s, err := Listen("127.0.0.1:0", Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// Addr is the sink's host:port.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Port is the sink's TCP port.
func (s *Server) Port() int { return s.ln.Addr().(*net.TCPAddr).Port }

// Close stops listening, ends every open connection and waits for their
// goroutines. It may be called more than once.
func (s *Server) Close() {
	s.mu.Lock()
	s.closed = true
	for c := range s.open {
		c.Close()
	}
	s.mu.Unlock()
	s.ln.Close()
	s.wg.Wait()
}

// FailNext makes the next n transactions (counted at MAIL FROM) get reply
// at stage instead of the positive answer; a failed transaction keeps no
// message. n = 0 cancels what is left of an earlier FailNext.
func (s *Server) FailNext(n int, at Stage, reply string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failN, s.failAt, s.failWith = n, at, reply
}

// Connections is how many connections the sink accepted.
func (s *Server) Connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns
}

// Messages returns the messages kept so far, in arrival order.
func (s *Server) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.msgs...)
}

// Find returns the messages kept so far whose data contain tok.
func (s *Server) Find(tok string) []Message {
	var out []Message
	for _, m := range s.Messages() {
		if bytes.Contains(m.Data, []byte(tok)) {
			out = append(out, m)
		}
	}
	return out
}

// Wait waits up to timeout for a message whose data contain tok and
// returns the first one.
func (s *Server) Wait(tok string, timeout time.Duration) (Message, error) {
	deadline := time.Now().Add(timeout)
	for {
		if ms := s.Find(tok); len(ms) > 0 {
			return ms[0], nil
		}
		if time.Now().After(deadline) {
			return Message{}, fmt.Errorf("no message with %q reached the sink within %v", tok, timeout)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

func (s *Server) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.conns++
		s.open[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			defer func() {
				s.mu.Lock()
				delete(s.open, c)
				s.mu.Unlock()
				c.Close()
			}()
			c.SetDeadline(time.Now().Add(sessionTimeout))
			s.serve(c)
		}()
	}
}

// transaction is what one session has been told so far.
type transaction struct {
	msg      Message
	failAt   Stage
	failWith string
}

// begin starts a transaction at MAIL FROM, taking one planned failure if
// any is left.
func (s *Server) begin(helo, from string) transaction {
	tx := transaction{msg: Message{Helo: helo, From: from}}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failN > 0 {
		s.failN--
		tx.failAt, tx.failWith = s.failAt, s.failWith
	}
	return tx
}

// answer is the planned reply at stage, or normal.
func (tx *transaction) answer(at Stage, normal string) (reply string, ok bool) {
	if tx.failWith != "" && tx.failAt == at {
		return tx.failWith, false
	}
	return normal, true
}

// keep stores a finished message.
func (s *Server) keep(m Message) error {
	s.mu.Lock()
	s.msgs = append(s.msgs, m)
	n := len(s.msgs)
	s.mu.Unlock()
	if s.opts.Dir == "" {
		return nil
	}
	return os.WriteFile(filepath.Join(s.opts.Dir, fmt.Sprintf("%03d.eml", n)), m.Data, 0o644)
}

func (s *Server) serve(c net.Conn) {
	r := bufio.NewReaderSize(c, maxCommandBytes)
	reply := func(line string) { fmt.Fprintf(c, "%s\r\n", line) }
	reply("220 sink.test ESMTP smtpsink")
	var helo string
	var tx *transaction
	for {
		line, err := readCommand(r)
		if errors.Is(err, errLineTooLong) {
			reply("500 5.5.2 Line too long")
			closeGracefully(c, r)
		}
		if err != nil {
			return
		}
		verb, arg, _ := strings.Cut(line, " ")
		switch strings.ToUpper(verb) {
		case "EHLO":
			helo, tx = arg, nil
			reply("250-sink.test")
			reply("250 8BITMIME")
		case "HELO":
			helo, tx = arg, nil
			reply("250 sink.test")
		case "MAIL":
			t := s.begin(helo, addressOf(arg))
			answer, ok := t.answer(AtMail, "250 2.1.0 Ok")
			if ok {
				tx = &t
			}
			reply(answer)
		case "RCPT":
			if tx == nil {
				reply("503 5.5.1 MAIL first")
				continue
			}
			answer, ok := tx.answer(AtRcpt, "250 2.1.5 Ok")
			if ok {
				tx.msg.Rcpts = append(tx.msg.Rcpts, addressOf(arg))
			}
			reply(answer)
		case "DATA":
			if tx == nil || len(tx.msg.Rcpts) == 0 {
				reply("503 5.5.1 RCPT first")
				continue
			}
			answer, ok := tx.answer(AtData, "354 End data with <CR><LF>.<CR><LF>")
			reply(answer)
			if !ok {
				tx = nil
				continue
			}
			data, err := readData(r, s.opts.MaxMessageBytes)
			if errors.Is(err, errTooBig) {
				reply("552 5.3.4 Message too big")
				tx = nil
				continue
			}
			if err != nil {
				return
			}
			if answer, ok := tx.answer(AtEndOfData, "250 2.0.0 Ok: stored"); !ok {
				reply(answer)
				tx = nil
				continue
			}
			tx.msg.Data = data
			if err := s.keep(tx.msg); err != nil {
				reply("451 4.3.0 " + err.Error())
			} else {
				reply("250 2.0.0 Ok: stored")
			}
			tx = nil
		case "RSET":
			tx = nil
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

// maxCommandBytes bounds one command line (RFC 5321 §4.5.3.1.4 allows
// 512; a client that sends more is broken or hostile).
const maxCommandBytes = 4096

// errTooBig is a message longer than the sink takes; errLineTooLong a
// command line longer than maxCommandBytes.
var (
	errTooBig      = errors.New("message too big")
	errLineTooLong = fmt.Errorf("command line longer than %d bytes", maxCommandBytes)
)

// closeGracefully ends a connection whose client is still sending: it
// says it is done (a FIN), then reads and drops what is still coming, a
// bounded amount for a bounded time, so that closing does not reset the
// connection and lose the reply just written (a socket closed with unread
// data sends RST).
func closeGracefully(c net.Conn, r *bufio.Reader) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.CloseWrite()
	}
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	io.CopyN(io.Discard, r, 1<<20)
}

// readCommand reads one command line without its line end; a line longer
// than maxCommandBytes is an error.
func readCommand(r *bufio.Reader) (string, error) {
	line, err := r.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) || len(line) > maxCommandBytes {
		return "", errLineTooLong
	}
	if err != nil {
		return "", err
	}
	return strings.TrimRight(string(line), "\r\n"), nil
}

// readData reads a message up to the line "." (CRLF or a bare LF) and
// undoes dot-stuffing. Past limit bytes it reads on to the end without
// keeping anything and returns errTooBig, so that the session stays in
// step with the client; a line of any length costs no more than the
// reader's buffer.
func readData(r *bufio.Reader, limit int) ([]byte, error) {
	var data bytes.Buffer
	tooBig, lineStart := false, true
	for {
		chunk, err := r.ReadSlice('\n')
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return nil, err
		}
		endsLine := err == nil
		if lineStart && endsLine && (string(chunk) == ".\r\n" || string(chunk) == ".\n") {
			break
		}
		if lineStart {
			chunk = bytes.TrimPrefix(chunk, []byte(".")) // dot-stuffing, RFC 5321 §4.5.2
		}
		lineStart = endsLine
		if tooBig || data.Len()+len(chunk) > limit {
			tooBig = true
			continue
		}
		data.Write(chunk)
	}
	if tooBig {
		return nil, errTooBig
	}
	return data.Bytes(), nil
}

// addressOf is the address in "FROM:<a@b> PARAMS" or "TO:<a@b>"; the
// argument itself when it has no angle brackets.
func addressOf(arg string) string {
	if i := strings.IndexByte(arg, '<'); i >= 0 {
		if j := strings.IndexByte(arg[i:], '>'); j >= 0 {
			return arg[i+1 : i+j]
		}
	}
	return arg
}
