// Package loadmsg generates the plain-text test message that the load
// tool (cmd/milterload) and the OpenDKIM comparison (bench/compare) send.
package loadmsg

import (
	"fmt"
	"strings"
)

// Generate builds a message of exactly size bytes (or just its header when
// that is larger), with CRLF line ends and lines of varying length and
// content, runs of spaces and tabs included, so that canonicalization has
// work to do. The body is the same for the same size. tag names the
// generator in Subject and Message-ID.
func Generate(size int, tag, fromDomain, rcptDomain string) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "From: Load Sender <sender@%s>\r\n", fromDomain)
	fmt.Fprintf(&b, "To: Load Recipient <rcpt@%s>\r\n", rcptDomain)
	fmt.Fprintf(&b, "Subject: %s test message\r\n", tag)
	b.WriteString("Date: Mon, 02 Nov 2026 10:00:00 +0000\r\n")
	fmt.Fprintf(&b, "Message-ID: <%s.%d@%s>\r\n", tag, size, fromDomain)
	b.WriteString("MIME-Version: 1.0\r\n")
	b.WriteString("Content-Type: text/plain; charset=us-ascii\r\n")
	b.WriteString("Content-Transfer-Encoding: 7bit\r\n")
	b.WriteString("\r\n")
	words := strings.Fields("the quick brown fox jumps over a lazy dog while milters sign mail " +
		"with keys from DNS and relaxed canonicalization folds  white   space\tin lines")
	// xorshift32 with a fixed seed: the same body every time.
	seed := uint32(2463534242)
	next := func() uint32 { seed ^= seed << 13; seed ^= seed >> 17; seed ^= seed << 5; return seed }
	for b.Len() < size {
		var line strings.Builder
		target := 40 + int(next()%36)
		for line.Len() < target {
			if line.Len() > 0 {
				line.WriteByte(' ')
			}
			line.WriteString(words[next()%uint32(len(words))])
		}
		l := line.String()
		if rest := size - b.Len() - 2; len(l) > rest {
			if rest <= 0 {
				// Too little room for another line: pad the previous one.
				break
			}
			l = l[:rest]
		}
		b.WriteString(l)
		b.WriteString("\r\n")
	}
	out := []byte(b.String())
	for len(out) < size { // only when the header alone is close to size
		out = append(out[:len(out)-2], 'x', '\r', '\n')
	}
	return out
}
