// Command keydns measures the built-in key DNS server (keys/dnsserver) as
// `make bench-keydns` runs it: a key table of -domains domains (one
// RSA-2048 key each, every fourth one an Ed25519 key too, each domain a
// delegated selector zone myesp._domainkey.<domain>) is built once and
// kept in the temporary folder, the zones are built from it (time and heap
// reported), the server is started on 127.0.0.1, and Debian's dnsperf
// sends it TXT queries for random key names (a tenth of them for names
// that do not exist): at full speed over UDP and over TCP, then over UDP
// at half the full-speed rate, where the latency percentiles are read from
// dnsperf's per-query output. The server and dnsperf share the machine's
// cores. The results are printed as Markdown for bench/RESULTS.md.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"crypto/ed25519"
	crand "crypto/rand"
	"crypto/x509"
	"encoding/pem"

	"github.com/authmilter/authmilter/keys"
	"github.com/authmilter/authmilter/keys/dnsserver"
)

func main() {
	domains := flag.Int("domains", 100000, "domains in the key table")
	duration := flag.Duration("d", 20*time.Second, "length of each dnsperf run")
	clients := flag.Int("c", 4, "dnsperf clients (sockets)")
	outstanding := flag.Int("q", 200, "dnsperf queries outstanding")
	rsaPEM := flag.String("rsa-key", "testdata/keys/rsa2048-pkcs8.pem", "the RSA-2048 key every domain gets a copy of")
	flag.Parse()
	if err := run(*domains, *duration, *clients, *outstanding, *rsaPEM); err != nil {
		fmt.Fprintln(os.Stderr, "bench-keydns:", err)
		os.Exit(1)
	}
}

// config is the server's: one delegated selector zone per domain.
func config() dnsserver.Config {
	return dnsserver.Config{
		Listen:      []string{"127.0.0.1:0"},
		Zones:       []string{"myesp._domainkey.*"},
		Nameservers: []string{"ns1.myesp.example", "ns2.myesp.example"},
		TTL:         time.Hour, NegativeTTL: 5 * time.Minute, RevokedFor: 7 * 24 * time.Hour,
	}
}

func run(n int, duration time.Duration, clients, outstanding int, rsaPEM string) error {
	dnsperf, err := exec.LookPath("dnsperf")
	if err != nil {
		return fmt.Errorf("dnsperf not found; install it with: apt-get install dnsperf")
	}
	dir, err := table(n, rsaPEM)
	if err != nil {
		return err
	}
	t0 := time.Now()
	kt, err := keys.LoadDir(dir)
	if err != nil {
		return err
	}
	loadTime := time.Since(t0)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	t0 = time.Now()
	z, err := dnsserver.Build(config(), kt, nil, time.Now())
	if err != nil {
		return err
	}
	buildTime := time.Since(t0)
	runtime.GC()
	runtime.ReadMemStats(&after)
	nz, nr := z.Len()
	s, err := dnsserver.New(config(), nil)
	if err != nil {
		return err
	}
	s.Swap(z)
	if err := s.Start(); err != nil {
		return err
	}
	defer s.Close()
	addr := s.Addrs()[0]
	queries, err := queryFile(kt, n)
	if err != nil {
		return err
	}
	defer os.Remove(queries)

	fmt.Fprintf(os.Stderr, "bench-keydns: %d zones, %d records on %s; dnsperf runs of %v\n", nz, nr, addr, duration)
	udp, err := dnsperfRun(dnsperf, addr, queries, duration, clients, outstanding, "udp", 0)
	if err != nil {
		return err
	}
	tcp, err := dnsperfRun(dnsperf, addr, queries, duration, clients, outstanding, "tcp", 0)
	if err != nil {
		return err
	}
	half, err := dnsperfRun(dnsperf, addr, queries, duration, clients, outstanding, "udp", int(udp.qps/2))
	if err != nil {
		return err
	}
	st := s.Stats()
	fmt.Printf(`### Key DNS server ([keydns]), %d domains

%s, %d CPUs (GOMAXPROCS %d), server and dnsperf on the same machine; dnsperf %d clients, %d queries outstanding, %v per run; 90%% of the queries for existing key records (TXT, RSA-2048 and Ed25519), 10%% for names that do not exist.

- zones: %d, records: %d; key table loaded in %v, zones built in %v, the zones hold %.1f MiB of heap
- answers: %d (lost or timed out in dnsperf: UDP %d, TCP %d, half rate %d)

| run | queries/s | p50 | p99 | max | server CPU | dnsperf CPU | other load |
| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
| UDP, full speed | %.0f | %s | %s | %s | %s |
| TCP, full speed | %.0f | %s | %s | %s | %s |
| UDP, %d queries/s (half) | %.0f | %s | %s | %s | %s |
`, n, cpuModel(), runtime.NumCPU(), runtime.GOMAXPROCS(0), clients, outstanding, duration,
		nz, nr, loadTime.Round(time.Millisecond), buildTime.Round(time.Millisecond), float64(after.HeapAlloc-before.HeapAlloc)/(1<<20),
		st.Answers, udp.lost, tcp.lost, half.lost,
		udp.qps, ms(udp.p50), ms(udp.p99), ms(udp.max), udp.cpu(),
		tcp.qps, ms(tcp.p50), ms(tcp.p99), ms(tcp.max), tcp.cpu(),
		int(udp.qps/2), half.qps, ms(half.p50), ms(half.p99), ms(half.max), half.cpu())
	return nil
}

// cpu formats the CPU columns.
func (r perfResult) cpu() string {
	return fmt.Sprintf("%.2f | %.2f | %.2f", r.server, r.dnsperf, r.other)
}

// ms formats a latency.
func ms(d time.Duration) string { return fmt.Sprintf("%.3f ms", float64(d)/float64(time.Millisecond)) }

// cpuModel returns the CPU's model name.
func cpuModel() string {
	data, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	for _, l := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

// table returns a key folder of n domains, kept between runs.
func table(n int, rsaPEM string) (string, error) {
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("authmilter-bench-keydns-%d-v1", n))
	marker := filepath.Join(dir, ".complete")
	if _, err := os.Stat(marker); err == nil {
		return dir, nil
	}
	rsaKey, err := os.ReadFile(rsaPEM)
	if err != nil {
		return "", fmt.Errorf("%w (run from the repository's top folder, or give -rsa-key)", err)
	}
	_, ek, err := ed25519.GenerateKey(crand.Reader)
	if err != nil {
		return "", err
	}
	der, err := x509.MarshalPKCS8PrivateKey(ek)
	if err != nil {
		return "", err
	}
	edKey := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	fmt.Fprintf(os.Stderr, "bench-keydns: writing a key table of %d domains in %s\n", n, dir)
	if err := os.RemoveAll(dir); err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	for i := 1; i <= n; i++ {
		d := filepath.Join(dir, domainName(i))
		if err := os.Mkdir(d, 0o700); err != nil {
			return "", err
		}
		if err := os.WriteFile(filepath.Join(d, "2026-11.myesp.pem"), rsaKey, 0o600); err != nil {
			return "", err
		}
		if i%4 == 0 {
			if err := os.WriteFile(filepath.Join(d, "2026-11e.myesp.pem"), edKey, 0o600); err != nil {
				return "", err
			}
		}
	}
	return dir, os.WriteFile(marker, nil, 0o600)
}

func domainName(i int) string { return fmt.Sprintf("d%06d.example", i) }

// queryFile writes dnsperf's input: 200,000 TXT queries, nine in ten for
// key records of random domains, one in ten for a name that does not
// exist.
func queryFile(kt *keys.Table, n int) (string, error) {
	f, err := os.CreateTemp("", "bench-keydns-queries-")
	if err != nil {
		return "", err
	}
	w := bufio.NewWriter(f)
	for range 200000 {
		i := 1 + rand.IntN(n)
		d := domainName(i)
		switch {
		case rand.IntN(10) == 0:
			fmt.Fprintf(w, "nope.myesp._domainkey.%s TXT\n", d)
		case i%4 == 0 && rand.IntN(2) == 0:
			fmt.Fprintf(w, "%s TXT\n", keys.RecordName(d, "2026-11e.myesp"))
		default:
			fmt.Fprintf(w, "%s TXT\n", keys.RecordName(d, "2026-11.myesp"))
		}
	}
	if err := w.Flush(); err != nil {
		return "", err
	}
	return f.Name(), f.Close()
}

// perfResult is one dnsperf run.
type perfResult struct {
	qps           float64
	lost          int
	p50, p99, max time.Duration
	// server and dnsperf are the CPU (in cores) the server's process and
	// dnsperf used during the run, other what the rest of the machine
	// used: a run with other load well above 0 was disturbed.
	server, dnsperf, other float64
}

// cpuNow returns the machine's busy CPU time and this process's CPU time.
func cpuNow() (machine, self time.Duration) {
	const tick = 10 * time.Millisecond // USER_HZ is 100 on Linux
	if data, err := os.ReadFile("/proc/stat"); err == nil {
		f := strings.Fields(strings.SplitN(string(data), "\n", 2)[0])
		for i, v := range f[1:] {
			if i == 3 || i == 4 { // idle, iowait
				continue
			}
			n, _ := strconv.ParseInt(v, 10, 64)
			machine += time.Duration(n) * tick
		}
	}
	if data, err := os.ReadFile("/proc/self/stat"); err == nil {
		s := string(data)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		u, _ := strconv.ParseInt(f[11], 10, 64)
		k, _ := strconv.ParseInt(f[12], 10, 64)
		self = time.Duration(u+k) * tick
	}
	return machine, self
}

var (
	qpsRE  = regexp.MustCompile(`Queries per second:\s+([0-9.]+)`)
	lostRE = regexp.MustCompile(`Queries lost:\s+([0-9]+)`)
)

// dnsperfRun runs dnsperf over mode ("udp" or "tcp"), at most rate
// queries per second (0: as fast as it can), with per-query output (-v)
// for the latency percentiles.
func dnsperfRun(bin, addr, queries string, d time.Duration, clients, outstanding int, mode string, rate int) (perfResult, error) {
	host, port, _ := strings.Cut(addr, ":")
	args := []string{"-s", host, "-p", port, "-d", queries, "-m", mode, "-l", strconv.Itoa(int(d.Seconds())),
		"-c", strconv.Itoa(clients), "-q", strconv.Itoa(outstanding), "-e", "-v", "-t", "5"}
	if rate > 0 {
		args = append(args, "-Q", strconv.Itoa(rate))
	}
	ctx, cancel := context.WithTimeout(context.Background(), d+2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return perfResult{}, err
	}
	cmd.Stderr = os.Stderr
	m0, s0 := cpuNow()
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return perfResult{}, err
	}
	var lat []time.Duration
	var summary strings.Builder
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		l := sc.Text()
		// Per query: "> NOERROR name TXT 0.000123" (or "> T" for a
		// timeout).
		if strings.HasPrefix(l, "> ") {
			f := strings.Fields(l)
			if sec, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil && len(f) >= 4 {
				lat = append(lat, time.Duration(sec*float64(time.Second)))
			}
			continue
		}
		summary.WriteString(l)
		summary.WriteByte('\n')
	}
	io.Copy(io.Discard, out)
	if err := cmd.Wait(); err != nil {
		return perfResult{}, fmt.Errorf("dnsperf %s: %w\n%s", strings.Join(args, " "), err, summary.String())
	}
	m1, s1 := cpuNow()
	wall := time.Since(start).Seconds()
	perf := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	r := perfResult{
		server:  (s1 - s0).Seconds() / wall,
		dnsperf: perf.Seconds() / wall,
	}
	r.other = max(0, (m1-m0).Seconds()/wall-r.server-r.dnsperf)
	if m := qpsRE.FindStringSubmatch(summary.String()); m != nil {
		r.qps, _ = strconv.ParseFloat(m[1], 64)
	} else {
		return r, fmt.Errorf("dnsperf printed no rate:\n%s", summary.String())
	}
	if m := lostRE.FindStringSubmatch(summary.String()); m != nil {
		r.lost, _ = strconv.Atoi(m[1])
	}
	if len(lat) == 0 {
		return r, fmt.Errorf("dnsperf printed no per-query latencies:\n%s", summary.String())
	}
	slices.Sort(lat)
	r.p50 = lat[len(lat)/2]
	r.p99 = lat[len(lat)*99/100]
	r.max = lat[len(lat)-1]
	fmt.Fprintf(os.Stderr, "bench-keydns: %s rate %d: %.0f queries/s, p99 %v, CPU server %.2f dnsperf %.2f other %.2f\n",
		mode, rate, r.qps, r.p99, r.server, r.dnsperf, r.other)
	return r, nil
}
