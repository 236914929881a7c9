package dnscheck

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"

	"github.com/authmilter/authmilter/keys"
)

// RetiredQuery is a retired key whose record must no longer give a key.
type RetiredQuery struct {
	// Domain and Selector name the record.
	Domain, Selector string
	// P is the retired key's p= value (keys.PublicKeyData), if known: it
	// lets the result say whether the old key itself is still served.
	P string
	// Current are the p= values of keys that use the selector now (an
	// alternating selector that was given a new key): they are not the
	// retired key's and do not count.
	Current []string
}

// RetiredResult says whether a retired key's selector still gives a key.
type RetiredResult struct {
	// Retired is true when neither the public path nor (Nameservers
	// mode) any authoritative nameserver gives a usable key at the
	// selector: no record, or a revoked one (empty p=).
	Retired bool `json:"retired"`
	// State is what the public path serves: Missing, Revoked, Published
	// (a usable key: the old one or another), Mismatch (an invalid
	// record, which verifiers reject too), or TempError (not known:
	// Retired is false).
	State keys.State `json:"state"`
	// Detail says what still serves a key, or why it is not known.
	Detail string `json:"detail,omitempty"`
	// OldKey is set when what is served is the retired key itself.
	OldKey bool `json:"old_key,omitempty"`
	// Wildcard is set when a selector that was never published also gives
	// a key: a wildcard TXT (*._domainkey) or a synthesizing server, which
	// removing the one record does not fix.
	Wildcard bool `json:"wildcard,omitempty"`
	// Nameservers are the authoritative answers (Nameservers mode).
	Nameservers []Server `json:"nameservers,omitempty"`
}

// CheckRetired checks that the selector of a retired key no longer gives
// a usable key: a signature made with it must stop verifying once its
// grace is over (and a stolen key must be worthless). A removed record or
// a revocation (empty p=) is retired; any valid key is not, be it the old
// one, another one, or one made up by a wildcard record or a synthesizing
// server.
func (c *Checker) CheckRetired(ctx context.Context, q RetiredQuery) RetiredResult {
	name, ok := recordName(q.Domain, q.Selector)
	if !ok {
		return RetiredResult{State: keys.TempError, Detail: fmt.Sprintf("%q is not a valid record name", keys.RecordName(q.Domain, q.Selector))}
	}
	res := RetiredResult{State: keys.Missing, Retired: true}
	p := c.publicPath(ctx, name)
	if p.err != nil {
		return RetiredResult{State: keys.TempError, Detail: p.err.Error()}
	}
	var where []string
	if pv, ok := c.usable(p.txt, q); ok {
		res.State, res.Retired = keys.Published, false
		res.OldKey = res.OldKey || (q.P != "" && pv == q.P)
		where = append(where, "the public path ("+display(p.final())+")")
	} else {
		res.State, res.Detail = retiredState(notCurrent(p.txt, q.Current), display(p.final()))
	}
	if c.mode == Nameservers {
		zone, _, err := c.findZone(ctx, p.final(), p.soa)
		if err != nil {
			return RetiredResult{State: keys.TempError, Detail: fmt.Sprintf("the zone of %s is unknown: %v", display(p.final()), err)}
		}
		servers, err := c.askZone(ctx, zone, p.final(), Query{})
		if err != nil {
			return RetiredResult{State: keys.TempError, Detail: fmt.Sprintf("the nameservers of %s are unknown: %v", display(zone), err)}
		}
		res.Nameservers = servers
		var unknown []string
		for i, s := range servers {
			if s.State == keys.TempError {
				if !s.Unreachable {
					unknown = append(unknown, fmt.Sprintf("%s (%s): %s", s.Name, s.Addr, s.Detail))
				}
				continue
			}
			// askAuth classified against no key; look at what it serves.
			if pv, ok := c.usable(s.txt, q); ok {
				res.Retired = false
				res.OldKey = res.OldKey || (q.P != "" && pv == q.P)
				where = append(where, fmt.Sprintf("nameserver %s (%s)", s.Name, s.Addr))
				servers[i].State, servers[i].Detail = keys.Published, "serves a usable key"
			} else if s.State != keys.Missing || len(s.txt) > 0 {
				servers[i].State, servers[i].Detail = retiredState(notCurrent(s.txt, q.Current), display(p.final()))
			}
		}
		if res.Retired && len(unknown) > 0 {
			return RetiredResult{State: keys.TempError, Nameservers: servers,
				Detail: "not known from " + strings.Join(unknown, "; ")}
		}
	}
	if res.Retired {
		return res
	}
	what := "a usable key"
	if res.OldKey {
		what = "the retired key"
	}
	res.Detail = fmt.Sprintf("%s still gives %s at %s", strings.Join(where, " and "), what, display(name))
	if c.wildcard(ctx, q) {
		res.Wildcard = true
		res.Detail += fmt.Sprintf("; a selector never published gives a key too: a wildcard TXT (*._domainkey.%s) or a synthesizing server answers for any selector",
			strings.TrimSuffix(q.Domain, "."))
	}
	return res
}

// usable returns the p= of a usable key among txts that is not one of
// q.Current.
func (c *Checker) usable(txts []string, q RetiredQuery) (string, bool) {
	return usableKey(notCurrent(txts, q.Current))
}

// notCurrent returns txts without the records of the current keys.
func notCurrent(txts, current []string) []string {
	var rest []string
	for _, t := range txts {
		if rec, err := keys.ParseRecord(t); err == nil && slices.Contains(current, rec.PublicKey) {
			continue
		}
		rest = append(rest, t)
	}
	return rest
}

// retiredState says what a retired selector serves that is not a usable
// key.
func retiredState(txts []string, name string) (keys.State, string) {
	for _, t := range txts {
		if !isDKIM(t) {
			continue
		}
		if rec, err := keys.ParseRecord(t); err == nil && rec.PublicKey == "" {
			return keys.Revoked, "record at " + name + " is revoked (empty p=)"
		}
		return keys.Mismatch, "record at " + name + " holds no usable key"
	}
	return keys.Missing, "no DKIM record at " + name
}

// wildcard reports whether a random selector of the domain, which nobody
// ever published, gives a usable key through the public path.
func (c *Checker) wildcard(ctx context.Context, q RetiredQuery) bool {
	b := make([]byte, 8)
	rand.Read(b)
	name, ok := recordName(q.Domain, "authmilter-probe-"+hex.EncodeToString(b))
	if !ok {
		return false
	}
	p := c.publicPath(ctx, name)
	if p.err != nil {
		return false
	}
	_, ok = usableKey(p.txt)
	return ok
}
