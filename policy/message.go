package policy

import (
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/authmilter/authmilter/keys"
	"github.com/authmilter/authmilter/policy/dkimsign"
	"github.com/authmilter/authmilter/policy/mailaddr"
)

// HeaderField is one header field exactly as the receiver will see it: Value
// is everything after the colon, including the leading whitespace and any
// CRLF folding, so that "simple" canonicalization hashes the right bytes.
type HeaderField struct {
	Name  string
	Value string
}

// Action is the verdict the MTA gets for a message.
type Action int

// The verdicts a Decision can carry.
const (
	// Accept lets the message through, with the Decision's header changes.
	Accept Action = iota
	// Reject refuses it permanently with SMTPCode and SMTPText.
	Reject
	// TempFail asks the client to retry later.
	TempFail
	// Quarantine accepts it into the MTA's hold queue.
	Quarantine
)

func (a Action) String() string {
	return [...]string{"accept", "reject", "tempfail", "quarantine"}[a]
}

// Decision is what the milter must do with a message.
type Decision struct {
	Action Action
	// SMTPCode, SMTPStatus and SMTPText are the reply for Reject/TempFail.
	SMTPCode   int
	SMTPStatus string
	SMTPText   string
	// QuarantineReason is given to the MTA for Quarantine.
	QuarantineReason string
	// Prepend lists header fields to insert at the very top, first one on top.
	// Values are single-spaced after the colon and folded with CRLF.
	Prepend []HeaderField
	// DeleteAuthResults are 1-based occurrence numbers, among the message's
	// Authentication-Results fields, of forged fields to delete.
	DeleteAuthResults []int
	// Outbound tells whether the message was our own mail.
	Outbound bool
	// Signatures is the number of DKIM signatures added.
	Signatures int
	// UnsignedReason is set for outbound mail that got no signature: a
	// short stable token for logs and metrics ("no_key", "no_active_key",
	// "from_missing", "from_unparsable", "header_too_large", ...).
	UnsignedReason string
	// DKIM holds the result of each verified DKIM signature, in header
	// order ("pass", "fail", "neutral", "policy", "temperror",
	// "permerror"), or the single "none" when the message had none; nil
	// when the message was not authenticated.
	DKIM []string
	// SPF is the SPF result ("pass", "fail", "softfail", "neutral",
	// "none", "temperror", "permerror"); empty when not authenticated.
	SPF string
	// DMARC is the DMARC result ("pass", "fail", "none", "temperror",
	// "permerror"); empty when not authenticated.
	DMARC string
	// InternalError is set when the policy itself failed on the message in
	// a way that says nothing about the message: a key's signer failed
	// (its libcrypto or crypto/rsa call returned an error). The reason is
	// in Log; the milter answers with on_internal_error and counts it
	// (authmilter_internal_errors_total), as for its own failures.
	InternalError bool
	// Log is the per-message decision line's attributes.
	Log []slog.Attr
	// Evaluation is the DMARC evaluation of an inbound message whose From
	// domain has a DMARC Policy Record, for aggregate reports; nil
	// otherwise.
	Evaluation *Evaluation
}

// Message processes one transaction's content: Begin it with the envelope
// and header, Write the body as it arrives, then Finish. It is used by one
// goroutine at a time.
type Message struct {
	p        *Policy
	env      *Envelope
	header   []HeaderField
	outbound bool
	reason   string
	start    time.Time

	fromDomain string
	notSigned  string // why a message is not signed, for the log
	signKeys   []*keys.Key
	// bodyHash hashes the body once for all signatures (they share the
	// body canonicalization).
	bodyHash *dkimsign.BodyHasher
	in       *inbound  // nil when the message is not authenticated
	arc      *arcState // ARC verification and sealing (arc.go); nil when not authenticated
	// iprev delivers the iprev check's outcome (iprev.go); nil when none
	// was started.
	iprev chan iprevOutcome

	// missing lists "d/algorithm" pairs of the signing domains that have
	// keys but no active key, for the log.
	missing []string
	// unsignedReason is notSigned as a Decision.UnsignedReason token.
	unsignedReason string
	// deferUnsigned: outbound.on_unsigned = "tempfail" and the From domain
	// has keys but no active key; the message is deferred (451 4.7.0).
	deferUnsigned bool
}

// Begin starts processing a message whose header is complete.
func (p *Policy) Begin(env *Envelope, header []HeaderField) *Message {
	m := &Message{p: p, env: env, header: header, start: time.Now()}
	m.outbound, m.reason = p.Direction(env)
	if m.outbound {
		m.beginSigning()
	}
	if !m.outbound || p.cfg.Inbound.VerifyOutbound {
		m.beginInbound()
	}
	return m
}

// fieldValues returns the values of every field named name.
func fieldValues(header []HeaderField, name string) []string {
	var out []string
	for _, f := range header {
		if strings.EqualFold(f.Name, name) {
			out = append(out, f.Value)
		}
	}
	return out
}

func (m *Message) beginSigning() {
	from, err := mailaddr.FromDomain(fieldValues(m.header, "From"))
	if err != nil {
		m.notSigned = "from: " + err.Error()
		m.unsignedReason = fromReason(err)
		return
	}
	m.fromDomain = from
	ks := m.p.SigningKeys(from)
	if len(ks) == 0 {
		m.notSigned = "no active key for " + from
		m.unsignedReason = m.p.noKeyReason(from)
		if m.unsignedReason == ReasonNoActiveKey {
			if m.p.keysInTempError(from) {
				m.unsignedReason = ReasonDNSTempError
			}
			// outbound.on_unsigned: the domain has keys, none usable now.
			m.deferUnsigned = m.p.cfg.Outbound.OnUnsigned == "tempfail"
		}
		return
	}
	m.signKeys = ks
	m.missing = m.p.missingAlgorithms(ks)
	m.bodyHash = dkimsign.NewBodyHasher(m.p.bodyCanon)
}

// missingAlgorithms lists, as "d/algorithm", the algorithms that a signing
// domain has keys for but no active key (not yet published, DNS failing):
// the message is signed, but with fewer signatures than the table holds.
func (p *Policy) missingAlgorithms(ks []*keys.Key) []string {
	active := map[string]bool{}
	for _, k := range ks {
		active[k.Domain+"/"+string(k.Algorithm)] = true
	}
	var out []string
	seen := map[string]bool{}
	for _, k := range ks {
		if seen[k.Domain] {
			continue
		}
		seen[k.Domain] = true
		for _, t := range p.table.Keys(k.Domain) {
			id := t.Domain + "/" + string(t.Algorithm)
			if !active[id] {
				active[id] = true // once per algorithm
				out = append(out, id)
			}
		}
	}
	return out
}

// SigningKeys returns the keys a message from fromDomain is signed with:
// every matching rule adds the active keys of its d= domain (or the one key
// its selector names), without duplicate (d, s) pairs.
func (p *Policy) SigningKeys(fromDomain string) []*keys.Key {
	fromDomain = strings.ToLower(strings.TrimSuffix(fromDomain, "."))
	var out []*keys.Key
	seen := map[*keys.Key]bool{}
	for _, r := range p.rules {
		d, ok := p.ruleDomain(r, fromDomain)
		if !ok {
			continue
		}
		for _, k := range p.ruleKeys(r, d) {
			if !seen[k] {
				seen[k] = true
				out = append(out, k)
			}
		}
	}
	return out
}

// ruleKeys returns the keys rule r signs with for d=d: the domain's active
// keys, or the key its selector names when it is usable.
func (p *Policy) ruleKeys(r RuleConfig, d string) []*keys.Key {
	if r.Selector == "" {
		return p.active[d]
	}
	// A map lookup, not a scan: a provider's d= may hold a key for each
	// of thousands of customers.
	if k := p.namedKeys[d+"/"+strings.ToLower(r.Selector)]; k != nil && p.usable(k) {
		return []*keys.Key{k}
	}
	return nil
}

// RuleNamed reports whether a signing rule's selector names k: it signs
// for that rule only, and rotation leaves it alone.
func (p *Policy) RuleNamed(k *keys.Key) bool { return p.ruleNamed[k] }

// Signs reports whether the snapshot signs with k: it is an active key of
// its domain, or a usable key that a rule names.
func (p *Policy) Signs(k *keys.Key) bool {
	if p.ruleNamed[k] {
		return p.usable(k)
	}
	for _, a := range p.active[k.Domain] {
		if a == k {
			return true
		}
	}
	return false
}

// RulesUsing names the signing rules that may sign with k, as
// "signing.rule[i]" with what the rule matches, for `authmilter keys`.
func (p *Policy) RulesUsing(k *keys.Key) []string {
	var out []string
	for i, r := range p.rules {
		d := strings.ToLower(strings.TrimSuffix(r.Domain, "."))
		from := strings.ToLower(strings.TrimSuffix(r.From, "."))
		switch {
		case r.Selector != "":
			if !strings.EqualFold(r.Selector, k.Selector) || (d != "" && d != k.Domain) || (d == "" && from != k.Domain) {
				continue
			}
		case p.ruleNamed[k]:
			continue
		case d != "":
			if d != k.Domain {
				continue
			}
		case from == "*" || from == k.Domain || (r.Subdomains && strings.HasSuffix(k.Domain, "."+from)):
		default:
			continue
		}
		desc := fmt.Sprintf("signing.rule[%d] from=%s", i, r.From)
		if r.Subdomains {
			desc += " subdomains"
		}
		if r.Domain != "" {
			desc += " domain=" + r.Domain
		}
		if r.Selector != "" {
			desc += " selector=" + r.Selector
		}
		out = append(out, desc)
	}
	return out
}

// ruleDomain returns the d= a rule gives a From domain. A subdomain match
// without an explicit domain signs with the subdomain's own keys when it has
// a key folder, else with the rule's domain (OpenDKIM's SubDomains habit).
func (p *Policy) ruleDomain(r RuleConfig, from string) (string, bool) {
	rf := strings.ToLower(strings.TrimSuffix(r.From, "."))
	switch {
	case rf == "*" || rf == from:
	case r.Subdomains && strings.HasSuffix(from, "."+rf):
		if r.Domain == "" {
			if _, own := p.active[from]; own {
				return from, true
			}
			return rf, true
		}
	default:
		return "", false
	}
	if r.Domain != "" {
		return strings.ToLower(r.Domain), true
	}
	return from, true
}

// signedHeaderKeys builds h=: every configured field as often as it occurs,
// plus one more for oversigned fields so none can be added in transit.
func (p *Policy) signedHeaderKeys(header []HeaderField) []string {
	count := map[string]int{}
	for _, f := range header {
		count[strings.ToLower(f.Name)]++
	}
	var out []string
	for _, h := range p.cfg.Signing.Headers {
		n := count[strings.ToLower(h)]
		if p.oversign[strings.ToLower(h)] {
			n++
		}
		for i := 0; i < n; i++ {
			out = append(out, h)
		}
	}
	return out
}

// Write feeds a chunk of the body (CRLF line ends, not dot-stuffed) to the
// body hash and the verifier as it arrives; the body is never kept.
func (m *Message) Write(chunk []byte) (int, error) {
	if m.bodyHash != nil {
		m.bodyHash.Write(chunk)
	}
	if m.in != nil {
		m.in.write(chunk)
		m.arcWrite(chunk)
	}
	return len(chunk), nil
}

// Abort releases the message's resources without a decision.
func (m *Message) Abort() {
	m.signKeys, m.bodyHash = nil, nil
	if m.in != nil {
		m.in.abort()
		m.in = nil
	}
}

// Finish completes the message and returns the decision.
func (m *Message) Finish() *Decision {
	d := &Decision{Action: Accept, Outbound: m.outbound}
	if m.env.QueueID != "" {
		d.Log = append(d.Log, slog.String("queue", m.env.QueueID))
	}
	if m.outbound {
		d.Log = append(d.Log, slog.String("dir", "out"), slog.String("why", m.reason))
	} else {
		d.Log = append(d.Log, slog.String("dir", "in"))
	}
	d.Log = append(d.Log, envelopeAttrs(m.env, m.header)...)
	// Authentication-Results goes first so that it ends on top.
	if m.in != nil {
		m.finishInbound(d)
		m.in = nil
	}
	if m.outbound {
		m.finishSigning(d)
	}
	// Any Authentication-Results that claims to be ours is a forgery,
	// whatever the direction (RFC 8601 §5).
	n := 0
	for _, f := range m.header {
		if strings.EqualFold(f.Name, "Authentication-Results") {
			n++
			if strings.EqualFold(AuthservID(f.Value), m.p.cfg.AuthservID) {
				d.DeleteAuthResults = append(d.DeleteAuthResults, n)
			}
		}
	}
	if d.UnsignedReason != "" {
		d.Log = append(d.Log, slog.String("unsigned", d.UnsignedReason))
	}
	if len(d.DeleteAuthResults) > 0 {
		d.Log = append(d.Log, slog.Int("removed_forged_ar", len(d.DeleteAuthResults)))
	}
	d.Log = append(d.Log, slog.Float64("ms", logMS(time.Since(m.start))))
	return d
}

func (m *Message) finishSigning(d *Decision) {
	if m.fromDomain != "" && !hasAttr(d.Log, "from") {
		d.Log = append(d.Log, slog.String("from", m.fromDomain))
	}
	var signed signedLog
	var failed []string
	if len(m.signKeys) > 0 {
		bh := m.bodyHash.Sum()
		header := make([]dkimsign.Field, len(m.header))
		for i, f := range m.header {
			header[i] = dkimsign.Field{Name: f.Name, Value: f.Value}
		}
		now := time.Now()
		params := dkimsign.Params{
			HeaderCanon: m.p.headerCanon, BodyCanon: m.p.bodyCanon,
			HeaderKeys: m.p.signedHeaderKeys(m.header), Time: now,
		}
		if e := m.p.cfg.Signing.Expire.Duration; e > 0 {
			params.Expire = now.Add(e)
		}
		for _, k := range m.signKeys {
			// Parsed on first use (keys.SignerCache); a key that fails
			// then is a sign error like any other.
			signer, err := k.PrivateKey()
			if err != nil {
				failed = append(failed, err.Error())
				continue
			}
			params.Domain, params.Selector, params.Signer = k.Domain, k.Selector, markedSigner{signer}
			value, err := dkimsign.Sign(params, header, bh)
			if err != nil {
				failed = append(failed, fmt.Sprintf("%s: %v", k.ID(), err))
				// The key's crypto failing is ours, not the message's: the
				// milter applies on_internal_error (issue 14).
				d.InternalError = d.InternalError || isSignerFailure(err)
				continue
			}
			d.Prepend = append(d.Prepend, HeaderField{Name: "DKIM-Signature", Value: value})
			signed = append(signed, signedLogEntry{D: k.Domain, S: k.Selector, A: string(k.Algorithm)})
		}
	}
	d.Signatures = len(signed)
	if len(signed) > 0 {
		d.Log = append(d.Log, slog.Any("signed", signed))
	}
	if len(failed) > 0 {
		d.Log = append(d.Log, slog.String("sign_error", strings.Join(failed, "; ")))
	}
	if len(m.missing) > 0 {
		d.Log = append(d.Log, slog.String("not_signed_with", strings.Join(m.missing, ",")))
	}
	switch {
	case m.unsignedReason != "":
		d.UnsignedReason = m.unsignedReason
	case len(signed) == 0 && len(failed) > 0:
		d.UnsignedReason = ReasonSignError
	}
	if m.notSigned != "" {
		d.Log = append(d.Log, slog.String("not_signed", m.notSigned))
	}
	if m.deferUnsigned && d.Action == Accept {
		// Nothing leaves unsigned: the client retries, by when a key may be
		// published or DNS answer again.
		d.Action, d.SMTPCode, d.SMTPStatus = TempFail, 451, "4.7.0"
		d.SMTPText = "No DKIM key of " + m.fromDomain + " is usable yet; try again later"
		d.Prepend = nil
		d.Log = append(d.Log, slog.String("on_unsigned", "tempfail"))
	}
}
