package keys

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// signerKeySizes are the RSA sizes both signers are compared on
// (testdata/signer/rsaN.pem, made by openssl genrsa).
var signerKeySizes = []int{1024, 2048, 3072, 4096}

// signerTestKeys reads the test keys with crypto/x509 (ParsePrivateKey),
// in the order of signerKeySizes.
func signerTestKeys(tb testing.TB) []*rsa.PrivateKey {
	tb.Helper()
	var out []*rsa.PrivateKey
	for _, bits := range signerKeySizes {
		data, err := os.ReadFile(filepath.Join("testdata", "signer", "rsa"+strconv.Itoa(bits)+".pem"))
		if err != nil {
			tb.Fatal(err)
		}
		s, err := ParsePrivateKey(data)
		if err != nil {
			tb.Fatal(err)
		}
		k := s.(*rsa.PrivateKey)
		if k.N.BitLen() != bits {
			tb.Fatalf("rsa%d.pem has %d bits", bits, k.N.BitLen())
		}
		out = append(out, k)
	}
	return out
}

// BenchmarkRSASign is one RSA-2048 PKCS#1 v1.5 SHA-256 signature with
// crypto/rsa (go) and, in a cgo build, with libcrypto (openssl); the
// parallel variants run on every CPU.
func BenchmarkRSASign(b *testing.B) {
	k := signerTestKeys(b)[1]
	signers := []struct {
		name string
		s    crypto.Signer
	}{{"go", k}}
	if s, err := newRSASigner(k); err != nil {
		b.Fatal(err)
	} else if s != crypto.Signer(k) {
		signers = append(signers, struct {
			name string
			s    crypto.Signer
		}{"openssl", s})
	}
	digest := sha256.Sum256([]byte("authmilter"))
	for _, sg := range signers {
		b.Run(sg.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := sg.s.Sign(rand.Reader, digest[:], crypto.SHA256); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(sg.name+"-parallel", func(b *testing.B) {
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := sg.s.Sign(rand.Reader, digest[:], crypto.SHA256); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
