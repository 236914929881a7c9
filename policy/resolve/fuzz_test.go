package resolve

import (
	"github.com/authmilter/authmilter/internal/dnstext"

	"strings"
	"testing"

	"github.com/miekg/dns"

	"github.com/authmilter/authmilter/internal/testdns"
)

// FuzzTXTRoundTrip checks that a raw TXT value escaped the way miekg/dns
// keeps it (testdns.SplitTXT) comes back byte for byte from unescapeTXT.
func FuzzTXTRoundTrip(f *testing.F) {
	for _, s := range []string{"", "v=spf1 -all", `a"b\c`, "\x00\xff;", strings.Repeat("k", 300), `\065`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		var b strings.Builder
		for _, part := range testdns.SplitTXT(raw) {
			b.WriteString(dnstext.Unescape(part))
		}
		if b.String() != raw {
			t.Fatalf("round trip of %q gave %q", raw, b.String())
		}
	})
}

// FuzzCanonicalName checks that every name canonicalName accepts can be put
// in a query.
func FuzzCanonicalName(f *testing.F) {
	for _, s := range []string{"example.com", "_dmarc.Example.COM.", "a..b", `a\.b`, "x y", strings.Repeat("a.", 127)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		c, ok := canonicalName(name)
		if !ok {
			return
		}
		m := new(dns.Msg)
		m.SetQuestion(c, dns.TypeTXT)
		buf, err := m.Pack()
		if err != nil {
			t.Fatalf("canonicalName(%q) = %q, which does not pack: %v", name, c, err)
		}
		var back dns.Msg
		if err := back.Unpack(buf); err != nil || back.Question[0].Name != c {
			t.Fatalf("canonicalName(%q) = %q, unpacked as %v (%v)", name, c, back.Question, err)
		}
	})
}
