// Command scale measures how authmilter copes with large key tables: it
// builds tables of 1,000, 10,000 and 100,000 domains (RSA-2048, and
// Ed25519 on every fourth domain), serves their DKIM records from its own
// DNS server, runs the daemon on each and reports the time to serve and to
// activate every key, memory at rest and during a reload, the cost of a
// reload with nothing changed and with one key added, the DNS queries the
// daemon makes, and signing throughput over many domains against one.
//
// Usage (from the repository, after make build):
//
//	go run ./bench/scale -domains 1000,10000,100000 -binary bin/authmilter [-out FILE]
//
// Every phase is bounded by -timeout; every process it starts is stopped
// by its PID at the end, also on ^C. See bench/SCALE.md for what each
// figure means and how it is measured.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/authmilter/authmilter/internal/flock"
	"github.com/authmilter/authmilter/keys"
)

const usage = `usage: go run ./bench/scale [-domains 1000,10000,100000] [-binary bin/authmilter] [-out FILE] [flags]

Builds key tables of each size (cached under -cache), serves their records
from a DNS server of its own, runs the daemon on each and prints a Markdown
table per size, then the raw JSON.

Flags:
`

// options are the command line.
type options struct {
	domains    []int
	binary     string
	out        string
	cache      string
	milterload string
	pool       int
	conc       int
	reps       int
	spread     int
	dur        time.Duration
	warmup     time.Duration
	idle       time.Duration
	settle     time.Duration
	timeout    time.Duration
	quietWait  time.Duration
	cycle      time.Duration
	logs       string
}

func parseFlags(args []string) (*options, error) {
	fs := flag.NewFlagSet("scale", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	o := &options{}
	domains := fs.String("domains", "1000,10000,100000", "table sizes, in domains, comma-separated")
	fs.StringVar(&o.binary, "binary", "bin/authmilter", "the authmilter binary to measure")
	fs.StringVar(&o.out, "out", "", "also write the report (Markdown and the raw JSON) to this file")
	fs.StringVar(&o.cache, "cache", "/var/tmp/authmilter-scale", "folder of the key pool and the tables, kept between runs")
	fs.StringVar(&o.logs, "logs", "", "keep each daemon's log (stderr) in this folder")
	fs.StringVar(&o.milterload, "milterload", "", "milterload binary (default: built from ./cmd/milterload)")
	fs.IntVar(&o.pool, "pool", 64, "distinct keys of each algorithm the tables are made of")
	fs.IntVar(&o.conc, "c", 8, "concurrent milter connections of the throughput runs")
	fs.IntVar(&o.reps, "reps", 2, "runs of each throughput measure; the best is kept")
	fs.IntVar(&o.spread, "spread", 1000, "the smaller set of From domains of the spread throughput run (the larger is every RSA-only domain)")
	fs.DurationVar(&o.dur, "d", 10*time.Second, "duration of each throughput run, warm-up included")
	fs.DurationVar(&o.warmup, "warmup", time.Second, "warm-up of each throughput run (not counted)")
	fs.DurationVar(&o.idle, "idle", 60*time.Second, "window over which the DNS queries at rest are counted")
	fs.DurationVar(&o.settle, "settle", 5*time.Second, "wait after all keys are active before RSS at rest is read")
	fs.DurationVar(&o.quietWait, "quiet-wait", 30*time.Second, "before each throughput run, wait at most this long for the machine to be quiet (others' work below a quarter of a CPU)")
	fs.DurationVar(&o.cycle, "reverify-cycle", 30*time.Second, "keys.reverify of the phase that measures the queries of one re-verification cycle (0: skip it)")
	fs.DurationVar(&o.timeout, "timeout", 15*time.Minute, "bound of each phase (a start, a reload, a wait for a key)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	for _, f := range strings.Split(*domains, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 999999 {
			return nil, fmt.Errorf("-domains: %q is not a size from 1 to 999999", f)
		}
		o.domains = append(o.domains, n)
	}
	switch {
	case o.pool < 2:
		return nil, errors.New("-pool must be at least 2 (the added key must differ from the domain's own)")
	case o.conc < 1 || o.reps < 1 || o.spread < 1:
		return nil, errors.New("-c, -reps and -spread must be at least 1")
	case o.dur <= 0 || o.warmup < 0 || o.warmup >= o.dur:
		return nil, errors.New("-d must be positive and longer than -warmup")
	case o.idle <= 0 || o.settle < 0 || o.timeout <= 0 || o.quietWait < 0:
		return nil, errors.New("-idle and -timeout must be positive, -settle and -quiet-wait not negative")
	case o.cycle != 0 && o.cycle < 10*time.Second:
		return nil, errors.New("-reverify-cycle must be 0 (skip) or at least 10s, keys.reverify's least value")
	}
	return o, nil
}

func main() {
	o, err := parseFlags(os.Args[1:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "scale:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	b := &bench{opt: o, ctx: ctx}
	rep, err := b.run()
	b.cleanup()
	if rep != nil && len(rep.Sizes) > 0 {
		if werr := b.write(rep); werr != nil && err == nil {
			err = werr
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "scale:", err)
		os.Exit(1)
	}
}

// bench is one run of the benchmark.
type bench struct {
	opt        *options
	ctx        context.Context
	work       string // temporary folder: configs, domain lists
	pool       *pool
	milterload string
	binary     string
	// cleanups run at the end, last first: they stop what was started.
	cleanups []func()
	// started counts the daemons started, to name their logs.
	started int
	// ref is the daemon with the one-domain table that the throughput
	// figures are compared with; started on first use.
	ref *refDaemon
}

// refDaemon is the reference daemon and its DNS server.
type refDaemon struct {
	d   *daemon
	srv *keyServer
}

// deferCleanup adds a cleanup.
func (b *bench) deferCleanup(f func()) { b.cleanups = append(b.cleanups, f) }

// cleanup runs the cleanups, last first.
func (b *bench) cleanup() {
	for i := len(b.cleanups) - 1; i >= 0; i-- {
		b.cleanups[i]()
	}
	b.cleanups = nil
}

// logf prints progress to stderr.
func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s scale: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

func (b *bench) run() (*report, error) {
	rep := &report{Started: time.Now().UTC(), Machine: machine(), Settings: settings{
		Concurrency: b.opt.conc, Reps: b.opt.reps, RunSeconds: b.opt.dur.Seconds(), WarmupSeconds: b.opt.warmup.Seconds(),
		IdleSeconds: b.opt.idle.Seconds(), SettleSeconds: b.opt.settle.Seconds(), Pool: b.opt.pool, QuietWait: b.opt.quietWait.Seconds(),
	}}
	defer func() { rep.Seconds = time.Since(rep.Started).Seconds(); rep.Machine.LoadEnd = loadAvg() }()
	var err error
	if b.binary, err = filepath.Abs(b.opt.binary); err != nil {
		return nil, err
	}
	if fi, err := os.Stat(b.binary); err != nil || fi.IsDir() {
		return nil, fmt.Errorf("-binary %s: not a file (run make build first)", b.opt.binary)
	}
	rep.Binary = b.opt.binary
	if out, err := exec.Command(b.binary, "version").Output(); err == nil {
		rep.Version = strings.TrimSpace(string(out))
	}
	if b.work, err = os.MkdirTemp("", "authmilter-scale-run-"); err != nil {
		return nil, err
	}
	b.deferCleanup(func() { os.RemoveAll(b.work) })
	if b.milterload = b.opt.milterload; b.milterload == "" {
		if b.milterload, err = buildMilterload(b.ctx, b.work); err != nil {
			return nil, err
		}
	}
	if err := mkdirPrivate(b.opt.cache); err != nil {
		return nil, fmt.Errorf("-cache: %w", err)
	}
	if b.opt.logs != "" {
		if err := os.MkdirAll(b.opt.logs, 0o755); err != nil {
			return nil, fmt.Errorf("-logs: %w", err)
		}
	}
	unlock, err := lockCache(b.ctx, b.opt.cache, b.opt.timeout)
	if err != nil {
		return nil, err
	}
	b.deferCleanup(unlock)
	logf("key pool: %d RSA-2048 and %d Ed25519 keys in %s", b.opt.pool, b.opt.pool, b.opt.cache)
	if b.pool, err = loadPool(filepath.Join(b.opt.cache, fmt.Sprintf("pool-%d", b.opt.pool)), b.opt.pool); err != nil {
		return nil, err
	}
	for _, n := range b.opt.domains {
		res, err := b.size(n)
		if res != nil {
			rep.Sizes = append(rep.Sizes, res)
		}
		if err != nil {
			return rep, fmt.Errorf("%d domains: %w", n, err)
		}
	}
	return rep, nil
}

// lockCache takes the cache folder for this run, waiting at most timeout
// for another run to finish: two runs would delete each other's added key
// and publication state, and disturb each other's timings anyway.
func lockCache(ctx context.Context, dir string, timeout time.Duration) (func(), error) {
	path := filepath.Join(dir, ".scale.lock")
	f, err := flock.Wait(ctx, path, 0o600, timeout, time.Second, func() {
		holder, _ := os.ReadFile(path)
		logf("another bench/scale run (PID %s) uses %s; waiting for it to finish", strings.TrimSpace(string(holder)), dir)
	})
	if errors.Is(err, flock.ErrTimeout) {
		return nil, fmt.Errorf("another bench/scale run still uses %s after %s", dir, timeout)
	}
	if err != nil {
		return nil, err
	}
	f.Truncate(0)
	f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return func() { f.Close() }, nil
}

// buildMilterload builds cmd/milterload of the module we run in.
func buildMilterload(ctx context.Context, dir string) (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, "milterload")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./cmd/milterload")
	cmd.Dir = root
	if msg, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/milterload (or give -milterload): %w\n%s", err, msg)
	}
	return out, nil
}

// moduleRoot finds the authmilter module from the working folder up.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if data, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && strings.Contains(string(data), "module github.com/authmilter/authmilter\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("not inside the authmilter repository: run from it, or give -milterload")
		}
		dir = parent
	}
}

// addedSelector is the selector of the key phase 5 adds; addedDomain is
// RSA-only, so the new key replaces its RSA key. Probes at start are sent
// From addedDomain too.
const addedSelector = "benchadd"

var addedDomain = domainName(1)

// size runs every phase on the n-domain table. The result holds what was
// measured even when a phase fails.
func (b *bench) size(n int) (*sizeResult, error) {
	res := &sizeResult{Domains: n, Keys: keyCount(n)}
	dir := filepath.Join(b.opt.cache, strconv.Itoa(n))
	logf("%d domains: key table %s", n, dir)
	t0 := time.Now()
	reused, err := buildTable(dir, n, b.pool)
	if err != nil {
		return nil, err
	}
	res.TableReused, res.TableSeconds = reused, time.Since(t0).Seconds()
	// A cold start: no saved publication state, no key left by an
	// interrupted run.
	added := filepath.Join(dir, addedDomain, addedSelector+".pem")
	clean := func() {
		os.Remove(filepath.Join(dir, ".authmilter-publication.json"))
		os.Remove(added)
	}
	clean()
	defer clean()

	srv := newKeyServer("example.", b.pool.records(n))
	if err := srv.start(); err != nil {
		return nil, err
	}
	defer srv.stop()
	cfg, err := b.config(dir, srv.addr, "1h")
	if err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(b.work, fmt.Sprintf("scale-%d.toml", n))

	logf("%d domains: start (%d keys)", n, res.Keys)
	d, st, err := b.startMeasured(cfgPath, cfg, srv, res.Keys)
	if d != nil {
		defer d.stop()
	}
	if err != nil {
		return res, fmt.Errorf("start: %w", err)
	}
	res.Start = st

	if err := sleepCtx(b.ctx, b.opt.settle); err != nil {
		return res, err
	}
	if res.RestRSSMiB, err = rssMiB(d.pid(), "VmRSS"); err != nil {
		return res, err
	}
	if v, err := d.metric("go_memstats_heap_inuse_bytes"); err == nil {
		res.RestHeapMiB = v / (1 << 20)
	}
	logf("%d domains: RSS at rest %.1f MiB; reload with nothing changed", n, res.RestRSSMiB)

	if res.Reload, err = b.reloadUnchanged(d, srv); err != nil {
		return res, fmt.Errorf("reload: %w", err)
	}
	logf("%d domains: reload took %.2f s; adding a key", n, res.Reload.Seconds)
	if res.AddKey, err = b.addKey(d, srv, dir); err != nil {
		return res, fmt.Errorf("added key: %w", err)
	}
	logf("%d domains: the added key signed after %.2f s; DNS queries at rest over %s", n, res.AddKey.SignsSeconds, b.opt.idle)

	q0 := srv.Queries()
	if err := sleepCtx(b.ctx, b.opt.idle); err != nil {
		return res, err
	}
	res.Idle.WindowSeconds = b.opt.idle.Seconds()
	res.Idle.Queries = srv.Queries() - q0
	res.Idle.PerHourIdle = float64(res.Idle.Queries) * 3600 / b.opt.idle.Seconds()
	res.Idle.PerHourDefault = 6*float64(res.Reload.Queries) + res.Idle.PerHourIdle

	if b.opt.cycle > 0 {
		if res.Reverify, err = b.reverifyCycle(d, srv, cfg, cfgPath); err != nil {
			return res, fmt.Errorf("reverify cycle: %w", err)
		}
		if res.Reverify != nil {
			res.Idle.PerHourDefault += res.Reverify.PerHourDefault
		}
	}

	logf("%d domains: signing throughput", n)
	if res.Throughput, err = b.throughput(d, n); err != nil {
		return res, fmt.Errorf("throughput: %w", err)
	}

	logf("%d domains: restart with the saved publication state", n)
	if err := d.stop(); err != nil {
		return res, err
	}
	saved := int64(-1)
	if fi, err := os.Stat(filepath.Join(dir, ".authmilter-publication.json")); err == nil {
		saved = fi.Size()
	}
	d2, st2, err := b.startMeasured(cfgPath, cfg, srv, res.Keys)
	st2.SavedStateBytes = &saved
	if d2 != nil {
		defer d2.stop()
	}
	if err != nil {
		return res, fmt.Errorf("restart: %w", err)
	}
	res.Restart = &st2
	return res, nil
}

// defaultReverify is keys.reverify's default, which the measured cycle
// is scaled to.
const defaultReverify = 24 * time.Hour

// reverifyCycle is phase 6b, for binaries that re-verify published keys
// on a cycle (keys.reverify; they export
// authmilter_key_reverifications_total): the daemon is reloaded with
// keys.reverify = -reverify-cycle and no query cap, left for two cycles
// (every key then looked up at its own moment of the cycle, once a
// cycle), and the queries of the next cycle are counted; then the config
// is put back. nil when the binary has no such cycle.
func (b *bench) reverifyCycle(d *daemon, srv *keyServer, cfg daemonConfig, cfgPath string) (*reverifyResult, error) {
	if _, err := metricValue(b.ctx, d.metricsAddr, "authmilter_key_reverifications_total"); err != nil {
		logf("  no authmilter_key_reverifications_total: this binary has no re-verification cycle")
		return nil, nil
	}
	short := cfg
	short.keysExtra = fmt.Sprintf("reverify = %q\ndns_qps = 1000000\n", b.opt.cycle)
	reload := func(c daemonConfig) error {
		if err := os.WriteFile(cfgPath, []byte(c.toml()), 0o600); err != nil {
			return err
		}
		mark := d.logs.mark()
		d.cmd.Process.Signal(syscall.SIGHUP)
		_, err := b.waitReloaded(d, mark)
		return err
	}
	logf("  keys.reverify = %s: two cycles to settle, one measured", b.opt.cycle)
	if err := reload(short); err != nil {
		return nil, err
	}
	// Put the config back whatever happens: the throughput runs must not
	// share the CPUs with a fast cycle.
	restored := false
	defer func() {
		if !restored {
			reload(cfg)
		}
	}()
	if err := sleepCtx(b.ctx, 2*b.opt.cycle); err != nil {
		return nil, err
	}
	r := &reverifyResult{CycleSeconds: b.opt.cycle.Seconds()}
	q0 := srv.Queries()
	c0, err := metricValue(b.ctx, d.metricsAddr, "authmilter_key_reverifications_total")
	if err != nil {
		return nil, err
	}
	if err := sleepCtx(b.ctx, b.opt.cycle); err != nil {
		return nil, err
	}
	r.Queries = srv.Queries() - q0
	c1, err := metricValue(b.ctx, d.metricsAddr, "authmilter_key_reverifications_total")
	if err != nil {
		return nil, err
	}
	r.Reverified = int64(c1 - c0)
	r.PerHourDefault = float64(r.Queries) * 3600 / defaultReverify.Seconds()
	restored = true
	if err := reload(cfg); err != nil {
		return nil, fmt.Errorf("putting the config back: %w", err)
	}
	return r, nil
}

// config makes the daemon config of a table, with free ports.
func (b *bench) config(dir, dnsAddr, recheck string) (daemonConfig, error) {
	milterAddr, err := freeAddr()
	if err != nil {
		return daemonConfig{}, err
	}
	metricsAddr, err := freeAddr()
	if err != nil {
		return daemonConfig{}, err
	}
	return daemonConfig{keysDir: dir, dnsServer: dnsAddr, milterAddr: milterAddr, metricsAddr: metricsAddr, recheck: recheck}, nil
}

// startMeasured starts the daemon and measures phases 1 and 2: until the
// "listening" log line, the first signed message and every key active.
func (b *bench) startMeasured(cfgPath string, cfg daemonConfig, srv *keyServer, nkeys int) (*daemon, startResult, error) {
	var st startResult
	q0 := srv.Queries()
	logPath := ""
	if b.opt.logs != "" {
		b.started++
		logPath = filepath.Join(b.opt.logs, fmt.Sprintf("authmilter-%02d-%s.log", b.started, strings.TrimSuffix(filepath.Base(cfgPath), ".toml")))
	}
	d, err := startDaemon(b.binary, cfgPath, cfg, logPath)
	if err != nil {
		return nil, st, err
	}
	// All keys active is watched from the first moment, while probes look
	// for the first signed message.
	type active struct {
		at      time.Time
		queries int64
		err     error
	}
	activeC := make(chan active, 1)
	ctx, cancel := context.WithTimeout(b.ctx, b.opt.timeout)
	defer cancel()
	go func() {
		for {
			v, err := metricValue(ctx, cfg.metricsAddr, "authmilter_active_keys")
			if err == nil && int(v) == nkeys {
				activeC <- active{at: time.Now(), queries: srv.Queries()}
				return
			}
			select {
			case <-ctx.Done():
				activeC <- active{err: fmt.Errorf("authmilter_active_keys did not reach %d within %s (last %v, %v)", nkeys, b.opt.timeout, v, err)}
				return
			case <-d.exited:
				activeC <- active{err: errors.New("authmilter exited")}
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	e, _, err := d.logs.waitFor(ctx, d, 0, `"listening"`, func(m string) bool { return m == "listening" }, b.opt.timeout)
	if err != nil {
		return d, st, err
	}
	st.ListeningSeconds = e.at.Sub(d.started).Seconds()
	at, err := waitSigned(ctx, d, addedDomain, "")
	if err != nil {
		return d, st, err
	}
	st.ServingSeconds = at.Sub(d.started).Seconds()
	a := <-activeC
	if a.err != nil {
		return d, st, d.failure("%v", a.err)
	}
	st.AllActiveSeconds = a.at.Sub(d.started).Seconds()
	st.Queries = a.queries - q0
	if st.PeakRSSMiB, err = rssMiB(d.pid(), "VmHWM"); err != nil {
		return d, st, err
	}
	st.ActivatedLogLines = d.logs.count(0, func(m string) bool { return strings.HasPrefix(m, "key activated") })
	return d, st, nil
}

// waitSigned sends probe messages From domain until one comes back signed
// (with selector, if given), and returns when that reply came.
func waitSigned(ctx context.Context, d *daemon, domain, selector string) (time.Time, error) {
	var last error
	for {
		pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		sigs, err := probe(pctx, d.milterAddr, domain)
		cancel()
		at := time.Now()
		if err == nil {
			last = fmt.Errorf("signatures %v", sigs)
			for _, s := range sigs {
				if s.domain == domain && (selector == "" || s.selector == selector) {
					return at, nil
				}
			}
		} else {
			last = err
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return time.Time{}, d.failure("no message From %s signed (s=%s) in time; last probe: %v", domain, selector, last)
			}
			return time.Time{}, ctx.Err()
		case <-d.exited:
			return time.Time{}, d.failure("authmilter exited while probes waited for a signature")
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// reloadUnchanged is phase 4: SIGHUP with nothing changed.
func (b *bench) reloadUnchanged(d *daemon, srv *keyServer) (reloadResult, error) {
	var r reloadResult
	if err := resetPeak(d.pid()); err != nil {
		return r, fmt.Errorf("reset VmHWM: %w", err)
	}
	mark, q0 := d.logs.mark(), srv.Queries()
	t0 := time.Now()
	d.cmd.Process.Signal(syscall.SIGHUP)
	e, err := b.waitReloaded(d, mark)
	if err != nil {
		return r, err
	}
	r.Seconds = e.at.Sub(t0).Seconds()
	r.Queries = srv.Queries() - q0
	if r.PeakRSSMiB, err = rssMiB(d.pid(), "VmHWM"); err != nil {
		return r, err
	}
	r.RSSAfterMiB, err = rssMiB(d.pid(), "VmRSS")
	return r, err
}

// waitReloaded waits for the end of a SIGHUP reload in the log.
func (b *bench) waitReloaded(d *daemon, mark int) (logEntry, error) {
	e, _, err := d.logs.waitFor(b.ctx, d, mark, `"reloaded" or "reload failed"`, func(m string) bool {
		return m == "reloaded" || strings.HasPrefix(m, "reload failed")
	}, b.opt.timeout)
	if err != nil {
		return e, err
	}
	if e.msg != "reloaded" {
		return e, d.failure("reload failed: %s", e.line)
	}
	return e, nil
}

// addKey is phase 5: a new RSA key for addedDomain, its record served
// before the key file appears, then SIGHUP.
func (b *bench) addKey(d *daemon, srv *keyServer, dir string) (addResult, error) {
	var r addResult
	k := tableKey{domain: addedDomain, selector: addedSelector, key: &b.pool.rsa[1]} // addedDomain's own is rsa[0]
	srv.set(strings.ToLower(k.recordName()), keys.RecordStrings(k.key.record))
	// Written under a name the key table ignores, then renamed: the
	// daemon never sees half a key.
	tmp := filepath.Join(dir, addedDomain, "."+addedSelector+".tmp")
	if err := os.WriteFile(tmp, k.key.pem, 0o600); err != nil {
		return r, err
	}
	if err := os.Rename(tmp, k.path(dir)); err != nil {
		return r, err
	}
	mark, q0 := d.logs.mark(), srv.Queries()
	t0 := time.Now()
	d.cmd.Process.Signal(syscall.SIGHUP)
	ctx, cancel := context.WithTimeout(b.ctx, b.opt.timeout)
	defer cancel()
	at, err := waitSigned(ctx, d, addedDomain, addedSelector)
	if err != nil {
		return r, err
	}
	r.SignsSeconds = at.Sub(t0).Seconds()
	e, err := b.waitReloaded(d, mark)
	if err != nil {
		return r, err
	}
	r.ReloadSeconds = e.at.Sub(t0).Seconds()
	r.Queries = srv.Queries() - q0
	return r, nil
}

// metricValue reads one series of the /metrics page at addr, bounded in
// time (a daemon busy starting may answer late).
func metricValue(ctx context.Context, addr, series string) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			return strconv.ParseFloat(v, 64)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("no series %s", series)
}

// rssMiB reads VmRSS or VmHWM of pid in MiB.
func rssMiB(pid int, field string) (float64, error) {
	st, err := procStatus(pid, field)
	if err != nil {
		return 0, err
	}
	return float64(st[field]) / 1024, nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// write prints the report and writes it to -out.
func (b *bench) write(rep *report) error {
	text := rep.markdown()
	raw, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	text += "\n## Raw results\n\n```json\n" + string(raw) + "\n```\n"
	fmt.Print(text)
	if b.opt.out != "" {
		if err := os.WriteFile(b.opt.out, []byte(text), 0o644); err != nil {
			return err
		}
		logf("wrote %s", b.opt.out)
	}
	return nil
}

// machine describes where the benchmark runs.
func machine() machineInfo {
	m := machineInfo{CPUs: runtime.NumCPU(), Go: runtime.Version(), LoadStart: loadAvg()}
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if name, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(name) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
				m.MemoryGiB = kb / (1 << 20)
			}
		}
	}
	if out, err := exec.Command("git", "describe", "--always", "--dirty").Output(); err == nil {
		m.Checkout = strings.TrimSpace(string(out))
	}
	return m
}

// loadAvg is the first three fields of /proc/loadavg.
func loadAvg() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(data))
	return strings.Join(f[:min(3, len(f))], " ")
}
