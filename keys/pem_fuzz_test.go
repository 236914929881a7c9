package keys

import (
	"bytes"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
)

// FuzzDecodePEM: the fast PEM path gives exactly what encoding/pem gives,
// for any input.
func FuzzDecodePEM(f *testing.F) {
	for _, name := range []string{"rsa2048-pkcs1.pem", "rsa2048-pkcs8.pem", "ed25519-pkcs8.pem", "rsa2048-pkcs1-opendkim.pem", "garbage.pem"} {
		if data, err := os.ReadFile(filepath.Join("..", "testdata", "keys", name)); err == nil {
			f.Add(data)
		}
	}
	f.Add([]byte("-----BEGIN X-----\nAAAA\n-----END X-----\n"))
	f.Add([]byte("-----BEGIN X-----\nProc-Type: 4,ENCRYPTED\n\nAAAA\n-----END X-----\n"))
	f.Add([]byte("-----BEGIN X-----\nAA\nAA\n-----END Y-----\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		got := decodePEM(data)
		want, _ := pem.Decode(data)
		if (got == nil) != (want == nil) {
			t.Fatalf("decodePEM = %v, pem.Decode = %v", got, want)
		}
		if got != nil && (got.Type != want.Type || !bytes.Equal(got.Bytes, want.Bytes)) {
			t.Fatalf("decodePEM = %q %x, pem.Decode = %q %x", got.Type, got.Bytes, want.Type, want.Bytes)
		}
	})
}
