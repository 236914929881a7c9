package policy

import (
	"context"
	"fmt"
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
