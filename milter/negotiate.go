package milter

import (
	"bufio"
	"encoding/binary"
	"io"
	"net"
	"sync"

	gomilter "github.com/emersion/go-milter"
)

// negotiatingConn sits between go-milter and the MTA's connection to fix one
// gap of go-milter v0.5.0: it answers option negotiation with the protocol
// flags it was configured with, without masking them by what the MTA
// offered, and tells the milter nothing about the outcome. We read the MTA's
// SMFIC_OPTNEG, mask our reply with it, and record which flags are in effect
// (SMFIP_HDR_LEADSPC decides how header values must be rebuilt;
// SMFIP_NR_HDR whether header callbacks may be answered). Nothing else of the
// stream is touched.
type negotiatingConn struct {
	net.Conn
	// br buffers reads: go-milter reads each packet's length and payload
	// with separate unbuffered reads, two system calls per packet.
	br *bufio.Reader

	mu        sync.Mutex
	readBuf   []byte // the MTA's OPTNEG packet, replayed to go-milter
	readDone  bool
	writeDone bool
	offered   gomilter.OptProtocol
	mtaVer    uint32
	effective gomilter.OptProtocol
	onClose   func()
	closed    bool
}

const optNegLen = 13 // 'O' + version + actions + protocol

func (c *negotiatingConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.br == nil {
		c.br = bufio.NewReaderSize(c.Conn, readBufferSize)
	}
	if !c.readDone {
		c.readDone = true
		var hdr [4]byte
		if _, err := io.ReadFull(c.br, hdr[:]); err != nil {
			return 0, err
		}
		n := binary.BigEndian.Uint32(hdr[:])
		// A packet larger than go-milter's own limit is passed on unread:
		// go-milter rejects it itself.
		if n == 0 || n > 1<<20 {
			c.readBuf = hdr[:]
		} else {
			data := make([]byte, n)
			if _, err := io.ReadFull(c.br, data); err != nil {
				return 0, err
			}
			if n >= optNegLen && data[0] == byte(gomilter.CodeOptNeg) {
				c.mtaVer = binary.BigEndian.Uint32(data[1:5])
				c.offered = gomilter.OptProtocol(binary.BigEndian.Uint32(data[9:13]))
			}
			c.readBuf = append(hdr[:], data...)
		}
	}
	if len(c.readBuf) > 0 {
		n := copy(p, c.readBuf)
		c.readBuf = c.readBuf[n:]
		return n, nil
	}
	return c.br.Read(p)
}

// readBufferSize holds many small packets (macros, headers, commands) in
// one read; body chunks larger than it are read straight into go-milter's
// buffer by bufio.
const readBufferSize = 8 << 10

func (c *negotiatingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	if !c.writeDone {
		c.writeDone = true
		// go-milter writes each packet with one buffered flush, so the reply
		// arrives whole: length, 'O', version, actions, protocol[, macros].
		if len(p) >= 4+optNegLen && p[4] == byte(gomilter.CodeOptNeg) {
			ours := gomilter.OptProtocol(binary.BigEndian.Uint32(p[13:17]))
			c.effective = ours & c.offered
			q := append([]byte(nil), p...)
			// go-milter claims version 2 but asks for version 6 flags
			// (SMFIP_NR_HDR, SMFIP_HDR_LEADSPC). Postfix honours them
			// anyway; stricter MTAs (and go-milter's own client) refuse a
			// version 2 answer that carries them. Everything go-milter's
			// server does is valid version 6, so we say 6 when the MTA
			// speaks it.
			if c.mtaVer >= 6 {
				binary.BigEndian.PutUint32(q[5:9], 6)
			}
			binary.BigEndian.PutUint32(q[13:17], uint32(c.effective))
			c.mu.Unlock()
			if _, err := c.Conn.Write(q); err != nil {
				return 0, err
			}
			return len(p), nil
		}
	}
	c.mu.Unlock()
	return c.Conn.Write(p)
}

// Close runs the session's close hook once (go-milter has none, and an MTA
// that drops the connection mid-message sends no ABORT), then closes.
func (c *negotiatingConn) Close() error {
	c.mu.Lock()
	hook := c.onClose
	first := !c.closed
	c.closed = true
	c.mu.Unlock()
	if first && hook != nil {
		hook()
	}
	return c.Conn.Close()
}

// negotiated returns the protocol flags both sides agreed on.
func (c *negotiatingConn) negotiated() gomilter.OptProtocol {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.effective
}
