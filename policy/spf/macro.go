package spf

import (
	"fmt"
	"strconv"
	"strings"
)

// maxDomainLen is the longest domain name in text form (RFC 7208 §7.3:
// an expansion beyond it loses labels on the left).
const maxDomainLen = 253

// expandDomain expands the macros of a domain-spec the parser accepted
// (RFC 7208 §7) for domain, the current <domain>, and truncates the
// result to a domain name's length by dropping labels on the left (§7.3).
//
// A hostile record may repeat a macro thousands of times; only the last
// maxDomainLen+1 bytes can survive truncation, so the pieces are joined
// from the right and the rest is never built.
func (e *evaluation) expandDomain(spec, domain string) (string, error) {
	if !strings.Contains(spec, "%") {
		return truncateDomain(spec), nil
	}
	var pieces []string
	memo := map[string]string{} // macro body -> expansion
	for i := 0; i < len(spec); i++ {
		c := spec[i]
		if c != '%' {
			j := i
			for j < len(spec) && spec[j] != '%' {
				j++
			}
			pieces = append(pieces, spec[i:j])
			i = j - 1
			continue
		}
		if i+1 >= len(spec) {
			return "", fmt.Errorf("macro string %q ends in %%", spec)
		}
		switch spec[i+1] {
		case '%':
			pieces = append(pieces, "%")
			i++
			continue
		case '_':
			pieces = append(pieces, " ")
			i++
			continue
		case '-':
			pieces = append(pieces, "%20")
			i++
			continue
		case '{':
		default:
			return "", fmt.Errorf("invalid macro %q", spec[i:i+2])
		}
		end := strings.IndexByte(spec[i:], '}')
		if end < 0 {
			return "", fmt.Errorf("macro %q has no closing }", spec[i:])
		}
		body := spec[i+2 : i+end]
		v, ok := memo[body]
		if !ok {
			var err error
			if v, err = e.expandMacro(body, domain); err != nil {
				return "", err
			}
			memo[body] = v
		}
		pieces = append(pieces, v)
		i += end
	}
	// Join from the right, keeping at most maxDomainLen+1 bytes: enough to
	// find the label boundary truncation cuts at.
	var tail []byte
	for k := len(pieces) - 1; k >= 0 && len(tail) <= maxDomainLen; k-- {
		tail = append([]byte(pieces[k]), tail...)
	}
	return truncateDomain(string(tail)), nil
}

// truncateDomain drops labels on the left of a name longer than
// maxDomainLen until it fits (§7.3). A trailing dot does not count.
func truncateDomain(name string) string {
	name = strings.TrimSuffix(name, ".")
	for len(name) > maxDomainLen {
		dot := strings.IndexByte(name, '.')
		if dot < 0 {
			return name[len(name)-maxDomainLen:]
		}
		name = name[dot+1:]
	}
	return name
}

// expandMacro expands one macro-expand "%{body}" (§7.3): the letter's
// value, split at the delimiters, maybe reversed, its rightmost parts
// kept, joined with dots, and URL-escaped for an upper-case letter.
func (e *evaluation) expandMacro(body, domain string) (string, error) {
	if body == "" {
		return "", fmt.Errorf("empty macro")
	}
	letter := body[0]
	var v string
	switch letter | 0x20 {
	case 's':
		v = e.sender
	case 'l':
		v = e.local
	case 'o':
		v = e.senderDomain
	case 'd':
		v = domain
	case 'i':
		v = macroIP(e)
	case 'p':
		v = e.validatedName(domain)
	case 'v':
		v = "ip6"
		if e.network == "ip4" {
			v = "in-addr"
		}
	case 'h':
		v = e.helo
	default:
		// c, r and t belong to explanation strings, which are never
		// expanded; the parser refuses them elsewhere.
		return "", fmt.Errorf("macro letter %q not allowed here", letter)
	}
	rest := body[1:]
	n := 0
	for n < len(rest) && isDigit(rest[n]) {
		n++
	}
	keep := 0
	if n > 0 {
		k, err := strconv.Atoi(rest[:n])
		if err != nil || k == 0 {
			// A huge number keeps everything, as any number beyond the
			// count of parts does.
			if k == 0 && err == nil {
				return "", fmt.Errorf("macro %%{%s}: zero parts", body)
			}
			k = 0
		}
		keep = k
	}
	rest = rest[n:]
	reverse := false
	if rest != "" && rest[0]|0x20 == 'r' {
		reverse, rest = true, rest[1:]
	}
	delims := rest
	if delims == "" {
		delims = "."
	}
	if n > 0 || reverse || rest != "" {
		parts := splitKeepEmpty(v, delims)
		if reverse {
			for a, b := 0, len(parts)-1; a < b; a, b = a+1, b-1 {
				parts[a], parts[b] = parts[b], parts[a]
			}
		}
		if keep > 0 && keep < len(parts) {
			parts = parts[len(parts)-keep:]
		}
		v = strings.Join(parts, ".")
	}
	if letter >= 'A' && letter <= 'Z' {
		v = urlEscape(v)
	}
	return v, nil
}

// splitKeepEmpty splits s at every byte of delims, keeping empty parts.
func splitKeepEmpty(s, delims string) []string {
	var parts []string
	start := 0
	for i := 0; i < len(s); i++ {
		if strings.IndexByte(delims, s[i]) >= 0 {
			parts = append(parts, s[start:i])
			start = i + 1
		}
	}
	return append(parts, s[start:])
}

// macroIP is the i macro: a dotted quad, or 32 dot-separated nibbles of
// an IPv6 address (§7.3).
func macroIP(e *evaluation) string {
	if e.network == "ip4" {
		return e.ip.String()
	}
	const hex = "0123456789abcdef"
	b := e.ip.As16()
	out := make([]byte, 0, 63)
	for _, x := range b {
		if len(out) > 0 {
			out = append(out, '.')
		}
		out = append(out, hex[x>>4], '.', hex[x&0xf])
	}
	return string(out)
}

// validatedName is the p macro (§7.3): the validated name of the client
// that is domain, else one that is a subdomain of it, else any, else
// "unknown".
func (e *evaluation) validatedName(domain string) string {
	names := e.validatedNames()
	domain = strings.ToLower(domain)
	for _, n := range names {
		if n == domain {
			return n
		}
	}
	for _, n := range names {
		if strings.HasSuffix(n, "."+domain) {
			return n
		}
	}
	if len(names) > 0 {
		return names[0]
	}
	return "unknown"
}

// urlEscape escapes the bytes outside RFC 3986's "unreserved" set, as
// upper-case macro letters ask (§7.3).
func urlEscape(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if isLetter(c) || isDigit(c) || c == '-' || c == '.' || c == '_' || c == '~' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&0xf])
	}
	return b.String()
}
