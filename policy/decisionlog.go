package policy

import (
	"encoding/json"
	"errors"
	"log/slog"
	"math"
	"net/netip"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/authmilter/authmilter/policy/mailaddr"
)

// The per-message decision line (Decision.Log) is written by both slog
// handlers the daemon offers: text, one readable line, and JSON, where it
// must carry real fields. Lists (the DKIM results, the signatures added)
// are values that marshal to a compact string for the text handler
// (encoding.TextMarshaler) and to an array of objects for the JSON handler
// (json.Marshaler); SPF and DMARC are slog groups; numbers are numbers.

// Bounds on text copied from the message or the envelope into the log.
// Header content is hostile: it is cut, and stripped of control and format
// characters, so that it can neither forge log lines nor bloat them.
const (
	maxLogField    = 200
	maxLogMailFrom = 256 // RFC 5321 §4.5.3.1.3: a path is at most 256 octets
)

// logText returns s fit for a log field: control characters (CR, LF, tabs
// of folding included) and invisible format characters (bidi overrides)
// removed, invalid UTF-8 shown as '?', surrounding space trimmed, and at
// most limit bytes, "..." marking a cut.
func logText(s string, limit int) string {
	s = strings.TrimSpace(s)
	clean := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f {
			clean = false
			break
		}
	}
	if clean && len(s) <= limit {
		return s
	}
	var b strings.Builder
	for i, r := range s {
		if r == utf8.RuneError {
			if _, size := utf8.DecodeRuneInString(s[i:]); size == 1 {
				r = '?'
			}
		}
		if unicode.IsControl(r) || unicode.Is(unicode.Cf, r) {
			continue
		}
		if b.Len()+utf8.RuneLen(r) > limit {
			// Cut to leave room for the mark, at a rune boundary.
			out := b.String()
			cut := limit - len("...")
			for cut > 0 && cut < len(out) && !utf8.RuneStart(out[cut]) {
				cut--
			}
			return strings.TrimSpace(out[:max(cut, 0)]) + "..."
		}
		b.WriteRune(r)
	}
	return strings.TrimSpace(b.String())
}

// envelopeAttrs say who sent what: the client's address, the envelope
// sender ("<>" for the null sender) and the Message-ID.
func envelopeAttrs(env *Envelope, header []HeaderField) []slog.Attr {
	var out []slog.Attr
	if env.ClientIP.IsValid() {
		out = append(out, slog.String("client", clientString(env.ClientIP)))
	}
	mailFrom := "<>"
	if env.MailFrom != "" {
		mailFrom = logText(env.MailFrom, maxLogMailFrom)
	}
	out = append(out, slog.String("mail_from", mailFrom))
	if ids := fieldValues(header, "Message-ID"); len(ids) > 0 {
		if id := logText(ids[0], maxLogField); id != "" {
			out = append(out, slog.String("msgid", id))
		}
	}
	return out
}

// clientString is the client address without an IPv4-mapped prefix.
func clientString(ip netip.Addr) string {
	return ip.Unmap().String()
}

// logMS is a duration in milliseconds, to the microsecond.
func logMS(d time.Duration) float64 {
	return math.Round(float64(d)/float64(time.Microsecond)) / 1000
}

// dkimLogEntry is one verified signature in the decision line.
type dkimLogEntry struct {
	Result string `json:"result"`
	D      string `json:"d,omitempty"`
	S      string `json:"s,omitempty"`
	A      string `json:"a,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// dkimLog is the "dkim" attribute. Text: "pass(example.org/s1)" per
// signature, comma-separated ("fail(reason)" for a signature without a
// usable d=), "none" when there is none. JSON: an array of objects, empty
// when there is none.
type dkimLog []dkimLogEntry

// MarshalText implements encoding.TextMarshaler for the text handler.
func (l dkimLog) MarshalText() ([]byte, error) {
	if len(l) == 0 {
		return []byte("none"), nil
	}
	var b strings.Builder
	for i, e := range l {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(e.Result)
		switch {
		case e.D != "":
			b.WriteString("(" + e.D + "/" + e.S + ")")
		case e.Reason != "":
			b.WriteString("(" + e.Reason + ")")
		}
	}
	return []byte(b.String()), nil
}

// MarshalJSON implements json.Marshaler for the JSON handler.
func (l dkimLog) MarshalJSON() ([]byte, error) {
	if l == nil {
		l = dkimLog{}
	}
	return json.Marshal([]dkimLogEntry(l))
}

// signedLogEntry is one signature added, in the decision line.
type signedLogEntry struct {
	D string `json:"d"`
	S string `json:"s"`
	A string `json:"a"`
}

// signedLog is the "signed" attribute. Text: "d/s/a" per signature,
// comma-separated. JSON: an array of {"d","s","a"} objects.
type signedLog []signedLogEntry

// MarshalText implements encoding.TextMarshaler for the text handler.
func (l signedLog) MarshalText() ([]byte, error) {
	var b strings.Builder
	for i, e := range l {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(e.D + "/" + e.S + "/" + e.A)
	}
	return []byte(b.String()), nil
}

// MarshalJSON implements json.Marshaler for the JSON handler.
func (l signedLog) MarshalJSON() ([]byte, error) {
	if l == nil {
		l = signedLog{}
	}
	return json.Marshal([]signedLogEntry(l))
}

// spfAttr is the "spf" group: result, the domain checked, and the identity
// when it is HELO (MAIL FROM otherwise).
func spfAttr(o spfOutcome) slog.Attr {
	attrs := []any{slog.String("result", o.result)}
	if o.domain != "" {
		attrs = append(attrs, slog.String("domain", logText(o.domain, maxLogField)))
	}
	if o.identity == "helo" {
		attrs = append(attrs, slog.String("identity", "helo"))
	}
	return slog.Group("spf", attrs...)
}

// dmarcAttr is the "dmarc" group: the result, and, when a record applies,
// its policy (none, quarantine, reject), the disposition it asks for this
// message, and testing=true when the record says t=y.
func dmarcAttr(result, policy, disposition string, testing bool) slog.Attr {
	attrs := []any{slog.String("result", result)}
	if policy != "" {
		attrs = append(attrs, slog.String("policy", policy), slog.String("disposition", disposition))
		if testing {
			attrs = append(attrs, slog.Bool("testing", true))
		}
	}
	return slog.Group("dmarc", attrs...)
}

// hasAttr reports whether attrs has one named key.
func hasAttr(attrs []slog.Attr, key string) bool {
	for _, a := range attrs {
		if a.Key == key {
			return true
		}
	}
	return false
}

// Decision.UnsignedReason tokens for outbound mail that policy leaves
// unsigned (ReasonHeaderTooLarge and ReasonProtocolOrder come from the
// milter's side, through Unevaluated).
const (
	// ReasonNoKey: no signing rule gives the From domain a d= domain with
	// a key folder.
	ReasonNoKey = "no_key"
	// ReasonNoActiveKey: there are keys, but none is active (not yet
	// published, or revoked).
	ReasonNoActiveKey = "no_active_key"
	// ReasonFromMissing: no From field, or one without a mailbox.
	ReasonFromMissing = "from_missing"
	// ReasonFromMultiple: several From fields or mailboxes.
	ReasonFromMultiple = "from_multiple"
	// ReasonFromUnparsable: a From field that does not parse.
	ReasonFromUnparsable = "from_unparsable"
	// ReasonSignError: every signature failed to be made.
	ReasonSignError = "sign_error"
)

// fromReason is the UnsignedReason for an error of mailaddr.FromDomain.
func fromReason(err error) string {
	switch {
	case errors.Is(err, mailaddr.ErrNoFrom):
		return ReasonFromMissing
	case errors.Is(err, mailaddr.ErrMultipleFrom):
		return ReasonFromMultiple
	}
	return ReasonFromUnparsable
}

// noKeyReason tells, for a From domain without an active key, whether the
// key table has keys for a d= domain the rules give it (ReasonNoActiveKey)
// or none at all (ReasonNoKey).
func (p *Policy) noKeyReason(fromDomain string) string {
	fromDomain = strings.ToLower(strings.TrimSuffix(fromDomain, "."))
	for _, r := range p.rules {
		if d, ok := p.ruleDomain(r, fromDomain); ok && len(p.table.Keys(d)) > 0 {
			return ReasonNoActiveKey
		}
	}
	return ReasonNoKey
}
