package spf

import (
	"context"
	"net"
	"strings"
	"sync"
)

// memDNS is an in-memory Resolver for tests: records by lowercase name
// without the final dot, names that fail temporarily, and a count of
// lookups. A name without records of the asked type is "not found".
type memDNS struct {
	txt  map[string][]string
	a    map[string][]net.IP // A and AAAA together, split by family
	mx   map[string][]*net.MX
	ptr  map[string][]string // by address text (netip.Addr.String)
	temp map[string]bool     // names (or address texts) that time out

	mu      sync.Mutex
	lookups int
	asked   []string // "TYPE name" of every lookup, in order
}

func newMemDNS() *memDNS {
	return &memDNS{txt: map[string][]string{}, a: map[string][]net.IP{}, mx: map[string][]*net.MX{},
		ptr: map[string][]string{}, temp: map[string]bool{}}
}

func memKey(name string) string { return strings.ToLower(strings.TrimSuffix(name, ".")) }

// ask counts a lookup and gives its error, if any, before the answer is
// looked for.
func (m *memDNS) ask(qtype, name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.lookups++
	m.asked = append(m.asked, qtype+" "+name)
	if m.temp[memKey(name)] {
		return &net.DNSError{Err: "i/o timeout", Name: name, IsTimeout: true, IsTemporary: true}
	}
	return nil
}

func memNotFound(name string) error {
	return &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}

func (m *memDNS) LookupTXT(_ context.Context, name string) ([]string, error) {
	if err := m.ask("TXT", name); err != nil {
		return nil, err
	}
	if v, ok := m.txt[memKey(name)]; ok {
		return v, nil
	}
	return nil, memNotFound(name)
}

func (m *memDNS) LookupMX(_ context.Context, name string) ([]*net.MX, error) {
	if err := m.ask("MX", name); err != nil {
		return nil, err
	}
	if v, ok := m.mx[memKey(name)]; ok {
		return v, nil
	}
	return nil, memNotFound(name)
}

func (m *memDNS) LookupIP(_ context.Context, network, host string) ([]net.IP, error) {
	qtype := "A"
	if network == "ip6" {
		qtype = "AAAA"
	}
	if err := m.ask(qtype, host); err != nil {
		return nil, err
	}
	var out []net.IP
	for _, ip := range m.a[memKey(host)] {
		if (ip.To4() != nil) == (network == "ip4") {
			out = append(out, ip)
		}
	}
	if len(out) == 0 {
		return nil, memNotFound(host)
	}
	return out, nil
}

func (m *memDNS) LookupAddr(_ context.Context, addr string) ([]string, error) {
	if err := m.ask("PTR", addr); err != nil {
		return nil, err
	}
	if v, ok := m.ptr[addr]; ok {
		return v, nil
	}
	return nil, memNotFound(addr)
}

// addA adds address records (of either family) to name.
func (m *memDNS) addA(name string, ips ...string) {
	for _, s := range ips {
		m.a[memKey(name)] = append(m.a[memKey(name)], net.ParseIP(s))
	}
}
