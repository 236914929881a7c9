package dmarc

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
)

// fakeDNS is an in-memory resolver. Zone lines are:
//
//	NAME TXT text...      a TXT record (several lines: several records)
//	NAME TIMEOUT          every query for NAME times out
//	NAME NXDOMAIN         NAME does not exist (DomainExists, A/AAAA/MX)
//	NAME EXISTS-TIMEOUT   existence checks for NAME time out
//	NAME A                NAME has an address (for the A/AAAA/MX fallback)
type fakeDNS struct {
	mu       sync.Mutex
	txt      map[string][]string
	timeout  map[string]bool
	nx       map[string]bool
	exTmo    map[string]bool
	addr     map[string]bool
	queries  []string
	existQ   []string
	ipQ, mxQ []string
}

func newFakeDNS(lines ...string) *fakeDNS {
	f := &fakeDNS{txt: map[string][]string{}, timeout: map[string]bool{}, nx: map[string]bool{},
		exTmo: map[string]bool{}, addr: map[string]bool{}}
	for _, line := range lines {
		if err := f.add(line); err != nil {
			panic(err) // test setup error
		}
	}
	return f
}

func (f *fakeDNS) add(line string) error {
	fields := strings.Fields(line)
	if len(fields) < 2 {
		return fmt.Errorf("bad zone line %q", line)
	}
	name := strings.ToLower(strings.TrimSuffix(fields[0], "."))
	switch strings.ToUpper(fields[1]) {
	case "TXT":
		_, text, _ := strings.Cut(line, fields[1])
		text = strings.TrimSpace(text)
		text = strings.TrimPrefix(strings.TrimSuffix(text, `"`), `"`)
		f.txt[name] = append(f.txt[name], text)
	case "TIMEOUT":
		f.timeout[name] = true
	case "NXDOMAIN":
		f.nx[name] = true
	case "EXISTS-TIMEOUT":
		f.exTmo[name] = true
	case "A":
		f.addr[name] = true
	default:
		return fmt.Errorf("bad zone line %q", line)
	}
	return nil
}

func timeoutErr(name string) error {
	return &net.DNSError{Err: "i/o timeout", Name: name, IsTimeout: true, IsTemporary: true}
}

func notFoundErr(name string) error {
	return &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}

func (f *fakeDNS) LookupTXT(ctx context.Context, name string) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	f.queries = append(f.queries, name)
	if f.timeout[name] {
		return nil, timeoutErr(name)
	}
	if recs, ok := f.txt[name]; ok {
		return append([]string(nil), recs...), nil
	}
	return nil, notFoundErr(name)
}

// existsFake adds DomainExists to fakeDNS.
type existsFake struct{ *fakeDNS }

func (f existsFake) DomainExists(ctx context.Context, domain string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.existQ = append(f.existQ, domain)
	if f.exTmo[domain] {
		return false, timeoutErr(domain)
	}
	return !f.nx[domain], nil
}

// hostFake adds LookupIPAddr and LookupMX to fakeDNS (the RFC 9091
// fallback).
type hostFake struct{ *fakeDNS }

func (f hostFake) LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ipQ = append(f.ipQ, host)
	if f.exTmo[host] {
		return nil, timeoutErr(host)
	}
	if f.addr[host] {
		return []net.IPAddr{{IP: net.IPv4(192, 0, 2, 1)}}, nil
	}
	return nil, notFoundErr(host)
}

func (f hostFake) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.mxQ = append(f.mxQ, name)
	return nil, notFoundErr(name)
}
