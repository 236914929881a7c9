package milter

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	gomilter "github.com/emersion/go-milter"
)

// negotiatingConn sits between go-milter and the MTA's connection. go-milter
// v0.5.0 reads the stream itself, with no limits, and we cannot change it;
// this wrapper reads every packet first and hands go-milter only what it
// should see:
//
//   - Option negotiation: go-milter answers with the protocol flags it was
//     configured with, unmasked by what the MTA offered, and tells the milter
//     nothing about the outcome. We read the MTA's SMFIC_OPTNEG, mask our
//     reply with it, and record which flags are in effect (SMFIP_HDR_LEADSPC
//     decides how header values are rebuilt; SMFIP_NR_HDR whether header
//     commands are answered). A second SMFIC_OPTNEG closes the connection.
//   - Packet size: a packet's claimed length is checked before anything is
//     allocated, and its payload is read in bounded steps as it arrives
//     (go-milter allocates the claimed length, up to 1 MiB, before reading
//     a byte), so a client that claims a large packet and sends nothing
//     costs nothing.
//   - Timeouts (limits.*): a short one for a connection that has not
//     negotiated and for a packet that stalls half-way, a long idle one
//     between commands, and one for writes to an MTA that stops reading.
//     go-milter sets none.
//   - Header fields: every SMFIC_HEADER goes to the session's onHeader hook
//     and never to go-milter, which would keep its own unbounded copy of the
//     whole header (a textproto.MIMEHeader reset only by SMFIC_ABORT) and
//     answer malformed header packets with replies the MTA did not ask for,
//     desynchronising the stream under SMFIP_NR_HDR. A malformed header
//     packet closes the connection.
//   - Every other command of a transaction (connect, HELO, MAIL, RCPT,
//     DATA, end of header, body chunks, end of message, macros, abort: see
//     answeredHere) is parsed as go-milter would and answered here when
//     an answer is owed (see allNoReply), and the end of message's
//     modifications are written by connModifier, without go-milter's
//     per-packet copy and per-reply write buffer. Body chunks are handed
//     on in pieces from the read buffer (see body). go-milter sees option
//     negotiation and quit.
//
// go-milter reads and writes from the session goroutine only, one packet at
// a time, so the hooks run in the session goroutine between callbacks.
type negotiatingConn struct {
	net.Conn
	srv *Server
	// br buffers reads: many small packets (macros, headers, commands)
	// arrive in one read.
	br *bufio.Reader

	// pending is the rest of the packet being handed to go-milter; buf is
	// reused for packets up to reuseLimit.
	pending []byte
	buf     []byte
	// wbuf is reused for the replies written here (see writePacket).
	wbuf []byte

	negotiatedOnce bool

	// onHeader receives each header field (name, value as sent).
	onHeader func(name, value string)
	// onCommand runs the commands answeredHere accepts and returns the
	// reply to send, if any.
	onCommand func(code byte, data []byte) (gomilter.Response, error)
	// logf logs a connection-level problem with the session's context.
	logf func(msg string, args ...any)

	mu      sync.Mutex
	offered gomilter.OptProtocol
	mtaVer  uint32
	// effective is set once, by the OPTNEG reply, and read for every
	// command (a lock per header field showed in profiles).
	effective atomic.Uint32
	replied   bool
	onClose   func()
	closed    bool
}

const (
	optNegLen = 13 // 'O' + version + actions + protocol
	// maxPacket is the largest packet accepted, go-milter's own limit: an
	// MTA sends body chunks of at most 64 KiB and one header field per
	// packet.
	maxPacket = 1 << 20
	// readStep bounds each growth of the buffer of a large packet.
	readStep = 64 << 10
	// initialBuffer is what a packet's buffer starts with.
	initialBuffer = 4 << 10
	// reuseLimit is the largest packet buffer kept for the next packet.
	reuseLimit = 64<<10 + 16
	// readBufferSize holds many small packets in one read, and is the
	// most of a body chunk held at once (see body).
	readBufferSize = 16 << 10
)

// errProtocol marks a stream that is not a valid milter conversation; the
// connection is closed.
var errProtocol = errors.New("milter protocol error")

func (c *negotiatingConn) Read(p []byte) (int, error) {
	if len(c.pending) == 0 {
		if err := c.nextPacket(); err != nil {
			c.readFailed(err)
			// go-milter logs anything but EOF to the standard logger; the
			// problem is logged above, with the session's context.
			return 0, io.EOF
		}
	}
	n := copy(p, c.pending)
	c.pending = c.pending[n:]
	return n, nil
}

// readFailed logs and counts why the connection ends.
func (c *negotiatingConn) readFailed(err error) {
	var ne net.Error
	switch {
	case errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed):
		// The MTA closed the connection: the normal end.
	case errors.As(err, &ne) && ne.Timeout():
		c.srv.event("timeout")
		c.log("closing connection", "error", err.Error())
	case errors.Is(err, io.ErrUnexpectedEOF):
		c.srv.event("bad_packet")
		c.log("connection closed in the middle of a packet")
	case errors.Is(err, errProtocol):
		c.srv.event("bad_packet")
		c.log("closing connection", "error", err.Error())
	default:
		c.log("closing connection", "error", err.Error())
	}
}

func (c *negotiatingConn) log(msg string, args ...any) {
	if c.logf != nil {
		c.logf(msg, args...)
	} else if c.srv.Logger != nil {
		c.srv.Logger.Warn(msg, args...)
	}
}

// nextPacket reads packets until one is for go-milter and leaves it, framed,
// in c.pending. Header packets are consumed here.
func (c *negotiatingConn) nextPacket() error {
	if c.br == nil {
		c.br = bufio.NewReaderSize(c.Conn, readBufferSize)
	}
	lim := c.srv.limits()
	for {
		// Waiting for a command: the idle timeout, or the short one before
		// the MTA has negotiated (an MTA negotiates at once).
		wait := lim.IdleTimeout.Duration
		if !c.negotiatedOnce {
			wait = lim.NegotiateTimeout.Duration
		}
		if c.br.Buffered() == 0 {
			c.Conn.SetReadDeadline(time.Now().Add(wait))
			if _, err := c.br.Peek(1); err != nil {
				return err
			}
		}
		// Once a packet has begun, the rest must follow promptly. A packet
		// already whole in the buffer needs no deadline (no read blocks):
		// most are, since the MTA sends a message's commands together.
		if !c.packetBuffered() {
			c.Conn.SetReadDeadline(time.Now().Add(lim.NegotiateTimeout.Duration))
		}
		var hdr [4]byte
		if _, err := io.ReadFull(c.br, hdr[:]); err != nil {
			return unexpected(err)
		}
		n := binary.BigEndian.Uint32(hdr[:])
		if n == 0 || n > maxPacket {
			return fmt.Errorf("%w: packet length %d (limit %d)", errProtocol, n, maxPacket)
		}
		if c.onCommand != nil && c.negotiatedOnce && n > 1 {
			code, err := c.br.Peek(1)
			if err != nil {
				return unexpected(err)
			}
			if code[0] == byte(gomilter.CodeBody) {
				c.br.Discard(1)
				if err := c.body(int(n) - 1); err != nil {
					return err
				}
				continue
			}
		}
		pkt, err := c.readPayload(hdr[:], int(n))
		if err != nil {
			return unexpected(err)
		}
		code, data := pkt[4], pkt[5:]
		if !c.negotiatedOnce {
			if code != byte(gomilter.CodeOptNeg) {
				return fmt.Errorf("%w: first command %q is not option negotiation", errProtocol, code)
			}
			if len(data) < optNegLen-1 {
				return fmt.Errorf("%w: short option negotiation", errProtocol)
			}
			c.mu.Lock()
			c.mtaVer = binary.BigEndian.Uint32(data[0:4])
			c.offered = gomilter.OptProtocol(binary.BigEndian.Uint32(data[8:12]))
			c.mu.Unlock()
			c.negotiatedOnce = true
		} else if code == byte(gomilter.CodeOptNeg) {
			return fmt.Errorf("%w: option negotiation repeated", errProtocol)
		}
		if err := checkCommand(code, data); err != nil {
			return err
		}
		if code == byte(gomilter.CodeHeader) {
			if err := c.header(data); err != nil {
				return err
			}
			continue
		}
		if c.onCommand != nil && answeredHere(code) {
			if err := c.command(code, data); err != nil {
				return err
			}
			continue
		}
		c.pending = pkt
		return nil
	}
}

// packetBuffered reports whether the next packet is whole in the read
// buffer.
func (c *negotiatingConn) packetBuffered() bool {
	if c.br.Buffered() < 4 {
		return false // and Peek would wait for the rest
	}
	h, _ := c.br.Peek(4)
	return 4+int(binary.BigEndian.Uint32(h)) <= c.br.Buffered()
}

// checkCommand refuses what go-milter would refuse with a line on the
// standard logger and no context: unknown command codes, a macro packet
// without its stage, a connect packet without family.
func checkCommand(code byte, data []byte) error {
	switch gomilter.Code(code) {
	case gomilter.CodeOptNeg, gomilter.CodeQuit, gomilter.CodeHelo, gomilter.CodeMail,
		gomilter.CodeRcpt, gomilter.CodeHeader, gomilter.CodeEOH, gomilter.CodeBody,
		gomilter.CodeEOB, gomilter.CodeAbort, gomilter.CodeData:
	case gomilter.CodeMacro:
		if len(data) == 0 {
			return fmt.Errorf("%w: macro packet without a stage", errProtocol)
		}
	case gomilter.CodeConn:
		_, rest, ok := bytes.Cut(data, []byte{0})
		if !ok || len(rest) == 0 {
			return fmt.Errorf("%w: malformed connect packet", errProtocol)
		}
	default:
		return fmt.Errorf("%w: unknown command %q", errProtocol, code)
	}
	return nil
}

// unexpected turns an EOF inside a packet into io.ErrUnexpectedEOF.
func unexpected(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// readPayload reads an n-byte payload after hdr and returns the framed
// packet. Memory grows with the bytes that actually arrive, in steps of at
// most readStep, never with the length the client claimed.
func (c *negotiatingConn) readPayload(hdr []byte, n int) ([]byte, error) {
	total := 4 + n
	pkt := c.buf[:0]
	if cap(pkt) < min(total, initialBuffer) {
		pkt = make([]byte, 0, initialBuffer)
	}
	pkt = append(pkt, hdr...)
	for len(pkt) < total {
		if len(pkt) == cap(pkt) {
			// Double, by at most readStep: at most twice what arrived.
			grown := make([]byte, len(pkt), min(total, len(pkt)+min(len(pkt), readStep)))
			copy(grown, pkt)
			pkt = grown
		}
		m, err := c.br.Read(pkt[len(pkt):min(cap(pkt), total)])
		pkt = pkt[:len(pkt)+m]
		if err != nil {
			return nil, err
		}
	}
	// Buffers that grew for body chunks are kept for the next ones.
	if cap(pkt) <= reuseLimit {
		c.buf = pkt
	}
	return pkt, nil
}

// header handles one SMFIC_HEADER: "name\0value\0".
func (c *negotiatingConn) header(data []byte) error {
	name, rest, ok := bytes.Cut(data, []byte{0})
	if !ok || len(name) == 0 {
		return fmt.Errorf("%w: malformed header packet", errProtocol)
	}
	value, tail, ok := bytes.Cut(rest, []byte{0})
	if !ok || len(tail) != 0 {
		return fmt.Errorf("%w: malformed header packet", errProtocol)
	}
	if c.onHeader != nil {
		c.onHeader(string(name), string(value))
	}
	if c.negotiated()&gomilter.OptNoHeaderReply != 0 {
		return nil
	}
	// Without SMFIP_NR_HDR the MTA waits for an answer to each field.
	_, err := c.writeRaw(continueReply[:])
	return err
}

// continueReply is SMFIR_CONTINUE, framed; never written to (a variable
// only so that a slice of it needs no allocation).
var continueReply = [5]byte{0, 0, 0, 1, byte(gomilter.ActContinue)}

// body hands the n bytes of an SMFIC_BODY payload to the session in
// pieces, straight from the read buffer as they arrive, and writes the
// chunk's one reply, if any: the first that is not continue. A connection
// thus holds no more of the body than its read buffer, whatever the MTA's
// chunk size (with whole 64 KiB chunks, 64 connections sending large
// messages held 4 MiB of body in the heap, and the garbage of growing it).
func (c *negotiatingConn) body(n int) error {
	var resp gomilter.Response
	for first := true; first || n > 0; first = false {
		p, err := c.br.Peek(min(n, c.br.Size()))
		if err != nil {
			return unexpected(err)
		}
		n -= len(p)
		r, err := c.onCommand(byte(gomilter.CodeBody), p)
		c.br.Discard(len(p))
		if err != nil {
			return err
		}
		if resp == nil || resp == gomilter.RespContinue {
			resp = r
		}
	}
	return c.answer(resp)
}

// command runs one command in the session and writes its reply.
func (c *negotiatingConn) command(code byte, data []byte) error {
	resp, err := c.onCommand(code, data)
	if err != nil {
		return err
	}
	return c.answer(resp)
}

// answer writes resp, if not nil.
func (c *negotiatingConn) answer(resp gomilter.Response) error {
	if resp == nil {
		return nil
	}
	if resp == gomilter.RespContinue {
		_, err := c.writeRaw(continueReply[:])
		return err
	}
	msg := resp.Response()
	return c.writePacket(msg.Code, func(b []byte) []byte { return append(b, msg.Data...) })
}

// writePacket writes one reply: code and what fill appends, framed, built
// in a buffer the connection keeps.
func (c *negotiatingConn) writePacket(code byte, fill func([]byte) []byte) error {
	b := fill(append(c.wbuf[:0], 0, 0, 0, 0, code))
	binary.BigEndian.PutUint32(b, uint32(len(b)-4))
	if cap(b) <= reuseLimit {
		c.wbuf = b
	}
	_, err := c.writeRaw(b)
	return err
}

// splitCStrings splits NUL-terminated strings.
func splitCStrings(b []byte) []string {
	var out []string
	for len(b) > 0 {
		s, rest, _ := bytes.Cut(b, []byte{0})
		out = append(out, string(s))
		b = rest
	}
	return out
}

func (c *negotiatingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	// go-milter writes each packet with one buffered flush, so the reply
	// arrives whole: length, 'O', version, actions, protocol[, macros]. It
	// answers one SMFIC_OPTNEG only: a second one closes the connection.
	if !c.replied && len(p) >= 4+optNegLen && p[4] == byte(gomilter.CodeOptNeg) {
		c.replied = true
		ours := gomilter.OptProtocol(binary.BigEndian.Uint32(p[13:17]))
		effective := ours & c.offered
		c.effective.Store(uint32(effective))
		q := append([]byte(nil), p...)
		// go-milter claims version 2 but asks for version 6 flags
		// (SMFIP_NR_HDR, SMFIP_HDR_LEADSPC). Postfix honours them anyway;
		// stricter MTAs (and go-milter's own client) refuse a version 2
		// answer that carries them. Everything go-milter's server does is
		// valid version 6, so we say 6 when the MTA speaks it.
		if c.mtaVer >= 6 {
			binary.BigEndian.PutUint32(q[5:9], 6)
		}
		binary.BigEndian.PutUint32(q[13:17], uint32(effective))
		c.mu.Unlock()
		if _, err := c.writeRaw(q); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	c.mu.Unlock()
	return c.writeRaw(p)
}

// writeRaw writes with the write timeout: an MTA that stops reading must not
// hold the session forever.
func (c *negotiatingConn) writeRaw(p []byte) (int, error) {
	c.Conn.SetWriteDeadline(time.Now().Add(c.srv.limits().WriteTimeout.Duration))
	n, err := c.Conn.Write(p)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			c.srv.event("timeout")
		}
		c.log("write to MTA failed", "error", err.Error())
	}
	return n, err
}

// Close runs the session's close hook once (go-milter has none, and an MTA
// that drops the connection mid-message sends no ABORT), releases the
// connection's slot, then closes.
func (c *negotiatingConn) Close() error {
	c.mu.Lock()
	hook := c.onClose
	first := !c.closed
	c.closed = true
	c.mu.Unlock()
	if first {
		if hook != nil {
			hook()
		}
		c.pending, c.buf, c.wbuf = nil, nil, nil
		c.srv.event("close")
		c.srv.connClosed()
	}
	err := c.Conn.Close()
	if !first && errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

// negotiated returns the protocol flags both sides agreed on.
func (c *negotiatingConn) negotiated() gomilter.OptProtocol {
	return gomilter.OptProtocol(c.effective.Load())
}
