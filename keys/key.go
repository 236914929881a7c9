// Package keys holds DKIM key material and its lifecycle: loading and checking
// private keys, the key table kept on the file system as
// <dir>/<domain>/<selector>.pem, DKIM DNS TXT records, and the choice of the
// active key per domain and algorithm. It knows nothing of milters.
package keys

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"time"
)

// Algorithm is a DKIM signing algorithm (the a= tag).
type Algorithm string

// The algorithms we sign with. rsa-sha1 is never used (RFC 8301 §3.1).
const (
	RSASHA256     Algorithm = "rsa-sha256"
	Ed25519SHA256 Algorithm = "ed25519-sha256"
)

// KeyType returns the k= value of the algorithm's DNS record.
func (a Algorithm) KeyType() string {
	if a == Ed25519SHA256 {
		return "ed25519"
	}
	return "rsa"
}

// MinRSABits is the smallest RSA key we load (RFC 8301 §3.2).
const MinRSABits = 1024

// ErrInsecurePermissions is returned for private keys that group or others
// can read.
var ErrInsecurePermissions = errors.New("private key is readable by group or others")

// Key is one private key from the key table.
type Key struct {
	// Domain is the d= the key signs for (its folder name).
	Domain string
	// Selector is the s= (the file name without .pem).
	Selector string
	// Path is the file the key was read from.
	Path string
	// Signer signs; RSA keys are precomputed once at load time so no message
	// pays for it.
	Signer crypto.Signer
	// Algorithm follows from the key type.
	Algorithm Algorithm
	// Bits is the RSA modulus size, or 256 for Ed25519.
	Bits int
	// ModTime is the key file's modification time (its age for rotation).
	ModTime time.Time
}

// ID names the key in logs and errors as domain/selector.
func (k *Key) ID() string { return k.Domain + "/" + k.Selector }

// PublicKeyData returns the p= value for the key's DNS record: the
// SubjectPublicKeyInfo for RSA (what opendkim-genkey publishes, accepted by
// every verifier), the raw 32 bytes for Ed25519 (RFC 8463 §4.2).
func (k *Key) PublicKeyData() string {
	return PublicKeyData(k.Signer.Public())
}

// PublicKeyData returns the base64 p= value for a public key.
func PublicKeyData(pub crypto.PublicKey) string {
	switch p := pub.(type) {
	case ed25519.PublicKey:
		return base64.StdEncoding.EncodeToString(p)
	default:
		der, err := x509.MarshalPKIXPublicKey(p)
		if err != nil {
			return ""
		}
		return base64.StdEncoding.EncodeToString(der)
	}
}

// LoadKey reads and checks one private key file. The file must not be
// readable by group or others; RSA keys must have at least MinRSABits.
func LoadKey(path, domain, selector string) (*Key, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("keys: %s/%s: %w", domain, selector, err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("keys: %s/%s: %s has mode %04o: %w (run chmod 600 %s)",
			domain, selector, path, fi.Mode().Perm(), ErrInsecurePermissions, path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("keys: %s/%s: %w", domain, selector, err)
	}
	signer, err := ParsePrivateKey(data)
	if err != nil {
		return nil, fmt.Errorf("keys: %s/%s: %s: %w", domain, selector, path, err)
	}
	k := &Key{Domain: domain, Selector: selector, Path: path, Signer: signer, ModTime: fi.ModTime()}
	switch s := signer.(type) {
	case *rsa.PrivateKey:
		k.Algorithm, k.Bits = RSASHA256, s.N.BitLen()
	case ed25519.PrivateKey:
		k.Algorithm, k.Bits = Ed25519SHA256, 256
	}
	return k, nil
}

// ParsePrivateKey decodes a PEM private key: RSA in PKCS#1 ("RSA PRIVATE
// KEY", what opendkim-genkey writes) or PKCS#8 ("PRIVATE KEY", what openssl
// genpkey writes), Ed25519 in PKCS#8. RSA keys under MinRSABits are refused.
func ParsePrivateKey(data []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block found (want a PEM private key)")
	}
	var key any
	var err error
	switch block.Type {
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "ENCRYPTED PRIVATE KEY":
		return nil, errors.New("encrypted private keys are not supported; store it unencrypted with mode 0600")
	default:
		return nil, fmt.Errorf("PEM block %q is not a private key", block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", block.Type, err)
	}
	switch k := key.(type) {
	case *rsa.PrivateKey:
		if bits := k.N.BitLen(); bits < MinRSABits {
			return nil, fmt.Errorf("RSA key has %d bits; at least %d are required (RFC 8301), 2048 recommended", bits, MinRSABits)
		}
		if err := k.Validate(); err != nil {
			return nil, fmt.Errorf("invalid RSA key: %w", err)
		}
		k.Precompute()
		return k, nil
	case ed25519.PrivateKey:
		return k, nil
	default:
		return nil, fmt.Errorf("unsupported key type %T (want RSA or Ed25519)", key)
	}
}
