// Package miltertest drives a milter the way Postfix does, for integration
// and interoperability tests.
//
// It is a milter client (the MTA side) built on go-milter's ClientSession,
// with the details that matter for DKIM taken from Postfix 3.x
// (src/milter/milter8.c and src/cleanup/cleanup_milter.c):
//
//   - Option negotiation offers what Postfix offers for protocol version 6
//     (SMFIP_HDR_LEADSPC only when asked for), except SMFIF_SETSYMLIST (the
//     driver sends its own macro lists) and SMFIP_SKIP (go-milter's client
//     cannot parse SMFIR_SKIP). A milter that answers with an older
//     version is accepted, as by Postfix, and not sent the events its
//     version lacks: no DATA below version 4 (go-milter's server speaks
//     version 2). The milter's event and no-reply flags are obeyed as it
//     sent them, as Postfix does.
//   - Macros are sent before every event of a stage, with the event's
//     command code, as Postfix does: connect ("j", "{daemon_name}",
//     "{daemon_addr}", "v", "_"), MAIL ("{mail_addr}", and "{auth_type}",
//     "{auth_authen}" with SMTP AUTH), RCPT ("{rcpt_addr}"), DATA, each
//     header and EOH ("i"), each body chunk and end of message ("i").
//   - Header fields are split and sent as Postfix sends them; see
//     SplitMessage and Field.Value.
//   - The body is sent in chunks of at most 65535 bytes, every chunk but the
//     last one full.
//   - Modifications are applied as Postfix applies them, including the way
//     Postfix counts its own invisible Received field; see Apply.
//   - After each message two SMFIC_ABORT commands are sent (observed with
//     Postfix 3.7), and SMFIC_QUIT when the connection is closed.
//
// Run drives one transaction on a new connection. NewConn and Conn.Do drive
// several transactions on one connection, as an MTA does for several
// messages in one SMTP session.
package miltertest

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-milter"
)

// MaxChunk is the largest body chunk the milter protocol allows (and the
// size of the chunks Postfix sends).
const MaxChunk = milter.MaxBodyChunk

// Macros are extra macros per stage, merged over the ones Transaction's
// fields produce. An empty value removes a macro (Postfix does not send
// macros that have no value).
type Macros struct {
	Connect map[string]string // with SMFIC_CONNECT
	Helo    map[string]string // with SMFIC_HELO
	Mail    map[string]string // with SMFIC_MAIL
	Rcpt    map[string]string // with each SMFIC_RCPT
	Data    map[string]string // with SMFIC_DATA
	EOH     map[string]string // with each SMFIC_HEADER and with SMFIC_EOH
	EOM     map[string]string // with each SMFIC_BODY and with SMFIC_BODYEOB
}

// Transaction describes one SMTP transaction as the MTA reports it.
type Transaction struct {
	// ClientHost is the SMTP client's verified host name. Empty means
	// "[ClientIP]", which is what Postfix sends for a client without
	// reverse DNS. Postfix's local submission (the sendmail command) uses
	// "localhost" and 127.0.0.1 port 0.
	ClientHost string
	// ClientIP is the SMTP client's address; empty means an unknown
	// address family (SMFIA_UNKNOWN).
	ClientIP string
	// ClientPort is the SMTP client's port.
	ClientPort uint16
	// Helo is the HELO/EHLO argument.
	Helo string
	// MailFrom is the envelope sender without angle brackets ("" is the
	// null sender).
	MailFrom string
	// MailArgs are ESMTP MAIL parameters, e.g. "BODY=8BITMIME".
	MailArgs []string
	// RcptTo are the envelope recipients, without angle brackets.
	RcptTo []string
	// QueueID is the MTA queue ID, sent as macro "i" with DATA, EOH and
	// end of message (not at MAIL, like Postfix over SMTP).
	QueueID string
	// Hostname is the MTA's name, macro "j" (default "mx.example.com").
	Hostname string
	// DaemonName is macro "{daemon_name}"; Postfix sends
	// milter_macro_daemon_name, which defaults to $myhostname, so the
	// default here is Hostname. Submission services typically set
	// "ORIGINATING".
	DaemonName string
	// AuthType and AuthAuthen are "{auth_type}" and "{auth_authen}", sent
	// with MAIL when the client authenticated.
	AuthType   string
	AuthAuthen string
	// Macros adds, overrides or removes macros per stage.
	Macros Macros
	// LeadingSpace makes Run offer SMFIP_HDR_LEADSPC, as Postfix does. A
	// milter that accepts it gets header values with their leading white
	// space, and the values it sends back are joined to the name without
	// an added space. (Whatever was offered, the milter's answer decides,
	// as in Postfix.) Conn.Do uses Options.LeadingSpace instead: the
	// negotiation happens once per connection.
	LeadingSpace bool
	// ChunkSize is the size of the body chunks (default and maximum
	// MaxChunk), to test chunk boundaries.
	ChunkSize int
	// Raw sends header fields and body exactly as they are in the message
	// instead of normalising line endings to CRLF as an MTA does.
	Raw bool
	// Received is the value of the MTA's own Received header field. Postfix
	// hides this field from milters but counts it when a milter inserts a
	// header at an index (see Apply). When set, Result.Message starts with
	// it; when empty, the field is still counted but left out of
	// Result.Message.
	Received string
}

// Result is the outcome of a transaction.
type Result struct {
	// Stage names the event whose reply decided the transaction:
	// "connect", "helo", "mail", "rcpt", "data", "header", "eoh", "body"
	// or "eom". It is "connection" when an earlier transaction's connect
	// or HELO reply already decided for the whole connection.
	Stage string
	// Action is the milter's decision. At end of message, Continue means
	// accept, as in Postfix.
	Action milter.Action
	// Modifications are the modification requests of the end of message
	// reply, in order.
	Modifications []milter.ModifyAction
	// RcptActions holds the reply to each RCPT (recipients the milter
	// rejected are left out of the transaction, as an MTA does).
	RcptActions []milter.Action
	// Message is the message as the MTA would deliver it, with the
	// modifications applied (see Apply); nil when the message is not
	// delivered (rejected, temporarily failed, discarded).
	Message []byte
	// MailFrom and RcptTo are the envelope after modifications.
	MailFrom string
	RcptTo   []string
	// Quarantine is the reason given by a quarantine request, if any.
	Quarantine string
	// HeaderValues are the (name, value) pairs exactly as sent in
	// SMFIC_HEADER, for tests of the splitting.
	HeaderValues [][2]string
}

// Accepted reports whether the MTA would deliver the message.
func (r *Result) Accepted() bool { return r.Message != nil }

// Options are per-connection settings.
type Options struct {
	// ReadTimeout and WriteTimeout bound each protocol read and write
	// (default 10s each, as go-milter's default client).
	ReadTimeout  time.Duration
	WriteTimeout time.Duration
	// LeadingSpace offers SMFIP_HDR_LEADSPC, as Postfix does.
	LeadingSpace bool
	// Aborts is the number of SMFIC_ABORT commands sent after each
	// transaction; 0 means 2 (Postfix 3.7), negative means none.
	Aborts int
	// StrayCheck is how long to wait, after each end-of-message reply, for
	// bytes the milter should not have sent (a milter that answers events
	// it negotiated not to answer desynchronises the protocol; Postfix
	// would then misread replies). 0 means 5ms, negative disables it.
	StrayCheck time.Duration
}

// Errors returned by the driver.
var (
	// ErrStray means the milter sent bytes after its end-of-message reply.
	ErrStray = errors.New("miltertest: milter sent data after its end-of-message reply")
	// ErrClosed means the connection was closed.
	ErrClosed = errors.New("miltertest: connection closed")
)

// OfferedActions and OfferedProtocol are the negotiation masks the driver
// offers: what Postfix's milter8.c offers for protocol version 6, less
// SMFIF_SETSYMLIST (the driver sends its own macro lists), SMFIP_SKIP
// (go-milter's client cannot parse SMFIR_SKIP) and SMFIP_HDR_LEADSPC, which
// is added when asked for.
const (
	OfferedActions = milter.OptAddHeader | milter.OptChangeBody | milter.OptAddRcpt |
		milter.OptRemoveRcpt | milter.OptChangeHeader | milter.OptQuarantine |
		milter.OptChangeFrom | milter.OptAddRcptWithArgs
	OfferedProtocol = milter.OptNoConnect | milter.OptNoHelo | milter.OptNoMailFrom |
		milter.OptNoRcptTo | milter.OptNoBody | milter.OptNoHeaders | milter.OptNoEOH |
		milter.OptNoUnknown | milter.OptNoData | milter.OptRcptRej |
		milter.OptNoHeaderReply | milter.OptNoConnReply | milter.OptNoHeloReply |
		milter.OptNoMailReply | milter.OptNoRcptReply | milter.OptNoDataReply |
		milter.OptNoUnknownReply | milter.OptNoEOHReply | milter.OptNoBodyReply
)

// Run connects to the milter at network/addr, drives one transaction and
// closes the connection.
func Run(ctx context.Context, network, addr string, tx Transaction, raw []byte) (*Result, error) {
	c, err := NewConn(ctx, network, addr, Options{LeadingSpace: tx.LeadingSpace})
	if err != nil {
		return nil, err
	}
	res, err := c.Do(ctx, tx, raw)
	if cerr := c.Close(); err == nil && cerr != nil {
		return res, cerr
	}
	return res, err
}

// Conn is one milter connection, used for one or more transactions as in
// one SMTP session. It is not safe for concurrent use.
type Conn struct {
	opts    Options
	sess    *milter.ClientSession
	raw     net.Conn
	version uint32

	connected bool   // CONNECT was sent
	helo      string // last HELO sent
	decided   *Result
	closed    bool
}

// recordingDialer dials with a context and remembers the connection, so
// that the driver can send what go-milter's client cannot (SMFIC_DATA,
// SMFIC_QUIT without a preceding abort) and learn the milter's version.
type recordingDialer struct {
	ctx      context.Context
	mu       sync.Mutex
	conn     *versionSniffer
	canceled bool
}

// Dial implements milter.Dialer.
func (d *recordingDialer) Dial(network, addr string) (net.Conn, error) {
	var nd net.Dialer
	c, err := nd.DialContext(d.ctx, network, addr)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.canceled {
		c.Close()
		return nil, d.ctx.Err()
	}
	d.conn = &versionSniffer{Conn: c}
	return d.conn, nil
}

// cancel closes the connection, or makes Dial fail if it has not returned.
func (d *recordingDialer) cancel() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.canceled = true
	if d.conn != nil {
		d.conn.Close()
	}
}

// versionSniffer records the protocol version of the milter's SMFIC_OPTNEG
// reply, which go-milter's client does not expose, and shows the client
// version 6 instead. go-milter's client refuses a milter of an older
// version unless the offer fits in that version's masks; Postfix accepts
// it and only stops sending the events the older version lacks (see
// Conn.do), which the driver does itself from the recorded version. The
// milter's reply is the first packet on the connection: its version is
// bytes 5 to 8 of the stream (after the length and the command code).
type versionSniffer struct {
	net.Conn
	pos     int // stream bytes read so far, up to 9
	version [4]byte
}

func (v *versionSniffer) Read(p []byte) (int, error) {
	n, err := v.Conn.Read(p)
	for k := 0; k < n && v.pos < 9; k++ {
		if v.pos >= 5 {
			v.version[v.pos-5] = p[k]
			p[k] = []byte{0, 0, 0, 6}[v.pos-5]
		}
		v.pos++
	}
	return n, err
}

// NewConn connects to the milter and negotiates options.
func NewConn(ctx context.Context, network, addr string, opts Options) (*Conn, error) {
	if opts.ReadTimeout == 0 {
		opts.ReadTimeout = 10 * time.Second
	}
	if opts.WriteTimeout == 0 {
		opts.WriteTimeout = 10 * time.Second
	}
	if opts.Aborts == 0 {
		opts.Aborts = 2
	}
	if opts.StrayCheck == 0 {
		opts.StrayCheck = 5 * time.Millisecond
	}
	proto := OfferedProtocol
	if opts.LeadingSpace {
		proto |= milter.OptHeaderLeadingSpace
	}
	d := &recordingDialer{ctx: ctx}
	cl := milter.NewClientWithOptions(network, addr, milter.ClientOptions{
		Dialer:       d,
		ReadTimeout:  opts.ReadTimeout,
		WriteTimeout: opts.WriteTimeout,
		ActionMask:   OfferedActions,
		ProtocolMask: proto,
	})
	stop := context.AfterFunc(ctx, d.cancel)
	sess, err := cl.Session()
	stop()
	if err != nil {
		d.cancel()
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", err, ctx.Err())
		}
		return nil, fmt.Errorf("miltertest: %s %s: %w", network, addr, err)
	}
	c := &Conn{opts: opts, sess: sess, raw: d.conn}
	c.version = binary.BigEndian.Uint32(d.conn.version[:])
	if c.version < 2 || c.version > 6 {
		c.raw.Close()
		return nil, fmt.Errorf("miltertest: %s %s: milter protocol version %d (Postfix speaks 2 to 6)", network, addr, c.version)
	}
	return c, nil
}

// Negotiated returns the action and protocol masks and the protocol
// version the milter answered with.
func (c *Conn) Negotiated() (milter.OptAction, milter.OptProtocol, uint32) {
	return c.sess.ActionOpts, c.sess.ProtocolOpts, c.version
}

// leadSpace reports whether header values keep their leading space.
func (c *Conn) leadSpace() bool {
	return c.sess.ProtocolOption(milter.OptHeaderLeadingSpace)
}

// Close sends SMFIC_QUIT and closes the connection.
func (c *Conn) Close() error {
	if c.closed {
		return nil
	}
	c.closed = true
	werr := writePacket(c.raw, byte(milter.CodeQuit), nil, c.opts.WriteTimeout)
	cerr := c.raw.Close()
	if werr != nil {
		return fmt.Errorf("miltertest: quit: %w", werr)
	}
	if cerr != nil {
		return fmt.Errorf("miltertest: close: %w", cerr)
	}
	return nil
}

// Do drives one transaction. The first transaction on a connection also
// sends CONNECT and HELO; later ones send HELO again only when tx.Helo
// differs from the previous one (as when an SMTP client says EHLO again).
func (c *Conn) Do(ctx context.Context, tx Transaction, raw []byte) (*Result, error) {
	if c.closed {
		return nil, ErrClosed
	}
	if c.decided != nil {
		r := *c.decided
		r.Stage = "connection"
		if r.Action.Code == milter.ActAccept {
			// Connection-level accept: no more milter events; the
			// message is delivered as is.
			msg := SplitMessage(raw, tx.Raw)
			fields, body := Apply(msg, nil, tx.Received, c.leadSpace(), tx.Raw)
			r.Message = Assemble(fields, msg.Separator, body)
			r.MailFrom, r.RcptTo = tx.MailFrom, append([]string(nil), tx.RcptTo...)
		}
		return &r, nil
	}
	chunk := tx.ChunkSize
	if chunk == 0 {
		chunk = MaxChunk
	}
	if chunk < 0 || chunk > MaxChunk {
		return nil, fmt.Errorf("miltertest: chunk size %d outside 1..%d", chunk, MaxChunk)
	}
	stop := context.AfterFunc(ctx, func() { c.raw.Close() })
	defer stop()
	res, err := c.do(tx, raw, chunk)
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", err, ctx.Err())
		}
		c.closed = true
		c.raw.Close()
		return nil, err
	}
	return res, nil
}

// final reports whether a reply ends the transaction.
func final(a *milter.Action) bool { return a.Code != milter.ActContinue }

func (c *Conn) do(tx Transaction, raw []byte, chunk int) (*Result, error) {
	s := c.sess
	res := &Result{MailFrom: tx.MailFrom}
	m := buildMacros(tx)

	if !c.connected {
		c.connected = true
		c.helo = tx.Helo
		host, family, ip := connectArgs(tx)
		if err := s.Macros(milter.CodeConn, m.connect...); err != nil {
			return nil, err
		}
		act, err := s.Conn(host, family, tx.ClientPort, ip)
		if err != nil {
			return nil, err
		}
		if final(act) {
			return c.decideConnection("connect", act, tx, raw)
		}
		if err := s.Macros(milter.CodeHelo, m.helo...); err != nil {
			return nil, err
		}
		act, err = s.Helo(tx.Helo)
		if err != nil {
			return nil, err
		}
		if final(act) {
			return c.decideConnection("helo", act, tx, raw)
		}
	} else if tx.Helo != c.helo {
		c.helo = tx.Helo
		if err := s.Macros(milter.CodeHelo, m.helo...); err != nil {
			return nil, err
		}
		act, err := s.Helo(tx.Helo)
		if err != nil {
			return nil, err
		}
		if final(act) {
			return c.decideConnection("helo", act, tx, raw)
		}
	}

	msg := SplitMessage(raw, tx.Raw)
	done, err := c.envelope(tx, m, res)
	if err != nil {
		return nil, err
	}
	if !done {
		if err := c.content(tx, m, msg, chunk, res); err != nil {
			return nil, err
		}
	}
	for i := 0; i < c.opts.Aborts; i++ {
		if err := s.Abort(); err != nil {
			return nil, fmt.Errorf("miltertest: abort: %w", err)
		}
	}
	if res.Message != nil || res.Action.Code == milter.ActAccept {
		if res.Message == nil {
			fields, body := Apply(msg, nil, tx.Received, c.leadSpace(), tx.Raw)
			res.Message = Assemble(fields, msg.Separator, body)
		}
	}
	return res, nil
}

// decideConnection records a connect- or HELO-stage decision, which holds
// for every later transaction on this connection.
func (c *Conn) decideConnection(stage string, act *milter.Action, tx Transaction, raw []byte) (*Result, error) {
	c.decided = &Result{Stage: stage, Action: *act}
	r := *c.decided
	if act.Code == milter.ActAccept {
		msg := SplitMessage(raw, tx.Raw)
		fields, body := Apply(msg, nil, tx.Received, c.leadSpace(), tx.Raw)
		r.Message = Assemble(fields, msg.Separator, body)
		r.MailFrom, r.RcptTo = tx.MailFrom, append([]string(nil), tx.RcptTo...)
	}
	return &r, nil
}

// envelope sends MAIL, RCPT and DATA. done reports that the transaction
// was decided.
func (c *Conn) envelope(tx Transaction, m macroSet, res *Result) (done bool, err error) {
	s := c.sess
	if err := s.Macros(milter.CodeMail, m.mail...); err != nil {
		return false, err
	}
	act, err := s.Mail(tx.MailFrom, tx.MailArgs)
	if err != nil {
		return false, err
	}
	if final(act) {
		res.Stage, res.Action = "mail", *act
		return true, nil
	}
	for _, rcpt := range tx.RcptTo {
		if err := s.Macros(milter.CodeRcpt, m.rcpt(rcpt)...); err != nil {
			return false, err
		}
		act, err := s.Rcpt(rcpt, nil)
		if err != nil {
			return false, err
		}
		res.RcptActions = append(res.RcptActions, *act)
		switch act.Code {
		case milter.ActContinue:
			res.RcptTo = append(res.RcptTo, rcpt)
		case milter.ActAccept, milter.ActDiscard:
			// Accept at RCPT accepts the message (no more events);
			// discard discards it.
			res.Stage, res.Action = "rcpt", *act
			res.RcptTo = append(res.RcptTo, rcpt)
			return true, nil
		}
	}
	if len(res.RcptTo) == 0 && len(tx.RcptTo) > 0 {
		res.Stage, res.Action = "rcpt", res.RcptActions[len(res.RcptActions)-1]
		return true, nil
	}
	// Postfix sends DATA only to milters of protocol version 4 or later.
	if c.version >= 4 {
		if err := s.Macros(milter.CodeData, m.data...); err != nil {
			return false, err
		}
		if !s.ProtocolOption(milter.OptNoData) {
			if err := writePacket(c.raw, byte(milter.CodeData), nil, c.opts.WriteTimeout); err != nil {
				return false, fmt.Errorf("miltertest: data: %w", err)
			}
			if !s.ProtocolOption(milter.OptNoDataReply) {
				act, err := readAction(c.raw, c.opts.ReadTimeout)
				if err != nil {
					return false, fmt.Errorf("miltertest: data: %w", err)
				}
				if final(act) {
					res.Stage, res.Action = "data", *act
					return true, nil
				}
			}
		}
	}
	return false, nil
}

// content sends header fields, body chunks and end of message, and
// applies the modifications.
func (c *Conn) content(tx Transaction, m macroSet, msg Message, chunk int, res *Result) error {
	s := c.sess
	lead := c.leadSpace()
	if !s.ProtocolOption(milter.OptNoHeaders) {
		for _, f := range msg.Fields {
			v := f.Value(lead)
			res.HeaderValues = append(res.HeaderValues, [2]string{f.Name, v})
			if err := s.Macros(milter.CodeHeader, m.eoh...); err != nil {
				return err
			}
			act, err := s.HeaderField(f.Name, v)
			if err != nil {
				return err
			}
			if final(act) {
				res.Stage, res.Action = "header", *act
				return nil
			}
		}
	}
	if !s.ProtocolOption(milter.OptNoEOH) {
		if err := s.Macros(milter.CodeEOH, m.eoh...); err != nil {
			return err
		}
		act, err := s.HeaderEnd()
		if err != nil {
			return err
		}
		if final(act) {
			res.Stage, res.Action = "eoh", *act
			return nil
		}
	}
	if !s.ProtocolOption(milter.OptNoBody) {
		for b := msg.Body; len(b) > 0; {
			n := min(chunk, len(b))
			if err := s.Macros(milter.CodeBody, m.eom...); err != nil {
				return err
			}
			act, err := s.BodyChunk(b[:n])
			if err != nil {
				return err
			}
			if final(act) {
				res.Stage, res.Action = "body", *act
				return nil
			}
			b = b[n:]
		}
	}
	if err := s.Macros(milter.CodeEOB, m.eom...); err != nil {
		return err
	}
	mods, act, err := s.End()
	if err != nil {
		return err
	}
	if err := c.strayCheck(); err != nil {
		return err
	}
	res.Stage, res.Action, res.Modifications = "eom", *act, mods
	switch act.Code {
	case milter.ActAccept, milter.ActContinue:
	default:
		return nil
	}
	for _, mod := range mods {
		switch mod.Code {
		case milter.ActAddRcpt:
			res.RcptTo = append(res.RcptTo, strings.Trim(mod.Rcpt, "<>"))
		case milter.ActDelRcpt:
			r := strings.Trim(mod.Rcpt, "<>")
			for i, x := range res.RcptTo {
				if strings.EqualFold(x, r) {
					res.RcptTo = append(res.RcptTo[:i], res.RcptTo[i+1:]...)
					break
				}
			}
		case milter.ActChangeFrom:
			res.MailFrom = strings.Trim(mod.From, "<>")
		case milter.ActQuarantine:
			res.Quarantine = mod.Reason
		}
	}
	fields, body := Apply(msg, mods, tx.Received, lead, tx.Raw)
	res.Message = Assemble(fields, msg.Separator, body)
	return nil
}

// strayCheck fails if the milter sent anything after its final reply.
func (c *Conn) strayCheck() error {
	if c.opts.StrayCheck < 0 {
		return nil
	}
	if err := c.raw.SetReadDeadline(time.Now().Add(c.opts.StrayCheck)); err != nil {
		return fmt.Errorf("miltertest: set deadline: %w", err)
	}
	var b [64]byte
	n, err := c.raw.Read(b[:])
	if derr := c.raw.SetReadDeadline(time.Time{}); derr != nil {
		return fmt.Errorf("miltertest: set deadline: %w", derr)
	}
	if n > 0 {
		return fmt.Errorf("%w: % x (did it answer an event it negotiated not to answer?)", ErrStray, b[:n])
	}
	if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) && !errors.Is(err, io.EOF) {
		return fmt.Errorf("miltertest: after end of message: %w", err)
	}
	return nil
}

// connectArgs returns the CONNECT host name, family and address.
func connectArgs(tx Transaction) (string, milter.ProtoFamily, string) {
	host := tx.ClientHost
	if tx.ClientIP == "" {
		if host == "" {
			host = "unknown"
		}
		return host, milter.FamilyUnknown, ""
	}
	if host == "" {
		host = "[" + tx.ClientIP + "]"
	}
	family := milter.FamilyInet
	if a, err := netip.ParseAddr(tx.ClientIP); err == nil && a.Is6() && !a.Is4In6() {
		family = milter.FamilyInet6
	}
	return host, family, tx.ClientIP
}

// macroSet holds the macro lists (name, value, name, value...) per stage.
type macroSet struct {
	connect, helo, mail, data, eoh, eom []string
	rcptExtra                           map[string]string
}

func (m macroSet) rcpt(addr string) []string {
	return flatten(map[string]string{"{rcpt_addr}": addr}, m.rcptExtra)
}

// buildMacros computes the macros Postfix would send for tx.
func buildMacros(tx Transaction) macroSet {
	j := tx.Hostname
	if j == "" {
		j = "mx.example.com"
	}
	daemon := tx.DaemonName
	if daemon == "" {
		daemon = j
	}
	host, _, ip := connectArgs(tx)
	underscore := host
	if ip != "" {
		underscore = fmt.Sprintf("%s [%s]", strings.Trim(host, "[]"), ip)
		if strings.HasPrefix(host, "[") {
			underscore = fmt.Sprintf("unknown [%s]", ip)
		}
	}
	connect := map[string]string{
		"j":             j,
		"{daemon_name}": daemon,
		"{daemon_addr}": "127.0.0.1",
		"v":             "Postfix 3.7.11",
		"_":             underscore,
	}
	mail := map[string]string{
		"{mail_addr}":   tx.MailFrom,
		"{auth_type}":   tx.AuthType,
		"{auth_authen}": tx.AuthAuthen,
	}
	qid := map[string]string{"i": tx.QueueID}
	return macroSet{
		connect:   flatten(connect, tx.Macros.Connect),
		helo:      flatten(nil, tx.Macros.Helo),
		mail:      flatten(mail, tx.Macros.Mail),
		rcptExtra: tx.Macros.Rcpt,
		data:      flatten(qid, tx.Macros.Data),
		eoh:       flatten(qid, tx.Macros.EOH),
		eom:       flatten(qid, tx.Macros.EOM),
	}
}

// flatten merges extra over base, drops empty values and returns the
// macros sorted by name as name, value pairs.
func flatten(base, extra map[string]string) []string {
	all := map[string]string{}
	for k, v := range base {
		all[k] = v
	}
	for k, v := range extra {
		all[k] = v
	}
	names := make([]string, 0, len(all))
	for k, v := range all {
		if v != "" {
			names = append(names, k)
		}
	}
	sort.Strings(names)
	out := make([]string, 0, 2*len(names))
	for _, k := range names {
		out = append(out, k, all[k])
	}
	return out
}

// writePacket writes one milter packet.
func writePacket(c net.Conn, code byte, data []byte, timeout time.Duration) error {
	if timeout > 0 {
		if err := c.SetWriteDeadline(time.Now().Add(timeout)); err != nil {
			return err
		}
		defer c.SetWriteDeadline(time.Time{})
	}
	buf := make([]byte, 5+len(data))
	binary.BigEndian.PutUint32(buf, uint32(len(data)+1))
	buf[4] = code
	copy(buf[5:], data)
	_, err := c.Write(buf)
	return err
}

// readAction reads a reply packet, skipping progress packets.
func readAction(c net.Conn, timeout time.Duration) (*milter.Action, error) {
	for {
		if timeout > 0 {
			if err := c.SetReadDeadline(time.Now().Add(timeout)); err != nil {
				return nil, err
			}
		}
		var hdr [4]byte
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			return nil, err
		}
		n := binary.BigEndian.Uint32(hdr[:])
		if n == 0 || n > 1<<20 {
			return nil, fmt.Errorf("bad packet length %d", n)
		}
		data := make([]byte, n)
		if _, err := io.ReadFull(c, data); err != nil {
			return nil, err
		}
		if err := c.SetReadDeadline(time.Time{}); err != nil {
			return nil, err
		}
		code, data := data[0], data[1:]
		switch milter.ActionCode(code) {
		case 'p':
			continue
		case milter.ActAccept, milter.ActContinue, milter.ActDiscard, milter.ActReject, milter.ActTempFail:
			return &milter.Action{Code: milter.ActionCode(code)}, nil
		case milter.ActReplyCode:
			act := &milter.Action{Code: milter.ActReplyCode}
			if len(data) < 4 {
				return nil, fmt.Errorf("short reply code %q", data)
			}
			if _, err := fmt.Sscanf(string(data[:3]), "%d", &act.SMTPCode); err != nil {
				return nil, fmt.Errorf("bad reply code %q: %w", data, err)
			}
			act.SMTPText = strings.TrimRight(string(data[4:]), "\x00")
			return act, nil
		default:
			return nil, fmt.Errorf("unexpected reply %q", code)
		}
	}
}
