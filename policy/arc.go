package policy

// ARC (RFC 8617): verifying the chain of inbound mail, the trusted-sealer
// DMARC override, and sealing the mail we relay. The protocol is in
// policy/arc; this file connects it to the message.

import (
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-msgauth/authres"

	"github.com/authmilter/authmilter/keys"
	"github.com/authmilter/authmilter/policy/arc"
	"github.com/authmilter/authmilter/policy/dkimsign"
	"github.com/authmilter/authmilter/policy/dmarc"
)

// OverrideTrustedForwarder is RFC 9990's PolicyOverrideType for a DMARC
// failure not enforced because a trusted intermediary (here: an ARC sealer
// in dmarc.trusted_arc_sealers) vouched for the message.
const OverrideTrustedForwarder = "trusted_forwarder"

// arcState is one message's ARC work: the chain found in its header, the
// body hashes its verification and our seal need, and the result once
// computed.
type arcState struct {
	header []dkimsign.Field
	chain  *arc.Chain // nil: the message has no ARC field
	// hashers hash the body with each canonicalization the chain's
	// ARC-Message-Signatures use, and relaxed for our seal; nil where
	// unused. sums are their hashes once the body is complete.
	hashers [2]*dkimsign.BodyHasher
	sums    [2][]byte
	result  *arc.Result
	// oldestPass is RFC 8617's header.oldest-pass of a passing chain.
	oldestPass int
}

// startARC starts the ARC verification of an inbound message once its
// header is complete.
func (m *Message) startARC() {
	st := &arcState{header: make([]dkimsign.Field, len(m.header))}
	for i, f := range m.header {
		st.header[i] = dkimsign.Field{Name: f.Name, Value: f.Value}
	}
	st.chain = arc.ParseChain(st.header)
	for _, c := range st.chain.BodyCanons() {
		st.hashers[c] = dkimsign.NewBodyHasher(c)
	}
	if m.sealsARC() && st.hashers[dkimsign.Relaxed] == nil {
		st.hashers[dkimsign.Relaxed] = dkimsign.NewBodyHasher(dkimsign.Relaxed)
	}
	m.arc = st
}

// bodyHash returns the body hash with canonicalization c (nil if it was
// not computed), ending its hasher the first time.
func (st *arcState) bodyHash(c dkimsign.Canon) []byte {
	if st.sums[c] == nil && st.hashers[c] != nil {
		st.sums[c] = st.hashers[c].Sum()
		st.hashers[c] = nil
	}
	return st.sums[c]
}

// sealsARC reports whether this message gets our ARC set: [arc] seal is
// on and the message is inbound (relayed to us, not sent by our users).
func (m *Message) sealsARC() bool { return m.p.cfg.ARC.Seal && !m.outbound }

// arcWrite feeds a body chunk to the ARC verification and sealing.
func (m *Message) arcWrite(chunk []byte) {
	if m.arc == nil {
		return
	}
	for _, h := range m.arc.hashers {
		if h != nil {
			h.Write(chunk)
		}
	}
}

// arcResult verifies the chain once, when the body is complete, and for
// a chain that passes, how far back its message signatures still verify.
func (m *Message) arcResult() *arc.Result {
	st := m.arc
	if st.result == nil {
		r := arc.Verify(m.in.ctx, m.p.resolver, st.header, st.chain, st.bodyHash(st.chain.BodyCanon()))
		if r.Status == arc.Pass {
			st.oldestPass = arc.OldestPass(m.in.ctx, m.p.resolver, st.header, st.chain, st.bodyHash)
		}
		st.result = &r
	}
	return st.result
}

// arcEntry completes the ARC verification and returns the arc resinfo of
// our Authentication-Results; ok is false when there is none to write: a
// message without ARC fields gets no arc resinfo (RFC 8617 does not ask
// for arc=none, and it would only lengthen every header).
//
// pass: arc=pass (i=2, sealers a.example b.example) header.oldest-pass=0
// smtp.remote-ip=..., the oldest instance whose AMS still verifies (0: all
// do) and the address the last sealer recorded in its
// ARC-Authentication-Results (the two properties RFC 8617 registers for
// arc). fail: the reason (instance and what failed) in the comment, and no
// properties, since a failed chain's AAR cannot be trusted.
func (m *Message) arcEntry() (e arEntry, ok bool) {
	if m.arc == nil || m.arc.chain == nil {
		return arEntry{}, false
	}
	r := m.arcResult()
	g := &authres.GenericResult{Method: "arc", Value: authres.ResultValue(r.Status), Params: map[string]string{}}
	e = arEntry{result: g, order: []string{"header.oldest-pass", "smtp.remote-ip"}}
	switch r.Status {
	case arc.Pass:
		e.comment = fmt.Sprintf("i=%d, sealers %s", r.Instance, strings.Join(r.Sealers, " "))
		g.Params["header.oldest-pass"] = strconv.Itoa(m.arc.oldestPass)
		g.Params["smtp.remote-ip"] = r.RemoteIP
	case arc.Fail:
		e.comment = r.Reason
	}
	return e, true
}

// arcOverride reports whether a DMARC failure is not enforced because a
// trusted sealer (dmarc.trusted_arc_sealers) saw the message pass, and
// with which Override: the chain must pass and one of its sealers must be
// trusted and have recorded dmarc=pass in its own ARC-Authentication-Results.
// Which sealers to trust is the receiver's local policy (RFC 8617 §7).
func (m *Message) arcOverride(dres *dmarc.Result) (o Override, ok bool) {
	if dres == nil || dres.Outcome != dmarc.OutcomeFail || m.arc == nil || m.arc.chain == nil ||
		len(m.p.cfg.DMARC.TrustedARCSealers) == 0 {
		return Override{}, false
	}
	r := m.arcResult()
	if r.Status != arc.Pass {
		return Override{}, false
	}
	// Newest first: the sealer closest to us is the one we trust most
	// directly.
	for k := len(m.arc.chain.Sets) - 1; k >= 0; k-- {
		sealer := r.Sealers[k]
		if !m.trustedSealer(sealer) || !arc.ResultsPass(m.arc.chain.Sets[k].Results, "dmarc") {
			continue
		}
		return Override{Type: OverrideTrustedForwarder,
			Comment: "arc=pass, sealed by " + sealer + " with dmarc=pass"}, true
	}
	return Override{}, false
}

// trustedSealer reports whether d is in dmarc.trusted_arc_sealers.
func (m *Message) trustedSealer(d string) bool {
	for _, t := range m.p.cfg.DMARC.TrustedARCSealers {
		if strings.EqualFold(strings.TrimSuffix(t, "."), strings.TrimSuffix(d, ".")) {
			return true
		}
	}
	return false
}

// sealARC adds our ARC set to d when [arc] seal is on, and the chain's
// result to the decision line (arc.result, arc.i, arc.reason) when the
// message has one; authResults is the
// value of our Authentication-Results field. The set goes above it
// (ARC-Seal on top, as dkimpy writes it). A chain already marked
// cv=fail, a malformed one or one at instance 50 is not sealed (RFC 8617
// §5.1.2); a chain that fails here is sealed with cv=fail.
func (m *Message) sealARC(d *Decision, authResults string) {
	st := m.arc
	if st != nil && st.chain != nil {
		r := m.arcResult()
		attrs := []any{slog.String("result", string(r.Status)), slog.Int("i", r.Instance)}
		if r.Reason != "" {
			attrs = append(attrs, slog.String("reason", logText(r.Reason, maxLogField)))
		}
		d.Log = append(d.Log, slog.Group("arc", attrs...))
	}
	if st == nil || !m.sealsARC() {
		return
	}
	k := m.p.arcSealingKey()
	if k == nil {
		d.Log = append(d.Log, slog.String("arc_seal", "no active key for "+m.p.cfg.ARC.Domain))
		return
	}
	signer, err := k.PrivateKey()
	if err != nil {
		d.Log = append(d.Log, slog.String("arc_seal", "key "+k.ID()+": "+err.Error()))
		return
	}
	status := m.arcResult().Status
	bh := st.bodyHash(dkimsign.Relaxed)
	set, err := arc.Seal(arc.SealParams{
		Domain: k.Domain, Selector: k.Selector, Signer: signer,
		HeaderKeys: m.p.arcHeaderKeys(m.header), AuthResults: authResults, Time: time.Now(),
	}, st.header, st.chain, status, bh)
	if err != nil {
		d.Log = append(d.Log, slog.String("arc_seal", err.Error()))
		return
	}
	fields := make([]HeaderField, len(set))
	for i, f := range set {
		fields[i] = HeaderField{Name: f.Name, Value: f.Value}
	}
	d.Prepend = append(fields, d.Prepend...)
	d.Log = append(d.Log, slog.String("arc_seal", k.ID()))
}

// arcSealingKey is the newest active key of [arc] domain.
func (p *Policy) arcSealingKey() *keys.Key {
	var best *keys.Key
	for _, k := range p.active[strings.ToLower(strings.TrimSuffix(p.cfg.ARC.Domain, "."))] {
		if best == nil || k.Created.After(best.Created) {
			best = k
		}
	}
	return best
}

// arcHeaderKeys is our ARC-Message-Signature's h=: the fields DKIM signing
// signs, without the ARC and Authentication-Results fields (RFC 8617
// §4.1.2: ARC-Seal must not be signed; dkimpy leaves the others out too,
// as intermediaries add them), and From always.
func (p *Policy) arcHeaderKeys(header []HeaderField) []string {
	var out []string
	hasFrom := false
	for _, h := range p.signedHeaderKeys(header) {
		if arc.IsARCField(h) || strings.EqualFold(h, "Authentication-Results") {
			continue
		}
		hasFrom = hasFrom || strings.EqualFold(h, "From")
		out = append(out, h)
	}
	if !hasFrom {
		out = append(out, "From")
	}
	return out
}
