package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/authmilter/authmilter/internal/interop"
)

// message builds a test message with a unique token in Subject and
// Message-ID. The header has the shapes that trip signers up: a folded
// Subject, a tab after a colon, doubled spaces; the body a line that
// starts with a dot (SMTP dot-stuffing) and trailing white space.
func message(tok, from, to string, extra ...string) []byte {
	var b strings.Builder
	for _, h := range extra {
		b.WriteString(h + "\n")
	}
	fmt.Fprintf(&b, "From: Test Sender <%s>\n", from)
	fmt.Fprintf(&b, "To:  Test Recipient  <%s>\n", to)
	fmt.Fprintf(&b, "Subject: end-to-end %s\n\tfolded line\n", tok)
	fmt.Fprintf(&b, "Date: %s\n", time.Now().Format(time.RFC1123Z))
	fmt.Fprintf(&b, "Message-ID: <%s@%s>\n", tok, domainOf(from))
	b.WriteString("MIME-Version: 1.0\n")
	b.WriteString("Content-Type: text/plain;\tcharset=us-ascii\n")
	b.WriteString("X-Test:\ttab after the colon\n")
	b.WriteString("\n")
	fmt.Fprintf(&b, "Hello, this is %s.\n", tok)
	b.WriteString(".a line that starts with a dot\n")
	b.WriteString("trailing white space   \n")
	b.WriteString("\n")
	b.WriteString("-- \nthe end\n")
	return crlf(b.String())
}

func domainOf(addr string) string {
	_, d, _ := strings.Cut(addr, "@")
	return d
}

// signExternal signs msg as sender.example's own MTA would, with dkimpy.
func (e *env) signExternal(t *testing.T, msg []byte) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	signed, err := interop.SignDkimpy(ctx, msg, extSel, extDomain, e.extKey, "relaxed", "relaxed", "rsa-sha256")
	if err != nil {
		t.Fatalf("dkimpy sign: %v", err)
	}
	// dkimpy ends its field with a bare LF; the message is CRLF.
	return crlf(string(signed))
}
