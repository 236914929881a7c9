package policy

import (
	"strings"
	"testing"
)

// FuzzAuthservID: any Authentication-Results value from the network gives
// an answer without panicking, and the answer never spans a separator.
func FuzzAuthservID(f *testing.F) {
	for _, s := range []string{" mx.example.com; dkim=pass", " (c) mx;", " ((( ", "\\", " a(b\\)c)d; e"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		id := AuthservID(v)
		if strings.ContainsAny(id, " \t\r\n;(") {
			t.Fatalf("AuthservID(%q) = %q", v, id)
		}
	})
}

// FuzzSplitMessage: the offline commands' message splitter never panics and
// what it returns re-joins into its (CRLF-normalized) input.
func FuzzSplitMessage(f *testing.F) {
	for _, s := range []string{"From: a@b\r\n\r\nbody", "A: b\n c\n\nx", "no colon\r\n\r\n", ":x\r\n", "A:\r\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		header, body, err := SplitMessage(raw)
		if err != nil {
			return
		}
		var b strings.Builder
		for _, h := range header {
			b.WriteString(h.Name + ":" + h.Value + "\r\n")
		}
		norm := string(normalizeCRLF(raw))
		if body != nil || strings.Contains(norm, "\r\n\r\n") {
			b.WriteString("\r\n")
		}
		b.Write(body)
		if got := b.String(); got != norm && got != norm+"\r\n" {
			t.Fatalf("split/join changed the message:\n%q\n%q", norm, got)
		}
	})
}
