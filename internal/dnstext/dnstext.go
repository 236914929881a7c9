// Package dnstext reads records out of miekg/dns messages the same way for
// every package that does (the resolver, the publication checks, the RFC
// 2136 publisher): TXT values from their presentation form, records by
// owner and type.
package dnstext

import (
	"strings"

	"github.com/miekg/dns"
)

// Unescape turns a TXT character-string from miekg/dns's presentation form
// (\X and \DDD escapes) back into its raw bytes. A lone trailing backslash
// is kept as is.
func Unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' || i+1 == len(s) {
			b = append(b, c)
			continue
		}
		i++
		if i+2 < len(s) && isDigit(s[i]) && isDigit(s[i+1]) && isDigit(s[i+2]) {
			b = append(b, (s[i]-'0')*100+(s[i+1]-'0')*10+(s[i+2]-'0'))
			i += 2
			continue
		}
		b = append(b, s[i])
	}
	return string(b)
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// Value returns a TXT record's character-strings unescaped and joined into
// one value, as DKIM, SPF and DMARC read them (RFC 6376 §3.6.2.2, RFC 7208
// §3.3).
func Value(t *dns.TXT) string {
	var b strings.Builder
	for _, s := range t.Txt {
		b.WriteString(Unescape(s))
	}
	return b.String()
}

// Records returns the IN-class records of type t owned by name (compared
// without case).
func Records(rrs []dns.RR, name string, t uint16) []dns.RR {
	var out []dns.RR
	for _, rr := range rrs {
		h := rr.Header()
		if h.Rrtype == t && h.Class == dns.ClassINET && strings.EqualFold(h.Name, name) {
			out = append(out, rr)
		}
	}
	return out
}
