package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/authmilter/authmilter/keys"
	"github.com/authmilter/authmilter/milter"
	"github.com/authmilter/authmilter/policy"
)

// daemon holds the one piece of mutable global state the design allows: the
// current policy snapshot behind an atomic pointer. Everything else is
// rebuilt into a new snapshot and swapped in (see reload.go for when a new
// snapshot is refused).
type daemon struct {
	configPath string
	log        *slog.Logger
	logs       *logSwitch
	current    atomic.Pointer[policy.Policy]
	// gen counts the snapshots installed.
	gen atomic.Int64
	// recompile makes the next compile build a new snapshot even when
	// config and key table are unchanged: the reverifier found a record
	// gone.
	recompile atomic.Bool
	metrics   *metrics
	// started is the config the daemon started with: the milter sockets
	// keep its listen, socket_mode and socket_group until a restart.
	started *policy.Config

	// wake and pendingReread carry reload requests to the reloader.
	wake          chan struct{}
	pendingMu     sync.Mutex
	pendingReread bool

	// reloadMu serializes the work of reloads; the fields below are
	// guarded by it.
	reloadMu   sync.Mutex
	dns        dnsState
	warned     map[string]string // restart settings warned about, with the value
	metricsSrv *metricsServer

	// keyDNS is the built-in key DNS server ([keydns]), nil when off; set
	// once at start.
	keyDNS *keyDNS

	lastGood keys.LastGood
	// saving is set while the publication state is being written;
	// saveErr (guarded by saveMu) is the last error writing it.
	saving  atomic.Bool
	saveMu  sync.Mutex
	saveErr string
	// indexed is the table whose index was written last (guarded by the
	// saving flag).
	indexed *keys.Table
	// exiting is closed when the daemon stops (see saveAtExit).
	exiting chan struct{}
	// reports records DMARC results and sends the daily reports
	// (reports_daemon.go); set once at start.
	reports *reportsService

	// watch follows the key table's changes (see watchKeys); verifyNext
	// makes the next reload look at every key file anyway (the periodic
	// recheck, for what the watcher cannot see).
	watch       atomic.Pointer[keys.Watcher]
	verifyNext  atomic.Bool
	watchMu     sync.Mutex
	watching    bool   // an Establish runs (guarded by watchMu)
	watchFailed string // the folder that could not be watched (guarded by watchMu)

	// checks keeps what the DNS checks saw, for the status pages; nil
	// when [web] is off. lastReload is how the last reload went.
	checks     *keyChecks
	lastReload atomic.Pointer[reloadStatus]
}

func cmdRun(args []string) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	cfgPath := configFlag(fs)
	if err := fs.Parse(args); err != nil {
		return exitError(2)
	}
	// Signals first: a SIGHUP while we start must not kill us (its default
	// action), and SIGTERM must stop a start that waits on DNS.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)

	cfg, name, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	logs := newLogSwitch(os.Stderr, cfg)
	d := &daemon{configPath: *cfgPath, logs: logs, log: logs.logger(), metrics: newMetrics(), started: cfg,
		wake: make(chan struct{}, 1), warned: map[string]string{}, exiting: make(chan struct{})}
	d.lastGood.Stale = func(name string, err error) {
		if !keys.IsNotLookedUp(err) {
			d.log.Warn("key record lookup failed; using the last good answer", "name", name, "error", err)
		}
	}
	d.log.Info("starting", "version", version, "config", name, "keys", cfg.Keys.Dir)

	d.reports = startReports(cfg, d.log, d.metrics.reg)
	defer d.reports.stop() // after the milter's shutdown: its messages are queued
	// Listen at once; the first DNS checks run meanwhile.
	srv := &milter.Server{Policy: d.current.Load, Logger: d.log, Observer: d.reports.observer(d.metrics)}
	perm, _ := cfg.SocketPerm()
	if err := srv.Listen(cfg.Listen, perm, cfg.SocketGroup); err != nil {
		return err
	}
	if d.metricsSrv, err = startMetrics(cfg.Metrics.Listen, d); err != nil {
		srv.Close()
		return err
	}
	if d.keyDNS, err = startKeyDNS(cfg, d.log, d.metrics.reg); err != nil {
		srv.Close()
		return err
	}
	defer d.keyDNS.stop()
	if cfg.Web.Enabled() {
		d.checks = newKeyChecks()
	}
	webCtx, stopWeb := context.WithCancel(context.Background())
	defer stopWeb()
	webSrv, err := startWeb(webCtx, cfg, d, time.Now())
	if err != nil {
		srv.Close()
		return err
	}
	if webSrv != nil {
		defer webSrv.Close()
	}
	// Said once every listener is bound, /metrics and the key DNS server
	// included: scripts and tests wait for this line, then use them all.
	for _, a := range srv.Addrs() {
		d.log.Info("listening", "addr", a.Network()+":"+a.String())
	}

	first, firstGen, err := d.start(cfg, sigs)
	if err != nil {
		srv.Close()
		return err
	}
	if first == nil && d.current.Load() == nil {
		srv.Close() // stopped while starting
		d.log.Info("stopped")
		return nil
	}
	pol := d.current.Load()
	if pol.Table().Missing() {
		d.log.Warn("keys.dir does not exist: nothing will be signed; add a key with: authmilter keygen -d YOUR.DOMAIN", "keys", cfg.Keys.Dir)
	} else if len(pol.Table().All()) == 0 {
		d.log.Warn("no keys in the key table: nothing will be signed; add one with: authmilter keygen -d YOUR.DOMAIN", "keys", cfg.Keys.Dir)
	}

	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve() }()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go d.reloader(ctx, first, firstGen)
	go d.reverifyLoop(ctx)
	go d.idleMemory(ctx)

	for {
		select {
		case err := <-serveErr:
			return err
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				d.log.Info("reload requested", "signal", "SIGHUP")
				d.request(true)
				continue
			}
			// A reload in progress is abandoned: it runs in its own
			// goroutine, and the snapshot in use is complete.
			timeout := d.current.Load().Config().ShutdownTimeout.Duration
			d.log.Info("stopping", "signal", sig.String(), "timeout", timeout)
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			err := srv.Shutdown(ctx)
			cancel()
			d.saveAtExit()
			if err != nil {
				d.log.Warn("stopped with transactions open", "error", err)
			} else {
				d.log.Info("stopped")
			}
			return nil
		}
	}
}

// start installs the first snapshot. It reads the key table, then checks
// the keys against DNS; if that takes longer than startWait, it installs
// the table checked against the publication state saved at the last run
// (keys.PublicationFile) and returns the channel on which the DNS-checked
// snapshot will come, with the generation it is to replace. A SIGHUP
// meanwhile is kept for later; SIGTERM ends the start (nothing installed,
// no error).
func (d *daemon) start(cfg *policy.Config, sigs <-chan os.Signal) (<-chan compiled, int64, error) {
	type loaded struct {
		t   *keys.Table
		err error
	}
	tc := make(chan loaded, 1)
	go func() {
		// The saved publication state (tens of MB for a provider) is read
		// while the key table is.
		saved := make(chan struct{})
		go func() {
			defer close(saved)
			if cfg.Keys.RequirePublished {
				if err := d.lastGood.Load(keys.PublicationPath(cfg.Keys.Dir)); err != nil {
					d.log.Warn("saved key publication state not used", "error", err)
				}
			}
		}()
		// The index of the table last loaded makes this start a reload:
		// unchanged key files are not read (see keys.IndexFile).
		idx, err := keys.LoadIndex(keys.IndexPath(cfg.Keys.Dir), cfg.Keys.Dir, cfg.Keys.KeyCache)
		switch {
		case err != nil:
			d.log.Warn("key table index not used; reading every key file", "error", err)
		case idx != nil:
			d.log.Info("key table index used; reading only the key files that changed", "keys", len(idx.All()))
		}
		t, err := keys.Load(cfg.Keys.Dir, keys.LoadOptions{Prev: idx, CacheSize: cfg.Keys.KeyCache})
		<-saved
		tc <- loaded{t, err}
	}()
	var table *keys.Table
	var first chan compiled
	var wait <-chan time.Time
	bound := time.NewTimer(reloadTimeout)
	defer bound.Stop()
	boundC := bound.C
	for {
		select {
		case l := <-tc:
			if l.err != nil {
				return nil, 0, fmt.Errorf("initial config: %w", l.err)
			}
			table, boundC = l.t, nil
			first = make(chan compiled, 1)
			go func() { first <- d.compile(cfg, dnsState{}, table, false) }()
			wait = time.After(startWait)
		case <-boundC:
			return nil, 0, fmt.Errorf("initial config: reading the key table %s did not finish within %s", cfg.Keys.Dir, reloadTimeout)
		case c := <-first:
			if c.err != nil {
				return nil, 0, fmt.Errorf("initial config: %w", c.err)
			}
			d.adopt(nil, c) // nothing to refuse at start
			return nil, 0, nil
		case <-wait:
			c := d.compile(cfg, dnsState{}, table, true)
			if c.err != nil {
				return nil, 0, fmt.Errorf("initial config: %w", c.err)
			}
			d.dns = c.dns
			d.install(nil, c.pol)
			d.log.Warn("DNS checks not finished; serving with the last known publication state of the keys meanwhile",
				"keys", len(c.pol.Table().All()), "active", activeKeys(c.pol), "saved", d.lastGood.Len())
			return first, d.gen.Load(), nil
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				d.log.Info("reload requested", "signal", "SIGHUP")
				d.request(true)
				continue
			}
			d.log.Info("stopping", "signal", sig.String())
			return nil, 0, nil
		}
	}
}

// install swaps pol in and logs what changed about keys.
func (d *daemon) install(old, pol *policy.Policy) {
	d.current.Store(pol)
	d.gen.Add(1)
	d.metrics.reloaded(pol)
	d.keyDNS.update(pol)
	d.reports.configChanged(pol.Config())
	d.watchKeys(pol.Table())
	d.checks.prune(pol.Table())
	go tuneMemory()
	// Per-key lines are capped per install: a provider's first start
	// activates 100,000 keys, and a DNS outage could make as many unusable.
	activated := capLog(d.log, slog.LevelInfo, "keys activated")
	for _, msg := range policy.KeyChanges(old, pol) {
		activated.msg(msg)
	}
	activated.done()
	// Keys that stop being used with nothing to replace them.
	deactivated := capLog(d.log, slog.LevelWarn, "keys deactivated")
	for _, msg := range policy.KeyDeactivations(old, pol) {
		deactivated.msg(msg)
	}
	deactivated.done()
	// Files in the key folders that are not keys: at start, and when the
	// list changes (an OpenDKIM mail.private left where a key was meant).
	var was []string
	if old != nil {
		was = old.Table().Ignored()
	}
	if now := pol.Table().Ignored(); old == nil || !slices.Equal(was, now) {
		ignored := capLog(d.log, slog.LevelWarn, "key folder entries ignored")
		for _, entry := range now {
			ignored.msg("key folder entry ignored", "detail", entry)
		}
		ignored.done()
	}
	// Unusable keys, each time what is wrong changes (not at every recheck).
	// Only those are looked at: at 100,000 keys, a map of every key of the
	// old snapshot would cost more than the rest of the reload.
	if pol.CountState(keys.Published)+pol.CountState(keys.Unchecked) == len(pol.Table().All()) {
		return
	}
	waiting := capLog(d.log, slog.LevelInfo, "keys published and waiting")
	unusable := capLog(d.log, slog.LevelWarn, "keys not usable")
	for _, k := range pol.Table().All() {
		pub := pol.Publication(k)
		switch {
		case pub.State == keys.Published, pub.State == keys.Unchecked:
		case strings.Contains(pub.Detail, keys.ErrNotLookedUp.Error()):
			// Serving before the first DNS checks: said once, by start.
		case pub.State == keys.Waiting:
			if prev, ok := previousPublication(old, k); !ok || prev != pub {
				waiting.msg("key published; waiting before signing with it", "key", k.ID(), "detail", pub.Detail)
			}
		default:
			if prev, ok := previousPublication(old, k); !ok || prev != pub {
				unusable.msg("key not usable", "key", k.ID(), "state", string(pub.State), "detail", pub.Detail)
			}
		}
	}
	waiting.done()
	unusable.done()
}

// logCapMost is how many lines of one kind an install logs one by one.
const logCapMost = 20

// cappedLog logs its first logCapMost lines and then, at done, how many
// more there were (`authmilter keys` lists them all).
type cappedLog struct {
	log     *slog.Logger
	level   slog.Level
	summary string
	n       int
}

// capLog starts a cappedLog whose summary line is summary.
func capLog(log *slog.Logger, level slog.Level, summary string) *cappedLog {
	return &cappedLog{log: log, level: level, summary: summary}
}

// msg logs one line, unless logCapMost were logged already.
func (c *cappedLog) msg(msg string, args ...any) {
	if c.n++; c.n <= logCapMost {
		c.log.Log(context.Background(), c.level, msg, args...)
	}
}

// done logs how many lines were left out.
func (c *cappedLog) done() {
	if c.n > logCapMost {
		c.log.Log(context.Background(), c.level, c.summary, "total", c.n, "not_logged", c.n-logCapMost, "see", "authmilter keys")
	}
}

// previousPublication is the publication old gave the key with k's domain
// and selector.
func previousPublication(old *policy.Policy, k *keys.Key) (keys.Publication, bool) {
	if old == nil {
		return keys.Publication{}, false
	}
	for _, o := range old.Table().Keys(k.Domain) {
		if o.Selector == k.Selector {
			return old.Publication(o), true
		}
	}
	return keys.Publication{}, false
}
