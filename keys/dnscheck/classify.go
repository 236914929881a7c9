package dnscheck

import (
	"crypto"
	"crypto/ed25519"
	"fmt"
	"strings"

	"github.com/authmilter/authmilter/keys"
)

// Classify says what the TXT values found at name (display form) mean for
// a key whose public half is want: Published when they hold exactly one
// DKIM record with that key; Missing without a DKIM record; Revoked for
// an empty p=; Foreign for a valid record of another key whose p= is not
// in known (known non-empty: the p= values, or whole TXT values, this
// installation knows as its own); Mismatch otherwise (another key of ours,
// another k=, an invalid record, several records).
func Classify(txts []string, name string, want crypto.PublicKey, known []string) (keys.State, string) {
	var dkim []string
	for _, t := range txts {
		if isDKIM(t) {
			dkim = append(dkim, t)
		}
	}
	switch len(dkim) {
	case 0:
		if len(txts) > 0 {
			return keys.Missing, fmt.Sprintf("no DKIM record at %s (%d other TXT records)", name, len(txts))
		}
		return keys.Missing, "no DKIM record at " + name
	case 1:
	default:
		return keys.Mismatch, fmt.Sprintf("%d DKIM records at %s; publish exactly one", len(dkim), name)
	}
	rec, err := keys.ParseRecord(dkim[0])
	if err != nil {
		return keys.Mismatch, fmt.Sprintf("record at %s is invalid: %v", name, err)
	}
	if rec.PublicKey == "" {
		return keys.Revoked, "record at " + name + " has an empty p= (revoked)"
	}
	pub, err := rec.ParsePublicKey()
	if err != nil {
		return keys.Mismatch, fmt.Sprintf("record at %s: %v", name, err)
	}
	if rec.KeyType == keyType(want) && equalKeys(want, pub) {
		return keys.Published, ""
	}
	if len(known) > 0 && !knownP(known, rec.PublicKey) {
		return keys.Foreign, fmt.Sprintf("record at %s holds a key this installation never published (k=%s; another provider or installation?): "+
			"it is not replaced without -force", name, rec.KeyType)
	}
	if rec.KeyType != keyType(want) {
		return keys.Mismatch, fmt.Sprintf("record at %s has k=%s, key is %s", name, rec.KeyType, keyType(want))
	}
	return keys.Mismatch, fmt.Sprintf("record at %s holds a different public key", name)
}

// isDKIM tells DKIM key records from other TXT records at a name, as
// keys.CheckPublished does.
func isDKIM(t string) bool {
	return strings.HasPrefix(strings.TrimSpace(t), "v=DKIM1") || strings.Contains(t, "p=")
}

// usableKey returns the p= of the one valid, non-revoked DKIM key among
// txts, if there is one: what a verifier would accept for a signature.
// Several DKIM records make the lookup fail for most verifiers, but some
// take the first valid one; any valid one counts.
func usableKey(txts []string) (string, bool) {
	for _, t := range txts {
		if !isDKIM(t) {
			continue
		}
		rec, err := keys.ParseRecord(t)
		if err != nil || rec.PublicKey == "" {
			continue
		}
		if _, err := rec.ParsePublicKey(); err == nil {
			return rec.PublicKey, true
		}
	}
	return "", false
}

// keyType is the k= of a public key.
func keyType(pub crypto.PublicKey) string {
	if _, ok := pub.(ed25519.PublicKey); ok {
		return "ed25519"
	}
	return "rsa"
}

func equalKeys(a, b crypto.PublicKey) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	eq, ok := a.(equaler)
	return ok && eq.Equal(b)
}

// knownP reports whether p (a p= value) is among known, whose entries are
// p= values or whole TXT records.
func knownP(known []string, p string) bool {
	for _, k := range known {
		if t := strings.TrimSpace(k); strings.HasPrefix(t, "v=") || strings.HasPrefix(t, "p=") || strings.Contains(t, ";") {
			if rec, err := keys.ParseRecord(k); err == nil {
				k = rec.PublicKey
			}
		}
		if strings.Join(strings.Fields(k), "") == p {
			return true
		}
	}
	return false
}
