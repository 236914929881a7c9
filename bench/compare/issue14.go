package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// rsaSignRE matches keys' BenchmarkRSASign lines: the signer and ns/op.
var rsaSignRE = regexp.MustCompile(`BenchmarkRSASign/(go|openssl)-\d+\s+\d+\s+([\d.]+) ns/op`)

// runSigBench measures one RSA-2048 signature with crypto/rsa and with
// libcrypto (keys: BenchmarkRSASign, serial, five runs each, the median
// kept), so that the CPU a message costs the daemon can be split into the
// signature and the rest in the same run.
func (r *runner) runSigBench(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "test", "-run", "^$", "-bench", "RSASign/(go|openssl)$",
		"-benchtime", "1s", "-count", "5", "./keys")
	out, err := cmd.CombinedOutput()
	r.sigOut = strings.TrimSpace(string(out))
	if err != nil {
		r.note("go test -bench RSASign ./keys failed: %v", err)
		return
	}
	runs := map[string][]float64{}
	for _, m := range rsaSignRE.FindAllStringSubmatch(r.sigOut, -1) {
		v, _ := strconv.ParseFloat(m[2], 64)
		runs[m[1]] = append(runs[m[1]], v)
	}
	r.sigGoNs, r.sigOpenSSLNs = median(runs["go"]), median(runs["openssl"])
}

// median returns the middle value (0 for none).
func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	sort.Float64s(v)
	return v[len(v)/2]
}

// rsaSignatureNs is the cost of the RSA signature the measured daemon
// makes: libcrypto's unless `authmilter version` names Go's signer.
func (r *runner) rsaSignatureNs() (float64, string) {
	if strings.Contains(r.authmilterVersion(), "signer: go") || r.sigOpenSSLNs == 0 {
		return r.sigGoNs, "crypto/rsa"
	}
	return r.sigOpenSSLNs, "libcrypto"
}

// issue14 checks the results against issue 14's targets (ratios to
// OpenDKIM in the same run), and splits authmilter's CPU per signed
// message into the signature and the rest.
func (r *runner) issue14(b *strings.Builder) {
	w := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	w("## Against issue 14's targets\n\n| target | measured | |\n| --- | --- | --- |\n")
	for _, set := range []struct {
		name string
		ps   []pair
	}{{"TCP", r.sign}, {"unix socket", r.signUnix}} {
		if len(set.ps) == 0 {
			continue
		}
		s, ok := ratios(set.ps, thr, func(v float64) bool { return v >= 2.5 })
		w("| RSA-2048 signing ≥ 2.5× OpenDKIM at every concurrency (%s, %s) | %s | %s |\n", r.o.sizeLabel(), set.name, s, verdict(ok))
		s, ok = ratios(set.ps, p99, func(v float64) bool { return v <= 0.4 })
		w("| signing p99 ≤ 0.4× OpenDKIM's (%s, %s) | %s | %s |\n", r.o.sizeLabel(), set.name, s, verdict(ok))
	}
	sig, signer := r.rsaSignatureNs()
	if len(r.sign) > 0 && sig > 0 && r.sigGoNs > 0 {
		share := func(p pair) float64 { return 100 * (p.am.CPUPer - sig/1e6) / (r.sigGoNs / 1e6) }
		s, ok := ratios(r.sign, share, func(v float64) bool { return v <= 10 })
		w("| non-crypto CPU per message ≤ 10%% of one Go RSA signature (RSA-2048, TCP: CPU per message − one %s signature, in %% of crypto/rsa's %.3f ms) | %s | %s |\n",
			signer, r.sigGoNs/1e6, s, verdict(ok))
	}
	if len(r.signEd) > 0 && r.sigGoNs > 0 {
		// An Ed25519-signed message is the same protocol, header and body
		// work with a signature of some 30 µs: its whole CPU bounds the
		// non-crypto part from above, with no subtraction of a benchmark.
		share := func(p pair) float64 { return 100 * p.am.CPUPer / (r.sigGoNs / 1e6) }
		s, ok := ratios(r.signEd, share, func(v float64) bool { return v <= 10 })
		w("| the same, bounded from above by a whole Ed25519-signed message (its CPU, signature included, in %% of one crypto/rsa signature) | %s | %s |\n", s, verdict(ok))
		s, ok = ratios(r.signEd, thr, func(v float64) bool { return v >= 5 })
		w("| Ed25519 signing ≥ 5× OpenDKIM at every concurrency (TCP) | %s | %s |\n", s, verdict(ok))
	}
	if len(r.verifyRes) > 0 {
		s, ok := ratios(r.verifyRes, thr, func(v float64) bool { return v >= 2.5 })
		w("| verification ≥ 2.5× OpenDKIM | %s | %s |\n", s, verdict(ok))
	}
	if r.mem != nil {
		w("| peak RSS ≤ 20 MiB with 64 concurrent 1 MiB messages | %s (sampled peaks: anonymous %s, file-backed %s; OpenDKIM %s) | %s |\n",
			mib(r.mem.am.HWMkB), mib(r.mem.am.AnonKB), mib(r.mem.am.FileKB), mib(r.mem.od.HWMkB), verdict(r.mem.am.HWMkB <= 20*1024))
	}
	if sig > 0 && len(r.sign) > 0 {
		w("\nCPU per signed message (RSA-2048, TCP) and the share of it that is the signature (one %s signature: %.3f ms, median of 5 runs of `go test -bench RSASign ./keys`; crypto/rsa: %.3f ms):\n\n",
			signer, sig/1e6, r.sigGoNs/1e6)
		w("| c | CPU/msg ms | signature | the rest, ms |\n| ---: | ---: | ---: | ---: |\n")
		for _, p := range r.sign {
			w("| %d | %.3f | %.0f%% | %.3f |\n", p.am.Res.Concurrency, p.am.CPUPer, 100*sig/1e6/max(p.am.CPUPer, 1e-9), p.am.CPUPer-sig/1e6)
		}
	}
	w("\n")
}

// rssSampler records the largest anonymous and file-backed resident sizes
// of a process, read from /proc/PID/status every 10 ms until stopped.
type rssSampler struct {
	stop       chan struct{}
	done       chan struct{}
	anon, file int
}

func sampleRSS(pid int) *rssSampler {
	s := &rssSampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		path := fmt.Sprintf("/proc/%d/status", pid)
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			if b, err := os.ReadFile(path); err == nil {
				s.anon = max(s.anon, statusKB(string(b), "RssAnon"))
				s.file = max(s.file, statusKB(string(b), "RssFile"))
			}
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// peaks stops the sampler and returns its peaks in kB.
func (s *rssSampler) peaks() (anon, file int) {
	close(s.stop)
	<-s.done
	return s.anon, s.file
}

// statusKB returns a "kB" field of a /proc/PID/status text (0 if absent).
func statusKB(status, field string) int {
	for _, line := range strings.Split(status, "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			return n
		}
	}
	return 0
}
