package policy

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/authmilter/authmilter/keys"
)

// PublicationChecker checks the publication of keys in DNS by more than a
// TXT lookup: the public path and every authoritative nameserver (see
// keys/dnscheck), remembering since when each record has been published
// everywhere. The daemon gives it to Compile as a method of the Resolver;
// a Resolver without it has its keys checked by one TXT lookup each, and
// a published key is used at once.
type PublicationChecker interface {
	// CheckPublication returns the state of every key of ks. A key that
	// is Published must have Since set.
	CheckPublication(ctx context.Context, ks []*keys.Key) map[*keys.Key]PublicationCheck
}

// PublicationCheck is what a PublicationChecker found about one key.
type PublicationCheck struct {
	keys.Publication
	// Since is when the record was first seen published everywhere
	// (Published only).
	Since time.Time
	// Hold is how long after Since receivers may still have an older
	// answer cached: the zone's negative TTL, the record's TTL.
	Hold time.Duration
}

// ActivationTime is when a key whose record has been published everywhere
// since since, with the DNS wait hold, may be used for signing: after
// hold or keys.activate_after, whichever is longer. A receiver's resolver
// that cached "no such record" before the record appeared (our own check
// through a shared resolver is enough to put it there) keeps that answer
// for the zone's negative TTL; one that cached the record an alternating
// selector held before keeps it for its TTL.
func ActivationTime(cfg *Config, since time.Time, hold time.Duration) time.Time {
	return since.Add(max(hold, cfg.Keys.ActivateAfter.Duration))
}

// applyChecks turns a PublicationChecker's results into the snapshot's
// publication states: a published key that has not waited long enough is
// Waiting.
func (p *Policy) applyChecks(checks map[*keys.Key]PublicationCheck, ks []*keys.Key) {
	// Now, not CompiledAt: the checks ran after it, and a key first seen
	// a moment ago with nothing to wait for is usable at once.
	now := time.Now()
	for _, k := range ks {
		c, ok := checks[k]
		if !ok {
			p.publication[k] = keys.Publication{State: keys.TempError, Detail: "not checked"}
			continue
		}
		pub := c.Publication
		if pub.State == keys.Published {
			since := c.Since
			if since.IsZero() {
				since = now
			}
			if at := ActivationTime(p.cfg, since, c.Hold); now.Before(at) {
				pub = keys.Publication{State: keys.Waiting, Detail: WaitingDetail(since, at, c.Hold, p.cfg.Keys.ActivateAfter.Duration)}
			}
		}
		p.publication[k] = pub
	}
}

// WaitingDetail explains a Waiting key.
func WaitingDetail(since, at time.Time, hold, activateAfter time.Duration) string {
	why := fmt.Sprintf("DNS caches may hold an older answer for %s", hold)
	if activateAfter > hold {
		why = fmt.Sprintf("keys.activate_after is %s", activateAfter)
	}
	return fmt.Sprintf("published everywhere since %s; active from %s (%s)",
		since.UTC().Format(time.RFC3339), at.UTC().Format(time.RFC3339), why)
}

// InactiveReason explains why k does not sign under this snapshot, for
// `authmilter keys` and the status pages: a pin, its DNS state (when
// keys.require_published is on; pub is the state shown, activeFrom when a
// waiting key becomes usable, zero if unknown), a newer key, or no rule
// using it.
func (p *Policy) InactiveReason(k *keys.Key, pub keys.Publication, activeFrom time.Time) string {
	if pins := p.pins(k.Domain); len(pins) > 0 {
		pinned := false
		for _, s := range pins {
			pinned = pinned || strings.EqualFold(s, k.Selector)
		}
		if !pinned {
			return "keys.pin selects " + strings.Join(pins, ", ")
		}
	}
	if p.cfg.Keys.RequirePublished {
		switch pub.State {
		case keys.Missing:
			return "DNS record missing"
		case keys.Mismatch:
			return "DNS record does not match the key"
		case keys.Revoked:
			return "revoked in DNS (empty p=)"
		case keys.TempError:
			return "DNS lookup failed"
		case keys.Partial:
			return "not on every nameserver yet"
		case keys.DelegationMissing:
			return "the public path does not lead to the record: the customer must add the records shown"
		case keys.Foreign:
			return "its selector holds someone else's record"
		case keys.Waiting:
			if !activeFrom.IsZero() {
				return "published; waiting for DNS caches until " + activeFrom.UTC().Format("2006-01-02 15:04:05") + " UTC"
			}
			return "published; waiting for DNS caches"
		}
	}
	for _, a := range p.ActiveKeys(k.Domain) {
		if a.Algorithm == k.Algorithm && keys.Newer(a, k) {
			return "superseded by " + a.Selector
		}
	}
	if len(p.RulesUsing(k)) == 0 {
		return "no signing rule uses it"
	}
	return "not chosen"
}

// pins returns the selectors keys.pin sets for domain.
func (p *Policy) pins(domain string) []string {
	for d, s := range p.cfg.Keys.Pin {
		if strings.EqualFold(strings.TrimSuffix(d, "."), domain) {
			return s
		}
	}
	return nil
}
