package arc

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/authmilter/authmilter/policy/dkimsign"
)

// ErrNotSealable is returned by Seal for a chain that must not get another
// set: one its last sealer already marked cv=fail, one that is malformed
// (its instances cannot be trusted to number ours), or one at instance 50.
var ErrNotSealable = errors.New("arc: the chain must not be sealed again")

// SealParams describe the set to add.
type SealParams struct {
	Domain, Selector string
	// Signer is an *rsa.PrivateKey or an ed25519.PrivateKey.
	Signer crypto.Signer
	// HeaderKeys is the ARC-Message-Signature's h= (From required; ARC-Seal
	// and Authentication-Results are refused).
	HeaderKeys []string
	// AuthResults is our Authentication-Results value (authserv-id and
	// resinfos); the ARC-Authentication-Results is "i=N; " and it.
	AuthResults string
	// Time is t=.
	Time time.Time
}

// Seal returns the new ARC set for a message with this header (without
// the new set), its chain c (nil: none), the chain's validation result cv
// and bodyHash, the body hashed relaxed. The fields come in the order they
// are inserted at the top of the header: ARC-Seal, ARC-Message-Signature,
// ARC-Authentication-Results (the order dkimpy writes; RFC 8617 does not
// fix one).
//
// RFC 8617 §5.1.2: a chain that failed gets cv=fail, and that seal covers
// only its own set; a chain already marked cv=fail is not sealed again.
func Seal(p SealParams, header []dkimsign.Field, c *Chain, cv Status, bodyHash []byte) ([]dkimsign.Field, error) {
	var prior []Set
	switch {
	case c == nil:
		cv = None
	case c.Err != nil, len(c.Sets) >= MaxInstance:
		return nil, ErrNotSealable
	default:
		last, err := ParseTags(c.Sets[len(c.Sets)-1].Seal)
		if err != nil || last["cv"] == string(Fail) {
			return nil, ErrNotSealable
		}
		prior = c.Sets
		if cv != Pass {
			cv = Fail
		}
	}
	instance := len(prior) + 1
	algo, hashOpt, err := algorithm(p.Signer)
	if err != nil {
		return nil, err
	}
	if p.Domain == "" || p.Selector == "" {
		return nil, errors.New("arc: sealing domain and selector are required")
	}
	hasFrom := false
	for _, k := range p.HeaderKeys {
		if strings.EqualFold(k, SealField) || strings.EqualFold(k, "Authentication-Results") {
			return nil, fmt.Errorf("arc: h= must not name %s", k)
		}
		hasFrom = hasFrom || strings.EqualFold(k, "From")
	}
	if !hasFrom {
		return nil, errors.New("arc: From must be signed")
	}
	t := strconv.FormatInt(p.Time.Unix(), 10)
	i := strconv.Itoa(instance)
	sign := func(digest []byte) (string, error) {
		sig, err := p.Signer.Sign(rand.Reader, digest, hashOpt)
		if err != nil {
			return "", fmt.Errorf("arc: sign: %w", err)
		}
		return dkimsign.FoldBase64(base64.StdEncoding.EncodeToString(sig), len("b=")), nil
	}

	aar := " i=" + i + "; " + p.AuthResults

	// ARC-Message-Signature (RFC 8617 §4.1.2): relaxed/relaxed like dkimpy.
	ams := foldTags(MessageField, []string{
		"i=" + i, "a=" + algo, "c=relaxed/relaxed", "d=" + p.Domain, "s=" + p.Selector, "t=" + t,
	}, p.HeaderKeys, "bh="+base64.StdEncoding.EncodeToString(bodyHash))
	b, err := sign(dkimsign.HeaderHash(dkimsign.Relaxed, header, p.HeaderKeys, MessageField, ams))
	if err != nil {
		return nil, err
	}
	ams += b

	// ARC-Seal (RFC 8617 §4.1.3, §5.1.1): the sets so far and ours; only
	// ours when the chain failed.
	seal := foldTags(SealField, []string{
		"i=" + i, "a=" + algo, "cv=" + string(cv), "d=" + p.Domain, "s=" + p.Selector, "t=" + t,
	}, nil, "")
	sets := append([]Set(nil), prior...)
	if cv == Fail {
		sets = nil
	}
	sets = append(sets, Set{Instance: instance, Results: aar, Message: ams, Seal: seal})
	digests, err := sealDigests(sets)
	if err != nil {
		return nil, err
	}
	if b, err = sign(digests[len(digests)-1]); err != nil {
		return nil, err
	}
	seal += b
	return []dkimsign.Field{{Name: SealField, Value: seal}, {Name: MessageField, Value: ams}, {Name: ResultsField, Value: aar}}, nil
}

// algorithm names a= for the key and the hash option its Sign needs.
func algorithm(s crypto.Signer) (string, crypto.SignerOpts, error) {
	if s == nil {
		return "", nil, errors.New("arc: no sealing key")
	}
	switch s.Public().(type) {
	case *rsa.PublicKey:
		return "rsa-sha256", crypto.SHA256, nil
	case ed25519.PublicKey:
		// RFC 8463 §3: Ed25519 signs the SHA-256 hash.
		return "ed25519-sha256", crypto.Hash(0), nil
	}
	return "", nil, fmt.Errorf("arc: unsupported key type %T", s.Public())
}

// lineWidth is where tag lists are folded.
const lineWidth = 76

// foldTags renders a field value up to and including "b=": the tags, h=
// folded between names when names is not empty, then last (if not empty),
// then b= on a line of its own.
func foldTags(field string, tags, names []string, last string) string {
	var b strings.Builder
	col := len(field) + 1
	put := func(s string, sep bool) {
		switch {
		case col+len(s)+1 > lineWidth && col > len(field)+1:
			b.WriteString("\r\n\t")
			col = 8
		case sep:
			b.WriteByte(' ')
			col++
		}
		b.WriteString(s)
		col += len(s)
	}
	for _, t := range tags {
		put(t+";", true)
	}
	for k, n := range names {
		s := n
		if k < len(names)-1 {
			s += ":"
		} else {
			s += ";"
		}
		if k == 0 {
			put("h="+s, true)
		} else {
			put(s, false)
		}
	}
	if last != "" {
		put(last+";", true)
	}
	b.WriteString("\r\n\tb=")
	return b.String()
}
