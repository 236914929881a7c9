package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/authmilter/authmilter/keys"
	"github.com/authmilter/authmilter/milter"
	"github.com/authmilter/authmilter/policy"
	"github.com/authmilter/authmilter/policy/resolve"
)

// daemon holds the one piece of mutable global state the design allows: the
// current policy snapshot behind an atomic pointer. Everything else is
// rebuilt into a new snapshot and swapped in.
type daemon struct {
	configPath string
	log        *slog.Logger
	current    atomic.Pointer[policy.Policy]
	metrics    *metrics
	// reloadMu serializes reloads (SIGHUP and the periodic recheck).
	reloadMu sync.Mutex
	// resolver is kept across reloads, with its cache, while [dns] is
	// unchanged.
	resolver    *resolve.Resolver
	resolverCfg string
	// keyLookup answers the key publication checks of a compile: uncached
	// (a key published a minute ago is seen at the next SIGHUP or recheck,
	// not when a cached NXDOMAIN expires), and with the last good answer
	// when DNS fails temporarily (a DNS outage during a recheck must not
	// deactivate keys and leave mail unsigned).
	keyLookup keys.TXTLookup
	lastGood  keys.LastGood
}

// keyCheckResolver is the resolver given to policy.Compile. While the
// snapshot is being compiled, TXT lookups (the publication checks) go
// through the daemon's keyLookup; once compiled, every lookup (inbound
// DKIM, SPF, DMARC) goes to the shared caching resolver.
type keyCheckResolver struct {
	*resolve.Resolver
	compiling atomic.Bool
	keyLookup keys.TXTLookup
}

// LookupTXT implements policy.Resolver.
func (k *keyCheckResolver) LookupTXT(ctx context.Context, name string) ([]string, error) {
	if k.compiling.Load() {
		return k.keyLookup(ctx, name)
	}
	return k.Resolver.LookupTXT(ctx, name)
}

func cmdRun(args []string) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	cfgPath := configFlag(fs)
	if err := fs.Parse(args); err != nil {
		return exitError(2)
	}
	cfg, name, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	d := &daemon{configPath: *cfgPath, log: newLogger(cfg, os.Stderr), metrics: newMetrics()}
	dnsErrorHook = d.metrics.dnsError
	d.lastGood.Stale = func(name string, err error) {
		d.log.Warn("key record lookup failed; using the last good answer", "name", name, "error", err)
	}
	d.log.Info("starting", "version", version, "config", name, "keys", cfg.Keys.Dir)
	pol, err := d.compile(cfg)
	if err != nil {
		return fmt.Errorf("initial config: %w", err)
	}
	d.install(nil, pol)
	if len(pol.Table().All()) == 0 {
		d.log.Warn("no keys in the key table: nothing will be signed; add one with: authmilter keygen -d YOUR.DOMAIN", "keys", cfg.Keys.Dir)
	}

	srv := &milter.Server{Policy: d.current.Load, Logger: d.log, Observer: d.metrics}
	perm, _ := cfg.SocketPerm()
	if err := srv.Listen(cfg.Listen, perm, cfg.SocketGroup); err != nil {
		return err
	}
	for _, a := range srv.Addrs() {
		d.log.Info("listening", "addr", a.Network()+":"+a.String())
	}
	if cfg.Metrics.Listen != "" {
		ln, err := net.Listen("tcp", cfg.Metrics.Listen)
		if err != nil {
			srv.Close()
			return fmt.Errorf("metrics listen %s: %w", cfg.Metrics.Listen, err)
		}
		go func() {
			hs := &http.Server{Handler: d.metrics.handler(), ReadHeaderTimeout: 10 * time.Second}
			if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				d.log.Error("metrics server stopped", "error", err)
			}
		}()
	}

	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve() }()

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	recheck := time.NewTicker(cfg.Keys.Recheck.Duration)
	defer recheck.Stop()
	for {
		select {
		case err := <-serveErr:
			return err
		case <-recheck.C:
			// Same config, fresh look at the key folder and DNS: keys become
			// active once their record appears, with no signal needed.
			d.reload(false)
			recheck.Reset(d.current.Load().Config().Keys.Recheck.Duration)
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				d.log.Info("reload requested", "signal", "SIGHUP")
				d.reload(true)
				recheck.Reset(d.current.Load().Config().Keys.Recheck.Duration)
				continue
			}
			timeout := d.current.Load().Config().ShutdownTimeout.Duration
			d.log.Info("stopping", "signal", sig.String(), "timeout", timeout)
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			err := srv.Shutdown(ctx)
			cancel()
			if err != nil {
				d.log.Warn("stopped with transactions open", "error", err)
			} else {
				d.log.Info("stopped")
			}
			return nil
		}
	}
}

// compile builds a snapshot from cfg, reusing the resolver (and its
// cache) unless the DNS settings changed.
func (d *daemon) compile(cfg *policy.Config) (*policy.Policy, error) {
	key := fmt.Sprint(cfg.DNS.Servers, cfg.DNS.Timeout)
	r, keyLookup := d.resolver, d.keyLookup
	if r == nil || key != d.resolverCfg {
		var err error
		if r, err = newResolver(cfg); err != nil {
			return nil, err
		}
		uncached, err := resolve.New(resolve.Config{Servers: r.Servers(), Timeout: cfg.DNS.Timeout.Duration, CacheSize: -1})
		if err != nil {
			return nil, err
		}
		keyLookup = d.lastGood.Wrap(uncached.LookupTXT)
	}
	pol, err := d.compileWith(cfg, &keyCheckResolver{Resolver: r, keyLookup: keyLookup})
	if err == nil {
		d.resolver, d.resolverCfg, d.keyLookup = r, key, keyLookup
	}
	return pol, err
}

func (d *daemon) compileWith(cfg *policy.Config, r *keyCheckResolver) (*policy.Policy, error) {
	ctx, cancel := context.WithTimeout(context.Background(), compileTimeout)
	defer cancel()
	r.compiling.Store(true)
	defer r.compiling.Store(false)
	return policy.Compile(ctx, cfg, r)
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
			d.metrics.reloadFailed()
			d.log.Error("reload failed; keeping the previous config and keys", "error", err)
			return
		}
		cfg = c
	}
	pol, err := d.compile(cfg)
	if err != nil {
		d.metrics.reloadFailed()
		d.log.Error("reload failed; keeping the previous config and keys", "error", err)
		return
	}
	d.install(old, pol)
	if rereadConfig {
		d.log.Info("reloaded")
	}
}

// install swaps pol in and logs what changed about keys.
func (d *daemon) install(old, pol *policy.Policy) {
	d.current.Store(pol)
	d.metrics.reloaded(pol)
	for _, msg := range policy.KeyChanges(old, pol) {
		d.log.Info(msg)
	}
	// Keys that stop being used with nothing to replace them.
	if old != nil {
		for _, dom := range old.Table().Domains() {
			for _, o := range old.ActiveKeys(dom) {
				replaced := false
				for _, k := range pol.ActiveKeys(dom) {
					replaced = replaced || k.Algorithm == o.Algorithm
				}
				if !replaced {
					d.log.Warn(fmt.Sprintf("key deactivated d=%s s=%s a=%s; nothing replaces it", dom, o.Selector, o.Algorithm))
				}
			}
		}
	}
	// Unusable keys, each time what is wrong changes (not at every recheck).
	before := map[string]keys.Publication{}
	if old != nil {
		for _, k := range old.Table().All() {
			before[k.ID()] = old.Publication(k)
		}
	}
	for _, k := range pol.Table().All() {
		pub := pol.Publication(k)
		switch pub.State {
		case keys.Published, keys.Unchecked:
		default:
			if prev, ok := before[k.ID()]; !ok || prev != pub {
				d.log.Warn("key not usable", "key", k.ID(), "state", string(pub.State), "detail", pub.Detail)
			}
		}
	}
}
