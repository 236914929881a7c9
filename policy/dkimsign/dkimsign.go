// Package dkimsign makes DKIM signatures (RFC 6376) from a header given
// field by field and a body hash computed as the body streams by.
//
// go-msgauth's dkim.Signer (authmilter's tests still use go-msgauth as an
// oracle) takes the whole message through one goroutine and pipe per
// signature, and
// canonicalizes the body byte by byte into a fresh buffer per write: at
// 1 MiB that was 62% of the daemon's CPU and most of its garbage, and a
// message signed with RSA and Ed25519 had its body canonicalized twice.
// Here the body is canonicalized once per canonicalization in a fixed
// buffer, straight into SHA-256, and every signature of the message shares
// the hash (README, "Design choices"). The verifier (policy) hashes bodies
// and canonicalizes fields with the same code.
package dkimsign

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"strings"
	"time"
)

// Canon is a canonicalization algorithm (RFC 6376 §3.4).
type Canon int

// The two canonicalizations.
const (
	Simple Canon = iota
	Relaxed
)

func (c Canon) String() string {
	if c == Relaxed {
		return "relaxed"
	}
	return "simple"
}

// ParseCanon returns the canonicalization named name ("simple" or
// "relaxed", as c= and the config write them); ok is false for any other
// name. What an absent or half c= means differs between DKIM, ARC and the
// config, so the callers split c= themselves.
func ParseCanon(name string) (c Canon, ok bool) {
	switch name {
	case "simple":
		return Simple, true
	case "relaxed":
		return Relaxed, true
	}
	return Simple, false
}

// BodyHasher computes the body hash (bh=) of a body written to it in
// chunks of any size, without keeping the body.
type BodyHasher struct {
	canon Canon
	h     hash.Hash
	// out batches the canonical bytes for the hash: 1 KiB (16 SHA-256
	// blocks) makes the per-call cost negligible, and it is allocated
	// with every message, so more would only be garbage.
	out [1024]byte
	n   int
	// Line ends (CRLF) seen but not yet written: they are dropped if only
	// empty lines follow to the end of the body (RFC 6376 §3.4.3, §3.4.4).
	crlfs int
	// A CR whose LF may come in the next chunk.
	cr bool
	// Relaxed: a run of WSP not yet written (reduced to one SP, or dropped
	// at the end of a line).
	wsp bool
	// wrote is set once any non-line-end byte has been written.
	wrote bool
}

// NewBodyHasher returns a hasher for canonicalization c with SHA-256.
func NewBodyHasher(c Canon) *BodyHasher {
	return &BodyHasher{canon: c, h: sha256.New()}
}

func (b *BodyHasher) emit(c byte) {
	if b.n == len(b.out) {
		b.h.Write(b.out[:])
		b.n = 0
	}
	b.out[b.n] = c
	b.n++
}

// emitRun writes a run of bytes that need no canonicalization.
func (b *BodyHasher) emitRun(run []byte) {
	if b.n+len(run) > len(b.out) {
		b.h.Write(b.out[:b.n])
		b.n = 0
		if len(run) > len(b.out) {
			b.h.Write(run)
			return
		}
	}
	b.n += copy(b.out[b.n:], run)
}

// flushPending writes the line ends (and, relaxed, the space) held back
// because data follows them.
func (b *BodyHasher) flushPending() {
	for ; b.crlfs > 0; b.crlfs-- {
		b.emit('\r')
		b.emit('\n')
	}
	if b.wsp {
		b.emit(' ')
		b.wsp = false
	}
}

// special marks the bytes that end a run of plain data: line-end bytes,
// and for relaxed also WSP (RFC 6376 §3.4.4 reduces WSP runs to one SP and
// drops WSP at line ends).
var special = [2][256]bool{
	Simple:  {'\r': true, '\n': true},
	Relaxed: {'\r': true, '\n': true, ' ': true, '\t': true},
}

// Write canonicalizes p into the hash. Runs of plain bytes are copied
// whole; only line ends and (relaxed) whitespace are looked at one by one.
func (b *BodyHasher) Write(p []byte) (int, error) {
	sp := &special[b.canon]
	for i := 0; i < len(p); {
		c := p[i]
		if b.cr {
			b.cr = false
			if c == '\n' {
				b.wsp = false
				b.crlfs++
				i++
				continue
			}
			b.flushPending()
			b.emit('\r') // a CR alone is data
			b.wrote = true
		}
		switch {
		case c == '\r':
			b.cr = true
			i++
		case c == '\n': // a bare LF ends a line too, as MTAs make it CRLF
			b.wsp = false
			b.crlfs++
			i++
		case sp[c]: // relaxed WSP
			b.wsp = true
			i++
		default:
			j := plainRun(p, i+1, sp)
			b.flushPending()
			b.emitRun(p[i:j])
			b.wrote = true
			i = j
		}
	}
	return len(p), nil
}

// plainRun returns where the run of bytes that canonicalization leaves as
// they are, which goes on at p[j] after a plain byte, ends. Besides plain
// bytes, a run takes in what is already canonical between two plain bytes
// (both in p, so that no decision waits for the next chunk): one SP
// (relaxed reduces WSP runs to one SP, and this one is neither part of a
// longer run nor at a line end) and one CRLF (a line end with data after
// it is kept, and the byte before it is plain, not WSP). In prose that is
// every space and line end, so a body is hashed in long copies rather
// than a word at a time.
func plainRun(p []byte, j int, sp *[256]bool) int {
	j = plainLines(p, j, sp)
	for {
		for j < len(p) && !sp[p[j]] {
			j++
		}
		switch {
		case j == len(p):
			return j
		case p[j] == ' ' && j+1 < len(p) && !sp[p[j+1]]:
			j += 2
		case p[j] == '\r' && j+2 < len(p) && p[j+1] == '\n' && !sp[p[j+2]]:
			j += 3
		default:
			return j
		}
	}
}

// plainLines is plainRun's fast path: it takes in whole lines, found with
// the vectorized searches of package bytes, as long as each is already
// canonical and is followed by a plain byte, and returns where it stopped
// (j itself when the next line is not). Byte by byte, prose costs a
// mispredicted branch at every space.
func plainLines(p []byte, j int, sp *[256]bool) int {
	relaxed := sp == &special[Relaxed]
	for {
		e := bytes.IndexByte(p[j:], '\r')
		if e < 0 {
			return j
		}
		line := p[j : j+e]
		// p[j-1] is plain, so only what is inside the line can be
		// special: a bare LF; relaxed, also a tab, two spaces, or a space
		// before the line end.
		if bytes.IndexByte(line, '\n') >= 0 {
			return j
		}
		if relaxed && (bytes.IndexByte(line, '\t') >= 0 || bytes.Contains(line, doubleSpace) ||
			(e > 0 && line[e-1] == ' ')) {
			return j
		}
		k := j + e
		if k+2 >= len(p) || p[k+1] != '\n' || sp[p[k+2]] {
			return j
		}
		j = k + 3
	}
}

// doubleSpace is a run of WSP that relaxed canonicalization shortens.
var doubleSpace = []byte("  ")

// Sum finishes the body and returns its hash. The hasher must not be used
// afterwards.
func (b *BodyHasher) Sum() []byte {
	if b.cr {
		b.cr = false
		b.flushPending()
		b.emit('\r')
		b.wrote = true
	}
	// Trailing empty lines are ignored; a non-empty body ends with one
	// CRLF. An empty body is CRLF in simple (§3.4.3) and nothing in relaxed
	// (§3.4.4, erratum 1384).
	if b.wrote || b.canon == Simple {
		b.emit('\r')
		b.emit('\n')
	}
	b.h.Write(b.out[:b.n])
	b.n = 0
	return b.h.Sum(nil)
}

// Field is one header field: Value is everything after the colon, with its
// leading whitespace and CRLF folding, exactly as the receiver will see it.
type Field struct {
	Name  string
	Value string
}

// Params describe one signature.
type Params struct {
	Domain, Selector string
	// Signer is an *rsa.PrivateKey or an ed25519.PrivateKey.
	Signer crypto.Signer
	// HeaderCanon and BodyCanon are the c= algorithms; BodyHash must have
	// been computed with BodyCanon.
	HeaderCanon, BodyCanon Canon
	// HeaderKeys is h=, in order; a name may occur more often than the
	// field (oversigning).
	HeaderKeys []string
	// Time is t=; Expire, if not zero, x=.
	Time, Expire time.Time
}

// Sign returns the value of the DKIM-Signature field (with its leading
// space, folded with CRLF) for a message with this header and body hash.
func Sign(p Params, header []Field, bodyHash []byte) (string, error) {
	var algo string
	var hashOpt crypto.SignerOpts
	switch p.Signer.Public().(type) {
	case *rsa.PublicKey:
		algo, hashOpt = "rsa-sha256", crypto.SHA256
	case ed25519.PublicKey:
		// RFC 8463 §3: Ed25519 signs the SHA-256 hash (PureEdDSA over it).
		algo, hashOpt = "ed25519-sha256", crypto.Hash(0)
	default:
		return "", fmt.Errorf("dkimsign: unsupported key type %T", p.Signer.Public())
	}
	if p.Domain == "" || p.Selector == "" {
		return "", errors.New("dkimsign: domain and selector are required")
	}
	hasFrom := false
	for _, k := range p.HeaderKeys {
		hasFrom = hasFrom || strings.EqualFold(k, "From")
	}
	if !hasFrom {
		return "", errors.New("dkimsign: From must be signed (RFC 6376 §5.4)")
	}

	unsigned := formatTags(algo, p, base64.StdEncoding.EncodeToString(bodyHash))
	sig, err := p.Signer.Sign(rand.Reader, HeaderHash(p.HeaderCanon, header, p.HeaderKeys, "DKIM-Signature", unsigned), hashOpt)
	if err != nil {
		return "", fmt.Errorf("dkimsign: sign: %w", err)
	}
	return unsigned + foldBase64(base64.StdEncoding.EncodeToString(sig), len("b=")), nil
}

// HeaderHash is the SHA-256 of a signature's header input (RFC 6376 §3.7,
// §5.4.2), which DKIM-Signature and ARC-Message-Signature share: the
// fields names (h=) picks, canonicalized with hc and each ending with
// CRLF, then the signature field itself, sigName:sigValue, with its b=
// value already empty and no final CRLF. Signing and verifying both use
// it.
func HeaderHash(hc Canon, header []Field, names []string, sigName, sigValue string) []byte {
	h := sha256.New()
	buf := make([]byte, 0, 1024)
	for _, f := range selectFields(header, names) {
		buf = AppendCanonicalField(buf[:0], hc, f.Name, f.Value, true)
		h.Write(buf)
	}
	h.Write(AppendCanonicalField(buf[:0], hc, sigName, sigValue, false))
	return h.Sum(nil)
}

// selectFields picks, for each name of h=, the last field of that name not
// picked yet (RFC 6376 §5.4.2); names with no field left pick nothing.
func selectFields(header []Field, keys []string) []Field {
	used := make([]bool, len(header))
	var out []Field
	for _, k := range keys {
		for i := len(header) - 1; i >= 0; i-- {
			if !used[i] && strings.EqualFold(header[i].Name, k) {
				used[i] = true
				out = append(out, header[i])
				break
			}
		}
	}
	return out
}

// canonicalizeField returns name:value canonicalized (RFC 6376 §3.4.1,
// §3.4.2), with a final CRLF when crlf is set.
func canonicalizeField(c Canon, name, value string, crlf bool) string {
	return string(AppendCanonicalField(nil, c, name, value, crlf))
}

// AppendCanonicalField appends name:value in canonical form c (RFC 6376
// §3.4.1, §3.4.2), with a final CRLF when crlf is set, to dst and returns
// it: with a reused dst, a field costs no allocation (the header hash of
// every signed or verified message canonicalizes a dozen fields).
//
// Relaxed unfolds, turns runs of SP, HTAB, CR and LF into one SP, drops
// them at both ends of the value and before the colon, and lowercases the
// name (as strings.ToLower does, also for a name that is not ASCII).
func AppendCanonicalField(dst []byte, c Canon, name, value string, crlf bool) []byte {
	if c == Simple {
		dst = append(dst, name...)
		dst = append(dst, ':')
		dst = append(dst, value...)
	} else {
		dst = appendLower(dst, strings.TrimRight(name, " \t"))
		dst = append(dst, ':')
		start, space := len(dst), false
		// Byte by byte is rune by rune here: no byte of a multi-byte
		// UTF-8 sequence (or of an invalid one) is below 0x80.
		for i := 0; i < len(value); i++ {
			switch b := value[i]; b {
			case ' ', '\t', '\r', '\n':
				space = true
			default:
				if space && len(dst) > start {
					dst = append(dst, ' ')
				}
				space = false
				dst = append(dst, b)
			}
		}
	}
	if crlf {
		dst = append(dst, '\r', '\n')
	}
	return dst
}

// appendLower appends s lowercased: ASCII in place, anything else as
// strings.ToLower has it.
func appendLower(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return append(dst, strings.ToLower(s)...)
		}
	}
	for i := 0; i < len(s); i++ {
		b := s[i]
		if 'A' <= b && b <= 'Z' {
			b += 'a' - 'A'
		}
		dst = append(dst, b)
	}
	return dst
}

// lineWidth is where tag lists are folded.
const lineWidth = 76

// formatTags renders the field value up to and including "b=", folded
// between tags and inside h=.
func formatTags(algo string, p Params, bh string) string {
	tags := []string{
		"v=1", "a=" + algo, "c=" + p.HeaderCanon.String() + "/" + p.BodyCanon.String(),
		"d=" + p.Domain, "s=" + p.Selector, "t=" + strconv.FormatInt(p.Time.Unix(), 10),
	}
	if !p.Expire.IsZero() {
		tags = append(tags, "x="+strconv.FormatInt(p.Expire.Unix(), 10))
	}
	var b strings.Builder
	col := len("DKIM-Signature:")
	put := func(s string) {
		if col+1+len(s) > lineWidth && col > len("DKIM-Signature:") {
			b.WriteString("\r\n\t")
			col = 8
		} else {
			b.WriteByte(' ')
			col++
		}
		b.WriteString(s)
		col += len(s)
	}
	for _, t := range tags {
		put(t + ";")
	}
	// h= folds between names (FWS is allowed around ':').
	for i, k := range p.HeaderKeys {
		s := k
		if i == 0 {
			s = "h=" + k
		}
		if i < len(p.HeaderKeys)-1 {
			s += ":"
		} else {
			s += ";"
		}
		if i == 0 {
			put(s)
			continue
		}
		if col+len(s) > lineWidth {
			b.WriteString("\r\n\t ")
			col = 9
		}
		b.WriteString(s)
		col += len(s)
	}
	put("bh=" + bh + ";")
	b.WriteString("\r\n\tb=")
	return b.String()
}

// foldBase64 folds a base64 value that starts at column start of a line
// beginning with a tab.
func foldBase64(s string, start int) string {
	var b strings.Builder
	first := lineWidth - 8 - start
	for len(s) > 0 {
		n := min(first, len(s))
		b.WriteString(s[:n])
		s = s[n:]
		if len(s) > 0 {
			b.WriteString("\r\n\t ")
		}
		first = lineWidth - 9
	}
	return b.String()
}

// CanonicalizeField returns the field name:value in canonical form c
// (RFC 6376 §3.4.1, §3.4.2), ending with CRLF when crlf is set. ARC
// (policy/arc) hashes its header fields the same way.
func CanonicalizeField(c Canon, name, value string, crlf bool) string {
	return canonicalizeField(c, name, value, crlf)
}

// FoldBase64 folds a base64 value (b=) that starts at column start of a
// line beginning with a tab, as Sign does.
func FoldBase64(s string, start int) string { return foldBase64(s, start) }
