package policy

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/authmilter/authmilter/keys"
	"github.com/authmilter/authmilter/policy/arc"
)

// DKIMKeyCacheSize bounds the parsed DKIM public keys a policy snapshot
// keeps. A key record is a few hundred bytes of text and a parsed key a
// few hundred more, so the cache stays around a few MiB at most, while
// covering far more distinct signers than a busy MX sees within a DNS TTL.
const DKIMKeyCacheSize = 4096

// dkimKey is a usable DKIM public key parsed from its TXT record (RFC 6376
// §3.6.1), with the record tags the verifier checks.
type dkimKey struct {
	pub crypto.PublicKey
	// keyType is k=: "rsa" or "ed25519".
	keyType string
	// hashes is h= (nil: any), services is s= (nil: any).
	hashes, services []string
	flags            dkimKeyFlags
}

// dkimKeyFlags are a key record's t= flags (RFC 6376 §3.6.1).
type dkimKeyFlags struct {
	// testing is t=y, strict is t=s.
	testing, strict bool
}

// parseKeyFlags reads the t= flags of a key record. ABNF literals are
// case-insensitive (RFC 5234 §2.3); unknown flags MUST be ignored (RFC 6376
// §3.6.1).
func parseKeyFlags(txt string) dkimKeyFlags {
	rec, _ := parseTagList(txt)
	return keyFlags(strings.Split(rec["t"], ":"))
}

// keyFlags reads the flags of a t= value.
func keyFlags(flags []string) dkimKeyFlags {
	var f dkimKeyFlags
	for _, flag := range flags {
		switch strings.ToLower(flag) {
		case "y":
			f.testing = true
		case "s":
			f.strict = true
		}
	}
	return f
}

// dkimKeyError is why a key record cannot be used, as an
// Authentication-Results comment, with the result it gives the signature.
type dkimKeyError struct {
	result, reason string
}

func (e *dkimKeyError) Error() string { return e.reason }

// keyPermError is a key record that is malformed or unusable.
func keyPermError(reason string) *dkimKeyError {
	return &dkimKeyError{result: DKIMPermError, reason: reason}
}

// dkimKeyCache holds parsed DKIM public keys keyed by the exact text of
// their TXT record, so that a key is base64-decoded and parsed once, not
// for every message it signs. The record is still looked up through the
// resolver for every message: the DNS answer's TTL decides which record is
// current, and a changed record is new text, hence a miss. Only usable
// keys are kept (never a revoked or malformed record). It is bounded: past
// max entries an arbitrary one is evicted (Go's map order is randomized,
// so an attacker cannot choose which). It belongs to one Policy snapshot,
// so a reload starts empty, and is safe for concurrent use.
type dkimKeyCache struct {
	max int

	mu   sync.Mutex
	keys map[string]*dkimKey
}

func newDKIMKeyCache(max int) *dkimKeyCache {
	return &dkimKeyCache{max: max, keys: map[string]*dkimKey{}}
}

// key returns the parsed key of a TXT record, from the cache when it was
// parsed before. A nil cache parses every time.
func (c *dkimKeyCache) key(txt string) (*dkimKey, error) {
	if c == nil {
		return parseDKIMKey(txt)
	}
	c.mu.Lock()
	k, ok := c.keys[txt]
	c.mu.Unlock()
	if ok {
		return k, nil
	}
	k, err := parseDKIMKey(txt)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.keys[txt]; !ok && len(c.keys) >= c.max {
		for old := range c.keys {
			delete(c.keys, old)
			break
		}
	}
	c.keys[txt] = k
	return k, nil
}

// len is the number of cached keys.
func (c *dkimKeyCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.keys)
}

// parseDKIMKey parses a key record with keys.ParseRecord. Errors carry
// the result they give a signature (RFC 6376 §6.1.2: a malformed record
// is PERMFAIL; an empty p= means the key was revoked, a failed check) and
// the reasons go-msgauth, our former verifier, gave, which the golden
// tests and operators' logs know.
func parseDKIMKey(txt string) (*dkimKey, error) {
	rec, err := keys.ParseRecord(txt)
	if err != nil {
		return nil, keyRecordError(txt, err)
	}
	if rec.PublicKey == "" {
		// RFC 6376 §6.1.2: an empty p= "MUST [be treated] as a failed
		// signature check".
		return nil, &dkimKeyError{result: DKIMFail, reason: "key revoked"}
	}
	if rec.KeyType == "" {
		rec.KeyType = "rsa" // k= defaults to rsa (RFC 6376 §3.6.1)
	}
	if rec.KeyType != "rsa" && rec.KeyType != "ed25519" {
		return nil, keyPermError("unsupported key algorithm")
	}
	pub, err := rec.ParsePublicKey()
	var b64 base64.CorruptInputError
	switch {
	case errors.As(err, &b64):
		return nil, keyPermError("key syntax error: " + b64.Error())
	case err != nil && rec.KeyType == "ed25519":
		raw, _ := base64.StdEncoding.DecodeString(rec.PublicKey)
		return nil, keyPermError(fmt.Sprintf("invalid Ed25519 public key size: %d bytes", len(raw)))
	case err != nil:
		if cause := errors.Unwrap(err); cause != nil {
			err = cause // x509's words, without keys' prefix
		}
		return nil, keyPermError("key syntax error: " + err.Error())
	}
	if rec.KeyType == "rsa" {
		k, ok := pub.(*rsa.PublicKey)
		if !ok {
			return nil, keyPermError("key syntax error: not an RSA public key")
		}
		// RFC 8301 §3.2: keys under 1024 bits MUST NOT be considered valid.
		if k.N.BitLen() < arc.MinRSABits {
			return nil, &dkimKeyError{result: DKIMPolicy, reason: "RSA key under 1024 bits, RFC 8301"}
		}
	} else if _, ok := pub.(ed25519.PublicKey); !ok {
		return nil, keyPermError("unsupported key algorithm")
	}
	k := &dkimKey{pub: pub, keyType: rec.KeyType, hashes: rec.Hashes, flags: keyFlags(rec.Flags)}
	if !slices.Contains(rec.Services, "*") {
		k.services = rec.Services
	}
	return k, nil
}

// keyRecordError is the reason for a record keys.ParseRecord refused
// with err, in go-msgauth's words where it had some.
func keyRecordError(txt string, err error) *dkimKeyError {
	tags, fault := parseTagList(txt)
	if fault != "" {
		return keyPermError("key record error: " + fault)
	}
	if v, ok := tags["v"]; ok && v != "DKIM1" {
		return keyPermError("incompatible public key version")
	}
	if _, ok := tags["p"]; !ok {
		return keyPermError("key syntax error: missing public key data")
	}
	return keyPermError("key record error: " + err.Error())
}
