package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// throughputCase is one signing-throughput measure: milterload sending
// From each of domains in turn to a daemon.
type throughputCase struct {
	name    string
	domains []string
	ref     bool // sent to the one-domain reference daemon
}

// throughput is phase 7. Every message gets exactly one RSA-2048
// signature in every case: the From domains are RSA-only domains (not
// every fourth), so the cases differ only in how many domains' keys the
// daemon uses. Each case runs b.opt.reps times, the cases taking turns,
// and the best run counts.
func (b *bench) throughput(d *daemon, n int) ([]throughputResult, error) {
	if err := b.startRef(); err != nil {
		return nil, fmt.Errorf("reference daemon: %w", err)
	}
	var rsaOnly []string
	for i := 1; i <= n; i++ {
		if !hasEd25519(i) {
			rsaOnly = append(rsaOnly, domainName(i))
		}
	}
	cases := []throughputCase{
		{name: "1-domain table (reference)", domains: []string{addedDomain}, ref: true},
		{name: "From one domain", domains: []string{addedDomain}},
	}
	if small := min(b.opt.spread, len(rsaOnly)); small > 1 {
		cases = append(cases, throughputCase{name: fmt.Sprintf("From %d domains in turn", small), domains: rsaOnly[:small]})
	}
	if len(rsaOnly) > b.opt.spread {
		cases = append(cases, throughputCase{name: fmt.Sprintf("From %d domains in turn (every RSA-only domain)", len(rsaOnly)), domains: rsaOnly})
	}
	out := make([]throughputResult, len(cases))
	files := make([]string, len(cases))
	for i, c := range cases {
		out[i] = throughputResult{Name: c.name, FromDomains: len(c.domains), Reference: c.ref}
		files[i] = filepath.Join(b.work, fmt.Sprintf("from-%d-%d.txt", n, i))
		if err := os.WriteFile(files[i], []byte(strings.Join(c.domains, "\n")+"\n"), 0o600); err != nil {
			return nil, err
		}
	}
	for rep := range b.opt.reps {
		// Each round starts with another case, so that no case is always
		// the one measured right after the wait for a quiet machine.
		for j := range cases {
			i := (j + rep) % len(cases)
			c := cases[i]
			addr := d.milterAddr
			if c.ref {
				addr = b.ref.d.milterAddr
			}
			pid := d.pid()
			if c.ref {
				pid = b.ref.d.pid()
			}
			if err := b.waitQuiet(); err != nil {
				return out, err
			}
			r, err := b.milterloadRun(addr, pid, files[i], c.name)
			if err != nil {
				return out, err
			}
			res := &out[i]
			res.Runs = append(res.Runs, r.MsgsPerSec)
			res.Errors += r.Errors
			if res.FirstError == "" {
				res.FirstError = r.FirstError
			}
			if r.MsgsPerSec > res.Best {
				res.Best, res.P50Ms, res.P99Ms, res.OtherLoad = r.MsgsPerSec, r.Latency.P50, r.Latency.P99, r.otherLoad
			}
			if res.CPUPerMsgMs == 0 || r.cpuPerMsg < res.CPUPerMsgMs {
				res.CPUPerMsgMs = r.cpuPerMsg
			}
			logf("  %s: %.0f msgs/s, %.3f ms CPU/msg, other load %.2f, %d errors", c.name, r.MsgsPerSec, r.cpuPerMsg, r.otherLoad, r.Errors)
		}
	}
	for i := range out {
		if out[0].Best > 0 {
			out[i].Ratio = out[i].Best / out[0].Best
		}
		if out[i].CPUPerMsgMs > 0 {
			out[i].CPURatio = out[0].CPUPerMsgMs / out[i].CPUPerMsgMs
		}
	}
	return out, nil
}

// loadResult is the part of milterload's -json output used here.
type loadResult struct {
	Messages   int     `json:"messages"`
	Total      int     `json:"total"`
	Seconds    float64 `json:"seconds"`
	ClientCPU  float64 `json:"client_cpu_s"`
	Errors     int     `json:"errors"`
	MsgsPerSec float64 `json:"msgs_per_s"`
	FirstError string  `json:"first_error"`
	Latency    struct {
		P50 float64 `json:"p50"`
		P99 float64 `json:"p99"`
	} `json:"latency_ms"`

	// cpuPerMsg is the daemon's CPU time (user and system) per message
	// sent, warm-up included, in ms; otherLoad the CPUs (in cores) that
	// everything but the daemon and milterload used meanwhile: a run with
	// other load well above 0 was disturbed by other work on the machine.
	cpuPerMsg, otherLoad float64
}

// milterloadRun runs milterload once against addr, From the domains of the
// file list; pid is the daemon's.
func (b *bench) milterloadRun(addr string, pid int, list, label string) (*loadResult, error) {
	ctx, cancel := context.WithTimeout(b.ctx, b.opt.dur+2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, b.milterload, "-addr", "inet:"+addr, "-c", strconv.Itoa(b.opt.conc),
		"-d", b.opt.dur.String(), "-warmup", b.opt.warmup.String(), "-expect-sign", "-json",
		"-from-domains", list, "-label", label)
	cmd.WaitDelay = 5 * time.Second
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	busy0, cpu0 := machineBusy(), processCPU(pid)
	t0 := time.Now()
	out, err := cmd.Output()
	wall := time.Since(t0).Seconds()
	busy1, cpu1 := machineBusy(), processCPU(pid)
	if err != nil {
		return nil, fmt.Errorf("milterload %s: %w: %s", label, err, stderr.String())
	}
	var r loadResult
	if err := json.Unmarshal(out, &r); err != nil {
		return nil, fmt.Errorf("milterload %s: %w: %q", label, err, out)
	}
	if r.Total > 0 {
		r.cpuPerMsg = 1000 * (cpu1 - cpu0) / float64(r.Total)
	}
	if wall > 0 {
		r.otherLoad = max(0, (busy1-busy0)-(cpu1-cpu0)-r.ClientCPU) / wall
	}
	return &r, nil
}

// startRef starts the reference daemon (a table of one RSA-only domain)
// unless it runs already; it stays until the end of the benchmark.
func (b *bench) startRef() error {
	if b.ref != nil {
		return nil
	}
	dir := filepath.Join(b.opt.cache, "1")
	if _, err := buildTable(dir, 1, b.pool); err != nil {
		return err
	}
	pub := filepath.Join(dir, ".authmilter-publication.json")
	os.Remove(pub)
	b.deferCleanup(func() { os.Remove(pub) })
	srv := newKeyServer("example.", b.pool.records(1))
	if err := srv.start(); err != nil {
		return err
	}
	b.deferCleanup(srv.stop)
	cfg, err := b.config(dir, srv.addr, "1h")
	if err != nil {
		return err
	}
	d, _, err := b.startMeasured(filepath.Join(b.work, "scale-ref.toml"), cfg, srv, keyCount(1))
	if d != nil {
		b.deferCleanup(func() { d.stop() })
	}
	if err != nil {
		return err
	}
	b.ref = &refDaemon{d: d, srv: srv}
	return nil
}

// clockTicks is USER_HZ, the unit of /proc's CPU times (100 on Linux
// everywhere that matters).
const clockTicks = 100

// machineBusy is the CPU time, in seconds, all CPUs spent on anything
// but idle since boot (/proc/stat).
func machineBusy() float64 {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(data), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0
	}
	var busy float64
	for i, v := range f[1:9] { // user nice system idle iowait irq softirq steal
		if i == 3 || i == 4 {
			continue
		}
		n, _ := strconv.ParseFloat(v, 64)
		busy += n
	}
	return busy / clockTicks
}

// processCPU is the user and system time of pid, in seconds.
func processCPU(pid int) float64 {
	data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0
	}
	// The fields after the command name, which may hold spaces, in
	// parentheses: utime and stime are the 14th and 15th of the line.
	i := strings.LastIndexByte(string(data), ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / clockTicks
}

// quietLoad is the CPU use (in cores) of the whole machine below which it
// counts as quiet: the daemons are idle between runs, so this is others'
// work.
const quietLoad = 0.25

// waitQuiet waits, at most -quiet-wait, until the machine has been quiet
// for a second: on a shared machine, others' test runs disturb the
// throughput figures more than anything measured here.
func (b *bench) waitQuiet() error {
	deadline := time.Now().Add(b.opt.quietWait)
	for {
		busy0 := machineBusy()
		if err := sleepCtx(b.ctx, time.Second); err != nil {
			return err
		}
		load := machineBusy() - busy0
		if load < quietLoad {
			return nil
		}
		if time.Now().After(deadline) {
			logf("  the machine is busy (%.2f cores used by others); measuring anyway", load)
			return nil
		}
	}
}
