package policy

import (
	"context"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/authmilter/authmilter/policy/dkimsign"
)

// DKIM results, as RFC 8601 §2.7.1 names them.
const (
	// DKIMPass: the signature verified.
	DKIMPass = "pass"
	// DKIMFail: the signature was acceptable and was checked, and the check
	// failed: the body hash or the signature does not match, or the key
	// has been revoked (RFC 6376 §6.1.2 says to treat a revoked key as a
	// failed signature check).
	DKIMFail = "fail"
	// DKIMPolicy: the signature is well formed but not acceptable to us
	// (RFC 8601: "some aspect of the signature ... was not acceptable to the
	// ADMD"): l= (RFC 6376 §8.2), rsa-sha1 or an RSA key under 1024 bits
	// (RFC 8301), an expired x= or a t= in the future (RFC 6376 §3.5 lets
	// verifiers ignore those), or a signature beyond inbound.max_signatures.
	DKIMPolicy = "policy"
	// DKIMTempError: the key could not be fetched now (DNS timeout,
	// SERVFAIL); a later attempt may succeed.
	DKIMTempError = "temperror"
	// DKIMPermError: the signature cannot be evaluated and never will be:
	// malformed or missing tags, x= not after t=, no key record, a malformed
	// key record, or a key whose h=, k=, s= or t=s does not allow the
	// signature.
	DKIMPermError = "permerror"
)

// ClockSkew is how far in the future a signature's t= may be before the
// signature is refused with DKIMPolicy. RFC 6376 §3.5 lets verifiers ignore
// signatures with a timestamp in the future; the allowance is for signers
// whose clocks run a little fast. It is the 300 seconds libopendkim uses.
// x= gets no allowance: the signer chose it, and it is compared with the
// current time as it is.
const ClockSkew = 5 * time.Minute

// DKIMResult is the outcome of one DKIM-Signature, in RFC 8601 terms.
type DKIMResult struct {
	// Result is pass, fail, policy, temperror or permerror (see the DKIM*
	// constants).
	Result string
	// Domain, Selector and Algorithm are the signature's d=, s= and a=.
	Domain, Selector, Algorithm string
	// B is the signature's b= (the A-R carries its first 8 characters).
	B string
	// Reason explains a result other than pass, or a pass with a key in
	// testing mode. It is ASCII without parentheses, fit for an
	// Authentication-Results comment.
	Reason string
	// Testing is set when the key record has the t=y flag (RFC 6376
	// §3.6.1). The result is reported as it is, with "testing mode" in the
	// reason, and DMARC takes it as it is: a failing testing signature is
	// not a pass, which is all that "MUST NOT treat messages from Signers in
	// testing mode differently from unsigned email" can ask of DMARC, and
	// a passing one still shows that the domain signed the message.
	Testing bool
}

// VerifyDKIM verifies up to max DKIM signatures of a message whose header
// is given field by field and whose body is read from body, as it arrives:
// the body is never held whole. Lookups go through r with ctx's deadline.
//
// It returns one result per signature among the first max, in header
// order. When the message has more signatures, one more result, with
// Result "policy" and no domain, says how many were not verified: they are
// not reported one by one, so that a message cannot make our
// Authentication-Results field grow without bound. Results follow the
// mapping documented on the DKIM* constants.
func VerifyDKIM(ctx context.Context, r Resolver, header []HeaderField, body io.Reader, max int) []DKIMResult {
	return verifyDKIM(ctx, r, header, body, max, time.Now())
}

// dkimSig is one signature being verified.
type dkimSig struct {
	DKIMResult
	tags     map[string]string // best-effort parse, for reporting and our checks
	tagFault string            // why the tag-list is malformed ("": it is not)
	// decided is set once the result is settled; a signature decided
	// before its key is needed costs no DNS query.
	decided bool
	// field is the signature's own header field, as the header hash takes
	// it (see verifierField).
	field dkimsign.Field
	// headerKeys is h=, keyName the key record's DNS name (s=._domainkey.d=)
	// and keyTxt, once fetched, the single TXT record found there, and key
	// its parsed key when usable.
	headerKeys []string
	keyName    string
	keyTxt     string
	key        *dkimKey
}

// verifyDKIM is VerifyDKIM with the current time as a parameter, for tests.
func verifyDKIM(ctx context.Context, r Resolver, header []HeaderField, body io.Reader, max int, now time.Time) []DKIMResult {
	v := newDKIMVerifier(header, max, now, nil)
	if v == nil {
		return nil
	}
	v.lookUpKeys(ctx, r)
	var hashers [2]*dkimsign.BodyHasher
	var writers []io.Writer
	for _, c := range v.bodyCanons() {
		hashers[c] = dkimsign.NewBodyHasher(c)
		writers = append(writers, hashers[c])
	}
	if _, err := io.Copy(io.MultiWriter(writers...), body); err != nil {
		// Not a verdict on any signature: the message could not be read
		// (an aborted transfer, a canceled context).
		return v.unreadable(err)
	}
	return v.finish(func(c dkimsign.Canon) []byte {
		if hashers[c] == nil {
			return nil
		}
		return hashers[c].Sum()
	})
}

// isDKIMSignature reports whether a header field named name is a
// DKIM-Signature: the name is exactly that, in ASCII upper or lower case
// (RFC 5322 field names are case-insensitive ASCII). Near misses are not
// signatures, for the DKIM verifier or anything else: "DKIM-Signature "
// (the obsolete whitespace before the colon, RFC 5322 §4.5.8), other
// leading or trailing white space, a name with a colon or a line break in
// it, or one with a non-ASCII letter that Unicode folds to an ASCII one
// (U+212A KELVIN SIGN is "k" to strings.EqualFold).
func isDKIMSignature(name string) bool {
	// Every rune that EqualFold matches here is one byte long only if it
	// is ASCII, so equal lengths rule out non-ASCII look-alikes.
	return len(name) == len("DKIM-Signature") && strings.EqualFold(name, "DKIM-Signature")
}

func newDKIMSig(value string) *dkimSig {
	s := &dkimSig{}
	s.tags, s.tagFault = parseTagList(value)
	s.Domain = s.tags["d"]
	s.Selector = s.tags["s"]
	s.Algorithm = s.tags["a"]
	s.B = s.tags["b"]
	return s
}

// precheck settles the result of a well-formed signature that we refuse
// although it might verify, or that RFC 6376 forbids. Malformed signatures
// are left to checkHeader, so that a syntax error is reported as such even
// when the signature also has l=.
func (s *dkimSig) precheck(now time.Time) {
	if !s.wellFormed() {
		return
	}
	decide := func(result, reason string) {
		s.Result, s.Reason, s.decided = result, reason, true
	}
	t, hasT := parseDKIMTime(s.tags["t"])
	x, hasX := parseDKIMTime(s.tags["x"])
	switch {
	// RFC 6376 §3.5: "the value of the x= tag MUST be greater than the
	// value of the t= tag if both are present".
	case hasT && hasX && x <= t:
		decide(DKIMPermError, "x= is not after t=")
	// RFC 6376 §3.5 (x=): signatures MAY be considered invalid once the
	// verification time is past the expiration date.
	case hasX && now.Unix() > x:
		decide(DKIMPolicy, "signature expired")
	// RFC 6376 §3.5 (t=): implementations MAY ignore signatures that have a
	// timestamp in the future.
	case hasT && time.Unix(t, 0).After(now.Add(ClockSkew)):
		decide(DKIMPolicy, "signature timestamp t= in the future")
	// RFC 8301 §3.1: rsa-sha1 MUST NOT be used for verifying.
	case strings.EqualFold(strings.TrimSpace(s.Algorithm), "rsa-sha1"):
		decide(DKIMPolicy, "rsa-sha1 not accepted, RFC 8301")
	// RFC 6376 §8.2: l= lets anyone append content that the signature
	// does not cover; we do not accept such signatures at all.
	case s.hasTag("l"):
		decide(DKIMPolicy, "body length limit l= not accepted, RFC 6376 section 8.2")
	}
}

// wellFormed reports whether the tags needed by our own checks are sane:
// the tag-list parsed, v=1 and the required tags are there (RFC 6376
// §6.1.1). Anything else is left to checkHeader.
func (s *dkimSig) wellFormed() bool {
	if s.tagFault != "" || s.tags["v"] != "1" {
		return false
	}
	for _, tag := range []string{"a", "b", "bh", "d", "h", "s"} {
		if _, ok := s.tags[tag]; !ok {
			return false
		}
	}
	for _, tag := range []string{"t", "x"} {
		if v, ok := s.tags[tag]; ok {
			if _, ok := parseDKIMTime(v); !ok {
				return false
			}
		}
	}
	return true
}

func (s *dkimSig) hasTag(name string) bool {
	_, ok := s.tags[name]
	return ok
}

// checkKeyFlags applies the key record's t= flags (RFC 6376 §3.6.1) to a
// signature whose key was fetched and used.
func (s *dkimSig) checkKeyFlags(flags dkimKeyFlags) {
	if s.Result != DKIMPass && s.Result != DKIMFail {
		return
	}
	// RFC 6376 §3.6.1, t=s: the i= domain MUST be the d= domain, not a
	// subdomain of it (checkHeader only checks that it is one or the
	// other).
	if i, ok := s.tags["i"]; ok && flags.strict && s.Result == DKIMPass {
		_, idom, _ := strings.Cut(i, "@")
		if !strings.EqualFold(idom, s.Domain) {
			s.Result, s.Reason = DKIMPermError, "i= domain is not d= but the key has t=s"
		}
	}
	if flags.testing {
		s.Testing = true
		if s.Reason == "" {
			s.Reason = "testing mode"
		} else {
			s.Reason += ", testing mode"
		}
	}
}

// parseDKIMTime parses a t= or x= value: 1*12DIGIT seconds since the epoch
// (RFC 6376 §3.5), whitespace allowed.
func parseDKIMTime(v string) (int64, bool) {
	if v == "" || len(v) > 12 {
		return 0, false
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 || strings.ContainsAny(v, "+-") {
		return 0, false
	}
	return n, true
}

// parseTagList parses a DKIM tag-list (RFC 6376 §3.2), a signature's or a
// key record's, with whitespace removed from values. It always returns what
// it could read (the first value of a duplicate tag), for reporting; fault
// is empty for a well-formed list, or else names its first fault in the
// words of go-msgauth, our former verifier: "malformed header params" (a
// part without "="), "duplicate tag name".
func parseTagList(v string) (tags map[string]string, fault string) {
	tags = map[string]string{}
	for _, part := range strings.Split(v, ";") {
		name, value, found := strings.Cut(part, "=")
		if !found {
			if strings.TrimSpace(part) != "" && fault == "" {
				fault = "malformed header params"
			}
			continue
		}
		name = strings.TrimSpace(name)
		if _, dup := tags[name]; dup {
			if fault == "" {
				fault = "duplicate tag name"
			}
			continue
		}
		tags[name] = stripSpace(value)
	}
	return tags, fault
}

// stripSpace removes white space from a tag value as go-msgauth, our
// former verifier, did (and its differential test still checks), so that
// the two read the same d= and h=: strings.Map, which also turns each byte
// of invalid UTF-8 into U+FFFD.
func stripSpace(v string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsSpace(r) {
			return -1
		}
		return r
	}, v)
}
