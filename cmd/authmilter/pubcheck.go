package main

import (
	"context"
	"net"
	"sync"
	"time"

	"github.com/authmilter/authmilter/keys"
	"github.com/authmilter/authmilter/keys/dnscheck"
	"github.com/authmilter/authmilter/policy"
	"github.com/authmilter/authmilter/policy/resolve"
)

// newChecker builds the publication checker the config asks for
// (keys.check), asking the recursive servers the resolver uses (dns.servers
// or /etc/resolv.conf's, as resolve chose them), and telling it where we
// publish ([keys.publish] server and targets) so that a missing delegation
// is recognised.
func newChecker(cfg *policy.Config, servers []string) (*dnscheck.Checker, error) {
	var ours []string
	for _, s := range publishServers(cfg) {
		if n, err := policy.NormalizeDNSServer(s); err == nil {
			ours = append(ours, n)
		}
	}
	return dnscheck.New(dnscheck.Config{Servers: servers, Timeout: cfg.DNS.Timeout.Duration,
		Mode: dnscheck.Mode(cfg.Keys.Check), Ours: ours})
}

// publishServers lists the servers key records are published to.
func publishServers(cfg *policy.Config) []string {
	var out []string
	for _, t := range cfg.Keys.Publish.Targets {
		if t.Server != "" {
			out = append(out, t.Server)
		}
	}
	if s := cfg.Keys.Publish.Server; s != "" {
		out = append(out, s)
	}
	return out
}

// pubChecker is the policy.PublicationChecker of the daemon and of
// `authmilter keys`: it checks keys with keys/dnscheck and remembers in
// last since when each record has been published everywhere, and the last
// good answer, which stands in for a check that fails temporarily so that
// a DNS outage does not deactivate keys (a key never seen published
// everywhere is not activated on such a failure).
type pubChecker struct {
	// checker is nil offline: every key is then a temporary failure,
	// answered from last alone (the daemon's start before DNS answers).
	checker *dnscheck.Checker
	last    *keys.LastGood
	cfg     *policy.Config
	// known, if set, returns the records a domain's state says we
	// published: with it, a record of a key that is neither the domain's
	// nor one of them is Foreign.
	known func(domain string) []string
	// incremental (the daemon) counts a key as published without a DNS
	// check when last has confirmed its record for its key file: only new,
	// changed and not yet published keys are looked up at a reload, and
	// the others on the reverification cycle (see reverifier). `authmilter
	// keys` looks up every key.
	incremental bool
	// keepResults keeps each key's last dnscheck.Result for result (the
	// details `authmilter keys` shows); the daemon does not keep them.
	keepResults bool

	// kd checks the keys the built-in key DNS server publishes; made from
	// cfg when first needed if not set.
	kd     *keyDNSPlan
	kdOnce sync.Once

	// checks, when set (the daemon with [web]), keeps each check for the
	// status pages.
	checks *keyChecks

	mu      sync.Mutex
	results map[*keys.Key]dnscheck.Result // the last check of each key
}

// keyDNS returns the checker's key DNS plan.
func (c *pubChecker) keyDNS() *keyDNSPlan {
	c.kdOnce.Do(func() {
		if c.kd == nil {
			c.kd = newKeyDNSPlan(c.cfg, nil)
		}
	})
	return c.kd
}

// CheckPublication implements policy.PublicationChecker.
func (c *pubChecker) CheckPublication(ctx context.Context, all []*keys.Key) map[*keys.Key]policy.PublicationCheck {
	out := make(map[*keys.Key]policy.PublicationCheck, len(all))
	ks := all
	if c.incremental {
		ks = nil
		for _, k := range all {
			if a, ok := c.last.Confirmed(k); ok {
				out[k] = policy.PublicationCheck{Publication: keys.Publication{State: keys.Published}, Since: a.Since, Hold: a.Hold}
				continue
			}
			ks = append(ks, k)
		}
	}
	c.check(ctx, ks, out)
	return out
}

// check looks up the keys ks and adds their publication to out.
func (c *pubChecker) check(ctx context.Context, ks []*keys.Key, out map[*keys.Key]policy.PublicationCheck) {
	byDomain := map[string][]string{}
	if c.known != nil {
		for _, k := range ks {
			byDomain[k.Domain] = append(byDomain[k.Domain], k.PublicKeyData())
		}
	}
	qs := make([]dnscheck.Query, len(ks))
	for i, k := range ks {
		qs[i] = c.query(k, byDomain[k.Domain])
	}
	var results []dnscheck.Result
	if c.checker != nil {
		results = c.keyDNS().check(ctx, ks, qs, c.checker.CheckAll)
	} else {
		results = make([]dnscheck.Result, len(ks))
		for i, k := range ks {
			results[i] = dnscheck.Result{State: keys.TempError, Detail: keys.ErrNotLookedUp.Error(), Name: keys.RecordName(k.Domain, k.Selector)}
		}
	}
	now := time.Now()
	if c.keepResults {
		c.mu.Lock()
		if c.results == nil {
			c.results = map[*keys.Key]dnscheck.Result{}
		}
		for i, k := range ks {
			c.results[k] = results[i]
		}
		c.mu.Unlock()
	}
	for i, k := range ks {
		out[k] = c.decide(k, results[i], now)
		if c.checker != nil {
			c.checks.record(k, results[i], now)
		}
	}
}

// decide turns one check into the key's publication, with the last good
// answer standing in for a temporary failure.
func (c *pubChecker) decide(k *keys.Key, r dnscheck.Result, now time.Time) policy.PublicationCheck {
	name := keys.RecordName(k.Domain, k.Selector)
	pc := policy.PublicationCheck{Publication: keys.Publication{State: r.State, Detail: r.Detail}}
	switch r.State {
	case keys.Published:
		pc.Hold = r.Hold()
		pc.Since = c.last.Published(name, r.TXT, pc.Hold, now, k)
	case keys.TempError:
		// The answer must be this key file's: confirmed for it, or (saved
		// by an older version, naming no key file) holding its key.
		a, ok := c.last.Confirmed(k)
		if !ok {
			if a, ok = c.last.Answer(name); !ok || a.Since.IsZero() || a.Key != "" {
				return pc
			}
			if st, _ := dnscheck.Classify(a.TXT, name, k.Public(), nil); st != keys.Published {
				return pc // the key file was replaced: the saved answer is another key's
			}
		}
		if c.last.Stale != nil {
			var err error = &net.DNSError{Err: r.Detail, Name: name, IsTemporary: true}
			if r.Detail == keys.ErrNotLookedUp.Error() {
				_, err = keys.Offline(context.Background(), name)
			}
			c.last.Stale(name, err)
		}
		pc.State, pc.Detail = keys.Published, "DNS check failed ("+r.Detail+"); using the last good answer, seen "+a.Seen.UTC().Format(time.RFC3339)
		pc.Since, pc.Hold = a.Since, a.Hold
	default:
		// DNS answered: the record is not (or no longer) published
		// everywhere. A later outage must not bring it back.
		c.last.Forget(name)
	}
	return pc
}

// query is the dnscheck query for k; domainKeys are the p= values of the
// domain's keys.
func (c *pubChecker) query(k *keys.Key, domainKeys []string) dnscheck.Query {
	q := dnscheck.KeyQuery(k)
	// Only with the state's records is a record of another key known to be
	// someone else's (Foreign) rather than an older one of ours: the daemon
	// does not read the state and says Mismatch.
	q.Known = nil
	if c.known != nil {
		q.Known = append(append([]string(nil), domainKeys...), c.known(k.Domain)...)
	}
	if z := c.cfg.Keys.CNAMEZoneFor(k.Domain); z != "" {
		q.PublishName = keys.CNAMETarget(k.Domain, k.Selector, z)
	}
	return q
}

// result returns the last check of k.
func (c *pubChecker) result(k *keys.Key) (dnscheck.Result, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r, ok := c.results[k]
	return r, ok
}

// checkResolver is the resolver given to policy.Compile: the shared
// resolver for every lookup, and the publication checker for the key
// checks of the compile.
type checkResolver struct {
	*resolve.Resolver
	check *pubChecker
}

// CheckPublication implements policy.PublicationChecker.
func (r *checkResolver) CheckPublication(ctx context.Context, ks []*keys.Key) map[*keys.Key]policy.PublicationCheck {
	return r.check.CheckPublication(ctx, ks)
}

// nextActivation is when the first of pol's waiting keys may be used
// (zero when none waits), from the times kept in last.
func nextActivation(pol *policy.Policy, last *keys.LastGood) time.Time {
	var next time.Time
	if pol.CountState(keys.Waiting) == 0 {
		return next
	}
	for _, k := range pol.Table().All() {
		if pol.Publication(k).State != keys.Waiting {
			continue
		}
		a, ok := last.Answer(keys.RecordName(k.Domain, k.Selector))
		if !ok || a.Since.IsZero() {
			continue
		}
		if at := policy.ActivationTime(pol.Config(), a.Since, a.Hold); next.IsZero() || at.Before(next) {
			next = at
		}
	}
	return next
}

// publishedSince is when k's record was first seen published everywhere,
// from the last good answers (zero if unknown, or carried over from a
// file that did not record it).
func publishedSince(last *keys.LastGood, k *keys.Key) time.Time {
	a, ok := last.Answer(keys.RecordName(k.Domain, k.Selector))
	if !ok || a.Since.Equal(keys.MigratedSince) {
		return time.Time{}
	}
	return a.Since
}

// activeFrom is when a waiting key becomes usable, from its detail's
// source: the times in last (zero if unknown).
func activeFrom(cfg *policy.Config, last *keys.LastGood, k *keys.Key) time.Time {
	a, ok := last.Answer(keys.RecordName(k.Domain, k.Selector))
	if !ok || a.Since.IsZero() {
		return time.Time{}
	}
	return policy.ActivationTime(cfg, a.Since, a.Hold)
}
