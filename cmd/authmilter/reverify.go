package main

import (
	"container/heap"
	"context"
	"hash/fnv"
	"time"

	"github.com/authmilter/authmilter/keys"
	"github.com/authmilter/authmilter/policy"
)

// Reverification. A reload or keys.recheck looks up only new, changed and
// not yet published keys (pubChecker.incremental); the records of keys
// already found published are looked up again by the reverifier, each
// once per keys.reverify at its own moment of the cycle (a hash of its
// record name), so that 100,000 keys cost about 1.2 lookups a second
// instead of 100,000 lookups at every reload. A record found gone or
// changed triggers a reload, which looks it up again and deactivates the
// key. The reverifier never exceeds keys.dns_qps.

// reverifyTick is how often the reverifier looks for due keys.
const reverifyTick = time.Second

// requeueDelay is how long after a new snapshot the reverifier queues its
// keys.
const requeueDelay = 5 * time.Second

// reverifier is the state of the reverification loop.
type reverifier struct {
	d      *daemon
	queue  dueQueue             // soonest first
	tried  map[string]time.Time // last reverification per record name
	gen    int64                // snapshot generation the queue was built from
	seen   int64                // newest generation seen, since seenAt
	seenAt time.Time
	tokens float64 // checks allowed now (the dns_qps bucket)
}

// dueQueue is a heap of keys by due time.
type dueQueue []dueKey

func (q dueQueue) Len() int           { return len(q) }
func (q dueQueue) Less(i, j int) bool { return q[i].due.Before(q[j].due) }
func (q dueQueue) Swap(i, j int)      { q[i], q[j] = q[j], q[i] }
func (q *dueQueue) Push(x any)        { *q = append(*q, x.(dueKey)) }
func (q *dueQueue) Pop() any {
	old := *q
	x := old[len(old)-1]
	*q = old[:len(old)-1]
	return x
}

// dueKey is a key and when its record is next looked up.
type dueKey struct {
	k    *keys.Key
	name string
	due  time.Time
}

// reverifyLoop runs the reverifier until ctx ends.
func (d *daemon) reverifyLoop(ctx context.Context) {
	r := &reverifier{d: d, tried: map[string]time.Time{}}
	t := time.NewTicker(reverifyTick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			r.tick(ctx, now)
		}
	}
}

// tick looks up the keys that are due, as many as keys.dns_qps allows.
func (r *reverifier) tick(ctx context.Context, now time.Time) {
	pol := r.d.current.Load()
	cfg := pol.Config()
	if !cfg.Keys.RequirePublished {
		return
	}
	// A new snapshot's keys are queued a little after it came: building
	// the queue of 100,000 keys must not compete with the first messages
	// signed with a key the reload just activated.
	if gen := r.d.gen.Load(); gen != r.gen {
		if r.seen != gen {
			r.seen, r.seenAt = gen, now
		}
		if r.queue == nil || now.Sub(r.seenAt) >= requeueDelay {
			r.queue = dueKeys(pol, &r.d.lastGood, r.tried)
			heap.Init(&r.queue)
			r.gen = gen
		}
	}
	rate := checksPerSecond(cfg) * reverifyTick.Seconds()
	r.tokens = min(r.tokens+rate, max(rate, 1))
	var batch []*keys.Key
	for len(r.queue) > 0 && !r.queue[0].due.After(now) && r.tokens >= 1 {
		next := heap.Pop(&r.queue).(dueKey)
		batch = append(batch, next.k)
		r.tried[next.name] = now
		r.tokens--
		next.due = nextReverify(next.name, now, cfg.Keys.Reverify.Duration)
		heap.Push(&r.queue, next)
	}
	if len(batch) > 0 {
		r.verify(ctx, pol, batch)
	}
}

// verify looks up the records of batch and asks for a reload if one of
// them is no longer published.
func (r *reverifier) verify(ctx context.Context, pol *policy.Policy, batch []*keys.Key) {
	r.d.reloadMu.Lock()
	checker, resolver := r.d.dns.checker, r.d.dns.resolver
	r.d.reloadMu.Unlock()
	if checker == nil || resolver == nil {
		return
	}
	lookup := resolver.LookupIPAddr
	pc := &pubChecker{checker: checker, last: &r.d.lastGood, cfg: pol.Config(), kd: newKeyDNSPlan(pol.Config(), lookup), checks: r.d.checks}
	out := make(map[*keys.Key]policy.PublicationCheck, len(batch))
	ctx, cancel := context.WithTimeout(ctx, compileTimeout)
	defer cancel()
	pc.check(ctx, batch, out)
	r.d.metrics.reverified(len(batch))
	gone := 0
	for _, k := range batch {
		if c := out[k]; c.State != keys.Published {
			gone++
			r.d.log.Warn("key record no longer published; reloading", "key", k.ID(), "state", string(c.State), "detail", c.Detail)
		}
	}
	if gone > 0 {
		// The snapshot is unchanged otherwise: the reload must not keep it.
		r.d.recompile.Store(true)
		r.d.request(false)
	}
}

// dueKeys lists the keys of pol whose record was found published, with
// when each is to be looked up again; tried is pruned to the keys listed.
func dueKeys(pol *policy.Policy, last *keys.LastGood, tried map[string]time.Time) dueQueue {
	period := pol.Config().Keys.Reverify.Duration
	var out dueQueue
	seen := make(map[string]bool, len(tried))
	for _, k := range pol.Table().All() {
		st := pol.Publication(k).State
		if st != keys.Published && st != keys.Waiting {
			continue
		}
		name := keys.RecordName(k.Domain, k.Selector)
		var base time.Time
		if a, ok := last.Confirmed(k); ok {
			base = a.Seen
		}
		if t, ok := tried[name]; ok {
			seen[name] = true
			if t.After(base) {
				base = t
			}
		}
		out = append(out, dueKey{k: k, name: name, due: nextReverify(name, base, period)})
	}
	for name := range tried {
		if !seen[name] {
			delete(tried, name)
		}
	}
	return out
}

// nextReverify is when the record name, last looked up at last, is looked
// up again: at the name's own moment of the period (its phase, from a
// hash of the name, so that the keys are spread evenly over the period),
// the first such moment at least half a period after last. A key checked
// at its moment is next checked exactly one period later.
func nextReverify(name string, last time.Time, period time.Duration) time.Time {
	p := int64(period / time.Second)
	if p < 1 {
		p = 1
	}
	h := fnv.New64a()
	h.Write([]byte(name))
	phase := int64(h.Sum64() % uint64(p))
	after := last.Add(period / 2).Unix()
	at := after - mod(after, p) + phase
	if at < after {
		at += p
	}
	return time.Unix(at, 0)
}

// mod is a modulo that is never negative.
func mod(a, b int64) int64 { return ((a % b) + b) % b }

// checksPerSecond is how many key checks a second keep within
// keys.dns_qps: a check is one query with keys.check = "resolver", and
// about four (the public path, the zone's SOA and NS, its nameservers)
// with "nameservers".
func checksPerSecond(cfg *policy.Config) float64 {
	perCheck := 4.0
	if cfg.Keys.Check == "resolver" {
		perCheck = 1
	}
	return float64(cfg.Keys.DNSQPS) / perCheck
}
