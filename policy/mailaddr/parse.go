package mailaddr

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// tokKind is the kind of a lexical token of an RFC 5322 address field.
type tokKind int

const (
	tokAtom    tokKind = iota // atom: 1*atext (RFC 5322 §3.2.3, RFC 6532 §3.2)
	tokQuoted                 // quoted-string (RFC 5322 §3.2.4); text is the unescaped content
	tokLiteral                // domain-literal (RFC 5322 §3.4.1); text is the content
	tokSpecial                // one of < > @ , : ; .
)

// token is one lexical token; comments and folding white space are dropped
// by the lexer (they may appear between any two tokens, RFC 5322 §3.2.2).
type token struct {
	kind tokKind
	text string
	pos  int // byte offset in the unfolded field value
}

func (t token) isWord() bool { return t.kind == tokAtom || t.kind == tokQuoted }

func (t token) is(c byte) bool { return t.kind == tokSpecial && t.text[0] == c }

func (t token) String() string {
	switch t.kind {
	case tokQuoted:
		return "quoted string"
	case tokLiteral:
		return "domain literal"
	case tokAtom:
		return fmt.Sprintf("%q", t.text)
	}
	return fmt.Sprintf("'%s'", t.text)
}

// malformed returns an error wrapping ErrMalformed.
func malformed(pos int, format string, args ...any) error {
	return fmt.Errorf("%w: %s at offset %d", ErrMalformed, fmt.Sprintf(format, args...), pos)
}

// unfold removes folding line breaks (RFC 5322 §2.2.3: CRLF followed by WSP;
// a bare LF followed by WSP is accepted too, as MTAs and milters often hand
// over LF-only text). A line break at the very end of the value is dropped.
// Any other CR or LF is an error: it would end the header field.
func unfold(s string) (string, error) {
	if !strings.ContainsAny(s, "\r\n") {
		return s, nil
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\r' && c != '\n' {
			b.WriteByte(c)
			continue
		}
		j := i
		if c == '\r' {
			if j+1 >= len(s) || s[j+1] != '\n' {
				return "", malformed(i, "bare CR")
			}
			j++
		}
		// s[j] is LF.
		if j+1 == len(s) {
			break // trailing line break
		}
		if s[j+1] != ' ' && s[j+1] != '\t' {
			return "", malformed(i, "line break not followed by white space")
		}
		i = j
	}
	return b.String(), nil
}

// isAtext reports whether c may appear in an atom: RFC 5322 §3.2.3 atext,
// extended by RFC 6532 §3.2 with every non-ASCII byte (UTF-8 validity is
// checked separately).
func isAtext(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	case c >= 0x80:
		return true
	}
	return strings.IndexByte("!#$%&'*+-/=?^_`{|}~", c) >= 0
}

// isCtl reports ASCII control characters other than HTAB.
func isCtl(c byte) bool { return (c < 0x20 && c != '\t') || c == 0x7f }

// lex splits an unfolded field value into tokens.
func lex(s string) ([]token, error) {
	if !utf8.ValidString(s) {
		for i := 0; i < len(s); {
			r, n := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && n <= 1 {
				return nil, malformed(i, "invalid UTF-8")
			}
			i += n
		}
	}
	var toks []token
	i := 0
	for i < len(s) {
		c := s[i]
		switch {
		case c == ' ' || c == '\t':
			i++
		case c == '(':
			end, err := skipComment(s, i)
			if err != nil {
				return nil, err
			}
			i = end
		case c == '"':
			text, end, err := lexQuoted(s, i)
			if err != nil {
				return nil, err
			}
			toks = append(toks, token{kind: tokQuoted, text: text, pos: i})
			i = end
		case c == '[':
			text, end, err := lexLiteral(s, i)
			if err != nil {
				return nil, err
			}
			toks = append(toks, token{kind: tokLiteral, text: text, pos: i})
			i = end
		case strings.IndexByte("<>@,:;.", c) >= 0:
			toks = append(toks, token{kind: tokSpecial, text: s[i : i+1], pos: i})
			i++
		case c == ')':
			return nil, malformed(i, "unbalanced ')'")
		case c == ']':
			return nil, malformed(i, "unbalanced ']'")
		case c == '\\':
			// A quoted-pair is only allowed inside a quoted string, a
			// comment or a domain literal (RFC 5322 §3.2.1).
			return nil, malformed(i, "backslash outside quoted string")
		case isCtl(c):
			return nil, malformed(i, "control character 0x%02x", c)
		case isAtext(c):
			start := i
			for i < len(s) && isAtext(s[i]) {
				i++
			}
			toks = append(toks, token{kind: tokAtom, text: s[start:i], pos: start})
		default:
			return nil, malformed(i, "unexpected character %q", c)
		}
	}
	return toks, nil
}

// quotedPair checks the character after a backslash at s[i] (RFC 5322
// §3.2.1: quoted-pair = "\" (VCHAR / WSP), UTF-8 allowed by RFC 6532) and
// returns the position after the pair.
func quotedPair(s string, i int, what string) (int, error) {
	if i+1 >= len(s) {
		return 0, malformed(i, "unterminated %s", what)
	}
	if isCtl(s[i+1]) {
		return 0, malformed(i+1, "control character 0x%02x in quoted-pair", s[i+1])
	}
	_, n := utf8.DecodeRuneInString(s[i+1:])
	return i + 1 + n, nil
}

// skipComment skips a comment starting at s[start] == '(' (RFC 5322
// §3.2.2: comments nest and may contain quoted-pairs) and returns the
// position after it.
func skipComment(s string, start int) (int, error) {
	depth := 0
	i := start
	for i < len(s) {
		c := s[i]
		switch {
		case c == '(':
			depth++
			i++
		case c == ')':
			depth--
			i++
			if depth == 0 {
				return i, nil
			}
		case c == '\\':
			next, err := quotedPair(s, i, "comment")
			if err != nil {
				return 0, err
			}
			i = next
		case isCtl(c):
			return 0, malformed(i, "control character 0x%02x in comment", c)
		default:
			i++
		}
	}
	return 0, malformed(start, "unterminated comment")
}

// lexQuoted reads a quoted-string starting at s[start] == '"' and returns
// its content with quoted-pairs resolved, and the position after it.
func lexQuoted(s string, start int) (string, int, error) {
	var b strings.Builder
	i := start + 1
	for i < len(s) {
		c := s[i]
		switch {
		case c == '"':
			return b.String(), i + 1, nil
		case c == '\\':
			next, err := quotedPair(s, i, "quoted string")
			if err != nil {
				return "", 0, err
			}
			b.WriteString(s[i+1 : next])
			i = next
		case isCtl(c):
			return "", 0, malformed(i, "control character 0x%02x in quoted string", c)
		default:
			b.WriteByte(c)
			i++
		}
	}
	return "", 0, malformed(start, "unterminated quoted string")
}

// lexLiteral reads a domain-literal starting at s[start] == '['.
func lexLiteral(s string, start int) (string, int, error) {
	i := start + 1
	for i < len(s) {
		c := s[i]
		switch {
		case c == ']':
			return s[start+1 : i], i + 1, nil
		case c == '[':
			return "", 0, malformed(i, "'[' inside domain literal")
		case c == '\\':
			next, err := quotedPair(s, i, "domain literal")
			if err != nil {
				return "", 0, err
			}
			i = next
		case isCtl(c):
			return "", 0, malformed(i, "control character 0x%02x in domain literal", c)
		default:
			i++
		}
	}
	return "", 0, malformed(start, "unterminated domain literal")
}

// parser is a recursive-descent parser over the tokens of one From field.
type parser struct {
	toks []token
	i    int
	end  int // length of the input, for error offsets
	doms []string
}

func (p *parser) atEnd() bool { return p.i >= len(p.toks) }

func (p *parser) peek() token { return p.toks[p.i] }

func (p *parser) pos() int {
	if p.atEnd() {
		return p.end
	}
	return p.toks[p.i].pos
}

// parseFrom parses a From field value and returns the raw domain of every
// mailbox in it, in order.
func parseFrom(value string) ([]string, error) {
	s, err := unfold(value)
	if err != nil {
		return nil, err
	}
	toks, err := lex(s)
	if err != nil {
		return nil, err
	}
	p := &parser{toks: toks, end: len(s)}
	if err := p.list(false); err != nil {
		return nil, err
	}
	return p.doms, nil
}

// list parses an address-list (RFC 5322 §3.4; RFC 6854 allows groups in
// From), or a group-list when inGroup, which ends at ';'. Empty elements are
// allowed as in obs-mbox-list and obs-group-list (RFC 5322 §4.4).
func (p *parser) list(inGroup bool) error {
	for {
		if p.atEnd() {
			if inGroup {
				return malformed(p.pos(), "group without ';'")
			}
			return nil
		}
		t := p.peek()
		switch {
		case t.is(','):
			p.i++
			continue
		case inGroup && t.is(';'):
			p.i++
			return nil
		}
		if err := p.address(inGroup); err != nil {
			return err
		}
		if p.atEnd() {
			continue
		}
		t = p.peek()
		if t.is(',') || (inGroup && t.is(';')) {
			continue
		}
		if t.is('>') {
			return malformed(t.pos, "unbalanced '>'")
		}
		return malformed(t.pos, "unexpected %s after address", t)
	}
}

// phrase collects a run of words and dots: a display-name (phrase or
// obs-phrase), a group name, or the local part of a bare addr-spec; which
// one is decided by the token that follows it.
func (p *parser) phrase() []token {
	start := p.i
	for !p.atEnd() {
		t := p.peek()
		if !t.isWord() && !t.is('.') {
			break
		}
		p.i++
	}
	return p.toks[start:p.i]
}

// checkDisplayName checks that words form an RFC 5322 phrase, allowing the
// obs-phrase dots (RFC 5322 §4.1) after the first word. An empty display
// name is allowed (name-addr = [display-name] angle-addr).
func checkDisplayName(words []token) error {
	if len(words) > 0 && !words[0].isWord() {
		return malformed(words[0].pos, "display name starts with '.'")
	}
	return nil
}

// checkLocalPart checks that words form a local-part: dot-atom,
// quoted-string or obs-local-part = word *("." word) (RFC 5322 §3.4.1,
// §4.4).
func checkLocalPart(words []token, pos int) error {
	if len(words) == 0 {
		return malformed(pos, "empty local part")
	}
	for k, t := range words {
		if (k%2 == 0) != t.isWord() {
			if t.isWord() {
				return malformed(t.pos, "unquoted white space in local part or '@' in display name")
			}
			return malformed(t.pos, "misplaced '.' in local part")
		}
	}
	if last := words[len(words)-1]; !last.isWord() {
		return malformed(last.pos, "local part ends with '.'")
	}
	return nil
}

// address parses one address: name-addr, addr-spec, or (outside a group)
// a group, and records the domains of its mailboxes.
func (p *parser) address(inGroup bool) error {
	start := p.pos()
	words := p.phrase()
	if p.atEnd() {
		if len(words) == 0 {
			return malformed(start, "empty address")
		}
		return malformed(p.pos(), "missing '@'")
	}
	t := p.peek()
	switch {
	case t.is('<'):
		if err := checkDisplayName(words); err != nil {
			return err
		}
		p.i++
		return p.angleAddr(t.pos)
	case t.is(':'):
		if inGroup {
			return malformed(t.pos, "group inside a group")
		}
		if len(words) == 0 {
			return malformed(t.pos, "group without a name")
		}
		if err := checkDisplayName(words); err != nil {
			return err
		}
		p.i++
		return p.list(true)
	case t.is('@'):
		if err := checkLocalPart(words, t.pos); err != nil {
			return err
		}
		p.i++
		return p.domain()
	case t.is('>'):
		return malformed(t.pos, "unbalanced '>'")
	case len(words) == 0:
		return malformed(t.pos, "unexpected %s", t)
	default:
		return malformed(t.pos, "missing '@' before %s", t)
	}
}

// angleAddr parses the rest of an angle-addr after '<' at pos: addr-spec
// followed by '>'.
func (p *parser) angleAddr(pos int) error {
	if p.atEnd() {
		return malformed(pos, "unbalanced '<'")
	}
	if p.peek().is('@') || p.peek().is(',') {
		// obs-route (RFC 5322 §4.4); see the package documentation.
		return malformed(p.pos(), "source route or empty local part in angle address")
	}
	if p.peek().is('>') {
		return malformed(p.pos(), "empty angle address")
	}
	words := p.phrase()
	if p.atEnd() {
		return malformed(pos, "unbalanced '<'")
	}
	if t := p.peek(); !t.is('@') {
		if t.is('<') {
			return malformed(t.pos, "nested '<'")
		}
		return malformed(t.pos, "missing '@' before %s", t)
	}
	if err := checkLocalPart(words, p.pos()); err != nil {
		return err
	}
	p.i++
	if err := p.domain(); err != nil {
		return err
	}
	if p.atEnd() {
		return malformed(pos, "unbalanced '<'")
	}
	if t := p.peek(); !t.is('>') {
		return malformed(t.pos, "unexpected %s in angle address", t)
	}
	p.i++
	return nil
}

// domain parses a domain after '@': dot-atom or obs-domain (RFC 5322
// §3.4.1, §4.4), and records it. Domain literals are refused.
func (p *parser) domain() error {
	if p.atEnd() {
		return malformed(p.pos(), "empty domain")
	}
	t := p.peek()
	if t.kind == tokLiteral {
		return malformed(t.pos, "domain literal [%s] is not a domain name", t.text)
	}
	if t.kind != tokAtom {
		return malformed(t.pos, "expected domain, found %s", t)
	}
	var b strings.Builder
	for {
		t := p.peek()
		if t.kind != tokAtom {
			return malformed(t.pos, "expected domain label, found %s", t)
		}
		b.WriteString(t.text)
		p.i++
		if p.atEnd() || !p.peek().is('.') {
			break
		}
		dot := p.peek()
		p.i++
		if p.atEnd() || p.peek().kind != tokAtom {
			return malformed(dot.pos, "domain ends with '.' or has an empty label")
		}
		b.WriteByte('.')
	}
	p.doms = append(p.doms, b.String())
	return nil
}
