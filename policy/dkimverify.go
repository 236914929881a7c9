package policy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/emersion/go-msgauth/dkim"
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
// x= gets no allowance: the signer chose it, and go-msgauth compares it with
// the current time as it is.
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
	tags   map[string]string // best-effort parse, for reporting and our checks
	tagsOK bool              // the tag-list is well formed
	// decided is set when our own checks settled the result before
	// cryptographic verification; the key is then not looked up.
	decided bool
}

// verifyDKIM is VerifyDKIM with the current time as a parameter, for tests.
func verifyDKIM(ctx context.Context, r Resolver, header []HeaderField, body io.Reader, max int, now time.Time) []DKIMResult {
	var sigs []*dkimSig
	total := 0
	for _, f := range header {
		if !isDKIMSignature(f.Name) {
			continue
		}
		total++
		if max <= 0 || len(sigs) < max {
			sigs = append(sigs, newDKIMSig(f.Value))
		}
	}
	if len(sigs) == 0 {
		return nil
	}
	needKey := map[string]bool{}
	for _, s := range sigs {
		s.precheck(now)
		if !s.decided {
			needKey[keyName(s.Domain, s.Selector)] = true
		}
	}

	keyLog := &keyLookups{ctx: ctx, r: r, need: needKey}
	opts := &dkim.VerifyOptions{LookupTXT: keyLog.lookupTXT, MaxVerifications: max}
	verifs, err := dkim.VerifyWithOptions(io.MultiReader(strings.NewReader(verifierHeader(header)), body), opts)
	if err != nil && !errors.Is(err, dkim.ErrTooManySignatures) {
		// Not a verdict on any signature: the message could not be read
		// (an aborted transfer, a canceled context).
		for _, s := range sigs {
			if !s.decided {
				s.Result, s.Reason = DKIMTempError, "message unreadable: "+cleanDKIMError(err)
			}
		}
	} else {
		// verifierHeader makes go-msgauth find exactly our signatures, in
		// our order, so its i-th verification is our i-th signature's. That
		// is checked, not assumed: a verification that does not carry the
		// signature's own d= and h= (or a missing one) is never taken for
		// it.
		for i, s := range sigs {
			if s.decided {
				continue
			}
			if len(verifs) != len(sigs) || !s.producedBy(verifs[i]) {
				s.Result, s.Reason = DKIMTempError, "internal error: verification not bound to this signature"
				continue
			}
			s.classify(verifs[i].Err, keyLog)
			s.checkKeyFlags(keyLog)
		}
	}

	out := make([]DKIMResult, 0, len(sigs)+1)
	for _, s := range sigs {
		out = append(out, s.DKIMResult)
	}
	if skipped := total - len(sigs); skipped > 0 {
		out = append(out, DKIMResult{
			Result: DKIMPolicy,
			Reason: fmt.Sprintf("%d more signatures not verified, limit %d", skipped, max),
		})
	}
	return out
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

// invalidFieldName replaces, in the header given to go-msgauth, a field
// name it would read otherwise than we do (see verifierHeader).
const invalidFieldName = "X-Authmilter-Invalid-Field-Name"

// verifierHeader is the header handed to go-msgauth, which parses it again
// in its own way: it splits fields at line breaks not followed by white
// space, cuts the name at the first colon and trims white space around it.
// Its copy is made so that this parse gives back exactly our fields, one
// for one and in order, and so that the fields it takes for signatures are
// exactly those that isDKIMSignature accepts: its verifications then come
// in the order of our signature list. Only fields that a well-behaved MTA
// never passes are changed, in go-msgauth's copy only:
//
//   - a line break in a value that is not followed by a space or a tab
//     would start a new field (or, before an empty line, end the header):
//     a space is put after it, so that the text stays in its field;
//   - a name that go-msgauth would read differently (empty, with a colon or
//     a line break, starting with white space, which would continue the
//     previous field) or would trim into "DKIM-Signature" without being
//     exactly that is replaced by invalidFieldName.
//
// Signatures that cover such a field by its name then no longer find it,
// or hash other bytes, and fail.
func verifierHeader(header []HeaderField) string {
	var b strings.Builder
	for _, f := range header {
		name := f.Name
		if !isDKIMSignature(name) && (name == "" || strings.ContainsAny(name, ":\r\n") ||
			name[0] == ' ' || name[0] == '\t' ||
			strings.EqualFold(strings.TrimSpace(name), "DKIM-Signature")) {
			name = invalidFieldName
		}
		b.WriteString(name)
		b.WriteByte(':')
		v := f.Value
		for {
			i := strings.IndexByte(v, '\n')
			if i < 0 {
				break
			}
			b.WriteString(v[:i+1])
			v = v[i+1:]
			if v == "" || (v[0] != ' ' && v[0] != '\t') {
				b.WriteByte(' ')
			}
		}
		b.WriteString(v)
		b.WriteString("\r\n")
	}
	b.WriteString("\r\n")
	return b.String()
}

// producedBy reports whether go-msgauth's verification v can be the one of
// this signature: it names the same d= and h= as far as go-msgauth got in
// reading the signature (it leaves them empty when it stops earlier).
func (s *dkimSig) producedBy(v *dkim.Verification) bool {
	if v == nil {
		return false
	}
	if v.Domain != "" && v.Domain != s.tags["d"] {
		return false
	}
	if v.HeaderKeys != nil && strings.Join(v.HeaderKeys, ":") != s.tags["h"] {
		return false
	}
	return true
}

func newDKIMSig(value string) *dkimSig {
	s := &dkimSig{}
	s.tags, s.tagsOK = parseTagList(value)
	s.Domain = s.tags["d"]
	s.Selector = s.tags["s"]
	s.Algorithm = s.tags["a"]
	s.B = s.tags["b"]
	return s
}

// precheck settles the result of a well-formed signature that go-msgauth
// would verify but that we refuse, or that it accepts although RFC 6376
// forbids it. Malformed signatures are left to go-msgauth, so that a
// syntax error is reported as such even when the signature also has l=.
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
// §6.1.1). Anything else is left to go-msgauth.
func (s *dkimSig) wellFormed() bool {
	if !s.tagsOK || s.tags["v"] != "1" {
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

// classify maps go-msgauth's verdict on the signature to an RFC 8601
// result.
func (s *dkimSig) classify(err error, keyLog *keyLookups) {
	if err == nil {
		s.Result, s.Reason = DKIMPass, ""
		return
	}
	msg := cleanDKIMError(err)
	switch {
	case dkim.IsTempFail(err):
		s.Result, s.Reason = DKIMTempError, "key unavailable"
		if de := keyLog.err(s.Domain, s.Selector); de != nil {
			s.Reason += ": " + de.Err
		}
	case strings.HasPrefix(msg, "no key for signature"):
		// RFC 6376 §6.1.2: NXDOMAIN or no TXT record: PERMFAIL (no key for
		// signature).
		s.Result, s.Reason = DKIMPermError, "no key for signature"
	case msg == "key revoked":
		// RFC 6376 §6.1.2: an empty p= "MUST [be treated] as a failed
		// signature check".
		s.Result, s.Reason = DKIMFail, "key revoked"
	case strings.HasPrefix(msg, "key is too short"):
		// RFC 8301 §3.2: RSA keys under 1024 bits MUST NOT be considered
		// valid.
		s.Result, s.Reason = DKIMPolicy, "RSA key under 1024 bits, RFC 8301"
	case strings.HasPrefix(msg, "hash algorithm too weak"):
		s.Result, s.Reason = DKIMPolicy, "rsa-sha1 not accepted, RFC 8301"
	case msg == "signature has expired":
		s.Result, s.Reason = DKIMPolicy, "signature expired"
	case strings.Contains(msg, "body length tag"):
		s.Result, s.Reason = DKIMPolicy, "body length limit l= not accepted, RFC 6376 section 8.2"
	case dkim.IsPermFail(err):
		s.Result, s.Reason = DKIMPermError, msg
	default:
		// go-msgauth's signature failures: body hash or signature mismatch
		// (the crypto library's own words add nothing).
		s.Result, s.Reason = DKIMFail, msg
		if strings.HasPrefix(msg, "signature did not verify") {
			s.Reason = "signature did not verify"
		}
	}
}

// checkKeyFlags applies the key record's t= flags (RFC 6376 §3.6.1) to a
// signature whose key was fetched and used.
func (s *dkimSig) checkKeyFlags(keyLog *keyLookups) {
	if s.Result != DKIMPass && s.Result != DKIMFail {
		return
	}
	txt, ok := keyLog.record(s.Domain, s.Selector)
	if !ok {
		return
	}
	rec, _ := parseTagList(txt)
	for _, f := range strings.Split(rec["t"], ":") {
		// ABNF literals are case-insensitive (RFC 5234 §2.3); unknown flags
		// MUST be ignored (RFC 6376 §3.6.1).
		switch strings.ToLower(f) {
		case "s":
			// RFC 6376 §3.6.1, t=s: the i= domain MUST be the d= domain, not
			// a subdomain of it. go-msgauth only checks that it is one or
			// the other.
			if i, ok := s.tags["i"]; ok && s.Result == DKIMPass {
				_, idom, _ := strings.Cut(i, "@")
				if !strings.EqualFold(idom, s.Domain) {
					s.Result, s.Reason = DKIMPermError, "i= domain is not d= but the key has t=s"
				}
			}
		case "y":
			s.Testing = true
		}
	}
	if s.Testing {
		if s.Reason == "" {
			s.Reason = "testing mode"
		} else {
			s.Reason += ", testing mode"
		}
	}
}

// keyLookups wraps the resolver for go-msgauth: it remembers each key
// record and lookup error by name, so that the key's flags and the kind of
// DNS failure can be reported, and it answers "not looked up" for keys of
// signatures already decided, so that they cost no DNS traffic.
type keyLookups struct {
	ctx  context.Context
	r    Resolver
	need map[string]bool

	mu      sync.Mutex
	records map[string][]string
	errs    map[string]*net.DNSError
}

func keyName(domain, selector string) string {
	return strings.ToLower(selector + "._domainkey." + domain)
}

func (k *keyLookups) lookupTXT(name string) ([]string, error) {
	key := strings.ToLower(name)
	if !k.need[key] {
		return nil, &net.DNSError{Err: "not looked up", Name: name, IsNotFound: true}
	}
	txts, err := k.r.LookupTXT(k.ctx, name)
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.records == nil {
		k.records, k.errs = map[string][]string{}, map[string]*net.DNSError{}
	}
	var de *net.DNSError
	switch {
	case err == nil:
		k.records[key] = txts
	case errors.As(err, &de):
		k.errs[key] = de
	default:
		// go-msgauth treats an error that is not a temporary net.Error as
		// "no key"; anything unexpected from a resolver is temporary.
		de = &net.DNSError{Err: err.Error(), Name: name, IsTemporary: true}
		k.errs[key] = de
		return nil, de
	}
	return txts, err
}

// record returns the single key record at the signature's name.
func (k *keyLookups) record(domain, selector string) (string, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	txts := k.records[keyName(domain, selector)]
	if len(txts) != 1 {
		return "", false
	}
	return txts[0], true
}

func (k *keyLookups) err(domain, selector string) *net.DNSError {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.errs[keyName(domain, selector)]
}

// cleanDKIMError returns go-msgauth's error text without its "dkim: "
// prefixes and without strconv's details.
func cleanDKIMError(err error) string {
	msg := strings.ReplaceAll(err.Error(), "dkim: ", "")
	msg, _, _ = strings.Cut(msg, ": strconv.")
	return msg
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
// it could read (the first value of a duplicate tag), for reporting; ok is
// false when the list is malformed (a part without "=", a duplicate tag),
// which go-msgauth then reports.
func parseTagList(v string) (tags map[string]string, ok bool) {
	tags = map[string]string{}
	ok = true
	for _, part := range strings.Split(v, ";") {
		name, value, found := strings.Cut(part, "=")
		if !found {
			if strings.TrimSpace(part) != "" {
				ok = false
			}
			continue
		}
		name = strings.TrimSpace(name)
		if _, dup := tags[name]; dup {
			ok = false
			continue
		}
		tags[name] = stripSpace(value)
	}
	return tags, ok
}

// stripSpace removes white space from a tag value as go-msgauth does, so
// that the two read the same d= and h=: strings.Map, which also turns each
// byte of invalid UTF-8 into U+FFFD.
func stripSpace(v string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsSpace(r) {
			return -1
		}
		return r
	}, v)
}
