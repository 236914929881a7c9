package policy

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/emersion/go-msgauth/authres"
)

// Why a message could not be evaluated; also Decision.UnsignedReason for
// outbound mail.
const (
	// ReasonHeaderTooLarge: the header exceeded limits.max_header_bytes.
	ReasonHeaderTooLarge = "header_too_large"
	// ReasonProtocolOrder: the MTA's commands came in an order no MTA
	// sends (body before the end of the header, a header field after it,
	// end of message without end of header, end of header twice).
	ReasonProtocolOrder = "protocol_order"
)

// MaxTrackedAuthResults bounds the Authentication-Results fields a
// transaction tracks; a message with more is refused whatever
// limits.oversized says, because the forged ones among the rest could not
// be removed.
const MaxTrackedAuthResults = 1000

// AuthResultsPrefix is how much of each Authentication-Results value is
// kept to find its authserv-id once the header is over the limit.
const AuthResultsPrefix = 1024

// AuthResultsField is one Authentication-Results field of a message, seen
// even when the header is too large to keep.
type AuthResultsField struct {
	// N is its 1-based occurrence number among the message's
	// Authentication-Results fields (what the milter's change-header
	// command takes).
	N int
	// Value is the start of its value, at most AuthResultsPrefix bytes.
	Value string
	// Truncated tells that Value is only the start.
	Truncated bool
}

// Unevaluated describes a message whose content the milter could not hand
// to Begin.
type Unevaluated struct {
	// Reason is ReasonHeaderTooLarge or ReasonProtocolOrder.
	Reason string
	// Detail says more, for the log.
	Detail string
	// Header holds the fields kept, if any (none once the header is over
	// the limit).
	Header []HeaderField
	// HeaderBytes and Fields are the size of the header as received.
	HeaderBytes int
	Fields      int
	// AuthResults are the message's Authentication-Results fields.
	AuthResults []AuthResultsField
	// TooManyAuthResults tells that there were more than
	// MaxTrackedAuthResults of them.
	TooManyAuthResults bool
}

// Unevaluated decides about a message that could not be evaluated.
// Authentication is never skipped silently: forged Authentication-Results
// fields are deleted whatever the header's size, and inbound mail is
// rejected, temporarily failed, or accepted with our Authentication-Results
// saying why nothing could be verified (limits.oversized). Outbound mail is
// accepted unsigned, with the reason. Commands out of order come from no
// real MTA: the message is temporarily failed.
func (p *Policy) Unevaluated(env *Envelope, u Unevaluated) *Decision {
	start := time.Now()
	outbound, why := p.Direction(env)
	d := &Decision{Action: Accept, Outbound: outbound}
	if env.QueueID != "" {
		d.Log = append(d.Log, slog.String("queue", env.QueueID))
	}
	if outbound {
		d.Log = append(d.Log, slog.String("dir", "out"), slog.String("why", why))
	} else {
		d.Log = append(d.Log, slog.String("dir", "in"))
	}
	d.Log = append(d.Log, envelopeAttrs(env, u.Header)...)
	d.Log = append(d.Log, slog.String("unevaluated", u.Reason), slog.String("detail", u.Detail),
		slog.Int("header_bytes", u.HeaderBytes), slog.Int("fields", u.Fields))

	for _, f := range u.AuthResults {
		id, sure := authservIDOf(f.Value, f.Truncated)
		// A value too long to read its authserv-id from could be ours:
		// remove it rather than let it through.
		if !sure || strings.EqualFold(id, p.cfg.AuthservID) {
			d.DeleteAuthResults = append(d.DeleteAuthResults, f.N)
		}
	}
	if len(d.DeleteAuthResults) > 0 {
		d.Log = append(d.Log, slog.Int("removed_forged_ar", len(d.DeleteAuthResults)))
	}

	mode := p.cfg.Limits.Oversized
	if u.Reason == ReasonProtocolOrder {
		mode = "tempfail"
	} else if u.TooManyAuthResults && mode == "accept-with-ar" {
		mode = "reject"
	}
	switch {
	case outbound && u.Reason == ReasonHeaderTooLarge && !u.TooManyAuthResults:
		d.UnsignedReason = u.Reason
		d.Log = append(d.Log, slog.String("not_signed", u.Detail))
	case mode == "reject":
		d.Action, d.SMTPCode, d.SMTPStatus = Reject, 552, "5.3.4"
		d.SMTPText = "Message header too large to authenticate"
		if u.TooManyAuthResults {
			d.SMTPText = "Too many Authentication-Results header fields"
		}
	case mode == "tempfail":
		d.Action, d.SMTPCode, d.SMTPStatus = TempFail, 451, "4.3.4"
		d.SMTPText = "Message header too large to authenticate"
		if u.Reason == ReasonProtocolOrder {
			d.SMTPStatus, d.SMTPText = "4.7.0", "authmilter: milter protocol commands out of order"
		}
	default: // accept-with-ar
		d.Prepend = append(d.Prepend, HeaderField{Name: "Authentication-Results",
			Value: " " + p.unevaluatedAuthResults(env, u.Detail)})
	}
	if outbound && d.Action != Accept {
		d.UnsignedReason = u.Reason
	}
	if d.Action != Accept {
		d.Log = append(d.Log, slog.String("action", d.Action.String()))
	}
	d.Log = append(d.Log, slog.Float64("ms", logMS(time.Since(start))))
	return d
}

// unevaluatedAuthResults is our Authentication-Results for a message whose
// header could not be read: SPF needs only the envelope and is evaluated;
// DKIM and DMARC are permerror with the reason.
func (p *Policy) unevaluatedAuthResults(env *Envelope, reason string) string {
	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.Inbound.MessageTimeout.Duration)
	defer cancel()
	spfRes := p.checkSPF(ctx, env)
	spfAR := &authres.SPFResult{Value: authres.ResultValue(spfRes.result)}
	if spfRes.identity == "helo" {
		spfAR.Helo = spfRes.domain
	} else {
		spfAR.From = strings.ToLower(env.MailFrom)
	}
	comment := fmt.Sprintf("not evaluated: %s", reason)
	return formatAuthResults(p.cfg.AuthservID, []arEntry{
		{result: &authres.DKIMResult{Value: authres.ResultPermError}, comment: comment},
		{result: spfAR, comment: spfRes.reason},
		{result: &authres.DMARCResult{Value: authres.ResultPermError}, comment: comment},
	})
}

// authservIDOf reads the authserv-id of a possibly truncated
// Authentication-Results value; sure is false when the value was cut before
// the id was complete.
func authservIDOf(value string, truncated bool) (id string, sure bool) {
	id, complete := scanAuthservID(value)
	return id, complete || !truncated
}
