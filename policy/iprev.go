package policy

// iprev (RFC 8601 §3): the client's reverse DNS name, confirmed forward.

// startIPRev starts the iprev check of the client when the message's
// inbound evaluation begins, so that its DNS work overlaps the body.
func (m *Message) startIPRev() {}

// iprevEntry returns the iprev resinfo of our Authentication-Results;
// ok is false when there is none to write.
func (m *Message) iprevEntry() (e arEntry, ok bool) { return arEntry{}, false }
