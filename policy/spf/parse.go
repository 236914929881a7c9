package spf

// A strict parser for SPF records (RFC 7208 §4.5, §4.6.1, §5, §6, §7.1):
// it accepts exactly what the ABNF allows and names the offending term of
// anything else, because a receiver that meets a syntax error anywhere in
// a record returns permerror for all mail. CheckHost evaluates what it
// parses; authmilter doctor reports on it.

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Kind is the kind of an SPF term.
type Kind int

// Term kinds: the eight mechanisms (RFC 7208 §5), then the modifiers (§6).
const (
	KindAll Kind = iota
	KindInclude
	KindA
	KindMX
	KindPTR
	KindIP4
	KindIP6
	KindExists
	KindRedirect
	KindExp
	KindUnknownModifier
)

// String returns the mechanism or modifier name of a kind.
func (k Kind) String() string {
	for name, kind := range mechanisms {
		if kind == k {
			return name
		}
	}
	switch k {
	case KindRedirect:
		return "redirect"
	case KindExp:
		return "exp"
	}
	return "modifier"
}

// mechanisms maps mechanism names (lowercase) to kinds.
var mechanisms = map[string]Kind{
	"all": KindAll, "include": KindInclude, "a": KindA, "mx": KindMX,
	"ptr": KindPTR, "ip4": KindIP4, "ip6": KindIP6, "exists": KindExists,
}

// Term is one parsed term of a record.
type Term struct {
	// Text is the term as written in the record.
	Text string
	Kind Kind
	// Qualifier is '+', '-', '~' or '?' for mechanisms ('+' when
	// omitted), 0 for modifiers.
	Qualifier byte
	// Name is the modifier name, lowercase (for KindUnknownModifier).
	Name string
	// Domain is the domain-spec of include, a, mx, ptr, exists, redirect
	// and exp ("" when a, mx or ptr has none: the current domain).
	Domain string
	// Prefix is the network of ip4 and ip6.
	Prefix netip.Prefix
	// CIDR4 and CIDR6 are a and mx's dual-cidr-length, -1 when absent.
	CIDR4, CIDR6 int
	// HasMacros says Domain contains macro-expands, so it can only be
	// known when a message is evaluated.
	HasMacros bool
}

// CountsLookup reports whether the term costs one of the ten DNS-querying
// terms of RFC 7208 §4.6.4.
func (t *Term) CountsLookup() bool {
	switch t.Kind {
	case KindInclude, KindA, KindMX, KindPTR, KindExists, KindRedirect:
		return true
	}
	return false
}

// IsMechanism reports whether the term is a mechanism, not a modifier.
func (t *Term) IsMechanism() bool { return t.Kind <= KindExists }

// Record is a parsed SPF record.
type Record struct {
	// Terms in record order, modifiers included.
	Terms []Term
	// Redirect and Exp point into Terms, nil when absent.
	Redirect, Exp *Term
	// All points to the first all mechanism, nil when there is none.
	All *Term
}

// SyntaxError is a syntax error in one term of a record.
type SyntaxError struct {
	// Term is the offending term exactly as written.
	Term string
	// Reason says what is wrong with it.
	Reason string
}

func (e *SyntaxError) Error() string {
	return fmt.Sprintf("spf: %q: %s", e.Term, e.Reason)
}

// IsRecord reports whether a TXT record is an SPF record: "v=spf1"
// (any case) followed by a space or the end (RFC 7208 §4.5).
func IsRecord(txt string) bool {
	if len(txt) < 6 || !strings.EqualFold(txt[:6], "v=spf1") {
		return false
	}
	return len(txt) == 6 || txt[6] == ' '
}

// ParseRecord parses a record strictly. The error is an
// *SyntaxError naming the first offending term.
func ParseRecord(txt string) (*Record, error) {
	if !IsRecord(txt) {
		v, _, _ := strings.Cut(txt, " ")
		return nil, &SyntaxError{Term: v, Reason: `not an SPF record: it must start with "v=spf1"`}
	}
	rec := &Record{}
	// terms = *( 1*SP ( directive / modifier ) ), record ends in *SP:
	// only spaces separate terms, so empty fields are just more spaces.
	for _, f := range strings.Split(txt[6:], " ") {
		if f == "" {
			continue
		}
		t, err := parseTerm(f)
		if err != nil {
			return nil, err
		}
		rec.Terms = append(rec.Terms, t)
	}
	for i := range rec.Terms {
		t := &rec.Terms[i]
		switch t.Kind {
		case KindRedirect, KindExp:
			// RFC 7208 §6: these MUST NOT appear more than once.
			prev := &rec.Redirect
			if t.Kind == KindExp {
				prev = &rec.Exp
			}
			if *prev != nil {
				return nil, &SyntaxError{Term: t.Text, Reason: fmt.Sprintf("a second %s modifier (the first is %s): receivers return permerror", t.Name, quote((*prev).Text))}
			}
			*prev = t
		case KindAll:
			if rec.All == nil {
				rec.All = t
			}
		}
	}
	return rec, nil
}

// parseTerm parses one directive or modifier.
func parseTerm(text string) (Term, error) {
	t := Term{Text: text, CIDR4: -1, CIDR6: -1}
	fail := func(format string, args ...any) (Term, error) {
		return Term{}, &SyntaxError{Term: text, Reason: fmt.Sprintf(format, args...)}
	}
	// modifier = name "=" macro-string, name = ALPHA *( ALPHA / DIGIT /
	// "-" / "_" / "." ). A directive never contains "=" before ":" or "/".
	if i := strings.IndexAny(text, "=:/"); i >= 0 && text[i] == '=' {
		name, value := text[:i], text[i+1:]
		if !isModifierName(name) {
			if name == "" {
				return fail("modifier without a name")
			}
			return fail("%s is not a valid modifier name", quote(name))
		}
		t.Name = strings.ToLower(name)
		switch t.Name {
		case "redirect", "exp":
			t.Kind = KindRedirect
			if t.Name == "exp" {
				t.Kind = KindExp
			}
			if err := checkDomainSpec(value); err != nil {
				return fail("%s", err)
			}
			t.Domain, t.HasMacros = value, strings.Contains(value, "%")
		default:
			// Unknown modifiers are ignored by receivers (RFC 7208 §6)
			// but their value must still be a macro-string.
			t.Kind = KindUnknownModifier
			if err := checkMacroString(value, true); err != nil {
				return fail("%s", err)
			}
		}
		return t, nil
	}

	rest := text
	t.Qualifier = '+'
	if strings.IndexByte("+-~?", rest[0]) >= 0 {
		t.Qualifier, rest = rest[0], rest[1:]
	}
	end := strings.IndexAny(rest, ":/")
	if end < 0 {
		end = len(rest)
	}
	name, arg := strings.ToLower(rest[:end]), rest[end:]
	kind, ok := mechanisms[name]
	if !ok {
		if name == "" {
			return fail("no mechanism name")
		}
		return fail("unknown mechanism %s: receivers return permerror", quote(name))
	}
	t.Kind = kind
	switch kind {
	case KindAll:
		if arg != "" {
			return fail("all takes no argument")
		}
	case KindInclude, KindExists:
		if !strings.HasPrefix(arg, ":") {
			return fail("%s needs a domain: %s:<domain>", name, name)
		}
		if err := checkDomainSpec(arg[1:]); err != nil {
			return fail("%s", err)
		}
		t.Domain = arg[1:]
	case KindPTR:
		if strings.HasPrefix(arg, "/") {
			return fail("ptr takes no CIDR length")
		}
		if arg != "" {
			if err := checkDomainSpec(arg[1:]); err != nil {
				return fail("%s", err)
			}
			t.Domain = arg[1:]
		}
	case KindA, KindMX:
		spec, cidr := arg, ""
		if strings.HasPrefix(arg, "/") {
			spec, cidr = "", arg // no domain-spec: all of it is the CIDR length
		} else if i := cidrStart(arg); i >= 0 {
			spec, cidr = arg[:i], arg[i:]
		}
		if spec != "" {
			if err := checkDomainSpec(spec[1:]); err != nil {
				return fail("%s", err)
			}
			t.Domain = spec[1:]
		}
		var err error
		if t.CIDR4, t.CIDR6, err = parseDualCIDR(cidr); err != nil {
			return fail("%s", err)
		}
	case KindIP4, KindIP6:
		p, err := parseNetwork(kind, arg)
		if err != nil {
			return fail("%s", err)
		}
		t.Prefix = p
	}
	t.HasMacros = strings.Contains(t.Domain, "%")
	return t, nil
}

// isModifierName checks name = ALPHA *( ALPHA / DIGIT / "-" / "_" / "." ).
func isModifierName(name string) bool {
	if name == "" || !isLetter(name[0]) {
		return false
	}
	for i := 1; i < len(name); i++ {
		c := name[i]
		if !isLetter(c) && !isDigit(c) && c != '-' && c != '_' && c != '.' {
			return false
		}
	}
	return true
}

// cidrStart returns the index where the dual-cidr-length of a and mx
// starts, or -1. A domain-spec may contain any visible character but "%"
// (RFC 7208 §7.1), "/" included, so "a:foo:bar/baz.example.com" is the
// name "foo:bar/baz.example.com": the CIDR length is only a trailing
// "/" 1*DIGIT, "//" 1*DIGIT or "/" 1*DIGIT "//" 1*DIGIT, found from the
// end. Its digits are checked by parseDualCIDR (a leading zero or a
// length out of range is an error, not part of the name). A "/" inside a
// macro-expand ("%{d/}") is a delimiter and never ends in digits and the
// end of the term, so it is never taken.
func cidrStart(arg string) int {
	digitsBefore := func(end int) int { // start of the digits ending at end
		i := end
		for i > 0 && isDigit(arg[i-1]) {
			i--
		}
		return i
	}
	i := digitsBefore(len(arg))
	if i == len(arg) || i == 0 || arg[i-1] != '/' {
		return -1
	}
	start := i - 1
	if start > 0 && arg[start-1] == '/' {
		// "//" ip6-cidr-length, maybe after an ip4-cidr-length.
		start--
		if j := digitsBefore(start); j < start && j > 0 && arg[j-1] == '/' && (j < 2 || arg[j-2] != '/') {
			start = j - 1
		}
	}
	return start
}

// parseDualCIDR parses dual-cidr-length = [ ip4-cidr-length ] [ "/"
// ip6-cidr-length ]: "", "/24", "//64" or "/24//64". Absent lengths are -1.
func parseDualCIDR(s string) (v4, v6 int, err error) {
	v4, v6 = -1, -1
	if s == "" {
		return v4, v6, nil
	}
	four, six, hasSix := strings.Cut(s, "//")
	if four != "" {
		if v4, err = parseCIDRLength(strings.TrimPrefix(four, "/"), 32, "ip4"); err != nil {
			return 0, 0, err
		}
		if !strings.HasPrefix(four, "/") {
			return 0, 0, fmt.Errorf("CIDR length %s does not start with /", quote(four))
		}
	}
	if hasSix {
		if v6, err = parseCIDRLength(six, 128, "ip6"); err != nil {
			return 0, 0, err
		}
	}
	return v4, v6, nil
}

// parseCIDRLength parses a CIDR length: digits without a leading zero
// ("0" itself is fine), at most max.
func parseCIDRLength(s string, max int, family string) (int, error) {
	if s == "" {
		return 0, fmt.Errorf("empty %s CIDR length", family)
	}
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) {
			return 0, fmt.Errorf("%s CIDR length %s is not a number", family, quote(s))
		}
	}
	if len(s) > 1 && s[0] == '0' {
		return 0, fmt.Errorf("%s CIDR length %s has a leading zero", family, quote(s))
	}
	if len(s) > 3 {
		return 0, fmt.Errorf("%s CIDR length %s is over %d", family, quote(s), max)
	}
	n, _ := strconv.Atoi(s)
	if n > max {
		return 0, fmt.Errorf("%s CIDR length %d is over %d", family, n, max)
	}
	return n, nil
}

// parseNetwork parses the ":network[/len]" argument of ip4 and ip6.
func parseNetwork(kind Kind, arg string) (netip.Prefix, error) {
	name, bits := "ip4", 32
	if kind == KindIP6 {
		name, bits = "ip6", 128
	}
	if !strings.HasPrefix(arg, ":") || len(arg) == 1 {
		return netip.Prefix{}, fmt.Errorf("%s needs an address: %s:<address>[/<length>]", name, name)
	}
	addrText, lenText, hasLen := strings.Cut(arg[1:], "/")
	addr, err := netip.ParseAddr(addrText)
	if err != nil || addr.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("%s is not an %s address", quote(addrText), name)
	}
	if kind == KindIP4 && !addr.Is4() {
		return netip.Prefix{}, fmt.Errorf("%s is not an IPv4 address in dotted-quad form", quote(addrText))
	}
	if kind == KindIP6 && !addr.Is6() {
		return netip.Prefix{}, fmt.Errorf("%s is not an IPv6 address (use ip4: for IPv4)", quote(addrText))
	}
	if hasLen {
		if bits, err = parseCIDRLength(lenText, bits, name); err != nil {
			return netip.Prefix{}, err
		}
	}
	// RFC 7208 §5.6: bits beyond the length are ignored, not an error.
	return netip.PrefixFrom(addr, bits).Masked(), nil
}

// checkDomainSpec checks domain-spec = macro-string domain-end, with
// domain-end = ( "." toplabel [ "." ] ) / macro-expand (RFC 7208 §7.1),
// no empty labels and no label over 63 bytes.
func checkDomainSpec(s string) error {
	if s == "" {
		return fmt.Errorf("empty domain")
	}
	if err := checkMacroString(s, false); err != nil {
		return err
	}
	// The literal text around the macros decides the rest: each
	// macro-expand stands for one placeholder byte.
	skel := macroSkeleton(s)
	if strings.HasPrefix(skel, ".") || strings.Contains(skel, "..") {
		return fmt.Errorf("domain %s has an empty label", quote(s))
	}
	if strings.HasSuffix(skel, macroPlaceholder) {
		return nil
	}
	name := strings.TrimSuffix(skel, ".")
	dot := strings.LastIndexByte(name, '.')
	if dot < 0 {
		return fmt.Errorf("domain %s is a single label: a domain must have a dot and a top label", quote(s))
	}
	if top := name[dot+1:]; !isTopLabel(top) {
		return fmt.Errorf("domain %s does not end in a valid top label: letters, digits and inner hyphens, not all digits", quote(s))
	}
	if skel == s {
		for _, l := range strings.Split(name, ".") {
			if len(l) > 63 {
				return fmt.Errorf("domain %s has a label longer than 63 bytes", quote(s))
			}
		}
	}
	return nil
}

// macroPlaceholder stands for a macro-expand in macroSkeleton.
const macroPlaceholder = "\x00"

// macroSkeleton replaces each macro-expand of a valid macro-string with
// macroPlaceholder.
func macroSkeleton(s string) string {
	if !strings.Contains(s, "%") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b.WriteByte(s[i])
			continue
		}
		if s[i+1] == '{' {
			i += strings.IndexByte(s[i:], '}')
		} else {
			i++
		}
		b.WriteString(macroPlaceholder)
	}
	return b.String()
}

// isTopLabel checks toplabel = ( *alphanum ALPHA *alphanum ) /
// ( 1*alphanum "-" *( alphanum / "-" ) alphanum ).
func isTopLabel(l string) bool {
	if l == "" {
		return false
	}
	letter, hyphen := false, false
	for i := 0; i < len(l); i++ {
		c := l[i]
		switch {
		case isLetter(c):
			letter = true
		case isDigit(c):
		case c == '-':
			hyphen = true
		default:
			return false
		}
	}
	if !hyphen {
		return letter
	}
	return l[0] != '-' && l[len(l)-1] != '-'
}

// checkMacroString checks macro-string = *( macro-expand /
// macro-literal ). The letters c, r and t are allowed only in explanation
// text (RFC 7208 §7.2); anyLetter allows them (for unknown modifiers,
// which receivers never expand).
func checkMacroString(s string, anyLetter bool) error {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '%' {
			// macro-literal = %x21-24 / %x26-7E
			if c < 0x21 || c > 0x7e {
				return fmt.Errorf("byte %q is not allowed in a domain or macro string", c)
			}
			continue
		}
		if i+1 >= len(s) {
			return fmt.Errorf("%s ends in a lone %%: write %%%% for a literal %%", quote(s))
		}
		switch s[i+1] {
		case '%', '_', '-':
			i++
			continue
		case '{':
		default:
			return fmt.Errorf("%s: %%%c is not a macro (use %%{x}, %%%%, %%_ or %%-)", quote(s), s[i+1])
		}
		end := strings.IndexByte(s[i:], '}')
		if end < 0 {
			return fmt.Errorf("%s: macro %s has no closing }", quote(s), quote(s[i:]))
		}
		if err := checkMacroBody(s[i+2:i+end], anyLetter); err != nil {
			return fmt.Errorf("macro %s: %w", quote(s[i:i+end+1]), err)
		}
		i += end
	}
	return nil
}

// checkMacroBody checks macro-letter transformers *delimiter, the part
// of "%{...}" inside the braces.
func checkMacroBody(b string, anyLetter bool) error {
	if b == "" {
		return fmt.Errorf("no macro letter")
	}
	letter := b[0] | 0x20 // macro letters are case-insensitive (§7.3: upper case URL-encodes)
	switch {
	case strings.IndexByte("slodiphv", letter) >= 0:
	case strings.IndexByte("crt", letter) >= 0:
		if !anyLetter {
			return fmt.Errorf("macro letter %c is allowed only in explanation text", b[0])
		}
	default:
		return fmt.Errorf("unknown macro letter %q", b[0])
	}
	i := 1
	for i < len(b) && isDigit(b[i]) {
		i++
	}
	// RFC 7208 §7.3: a DIGIT transformer must be nonzero.
	if digits := b[1:i]; digits != "" && strings.Trim(digits, "0") == "" {
		return fmt.Errorf("transformer %s: the number of parts must not be zero", digits)
	}
	if i < len(b) && (b[i] == 'r' || b[i] == 'R') {
		i++
	}
	for ; i < len(b); i++ {
		if strings.IndexByte(".-+,/_=", b[i]) < 0 {
			return fmt.Errorf("%q is not a transformer or delimiter", b[i])
		}
	}
	return nil
}

// quote quotes s for an error message, shortened: a hostile record's
// term can be tens of kilobytes and the error already names it.
func quote(s string) string {
	const max = 60
	if len(s) > max {
		return strconv.Quote(s[:max]) + "…"
	}
	return strconv.Quote(s)
}

func isLetter(c byte) bool { return c|0x20 >= 'a' && c|0x20 <= 'z' }
func isDigit(c byte) bool  { return c >= '0' && c <= '9' }
