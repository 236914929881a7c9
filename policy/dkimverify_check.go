package policy

import (
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/authmilter/authmilter/keys"
	"github.com/authmilter/authmilter/policy/arc"
	"github.com/authmilter/authmilter/policy/dkimsign"
)

// The checks of one signature follow RFC 6376 §6.1, in the order
// go-msgauth, our former verifier, made them, and with its words for the
// reasons: when a signature has several faults, the one reported stays the
// same (the golden tests in testdata/dkim and operators' logs know them).
// The differential test (dkimverify_oracle_test.go) holds the two to the
// same results.

// checkHeader makes the checks the header alone decides (RFC 6376 §6.1.1)
// and, for a signature that passes them, names its key record.
func (s *dkimSig) checkHeader(now time.Time) {
	decide := func(result, reason string) {
		s.Result, s.Reason, s.decided = result, reason, true
	}
	if s.tagFault != "" {
		decide(DKIMPermError, "malformed signature tags: "+s.tagFault)
		return
	}
	if strings.TrimSpace(s.tags["v"]) != "1" {
		decide(DKIMPermError, "incompatible signature version")
		return
	}
	for _, tag := range []string{"v", "a", "b", "bh", "d", "h", "s"} {
		if !s.hasTag(tag) {
			decide(DKIMPermError, "signature missing required tag")
			return
		}
	}
	// RFC 6376 §3.5 (i=): the domain of i= is d= or a subdomain of it.
	if i, ok := s.tags["i"]; ok && !strings.HasSuffix(i, "@"+s.Domain) && !strings.HasSuffix(i, "."+s.Domain) {
		decide(DKIMPermError, "domain mismatch")
		return
	}
	s.headerKeys = strings.Split(s.tags["h"], ":")
	// RFC 6376 §5.4: From MUST be signed.
	if !slices.ContainsFunc(s.headerKeys, func(k string) bool { return strings.EqualFold(k, "from") }) {
		decide(DKIMPermError, "From field not signed")
		return
	}
	if t, ok := s.tags["t"]; ok {
		if _, err := strconv.ParseInt(t, 10, 64); err != nil {
			decide(DKIMPermError, "malformed time")
			return
		}
	}
	if x, ok := s.tags["x"]; ok {
		sec, err := strconv.ParseInt(x, 10, 64)
		if err != nil {
			decide(DKIMPermError, "malformed expiration time")
			return
		}
		if now.After(time.Unix(sec, 0)) {
			decide(DKIMPolicy, "signature expired")
			return
		}
	}
	// RFC 6376 §3.5 (q=): dns/txt is the only query method defined.
	if q, ok := s.tags["q"]; ok && !slices.Contains(strings.Split(q, ":"), "dns/txt") {
		decide(DKIMPermError, "unsupported public key query method")
		return
	}
	s.keyName = keys.RecordName(s.Domain, s.Selector)
}

// checkWithKey finishes a signature that checkHeader left open, with the
// TXT records found at its key name (or the lookup error), the body hashes
// and the header as verifierField gives it (RFC 6376 §6.1.2, §6.1.3).
func (s *dkimSig) checkWithKey(txts []string, lookupErr error, cache *dkimKeyCache,
	bodyHash func(dkimsign.Canon) []byte, header []dkimsign.Field) {
	s.decided = true
	s.Result, s.Reason = s.verifyWithKey(txts, lookupErr, cache, bodyHash, header)
	if s.keyTxt == "" || (s.Result != DKIMPass && s.Result != DKIMFail) {
		return
	}
	if s.key != nil {
		s.checkKeyFlags(s.key.flags)
	} else {
		s.checkKeyFlags(parseKeyFlags(s.keyTxt)) // a revoked key's flags
	}
}

func (s *dkimSig) verifyWithKey(txts []string, lookupErr error, cache *dkimKeyCache,
	bodyHash func(dkimsign.Canon) []byte, header []dkimsign.Field) (result, reason string) {
	switch {
	case lookupErr != nil:
		return keyLookupError(lookupErr)
	case len(txts) == 0:
		return DKIMPermError, "no valid key found"
	case len(txts) > 1:
		// RFC 6376 §6.1.2 lets verifiers refuse an ambiguous answer.
		return DKIMPermError, "multiple TXT records found for key"
	}
	s.keyTxt = txts[0]
	key, err := cache.key(s.keyTxt)
	var kerr *dkimKeyError
	if errors.As(err, &kerr) {
		return kerr.result, kerr.reason
	}
	s.key = key
	keyAlgo, hashAlgo, ok := strings.Cut(s.Algorithm, "-")
	if !ok {
		return DKIMPermError, "malformed algorithm name"
	}
	if key.hashes != nil && !slices.Contains(key.hashes, hashAlgo) {
		return DKIMPermError, "inappropriate hash algorithm"
	}
	switch hashAlgo {
	case "sha1":
		// RFC 8301 §3.1: rsa-sha1 MUST NOT be used for verifying.
		return DKIMPolicy, "rsa-sha1 not accepted, RFC 8301"
	case "sha256":
	default:
		return DKIMPermError, "unsupported hash algorithm"
	}
	if keyAlgo != key.keyType {
		return DKIMPermError, "inappropriate key algorithm"
	}
	if key.services != nil && !slices.Contains(key.services, "email") {
		return DKIMPermError, "inappropriate service"
	}
	hc, bc, okh, okb := sigCanon(s.tags["c"])
	if !okh {
		return DKIMPermError, "unsupported header canonicalization algorithm"
	}
	if !okb {
		return DKIMPermError, "unsupported body canonicalization algorithm"
	}
	if s.hasTag("l") {
		return DKIMPolicy, "body length limit l= not accepted, RFC 6376 section 8.2"
	}
	bh, err := base64.StdEncoding.DecodeString(s.tags["bh"])
	if err != nil {
		return DKIMPermError, "malformed body hash: " + err.Error()
	}
	sig, err := base64.StdEncoding.DecodeString(s.B)
	if err != nil {
		return DKIMPermError, "malformed signature: " + err.Error()
	}
	body := bodyHash(bc)
	if body == nil {
		return DKIMTempError, "internal error: body not hashed with " + bc.String()
	}
	if subtle.ConstantTimeCompare(body, bh) != 1 {
		return DKIMFail, "body hash did not verify"
	}
	digest := arc.SignedHeaderHash(hc, header, s.headerKeys, s.field.Name, s.field.Value)
	if err := arc.VerifyDigest(key.pub, s.Algorithm, s.keyName, digest, sig); err != nil {
		return DKIMFail, "signature did not verify"
	}
	return DKIMPass, ""
}

// sigCanon reads a signature's c= (RFC 6376 §3.5): simple/simple when
// absent, body simple when only the header algorithm is given (an empty
// header algorithm is taken as simple too). okHeader and okBody are false
// for an unknown or empty algorithm.
func sigCanon(c string) (header, body dkimsign.Canon, okHeader, okBody bool) {
	hs, bs, slash := strings.Cut(c, "/")
	if hs == "" {
		hs = "simple"
	}
	if !slash {
		bs = "simple"
	}
	header, okHeader = dkimsign.ParseCanon(hs)
	body, okBody = dkimsign.ParseCanon(bs)
	return header, body, okHeader, okBody
}

// invalidFieldName replaces, in the header the signatures are checked
// against, a field name that is not one (see verifierField).
const invalidFieldName = "X-Authmilter-Invalid-Field-Name"

// verifierField is a header field as the signature checks take it. Only
// fields that a well-behaved MTA never passes change, so that a line break
// or a strange name cannot make one field pass for another:
//
//   - a line break in a value that is not followed by a space or a tab
//     would start a new field: a space is put after it, so that the text
//     stays in its field, and a bare LF becomes CRLF;
//   - a name that is empty, has a colon or a line break, starts with white
//     space (it would continue the previous field) or is "DKIM-Signature"
//     once trimmed without being exactly that is replaced by
//     invalidFieldName.
//
// Signatures that cover such a field by its name then no longer find it,
// or hash other bytes, and fail. These are the rules the header given to
// go-msgauth, our former verifier, followed. One difference is deliberate:
// h= names are matched with field names as they are (dkimsign.HeaderHash,
// which signing and ARC use too), so a field with white space before its
// colon (obsolete syntax, RFC 5322 §4.5.8) is not taken for the named
// field, as authmilter takes it nowhere else (DMARC's From, the
// DKIM-Signature near misses); go-msgauth trimmed the name first.
func verifierField(f HeaderField) dkimsign.Field {
	name := f.Name
	if !isDKIMSignature(name) && (name == "" || strings.ContainsAny(name, ":\r\n") ||
		name[0] == ' ' || name[0] == '\t' ||
		strings.EqualFold(strings.TrimSpace(name), "DKIM-Signature")) {
		name = invalidFieldName
	}
	v := f.Value
	if !strings.Contains(v, "\n") {
		return dkimsign.Field{Name: name, Value: v}
	}
	var b strings.Builder
	for {
		i := strings.IndexByte(v, '\n')
		if i < 0 {
			break
		}
		if i == 0 || v[i-1] != '\r' {
			b.WriteString(v[:i])
			b.WriteString("\r\n")
		} else {
			b.WriteString(v[:i+1])
		}
		v = v[i+1:]
		if v == "" || (v[0] != ' ' && v[0] != '\t') {
			b.WriteByte(' ')
		}
	}
	b.WriteString(v)
	return dkimsign.Field{Name: name, Value: b.String()}
}
