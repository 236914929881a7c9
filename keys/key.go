// Package keys holds DKIM key material and its lifecycle: loading and checking
// private keys, the key table kept on the file system as
// <dir>/<domain>/<selector>.pem, DKIM DNS TXT records, and the choice of the
// active key per domain and algorithm. It knows nothing of milters.
package keys

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
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
	// Algorithm follows from the key type.
	Algorithm Algorithm
	// Bits is the RSA modulus size, or 256 for Ed25519.
	Bits int
	// ModTime is the key file's modification time.
	ModTime time.Time
	// Created orders a domain's keys: the newest created usable key of an
	// algorithm signs. It is the creation time in the domain's state file
	// (keygen, rotate), else when a tool first saw the key (imported keys),
	// else ModTime. Set by LoadDir and LoadDomain.
	Created time.Time
	// Testing is set for keys made with keygen -t y: their record carries
	// t=y.
	Testing bool

	// file is the identity of the key file when it was read: a reload
	// takes the key over while the file keeps it. It is the Key's, not the
	// material's, because a touched file with the same content shares its
	// material (and cached signer) with the previous table, which must not
	// change.
	file fileID
	// m is the key itself, in compact form (see material).
	m *material
}

// Public returns the public key (nil for a key taken from the table index
// whose file can no longer be read as it was: see LoadIndex).
func (k *Key) Public() crypto.PublicKey { return k.m.public() }

// PrivateKey returns the key to sign with. Keys of the key table are
// parsed on first use and kept in the table's SignerCache; an error means
// the key cannot sign (it passed the structural checks of loading but not
// the full ones: an inconsistent RSA key).
func (k *Key) PrivateKey() (crypto.Signer, error) {
	if k.m.signer != nil {
		return k.m.signer, nil
	}
	s, err := k.m.cache.get(k.m)
	if err != nil {
		return nil, fmt.Errorf("keys: %s: %s: %w", k.ID(), k.Path, err)
	}
	return s, nil
}

// Fingerprint is the SHA-256 of the key file's content, in hex: what the
// daemon's publication file records about the key it found published.
func (k *Key) Fingerprint() string { return hex.EncodeToString(k.m.sum[:]) }

// HasFingerprint reports whether fp is k's Fingerprint, without making
// one (a reload compares 100,000 of them).
func (k *Key) HasFingerprint(fp string) bool {
	var b [2 * sha256.Size]byte
	hex.Encode(b[:], k.m.sum[:])
	return string(b[:]) == fp
}

// ID names the key in logs and errors as domain/selector.
func (k *Key) ID() string { return k.Domain + "/" + k.Selector }

// PublicKeyData returns the p= value for the key's DNS record: the
// SubjectPublicKeyInfo for RSA (what opendkim-genkey publishes, accepted by
// every verifier), the raw 32 bytes for Ed25519 (RFC 8463 §4.2).
func (k *Key) PublicKeyData() string {
	return PublicKeyData(k.Public())
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

// LoadKey reads and checks one private key file. The file must be a
// regular file (a symbolic link to one is followed), owned by the user we
// run as or by root (see CheckOwner), and not readable by group or others;
// RSA keys must have at least MinRSABits.
func LoadKey(path, domain, selector string) (*Key, error) {
	data, fi, err := readKeyFile(path)
	if err != nil {
		return nil, fmt.Errorf("keys: %s/%s: %w", domain, selector, err)
	}
	signer, err := ParsePrivateKey(data)
	if err != nil {
		return nil, fmt.Errorf("keys: %s/%s: %s: %w", domain, selector, path, err)
	}
	k := &Key{Domain: domain, Selector: selector, Path: path, ModTime: fi.ModTime(), Created: fi.ModTime(),
		file: fileIDOf(fi), m: &material{sum: sha256.Sum256(data), signer: signer}}
	switch s := signer.(type) {
	case *rsa.PrivateKey:
		k.Algorithm, k.Bits = RSASHA256, s.N.BitLen()
	case ed25519.PrivateKey:
		k.Algorithm, k.Bits = Ed25519SHA256, 256
	}
	return k, nil
}

// loadTableKey reads one key of the key table: checked as LoadKey checks
// it, but kept in compact form and parsed on first use (see material).
//
// regular says the folder listing gave the file as a regular file: it is
// then read with the fewest system calls (readRegularFile); anything else
// (a symbolic link, say) is looked at before it is opened.
func loadTableKey(path, domain, selector string, regular bool, cache *SignerCache) (*Key, error) {
	read := readKeyFile
	if regular {
		read = readRegularKeyFile
	}
	data, fi, err := read(path)
	if err != nil {
		return nil, fmt.Errorf("keys: %s/%s: %w", domain, selector, err)
	}
	m, alg, bits, err := parseMaterial(data)
	if err != nil {
		return nil, fmt.Errorf("keys: %s/%s: %s: %w", domain, selector, path, err)
	}
	m.cache = cache
	return &Key{Domain: domain, Selector: selector, Path: path, ModTime: fi.ModTime(), Created: fi.ModTime(),
		Algorithm: alg, Bits: bits, file: fileIDOf(fi), m: m}, nil
}

// maxKeyFileSize bounds what is read from a key file: an RSA-4096 PEM key
// is about 3.3 KB.
const maxKeyFileSize = 64 << 10

// ErrNotRegular is returned for key files that are not regular files
// (FIFOs, sockets, devices, folders): reading one could block a reload
// for ever or read without end.
var ErrNotRegular = errors.New("not a regular file")

// ErrBadOwner is returned for key files owned by a user who is neither the
// one we run as nor root: that user could replace our signing key.
var ErrBadOwner = errors.New("key file must be owned by the daemon's user or root")

// readKeyFile reads a key file safely (see readRegular: a FIFO is never
// opened, the type is checked again on the open descriptor, at most
// maxKeyFileSize bytes are read) and checks its owner and mode; the content
// is used only if both are right.
func readKeyFile(path string) ([]byte, os.FileInfo, error) {
	data, fi, err := readRegular(path, maxKeyFileSize)
	if err != nil {
		return nil, nil, err
	}
	return checkKeyFile(path, data, fi)
}

// readRegularKeyFile is readKeyFile for a file the folder listing says is
// regular (see readRegularFile).
func readRegularKeyFile(path string) ([]byte, os.FileInfo, error) {
	data, fi, err := readRegularFile(path, maxKeyFileSize)
	if err != nil {
		return nil, nil, err
	}
	return checkKeyFile(path, data, fi)
}

// checkKeyFile checks the owner and mode of a key file read as data.
func checkKeyFile(path string, data []byte, fi os.FileInfo) ([]byte, os.FileInfo, error) {
	if err := CheckOwner(path, fi); err != nil {
		return nil, nil, err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, nil, fmt.Errorf("%s has mode %04o: %w (run chmod 600 %s)",
			path, fi.Mode().Perm(), ErrInsecurePermissions, path)
	}
	return data, fi, nil
}

// processEUID is the user we run as: it never changes, and asking for it
// for each of 100,000 keys is 100,000 system calls.
var processEUID = os.Geteuid()

// CheckOwner checks that a key file (path, described by fi) is owned by the
// user we run as or by root. When we run as root (an administrator's sudo
// authmilter check, or a daemon run as root), a file owned by the owner of
// keys.dir (the folder above the key's domain folder) is accepted too: that
// user controls the whole key table anyway.
func CheckOwner(path string, fi os.FileInfo) error {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	uid, euid := int(st.Uid), processEUID
	if uid == euid || uid == 0 {
		return nil
	}
	if euid == 0 {
		if dfi, err := os.Stat(filepath.Dir(filepath.Dir(path))); err == nil {
			if dst, ok := dfi.Sys().(*syscall.Stat_t); ok && int(dst.Uid) == uid {
				return nil
			}
		}
	}
	return fmt.Errorf("%s is owned by uid %d, we run as uid %d: %w (run chown %d %s)", path, uid, euid, ErrBadOwner, euid, path)
}

// fileType names the type of a file mode for error messages.
func fileType(m os.FileMode) string {
	switch {
	case m&os.ModeNamedPipe != 0:
		return "a FIFO"
	case m&os.ModeSocket != 0:
		return "a socket"
	case m&os.ModeDevice != 0:
		return "a device"
	case m.IsDir():
		return "a folder"
	}
	return "mode " + m.String()
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
