package milter

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/textproto"
	"runtime/debug"
	"strings"

	gomilter "github.com/emersion/go-milter"

	"github.com/authmilter/authmilter/policy"
)

// maxHeaderBytes bounds the header we keep per message. Postfix's own
// header_size_limit is 100 KiB; a larger header is not signed or verified.
const maxHeaderBytes = 1 << 20

// session is one MTA connection. go-milter calls it from one goroutine.
type session struct {
	srv  *Server
	conn *negotiatingConn

	// Connection data, kept across transactions. go-milter replaces its
	// macro map on every macro command, so what we need is copied here.
	clientIP   netip.Addr
	clientHost string
	helo       string
	daemonName string

	tx *transaction
}

// transaction is one message.
type transaction struct {
	pol         *policy.Policy
	env         policy.Envelope
	header      []policy.HeaderField
	headerBytes int
	tooBig      bool
	msg         *policy.Message
}

func (s *Server) newSession(c *negotiatingConn) *session {
	ss := &session{srv: s, conn: c}
	if c != nil {
		s.conns.Add(1)
		// go-milter closes the conn from the session goroutine, so the
		// hook runs where every callback runs.
		c.mu.Lock()
		c.onClose = func() {
			ss.endTransaction()
			s.conns.Add(-1)
		}
		c.mu.Unlock()
	}
	return ss
}

// leadingSpace reports whether header values arrive with the whitespace
// after the colon (SMFIP_HDR_LEADSPC negotiated).
func (ss *session) leadingSpace() bool {
	return ss.conn != nil && ss.conn.negotiated()&gomilter.OptHeaderLeadingSpace != 0
}

// takeMacros copies the macros of the current stage that we use.
func (ss *session) takeMacros(m *gomilter.Modifier) {
	if m == nil || m.Macros == nil {
		return
	}
	if v := m.Macros["{daemon_name}"]; v != "" {
		ss.daemonName = v
	}
	if ss.tx == nil {
		return
	}
	if v := m.Macros["i"]; v != "" && ss.tx.env.QueueID == "" {
		ss.tx.env.QueueID = v
	}
	if v := m.Macros["{auth_authen}"]; v != "" {
		ss.tx.env.AuthUser = v
	}
}

// guard turns a panic in a callback into a logged internal error, so that
// one broken message never takes the daemon down.
func (ss *session) guard(stage string, resp *gomilter.Response) {
	v := recover()
	if v == nil {
		return
	}
	queue := ""
	if ss.tx != nil {
		queue = ss.tx.env.QueueID
	}
	ss.srv.Logger.Error("internal error", "queue", queue, "stage", stage, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
	*resp = ss.internalError()
	ss.endTransaction()
}

func (ss *session) internalError() gomilter.Response {
	if ss.tx != nil && ss.tx.pol != nil && ss.tx.pol.Config().OnInternalError == "accept" {
		return gomilter.RespContinue
	}
	// A reply code rather than RespTempFail: go-milter drops the session's
	// connection data after a non-continue response.
	return gomilter.NewResponseStr(byte(gomilter.ActReplyCode), "451 4.7.0 authmilter: temporary internal error")
}

func (ss *session) Connect(host, family string, port uint16, addr net.IP, m *gomilter.Modifier) (resp gomilter.Response, err error) {
	defer ss.guard("connect", &resp)
	ss.clientHost = host
	ss.clientIP = netip.Addr{}
	if a, ok := netip.AddrFromSlice(addr); ok {
		ss.clientIP = a.Unmap()
	}
	ss.takeMacros(m)
	return gomilter.RespContinue, nil
}

func (ss *session) Helo(name string, m *gomilter.Modifier) (resp gomilter.Response, err error) {
	defer ss.guard("helo", &resp)
	ss.helo = name
	ss.takeMacros(m)
	return gomilter.RespContinue, nil
}

func (ss *session) MailFrom(from string, m *gomilter.Modifier) (resp gomilter.Response, err error) {
	defer ss.guard("mail", &resp)
	ss.endTransaction() // a MAIL without ABORT after the previous message
	ss.srv.inflight.Add(1)
	ss.tx = &transaction{
		pol: ss.srv.Policy(),
		env: policy.Envelope{
			ClientIP:   ss.clientIP,
			ClientHost: ss.clientHost,
			Helo:       ss.helo,
			MailFrom:   from,
		},
	}
	ss.takeMacros(m)
	ss.tx.env.DaemonName = ss.daemonName
	return gomilter.RespContinue, nil
}

func (ss *session) RcptTo(rcpt string, m *gomilter.Modifier) (resp gomilter.Response, err error) {
	defer ss.guard("rcpt", &resp)
	if ss.tx != nil {
		ss.tx.env.Rcpts = append(ss.tx.env.Rcpts, rcpt)
	}
	ss.takeMacros(m)
	return gomilter.RespContinue, nil
}

// Header records one field. The value is rebuilt as the receiver will see
// it: with SMFIP_HDR_LEADSPC the MTA sends it whole; without, Postfix and
// Sendmail strip one leading space (never a tab), which we put back. Folds
// arrive as LF and go back to CRLF.
func (ss *session) Header(name, value string, m *gomilter.Modifier) (resp gomilter.Response, err error) {
	defer ss.guard("header", &resp)
	ss.takeMacros(m)
	if ss.tx != nil && !ss.tx.tooBig {
		if !ss.leadingSpace() {
			value = " " + value
		}
		value = toCRLF(value)
		ss.tx.headerBytes += len(name) + len(value) + 3
		if ss.tx.headerBytes > maxHeaderBytes {
			ss.tx.tooBig = true
			ss.tx.header = nil
		} else {
			ss.tx.header = append(ss.tx.header, policy.HeaderField{Name: name, Value: value})
		}
	}
	if ss.conn != nil && ss.conn.negotiated()&gomilter.OptNoHeaderReply != 0 {
		return nil, nil
	}
	return gomilter.RespContinue, nil
}

// toCRLF turns bare LF line ends into CRLF, leaving existing CRLF alone.
func toCRLF(s string) string {
	if !strings.Contains(s, "\n") {
		return s
	}
	s = strings.ReplaceAll(s, "\r\n", "\n")
	return strings.ReplaceAll(s, "\n", "\r\n")
}

func (ss *session) Headers(_ textproto.MIMEHeader, m *gomilter.Modifier) (resp gomilter.Response, err error) {
	defer ss.guard("eoh", &resp)
	ss.takeMacros(m)
	if ss.tx != nil && !ss.tx.tooBig {
		ss.tx.msg = ss.tx.pol.Begin(&ss.tx.env, ss.tx.header)
	}
	return gomilter.RespContinue, nil
}

func (ss *session) BodyChunk(chunk []byte, m *gomilter.Modifier) (resp gomilter.Response, err error) {
	defer ss.guard("body", &resp)
	if ss.tx != nil && ss.tx.msg != nil {
		ss.tx.msg.Write(chunk)
	}
	return gomilter.RespContinue, nil
}

// Body is the end of the message: the policy decides and we apply.
func (ss *session) Body(m *gomilter.Modifier) (resp gomilter.Response, err error) {
	defer ss.guard("eom", &resp)
	ss.takeMacros(m)
	tx := ss.tx
	if tx == nil {
		return gomilter.RespContinue, nil
	}
	defer ss.endTransaction()
	var d *policy.Decision
	if tx.msg == nil {
		// No EOH seen (header too large, or a broken MTA sequence).
		d = &policy.Decision{Action: policy.Accept}
		reason := "no end of header"
		if tx.tooBig {
			reason = fmt.Sprintf("header larger than %d bytes", maxHeaderBytes)
		}
		d.Log = []slog.Attr{slog.String("queue", tx.env.QueueID), slog.String("error", reason+"; not processed")}
	} else {
		d = tx.msg.Finish()
		tx.msg = nil
	}
	resp, err = ss.apply(d, m)
	level := slog.LevelInfo
	if err != nil {
		level = slog.LevelError
		d.Log = append(d.Log, slog.String("error", err.Error()))
		resp = ss.internalError()
		err = nil
	}
	ss.srv.Logger.LogAttrs(context.Background(), level, "message", d.Log...)
	if ss.srv.Observer != nil {
		ss.srv.Observer.MessageDone(d, level == slog.LevelError)
	}
	return resp, nil
}

// apply turns a decision into milter actions. Fields are inserted at index 0
// one by one from the bottom up so the first ends on top, above even the
// MTA's own Received field (Postfix counts it in insert indexes).
func (ss *session) apply(d *policy.Decision, m *gomilter.Modifier) (gomilter.Response, error) {
	for i := len(d.DeleteAuthResults) - 1; i >= 0; i-- {
		if err := m.ChangeHeader(d.DeleteAuthResults[i], "Authentication-Results", ""); err != nil {
			return nil, fmt.Errorf("delete header: %w", err)
		}
	}
	for i := len(d.Prepend) - 1; i >= 0; i-- {
		f := d.Prepend[i]
		// With SMFIP_HDR_LEADSPC the MTA writes "name:" + value verbatim
		// (observed with Postfix 3.7); without it, it writes "name: " + value.
		// Either way the field arrives as the policy signed it. go-milter
		// turns CRLF into LF.
		value := f.Value
		if !ss.leadingSpace() {
			value = strings.TrimPrefix(value, " ")
		}
		if err := m.InsertHeader(0, f.Name, value); err != nil {
			return nil, fmt.Errorf("insert header: %w", err)
		}
	}
	switch d.Action {
	case policy.Reject, policy.TempFail:
		return gomilter.NewResponseStr(byte(gomilter.ActReplyCode),
			fmt.Sprintf("%d %s %s", d.SMTPCode, d.SMTPStatus, d.SMTPText)), nil
	case policy.Quarantine:
		if err := m.Quarantine(d.QuarantineReason); err != nil {
			return nil, fmt.Errorf("quarantine: %w", err)
		}
	}
	// Continue at end of message means accept, and unlike RespAccept it
	// keeps go-milter from discarding this session's connection data.
	return gomilter.RespContinue, nil
}

func (ss *session) Abort(m *gomilter.Modifier) error {
	ss.endTransaction()
	return nil
}

// endTransaction releases the current transaction, if any.
func (ss *session) endTransaction() {
	if ss.tx == nil {
		return
	}
	if ss.tx.msg != nil {
		ss.tx.msg.Abort()
	}
	ss.tx = nil
	ss.srv.inflight.Add(-1)
}
