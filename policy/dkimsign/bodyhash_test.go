package dkimsign

import (
	"bytes"
	"crypto/sha256"
	"hash"
	"math/rand/v2"
	"testing"
)

// refBodyHasher is BodyHasher as it was before runs took in single spaces
// and line ends (the reference of the differential test and fuzz target).
type refBodyHasher struct {
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

// newRefBodyHasher returns a hasher for canonicalization c with SHA-256.
func newRefBodyHasher(c Canon) *refBodyHasher {
	return &refBodyHasher{canon: c, h: sha256.New()}
}

func (b *refBodyHasher) emit(c byte) {
	if b.n == len(b.out) {
		b.h.Write(b.out[:])
		b.n = 0
	}
	b.out[b.n] = c
	b.n++
}

// emitRun writes a run of bytes that need no canonicalization.
func (b *refBodyHasher) emitRun(run []byte) {
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
func (b *refBodyHasher) flushPending() {
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
var refSpecial = [2][256]bool{
	Simple:  {'\r': true, '\n': true},
	Relaxed: {'\r': true, '\n': true, ' ': true, '\t': true},
}

// Write canonicalizes p into the hash. Runs of plain bytes are copied
// whole; only line ends and (relaxed) whitespace are looked at one by one.
func (b *refBodyHasher) Write(p []byte) (int, error) {
	sp := &refSpecial[b.canon]
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
			j := i + 1
			for j < len(p) && !sp[p[j]] {
				j++
			}
			b.flushPending()
			b.emitRun(p[i:j])
			b.wrote = true
			i = j
		}
	}
	return len(p), nil
}

// Sum finishes the body and returns its hash. The hasher must not be used
// afterwards.
func (b *refBodyHasher) Sum() []byte {
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

// bodyCorpus are bodies that stress each path: words with single spaces,
// WSP runs and tabs, WSP before line ends, bare CR and LF, empty lines in
// the middle and at the end, leading WSP.
var bodyCorpus = []string{
	"",
	"\r\n",
	"a the lazy while lazy lines sign quick\r\nrelaxed jumps jumps\r\n",
	" leading space\r\n\ttab lead\r\n",
	"two  spaces\r\ntab\there\r\ntrailing \r\ntrailing tab\t\r\n",
	"x\r\n\r\n\r\ny\r\n\r\n\r\n",
	"bare\rcr\r\nbare\nlf\n\r\r\n",
	"end without crlf",
	"end with space ",
	"a \r\n \r\n\t\r\n",
	"word \r",
	" \t \r\n",
}

func TestBodyHasherMatchesReference(t *testing.T) {
	for _, c := range []Canon{Simple, Relaxed} {
		for _, body := range bodyCorpus {
			for _, size := range []int{1, 2, 3, 7, 64, 1 << 20} {
				if got, want := hashInChunks(NewBodyHasher(c), []byte(body), size), hashInChunks(newRefBodyHasher(c), []byte(body), size); !bytes.Equal(got, want) {
					t.Errorf("%v %q in chunks of %d: %x, want %x", c, body, size, got, want)
				}
			}
		}
	}
}

// bodyHash is BodyHasher or its reference.
type bodyHash interface {
	Write(p []byte) (int, error)
	Sum() []byte
}

func hashInChunks(h bodyHash, body []byte, size int) []byte {
	for len(body) > 0 {
		n := min(size, len(body))
		h.Write(body[:n])
		body = body[n:]
	}
	return h.Sum()
}

// FuzzBodyHasherMatchesReference: any bytes (bare CR, NUL, non-UTF-8
// included), any chunking, both canonicalizations.
func FuzzBodyHasherMatchesReference(f *testing.F) {
	for _, b := range bodyCorpus {
		f.Add([]byte(b), uint8(3))
	}
	f.Fuzz(func(t *testing.T, body []byte, size uint8) {
		n := int(size%64) + 1
		for _, c := range []Canon{Simple, Relaxed} {
			if got, want := hashInChunks(NewBodyHasher(c), body, n), hashInChunks(newRefBodyHasher(c), body, n); !bytes.Equal(got, want) {
				t.Fatalf("%v %q in chunks of %d: %x, want %x", c, body, n, got, want)
			}
		}
	})
}

// benchBody is text like bench/compare's messages: short words in random
// order (a regular pattern would let the branch predictor learn it),
// single spaces, CRLF every 60 or so bytes.
func benchBody(size int) []byte {
	words := []string{"the", "lazy", "while", "lines", "sign", "quick", "relaxed", "jumps", "DNS", "over", "keys", "canonicalization"}
	rng := rand.New(rand.NewPCG(1, 2))
	var b bytes.Buffer
	for col := 0; b.Len() < size; {
		w := words[rng.IntN(len(words))]
		b.WriteString(w)
		col += len(w)
		if col > 60 {
			b.WriteString("\r\n")
			col = 0
		} else {
			b.WriteByte(' ')
			col++
		}
	}
	return b.Bytes()[:size]
}

func BenchmarkBodyHasher(b *testing.B) {
	body := benchBody(100 << 10)
	for _, c := range []Canon{Simple, Relaxed} {
		b.Run(c.String(), func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				h := NewBodyHasher(c)
				for rest := body; len(rest) > 0; {
					n := min(16<<10, len(rest))
					h.Write(rest[:n])
					rest = rest[n:]
				}
				h.Sum()
			}
		})
	}
}

// hash and sha256 are used by the reference copy.
var _ hash.Hash = sha256.New()
