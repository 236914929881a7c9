// Command milterload is a load generator for milters: it plays the MTA side
// of the milter protocol the way Postfix does, on many connections at once,
// and measures throughput and per-message latency.
//
// Usage:
//
//	milterload -addr inet:127.0.0.1:8891 [-c 8] [-per-conn 50] [-n N] [-d 10s]
//	           [-warmup 1s] [-msg FILE | -size 4KiB] [-inbound] [-expect-sign]
//	           [-from-domains FILE]
//	           [-expect-header NAME [-expect-value TEXT]] [-label NAME] [-json]
//
// Every run is bounded in time: -d (default 10s) always applies, and -n, if
// given, stops it earlier. Each of the -c workers opens a connection, sends
// -per-conn transactions over it (as an MTA does with several messages in
// one SMTP session), closes it and opens the next one.
//
// Latency is measured per message from the first byte of MAIL (its macros)
// to the milter's final end-of-message reply. Connection setup, CONNECT and
// HELO are not part of it. Messages that start during -warmup are sent but
// not counted.
//
// What is sent, per transaction, follows Postfix 3.7 (src/milter/milter8.c),
// like internal/miltertest: macros before each event, MAIL, RCPT, DATA (to
// protocol version 4 and later milters that want it), each header field
// with macro "i", EOH, body chunks of at most 65535 bytes, end of message,
// then two ABORTs. Option negotiation offers protocol version 6 with every
// action except SETSYMLIST and every protocol flag except SMFIP_SKIP,
// including SMFIP_HDR_LEADSPC, as Postfix does. One difference from Postfix:
// packets that get no reply are written together with the next packet that
// does (one write system call per round trip), which keeps the load
// generator's own cost low on a small machine.
package main

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/emersion/go-milter"

	"github.com/authmilter/authmilter/internal/loadmsg"
	"github.com/authmilter/authmilter/internal/miltertest"
)

const usage = `usage: milterload -addr inet:HOST:PORT|unix:/PATH [flags]

Drives a milter with concurrent MTA-like connections and reports
throughput (msgs/s), latency percentiles (MAIL to end-of-message reply)
and errors. Every run is bounded by -d; -n stops it earlier.

Flags:
`

func main() {
	cfg, err := parseFlags(os.Args[1:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "milterload:", err)
		os.Exit(2)
	}
	res, err := run(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "milterload:", err)
		os.Exit(1)
	}
	if cfg.JSON {
		enc := json.NewEncoder(os.Stdout)
		if err := enc.Encode(res); err != nil {
			fmt.Fprintln(os.Stderr, "milterload:", err)
			os.Exit(1)
		}
	} else {
		fmt.Println(res.String())
	}
	if res.Errors > 0 && cfg.FailOnError {
		os.Exit(1)
	}
}

// config is the parsed command line.
type config struct {
	Network, Addr string
	Concurrency   int
	PerConn       int
	Count         int           // 0: no count limit
	Duration      time.Duration // always > 0
	Warmup        time.Duration
	Timeout       time.Duration
	Message       []byte
	MsgSource     string
	Inbound       bool
	ClientIP      string
	MailFrom      string
	Rcpt          string
	Helo          string
	ExpectHeader  string
	ExpectValue   string
	Label         string
	JSON          bool
	FailOnError   bool
	QuickAck      bool
	// FromDomains, when set, are the From domains the messages take in
	// turn (-from-domains).
	FromDomains []string
}

func parseFlags(args []string) (*config, error) {
	fs := flag.NewFlagSet("milterload", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	addr := fs.String("addr", "", "milter socket: inet:HOST:PORT, inet:PORT@HOST, HOST:PORT or unix:/PATH (required)")
	c := fs.Int("c", 1, "concurrent connections")
	perConn := fs.Int("per-conn", 50, "transactions per connection before it is closed and reopened")
	n := fs.Int("n", 0, "total messages to send, warm-up included (0: until -d)")
	d := fs.Duration("d", 10*time.Second, "maximum duration of the run, warm-up included (must be > 0)")
	warmup := fs.Duration("warmup", 0, "messages started during this time are sent but not counted")
	timeout := fs.Duration("timeout", 10*time.Second, "timeout of each read and write on the milter socket")
	msgFile := fs.String("msg", "", "message file (LF or CRLF line ends); default: a generated message of -size")
	size := fs.String("size", "4KiB", "size of the generated message: bytes or a number with k/KiB/M/MiB")
	inbound := fs.Bool("inbound", false, "act as an inbound client (default client 192.0.2.25) instead of outbound (127.0.0.1)")
	clientIP := fs.String("client-ip", "", "SMTP client address reported in CONNECT (overrides -inbound's default)")
	mailFrom := fs.String("mail-from", "sender@example.com", "envelope sender")
	rcpt := fs.String("rcpt", "rcpt@example.org", "envelope recipient")
	helo := fs.String("helo", "", "HELO name (default: localhost outbound, mail.example.com inbound)")
	expectSign := fs.Bool("expect-sign", false, "count a message as an error unless the reply adds a DKIM-Signature field")
	expectHeader := fs.String("expect-header", "", "count a message as an error unless the reply adds this header field")
	expectValue := fs.String("expect-value", "", "with -expect-header: its value must contain this text (e.g. dkim=pass)")
	label := fs.String("label", "", "name printed with the results")
	asJSON := fs.Bool("json", false, "print the result as one JSON object")
	failOnError := fs.Bool("fail-on-error", false, "exit with status 1 if any message failed")
	quickAck := fs.Bool("quickack", false, "TCP: set TCP_QUICKACK before every read so that the client never delays its ACKs\n"+
		"(a milter that writes a reply in several small packets without TCP_NODELAY, such as libmilter,\n"+
		"otherwise waits for the client's delayed ACK, about 40 ms, at each end of message)")
	fromDomains := fs.String("from-domains", "", "file of domains, one per line: each message's From (header field and envelope)\n"+
		"is sender@ the next one, in turn, so that a signer uses many domains' keys (default: as in the message)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if *addr == "" {
		fs.Usage()
		return nil, errors.New("-addr is required")
	}
	cfg := &config{
		Concurrency: *c, PerConn: *perConn, Count: *n, Duration: *d, Warmup: *warmup, Timeout: *timeout,
		Inbound: *inbound, ClientIP: *clientIP, MailFrom: *mailFrom, Rcpt: *rcpt, Helo: *helo,
		ExpectHeader: *expectHeader, ExpectValue: *expectValue, Label: *label, JSON: *asJSON, FailOnError: *failOnError, QuickAck: *quickAck,
	}
	var err error
	if cfg.Network, cfg.Addr, err = parseAddr(*addr); err != nil {
		return nil, err
	}
	switch {
	case cfg.Concurrency < 1:
		return nil, errors.New("-c must be at least 1")
	case cfg.PerConn < 1:
		return nil, errors.New("-per-conn must be at least 1")
	case cfg.Count < 0:
		return nil, errors.New("-n must not be negative")
	case cfg.Duration <= 0:
		return nil, errors.New("-d must be positive: every run is bounded in time")
	case cfg.Warmup < 0 || cfg.Warmup >= cfg.Duration:
		return nil, errors.New("-warmup must be shorter than -d")
	case cfg.Timeout <= 0:
		return nil, errors.New("-timeout must be positive")
	}
	if *expectSign {
		if cfg.ExpectHeader != "" && !strings.EqualFold(cfg.ExpectHeader, "DKIM-Signature") {
			return nil, errors.New("-expect-sign and -expect-header name different fields")
		}
		cfg.ExpectHeader = "DKIM-Signature"
	}
	if cfg.ExpectValue != "" && cfg.ExpectHeader == "" {
		return nil, errors.New("-expect-value needs -expect-header")
	}
	if cfg.ClientIP == "" {
		cfg.ClientIP = "127.0.0.1"
		if cfg.Inbound {
			cfg.ClientIP = "192.0.2.25"
		}
	}
	if cfg.Helo == "" {
		cfg.Helo = "localhost"
		if cfg.Inbound {
			cfg.Helo = "mail.example.com"
		}
	}
	if *fromDomains != "" {
		data, err := os.ReadFile(*fromDomains)
		if err != nil {
			return nil, fmt.Errorf("-from-domains: %w", err)
		}
		cfg.FromDomains = strings.Fields(string(data))
		if len(cfg.FromDomains) == 0 {
			return nil, fmt.Errorf("-from-domains: %s lists no domain", *fromDomains)
		}
	}
	if *msgFile != "" {
		if cfg.Message, err = os.ReadFile(*msgFile); err != nil {
			return nil, err
		}
		cfg.MsgSource = *msgFile
	} else {
		sz, err := parseSize(*size)
		if err != nil {
			return nil, fmt.Errorf("-size: %w", err)
		}
		cfg.Message = loadmsg.Generate(sz, "milterload", domainOf(cfg.MailFrom), domainOf(cfg.Rcpt))
		cfg.MsgSource = "generated"
	}
	return cfg, nil
}

// parseAddr accepts the socket syntaxes of milter configurations.
func parseAddr(s string) (network, addr string, err error) {
	kind, rest, ok := strings.Cut(s, ":")
	switch {
	case ok && (kind == "unix" || kind == "local"):
		return "unix", rest, nil
	case ok && (kind == "inet" || kind == "inet6" || kind == "tcp"):
		if port, host, ok := strings.Cut(rest, "@"); ok { // Sendmail/OpenDKIM: inet:PORT@HOST
			return "tcp", net.JoinHostPort(strings.Trim(host, "[]"), port), nil
		}
		return "tcp", rest, nil
	case strings.HasPrefix(s, "/"):
		return "unix", s, nil
	}
	if _, _, err := net.SplitHostPort(s); err == nil {
		return "tcp", s, nil
	}
	return "", "", fmt.Errorf("-addr %q: want inet:HOST:PORT, inet:PORT@HOST, HOST:PORT or unix:/PATH", s)
}

// parseSize reads "4096", "4k", "4KiB", "1M", "1MiB".
func parseSize(s string) (int, error) {
	t := strings.TrimSpace(s)
	mult := 1
	lower := strings.ToLower(t)
	for _, u := range []struct {
		suffix string
		mult   int
	}{{"kib", 1 << 10}, {"mib", 1 << 20}, {"kb", 1 << 10}, {"mb", 1 << 20}, {"k", 1 << 10}, {"m", 1 << 20}, {"b", 1}} {
		if strings.HasSuffix(lower, u.suffix) {
			mult = u.mult
			t = strings.TrimSpace(t[:len(t)-len(u.suffix)])
			break
		}
	}
	n, err := strconv.Atoi(t)
	if err != nil || n <= 0 || n > math.MaxInt32/mult {
		return 0, fmt.Errorf("invalid size %q", s)
	}
	return n * mult, nil
}

func domainOf(addr string) string {
	if i := strings.LastIndexByte(addr, '@'); i >= 0 {
		return addr[i+1:]
	}
	return "example.com"
}

// Result is what a run measured.
type Result struct {
	Label       string  `json:"label,omitempty"`
	Addr        string  `json:"addr"`
	Direction   string  `json:"direction"`
	Concurrency int     `json:"concurrency"`
	PerConn     int     `json:"per_conn"`
	SizeBytes   int     `json:"size_bytes"`
	Messages    int     `json:"messages"`    // counted (after warm-up) and successful
	Errors      int     `json:"errors"`      // counted messages that failed
	Total       int     `json:"total"`       // every message started, warm-up included
	Connections int     `json:"connections"` // connections opened
	Seconds     float64 `json:"seconds"`     // measured interval
	MsgsPerSec  float64 `json:"msgs_per_s"`
	Latency     Latency `json:"latency_ms"`
	// Expected counts counted messages whose reply had -expect-header.
	Expected   int            `json:"expected,omitempty"`
	ErrorKinds map[string]int `json:"error_kinds,omitempty"`
	FirstError string         `json:"first_error,omitempty"`
	// ClientCPU is the CPU time (user+system) of the load generator itself.
	ClientCPU float64 `json:"client_cpu_s"`
	// Negotiated is the milter's answer to option negotiation.
	Negotiated string `json:"negotiated,omitempty"`
}

// Latency holds percentiles of successful counted messages, in ms.
type Latency struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p999"`
	Max  float64 `json:"max"`
	Mean float64 `json:"mean"`
}

func (r *Result) String() string {
	label := r.Label
	if label == "" {
		label = r.Addr
	}
	s := fmt.Sprintf("%s: %s c=%d size=%d: %d msgs in %.2fs = %.1f msgs/s; latency ms p50 %.2f p90 %.2f p99 %.2f max %.2f; errors %d; client cpu %.2fs",
		label, r.Direction, r.Concurrency, r.SizeBytes, r.Messages, r.Seconds, r.MsgsPerSec,
		r.Latency.P50, r.Latency.P90, r.Latency.P99, r.Latency.Max, r.Errors, r.ClientCPU)
	if r.FirstError != "" {
		s += "; first error: " + r.FirstError
	}
	return s
}

// shared is the state the workers share.
type shared struct {
	cfg       *config
	start     time.Time
	measureAt time.Time // messages started before this are warm-up
	deadline  time.Time
	claimed   atomic.Int64
	fromNext  atomic.Uint64 // the next of cfg.FromDomains
	negotiate atomic.Value  // string

	mu    sync.Mutex
	first string
}

// claim reserves the next message; false when the run is over.
func (s *shared) claim() bool {
	if !time.Now().Before(s.deadline) {
		return false
	}
	n := s.claimed.Add(1)
	return s.cfg.Count == 0 || n <= int64(s.cfg.Count)
}

// nextFrom returns the From domain of the next message ("": the message's
// own).
func (s *shared) nextFrom() string {
	if len(s.cfg.FromDomains) == 0 {
		return ""
	}
	return s.cfg.FromDomains[(s.fromNext.Add(1)-1)%uint64(len(s.cfg.FromDomains))]
}

// workerStats is one worker's tally.
type workerStats struct {
	lat         []time.Duration
	errors      int
	expected    int
	kinds       map[string]int
	connections int
	lastDone    time.Time
}

func (w *workerStats) fail(sh *shared, counted bool, kind string, err error) {
	if !counted {
		return
	}
	w.errors++
	w.kinds[kind]++
	sh.mu.Lock()
	if sh.first == "" {
		sh.first = fmt.Sprintf("%s: %v", kind, err)
	}
	sh.mu.Unlock()
}

func run(cfg *config) (*Result, error) {
	tmpl := miltertest.SplitMessage(cfg.Message, false)
	if len(tmpl.Fields) == 0 {
		return nil, errors.New("message has no header fields")
	}
	// Check that the milter is there before starting the clock.
	probe, err := net.DialTimeout(cfg.Network, cfg.Addr, cfg.Timeout)
	if err != nil {
		return nil, err
	}
	probe.Close()

	var ru0 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	now := time.Now()
	sh := &shared{cfg: cfg, start: now, measureAt: now.Add(cfg.Warmup), deadline: now.Add(cfg.Duration)}
	stats := make([]*workerStats, cfg.Concurrency)
	var wg sync.WaitGroup
	for i := range stats {
		st := &workerStats{kinds: map[string]int{}}
		stats[i] = st
		wg.Add(1)
		go func(id int) {
			defer wg.Done()
			worker(sh, id, tmpl, st)
		}(i)
	}
	wg.Wait()
	var ru1 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)

	res := &Result{
		Label: cfg.Label, Addr: cfg.Network + ":" + cfg.Addr, Direction: "outbound",
		Concurrency: cfg.Concurrency, PerConn: cfg.PerConn, SizeBytes: len(cfg.Message),
		ErrorKinds: map[string]int{},
	}
	if cfg.Inbound {
		res.Direction = "inbound"
	}
	var all []time.Duration
	last := sh.measureAt
	for _, st := range stats {
		all = append(all, st.lat...)
		res.Errors += st.errors
		res.Expected += st.expected
		res.Connections += st.connections
		for k, v := range st.kinds {
			res.ErrorKinds[k] += v
		}
		if st.lastDone.After(last) {
			last = st.lastDone
		}
	}
	if len(res.ErrorKinds) == 0 {
		res.ErrorKinds = nil
	}
	res.FirstError = sh.first
	res.Total = int(sh.claimed.Load())
	if cfg.Count > 0 && res.Total > cfg.Count {
		res.Total = cfg.Count // claims past -n were refused
	}
	res.Messages = len(all)
	res.Seconds = last.Sub(sh.measureAt).Seconds()
	if res.Seconds > 0 {
		res.MsgsPerSec = float64(res.Messages) / res.Seconds
	}
	res.Latency = percentiles(all)
	res.ClientCPU = cpuSeconds(ru1) - cpuSeconds(ru0)
	if v, ok := sh.negotiate.Load().(string); ok {
		res.Negotiated = v
	}
	return res, nil
}

func cpuSeconds(ru syscall.Rusage) float64 {
	return float64(ru.Utime.Sec+ru.Stime.Sec) + float64(ru.Utime.Usec+ru.Stime.Usec)/1e6
}

func percentiles(d []time.Duration) Latency {
	if len(d) == 0 {
		return Latency{}
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	ms := func(x time.Duration) float64 { return math.Round(float64(x)/1e3) / 1e3 }
	// Nearest-rank percentile.
	at := func(p float64) time.Duration {
		i := int(math.Ceil(p*float64(len(d)))) - 1
		return d[max(0, min(i, len(d)-1))]
	}
	var sum time.Duration
	for _, x := range d {
		sum += x
	}
	return Latency{P50: ms(at(0.50)), P90: ms(at(0.90)), P99: ms(at(0.99)), P999: ms(at(0.999)),
		Max: ms(d[len(d)-1]), Mean: ms(sum / time.Duration(len(d)))}
}

// worker runs connections one after another until the run is over.
func worker(sh *shared, id int, tmpl miltertest.Message, st *workerStats) {
	cfg := sh.cfg
	for {
		if !sh.claim() {
			return
		}
		// The claimed message is sent on a new connection.
		counted := !time.Now().Before(sh.measureAt)
		c, err := dial(cfg, id)
		if err != nil {
			st.fail(sh, counted, "connect", err)
			time.Sleep(10 * time.Millisecond) // do not spin on a dead milter
			continue
		}
		st.connections++
		if st.connections == 1 && id == 0 {
			sh.negotiate.Store(fmt.Sprintf("version=%d actions=%#x protocol=%#x", c.version, uint32(c.actions), uint32(c.proto)))
		}
		ok := true
		for i := 0; i < cfg.PerConn; i++ {
			if i > 0 && !sh.claim() {
				break
			}
			t0 := time.Now()
			counted := !t0.Before(sh.measureAt)
			seq := int64(id)<<32 | int64(st.connections)<<12 | int64(i)
			kind, err := c.transaction(cfg, tmpl, seq, sh.nextFrom())
			t1 := time.Now()
			switch {
			case err == nil:
				if counted {
					st.lat = append(st.lat, t1.Sub(t0))
					st.lastDone = t1
					if cfg.ExpectHeader != "" {
						st.expected++
					}
				}
			case kind == "expect":
				// The transaction completed; the reply lacked the field.
				st.fail(sh, counted, kind, err)
				if counted {
					st.lastDone = t1
				}
			default:
				st.fail(sh, counted, kind, err)
				ok = false
			}
			if !ok {
				break
			}
		}
		if ok {
			c.quit()
		}
		c.close()
	}
}

// conn is one MTA-side milter connection.
type conn struct {
	nc      net.Conn
	br      *bufio.Reader
	wbuf    []byte
	rbuf    []byte
	raw     syscall.RawConn // set with -quickack on TCP
	timeout time.Duration
	version uint32
	actions milter.OptAction
	proto   milter.OptProtocol
	lead    bool
}

// What Postfix offers, as in internal/miltertest, plus SMFIP_HDR_LEADSPC.
const (
	offeredActions  = miltertest.OfferedActions
	offeredProtocol = miltertest.OfferedProtocol | milter.OptHeaderLeadingSpace
)

// errReply is a final reply other than accept/continue.
type errReply struct {
	stage string
	code  byte
	text  string
}

func (e *errReply) Error() string {
	if e.text != "" {
		return fmt.Sprintf("%s: reply %q %s", e.stage, e.code, e.text)
	}
	return fmt.Sprintf("%s: reply %q", e.stage, e.code)
}

func dial(cfg *config, id int) (*conn, error) {
	nc, err := net.DialTimeout(cfg.Network, cfg.Addr, cfg.Timeout)
	if err != nil {
		return nil, err
	}
	c := &conn{nc: nc, br: bufio.NewReaderSize(nc, 8192), timeout: cfg.Timeout}
	if tc, ok := nc.(*net.TCPConn); ok && cfg.QuickAck {
		if c.raw, err = tc.SyscallConn(); err != nil {
			nc.Close()
			return nil, err
		}
	}
	if err := c.setup(cfg, id); err != nil {
		nc.Close()
		return nil, err
	}
	return c, nil
}

// setup negotiates options and sends CONNECT and HELO.
func (c *conn) setup(cfg *config, id int) error {
	var opt [12]byte
	binary.BigEndian.PutUint32(opt[0:], 6)
	binary.BigEndian.PutUint32(opt[4:], uint32(offeredActions))
	binary.BigEndian.PutUint32(opt[8:], uint32(offeredProtocol))
	c.packet(byte(milter.CodeOptNeg), opt[:])
	code, data, err := c.roundTrip()
	if err != nil {
		return fmt.Errorf("negotiate: %w", err)
	}
	if code != byte(milter.CodeOptNeg) || len(data) < 12 {
		return fmt.Errorf("negotiate: unexpected reply %q (%d bytes)", code, len(data))
	}
	c.version = binary.BigEndian.Uint32(data[0:])
	c.actions = milter.OptAction(binary.BigEndian.Uint32(data[4:]))
	c.proto = milter.OptProtocol(binary.BigEndian.Uint32(data[8:]))
	if c.proto&^offeredProtocol != 0 {
		return fmt.Errorf("negotiate: milter asks for protocol flags %#x that were not offered", uint32(c.proto&^offeredProtocol))
	}
	c.lead = c.proto&milter.OptHeaderLeadingSpace != 0

	ip := cfg.ClientIP
	host := "[" + ip + "]"
	if !cfg.Inbound {
		host = "localhost"
	}
	if !c.has(milter.OptNoConnect) {
		c.macros(milter.CodeConn, "j", "mx.example.com", "{daemon_name}", "mx.example.com",
			"{daemon_addr}", "127.0.0.1", "v", "Postfix 3.7.11", "_", fmt.Sprintf("%s [%s]", strings.Trim(host, "[]"), ip))
		family := byte(milter.FamilyInet)
		if strings.Contains(ip, ":") {
			family = byte(milter.FamilyInet6)
		}
		d := append(cstr(nil, host), family)
		d = binary.BigEndian.AppendUint16(d, uint16(20000+id%40000))
		d = cstr(d, ip)
		c.packet(byte(milter.CodeConn), d)
		if err := c.expectContinue("connect", milter.OptNoConnReply); err != nil {
			return err
		}
	}
	if !c.has(milter.OptNoHelo) {
		c.packet(byte(milter.CodeHelo), cstr(nil, cfg.Helo))
		if err := c.expectContinue("helo", milter.OptNoHeloReply); err != nil {
			return err
		}
	}
	return nil
}

func (c *conn) has(f milter.OptProtocol) bool { return c.proto&f != 0 }

func cstr(b []byte, s string) []byte { return append(append(b, s...), 0) }

// packet appends one packet to the write buffer.
func (c *conn) packet(code byte, data []byte) {
	c.wbuf = binary.BigEndian.AppendUint32(c.wbuf, uint32(len(data)+1))
	c.wbuf = append(c.wbuf, code)
	c.wbuf = append(c.wbuf, data...)
}

// macros appends a macro packet for the command code.
func (c *conn) macros(code milter.Code, kv ...string) {
	c.wbuf = binary.BigEndian.AppendUint32(c.wbuf, 0) // length, patched below
	start := len(c.wbuf)
	c.wbuf = append(c.wbuf, byte(milter.CodeMacro), byte(code))
	for _, s := range kv {
		c.wbuf = cstr(c.wbuf, s)
	}
	binary.BigEndian.PutUint32(c.wbuf[start-4:], uint32(len(c.wbuf)-start))
}

// flush writes the buffered packets.
func (c *conn) flush() error {
	if len(c.wbuf) == 0 {
		return nil
	}
	c.nc.SetWriteDeadline(time.Now().Add(c.timeout))
	_, err := c.nc.Write(c.wbuf)
	c.wbuf = c.wbuf[:0]
	return err
}

// read reads one reply packet, skipping progress packets. The data is valid
// until the next read.
func (c *conn) read() (byte, []byte, error) {
	c.nc.SetReadDeadline(time.Now().Add(c.timeout))
	if c.raw != nil && c.br.Buffered() == 0 {
		// Linux clears TCP_QUICKACK by itself, so it is set before each read.
		c.raw.Control(func(fd uintptr) {
			syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_QUICKACK, 1)
		})
	}
	for {
		var hdr [4]byte
		if _, err := io.ReadFull(c.br, hdr[:]); err != nil {
			return 0, nil, err
		}
		n := binary.BigEndian.Uint32(hdr[:])
		if n == 0 || n > 1<<20 {
			return 0, nil, fmt.Errorf("bad packet length %d", n)
		}
		if cap(c.rbuf) < int(n) {
			c.rbuf = make([]byte, n)
		}
		b := c.rbuf[:n]
		if _, err := io.ReadFull(c.br, b); err != nil {
			return 0, nil, err
		}
		if b[0] == 'p' { // SMFIR_PROGRESS
			continue
		}
		return b[0], b[1:], nil
	}
}

func (c *conn) roundTrip() (byte, []byte, error) {
	if err := c.flush(); err != nil {
		return 0, nil, err
	}
	return c.read()
}

// expectContinue reads the reply to an event unless noReply was negotiated.
func (c *conn) expectContinue(stage string, noReply milter.OptProtocol) error {
	if c.has(noReply) {
		return nil
	}
	code, data, err := c.roundTrip()
	if err != nil {
		return fmt.Errorf("%s: %w", stage, err)
	}
	if code != byte(milter.ActContinue) {
		return &errReply{stage: stage, code: code, text: strings.TrimRight(string(data), "\x00")}
	}
	return nil
}

// transaction sends one message and checks the reply. kind classifies an
// error: "expect" (the message went through but the reply lacked the
// expected field), "reply" (the milter refused it or ended it early: the
// connection is still usable only in principle, so it is closed) or "io".
// from, if set, replaces the From domain of the envelope and header.
func (c *conn) transaction(cfg *config, m miltertest.Message, seq int64, from string) (kind string, err error) {
	qid := fmt.Sprintf("%011X", seq)
	defer func() {
		if err != nil {
			var er *errReply
			if errors.As(err, &er) {
				kind = "reply:" + er.stage
			} else if kind == "" {
				kind = "io"
			}
		}
	}()
	mailFrom := cfg.MailFrom
	if from != "" {
		mailFrom = "sender@" + from
	}
	if !c.has(milter.OptNoMailFrom) {
		c.macros(milter.CodeMail, "{mail_addr}", mailFrom)
		c.packet(byte(milter.CodeMail), cstr(nil, "<"+mailFrom+">"))
		if err := c.expectContinue("mail", milter.OptNoMailReply); err != nil {
			return "", err
		}
	}
	if !c.has(milter.OptNoRcptTo) {
		c.macros(milter.CodeRcpt, "{rcpt_addr}", cfg.Rcpt)
		c.packet(byte(milter.CodeRcpt), cstr(nil, "<"+cfg.Rcpt+">"))
		if err := c.expectContinue("rcpt", milter.OptNoRcptReply); err != nil {
			return "", err
		}
	}
	// Postfix sends DATA only to milters of protocol version 4 or later.
	if c.version >= 4 && !c.has(milter.OptNoData) {
		c.macros(milter.CodeData, "i", qid)
		c.packet(byte(milter.CodeData), nil)
		if err := c.expectContinue("data", milter.OptNoDataReply); err != nil {
			return "", err
		}
	}
	if !c.has(milter.OptNoHeaders) {
		for _, f := range m.Fields {
			c.macros(milter.CodeHeader, "i", qid)
			v := f.Value(c.lead)
			if from != "" && strings.EqualFold(f.Name, "From") {
				v = "Load Sender <" + mailFrom + ">"
				if c.lead {
					v = " " + v
				}
			}
			c.packet(byte(milter.CodeHeader), cstr(cstr(nil, f.Name), v))
			if err := c.expectContinue("header", milter.OptNoHeaderReply); err != nil {
				return "", err
			}
		}
	}
	if !c.has(milter.OptNoEOH) {
		c.macros(milter.CodeEOH, "i", qid)
		c.packet(byte(milter.CodeEOH), nil)
		if err := c.expectContinue("eoh", milter.OptNoEOHReply); err != nil {
			return "", err
		}
	}
	if !c.has(milter.OptNoBody) {
		for b := m.Body; len(b) > 0; {
			n := min(len(b), milter.MaxBodyChunk)
			c.macros(milter.CodeBody, "i", qid)
			c.packet(byte(milter.CodeBody), b[:n])
			if err := c.expectContinue("body", milter.OptNoBodyReply); err != nil {
				return "", err
			}
			b = b[n:]
		}
	}
	c.macros(milter.CodeEOB, "i", qid)
	c.packet(byte(milter.CodeEOB), nil)
	if err := c.flush(); err != nil {
		return "", fmt.Errorf("eom: %w", err)
	}
	found := false
	var lastValue string
	for {
		code, data, err := c.read()
		if err != nil {
			return "", fmt.Errorf("eom: %w", err)
		}
		switch code {
		case byte(milter.ActAddHeader), byte(milter.ActInsertHeader), byte(milter.ActChangeHeader):
			if code != byte(milter.ActAddHeader) {
				if len(data) < 4 {
					return "", errors.New("eom: short header modification")
				}
				data = data[4:]
			}
			name, value, _ := strings.Cut(string(data), "\x00")
			value = strings.TrimRight(value, "\x00")
			if cfg.ExpectHeader != "" && strings.EqualFold(name, cfg.ExpectHeader) && value != "" {
				lastValue = value
				if cfg.ExpectValue == "" || strings.Contains(value, cfg.ExpectValue) {
					found = true
				}
			}
			continue
		case byte(milter.ActAddRcpt), byte(milter.ActDelRcpt), byte(milter.ActReplBody),
			byte(milter.ActChangeFrom), byte(milter.ActQuarantine), '2' /* SMFIR_ADDRCPT_PAR */ :
			continue
		case byte(milter.ActAccept), byte(milter.ActContinue):
		default:
			return "", &errReply{stage: "eom", code: code, text: strings.TrimRight(string(data), "\x00")}
		}
		break
	}
	// Postfix 3.7 sends two ABORTs after each message; they get no reply.
	c.packet(byte(milter.CodeAbort), nil)
	c.packet(byte(milter.CodeAbort), nil)
	if cfg.ExpectHeader != "" && !found {
		if lastValue != "" {
			return "expect", fmt.Errorf("%s field %q does not contain %q", cfg.ExpectHeader, clip(lastValue, 200), cfg.ExpectValue)
		}
		return "expect", fmt.Errorf("reply adds no %s field", cfg.ExpectHeader)
	}
	return "", nil
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// quit ends the session politely.
func (c *conn) quit() {
	c.packet(byte(milter.CodeQuit), nil)
	c.flush()
}

func (c *conn) close() { c.nc.Close() }
