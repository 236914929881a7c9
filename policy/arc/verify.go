package arc

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"encoding"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"regexp"
	"slices"
	"strings"

	"github.com/authmilter/authmilter/keys"
	"github.com/authmilter/authmilter/policy/dkimsign"
)

// Resolver looks up TXT records (policy's resolver satisfies it).
type Resolver interface {
	LookupTXT(ctx context.Context, name string) ([]string, error)
}

// Status is an ARC chain validation result (RFC 8617 §4.4).
type Status string

// The three results.
const (
	None Status = "none"
	Pass Status = "pass"
	Fail Status = "fail"
)

// Result is the validation of a chain.
type Result struct {
	Status Status
	// Instance is the highest instance (0 for none).
	Instance int
	// Reason says, for fail, which instance and what failed.
	Reason string
	// Sealers are the d= of each ARC-Seal, i=1 first (set when the chain
	// parsed).
	Sealers []string
	// RemoteIP is smtp.remote-ip (or smtp.client-ip) from the highest
	// instance's ARC-Authentication-Results: the client that sealer saw.
	RemoteIP string
}

// BodyCanon returns the body canonicalization of the highest instance's
// ARC-Message-Signature, the one Verify checks the body hash of; relaxed
// when the chain is malformed (the hash is then not used).
func (c *Chain) BodyCanon() dkimsign.Canon {
	if c == nil || c.Err != nil || len(c.Sets) == 0 {
		return dkimsign.Relaxed
	}
	tags, err := ParseTags(c.Sets[len(c.Sets)-1].Message)
	if err != nil {
		return dkimsign.Relaxed
	}
	_, body, _ := parseCanon(tags["c"])
	return body
}

// parseCanon reads c= (RFC 6376 §3.5: simple/simple when absent, body
// simple when only the header algorithm is given).
func parseCanon(v string) (header, body dkimsign.Canon, err error) {
	if v == "" {
		return dkimsign.Simple, dkimsign.Simple, nil
	}
	hs, bs, ok := strings.Cut(v, "/")
	if !ok {
		bs = "simple"
	}
	header, okh := dkimsign.ParseCanon(hs)
	body, okb := dkimsign.ParseCanon(bs)
	if !okh || !okb {
		return 0, 0, fmt.Errorf("unknown canonicalization c=%.20q", v)
	}
	return header, body, nil
}

// Verify validates a chain (RFC 8617 §5.2) against the message header and
// bodyHash, the body hashed with c.BodyCanon(). A nil chain is none.
// Every failure names the instance and what failed; DNS failures are fail
// too, as ARC has no temperror.
func Verify(ctx context.Context, r Resolver, header []dkimsign.Field, c *Chain, bodyHash []byte) Result {
	if c == nil {
		return Result{Status: None}
	}
	if c.Err != nil {
		return Result{Status: Fail, Reason: c.Err.Error()}
	}
	n := len(c.Sets)
	res := Result{Status: Fail, Instance: n}
	seals := make([]map[string]string, n)
	for k, s := range c.Sets {
		tags, err := ParseTags(s.Seal)
		if err != nil {
			res.Reason = fmt.Sprintf("i=%d ARC-Seal: %v", s.Instance, err)
			return res
		}
		seals[k] = tags
		res.Sealers = append(res.Sealers, strings.ToLower(tags["d"]))
	}
	res.RemoteIP = remoteIP(c.Sets[n-1].Results)
	// RFC 8617 §5.2 step 2: a chain its last sealer marked failed stays
	// failed.
	if cv := seals[n-1]["cv"]; cv == string(Fail) {
		res.Reason = fmt.Sprintf("i=%d ARC-Seal has cv=fail", n)
		return res
	}
	// Step 3: cv=none only at i=1, pass everywhere else.
	for k, tags := range seals {
		want := string(Pass)
		if k == 0 {
			want = string(None)
		}
		if tags["cv"] != want {
			res.Reason = fmt.Sprintf("i=%d ARC-Seal has cv=%.10q, want %s", k+1, tags["cv"], want)
			return res
		}
		if _, ok := tags["h"]; ok {
			res.Reason = fmt.Sprintf("i=%d ARC-Seal has an h= tag (RFC 8617 §4.1.3)", k+1)
			return res
		}
	}
	// Step 4: the newest AMS must verify.
	if err := verifyMessageSignature(ctx, r, header, c.Sets[n-1], bodyHash); err != nil {
		res.Reason = fmt.Sprintf("i=%d ARC-Message-Signature: %v", n, err)
		return res
	}
	// Step 6: every seal, newest first. Their digests share a growing
	// prefix (the sets before them), hashed once: the work stays linear
	// in the header size, whatever the number of sets.
	digests, err := sealDigests(c.Sets)
	if err != nil {
		res.Reason = err.Error()
		return res
	}
	for k := n - 1; k >= 0; k-- {
		if err := verifySeal(ctx, r, seals[k], digests[k]); err != nil {
			res.Reason = fmt.Sprintf("i=%d ARC-Seal: %v", k+1, err)
			return res
		}
	}
	res.Status = Pass
	return res
}

// verifyMessageSignature checks an ARC-Message-Signature as DKIM checks a
// signature (RFC 8617 §4.1.2, §5.2 step 4): h=, c=, bh= and b=.
func verifyMessageSignature(ctx context.Context, r Resolver, header []dkimsign.Field, s Set, bodyHash []byte) error {
	tags, err := ParseTags(s.Message)
	if err != nil {
		return err
	}
	for _, t := range []string{"a", "b", "bh", "d", "s", "h"} {
		if tags[t] == "" {
			return fmt.Errorf("missing %s= tag", t)
		}
	}
	if _, ok := tags["l"]; ok {
		return errors.New("l= (body length) is not accepted")
	}
	hc, _, err := parseCanon(tags["c"])
	if err != nil {
		return err
	}
	names := strings.Split(unfoldTrim(tags["h"]), ":")
	hasFrom := false
	for _, h := range names {
		if strings.EqualFold(h, SealField) {
			// RFC 8617 §4.1.2: ARC-Seal must not be signed by the AMS.
			return errors.New("h= names ARC-Seal")
		}
		hasFrom = hasFrom || strings.EqualFold(h, "From")
	}
	if !hasFrom {
		return errors.New("h= does not name From")
	}
	bh, err := base64.StdEncoding.DecodeString(unfoldTrim(tags["bh"]))
	if err != nil || len(bh) != sha256.Size || !slices.Equal(bh, bodyHash) {
		return errors.New("body hash (bh=) does not match the body")
	}
	return checkSignature(ctx, r, tags, SignedHeaderHash(hc, header, names, MessageField, s.Message))
}

// SignedHeaderHash is dkimsign.HeaderHash of a signature as received:
// its b= value is removed first (RFC 6376 §3.7). policy's DKIM verifier
// uses it too.
func SignedHeaderHash(hc dkimsign.Canon, header []dkimsign.Field, names []string, sigName, sigValue string) []byte {
	return dkimsign.HeaderHash(hc, header, names, sigName, stripSignature(sigValue))
}

// verifySeal checks an ARC-Seal whose signing input hashed to digest.
func verifySeal(ctx context.Context, r Resolver, tags map[string]string, digest []byte) error {
	for _, t := range []string{"a", "b", "d", "s"} {
		if tags[t] == "" {
			return fmt.Errorf("missing %s= tag", t)
		}
	}
	return checkSignature(ctx, r, tags, digest)
}

// sealDigests returns, for each set, the SHA-256 of its seal's signing
// input: every set up to it, oldest first, each as
// ARC-Authentication-Results, ARC-Message-Signature, ARC-Seal, relaxed,
// with that seal's b= empty and no final CRLF (RFC 8617 §5.1.1).
func sealDigests(sets []Set) ([][]byte, error) {
	prefix := sha256.New()
	out := make([][]byte, len(sets))
	for k, s := range sets {
		state, err := prefix.(encoding.BinaryMarshaler).MarshalBinary()
		if err != nil {
			return nil, fmt.Errorf("arc: hash state: %w", err)
		}
		h := sha256.New()
		if err := h.(encoding.BinaryUnmarshaler).UnmarshalBinary(state); err != nil {
			return nil, fmt.Errorf("arc: hash state: %w", err)
		}
		writeSetHead(h, s)
		h.Write([]byte(dkimsign.CanonicalizeField(dkimsign.Relaxed, SealField, stripSignature(s.Seal), false)))
		out[k] = h.Sum(nil)
		writeSetHead(prefix, s)
		prefix.Write([]byte(dkimsign.CanonicalizeField(dkimsign.Relaxed, SealField, s.Seal, true)))
	}
	return out, nil
}

// writeSetHead hashes a set's ARC-Authentication-Results and
// ARC-Message-Signature as a seal's signing input has them.
func writeSetHead(h io.Writer, s Set) {
	io.WriteString(h, dkimsign.CanonicalizeField(dkimsign.Relaxed, ResultsField, s.Results, true))
	io.WriteString(h, dkimsign.CanonicalizeField(dkimsign.Relaxed, MessageField, s.Message, true))
}

// checkSignature fetches the key of d= and s= (selector._domainkey.d TXT,
// like DKIM) and verifies b= over digest.
func checkSignature(ctx context.Context, r Resolver, tags map[string]string, digest []byte) error {
	sig, err := base64.StdEncoding.DecodeString(unfoldTrim(tags["b"]))
	if err != nil {
		return errors.New("b= is not base64")
	}
	domain, selector := strings.ToLower(unfoldTrim(tags["d"])), strings.ToLower(unfoldTrim(tags["s"]))
	if !keys.ValidDomain(domain) || strings.ContainsAny(selector, " /\\") || selector == "" {
		return fmt.Errorf("bad d=%.40q or s=%.40q", domain, selector)
	}
	pub, err := lookupKey(ctx, r, domain, selector)
	if err != nil {
		return err
	}
	return VerifyDigest(pub, unfoldTrim(tags["a"]), keys.RecordName(domain, selector), digest, sig)
}

// MinRSABits is the smallest RSA key accepted for verifying (RFC 8301
// §3.2: keys below 1024 bits are not trusted).
const MinRSABits = 1024

// ErrBadSignature is wrapped by VerifyDigest's error when the key and
// algorithm fit but the signature does not verify.
var ErrBadSignature = errors.New("signature does not verify")

// VerifyDigest checks sig, made with algorithm a (rsa-sha256 or
// ed25519-sha256), over digest, the SHA-256 of the signing input, with
// pub, the key published at name (named in errors). RSA keys under
// MinRSABits are refused. policy's DKIM verifier uses it too.
func VerifyDigest(pub crypto.PublicKey, a, name string, digest, sig []byte) error {
	switch a {
	case "rsa-sha256":
		k, ok := pub.(*rsa.PublicKey)
		if !ok {
			return fmt.Errorf("a=rsa-sha256 but %s is not an RSA key", name)
		}
		if k.N.BitLen() < MinRSABits {
			return fmt.Errorf("%s is a %d-bit RSA key, below %d", name, k.N.BitLen(), MinRSABits)
		}
		if rsa.VerifyPKCS1v15(k, crypto.SHA256, digest, sig) != nil {
			return fmt.Errorf("%w with %s", ErrBadSignature, name)
		}
	case "ed25519-sha256":
		k, ok := pub.(ed25519.PublicKey)
		if !ok {
			return fmt.Errorf("a=ed25519-sha256 but %s is not an Ed25519 key", name)
		}
		if !ed25519.Verify(k, digest, sig) {
			return fmt.Errorf("%w with %s", ErrBadSignature, name)
		}
	default:
		return fmt.Errorf("unsupported algorithm a=%.20q", a)
	}
	return nil
}

// maxKeyRecords bounds the TXT records looked at under one key name.
const maxKeyRecords = 4

// lookupKey fetches and parses the key record at s._domainkey.d.
func lookupKey(ctx context.Context, r Resolver, domain, selector string) (crypto.PublicKey, error) {
	name := keys.RecordName(domain, selector)
	txts, err := r.LookupTXT(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("key lookup %s: %w", name, err)
	}
	if len(txts) == 0 {
		return nil, fmt.Errorf("no key record at %s", name)
	}
	if len(txts) > maxKeyRecords {
		txts = txts[:maxKeyRecords]
	}
	var lastErr error
	for _, txt := range txts {
		rec, err := keys.ParseRecord(txt)
		if err != nil {
			lastErr = err
			continue
		}
		if rec.PublicKey == "" {
			return nil, fmt.Errorf("key %s is revoked (empty p=)", name)
		}
		if len(rec.Hashes) > 0 && !slices.Contains(rec.Hashes, "sha256") {
			return nil, fmt.Errorf("key %s does not allow sha256 (h=)", name)
		}
		if len(rec.Services) > 0 && !slices.Contains(rec.Services, "*") && !slices.Contains(rec.Services, "email") {
			return nil, fmt.Errorf("key %s is not for email (s=)", name)
		}
		pub, err := rec.ParsePublicKey()
		if err != nil {
			return nil, fmt.Errorf("key %s: %w", name, err)
		}
		return pub, nil
	}
	return nil, fmt.Errorf("key record %s: %w", name, lastErr)
}

// remoteIPPattern finds smtp.remote-ip or smtp.client-ip in an AAR.
var remoteIPPattern = regexp.MustCompile(`(?i)\bsmtp\.(?:remote|client)-ip\s*=\s*"?([0-9A-Fa-f:.]{2,45})`)

// remoteIP returns the client address an ARC-Authentication-Results
// records, or "" when it names none that parses.
func remoteIP(aar string) string {
	m := remoteIPPattern.FindStringSubmatch(aar)
	if m == nil {
		return ""
	}
	ip, err := netip.ParseAddr(m[1])
	if err != nil {
		return ""
	}
	return ip.String()
}

// ResultsPass reports whether an ARC-Authentication-Results value records
// method=pass (for example dmarc=pass) in one of its resinfos. Comments
// are dropped first (RFC 8601 §2.2 allows them anywhere, and go-msgauth's
// parser does not skip them); the authserv-id after "i=N;" is skipped.
func ResultsPass(aar, method string) bool {
	parts := strings.Split(stripComments(aar), ";")
	if len(parts) < 3 {
		return false
	}
	for _, p := range parts[2:] {
		fields := strings.Fields(p)
		if len(fields) == 0 {
			continue
		}
		m, v, ok := strings.Cut(fields[0], "=")
		if ok && strings.EqualFold(m, method) && strings.EqualFold(v, "pass") {
			return true
		}
	}
	return false
}

// stripComments removes RFC 5322 comments (nested, with quoted pairs)
// from a header field value.
func stripComments(s string) string {
	var b strings.Builder
	depth := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\' && depth > 0:
			i++
		case c == '(':
			depth++
		case c == ')' && depth > 0:
			depth--
			b.WriteByte(' ')
		case depth == 0:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// BodyCanons lists the body canonicalizations of the chain's
// ARC-Message-Signatures (at most simple and relaxed), for OldestPass.
func (c *Chain) BodyCanons() []dkimsign.Canon {
	var seen [2]bool
	var out []dkimsign.Canon
	if c == nil || c.Err != nil {
		return nil
	}
	for _, s := range c.Sets {
		tags, err := ParseTags(s.Message)
		if err != nil {
			continue
		}
		if _, body, err := parseCanon(tags["c"]); err == nil && !seen[body] {
			seen[body] = true
			out = append(out, body)
		}
	}
	return out
}

// OldestPass is RFC 8617 §5.2 step 5 for a chain that passed: the older
// ARC-Message-Signatures are verified from N-1 down, and the result is
// the oldest instance whose AMS still verifies when every newer one does,
// or 0 when all of them verify (the message is as the first sealer saw
// it). bodyHash returns the body hashed with a canonicalization of
// BodyCanons.
func OldestPass(ctx context.Context, r Resolver, header []dkimsign.Field, c *Chain, bodyHash func(dkimsign.Canon) []byte) int {
	n := len(c.Sets)
	for k := n - 1; k >= 1; k-- {
		s := c.Sets[k-1]
		tags, err := ParseTags(s.Message)
		if err != nil {
			return k + 1
		}
		_, body, err := parseCanon(tags["c"])
		if err != nil {
			return k + 1
		}
		if verifyMessageSignature(ctx, r, header, s, bodyHash(body)) != nil {
			return k + 1
		}
	}
	return 0
}
