package policy

// Benchmarks of one message through the policy (Begin, Write, Finish), the
// way the milter drives it, next to the raw cost of the RSA signature on the
// same key: the design asks for at least 80% of Go's RSA limit when signing.
//
//	go test -run '^$' -bench . -benchmem ./policy
//
// BenchmarkSignVsRSALimit reports that ratio directly as "%rsa-limit": the
// time of one raw RSA-2048 signature (rsa.SignPKCS1v15 on the loaded key)
// divided by the time of signing one whole 4 KiB message. No test here
// asserts a duration; the numbers are for people and for bench/RESULTS.md.

import (
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/authmilter/authmilter/keys"
)

// benchChunk is the largest milter body chunk, as the MTA sends it.
const benchChunk = 65535

// benchMessage returns the header fields and CRLF body of a plain-text
// message of about size bytes from example.com.
func benchMessage(size int) ([]HeaderField, []byte) {
	header := []HeaderField{
		{"From", " Load Sender <sender@example.com>"},
		{"To", " Load Recipient <rcpt@example.org>"},
		{"Subject", " policy benchmark message"},
		{"Date", " Mon, 02 Nov 2026 10:00:00 +0000"},
		{"Message-ID", " <bench.1@example.com>"},
		{"MIME-Version", " 1.0"},
		{"Content-Type", " text/plain; charset=us-ascii"},
		{"Content-Transfer-Encoding", " 7bit"},
	}
	hlen := 2
	for _, f := range header {
		hlen += len(f.Name) + 1 + len(f.Value) + 2
	}
	words := strings.Fields("the quick brown fox jumps over a lazy dog while milters sign mail " +
		"with keys from DNS and relaxed canonicalization folds  white   space\tin lines")
	var b strings.Builder
	seed := uint32(2463534242)
	next := func() uint32 { seed ^= seed << 13; seed ^= seed >> 17; seed ^= seed << 5; return seed }
	for b.Len() < size-hlen {
		n := 40 + int(next()%36)
		line := ""
		for len(line) < n {
			if line != "" {
				line += " "
			}
			line += words[next()%uint32(len(words))]
		}
		b.WriteString(line + "\r\n")
	}
	return header, []byte(b.String())
}

// benchPolicy is testPolicy with example.com pinned to the given selectors:
// "2026-11" (RSA-2048), "2026-11e" (Ed25519) or both.
func benchPolicy(b *testing.B, selectors ...string) *Policy {
	b.Helper()
	quoted := make([]string, len(selectors))
	for i, s := range selectors {
		quoted[i] = fmt.Sprintf("%q", s)
	}
	pol, _ := testPolicy(b, "[keys.pin]\n\"example.com\" = ["+strings.Join(quoted, ", ")+"]\n")
	if n := len(pol.SigningKeys("example.com")); n != len(selectors) {
		b.Fatalf("%d signing keys for example.com, want %d", n, len(selectors))
	}
	return pol
}

var benchOutboundEnv = Envelope{ClientIP: netip.MustParseAddr("127.0.0.1"), MailFrom: "sender@example.com",
	Rcpts: []string{"rcpt@example.org"}, QueueID: "BENCH"}

// benchSignOne runs one outbound message through the policy and checks that it
// got want signatures.
func benchSignOne(b *testing.B, pol *Policy, header []HeaderField, body []byte, want int) {
	env := benchOutboundEnv
	m := pol.Begin(&env, header)
	for rest := body; len(rest) > 0; {
		n := min(len(rest), benchChunk)
		m.Write(rest[:n])
		rest = rest[n:]
	}
	d := m.Finish()
	if d.Signatures != want {
		b.Fatalf("%d signatures, want %d: %v", d.Signatures, want, d.Log)
	}
}

var benchSignCases = []struct {
	name      string
	selectors []string
}{
	{"rsa2048", []string{"2026-11"}},
	{"ed25519", []string{"2026-11e"}},
	{"rsa2048+ed25519", []string{"2026-11", "2026-11e"}},
}

// BenchmarkSign signs one message per operation on one goroutine.
func BenchmarkSign(b *testing.B) {
	for _, size := range []int{4 << 10, 1 << 20} {
		header, body := benchMessage(size)
		for _, tc := range benchSignCases {
			b.Run(fmt.Sprintf("%s/%s", tc.name, benchSizeName(size)), func(b *testing.B) {
				pol := benchPolicy(b, tc.selectors...)
				b.SetBytes(int64(len(body)))
				b.ReportAllocs()
				b.ResetTimer()
				for b.Loop() {
					benchSignOne(b, pol, header, body, len(tc.selectors))
				}
			})
		}
	}
}

// BenchmarkSignParallel signs on every CPU at once (GOMAXPROCS goroutines),
// like the daemon under concurrent connections; msgs/s is the throughput
// limit of the policy alone.
func BenchmarkSignParallel(b *testing.B) {
	header, body := benchMessage(4 << 10)
	for _, tc := range benchSignCases {
		b.Run(tc.name+"/4KiB", func(b *testing.B) {
			pol := benchPolicy(b, tc.selectors...)
			b.ReportAllocs()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					benchSignOne(b, pol, header, body, len(tc.selectors))
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
		})
	}
}

// benchRSAKey returns the signer of the RSA-2048 key the policy signs
// with: libcrypto's in the default build, crypto/rsa's with nolibcrypto.
func benchRSAKey(b *testing.B, pol *Policy) crypto.Signer {
	b.Helper()
	var k *keys.Key
	for _, x := range pol.SigningKeys("example.com") {
		if x.Algorithm == keys.RSASHA256 {
			k = x
		}
	}
	if k == nil {
		b.Fatal("no RSA key")
	}
	signer, err := k.PrivateKey()
	if err != nil {
		b.Fatal(err)
	}
	return signer
}

// BenchmarkRSASignPKCS1v15 is the raw cost of the signature alone, with
// the build's signer: the limit for RSA-2048 signing, one signature per
// message.
func BenchmarkRSASignPKCS1v15(b *testing.B) {
	pol := benchPolicy(b, "2026-11")
	priv := benchRSAKey(b, pol)
	digest := sha256.Sum256([]byte("DKIM-Signature header hash input"))
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := priv.Sign(rand.Reader, digest[:], crypto.SHA256); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		start := time.Now()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := priv.Sign(rand.Reader, digest[:], crypto.SHA256); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "sigs/s")
	})
}

// BenchmarkSignVsRSALimit signs b.N 4 KiB messages with RSA-2048, then
// makes b.N raw signatures with the same key, and reports how close message
// signing comes to the raw limit ("%rsa-limit", 100 = no overhead at all;
// the design's target is at least 80).
func BenchmarkSignVsRSALimit(b *testing.B) {
	header, body := benchMessage(4 << 10)
	pol := benchPolicy(b, "2026-11")
	priv := benchRSAKey(b, pol)
	digest := sha256.Sum256([]byte("DKIM-Signature header hash input"))
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		benchSignOne(b, pol, header, body, 1)
	}
	perMsg := time.Since(start)
	b.StopTimer()
	start = time.Now()
	for i := 0; i < b.N; i++ {
		if _, err := priv.Sign(rand.Reader, digest[:], crypto.SHA256); err != nil {
			b.Fatal(err)
		}
	}
	perSig := time.Since(start)
	b.ReportMetric(100*float64(perSig)/float64(perMsg), "%rsa-limit")
	b.ReportMetric(float64(perSig.Nanoseconds())/float64(b.N), "rsa-ns/sig")
}

// BenchmarkVerify verifies one RSA-2048-signed 4 KiB inbound message per
// operation through the policy (DKIM plus SPF and DMARC against the
// in-memory resolver of the unit tests, so no DNS time is included).
func BenchmarkVerify(b *testing.B) {
	header, body := benchMessage(4 << 10)
	pol := benchPolicy(b, "2026-11")
	env := benchOutboundEnv
	m := pol.Begin(&env, header)
	m.Write(body)
	d := m.Finish()
	if d.Signatures != 1 {
		b.Fatalf("setup: %d signatures", d.Signatures)
	}
	signed := append([]HeaderField{d.Prepend[0]}, header...)
	in := Envelope{ClientIP: netip.MustParseAddr("198.51.100.1"), Helo: "mail.example.com",
		MailFrom: "sender@example.com", Rcpts: []string{"rcpt@example.org"}, QueueID: "BENCHV"}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		e := in
		m := pol.Begin(&e, signed)
		m.Write(body)
		d := m.Finish()
		if len(d.Prepend) != 1 || !strings.Contains(d.Prepend[0].Value, "dkim=pass") {
			b.Fatalf("not verified: %v", d.Prepend)
		}
	}
}

func benchSizeName(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%dKiB", n>>10)
	}
	return fmt.Sprintf("%dB", n)
}
