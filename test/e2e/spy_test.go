package e2e

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sort"
	"strings"
	"sync"
	"time"
)

// Milter protocol constants (libmilter's mfdef.h), for the spy.
const (
	smfipHdrLeadSpc = 0x100000 // SMFIP_HDR_LEADSPC
	smfipSkip       = 0x400    // SMFIP_SKIP
	smfipNRHdr      = 0x80     // SMFIP_NR_HDR
	// smfipNRAll are the SMFIP_NR_* flags authmilter asks for: connect,
	// HELO, MAIL, RCPT, header, EOH and body go unanswered, one round trip
	// per message.
	smfipNRAll = 0x1000 | 0x2000 | 0x4000 | 0x8000 | smfipNRHdr | 0x40000 | 0x80000
)

// spyMilter is a milter that records every command an MTA sends it, byte
// for byte, and lets every message through unchanged. It speaks the wire
// protocol itself (no go-milter), so what it records is exactly what the
// MTA sent: option negotiation, macros per stage, header values with or
// without their leading space, ABORTs.
//
// With leadSpace it asks for SMFIP_HDR_LEADSPC when the MTA offers it, as
// authmilter does; without, it asks for nothing, as a naive milter does.
type spyMilter struct {
	ln        net.Listener
	port      int
	leadSpace bool
	mu        sync.Mutex
	conns     []*spyConn
	wg        sync.WaitGroup
}

// spyConn is one MTA connection to the spy.
type spyConn struct {
	mu sync.Mutex
	// Offered is the MTA's SMFIC_OPTNEG: version, actions, protocol flags.
	Offered [3]uint32
	// Agreed is the protocol flags the spy answered with.
	Agreed uint32
	Events []spyEvent
}

// spyEvent is one command.
type spyEvent struct {
	Cmd byte
	// For SMFIC_MACRO: the command the macros are for, and the macros.
	MacroFor byte
	Macros   map[string]string
	// The NUL-separated arguments (header: name, value; connect: host,
	// family, port, address).
	Args []string
}

func startSpy(leadSpace bool) (*spyMilter, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &spyMilter{ln: ln, port: ln.Addr().(*net.TCPAddr).Port, leadSpace: leadSpace}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			sc := &spyConn{}
			s.mu.Lock()
			s.conns = append(s.conns, sc)
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				s.serve(c, sc)
			}()
		}
	}()
	return s, nil
}

func (s *spyMilter) close() {
	s.ln.Close()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
	}
}

func (s *spyMilter) serve(c net.Conn, sc *spyConn) {
	defer c.Close()
	r := bufio.NewReader(c)
	reply := func(code byte, data []byte) error {
		var b bytes.Buffer
		binary.Write(&b, binary.BigEndian, uint32(len(data)+1))
		b.WriteByte(code)
		b.Write(data)
		_, err := c.Write(b.Bytes())
		return err
	}
	for {
		c.SetReadDeadline(time.Now().Add(5 * time.Minute))
		var n uint32
		if err := binary.Read(r, binary.BigEndian, &n); err != nil {
			return
		}
		if n == 0 || n > 1<<20 {
			return
		}
		pkt := make([]byte, n)
		if _, err := io.ReadFull(r, pkt); err != nil {
			return
		}
		cmd, data := pkt[0], pkt[1:]
		ev := spyEvent{Cmd: cmd}
		switch cmd {
		case 'O':
			if len(data) < 12 {
				return
			}
			sc.mu.Lock()
			for i := range 3 {
				sc.Offered[i] = binary.BigEndian.Uint32(data[4*i:])
			}
			var flags uint32
			if s.leadSpace && sc.Offered[2]&smfipHdrLeadSpc != 0 {
				flags |= smfipHdrLeadSpc
			}
			sc.Agreed = flags
			sc.mu.Unlock()
			var b [12]byte
			binary.BigEndian.PutUint32(b[0:], 6)
			binary.BigEndian.PutUint32(b[4:], 0) // no modifications
			binary.BigEndian.PutUint32(b[8:], flags)
			if reply('O', b[:]) != nil {
				return
			}
			continue
		case 'D':
			if len(data) < 1 {
				return
			}
			ev.MacroFor = data[0]
			ev.Macros = map[string]string{}
			kv := splitNUL(data[1:])
			for i := 0; i+1 < len(kv); i += 2 {
				ev.Macros[kv[i]] = kv[i+1]
			}
		case 'C':
			host, rest, _ := bytes.Cut(data, []byte{0})
			ev.Args = []string{string(host)}
			if len(rest) >= 1 {
				ev.Args = append(ev.Args, string(rest[:1]))
				if rest[0] != 'U' && len(rest) >= 3 {
					ev.Args = append(ev.Args, fmt.Sprint(binary.BigEndian.Uint16(rest[1:3])), strings.TrimRight(string(rest[3:]), "\x00"))
				}
			}
		case 'B':
			ev.Args = []string{string(data)}
		default:
			ev.Args = splitNUL(data)
		}
		sc.mu.Lock()
		sc.Events = append(sc.Events, ev)
		sc.mu.Unlock()
		switch cmd {
		case 'D', 'A':
			// no reply
		case 'Q':
			return
		case 'K':
			// quit, new connection follows on this socket
		default:
			if reply('c', nil) != nil {
				return
			}
		}
	}
}

func splitNUL(b []byte) []string {
	b = bytes.TrimSuffix(b, []byte{0})
	if len(b) == 0 {
		return nil
	}
	return strings.Split(string(b), "\x00")
}

// find returns the connection (a snapshot) on which a header value
// contained tok.
func (s *spyMilter) find(tok string) *spyConn {
	s.mu.Lock()
	conns := append([]*spyConn(nil), s.conns...)
	s.mu.Unlock()
	for _, sc := range conns {
		sc.mu.Lock()
		for _, ev := range sc.Events {
			if ev.Cmd == 'L' && len(ev.Args) == 2 && strings.Contains(ev.Args[1], tok) {
				cp := &spyConn{Offered: sc.Offered, Agreed: sc.Agreed, Events: append([]spyEvent(nil), sc.Events...)}
				sc.mu.Unlock()
				return cp
			}
		}
		sc.mu.Unlock()
	}
	return nil
}

// waitFor waits until the connection whose header had tok has seen n
// commands of kind cmd (the MTA sends ABORT and QUIT after it delivered).
func (s *spyMilter) waitFor(tok string, cmd byte, n int, timeout time.Duration) *spyConn {
	deadline := time.Now().Add(timeout)
	for {
		sc := s.find(tok)
		if sc != nil && sc.count(cmd) >= n || time.Now().After(deadline) {
			return sc
		}
		time.Sleep(25 * time.Millisecond)
	}
}

func (sc *spyConn) count(cmd byte) int {
	n := 0
	for _, ev := range sc.Events {
		if ev.Cmd == cmd {
			n++
		}
	}
	return n
}

// macrosAt returns the macros sent for a command (merged when sent more
// than once) and whether any were sent.
func (sc *spyConn) macrosAt(cmd byte) (map[string]string, bool) {
	m := map[string]string{}
	seen := false
	for _, ev := range sc.Events {
		if ev.Cmd == 'D' && ev.MacroFor == cmd {
			seen = true
			for k, v := range ev.Macros {
				m[k] = v
			}
		}
	}
	return m, seen
}

// header returns the raw value of the first header field named name as
// sent to the milter.
func (sc *spyConn) header(name string) (string, bool) {
	for _, ev := range sc.Events {
		if ev.Cmd == 'L' && len(ev.Args) == 2 && strings.EqualFold(ev.Args[0], name) {
			return ev.Args[1], true
		}
	}
	return "", false
}

// firstHeader returns the name of the first header field sent.
func (sc *spyConn) firstHeader() string {
	for _, ev := range sc.Events {
		if ev.Cmd == 'L' && len(ev.Args) > 0 {
			return ev.Args[0]
		}
	}
	return ""
}

// connectArgs returns the SMFIC_CONNECT arguments: host, family, port,
// address.
func (sc *spyConn) connectArgs() []string {
	for _, ev := range sc.Events {
		if ev.Cmd == 'C' {
			return ev.Args
		}
	}
	return nil
}

// sequence is the commands in order, macros shown as D(x).
func (sc *spyConn) sequence() string {
	var b strings.Builder
	for _, ev := range sc.Events {
		if ev.Cmd == 'D' {
			fmt.Fprintf(&b, "D(%c) ", ev.MacroFor)
			continue
		}
		fmt.Fprintf(&b, "%c ", ev.Cmd)
	}
	return strings.TrimSpace(b.String())
}

// report describes what the MTA sent, for the test log and the README.
func (sc *spyConn) report() string {
	var b strings.Builder
	fmt.Fprintf(&b, "negotiation offered: version %d, actions %#x, protocol %#x (HDR_LEADSPC offered: %v, SKIP offered: %v); spy asked for %#x\n",
		sc.Offered[0], sc.Offered[1], sc.Offered[2], sc.Offered[2]&smfipHdrLeadSpc != 0, sc.Offered[2]&smfipSkip != 0, sc.Agreed)
	fmt.Fprintf(&b, "sequence: %s\n", sc.sequence())
	for _, stage := range []byte("CHMRTLNBE") {
		m, ok := sc.macrosAt(stage)
		if !ok {
			continue
		}
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var kv []string
		for _, k := range keys {
			kv = append(kv, fmt.Sprintf("%s=%q", k, m[k]))
		}
		fmt.Fprintf(&b, "macros for %c: %s\n", stage, strings.Join(kv, " "))
	}
	for _, ev := range sc.Events {
		switch ev.Cmd {
		case 'C':
			fmt.Fprintf(&b, "connect: %q\n", ev.Args)
		case 'L':
			fmt.Fprintf(&b, "header %s: %q\n", ev.Args[0], ev.Args[1])
		}
	}
	return b.String()
}
