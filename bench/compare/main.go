// Command compare measures authmilter against OpenDKIM on this machine, in
// one run, and writes bench/RESULTS.md. Run it through bench/compare.sh,
// which builds the binaries it drives:
//
//	bench/compare.sh [-d 4s] [-warmup 1s] [-conc 1,8,64] [-out bench/RESULTS.md]
//
// What it does, every step bounded in time:
//
//  1. Generates one RSA-2048 key with `authmilter keygen` and publishes it,
//     with SPF and DMARC records for example.com, on a testdnsd DNS server
//     listening on a free 127.x.y.z:53 (OpenDKIM's resolver only uses port
//     53; binding it needs root).
//  2. Starts authmilter (relaxed/relaxed, keys.require_published = true
//     against that DNS server, log level warn) and OpenDKIM in signing mode
//     with the same key, the same signed and oversigned header fields and
//     the same canonicalization (Syslog no, so neither logs per message).
//  3. Drives each, one after the other, with cmd/milterload and the same 4
//     KiB message at every concurrency of -conc, over TCP (and a unix
//     socket), checking that every reply carries a DKIM-Signature.
//  4. With -ed25519 (the default), signs the same message with an Ed25519
//     key over TCP at every concurrency of -conc: a second authmilter
//     whose key directory holds only that key, and OpenDKIM with
//     `SignatureAlgorithm ed25519-sha256` and the same key (OpenDKIM 2.11
//     signs ed25519-sha256 with an Ed25519 PEM key); a smoke test first
//     checks that both add an a=ed25519-sha256 signature.
//  5. Restarts both and sends 64 concurrent 1 MiB messages, reading each
//     process's peak RSS (VmHWM) afterwards.
//  6. Replaces OpenDKIM by an instance in verifying mode and drives both
//     as an inbound client with the message signed by authmilter, checking
//     that every reply carries an Authentication-Results field with
//     dkim=pass.
//  7. Runs the Go benchmark that relates message signing to the raw cost
//     of rsa.SignPKCS1v15 (policy: BenchmarkSignVsRSALimit), and times
//     one RSA-2048 signature with crypto/rsa and with libcrypto (keys:
//     BenchmarkRSASign), so that the report can split the daemon's CPU per
//     message into the signature and the rest (issue 14's targets, in
//     their own table).
//
// Peak RSS per measurement is read from /proc/PID/status (VmHWM) after
// resetting it through /proc/PID/clear_refs, so it is the peak during that
// measurement (never less than the RSS at its start). CPU per message is
// the milter process's user+system time during the measurement divided by
// the messages it handled, warm-up included.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/authmilter/authmilter/internal/loadmsg"
)

// opts are the command-line settings.
type opts struct {
	bin      string
	out      string
	dur      time.Duration
	warmup   time.Duration
	conc     []int
	perConn  int
	unix     bool
	quickack bool
	verify   bool
	ed25519  bool
	memory   bool
	goBench  bool
	opendkim string
	keep     bool
	reps     int
	size     int // of the signing message, in bytes
}

// sizeLabel is the signing message's size as the report says it.
func (o *opts) sizeLabel() string {
	if o.size%1024 == 0 {
		return fmt.Sprintf("%d KiB", o.size/1024)
	}
	return fmt.Sprintf("%d bytes", o.size)
}

func main() {
	var o opts
	var conc string
	flag.StringVar(&o.bin, "bin", "", "directory with the authmilter, milterload and testdnsd binaries (required)")
	flag.StringVar(&o.out, "out", "bench/RESULTS.md", "where to write the report (- for standard output only)")
	flag.DurationVar(&o.dur, "d", 4*time.Second, "measured duration of each point (after -warmup)")
	flag.DurationVar(&o.warmup, "warmup", time.Second, "warm-up before each point, not counted")
	flag.StringVar(&conc, "conc", "1,8,64", "concurrencies (connections) to measure")
	flag.IntVar(&o.perConn, "per-conn", 50, "transactions per connection")
	flag.BoolVar(&o.unix, "unix", true, "also measure signing over unix sockets")
	flag.BoolVar(&o.quickack, "quickack", true, "the client sets TCP_QUICKACK (see milterload -quickack); a point without it is measured once")
	flag.BoolVar(&o.verify, "verify", true, "measure verification (needs port 53 on a loopback address)")
	flag.BoolVar(&o.ed25519, "ed25519", true, "also measure Ed25519 signing (TCP, every -conc, the -size message)")
	flag.BoolVar(&o.memory, "memory", true, "measure peak RSS with 64 concurrent 1 MiB messages")
	flag.BoolVar(&o.goBench, "gobench", true, "run the Go RSA-limit benchmark (go test in ./policy)")
	flag.StringVar(&o.opendkim, "opendkim", "/usr/sbin/opendkim", "OpenDKIM binary")
	flag.BoolVar(&o.keep, "keep", false, "keep the work directory (configs, keys, logs)")
	flag.IntVar(&o.size, "size", 4<<10, "size in bytes of the message signed (and verified); the memory point always uses 1 MiB")
	flag.IntVar(&o.reps, "reps", 2, "repetitions of each point, alternating the milters; the best throughput of each is reported")
	flag.Parse()
	if o.bin == "" {
		fmt.Fprintln(os.Stderr, "compare: -bin is required (use bench/compare.sh)")
		os.Exit(2)
	}
	for _, s := range strings.Split(conc, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "compare: -conc: bad value %q\n", s)
			os.Exit(2)
		}
		o.conc = append(o.conc, n)
	}
	if o.dur <= 0 || o.dur > time.Minute || o.warmup < 0 || o.warmup > 10*time.Second || o.reps < 1 || o.reps > 5 {
		fmt.Fprintln(os.Stderr, "compare: -d must be in (0, 1m], -warmup in [0, 10s], -reps in [1, 5]")
		os.Exit(2)
	}
	r := &runner{o: o}
	err := r.main()
	r.cleanup()
	if err != nil {
		fmt.Fprintln(os.Stderr, "compare:", err)
		os.Exit(1)
	}
}

// runner holds the processes and results of one run.
type runner struct {
	o     opts
	work  string
	procs []*proc

	dnsAddr string // ip:53, or ip:port when port 53 was not available
	dns53   bool
	msg4k   string
	msg1m   string
	signed  string

	am, odSign *proc
	amInet     string
	amUnix     string
	odInet     string
	odUnix     string

	sign       []pair // TCP
	signUnix   []pair
	signEd     []pair // Ed25519, TCP
	edConf     string // the Ed25519 authmilter's config
	edInet     string // and its socket
	noQuickack *pair
	mem        *pair
	memIdle    [2]int // kB at start
	verifyRes  []pair
	goBenchOut string
	rsaLimit   string
	notes      []string
	started    time.Time
	loadStart  string
	rsaNs      float64
	// One signature on this machine (runSigBench), in ns.
	sigGoNs, sigOpenSSLNs float64
	sigOut                string
}

// pair is one measurement point for both milters.
type pair struct {
	name   string
	am, od *point
}

// point is one milterload run plus what the milter process used.
type point struct {
	Res   loadResult
	HWMkB int
	// AnonKB and FileKB are the largest anonymous and file-backed
	// resident sizes sampled during the run.
	AnonKB, FileKB int
	CPUms          float64 // milter CPU during the run
	CPUPer         float64 // ms per message handled (warm-up included)
	// Other is the average CPU (in cores) used during the run by
	// processes other than the milter and the load generator: other
	// people's work on a shared machine. Far above 0 means a disturbed
	// measurement.
	Other   float64
	RawJSON string
}

// loadResult mirrors milterload -json.
type loadResult struct {
	Label       string  `json:"label"`
	Direction   string  `json:"direction"`
	Concurrency int     `json:"concurrency"`
	SizeBytes   int     `json:"size_bytes"`
	Messages    int     `json:"messages"`
	Errors      int     `json:"errors"`
	Total       int     `json:"total"`
	Seconds     float64 `json:"seconds"`
	MsgsPerSec  float64 `json:"msgs_per_s"`
	Latency     struct {
		P50, P90, P99, P999, Max, Mean float64
	} `json:"latency_ms"`
	Expected   int            `json:"expected"`
	FirstError string         `json:"first_error"`
	ErrorKinds map[string]int `json:"error_kinds"`
	ClientCPU  float64        `json:"client_cpu_s"`
	Negotiated string         `json:"negotiated"`
}

// proc is a child process we started.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

func (r *runner) main() error {
	r.started = time.Now()
	r.loadStart = loadAvg()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	if r.work, err = os.MkdirTemp("", "authmilter-compare-"); err != nil {
		return err
	}
	if err := os.Chmod(r.work, 0o700); err != nil {
		return err
	}
	for _, b := range []string{"authmilter", "milterload", "testdnsd"} {
		if _, err := os.Stat(filepath.Join(r.o.bin, b)); err != nil {
			return fmt.Errorf("%s not built in %s: %w", b, r.o.bin, err)
		}
	}
	if _, err := os.Stat(r.o.opendkim); err != nil {
		return fmt.Errorf("OpenDKIM not found (apt-get install opendkim): %w", err)
	}
	if err := r.setup(ctx); err != nil {
		return err
	}

	step := func(name string) { fmt.Fprintf(os.Stderr, "[%5.1fs] %s\n", time.Since(r.started).Seconds(), name) }
	step("signing over TCP")
	for _, c := range r.o.conc {
		p, err := r.measurePair(ctx, fmt.Sprintf("c=%d", c), r.amInet, r.odInet, c, r.msg4k, false, r.o.quickack)
		if err != nil {
			return err
		}
		r.sign = append(r.sign, p)
	}
	if r.o.quickack {
		step("signing over TCP without TCP_QUICKACK, c=8")
		p, err := r.measurePair(ctx, "c=8 no quickack", r.amInet, r.odInet, 8, r.msg4k, false, false)
		if err != nil {
			return err
		}
		r.noQuickack = &p
	}
	if r.o.unix {
		step("signing over unix sockets")
		for _, c := range r.o.conc {
			p, err := r.measurePair(ctx, fmt.Sprintf("c=%d", c), "unix:"+r.amUnix, "unix:"+r.odUnix, c, r.msg4k, false, false)
			if err != nil {
				return err
			}
			r.signUnix = append(r.signUnix, p)
		}
	}
	if r.o.ed25519 {
		step("Ed25519 signing over TCP")
		if err := r.measureEd25519(ctx); err != nil {
			return err
		}
	}
	if r.o.memory {
		step("memory: 64 concurrent 1 MiB messages, fresh processes")
		if err := r.measureMemory(ctx); err != nil {
			return err
		}
	}
	if r.o.verify {
		if !r.dns53 {
			r.notes = append(r.notes, "Verification was not measured: no loopback address could bind port 53 (needs root), and OpenDKIM only queries port 53.")
		} else {
			step("verification over TCP")
			if err := r.measureVerify(ctx); err != nil {
				return err
			}
		}
	}
	if r.o.goBench {
		step("go test -bench SignVsRSALimit ./policy")
		r.runGoBench(ctx)
		step("go test -bench RSASign ./keys")
		r.runSigBench(ctx)
	}
	step("done")
	report := r.report()
	fmt.Print(report)
	if r.o.out != "-" {
		if err := os.WriteFile(r.o.out, []byte(report), 0o644); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "wrote %s\n", r.o.out)
	}
	return nil
}

// setup makes the key, the DNS server, the messages and both milters.
func (r *runner) setup(ctx context.Context) error {
	keysDir := filepath.Join(r.work, "keys")
	if err := os.Mkdir(keysDir, 0o700); err != nil {
		return err
	}
	// The DNS server first: authmilter's config names it.
	ip, ok := freeLoopback53()
	r.dns53 = ok
	if ok {
		r.dnsAddr = ip + ":53"
	} else {
		port, err := freePort()
		if err != nil {
			return err
		}
		r.dnsAddr = fmt.Sprintf("127.0.0.1:%d", port)
	}
	amPort, err := freePort()
	if err != nil {
		return err
	}
	odPort, err := freePort()
	if err != nil {
		return err
	}
	r.amInet = fmt.Sprintf("inet:127.0.0.1:%d", amPort)
	r.odInet = fmt.Sprintf("inet:%d@127.0.0.1", odPort)
	r.amUnix = filepath.Join(r.work, "authmilter.sock")
	r.odUnix = filepath.Join(r.work, "opendkim.sock")

	amConf := filepath.Join(r.work, "authmilter.toml")
	conf := r.authmilterConfig([]string{r.amInet, "unix:" + r.amUnix}, keysDir)
	if err := os.WriteFile(amConf, []byte(conf), 0o600); err != nil {
		return err
	}
	zone, err := r.output(ctx, filepath.Join(r.o.bin, "authmilter"), "keygen", "-config", amConf,
		"-d", "example.com", "-s", "bench", "-a", "rsa-2048", "-format", "zone")
	if err != nil {
		return fmt.Errorf("keygen: %w", err)
	}
	if r.o.ed25519 {
		edZone, err := r.setupEd25519(ctx)
		if err != nil {
			return err
		}
		zone += "\n" + edZone
	}
	zoneFile := filepath.Join(r.work, "example.com.zone")
	zoneText := "$TTL 3600\n" + zone + `
example.com.          IN TXT "v=spf1 ip4:192.0.2.0/24 -all"
_dmarc.example.com.   IN TXT "v=DMARC1; p=none"
mail.example.com.     IN A 192.0.2.25
mail.example.com.     IN TXT "v=spf1 a -all"
`
	if err := os.WriteFile(zoneFile, []byte(zoneText), 0o644); err != nil {
		return err
	}
	dns, err := r.start(ctx, "testdnsd", filepath.Join(r.o.bin, "testdnsd"), []string{"-addr", r.dnsAddr, "-ttl", "3600", zoneFile}, "")
	if err != nil {
		return err
	}
	if err := waitUDP(ctx, dns, r.dnsAddr); err != nil {
		return err
	}

	// Messages: the same -size and 1 MiB messages for both milters.
	r.msg4k = filepath.Join(r.work, "msg-4k.eml")
	r.msg1m = filepath.Join(r.work, "msg-1m.eml")
	if err := os.WriteFile(r.msg4k, loadmsg.Generate(r.o.size, "compare", "example.com", "example.org"), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(r.msg1m, loadmsg.Generate(1<<20, "compare", "example.com", "example.org"), 0o644); err != nil {
		return err
	}

	if r.am, err = r.startAuthmilter(ctx, amConf); err != nil {
		return err
	}
	if r.odSign, err = r.startOpenDKIM(ctx, "sign", keysDir); err != nil {
		return err
	}

	// Smoke test, and the signed message for verification.
	for _, a := range []string{r.amInet, r.odInet} {
		if _, err := r.load(ctx, "smoke", a, "-c", "1", "-n", "3", "-d", "10s", "-msg", r.msg4k, "-expect-sign"); err != nil {
			return fmt.Errorf("smoke test of %s: %w", a, err)
		}
	}
	msg, err := os.ReadFile(r.msg4k)
	if err != nil {
		return err
	}
	signed, err := r.outputStdin(ctx, msg, filepath.Join(r.o.bin, "authmilter"), "sign", "-config", amConf)
	if err != nil {
		return fmt.Errorf("authmilter sign: %w", err)
	}
	r.signed = filepath.Join(r.work, "msg-4k-signed.eml")
	return os.WriteFile(r.signed, []byte(signed), 0o644)
}

// authmilterConfig is the config of an authmilter under benchmark that
// listens on listen and signs with the keys of keysDir.
func (r *runner) authmilterConfig(listen []string, keysDir string) string {
	quoted := make([]string, len(listen))
	for i, l := range listen {
		quoted[i] = strconv.Quote(l)
	}
	return fmt.Sprintf(`# authmilter under benchmark: generated by bench/compare
listen = [%s]
socket_mode = "0660"
authserv_id = "bench.authmilter.test"
[dns]
servers = [%q]
timeout = "2s"
[outbound]
networks = ["127.0.0.0/8"]
[keys]
dir = %q
require_published = true
check = "resolver"
[signing]
canonicalization = "relaxed/relaxed"
[reports]
record = false

[metrics]
listen = ""
[log]
level = "warn"
`, strings.Join(quoted, ", "), r.dnsAddr, keysDir)
}

func (r *runner) startAuthmilter(ctx context.Context, conf string) (*proc, error) {
	os.Remove(r.amUnix)
	p, err := r.start(ctx, "authmilter", filepath.Join(r.o.bin, "authmilter"), []string{"run", "-config", conf}, "")
	if err != nil {
		return nil, err
	}
	if err := waitConn(ctx, p, r.amInet); err != nil {
		return nil, err
	}
	return p, nil
}

// signHeaders are authmilter's default signed and oversigned fields, given
// to OpenDKIM so that both sign the same fields.
const (
	signHeaders     = "From,To,Cc,Subject,Date,Message-ID,Reply-To,In-Reply-To,References,MIME-Version,Content-Type,Content-Transfer-Encoding,List-Unsubscribe,List-Unsubscribe-Post"
	oversignHeaders = "From,To,Cc,Subject,Date,Reply-To"
)

// startOpenDKIM starts OpenDKIM in mode "sign" or "verify" on r.odInet and
// r.odUnix (two instances cannot share them, so one at a time).
func (r *runner) startOpenDKIM(ctx context.Context, mode, keysDir string) (*proc, error) {
	dnsIP, _, _ := net.SplitHostPort(r.dnsAddr)
	common := []string{
		"Syslog no",
		"Background no",
		"RequireSafeKeys no",
		"UMask 007",
		"Nameservers " + dnsIP,
		"DNSTimeout 2",
	}
	var lines []string
	switch mode {
	case "sign":
		lines = []string{
			"Mode s",
			"Domain example.com",
			"Selector bench",
			"KeyFile " + filepath.Join(keysDir, "example.com", "bench.pem"),
			"Canonicalization relaxed/relaxed",
			"SignatureAlgorithm rsa-sha256",
			"InternalHosts 127.0.0.1",
			"SignHeaders " + signHeaders,
			"OversignHeaders " + oversignHeaders,
		}
	case "sign-ed25519":
		lines = []string{
			"Mode s",
			"Domain example.com",
			"Selector " + edSelector,
			"KeyFile " + filepath.Join(keysDir, "example.com", edSelector+".pem"),
			"Canonicalization relaxed/relaxed",
			"SignatureAlgorithm ed25519-sha256",
			"InternalHosts 127.0.0.1",
			"SignHeaders " + signHeaders,
			"OversignHeaders " + oversignHeaders,
		}
	case "verify":
		lines = []string{
			"Mode v",
			"AuthservID bench.opendkim.test",
			"MaximumSignaturesToVerify 5",
		}
	}
	lines = append(lines, common...)
	var sockets [2]string
	sockets[0] = "Socket " + r.odInet
	sockets[1] = "Socket local:" + r.odUnix
	// OpenDKIM listens on one socket per instance; the unix-socket runs
	// use a second instance started on demand (see odFor).
	conf := filepath.Join(r.work, "opendkim-"+mode+".conf")
	if err := os.WriteFile(conf, []byte(strings.Join(append(lines, sockets[0]), "\n")+"\n"), 0o600); err != nil {
		return nil, err
	}
	p, err := r.start(ctx, "opendkim-"+mode, r.o.opendkim, []string{"-f", "-x", conf}, "")
	if err != nil {
		return nil, err
	}
	if err := waitConn(ctx, p, r.odInet); err != nil {
		return nil, err
	}
	// Keep the unix-socket variant's config for odUnixInstance.
	uconf := filepath.Join(r.work, "opendkim-"+mode+"-unix.conf")
	if err := os.WriteFile(uconf, []byte(strings.Join(append(lines, sockets[1]), "\n")+"\n"), 0o600); err != nil {
		return nil, err
	}
	return p, nil
}

// measurePair runs the same load against authmilter and OpenDKIM, -reps
// times, alternating which goes first, and keeps each one's best run.
func (r *runner) measurePair(ctx context.Context, name, amAddr, odAddr string, c int, msg string, inbound, quickack bool) (pair, error) {
	p := pair{name: name}
	args := []string{"-c", strconv.Itoa(c), "-per-conn", strconv.Itoa(r.o.perConn),
		"-d", (r.o.dur + r.o.warmup).String(), "-warmup", r.o.warmup.String(), "-msg", msg}
	if inbound {
		args = append(args, "-inbound", "-expect-header", "Authentication-Results", "-expect-value", "dkim=pass")
	} else {
		args = append(args, "-expect-sign")
	}
	if quickack {
		args = append(args, "-quickack")
	}
	unix := strings.HasPrefix(odAddr, "unix:")
	if unix {
		// OpenDKIM serves one socket per process: swap in the unix
		// instance for this point.
		if _, err := r.swapOpenDKIM(ctx, "unix"); err != nil {
			return p, err
		}
		defer r.swapOpenDKIM(ctx, "inet")
	}
	best := func(cur, next *point) *point {
		if cur == nil || next.Res.Errors < cur.Res.Errors ||
			(next.Res.Errors == cur.Res.Errors && next.Res.MsgsPerSec > cur.Res.MsgsPerSec) {
			return next
		}
		return cur
	}
	for rep := 0; rep < r.o.reps; rep++ {
		order := []string{"am", "od"}
		if rep%2 == 1 {
			order = []string{"od", "am"}
		}
		for _, who := range order {
			suffix := ""
			if r.o.reps > 1 {
				suffix = fmt.Sprintf(" #%d", rep+1)
			}
			if who == "am" {
				pt, err := r.measure(ctx, "authmilter "+name+suffix, r.am, amAddr, args)
				if err != nil {
					return p, err
				}
				p.am = best(p.am, pt)
			} else {
				pt, err := r.measure(ctx, "opendkim "+name+suffix, r.odSign, odAddr, args)
				if err != nil {
					return p, err
				}
				p.od = best(p.od, pt)
			}
		}
	}
	return p, nil
}

// odMode is the mode of the running OpenDKIM ("sign" or "verify").
func (r *runner) odMode() string {
	if strings.HasSuffix(r.odSign.name, "verify") || strings.HasSuffix(r.odSign.name, "verify-unix") {
		return "verify"
	}
	return "sign"
}

// swapOpenDKIM restarts OpenDKIM, same mode, on the inet or unix socket.
func (r *runner) swapOpenDKIM(ctx context.Context, transport string) (*proc, error) {
	mode := r.odMode()
	r.stop(r.odSign)
	conf := filepath.Join(r.work, "opendkim-"+mode+".conf")
	name := "opendkim-" + mode
	addr := r.odInet
	if transport == "unix" {
		conf = filepath.Join(r.work, "opendkim-"+mode+"-unix.conf")
		name += "-unix"
		addr = "unix:" + r.odUnix
		os.Remove(r.odUnix)
	}
	p, err := r.start(ctx, name, r.o.opendkim, []string{"-f", "-x", conf}, "")
	if err != nil {
		return nil, err
	}
	if err := waitConn(ctx, p, addr); err != nil {
		return nil, err
	}
	r.odSign = p
	return p, nil
}

// measure runs milterload against one milter process and reads its peak
// RSS and CPU time.
func (r *runner) measure(ctx context.Context, label string, p *proc, addr string, args []string) (*point, error) {
	return r.measureHWM(ctx, label, p, addr, args, true)
}

// measureHWM is measure, with the peak RSS reset first or not.
func (r *runner) measureHWM(ctx context.Context, label string, p *proc, addr string, args []string, reset bool) (*point, error) {
	if !reset {
		// The caller wants the peak since the process started.
	} else if err := resetHWM(p); err != nil {
		r.note("VmHWM could not be reset (%v): RSS figures are peaks since process start", err)
	}
	cpu0, err := procCPU(p)
	if err != nil {
		return nil, err
	}
	busy0, t0 := systemBusy(), time.Now()
	rss := sampleRSS(p.cmd.Process.Pid)
	res, raw, err := r.loadRaw(ctx, label, addr, args...)
	anon, file := rss.peaks()
	if err != nil {
		return nil, err
	}
	busy1, elapsed := systemBusy(), time.Since(t0).Seconds()
	cpu1, err := procCPU(p)
	if err != nil {
		return nil, err
	}
	hwm, err := procStatusKB(p, "VmHWM")
	if err != nil {
		return nil, err
	}
	pt := &point{Res: res, HWMkB: hwm, AnonKB: anon, FileKB: file, CPUms: (cpu1 - cpu0) * 1000, RawJSON: raw}
	if res.Total > 0 {
		pt.CPUPer = pt.CPUms / float64(res.Total)
	}
	if elapsed > 0 && busy1 > busy0 {
		pt.Other = max(0, (busy1-busy0)-(cpu1-cpu0)-res.ClientCPU) / elapsed
	}
	fmt.Fprintf(os.Stderr, "  %-30s %8.1f msgs/s  p50 %7.2f ms  p99 %7.2f ms  errors %d  cpu %.2f ms/msg  VmHWM %d kB  other load %.2f\n",
		label, res.MsgsPerSec, res.Latency.P50, res.Latency.P99, res.Errors, pt.CPUPer, hwm, pt.Other)
	if res.Errors > 0 {
		r.note("%s: %d errors, first: %s", label, res.Errors, res.FirstError)
	}
	return pt, nil
}

func (r *runner) note(format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	for _, n := range r.notes {
		if n == s {
			return
		}
	}
	r.notes = append(r.notes, s)
}

// measureMemory restarts both milters and sends 64 concurrent 1 MiB
// messages; the peak RSS is then the process's lifetime peak.
func (r *runner) measureMemory(ctx context.Context) error {
	conf := filepath.Join(r.work, "authmilter.toml")
	r.stop(r.am)
	var err error
	if r.am, err = r.startAuthmilter(ctx, conf); err != nil {
		return err
	}
	if r.odSign, err = r.swapOpenDKIM(ctx, "inet"); err != nil {
		return err
	}
	time.Sleep(200 * time.Millisecond)
	r.memIdle[0], _ = procStatusKB(r.am, "VmHWM")
	r.memIdle[1], _ = procStatusKB(r.odSign, "VmHWM")
	args := []string{"-c", "64", "-per-conn", "5", "-n", "640", "-d", "60s", "-msg", r.msg1m, "-expect-sign"}
	if r.o.quickack {
		args = append(args, "-quickack")
	}
	p := pair{name: "64 × 1 MiB"}
	// No HWM reset: a fresh process's lifetime peak is what we want.
	if p.am, err = r.measureHWM(ctx, "authmilter 64×1MiB", r.am, r.amInet, args, false); err != nil {
		return err
	}
	if p.od, err = r.measureHWM(ctx, "opendkim 64×1MiB", r.odSign, r.odInet, args, false); err != nil {
		return err
	}
	r.mem = &p
	return nil
}

// measureVerify swaps OpenDKIM to verifying mode and measures inbound mail.
func (r *runner) measureVerify(ctx context.Context) error {
	r.stop(r.odSign)
	var err error
	if r.odSign, err = r.startOpenDKIM(ctx, "verify", ""); err != nil {
		return err
	}
	// Both must pass the signature before the clock starts.
	for _, a := range []string{r.amInet, r.odInet} {
		if _, err := r.load(ctx, "smoke", a, "-c", "1", "-n", "3", "-d", "10s", "-msg", r.signed, "-inbound",
			"-expect-header", "Authentication-Results", "-expect-value", "dkim=pass"); err != nil {
			return fmt.Errorf("verification smoke test of %s: %w", a, err)
		}
	}
	for _, c := range r.o.conc {
		p, err := r.measurePair(ctx, fmt.Sprintf("c=%d", c), r.amInet, r.odInet, c, r.signed, true, r.o.quickack)
		if err != nil {
			return err
		}
		r.verifyRes = append(r.verifyRes, p)
	}
	return nil
}

var rsaLimitRE = regexp.MustCompile(`BenchmarkSignVsRSALimit\S*\s+\d+\s+([\d.]+) ns/op\s+([\d.]+) %rsa-limit\s+([\d.]+) rsa-ns/sig`)

// runGoBench runs the policy benchmarks three times; the RSA-limit ratio
// reported is the median run's (both halves of each run are measured back
// to back, so other load on the machine affects them alike).
func (r *runner) runGoBench(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "test", "-run", "^$", "-bench", "SignVsRSALimit|RSASignPKCS1v15",
		"-benchmem", "-benchtime", "1s", "-count", "3", "./policy")
	out, err := cmd.CombinedOutput()
	r.goBenchOut = strings.TrimSpace(string(out))
	if err != nil {
		r.note("go test -bench in ./policy failed: %v", err)
		return
	}
	ms := rsaLimitRE.FindAllStringSubmatch(r.goBenchOut, -1)
	if len(ms) == 0 {
		return
	}
	sort.Slice(ms, func(i, j int) bool {
		a, _ := strconv.ParseFloat(ms[i][2], 64)
		b, _ := strconv.ParseFloat(ms[j][2], 64)
		return a < b
	})
	m := ms[len(ms)/2]
	r.rsaLimit = fmt.Sprintf("%s%% (median of %d runs; one 4 KiB message through policy.Begin/Write/Finish: %s ns, rsa.SignPKCS1v15 alone: %s ns)", m[2], len(ms), m[1], m[3])
	r.rsaNs, _ = strconv.ParseFloat(m[3], 64)
}

// load runs milterload and returns its result; it fails if the run had errors.
func (r *runner) load(ctx context.Context, label, addr string, args ...string) (loadResult, error) {
	res, _, err := r.loadRaw(ctx, label, addr, args...)
	if err == nil && (res.Errors > 0 || res.Messages == 0) {
		err = fmt.Errorf("%d errors in %d messages: %s", res.Errors, res.Total, res.FirstError)
	}
	return res, err
}

func (r *runner) loadRaw(ctx context.Context, label, addr string, args ...string) (loadResult, string, error) {
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	full := append([]string{"-addr", addr, "-json", "-label", label}, args...)
	cmd := exec.CommandContext(ctx, filepath.Join(r.o.bin, "milterload"), full...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return loadResult{}, "", fmt.Errorf("milterload %s: %v: %s", strings.Join(full, " "), err, strings.TrimSpace(stderr.String()))
	}
	var res loadResult
	if err := json.Unmarshal(out, &res); err != nil {
		return res, "", fmt.Errorf("milterload output %q: %w", out, err)
	}
	return res, strings.TrimSpace(string(out)), nil
}

// start starts a child process with its output in a log file.
func (r *runner) start(ctx context.Context, name, path string, args []string, dir string) (*proc, error) {
	logPath := filepath.Join(r.work, name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Dir = dir
	// Own process group, so a ^C to the script does not reach it first;
	// we stop it ourselves, by PID.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	f.Close()
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { cmd.Wait(); close(p.done) }()
	r.procs = append(r.procs, p)
	return p, nil
}

// stop ends one of our processes: SIGTERM, then SIGKILL after 2s.
func (r *runner) stop(p *proc) {
	if p == nil {
		return
	}
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(2 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

func (r *runner) cleanup() {
	for i := len(r.procs) - 1; i >= 0; i-- {
		r.stop(r.procs[i])
	}
	if r.work != "" {
		if r.o.keep {
			fmt.Fprintf(os.Stderr, "work directory kept: %s\n", r.work)
		} else {
			os.RemoveAll(r.work)
		}
	}
}

func (r *runner) output(ctx context.Context, path string, args ...string) (string, error) {
	return r.outputStdin(ctx, nil, path, args...)
}

func (r *runner) outputStdin(ctx context.Context, stdin []byte, path string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%v: %s", err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

// waitConn waits until addr accepts connections or the process exits.
func waitConn(ctx context.Context, p *proc, addr string) error {
	network, a := "tcp", strings.TrimPrefix(addr, "inet:")
	if strings.HasPrefix(addr, "unix:") {
		network, a = "unix", strings.TrimPrefix(addr, "unix:")
	} else if port, host, ok := strings.Cut(a, "@"); ok {
		a = net.JoinHostPort(host, port)
	}
	return waitFor(ctx, p, func() bool {
		c, err := net.DialTimeout(network, a, 200*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

// waitUDP waits until the DNS server answers a query.
func waitUDP(ctx context.Context, p *proc, addr string) error {
	// A minimal query for "example.com. TXT".
	q := []byte{0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 7, 'e', 'x', 'a', 'm', 'p', 'l', 'e', 3, 'c', 'o', 'm', 0, 0, 16, 0, 1}
	return waitFor(ctx, p, func() bool {
		c, err := net.Dial("udp", addr)
		if err != nil {
			return false
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(200 * time.Millisecond))
		if _, err := c.Write(q); err != nil {
			return false
		}
		var b [512]byte
		n, err := c.Read(b[:])
		return err == nil && n > 12 && b[0] == 0x12 && b[1] == 0x34
	})
}

func waitFor(ctx context.Context, p *proc, ready func() bool) error {
	deadline := time.Now().Add(15 * time.Second)
	for {
		if ready() {
			return nil
		}
		select {
		case <-p.done:
			log, _ := os.ReadFile(p.log)
			return fmt.Errorf("%s exited before it was ready: %s", p.name, strings.TrimSpace(string(log)))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(p.log)
			return fmt.Errorf("%s not ready after 15s: %s", p.name, strings.TrimSpace(string(log)))
		}
	}
}

// freeLoopback53 finds a 127.x.y.z other than 127.0.0.1 and 127.0.0.53
// whose port 53 is free for UDP and TCP.
func freeLoopback53() (string, bool) {
	for range 50 {
		ip := net.IPv4(127, byte(rand.IntN(256)), byte(rand.IntN(256)), byte(1+rand.IntN(254)))
		if ip.Equal(net.IPv4(127, 0, 0, 1)) || ip.Equal(net.IPv4(127, 0, 0, 53)) {
			continue
		}
		addr := net.JoinHostPort(ip.String(), "53")
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			if errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM) {
				return "", false
			}
			continue
		}
		l, err := net.Listen("tcp", addr)
		pc.Close()
		if err != nil {
			continue
		}
		l.Close()
		return ip.String(), true
	}
	return "", false
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// resetHWM resets the process's peak RSS to its current RSS.
func resetHWM(p *proc) error {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", p.cmd.Process.Pid), []byte("5"), 0)
}

// procStatusKB reads a "kB" field of /proc/PID/status.
func procStatusKB(p *proc, field string) (int, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			return strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
		}
	}
	return 0, fmt.Errorf("%s: no %s in /proc/%d/status", p.name, field, p.cmd.Process.Pid)
}

// procCPU returns the process's user+system CPU seconds (all threads).
func procCPU(p *proc) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		return 0, fmt.Errorf("%s: %w", p.name, err)
	}
	// Fields after the parenthesised command name; utime and stime are
	// fields 14 and 15 (1-based) of the whole line.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("%s: short /proc stat", p.name)
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / clkTck, nil
}

// systemBusy returns the CPU seconds all CPUs have spent busy since boot
// (/proc/stat: everything but idle and iowait).
func systemBusy() float64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0
	}
	var busy float64
	for i, v := range f[1:] {
		if i == 3 || i == 4 || i >= 8 { // idle, iowait; guest time is already in user
			continue
		}
		x, _ := strconv.ParseFloat(v, 64)
		busy += x
	}
	return busy / clkTck
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// clkTck is USER_HZ, 100 on every Linux architecture Go supports.
const clkTck = 100

// report renders RESULTS.md.
func (r *runner) report() string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w("# authmilter vs OpenDKIM: measured results\n\n")
	w("Generated by `bench/compare.sh` (bench/compare) on %s; the run took %.0f s.\n\n",
		r.started.UTC().Format("2006-01-02 15:04 MST"), time.Since(r.started).Seconds())
	w("## Machine and versions\n\n")
	w("| | |\n| --- | --- |\n")
	w("| CPU | %s |\n", cpuModel())
	w("| nproc | %d |\n", runtime.NumCPU())
	w("| memory | %s |\n", memTotal())
	w("| kernel | %s |\n", kernel())
	w("| Go | %s |\n", goVersion())
	w("| authmilter | %s |\n", r.authmilterVersion())
	w("| OpenDKIM | %s |\n", openDKIMVersion(r.o.opendkim))
	w("| load average at start / end | %s / %s |\n", r.loadStart, loadAvg())
	w("\n")
	w("## Setup\n\n")
	w("- Key: one RSA-2048 key made by `authmilter keygen`, used by both; published on a testdnsd server at %s.\n", r.dnsAddr)
	if len(r.signEd) > 0 {
		w("- Ed25519 points: one Ed25519 key (selector %s) made by `authmilter keygen`, used by both: a second authmilter whose key "+
			"directory holds only it, and OpenDKIM with `SignatureAlgorithm ed25519-sha256` and that key as `KeyFile`; "+
			"every reply must add a DKIM-Signature, and a smoke test first checks a=ed25519-sha256 on both.\n", edSelector)
	}
	w("- authmilter: relaxed/relaxed, default signed headers (%s) with From, To, Cc, Subject, Date, Reply-To oversigned, "+
		"`keys.require_published = true`, `log.level = warn`, metrics off.\n", signHeaders)
	w("- OpenDKIM: `Mode s`, `Domain`/`Selector`/`KeyFile` with the same key, `Canonicalization relaxed/relaxed`, " +
		"`SignHeaders` and `OversignHeaders` set to the same lists, `InternalHosts 127.0.0.1`, `Syslog no` (neither milter logs per message).\n")
	w("- Load: `milterload` (cmd/milterload), Postfix-like protocol (macros, SMFIP_HDR_LEADSPC offered, two ABORTs per message), "+
		"%d transactions per connection, the same message file for both, every reply checked "+
		"(DKIM-Signature added; for verification an Authentication-Results field with dkim=pass). ", r.o.perConn)
	qa := ""
	if r.o.quickack {
		qa = " The TCP client sets TCP_QUICKACK (see the note on delayed ACKs below)."
	}
	w("Each point: %s warm-up, then %s measured; milters measured one after the other, each alone on the machine.%s\n",
		r.o.warmup, r.o.dur, qa)
	w("- Latency: per message, from MAIL to the end-of-message reply. Throughput: messages completed per second. " +
		"CPU/msg: the milter process's user+system time over the messages it handled; it is less disturbed by other load " +
		"on the machine than throughput, and \"CPU ratio\" (OpenDKIM's CPU/msg over authmilter's) estimates the throughput " +
		"ratio when the milter is CPU-bound. " +
		"Peak RSS: VmHWM of the milter process, reset before each point (so never below the RSS at its start).\n")
	w("- The load generator runs on the same CPUs (its CPU time is in the raw data). " +
		"\"Other load\" is the CPU (in cores) used by everything else on the machine during the run: on a shared machine, " +
		"a value well above 0 means that point was disturbed.\n")
	if r.o.reps > 1 {
		w("- Each point was run %d times, alternating which milter goes first; the table shows each milter's best run.\n", r.o.reps)
	}
	w("\n")

	r.summary(&b)
	r.issue14(&b)
	w("## Signing, %s message, TCP (inet:127.0.0.1)\n\n", r.o.sizeLabel())
	r.table(&b, r.sign)
	if r.noQuickack != nil {
		w("\nWithout TCP_QUICKACK on the client (c=8): authmilter %.0f msgs/s, p99 %.1f ms; OpenDKIM %.0f msgs/s, p99 %.1f ms. "+
			"libmilter writes each reply packet separately without TCP_NODELAY, so at the end of each message its second packet "+
			"waits for the client's delayed ACK (~40 ms); Go sets TCP_NODELAY. An MTA that does not set TCP_QUICKACK should see the same "+
			"with OpenDKIM on an inet socket (not checked here with a real Postfix).\n",
			r.noQuickack.am.Res.MsgsPerSec, r.noQuickack.am.Res.Latency.P99, r.noQuickack.od.Res.MsgsPerSec, r.noQuickack.od.Res.Latency.P99)
	}
	if len(r.signUnix) > 0 {
		w("\n## Signing, %s message, unix socket\n\n", r.o.sizeLabel())
		r.table(&b, r.signUnix)
	}
	if len(r.signEd) > 0 {
		w("\n## Signing with Ed25519 (ed25519-sha256), %s message, TCP\n\n", r.o.sizeLabel())
		r.table(&b, r.signEd)
	}
	if r.mem != nil {
		w("\n## Memory: 64 concurrent connections, 1 MiB messages (640 messages)\n\n")
		w("Fresh processes; peak RSS is the process's lifetime peak (VmHWM). Target for authmilter: ≤ 20 MiB, independent of body size.\n\n")
		w("| | peak RSS | RSS at start | sampled peak anonymous / file-backed | msgs/s | p99 ms | CPU/msg ms | errors | other load |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
		for _, x := range []struct {
			name string
			pt   *point
			idle int
		}{{"authmilter", r.mem.am, r.memIdle[0]}, {"OpenDKIM", r.mem.od, r.memIdle[1]}} {
			w("| %s | %s | %s | %s / %s | %.1f | %.0f | %.2f | %d | %.2f |\n", x.name, mib(x.pt.HWMkB), mib(x.idle),
				mib(x.pt.AnonKB), mib(x.pt.FileKB), x.pt.Res.MsgsPerSec, x.pt.Res.Latency.P99, x.pt.CPUPer, x.pt.Res.Errors, x.pt.Other)
		}
	}
	if len(r.verifyRes) > 0 {
		w("\n## Verification, the %s message signed by authmilter, TCP, inbound client 192.0.2.25\n\n", r.o.sizeLabel())
		w("OpenDKIM `Mode v` (DKIM only); authmilter inbound does DKIM, SPF and DMARC and writes one Authentication-Results field. " +
			"Keys, SPF and DMARC records come from the testdnsd server (both milters cache answers).\n\n")
		r.table(&b, r.verifyRes)
	}
	w("\n## Go RSA limit\n\n")
	if r.rsaLimit != "" {
		w("`go test -bench SignVsRSALimit ./policy`: message signing reaches %s.\n", r.rsaLimit)
	} else {
		w("Not measured.\n")
	}
	if len(r.sign) > 0 && r.rsaNs > 0 {
		for _, p := range r.sign {
			if p.am.CPUPer > 0 {
				w("In the daemon at %s, authmilter used %.3f ms of CPU per message: the RSA signature (%.3f ms) is %.0f%% of it.\n",
					p.name, p.am.CPUPer, r.rsaNs/1e6, 100*r.rsaNs/1e6/p.am.CPUPer)
			}
		}
	}
	if r.goBenchOut != "" {
		w("\n```\n%s\n```\n", r.goBenchOut)
	}
	if r.sigOut != "" {
		w("\n`go test -bench RSASign/(go|openssl)$ -count 5 ./keys` (one RSA-2048 signature):\n\n```\n%s\n```\n", r.sigOut)
	}
	if len(r.notes) > 0 {
		w("\n## Notes\n\n")
		for _, n := range r.notes {
			w("- %s\n", n)
		}
	}
	w("\n## Raw milterload results (JSON, one per run)\n\n<details><summary>show</summary>\n\n```\n")
	all := append(append(append(append([]pair{}, r.sign...), r.signUnix...), r.signEd...), r.verifyRes...)
	if r.noQuickack != nil {
		all = append(all, *r.noQuickack)
	}
	if r.mem != nil {
		all = append(all, *r.mem)
	}
	for _, p := range all {
		w("%s\n%s\n", p.am.RawJSON, p.od.RawJSON)
	}
	w("```\n\n</details>\n")
	return b.String()
}

// verdict is a target's last column.
func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "**not met**"
}

// ratios lists f of every point and says whether ok holds for all.
func ratios(ps []pair, f func(p pair) float64, ok func(float64) bool) (string, bool) {
	var parts []string
	all := len(ps) > 0
	for _, p := range ps {
		v := f(p)
		parts = append(parts, fmt.Sprintf("%s: %.2f", p.name, v))
		all = all && ok(v)
	}
	return strings.Join(parts, ", "), all
}

// thr and p99 are authmilter's throughput and p99 latency over OpenDKIM's.
func thr(p pair) float64 { return p.am.Res.MsgsPerSec / max(p.od.Res.MsgsPerSec, 1e-9) }
func p99(p pair) float64 { return p.am.Res.Latency.P99 / max(p.od.Res.Latency.P99, 1e-9) }

// summary checks the results against DESIGN.md's performance targets.
func (r *runner) summary(b *strings.Builder) {
	w := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	cpu := func(p pair) float64 { return p.od.CPUPer / max(p.am.CPUPer, 1e-9) }
	ge2 := func(v float64) bool { return v >= 2 }
	le05 := func(v float64) bool { return v <= 0.5 }
	w("## Against the targets (DESIGN.md)\n\n| target | measured | |\n| --- | --- | --- |\n")
	if len(r.sign) > 0 {
		s, ok := ratios(r.sign, thr, ge2)
		w("| signing throughput ≥ 2× OpenDKIM at every concurrency (TCP) | %s | %s |\n", s, verdict(ok))
		s, _ = ratios(r.sign, cpu, ge2)
		w("| (the same as CPU per message, OpenDKIM / authmilter) | %s | |\n", s)
		s, ok = ratios(r.sign, p99, le05)
		w("| signing p99 ≤ ½ OpenDKIM's (TCP) | %s | %s |\n", s, verdict(ok))
	}
	if len(r.signEd) > 0 {
		s, ok := ratios(r.signEd, thr, func(v float64) bool { return v >= 5 })
		w("| Ed25519 signing throughput ≥ 5× OpenDKIM at every concurrency (TCP; issue 14) | %s | %s |\n", s, verdict(ok))
	}
	if len(r.verifyRes) > 0 {
		s, ok := ratios(r.verifyRes, thr, ge2)
		w("| verification throughput ≥ 2× OpenDKIM | %s | %s |\n", s, verdict(ok))
		s, ok = ratios(r.verifyRes, p99, le05)
		w("| verification p99 ≤ ½ OpenDKIM's | %s | %s |\n", s, verdict(ok))
	}
	if r.mem != nil {
		w("| peak RSS ≤ 20 MiB with 64 concurrent 1 MiB messages | %s (OpenDKIM %s) | %s |\n",
			mib(r.mem.am.HWMkB), mib(r.mem.od.HWMkB), verdict(r.mem.am.HWMkB <= 20*1024))
	}
	if r.rsaNs > 0 {
		pct := strings.SplitN(r.rsaLimit, "%", 2)[0]
		v, _ := strconv.ParseFloat(pct, 64)
		daemon := ""
		for _, p := range r.sign {
			if p.am.Res.Concurrency == 8 && p.am.CPUPer > 0 {
				daemon = fmt.Sprintf("; in the daemon at c=8 the signature is %.0f%% of its CPU per message", 100*r.rsaNs/1e6/p.am.CPUPer)
			}
		}
		w("| signing ≥ 80%% of the Go RSA limit | %.1f%% in `BenchmarkSignVsRSALimit`%s | %s |\n", v, daemon, verdict(v >= 80))
	}
	w("\nWhere the time goes, and what to change: bench/PROFILE.md.\n\n")
}

func (r *runner) table(b *strings.Builder, ps []pair) {
	fmt.Fprintf(b, "| c | authmilter msgs/s | OpenDKIM msgs/s | **ratio** | authmilter p50 / p99 ms | OpenDKIM p50 / p99 ms | **p99 ratio** | CPU/msg ms (am / od) | CPU ratio (od / am) | peak RSS (am / od) | errors (am / od) | other load (am / od) |\n")
	fmt.Fprintf(b, "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, p := range ps {
		ratio, p99 := 0.0, 0.0
		if p.od.Res.MsgsPerSec > 0 {
			ratio = p.am.Res.MsgsPerSec / p.od.Res.MsgsPerSec
		}
		if p.od.Res.Latency.P99 > 0 {
			p99 = p.am.Res.Latency.P99 / p.od.Res.Latency.P99
		}
		cpuRatio := 0.0
		if p.am.CPUPer > 0 {
			cpuRatio = p.od.CPUPer / p.am.CPUPer
		}
		fmt.Fprintf(b, "| %d | %.0f | %.0f | **%.2f×** | %.2f / %.2f | %.2f / %.2f | **%.2f** | %.2f / %.2f | %.2f× | %s / %s | %d / %d | %.2f / %.2f |\n",
			p.am.Res.Concurrency, p.am.Res.MsgsPerSec, p.od.Res.MsgsPerSec, ratio,
			p.am.Res.Latency.P50, p.am.Res.Latency.P99, p.od.Res.Latency.P50, p.od.Res.Latency.P99, p99,
			p.am.CPUPer, p.od.CPUPer, cpuRatio, mib(p.am.HWMkB), mib(p.od.HWMkB), p.am.Res.Errors, p.od.Res.Errors, p.am.Other, p.od.Other)
	}
}

func mib(kb int) string { return fmt.Sprintf("%.1f MiB", float64(kb)/1024) }

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	info := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if line == "" {
			break // the first processor is enough
		}
		if k, v, ok := strings.Cut(line, ":"); ok {
			info[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	model := info["model name"]
	if model == "" {
		return "unknown"
	}
	var extra []string
	if info["cpu family"] != "" {
		extra = append(extra, "family "+info["cpu family"]+" model "+info["model"])
	}
	if mhz, err := strconv.ParseFloat(info["cpu MHz"], 64); err == nil {
		extra = append(extra, fmt.Sprintf("%.0f MHz", mhz))
	}
	for _, f := range []string{"sha_ni", "avx2", "adx"} {
		if slices.Contains(strings.Fields(info["flags"]), f) {
			extra = append(extra, f)
		}
	}
	if len(extra) > 0 {
		model += " (" + strings.Join(extra, ", ") + ")"
	}
	return model
}

func memTotal() string {
	b, _ := os.ReadFile("/proc/meminfo")
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			kb, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			return fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
		}
	}
	return "unknown"
}

func kernel() string {
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return "unknown"
	}
	return "Linux " + strings.TrimSpace(string(b))
}

func goVersion() string {
	out, err := exec.Command("go", "version").Output()
	if err != nil {
		return runtime.Version() + " (compare's own toolchain)"
	}
	return strings.TrimSpace(string(out))
}

func (r *runner) authmilterVersion() string {
	v, _ := exec.Command(filepath.Join(r.o.bin, "authmilter"), "version").Output()
	s := strings.ReplaceAll(strings.TrimSpace(string(v)), "\n", ", ") // with the signer line
	// Read-only look at the checkout, if there is one.
	if rev, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output(); err == nil {
		s += ", checkout " + strings.TrimSpace(string(rev))
		if st, err := exec.Command("git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(bytes.TrimSpace(st)) > 0 {
			s += " with uncommitted changes"
		}
	}
	return s
}

func openDKIMVersion(bin string) string {
	out, _ := exec.Command(bin, "-V").CombinedOutput()
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	var keep []string
	for _, l := range lines {
		l = strings.TrimSpace(l)
		if strings.HasPrefix(l, "OpenDKIM Filter") || strings.HasPrefix(l, "opendkim:") || strings.HasPrefix(l, "Compiled with") {
			keep = append(keep, strings.TrimPrefix(l, "opendkim: "))
		}
	}
	return strings.Join(keep, "; ")
}
