//go:build !cgo || purego

package keys

import (
	"crypto"
	"crypto/rsa"
)

// SignerImplementation names the RSA signer this binary was built with
// (`authmilter version` prints it): crypto/rsa, because the binary was
// built without cgo or with -tags purego.
func SignerImplementation() string { return "go crypto/rsa" }

// newRSASigner returns k itself: crypto/rsa signs.
func newRSASigner(k *rsa.PrivateKey) (crypto.Signer, error) { return k, nil }
