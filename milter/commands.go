package milter

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"strings"

	gomilter "github.com/emersion/go-milter"
)

// answeredHere reports whether negotiatingConn handles command code itself
// instead of handing it to go-milter. go-milter v0.5.0 allocates a copy of
// every packet, a map per macro packet and a 4 KiB write buffer for every
// reply: with ten or more commands and replies per message that was most
// of the garbage a signed message makes, and with a 100,000-domain key
// table in the heap each collection costs a pass over the whole table.
// Only option negotiation (go-milter's reply, which negotiatingConn
// amends) and quit go to it.
func answeredHere(code byte) bool {
	switch gomilter.Code(code) {
	case gomilter.CodeConn, gomilter.CodeHelo, gomilter.CodeMail, gomilter.CodeRcpt,
		gomilter.CodeData, gomilter.CodeEOH, gomilter.CodeBody, gomilter.CodeEOB,
		gomilter.CodeMacro, gomilter.CodeAbort:
		return true
	}
	return false
}

// allNoReply are the SMFIP_NR_* flags of every command that we answer
// only with continue before the end of the message. Nothing we decide
// needs an earlier answer: the verdict is given at the end of the message,
// and an internal error on the way is owed there (session.reply).
const allNoReply = gomilter.OptNoConnReply | gomilter.OptNoHeloReply | gomilter.OptNoMailReply |
	gomilter.OptNoRcptReply | gomilter.OptNoHeaderReply | gomilter.OptNoEOHReply | gomilter.OptNoBodyReply

// noReplyOption returns the SMFIP_NR_* flag that spares command code its
// reply (0 for the commands that always have one, or never).
func noReplyOption(code gomilter.Code) gomilter.OptProtocol {
	switch code {
	case gomilter.CodeConn:
		return gomilter.OptNoConnReply
	case gomilter.CodeHelo:
		return gomilter.OptNoHeloReply
	case gomilter.CodeMail:
		return gomilter.OptNoMailReply
	case gomilter.CodeRcpt:
		return gomilter.OptNoRcptReply
	case gomilter.CodeHeader:
		return gomilter.OptNoHeaderReply
	case gomilter.CodeEOH:
		return gomilter.OptNoEOHReply
	case gomilter.CodeBody:
		return gomilter.OptNoBodyReply
	}
	return 0
}

// command runs one command that answeredHere accepts, parsed exactly as
// go-milter's session would, and returns the reply (nil: none is sent).
// data is only valid during the call: a body chunk is not retained.
func (ss *session) command(code byte, data []byte) (gomilter.Response, error) {
	resp, err := ss.run(code, data)
	return ss.reply(gomilter.Code(code), resp), err
}

// reply returns what to send for resp, the answer to command code: nothing
// when the MTA agreed that code is not answered. A non-continue answer
// that cannot be sent is owed at the next command that takes a reply (the
// end of the message): for connect and HELO, at every message of the
// connection, as the MTA would have refused them all.
func (ss *session) reply(code gomilter.Code, resp gomilter.Response) gomilter.Response {
	opt := noReplyOption(code)
	if opt == 0 || ss.conn == nil || ss.conn.negotiated()&opt == 0 {
		return resp
	}
	if resp != nil && resp != gomilter.RespContinue {
		switch {
		case code == gomilter.CodeConn || code == gomilter.CodeHelo:
			if ss.connFailed == nil {
				ss.connFailed = resp
			}
		case ss.failed == nil:
			ss.failed = resp
		}
	}
	return nil
}

// run runs one command and returns its answer.
func (ss *session) run(code byte, data []byte) (gomilter.Response, error) {
	switch gomilter.Code(code) {
	case gomilter.CodeMacro:
		// checkCommand made sure the stage byte is there.
		ss.setMacros(data[0], splitCStrings(data[1:]))
		return nil, nil
	case gomilter.CodeConn:
		host, family, port, addr, short, err := parseConnect(data)
		if err != nil {
			return nil, err
		}
		if short {
			// go-milter's answer to a TCP family without a port.
			return gomilter.RespTempFail, nil
		}
		return ss.Connect(host, family, port, addr, nil)
	case gomilter.CodeHelo:
		return ss.Helo(strings.TrimSuffix(string(data), "\x00"), nil)
	case gomilter.CodeMail:
		return ss.MailFrom(strings.Trim(cString(data), "<>"), nil)
	case gomilter.CodeRcpt:
		return ss.RcptTo(strings.Trim(cString(data), "<>"), nil)
	case gomilter.CodeData:
		return gomilter.RespContinue, nil
	case gomilter.CodeEOH:
		return ss.Headers(nil, nil)
	case gomilter.CodeBody:
		return ss.BodyChunk(data, nil)
	case gomilter.CodeEOB:
		return ss.endOfMessage(connModifier{ss.conn})
	case gomilter.CodeAbort:
		return nil, ss.Abort(nil)
	}
	return nil, fmt.Errorf("%w: command %q not handled", errProtocol, code)
}

// connectFamilies are the SMFIC_CONNECT family codes, named as go-milter
// names them for Milter.Connect.
var connectFamilies = map[byte]string{'U': "unknown", 'L': "unix", '4': "tcp4", '6': "tcp6"}

// parseConnect parses SMFIC_CONNECT: "host\0", family, port (for 4 and 6),
// "address\0". short is set for a TCP family without its port.
func parseConnect(data []byte) (host, family string, port uint16, addr net.IP, short bool, err error) {
	h, rest, ok := bytes.Cut(data, []byte{0})
	if !ok || len(rest) == 0 {
		return "", "", 0, nil, false, fmt.Errorf("%w: malformed connect packet", errProtocol)
	}
	fam := rest[0]
	rest = rest[1:]
	if fam == '4' || fam == '6' {
		if len(rest) < 2 {
			return string(h), "", 0, nil, true, nil
		}
		port = binary.BigEndian.Uint16(rest)
		rest = rest[2:]
	}
	return string(h), connectFamilies[fam], port, net.ParseIP(cString(rest)), false, nil
}

// cString returns data up to its first NUL (all of it without one).
func cString(data []byte) string {
	if i := bytes.IndexByte(data, 0); i >= 0 {
		data = data[:i]
	}
	return string(data)
}
