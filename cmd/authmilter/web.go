package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/authmilter/authmilter/keys"
	"github.com/authmilter/authmilter/keys/dnscheck"
	"github.com/authmilter/authmilter/policy"
	"github.com/authmilter/authmilter/reports"
	"github.com/authmilter/authmilter/web"
)

// The status pages ([web]) show what the running daemon uses: its
// snapshot, its metrics registry, and what its publication checks and
// retired-key checks last saw (keyChecks). [web] is read at start, like
// [reports]: a reload that changes it logs that it takes effect at restart.

// The daemon keeps each key's last publication check (each nameserver's
// answer) for the status pages while it keeps fewer than
// keepAllChecksUpTo; beyond that (a provider's table) only the checks of
// keys that were not published everywhere, up to maxKeptChecks: the
// state of a published key says it all, and 100,000 kept checks would
// cost tens of MB.
const (
	keepAllChecksUpTo = 1000
	maxKeptChecks     = 10000
)

// retiredCheckTick is how often the retired-key checker looks for
// retired keys due a check (each is checked once per keys.reverify).
const retiredCheckTick = time.Minute

// keyChecks keeps what the daemon's DNS checks last saw beyond the
// snapshot, for the status pages (web.KeyDetails). It never blocks for
// long: one mutex held only to copy in or out.
type keyChecks struct {
	mu    sync.Mutex
	byKey map[*keys.Key]keyCheck
	// retired are the retired keys' checks by domain, then selector (lower
	// case): the problem filter of the keys page asks for every domain.
	retired map[string]map[string]web.RetiredKey
}

// keyCheck is one key's last publication check.
type keyCheck struct {
	result dnscheck.Result
	at     time.Time
}

func newKeyChecks() *keyChecks {
	return &keyChecks{byKey: map[*keys.Key]keyCheck{}, retired: map[string]map[string]web.RetiredKey{}}
}

// record keeps the check r of k made at at (nil-safe: the daemon without
// [web] keeps nothing).
func (c *keyChecks) record(k *keys.Key, r dnscheck.Result, at time.Time) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.byKey) >= keepAllChecksUpTo && r.State == keys.Published {
		delete(c.byKey, k) // published everywhere: its state says it all
		return
	}
	if _, ok := c.byKey[k]; !ok && len(c.byKey) >= maxKeptChecks {
		return
	}
	c.byKey[k] = keyCheck{result: r, at: at}
}

// prune forgets the checks of keys that left the table t, and the
// retired checks of retired keys that are gone.
func (c *keyChecks) prune(t *keys.Table) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for k := range c.byKey {
		if !tableHas(t, k) {
			delete(c.byKey, k)
		}
	}
	for d, sels := range c.retired {
		for sel := range sels {
			if !hasRetired(t, d, sel) {
				delete(sels, sel)
			}
		}
		if len(sels) == 0 {
			delete(c.retired, d)
		}
	}
}

// tableHas reports whether k is one of t's keys (the same key file, not
// just the same name).
func tableHas(t *keys.Table, k *keys.Key) bool {
	for _, o := range t.Keys(k.Domain) {
		if o == k {
			return true
		}
	}
	return false
}

// hasRetired reports whether t lists the retired key d/sel.
func hasRetired(t *keys.Table, d, sel string) bool {
	for _, rk := range t.Retired(d) {
		if strings.EqualFold(rk.Selector, sel) {
			return true
		}
	}
	return false
}

// webKeys is the daemon's web.KeyDetails: the kept checks, and since
// when each record has been published everywhere (the daemon's last good
// answers, which it keeps for every key anyway).
type webKeys struct{ d *daemon }

// Detail implements web.KeyDetails.
func (w webKeys) Detail(k *keys.Key) (web.KeyDNS, bool) {
	var out web.KeyDNS
	known := false
	if since := publishedSince(&w.d.lastGood, k); !since.IsZero() {
		known = true
		out.PublishedSince = since.UTC()
		if pol := w.d.current.Load(); pol != nil && pol.Publication(k).State == keys.Waiting {
			out.ActiveFrom = activeFrom(pol.Config(), &w.d.lastGood, k).UTC()
		}
	}
	c := w.d.checks
	c.mu.Lock()
	kc, ok := c.byKey[k]
	c.mu.Unlock()
	if !ok {
		return out, known
	}
	r := kc.result
	out.Checked, out.Zone, out.Add = kc.at, r.Zone, r.Add
	if r.Name != "" {
		out.Path = append([]string{r.Name}, r.CNAMEs...)
	}
	for _, s := range r.Nameservers {
		out.Nameservers = append(out.Nameservers, web.Nameserver{Name: s.Name, Addr: s.Addr, State: string(s.State), Detail: s.Detail})
	}
	return out, true
}

// Retired implements web.KeyDetails.
func (w webKeys) Retired(domain string) []web.RetiredKey { return w.d.checks.retiredOf(domain) }

// retiredOf returns the kept checks of domain's retired keys, by
// selector.
func (c *keyChecks) retiredOf(domain string) []web.RetiredKey {
	c.mu.Lock()
	defer c.mu.Unlock()
	sels := c.retired[strings.ToLower(domain)]
	if len(sels) == 0 {
		return nil
	}
	out := make([]web.RetiredKey, 0, len(sels))
	for _, rk := range sels {
		out = append(out, rk)
	}
	slices.SortFunc(out, func(a, b web.RetiredKey) int { return strings.Compare(a.Selector, b.Selector) })
	return out
}

// retiredCheck returns the kept check of rk (callers hold c.mu).
func (c *keyChecks) retiredCheck(rk keys.RetiredKey) (web.RetiredKey, bool) {
	got, ok := c.retired[strings.ToLower(rk.Domain)][strings.ToLower(rk.Selector)]
	return got, ok
}

// setRetired keeps the check of rk (callers hold c.mu).
func (c *keyChecks) setRetired(rk keys.RetiredKey, got web.RetiredKey) {
	d := strings.ToLower(rk.Domain)
	if c.retired[d] == nil {
		c.retired[d] = map[string]web.RetiredKey{}
	}
	c.retired[d][strings.ToLower(rk.Selector)] = got
}

// due adds the retired keys of pol's table that have no check yet
// (shown as not checked yet), and returns those due a check at now.
func (c *keyChecks) due(t *keys.Table, now time.Time, every time.Duration) []keys.RetiredKey {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []keys.RetiredKey
	for _, d := range t.RetiredDomains() {
		for _, rk := range t.Retired(d) {
			got, ok := c.retiredCheck(rk)
			if !ok {
				got = web.RetiredKey{Selector: rk.Selector, Algorithm: string(rk.Algorithm), Retired: rk.Retired}
				c.setRetired(rk, got)
			}
			if got.Checked.IsZero() || now.Sub(got.Checked) >= every {
				out = append(out, rk)
			}
		}
	}
	return out
}

// retiredResult keeps the check of the retired key rk.
func (c *keyChecks) retiredResult(rk keys.RetiredKey, res dnscheck.RetiredResult, at time.Time) (changed bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	prev, _ := c.retiredCheck(rk)
	next := web.RetiredKey{Selector: rk.Selector, Algorithm: string(rk.Algorithm), Retired: rk.Retired, Checked: at,
		Withdrawn: res.Retired, State: string(res.State), Detail: res.Detail}
	if res.Wildcard {
		next.Detail += "; a wildcard record gives a key at any selector"
	}
	c.setRetired(rk, next)
	return prev.Checked.IsZero() || prev.Withdrawn != next.Withdrawn || prev.State != next.State
}

// retiredLoop checks, once per keys.reverify each, whether the selectors
// of retired keys still give a key (a lingering record lets a stolen
// retired key keep signing for the domain), within a quarter of
// keys.dns_qps; a key found usable is logged when that changes.
func (d *daemon) retiredLoop(ctx context.Context, checks *keyChecks) {
	t := time.NewTimer(requeueDelay)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			d.checkRetired(ctx, checks, now)
			t.Reset(retiredCheckTick)
		}
	}
}

// checkRetired checks the retired keys due at now, as many as a minute
// of a quarter of keys.dns_qps allows.
func (d *daemon) checkRetired(ctx context.Context, checks *keyChecks, now time.Time) {
	pol := d.current.Load()
	if pol == nil {
		return
	}
	cfg := pol.Config()
	budget := max(int(checksPerSecond(cfg)*retiredCheckTick.Seconds()/4), 1)
	due := checks.due(pol.Table(), now, cfg.Keys.Reverify.Duration)
	if len(due) > budget {
		due = due[:budget]
	}
	if len(due) == 0 {
		return
	}
	d.reloadMu.Lock()
	checker := d.dns.checker
	d.reloadMu.Unlock()
	if checker == nil {
		return
	}
	for _, rk := range due {
		q := retiredQuery(pol.Table(), rk.Domain, rk.Selector, "")
		cctx, cancel := context.WithTimeout(ctx, compileTimeout)
		res := checker.CheckRetired(cctx, q)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if checks.retiredResult(rk, res, time.Now()) && !res.Retired && res.State != keys.TempError {
			d.log.Warn("retired key is still usable: its selector gives a key; remove the record (or revoke it: \"v=DKIM1; p=\")",
				"key", rk.Domain+"/"+rk.Selector, "record", keys.RecordName(rk.Domain, rk.Selector), "detail", res.Detail)
		}
	}
}

// reloadStatus is how the last reload went, for the status pages.
type reloadStatus struct {
	at  time.Time
	err string
}

// noteReload records the outcome of a reload (err nil: a snapshot was
// installed or kept).
func (d *daemon) noteReload(err error) {
	st := &reloadStatus{at: time.Now()}
	if err != nil {
		st.err = strings.TrimPrefix(err.Error(), errRefused.Error()+": ")
	}
	d.lastReload.Store(st)
}

// webReload is web.Options.Reload.
func (d *daemon) webReload() web.ReloadStatus {
	out := web.ReloadStatus{OK: true, Generation: d.gen.Load()}
	if pol := d.current.Load(); pol != nil {
		out.Loaded = pol.CompiledAt
	}
	if st := d.lastReload.Load(); st != nil {
		out.At, out.OK, out.Error = st.at, st.err == "", st.err
	}
	return out
}

// startWeb starts the status pages when [web] listen is set (nil, nil
// otherwise), and the retired-key checker that feeds them.
func startWeb(ctx context.Context, cfg *policy.Config, d *daemon, started time.Time) (*web.Server, error) {
	if !cfg.Web.Enabled() {
		return nil, nil
	}
	var open func(context.Context) (reports.Store, error)
	if db := cfg.Reports.Database; db != "" {
		open = func(ctx context.Context) (reports.Store, error) { return reports.Open(ctx, db) }
	}
	srv, err := web.Start(web.Options{
		Version: version, Started: started, Policy: d.current.Load, Keys: webKeys{d}, Reload: d.webReload,
		Metrics: d.metrics.reg, OpenReports: open, Config: cfg.Web, Logger: d.log.With("component", "web"),
	})
	if err != nil {
		return nil, fmt.Errorf("web: %w", err)
	}
	go d.retiredLoop(ctx, d.checks)
	return srv, nil
}
