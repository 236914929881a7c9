package policy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/authmilter/authmilter/policy/dkimsign"
)

// dkimVerifier verifies the DKIM signatures of one message (RFC 6376 §6.1)
// without holding its body: the header checks run when the header is
// complete, the key lookups start then and overlap the body transfer, the
// caller hashes the body once per canonicalization that bodyCanons lists
// (at most two, whatever the number of signatures), and finish checks the
// signatures with those hashes.
type dkimVerifier struct {
	sigs []*dkimSig
	// skipped counts the signatures beyond max, not verified.
	skipped, max int
	header       []HeaderField
	keys         *dkimKeyCache
	// canons marks the body canonicalizations the signatures need.
	canons [2]bool
	// fetches holds one key lookup per distinct key name.
	fetches map[string]*keyFetch
}

// keyFetch is one key record lookup, running while the body arrives.
type keyFetch struct {
	done chan struct{}
	txts []string
	err  error
}

// newDKIMVerifier reads the signatures of a header (up to max, 0 for no
// limit) and settles those that the header alone decides. It returns nil
// when the message has no signature. keys may be nil (no cache).
func newDKIMVerifier(header []HeaderField, max int, now time.Time, keys *dkimKeyCache) *dkimVerifier {
	v := &dkimVerifier{max: max, header: header, keys: keys}
	for _, f := range header {
		if !isDKIMSignature(f.Name) {
			continue
		}
		if max > 0 && len(v.sigs) >= max {
			v.skipped++
			continue
		}
		s := newDKIMSig(f.Value)
		s.field = verifierField(f)
		v.sigs = append(v.sigs, s)
	}
	if len(v.sigs) == 0 {
		return nil
	}
	for _, s := range v.sigs {
		s.precheck(now)
		if !s.decided {
			s.checkHeader(now)
		}
		if s.decided {
			continue
		}
		// The body is hashed for every canonicalization a signature with a
		// chance names; a bad c= is reported in checkWithKey's order.
		if _, bc, _, ok := sigCanon(s.tags["c"]); ok {
			v.canons[bc] = true
		}
	}
	return v
}

// bodyCanons lists the body canonicalizations finish will ask for.
func (v *dkimVerifier) bodyCanons() []dkimsign.Canon {
	var out []dkimsign.Canon
	for c, need := range v.canons {
		if need {
			out = append(out, dkimsign.Canon(c))
		}
	}
	return out
}

// lookUpKeys starts the key lookups of the signatures not decided yet, one
// per distinct name, so that their DNS round trips overlap the body
// transfer. They end with ctx.
func (v *dkimVerifier) lookUpKeys(ctx context.Context, r Resolver) {
	for _, s := range v.sigs {
		if s.decided {
			continue
		}
		key := strings.ToLower(s.keyName)
		if v.fetches == nil {
			v.fetches = map[string]*keyFetch{}
		}
		if v.fetches[key] != nil {
			continue
		}
		f := &keyFetch{done: make(chan struct{})}
		v.fetches[key] = f
		go f.run(ctx, r, s.keyName)
	}
}

// run looks the record up. The resolver is library code outside the milter
// session's panic guard: a panic is a temporary failure of this lookup,
// not the end of the daemon.
func (f *keyFetch) run(ctx context.Context, r Resolver, name string) {
	defer close(f.done)
	defer func() {
		if p := recover(); p != nil {
			f.txts, f.err = nil, lookupPanic{p}
		}
	}()
	f.txts, f.err = r.LookupTXT(ctx, name)
}

// finish checks every signature not decided yet with its key and the body
// hashes (bodyHash returns the hash for a canonicalization of bodyCanons;
// it is called at most once per canonicalization)
// and returns the results: one per signature, in header order, and one
// more, with Result "policy" and no domain, saying how many were beyond the
// limit (they are not reported one by one, so that a message cannot make
// our Authentication-Results field grow without bound).
func (v *dkimVerifier) finish(bodyHash func(dkimsign.Canon) []byte) []DKIMResult {
	// Each hash is asked for once: a hasher ends when it is summed.
	var sums [2][]byte
	sum := func(c dkimsign.Canon) []byte {
		if sums[c] == nil {
			sums[c] = bodyHash(c)
		}
		return sums[c]
	}
	var view []dkimsign.Field
	for _, s := range v.sigs {
		if s.decided {
			continue
		}
		if view == nil {
			view = make([]dkimsign.Field, len(v.header))
			for i, f := range v.header {
				view[i] = verifierField(f)
			}
		}
		f := v.fetches[strings.ToLower(s.keyName)]
		<-f.done
		s.checkWithKey(f.txts, f.err, v.keys, sum, view)
	}
	return v.results()
}

// unreadable ends the verification of a message whose body could not be
// read: the signatures not decided yet get a temporary error.
func (v *dkimVerifier) unreadable(err error) []DKIMResult {
	for _, s := range v.sigs {
		if !s.decided {
			s.Result, s.Reason, s.decided = DKIMTempError, "message unreadable: "+err.Error(), true
		}
	}
	return v.results()
}

func (v *dkimVerifier) results() []DKIMResult {
	out := make([]DKIMResult, 0, len(v.sigs)+1)
	for _, s := range v.sigs {
		out = append(out, s.DKIMResult)
	}
	if v.skipped > 0 {
		out = append(out, DKIMResult{
			Result: DKIMPolicy,
			Reason: fmt.Sprintf("%d more signatures not verified, limit %d", v.skipped, v.max),
		})
	}
	return out
}

// keyLookupError maps a failed key lookup to a result: a temporary DNS
// failure (timeout, SERVFAIL) is temperror, anything else "no key"
// (RFC 6376 §6.1.2: NXDOMAIN or no TXT record: PERMFAIL, no key for
// signature). A resolver error that is not a *net.DNSError is unexpected
// and taken as temporary.
func keyLookupError(err error) (result, reason string) {
	var de *net.DNSError
	if p, ok := err.(lookupPanic); ok {
		return DKIMTempError, p.Error()
	}
	if !errors.As(err, &de) {
		return DKIMTempError, "key unavailable: " + err.Error()
	}
	if de.IsTimeout || de.IsTemporary {
		return DKIMTempError, "key unavailable: " + de.Err
	}
	return DKIMPermError, "no key for signature"
}

// lookupPanic is a key lookup that panicked.
type lookupPanic struct{ v any }

func (p lookupPanic) Error() string { return fmt.Sprintf("internal error: %v", p.v) }
