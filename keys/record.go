package keys

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
)

// Record is a parsed DKIM key record (RFC 6376 §3.6.1).
type Record struct {
	// KeyType is k= ("rsa" when absent).
	KeyType string
	// PublicKey is p= with whitespace removed; empty means revoked.
	PublicKey string
	// Flags are the t= flags ("y", "s").
	Flags []string
	// Hashes is h=, empty meaning any.
	Hashes []string
	// Services is s=, empty meaning "*".
	Services []string
}

// FormatRecord returns the TXT value that publishes k's public half. A
// testing key's record carries t=y (RFC 6376 §3.6.1): verifiers must not
// treat mail that fails to verify with it differently from unsigned mail.
func FormatRecord(k *Key) string {
	if k.Testing {
		return fmt.Sprintf("v=DKIM1; k=%s; t=y; p=%s", k.Algorithm.KeyType(), k.PublicKeyData())
	}
	return fmt.Sprintf("v=DKIM1; k=%s; p=%s", k.Algorithm.KeyType(), k.PublicKeyData())
}

// RecordName returns the DNS name of a key record.
func RecordName(domain, selector string) string {
	return selector + "._domainkey." + domain
}

// ParseRecord parses a DKIM key record's TXT value.
func ParseRecord(txt string) (*Record, error) {
	r := &Record{KeyType: "rsa"}
	seen := map[string]bool{}
	hasP := false
	for i, part := range strings.Split(txt, ";") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		name, value, ok := strings.Cut(part, "=")
		if !ok {
			return nil, fmt.Errorf("malformed tag %q", part)
		}
		name, value = strings.TrimSpace(name), strings.TrimSpace(value)
		if seen[name] {
			// RFC 6376 §3.2: duplicate tags make the record invalid.
			return nil, fmt.Errorf("duplicate tag %q", name)
		}
		seen[name] = true
		switch name {
		case "v":
			// RFC 6376 §3.6.1: if present, v= must be first and DKIM1.
			if i != 0 || value != "DKIM1" {
				return nil, fmt.Errorf("bad v=%q (must be first and DKIM1)", value)
			}
		case "k":
			r.KeyType = value
		case "p":
			hasP = true
			r.PublicKey = strings.Map(func(c rune) rune {
				if c == ' ' || c == '\t' || c == '\r' || c == '\n' {
					return -1
				}
				return c
			}, value)
		case "t":
			r.Flags = splitColon(value)
		case "h":
			r.Hashes = splitColon(value)
		case "s":
			r.Services = splitColon(value)
		}
	}
	if !hasP {
		return nil, errors.New("missing p= tag")
	}
	return r, nil
}

func splitColon(v string) []string {
	var out []string
	for _, f := range strings.Split(v, ":") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// ParsePublicKey decodes a record's p= for its k=.
func (r *Record) ParsePublicKey() (crypto.PublicKey, error) {
	raw, err := base64.StdEncoding.DecodeString(r.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("p= is not base64: %w", err)
	}
	switch r.KeyType {
	case "ed25519":
		if len(raw) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("ed25519 p= has %d bytes, want %d", len(raw), ed25519.PublicKeySize)
		}
		return ed25519.PublicKey(raw), nil
	case "rsa":
		if pub, err := x509.ParsePKIXPublicKey(raw); err == nil {
			return pub, nil
		}
		pub, err := x509.ParsePKCS1PublicKey(raw)
		if err != nil {
			return nil, fmt.Errorf("rsa p= is neither SubjectPublicKeyInfo nor RSAPublicKey: %w", err)
		}
		return pub, nil
	}
	return nil, fmt.Errorf("unknown key type k=%s", r.KeyType)
}

// State is what DNS says about a key.
type State string

// The publication states of a key.
const (
	// Published: the record exists and its p= and k= match the private key.
	Published State = "published"
	// Missing: no record at the name (NXDOMAIN or no TXT).
	Missing State = "missing"
	// Mismatch: a record exists but holds another key, another k=, or is invalid.
	Mismatch State = "mismatch"
	// Revoked: the record has an empty p=.
	Revoked State = "revoked"
	// TempError: the lookup failed temporarily; try again later.
	TempError State = "temperror"
	// Unchecked: publication was not checked (require_published = false).
	Unchecked State = "unchecked"
	// Partial: the public path or some authoritative nameservers serve the
	// record, others do not (a lagging secondary): not usable yet.
	Partial State = "partial"
	// DelegationMissing: the record is published where we publish it, but
	// the public path does not lead there (the customer's NS or CNAME
	// records are missing or point elsewhere).
	DelegationMissing State = "delegation-missing"
	// Foreign: the name holds a valid DKIM record of a key that this
	// installation never published (another provider or installation).
	Foreign State = "foreign"
	// Waiting: published everywhere, but not for long enough yet (the
	// zone's negative-caching TTL, the record's TTL, keys.activate_after).
	Waiting State = "waiting"
)

// TXTLookup resolves TXT records. Errors that mean "no such record" must
// unwrap to a *net.DNSError with IsNotFound set.
type TXTLookup func(ctx context.Context, name string) ([]string, error)

// Publication is the result of checking one key against DNS.
type Publication struct {
	State State
	// Detail explains a state other than Published.
	Detail string
}

// CheckPublished looks up k's record and compares it with the private key.
func CheckPublished(ctx context.Context, lookup TXTLookup, k *Key) Publication {
	name := RecordName(k.Domain, k.Selector)
	txts, err := lookup(ctx, name)
	if err != nil {
		var dnsErr *net.DNSError
		if errors.As(err, &dnsErr) && dnsErr.IsNotFound {
			return Publication{Missing, "no TXT record at " + name}
		}
		return Publication{TempError, fmt.Sprintf("lookup %s: %v", name, err)}
	}
	var dkim []string
	for _, t := range txts {
		if strings.HasPrefix(strings.TrimSpace(t), "v=DKIM1") || strings.Contains(t, "p=") {
			dkim = append(dkim, t)
		}
	}
	switch len(dkim) {
	case 0:
		return Publication{Missing, "no DKIM record at " + name}
	case 1:
	default:
		return Publication{Mismatch, fmt.Sprintf("%d DKIM records at %s; publish exactly one", len(dkim), name)}
	}
	rec, err := ParseRecord(dkim[0])
	if err != nil {
		return Publication{Mismatch, fmt.Sprintf("record at %s is invalid: %v", name, err)}
	}
	if rec.PublicKey == "" {
		return Publication{Revoked, "record at " + name + " has an empty p= (revoked)"}
	}
	if rec.KeyType != k.Algorithm.KeyType() {
		return Publication{Mismatch, fmt.Sprintf("record at %s has k=%s, key is %s", name, rec.KeyType, k.Algorithm.KeyType())}
	}
	pub, err := rec.ParsePublicKey()
	if err != nil {
		return Publication{Mismatch, fmt.Sprintf("record at %s: %v", name, err)}
	}
	type equaler interface{ Equal(crypto.PublicKey) bool }
	if eq, ok := k.Public().(equaler); !ok || !eq.Equal(pub) {
		return Publication{Mismatch, fmt.Sprintf("record at %s holds a different public key", name)}
	}
	// The key matches whatever its flags say: t=y only asks verifiers to
	// be lenient, and a record published by another tool (opendkim-genkey
	// -t) or before keygen -t y may carry it or not. Say so when the
	// record and the key's testing flag disagree.
	testing := false
	for _, f := range rec.Flags {
		testing = testing || f == "y"
	}
	switch {
	case testing && !k.Testing:
		return Publication{State: Published, Detail: "the record has t=y (testing) but the key is not a testing key"}
	case !testing && k.Testing:
		return Publication{State: Published, Detail: "the key is a testing key but its record lacks t=y"}
	}
	return Publication{State: Published}
}

// CheckAllPublished checks many keys at once, a bounded number of lookups
// at a time: an ESP's table has thousands of domains.
func CheckAllPublished(ctx context.Context, lookup TXTLookup, ks []*Key) map[*Key]Publication {
	const parallel = 32
	out := make(map[*Key]Publication, len(ks))
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, parallel)
	for _, k := range ks {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			pub := CheckPublished(ctx, lookup, k)
			mu.Lock()
			out[k] = pub
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out
}
