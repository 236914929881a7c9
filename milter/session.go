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

	// macros are the name, value pairs of the last macro command: the
	// MTA sends a stage's macros right before the stage's command.
	macros []string

	tx *transaction
	// failed is the reply owed for an internal error in a command of the
	// transaction that takes no reply (see reply); the next reply is this
	// one. It goes with the transaction.
	failed gomilter.Response
	// connFailed is the same for connect and HELO: every message of the
	// connection is answered with it.
	connFailed gomilter.Response
}

// transaction is one message.
type transaction struct {
	pol    *policy.Policy
	env    policy.Envelope
	header []policy.HeaderField
	// headerBytes and fields count the whole header as received, kept or
	// not; tooBig is set once headerBytes exceeds limits.max_header_bytes,
	// and from then on no field is kept.
	headerBytes int
	fields      int
	tooBig      bool
	// authResults tracks every Authentication-Results field, kept or not,
	// so that forged ones are deleted whatever the header's size.
	authResults []policy.AuthResultsField
	tooManyAR   bool
	// eoh is set at the end of the header; badOrder names the first
	// command that came out of order.
	eoh      bool
	badOrder string
	msg      *policy.Message
}

func (s *Server) newSession(c *negotiatingConn) *session {
	ss := &session{srv: s, conn: c}
	if c != nil {
		// go-milter reads and closes the conn from the session goroutine,
		// so the hooks run where every callback runs.
		c.mu.Lock()
		c.onClose = ss.endTransaction
		c.mu.Unlock()
		c.onHeader = ss.header
		c.onCommand = ss.command
		c.logf = ss.logConn
	}
	return ss
}

// leadingSpace reports whether header values arrive with the whitespace
// after the colon (SMFIP_HDR_LEADSPC negotiated).
func (ss *session) leadingSpace() bool {
	return ss.conn != nil && ss.conn.negotiated()&gomilter.OptHeaderLeadingSpace != 0
}

// setMacros records the macros of one stage, replacing the previous
// stage's, and takes the queue ID from the header stage's (Postfix sends
// it there; no callback follows header fields).
func (ss *session) setMacros(stage byte, kv []string) {
	ss.macros = kv
	if stage == byte(gomilter.CodeHeader) {
		ss.headerMacros(kv)
	}
}

// macro returns the value of macro name in the current stage's macros.
func (ss *session) macro(name string) string {
	for i := 0; i+1 < len(ss.macros); i += 2 {
		if ss.macros[i] == name {
			return ss.macros[i+1]
		}
	}
	return ""
}

// takeMacros copies the macros of the current stage that we use.
func (ss *session) takeMacros() {
	if v := ss.macro("{daemon_name}"); v != "" {
		ss.daemonName = v
	}
	if ss.tx == nil {
		return
	}
	if v := ss.macro("i"); v != "" && ss.tx.env.QueueID == "" {
		ss.tx.env.QueueID = v
	}
	if v := ss.macro("{auth_authen}"); v != "" {
		ss.tx.env.AuthUser = v
	}
}

// guard turns a panic in a callback into a logged internal error, so that
// one broken message never takes the daemon down.
func (ss *session) guard(stage string, resp *gomilter.Response) {
	ss.contain(stage, recover(), resp)
}

// contain logs a recovered panic v, if any, and sets the reply.
func (ss *session) contain(stage string, v any, resp *gomilter.Response) {
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

// takeFailure returns and clears the reply owed for an earlier internal
// error in the transaction, if any, or else the connection's.
func (ss *session) takeFailure() gomilter.Response {
	r := ss.failed
	ss.failed = nil
	if r == nil {
		r = ss.connFailed
	}
	return r
}

func (ss *session) internalError() gomilter.Response {
	if ss.tx != nil && ss.tx.pol != nil && ss.tx.pol.Config().OnInternalError == "accept" {
		return gomilter.RespContinue
	}
	// A reply code rather than RespTempFail: go-milter drops the session's
	// connection data after a non-continue response.
	return gomilter.NewResponseStr(byte(gomilter.ActReplyCode), "451 4.7.0 authmilter: temporary internal error")
}

// answered makes d say what the MTA was told when on_internal_error
// replaced the decision's answer with resp: a tempfailed message is
// retried, so the observers (metrics, reports) must not count it as
// accepted, signed or sent unsigned.
func answered(d *policy.Decision, resp gomilter.Response) {
	if resp == gomilter.RespContinue {
		return // on_internal_error = accept: the decision's answer stands
	}
	d.Action, d.SMTPCode, d.SMTPStatus = policy.TempFail, 451, "4.7.0"
	d.Signatures, d.UnsignedReason = 0, ""
}

func (ss *session) Connect(host, family string, port uint16, addr net.IP, m *gomilter.Modifier) (resp gomilter.Response, err error) {
	defer ss.guard("connect", &resp)
	ss.clientHost = host
	ss.clientIP = netip.Addr{}
	if a, ok := netip.AddrFromSlice(addr); ok {
		ss.clientIP = a.Unmap()
	}
	ss.takeMacros()
	return gomilter.RespContinue, nil
}

func (ss *session) Helo(name string, m *gomilter.Modifier) (resp gomilter.Response, err error) {
	defer ss.guard("helo", &resp)
	ss.helo = name
	ss.takeMacros()
	return gomilter.RespContinue, nil
}

func (ss *session) MailFrom(from string, m *gomilter.Modifier) (resp gomilter.Response, err error) {
	defer ss.guard("mail", &resp)
	ss.failed = nil     // owed by the previous transaction, which is over
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
	ss.takeMacros()
	ss.tx.env.DaemonName = ss.daemonName
	return gomilter.RespContinue, nil
}

func (ss *session) RcptTo(rcpt string, m *gomilter.Modifier) (resp gomilter.Response, err error) {
	defer ss.guard("rcpt", &resp)
	if ss.tx != nil {
		ss.tx.env.Rcpts = append(ss.tx.env.Rcpts, rcpt)
	}
	ss.takeMacros()
	return gomilter.RespContinue, nil
}

// Header is go-milter's header callback. It is never called: header
// packets are handed to header by negotiatingConn instead (see there).
func (ss *session) Header(name, value string, m *gomilter.Modifier) (gomilter.Response, error) {
	return nil, nil
}

// header records one field. The value is rebuilt as the receiver will see
// it: with SMFIP_HDR_LEADSPC the MTA sends it whole; without, Postfix and
// Sendmail strip one leading space (never a tab), which we put back. Folds
// arrive as LF and go back to CRLF. Past limits.max_header_bytes nothing
// is kept but the count and the Authentication-Results fields.
func (ss *session) header(name, value string) {
	defer func() {
		// Not a go-milter callback, so not under guard: a panic here is
		// answered at the next command that takes a reply.
		if v := recover(); v != nil {
			var resp gomilter.Response
			ss.contain("header", v, &resp)
			ss.failed = resp
		}
	}()
	tx := ss.tx
	if tx == nil {
		return // outside a transaction: nothing to attach it to
	}
	if tx.eoh {
		tx.orderError("header field after the end of the header")
		return
	}
	if !ss.leadingSpace() {
		value = " " + value
	}
	tx.fields++
	tx.headerBytes += len(name) + len(value) + 3
	if strings.EqualFold(name, "Authentication-Results") {
		if len(tx.authResults) < policy.MaxTrackedAuthResults {
			v, trunc := value, false
			if len(v) > policy.AuthResultsPrefix {
				v, trunc = strings.Clone(v[:policy.AuthResultsPrefix]), true
			}
			// Every field up to the cap is tracked, so its occurrence
			// number is its place in the list.
			tx.authResults = append(tx.authResults, policy.AuthResultsField{N: len(tx.authResults) + 1, Value: v, Truncated: trunc})
		} else {
			tx.tooManyAR = true
		}
	}
	if tx.tooBig {
		return
	}
	if tx.headerBytes > tx.pol.Config().Limits.MaxHeaderBytes {
		tx.tooBig = true
		tx.header = nil
		return
	}
	tx.header = append(tx.header, policy.HeaderField{Name: name, Value: toCRLF(value)})
}

// headerMacros takes the queue ID from the header stage's macros.
func (ss *session) headerMacros(kv []string) {
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i] == "i" && kv[i+1] != "" && ss.tx != nil && ss.tx.env.QueueID == "" {
			ss.tx.env.QueueID = kv[i+1]
		}
	}
}

// orderError records the first command that came out of order.
func (tx *transaction) orderError(what string) {
	if tx.badOrder == "" {
		tx.badOrder = what
	}
}

// logConn logs a connection-level problem with what is known of the
// session.
func (ss *session) logConn(msg string, args ...any) {
	attrs := []any{"client", ss.clientIP.String()}
	if ss.tx != nil && ss.tx.env.QueueID != "" {
		attrs = append(attrs, "queue", ss.tx.env.QueueID)
	}
	ss.srv.Logger.Warn(msg, append(attrs, args...)...)
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
	if r := ss.takeFailure(); r != nil {
		return r, nil
	}
	ss.takeMacros()
	tx := ss.tx
	if tx == nil {
		return gomilter.RespContinue, nil
	}
	if tx.eoh {
		// A second EOH must not start a second evaluation (each one holds
		// a verifier goroutine until the end of the message).
		tx.orderError("end of header repeated")
		return gomilter.RespContinue, nil
	}
	tx.eoh = true
	if !tx.tooBig && tx.badOrder == "" {
		tx.msg = tx.pol.Begin(&tx.env, tx.header)
	}
	return gomilter.RespContinue, nil
}

func (ss *session) BodyChunk(chunk []byte, m *gomilter.Modifier) (resp gomilter.Response, err error) {
	defer ss.guard("body", &resp)
	if r := ss.takeFailure(); r != nil {
		return r, nil
	}
	if ss.tx == nil {
		return gomilter.RespContinue, nil
	}
	if !ss.tx.eoh {
		ss.tx.orderError("body before the end of the header")
	}
	if ss.tx.msg != nil {
		ss.tx.msg.Write(chunk)
	}
	return gomilter.RespContinue, nil
}

// Body is go-milter's end-of-message callback. go-milter never calls it
// for a connection that negotiatingConn wraps (see answeredHere).
func (ss *session) Body(m *gomilter.Modifier) (gomilter.Response, error) {
	return ss.endOfMessage(m)
}

// endOfMessage is the end of the message: the policy decides and we apply
// the decision with m.
func (ss *session) endOfMessage(m fieldModifier) (resp gomilter.Response, err error) {
	defer ss.guard("eom", &resp)
	if r := ss.takeFailure(); r != nil {
		return r, nil
	}
	ss.takeMacros()
	tx := ss.tx
	if tx == nil {
		return gomilter.RespContinue, nil
	}
	defer ss.endTransaction()
	if !tx.eoh {
		tx.orderError("end of message without end of header")
	}
	var d *policy.Decision
	switch {
	case tx.badOrder != "":
		d = tx.pol.Unevaluated(&tx.env, tx.unevaluated(policy.ReasonProtocolOrder, tx.badOrder))
	case tx.tooBig || tx.tooManyAR:
		d = tx.pol.Unevaluated(&tx.env, tx.unevaluated(policy.ReasonHeaderTooLarge,
			fmt.Sprintf("header larger than %d bytes", tx.pol.Config().Limits.MaxHeaderBytes)))
	default:
		d = tx.msg.Finish()
		tx.msg = nil
	}
	resp, err = ss.apply(d, m)
	level := slog.LevelInfo
	if err != nil {
		level = slog.LevelError
		d.Log = append(d.Log, slog.String("error", err.Error()))
		resp = ss.internalError()
		answered(d, resp)
		err = nil
	} else if d.InternalError {
		// The policy failed on this message (a key's signer): its decision
		// stands except that, where it accepts, on_internal_error answers.
		level = slog.LevelError
		d.Log = append(d.Log, slog.String("on_internal_error", tx.pol.Config().OnInternalError))
		if d.Action == policy.Accept {
			resp = ss.internalError()
			answered(d, resp)
		}
	}
	ss.srv.Logger.LogAttrs(context.Background(), level, "message", d.Log...)
	if ss.srv.Observer != nil {
		ss.srv.Observer.MessageDone(d, level == slog.LevelError)
	}
	return resp, nil
}

func (tx *transaction) unevaluated(reason, detail string) policy.Unevaluated {
	if tx.tooManyAR {
		detail = fmt.Sprintf("more than %d Authentication-Results fields", policy.MaxTrackedAuthResults)
	}
	return policy.Unevaluated{Reason: reason, Detail: detail, Header: tx.header, HeaderBytes: tx.headerBytes, Fields: tx.fields,
		AuthResults: tx.authResults, TooManyAuthResults: tx.tooManyAR}
}

// apply turns a decision into milter actions. Fields are inserted at index 0
// one by one from the bottom up so the first ends on top, above even the
// MTA's own Received field (Postfix counts it in insert indexes).
func (ss *session) apply(d *policy.Decision, m fieldModifier) (gomilter.Response, error) {
	for i := len(d.DeleteAuthResults) - 1; i >= 0; i-- {
		if err := m.ChangeHeader(d.DeleteAuthResults[i], "Authentication-Results", ""); err != nil {
			return nil, fmt.Errorf("delete header: %w", err)
		}
	}
	for i := len(d.Prepend) - 1; i >= 0; i-- {
		f := d.Prepend[i]
		// With SMFIP_HDR_LEADSPC the MTA writes "name:" + value verbatim
		// (observed with Postfix 3.7); without it, it writes "name: " + value.
		// Either way the field arrives as the policy signed it. connModifier
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
	ss.failed = nil
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
