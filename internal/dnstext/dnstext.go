// Package dnstext converts TXT character-strings between miekg/dns's
// presentation form and their raw bytes, for every package that reads TXT
// records (the resolver, the publication checks, the RFC 2136 publisher).
package dnstext

import "strings"

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
