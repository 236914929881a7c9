// Command testdnsd serves zone files with internal/testdns for shell-driven
// end-to-end tests (Postfix, Sendmail) until it is killed.
//
// Usage:
//
//	testdnsd [-addr 127.0.0.1:5353] [-ttl 0] zonefile...
//
// Zone files use the usual syntax ($ORIGIN, $TTL; no $INCLUDE) and need
// $ORIGIN or absolute names. On SIGHUP the files are read again and replace
// the served records at once (a file that fails to parse keeps the old
// records); SIGINT and SIGTERM stop the server. Once listening it prints
// "testdnsd: listening on ADDR" on standard output, so a script can wait for
// that line (and learn the port when -addr has port 0).
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/miekg/dns"

	"github.com/authmilter/authmilter/internal/testdns"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:5353", "UDP and TCP `address` to listen on (port 0: any free port)")
	ttl := flag.Uint("ttl", 0, "TTL in `seconds` of synthesized SOA records (negative-caching time)")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: testdnsd [-addr ip:port] [-ttl seconds] zonefile...\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if err := run(*addr, uint32(*ttl), flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run(addr string, ttl uint32, files []string) error {
	rrs, err := load(files)
	if err != nil {
		return err
	}
	s, err := testdns.New(addr)
	if err != nil {
		return err
	}
	defer s.Close()
	s.SetDefaultTTL(ttl)
	s.Replace(rrs...)
	fmt.Printf("testdnsd: listening on %s\n", s.Addr())

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	for got := range sig {
		if got != syscall.SIGHUP {
			break
		}
		rrs, err := load(files)
		if err != nil {
			fmt.Fprintf(os.Stderr, "testdnsd: reload: %v (keeping the old records)\n", err)
			continue
		}
		s.Replace(rrs...)
		fmt.Printf("testdnsd: reloaded %d records\n", len(rrs))
	}
	return s.Close()
}

// load parses every zone file.
func load(files []string) ([]dns.RR, error) {
	var all []dns.RR
	for _, f := range files {
		rrs, err := testdns.ParseZoneFile(f)
		if err != nil {
			return nil, err
		}
		all = append(all, rrs...)
	}
	return all, nil
}
