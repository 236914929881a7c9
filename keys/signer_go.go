//go:build !cgo || purego || nolibcrypto

package keys

import (
	"crypto"
	"crypto/rsa"
)

// SignerImplementation names the RSA signer this binary was built with
// (`authmilter version` prints it): crypto/rsa, because the binary was
// built without cgo or with -tags nolibcrypto (or purego, which also turns
// off the assembly of Go's own crypto: RSA then costs twice as much).
func SignerImplementation() string { return "go crypto/rsa" }

// newRSASigner returns k itself: crypto/rsa signs.
func newRSASigner(k *rsa.PrivateKey) (crypto.Signer, error) { return k, nil }
