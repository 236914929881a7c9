package policy

// ARC (RFC 8617): verifying the chain of inbound mail, the trusted-sealer
// DMARC override, and sealing the mail we relay.

// startARC starts the ARC verification of an inbound message once its
// header is complete.
func (m *Message) startARC() {}

// arcWrite feeds a body chunk to the ARC verification and sealing.
func (m *Message) arcWrite(chunk []byte) {}

// arcEntry completes the ARC verification and returns the arc resinfo of
// our Authentication-Results; ok is false when there is none to write.
func (m *Message) arcEntry() (e arEntry, ok bool) { return arEntry{}, false }

// arcOverride reports whether a DMARC failure is not enforced because a
// trusted sealer (dmarc.trusted_arc_sealers) saw the message pass, and
// with which Override.
func (m *Message) arcOverride() (o Override, ok bool) { return Override{}, false }

// sealARC adds our ARC set to d when [arc] seal is on; authResults is the
// value of our Authentication-Results field.
func (m *Message) sealARC(d *Decision, authResults string) {}
