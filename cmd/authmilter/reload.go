package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"reflect"
	"runtime/debug"
	"strings"
	"time"

	"github.com/authmilter/authmilter/keys"
	"github.com/authmilter/authmilter/keys/dnscheck"
	"github.com/authmilter/authmilter/policy"
	"github.com/authmilter/authmilter/policy/resolve"
)

// Reload policy. A reload (SIGHUP, the periodic recheck, the quick retries
// of keys whose lookup failed) builds a complete new snapshot and swaps it
// in; it never leaves the daemon worse than before. It is refused, the old
// snapshot staying, logged ("reload failed; keeping the previous config and
// keys") and counted (authmilter_reloads_total{result="error"}), when:
//
//   - the config does not parse or validate, or has no settings at all
//     (an empty file is what a truncated, half-rewritten file looks like);
//   - keys.dir does not exist (unless it did not exist before either: a
//     fresh install), is not a folder, cannot be read, or is writable by
//     group or others;
//   - any key cannot be used: unreadable, not a regular file (a FIFO would
//     block the reader), owned by another user, in a folder writable by
//     group or others, insecure mode, weak, not a key;
//   - the key table is empty while keys were active (an unmounted volume
//     looks like that); removing one domain folder, with others left, takes
//     effect, and stopping all signing needs a restart;
//   - it does not finish within reloadTimeout.
//
// Reloads run in their own goroutine, one at a time, never in the signal
// loop: SIGTERM is honoured within shutdown_timeout even while a reload
// waits on DNS.

// reloadTimeout bounds a whole reload (config, key files, DNS checks);
// the DNS checks alone are bounded by compileTimeout.
const reloadTimeout = compileTimeout + 30*time.Second

// startWait is how long the daemon waits at start for its first DNS checks
// before it serves with the publication state it saved last time. Its
// sockets listen from the first moment: an MTA that connects meanwhile
// waits in the listen backlog, well within its milter timeouts.
const startWait = 2 * time.Second

// Quick retries of keys whose DNS lookup failed (temperror): 2s, 4s, 8s
// and so on, up to keys.recheck.
const retryFirst = 2 * time.Second

// dnsState is the daemon's resolver and publication checker, kept across
// reloads while the settings they are made from are unchanged (the
// resolver with its cache).
type dnsState struct {
	resolver *resolve.Resolver
	key      string // the [dns] settings it was made for
	// checker checks the keys' publication (keys.check): uncached (a key
	// published a minute ago is seen at the next SIGHUP or recheck, not
	// when a cached NXDOMAIN expires); the last good answers stand in when
	// DNS fails temporarily (a DNS outage must not deactivate keys).
	checker    *dnscheck.Checker
	checkerKey string // the settings it was made for
}

// compiled is the result of one compile.
type compiled struct {
	pol *policy.Policy
	dns dnsState
	err error
}

// buildDNS returns prev if cfg's settings are what it was made for, else
// a new resolver and checker.
func (d *daemon) buildDNS(prev dnsState, cfg *policy.Config) (dnsState, error) {
	key := fmt.Sprint(cfg.DNS.Servers, cfg.DNS.Timeout)
	checkerKey := fmt.Sprint(cfg.Keys.Check, publishServers(cfg))
	st := prev
	if prev.resolver == nil || prev.key != key {
		r, err := newMeteredResolver(cfg, d.metrics.dnsError)
		if err != nil {
			return dnsState{}, err
		}
		st = dnsState{resolver: r, key: key}
	}
	if st.checker == nil || st.checkerKey != checkerKey {
		c, err := newChecker(cfg, st.resolver.Servers())
		if err != nil {
			return dnsState{}, err
		}
		st.checker, st.checkerKey = c, checkerKey
	}
	return st, nil
}

// compile builds a snapshot from cfg within reloadTimeout: it reads the
// key table (unless table is given: the one read from cfg.Keys.Dir a
// moment ago) and checks the keys against DNS or, offline, against the
// last good answers only (what was saved at the last run), which is how the
// daemon serves before DNS answers. A compile that overruns is abandoned
// (its result, if it ever comes, is dropped).
func (d *daemon) compile(cfg *policy.Config, prev dnsState, table *keys.Table, offline bool) compiled {
	done := make(chan compiled, 1)
	go func() {
		st, err := d.buildDNS(prev, cfg)
		if err != nil {
			done <- compiled{err: err}
			return
		}
		if table == nil {
			if table, err = d.loadTable(cfg); err != nil {
				done <- compiled{err: err}
				return
			}
		}
		forced := d.recompile.Swap(false)
		cur := d.current.Load()
		if !offline && !forced && unchanged(cur, cfg, table) {
			done <- compiled{pol: cur, dns: st}
			return
		}
		if offline || forced {
			cur = nil // every key looked at (see policy.CompileFrom)
		}
		if err := d.keyDNS.check(cfg, table); err != nil {
			done <- compiled{err: err}
			return
		}
		check := &pubChecker{checker: st.checker, last: &d.lastGood, cfg: cfg, incremental: true,
			kd: newKeyDNSPlan(cfg, st.resolver.LookupIPAddr), checks: d.checks}
		if offline {
			check.checker = nil
		}
		r := &checkResolver{Resolver: st.resolver, check: check}
		ctx, cancel := context.WithTimeout(context.Background(), compileTimeout)
		defer cancel()
		pol, err := policy.CompileFrom(ctx, cfg, table, r, cur)
		done <- compiled{pol: pol, dns: st, err: err}
	}()
	return waitCompiled(done)
}

// unchanged reports whether compiling cfg and table would rebuild cur
// as it is: the same config and key table (keys.Load returns the previous
// table itself when no file changed), every key published (nothing to
// look up; the reverifier looks at those) and no retired key whose
// revoked record the key DNS server may stop serving. A reload with
// nothing changed then keeps the snapshot instead of building a copy of
// it: at 100,000 keys that saves most of its time and all of its memory.
func unchanged(cur *policy.Policy, cfg *policy.Config, table *keys.Table) bool {
	if cur == nil || cur.Table() != table || !reflect.DeepEqual(cur.Config(), cfg) {
		return false
	}
	if cur.CountState(keys.Published)+cur.CountState(keys.Unchecked) != len(table.All()) {
		return false
	}
	return !cfg.KeyDNS.Enabled() || len(table.RetiredDomains()) == 0
}

// loadTable reads cfg's key table, taking the unchanged keys (and the
// parsed private keys) of the running snapshot's table over: a reload of
// 100,000 unchanged keys reads no key file.
func (d *daemon) loadTable(cfg *policy.Config) (*keys.Table, error) {
	opt := keys.LoadOptions{CacheSize: cfg.Keys.KeyCache, Watch: d.keyWatcher(cfg.Keys.Dir), Verify: d.verifyNext.Swap(false)}
	if cur := d.current.Load(); cur != nil {
		opt.Prev = cur.Table()
	}
	return keys.Load(cfg.Keys.Dir, opt)
}

// waitCompiled waits for a compile at most reloadTimeout.
func waitCompiled(done <-chan compiled) compiled {
	t := time.NewTimer(reloadTimeout)
	defer t.Stop()
	select {
	case c := <-done:
		return c
	case <-t.C:
		return compiled{err: fmt.Errorf("reload did not finish within %s (a key file or DNS that does not answer?)", reloadTimeout)}
	}
}

// errRefused marks a snapshot that compiled but must not replace the
// running one.
var errRefused = errors.New("refused")

// checkSwitch says why pol must not replace old (nil: it may).
func checkSwitch(old, pol *policy.Policy) error {
	t := pol.Table()
	if t.Missing() {
		if old == nil || (old.Table().Missing() && old.Table().Dir() == t.Dir()) {
			return nil // a fresh install: nothing gets worse
		}
		return fmt.Errorf("%w: keys.dir %s does not exist (a typo, or a volume not mounted?); create it or fix keys.dir", errRefused, t.Dir())
	}
	if old != nil && len(t.All()) == 0 {
		if n := activeKeys(old); n > 0 {
			return fmt.Errorf("%w: keys.dir %s has no keys while %d were active (a volume not mounted?); "+
				"restart the daemon to stop signing altogether", errRefused, t.Dir(), n)
		}
	}
	return nil
}

// activeKeys counts the keys pol signs with.
func activeKeys(pol *policy.Policy) int { return pol.ActiveCount() }

// tempErrorKeys counts the keys of pol whose lookup failed temporarily
// (and had no last good answer).
func tempErrorKeys(pol *policy.Policy) int { return pol.CountState(keys.TempError) }

// partialKeys counts the keys of pol whose record is not on every
// nameserver yet (a lagging secondary: worth a quick look again).
func partialKeys(pol *policy.Policy) int { return pol.CountState(keys.Partial) }

// nextBackoff doubles the retry delay, from retryFirst up to limit.
func nextBackoff(cur, limit time.Duration) time.Duration {
	next := retryFirst
	if cur > 0 {
		next = 2 * cur
	}
	return min(next, max(limit, retryFirst))
}

// request asks the reloader for a reload; SIGHUPs that arrive while one is
// waiting are merged into it.
func (d *daemon) request(rereadConfig bool) {
	d.pendingMu.Lock()
	d.pendingReread = d.pendingReread || rereadConfig
	d.pendingMu.Unlock()
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// takePending returns and clears the pending request.
func (d *daemon) takePending() bool {
	d.pendingMu.Lock()
	defer d.pendingMu.Unlock()
	r := d.pendingReread
	d.pendingReread = false
	return r
}

// activationSlack is added to a waiting key's activation time before the
// recheck that activates it, so that the check is not a moment early.
const activationSlack = time.Second

// reloader runs every reload, one at a time, until ctx ends: requests
// (SIGHUP), the periodic recheck (keys.recheck), quick retries while keys
// are in temperror or partial, a recheck when the first waiting key's wait
// ends, and the first DNS checks if they had not finished when the daemon
// started serving (first, nil otherwise; firstGen is the generation of the
// snapshot they are to replace).
func (d *daemon) reloader(ctx context.Context, first <-chan compiled, firstGen int64) {
	recheck := time.NewTimer(d.current.Load().Config().Keys.Recheck.Duration)
	defer recheck.Stop()
	var retry, activate <-chan time.Time
	var backoff time.Duration
	var activateAt time.Time
	for {
		if first == nil {
			cur := d.current.Load()
			n, m := tempErrorKeys(cur), partialKeys(cur)
			if n+m > 0 {
				if retry == nil {
					backoff = nextBackoff(backoff, cur.Config().Keys.Recheck.Duration)
					retry = time.After(backoff)
					if n > 0 {
						d.log.Warn("key records could not be looked up; retrying", "keys", n, "in", backoff.String())
					} else {
						d.log.Info("key records not on every nameserver yet; checking again", "keys", m, "in", backoff.String())
					}
				}
			} else {
				backoff, retry = 0, nil
			}
			// A key waits out the DNS caches after its publication: look
			// again when the first wait ends, not at keys.recheck.
			if at := nextActivation(cur, &d.lastGood); !at.Equal(activateAt) {
				activateAt, activate = at, nil
				if !at.IsZero() {
					activate = time.After(max(time.Until(at), 0) + activationSlack)
					d.log.Info("keys wait before activation", "until", at.UTC().Format(time.RFC3339))
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case c := <-first:
			first = nil
			d.finishFirst(c, firstGen)
		case <-d.wake:
			d.reload(d.takePending())
		case <-recheck.C:
			// Same config, fresh look at the key folder (every file: see
			// watchKeys) and DNS: keys become active once their record
			// appears, with no signal.
			d.verifyNext.Store(true)
			d.reload(false)
		case <-retry:
			retry = nil
			d.reload(false)
		case <-activate:
			// activateAt stays: the same time is never waited for twice.
			activate = nil
			d.reload(false)
		}
		recheck.Reset(d.current.Load().Config().Keys.Recheck.Duration)
	}
}

// finishFirst installs the result of the first DNS checks, unless a reload
// has installed a newer snapshot meanwhile.
func (d *daemon) finishFirst(c compiled, gen int64) {
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	if d.gen.Load() != gen {
		return
	}
	if d.adopt(d.current.Load(), c) {
		d.log.Info("keys checked", "keys", len(c.pol.Table().All()), "active", activeKeys(c.pol))
	}
}

// adopt swaps in the compiled snapshot c in place of old, unless it failed
// or must be refused (logged and counted); it reports whether it did.
// Callers hold reloadMu.
func (d *daemon) adopt(old *policy.Policy, c compiled) bool {
	if c.err == nil {
		c.err = checkSwitch(old, c.pol)
	}
	if c.err != nil {
		d.refused(c.err)
		return false
	}
	d.dns = c.dns
	d.noteReload(nil)
	if c.pol == old {
		d.metrics.reloadKept() // nothing changed: the snapshot stays
		return true
	}
	d.install(old, c.pol)
	d.persist(c.pol)
	return true
}

// reload builds a new snapshot and swaps it in; on any error the old one
// stays. rereadConfig is true for SIGHUP; the periodic recheck keeps the
// config it has and only looks at keys and DNS again.
func (d *daemon) reload(rereadConfig bool) {
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	old := d.current.Load()
	cfg := old.Config()
	if rereadConfig {
		c, _, err := loadConfig(d.configPath)
		if err != nil {
			d.refused(err)
			return
		}
		cfg = c
	}
	restore := capForReload(d.saving.Load())
	c := d.compile(cfg, d.dns, nil, false)
	restore()
	if !d.adopt(old, c) {
		return
	}
	if rereadConfig {
		d.applySettings(cfg)
		d.log.Info("reloaded")
	}
}

// refused logs and counts a reload that keeps the previous snapshot.
func (d *daemon) refused(err error) {
	d.recompile.Store(true) // whatever the failed compile had to notice
	d.noteReload(err)
	d.metrics.reloadFailed()
	d.log.Error("reload failed; keeping the previous config and keys", "error", strings.TrimPrefix(err.Error(), errRefused.Error()+": "))
}

// persist saves the last good key record answers in keys.dir, for a start
// while DNS is down (see keys.LastGood), and the index of the key table,
// for a fast start (see keys.IndexFile). With 100,000 keys the file is
// about 40 MB and takes a second to write: it is written in the
// background, one write at a time, and only when something changed.
// Failing to save is logged, once.
func (d *daemon) persist(pol *policy.Policy) {
	cfg := pol.Config()
	if pol.Table().Missing() {
		return // (without require_published the ledger is empty: Save writes nothing)
	}
	all := pol.Table().All()
	if d.lastGood.Len() > len(all) {
		// Records of keys that left the table (each key has one name).
		names := make(map[string]bool, len(all))
		for _, k := range all {
			names[keys.RecordName(k.Domain, k.Selector)] = true
		}
		d.lastGood.Prune(func(name string) bool { return names[name] })
	}
	if !d.saving.CompareAndSwap(false, true) {
		return // the running save or the next reload's takes this change
	}
	path := keys.PublicationPath(cfg.Keys.Dir)
	go func() {
		defer d.saving.Store(false)
		// A moment later, and then what is current: a burst of reloads
		// is saved once, and the save (seconds of CPU for a provider)
		// does not compete with the reload that asked for it. At exit
		// saveAtExit stops the wait.
		select {
		case <-time.After(saveDelay):
		case <-d.exiting:
		}
		msg := ""
		if err := d.lastGood.Save(path); err != nil {
			msg = err.Error()
		}
		if err := d.saveIndex(d.current.Load().Table()); err != nil && msg == "" {
			msg = err.Error()
		}
		debug.FreeOSMemory() // the save's garbage, tens of MB for a provider
		d.saveMu.Lock()
		defer d.saveMu.Unlock()
		if msg != d.saveErr {
			if msg != "" {
				d.log.Warn("cannot save the key publication state; after a restart while DNS is down nothing is signed until DNS answers", "error", msg)
			} else {
				d.log.Info("key publication state saved", "file", path)
			}
			d.saveErr = msg
		}
	}()
}

// saveDelay is how long after a reload its publication state and index are
// written: long enough not to compete with the reload's last steps, short
// enough that `authmilter keys` and `sign`, which read the publication
// state, soon see what the daemon saw.
const saveDelay = time.Second

// saveAtExit writes the publication state before the daemon exits, after
// waiting (at most 10 s) for a background save: a restart then finds every
// key it had checked and looks none of them up again.
func (d *daemon) saveAtExit() {
	close(d.exiting)
	cur := d.current.Load()
	if cur == nil || cur.Table().Missing() {
		return
	}
	for deadline := time.Now().Add(10 * time.Second); !d.saving.CompareAndSwap(false, true); {
		if time.Now().After(deadline) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	defer d.saving.Store(false)
	if err := d.lastGood.Save(keys.PublicationPath(cur.Config().Keys.Dir)); err != nil {
		d.log.Warn("cannot save the key publication state", "error", err)
	}
	if err := d.saveIndex(cur.Table()); err != nil {
		d.log.Warn("cannot save the key table index", "error", err)
	}
}

// saveIndex writes the index of t (keys.IndexFile) unless it was the last
// one written. Callers hold the saving flag.
func (d *daemon) saveIndex(t *keys.Table) error {
	if t == d.indexed {
		return nil
	}
	if err := t.SaveIndex(keys.IndexPath(t.Dir())); err != nil {
		return err
	}
	d.indexed = t
	return nil
}

// restartSettings are the settings a reload cannot apply: the milter
// sockets stay open as they are (the MTA's connections live on them); the
// status pages keep their address and login files (read once at start).
// Everything else applies at the reload: the snapshot's settings (keys,
// signing, outbound, inbound, dmarc, limits, authserv_id,
// on_internal_error), dns (new resolvers), keys.recheck,
// shutdown_timeout, metrics.listen (the metrics socket moves) and log.
var restartSettings = []struct {
	name  string
	value func(*policy.Config) string
}{
	{"listen", func(c *policy.Config) string { return strings.Join(c.Listen, ", ") }},
	{"socket_mode", func(c *policy.Config) string { return c.SocketMode }},
	{"socket_group", func(c *policy.Config) string { return c.SocketGroup }},
	{"web", func(c *policy.Config) string { return fmt.Sprintf("%+v", c.Web) }},
}

// applySettings applies cfg's daemon settings after a successful SIGHUP
// reload: log level and format, the metrics socket; and warns once about
// each changed setting that needs a restart.
func (d *daemon) applySettings(cfg *policy.Config) {
	d.logs.set(cfg)
	for _, s := range restartSettings {
		want, running := s.value(cfg), s.value(d.started)
		switch {
		case want == running:
			delete(d.warned, s.name)
		case d.warned[s.name] != want:
			d.warned[s.name] = want
			d.log.Warn("setting changed; it takes effect only at restart", "setting", s.name, "running", running, "config", want)
		}
	}
	if want := cfg.Metrics.Listen; want != d.metricsSrv.addr() {
		d.moveMetrics(want)
	}
}

// moveMetrics moves the metrics socket to addr ("" turns it off). The new
// socket is opened before the old one is closed; if that fails because the
// old one holds the port (same port, another host), the old one is closed
// first, and reopened if the new one still cannot be had.
func (d *daemon) moveMetrics(addr string) {
	old := d.metricsSrv
	ms, err := startMetrics(addr, d)
	if err != nil && old != nil {
		old.close()
		if ms, err = startMetrics(addr, d); err != nil {
			if back, berr := startMetrics(old.cfgAddr, d); berr == nil {
				d.metricsSrv = back
			} else {
				d.metricsSrv = nil
				d.log.Error("metrics server stopped", "error", berr)
			}
		}
	}
	if err != nil {
		d.log.Error("setting not applied", "setting", "metrics.listen", "error", err, "serving", d.metricsSrv.addr())
		return
	}
	old.close()
	d.metricsSrv = ms
	d.log.Info("setting applied", "setting", "metrics.listen", "listen", addr)
}

// metricsServer serves /metrics on one address.
type metricsServer struct {
	cfgAddr string // as configured
	hs      *http.Server
}

// startMetrics listens on addr and serves the metrics; "" is off (nil).
func startMetrics(addr string, d *daemon) (*metricsServer, error) {
	if addr == "" {
		return nil, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics listen %s: %w", addr, err)
	}
	ms := &metricsServer{cfgAddr: addr, hs: &http.Server{Handler: d.metrics.handler(), ReadHeaderTimeout: 10 * time.Second}}
	go func() {
		if err := ms.hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			d.log.Error("metrics server stopped", "error", err)
		}
	}()
	return ms, nil
}

// addr is the configured address served ("" when off).
func (m *metricsServer) addr() string {
	if m == nil {
		return ""
	}
	return m.cfgAddr
}

// close stops serving; a scrape in progress is cut.
func (m *metricsServer) close() {
	if m != nil {
		m.hs.Close()
	}
}
