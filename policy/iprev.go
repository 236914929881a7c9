package policy

// iprev (RFC 8601 §3): the client's reverse DNS name, confirmed forward.

// startIPRev starts the iprev check of the client when the message's
// inbound evaluation begins, so that its DNS work overlaps the body.
func (m *Message) startIPRev() {}

// iprevEntry returns the iprev resinfo of our Authentication-Results and
// adds the result to d's decision line; ok is false when there is none to
// write.
func (m *Message) iprevEntry(d *Decision) (e arEntry, ok bool) { return arEntry{}, false }

// iprevOutcome is the result of one iprev check.
type iprevOutcome struct{}
