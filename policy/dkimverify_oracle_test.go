package policy

// The DKIM verifier as it was before our own (go-msgauth v0.7.0 behind our
// prechecks and result mapping), kept whole as the oracle of the
// differential tests (dkimverify_diff_test.go). It is test code only: the
// daemon no longer imports go-msgauth's dkim package.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-msgauth/dkim"
)

func keyName(domain, selector string) string {
	return strings.ToLower(selector + "._domainkey." + domain)
}

// oracleVerifyDKIM is the verifier as it was before our own: go-msgauth
// v0.7.0 read the message through an io.Reader and verified every
// signature, with our prechecks and result mapping around it. It is the
// differential test's oracle.
func oracleVerifyDKIM(ctx context.Context, r Resolver, header []HeaderField, body io.Reader, max int, now time.Time) []DKIMResult {
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

	keyLog := &oracleKeyLookups{ctx: ctx, r: r, need: needKey}
	opts := &dkim.VerifyOptions{LookupTXT: keyLog.lookupTXT, MaxVerifications: max}
	verifs, err := dkim.VerifyWithOptions(io.MultiReader(strings.NewReader(oracleHeader(header)), body), opts)
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
			if len(verifs) != len(sigs) || !producedBy(s, verifs[i]) {
				s.Result, s.Reason = DKIMTempError, "internal error: verification not bound to this signature"
				continue
			}
			oracleClassify(s, verifs[i].Err, keyLog)
			oracleCheckKeyFlags(s, keyLog)
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

// oracleHeader is the header handed to go-msgauth, which parses it again
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
func oracleHeader(header []HeaderField) string {
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
func producedBy(s *dkimSig, v *dkim.Verification) bool {
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

// oracleClassify maps go-msgauth's verdict on the signature to an RFC 8601
// result.
func oracleClassify(s *dkimSig, err error, keyLog *oracleKeyLookups) {
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

// oracleCheckKeyFlags applies the key record's t= flags (RFC 6376 §3.6.1) to a
// signature whose key was fetched and used.
func oracleCheckKeyFlags(s *dkimSig, keyLog *oracleKeyLookups) {
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

// oracleKeyLookups wraps the resolver for go-msgauth: it remembers each key
// record and lookup error by name, so that the key's flags and the kind of
// DNS failure can be reported, and it answers "not looked up" for keys of
// signatures already decided, so that they cost no DNS traffic.
type oracleKeyLookups struct {
	ctx  context.Context
	r    Resolver
	need map[string]bool

	mu      sync.Mutex
	records map[string][]string
	errs    map[string]*net.DNSError
}

func (k *oracleKeyLookups) lookupTXT(name string) ([]string, error) {
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
func (k *oracleKeyLookups) record(domain, selector string) (string, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	txts := k.records[keyName(domain, selector)]
	if len(txts) != 1 {
		return "", false
	}
	return txts[0], true
}

func (k *oracleKeyLookups) err(domain, selector string) *net.DNSError {
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
