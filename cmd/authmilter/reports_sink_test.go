package main

import (
	"bufio"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// testSMTPSink is a small SMTP server for the report tests: it accepts
// every message (or rejects every one with a set reply) and keeps the
// envelope and data.
type testSMTPSink struct {
	addr string
	ln   net.Listener
	mu   sync.Mutex
	msgs []sinkMessage
	// reject, when set, is the reply to DATA's end.
	reject string
}

// sinkMessage is one message the sink took.
type sinkMessage struct {
	from  string
	rcpts []string
	data  string
}

// startTestSMTPSink listens on a free port of 127.0.0.1 until the test ends.
func startTestSMTPSink(t *testing.T) *testSMTPSink {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &testSMTPSink{addr: ln.Addr().String(), ln: ln}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				s.serve(c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return s
}

func (s *testSMTPSink) rejectWith(reply string) {
	s.mu.Lock()
	s.reject = reply
	s.mu.Unlock()
}

func (s *testSMTPSink) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.msgs)
}

// recipients counts the messages per recipient.
func (s *testSMTPSink) recipients() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := map[string]int{}
	for _, m := range s.msgs {
		for _, r := range m.rcpts {
			n[r]++
		}
	}
	return n
}

func (s *testSMTPSink) serve(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Minute))
	r := bufio.NewReader(c)
	reply := func(line string) { c.Write([]byte(line + "\r\n")) }
	reply("220 sink.test ESMTP")
	var cur sinkMessage
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimRight(line, "\r\n")
		verb, arg, _ := strings.Cut(line, " ")
		switch strings.ToUpper(verb) {
		case "EHLO", "HELO":
			reply("250-sink.test")
			reply("250 8BITMIME")
		case "MAIL":
			cur = sinkMessage{from: angleAddr(arg)}
			reply("250 2.1.0 Ok")
		case "RCPT":
			cur.rcpts = append(cur.rcpts, angleAddr(arg))
			reply("250 2.1.5 Ok")
		case "DATA":
			reply("354 go ahead")
			var b strings.Builder
			for {
				l, err := r.ReadString('\n')
				if err != nil {
					return
				}
				if l == ".\r\n" {
					break
				}
				b.WriteString(strings.TrimPrefix(l, "."))
			}
			cur.data = b.String()
			s.mu.Lock()
			rej := s.reject
			if rej == "" {
				s.msgs = append(s.msgs, cur)
			}
			s.mu.Unlock()
			if rej != "" {
				reply(rej)
			} else {
				reply("250 2.0.0 Ok: stored")
			}
		case "RSET", "NOOP":
			reply("250 2.0.0 Ok")
		case "QUIT":
			reply("221 2.0.0 Bye")
			return
		default:
			reply("502 5.5.2 Command not recognized")
		}
	}
}

// angleAddr is the address in "FROM:<a@b> PARAMS".
func angleAddr(arg string) string {
	if i := strings.IndexByte(arg, '<'); i >= 0 {
		if j := strings.IndexByte(arg[i:], '>'); j >= 0 {
			return strings.ToLower(arg[i+1 : i+j])
		}
	}
	return arg
}
