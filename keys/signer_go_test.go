//go:build !cgo || purego || nolibcrypto

package keys

import (
	"crypto/rsa"
	"testing"
)

// TestSignerImplementation: without cgo, crypto/rsa signs.
func TestSignerImplementation(t *testing.T) {
	if s := SignerImplementation(); s != "go crypto/rsa" {
		t.Errorf("SignerImplementation() = %q", s)
	}
	k := signerTestKeys(t)[0]
	if s, err := newRSASigner(k); err != nil || s != k {
		t.Errorf("newRSASigner = %T, %v; want the key itself", s, err)
	}
	var _ *rsa.PrivateKey = k
}
