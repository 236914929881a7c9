package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/authmilter/authmilter/policy"
	"github.com/authmilter/authmilter/policy/dmarc"
	"github.com/authmilter/authmilter/policy/doctor"
)

// Exit statuses of authmilter doctor. The worst finding gives 0, 1 or 2
// (doctor.Severity), so monitoring can run it; a command line or config
// that cannot be used, or a report that cannot be written, gives
// doctorExitUsage, which no report gives.
const (
	doctorExitWarn  = 1
	doctorExitError = 2
	doctorExitUsage = 3
)

// Bounds of a -f file: a bulk run is a list of domains, not a data dump.
const (
	// doctorMaxFileLines bounds the lines of a -f file (comments and
	// blank lines included).
	doctorMaxFileLines = 100_000
	// doctorMaxNameLen is the longest domain name (RFC 1035 §2.3.4: 255
	// octets on the wire, 253 characters written out).
	doctorMaxNameLen = 253
	// doctorMaxRawLine bounds a line before trimming and comments, so
	// that a file without newlines is refused after 4 KiB, not read whole.
	doctorMaxRawLine = 4096
	// doctorWorkers is how many domains are checked at the same time: a
	// bulk run must not flood the resolver.
	doctorWorkers = 8
)

// doctorStrings is a repeatable string flag (-ip, -selector).
type doctorStrings []string

func (l *doctorStrings) String() string { return strings.Join(*l, ",") }

func (l *doctorStrings) Set(v string) error {
	*l = append(*l, v)
	return nil
}

// doctorArgs is the parsed command line of authmilter doctor.
type doctorArgs struct {
	domains   []string
	ips       doctorStrings
	selectors doctorStrings
	cfgPath   string
	asJSON    bool
	asCSV     bool
	file      string
	timeout   time.Duration
}

func cmdDoctor(args []string) error {
	return runDoctor(context.Background(), args, os.Stdout, os.Stderr)
}

// runDoctor is authmilter doctor: it checks each domain's sending setup
// as receivers see it and prints the reports. It only reads DNS, the
// config and the key table; it writes nothing.
func runDoctor(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	a, err := parseDoctorArgs(args, stderr)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return nil // -h: the usage is printed
	case errors.Is(err, errDoctorFlag):
		return exitError(doctorExitUsage) // the flag package said why
	case err != nil:
		fmt.Fprintln(stderr, "authmilter doctor:", err)
		return exitError(doctorExitUsage)
	}
	opt, domains, err := doctorSetup(ctx, a, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "authmilter doctor:", err)
		return exitError(doctorExitUsage)
	}
	reports := runDoctorPool(domains, doctorWorkers, func(d string) *doctor.Report { return doctor.Run(ctx, opt, d) })
	switch {
	case a.asJSON:
		err = doctor.WriteJSON(stdout, reports)
	case a.asCSV:
		err = doctor.WriteCSV(stdout, reports)
	default:
		err = doctor.WriteText(stdout, reports)
	}
	if err != nil {
		// Not 1: that would read as "warnings" to monitoring.
		fmt.Fprintln(stderr, "authmilter doctor: write the report:", err)
		return exitError(doctorExitUsage)
	}
	return doctorExit(reports)
}

// errDoctorFlag is a flag error the flag package has already printed.
var errDoctorFlag = errors.New("bad flag")

// parseDoctorArgs parses the command line. Domains may come before,
// between and after the flags (`doctor acme.example -ip 192.0.2.25`), so
// parsing resumes after each one.
func parseDoctorArgs(args []string, stderr io.Writer) (*doctorArgs, error) {
	a := &doctorArgs{}
	fs := flag.NewFlagSet("doctor", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := configFlag(fs)
	fs.Var(&a.ips, "ip", "a sending host's `IP` address to check (repeatable; outbound.ips are added)")
	fs.Var(&a.selectors, "selector", "a DKIM `selector` to check besides our own keys' (repeatable)")
	asJSON := fs.Bool("json", false, "print JSON (the schema is in README.md)")
	asCSV := fs.Bool("csv", false, "print CSV: one row per finding")
	file := fs.String("f", "", "read domains from `FILE`, one a line (# comments)")
	timeout := fs.Duration("timeout", doctor.DefaultTimeout, "bound the checks of one domain")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: authmilter doctor DOMAIN... [-ip IP]... [-selector S]... [-config FILE] [-json|-csv] [-f FILE] [-timeout D]")
		fmt.Fprintln(stderr, "exit status: 0 all ok, 1 warnings, 2 errors, 3 bad command line or config, or output failed")
		fs.PrintDefaults()
	}
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, errDoctorFlag
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		a.domains = append(a.domains, rest[0])
		args = rest[1:]
	}
	a.cfgPath, a.asJSON, a.asCSV, a.file, a.timeout = *cfgPath, *asJSON, *asCSV, *file, *timeout
	if a.asJSON && a.asCSV {
		return nil, fmt.Errorf("-json and -csv exclude each other")
	}
	if a.timeout <= 0 {
		return nil, fmt.Errorf("-timeout must be positive, got %s", a.timeout)
	}
	return a, nil
}

// doctorSetup builds the options from the config and the command line,
// and the list of domains to check.
func doctorSetup(ctx context.Context, a *doctorArgs, stderr io.Writer) (*doctor.Options, []string, error) {
	cfg, cfgName, err := loadConfig(a.cfgPath)
	if err != nil {
		return nil, nil, err
	}
	r, err := newResolver(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", cfgName, err)
	}
	opt := &doctor.Options{Resolver: r, Timeout: a.timeout, Selectors: a.selectors}
	if cfg.DMARC.Mode == "psl" {
		opt.DMARCMode = dmarc.PSL
	}
	opt.IPs, err = doctorIPs(a.ips, cfg.Outbound.IPs)
	if err != nil {
		return nil, nil, err
	}
	domains := a.domains
	if a.file != "" {
		fromFile, err := readDoctorDomains(a.file)
		if err != nil {
			return nil, nil, err
		}
		domains = append(domains, fromFile...)
	}
	usesConfig := cfgName != "(built-in defaults)"
	if len(domains) == 0 && !usesConfig {
		return nil, nil, fmt.Errorf("no domain given (name domains, -f FILE, or -config FILE for the key table's)")
	}
	if !usesConfig {
		// The built-in key directory is not ours to read when no config
		// names it: no own keys.
		return opt, domains, nil
	}
	own, tableDomains, err := doctorOwnKeys(ctx, cfg, stderr)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: key table: %w", cfgName, err)
	}
	opt.OwnKeys = func(domain string) []doctor.OwnKey { return own[strings.ToLower(domain)] }
	if len(domains) == 0 {
		if len(tableDomains) == 0 {
			return nil, nil, fmt.Errorf("%s: the key table has no domain; name the domains to check", cfgName)
		}
		domains = tableDomains
	}
	return opt, domains, nil
}

// doctorIPs parses the -ip values and adds outbound.ips, without
// duplicates, in that order.
func doctorIPs(flags []string, outbound []string) ([]netip.Addr, error) {
	var out []netip.Addr
	seen := map[netip.Addr]bool{}
	for i, s := range append(append([]string{}, flags...), outbound...) {
		ip, err := netip.ParseAddr(strings.TrimSpace(s))
		if err != nil {
			if i < len(flags) {
				return nil, fmt.Errorf("-ip %q: not an IP address", s)
			}
			return nil, fmt.Errorf("outbound.ips %q: not an IP address", s)
		}
		ip = ip.Unmap()
		if !seen[ip] {
			seen[ip] = true
			out = append(out, ip)
		}
	}
	return out, nil
}

// doctorOwnKeys reads our keys per domain (lowercase) with their
// publication state exactly as `authmilter keys` shows it (the same
// keyView), and the key table's domains.
func doctorOwnKeys(ctx context.Context, cfg *policy.Config, stderr io.Writer) (map[string][]doctor.OwnKey, []string, error) {
	ctx, cancel := context.WithTimeout(ctx, compileTimeout)
	defer cancel()
	v, err := loadKeyView(ctx, cfg)
	if err != nil {
		return nil, nil, err
	}
	for _, w := range v.warnings {
		fmt.Fprintf(stderr, "warning: %s\n", w)
	}
	own := map[string][]doctor.OwnKey{}
	domains := v.pol.Table().Domains()
	for _, d := range domains {
		for _, k := range v.pol.Table().Keys(d) {
			pub := v.publication(k)
			own[strings.ToLower(d)] = append(own[strings.ToLower(d)], doctor.OwnKey{Selector: k.Selector,
				Algorithm: string(k.Algorithm), Bits: k.Bits, State: string(pub.State), Active: v.isActive(k), Detail: pub.Detail})
		}
	}
	return own, domains, nil
}

// readDoctorDomains reads a -f file: one domain a line, blank lines and
// # comments skipped. It refuses a file of more than doctorMaxFileLines
// lines or with a line longer than a domain name can be.
func readDoctorDomains(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("-f: %w", err)
	}
	defer f.Close()
	return parseDoctorDomains(f, path)
}

// parseDoctorDomains is readDoctorDomains on a reader; name is for errors.
func parseDoctorDomains(r io.Reader, name string) ([]string, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 512), doctorMaxRawLine)
	var out []string
	n := 0
	for sc.Scan() {
		n++
		if n > doctorMaxFileLines {
			return nil, fmt.Errorf("-f %s: more than %d lines; split the file", name, doctorMaxFileLines)
		}
		line, _, _ := strings.Cut(sc.Text(), "#")
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		if len(line) > doctorMaxNameLen {
			return nil, fmt.Errorf("-f %s: line %d: %d bytes, longer than a domain name can be (%d)", name, n, len(line), doctorMaxNameLen)
		}
		out = append(out, line)
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, fmt.Errorf("-f %s: line %d: longer than %d bytes, not a domain name", name, n+1, doctorMaxRawLine)
		}
		return nil, fmt.Errorf("-f %s: %w", name, err)
	}
	return out, nil
}

// runDoctorPool runs check on each domain, at most workers at a time, and
// returns the reports in the order of domains.
func runDoctorPool(domains []string, workers int, check func(domain string) *doctor.Report) []*doctor.Report {
	reports := make([]*doctor.Report, len(domains))
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(workers, len(domains)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				reports[i] = check(domains[i])
			}
		}()
	}
	for i := range domains {
		next <- i
	}
	close(next)
	wg.Wait()
	return reports
}

// doctorExit is the exit status for the worst finding: nil for ok.
func doctorExit(reports []*doctor.Report) error {
	worst := doctor.OK
	for _, r := range reports {
		worst = max(worst, r.Status)
	}
	switch worst {
	case doctor.OK:
		return nil
	case doctor.Warn:
		return exitError(doctorExitWarn)
	}
	return exitError(doctorExitError)
}
