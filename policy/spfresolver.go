package policy

import (
	"context"
	"net"
	"sync"
)

// spfQueryBudget is the most DNS lookups one SPF evaluation may make: the
// record of the checked domain, then at most ten terms that cause DNS
// lookups (RFC 7208 §4.6.4), each one lookup, plus, for "mx" and "ptr", at
// most ten address lookups of one family (§4.6.4: "MUST NOT result in
// querying more than 10 address records"). The evaluator enforces the
// term, void-lookup and MX-count limits itself (policy/spf); the budget is
// the backstop that holds even if it did not.
const spfQueryBudget = 1 + 10*(1+10)

// ipLookuper is the single-family address lookup that *resolve.Resolver
// and *net.Resolver have.
type ipLookuper interface {
	LookupIP(ctx context.Context, network, host string) ([]net.IP, error)
}

// spfResolver is the resolver (spf.Resolver) of one SPF evaluation. Its
// LookupIP asks for one address family only: the evaluator asks for the
// client's, as an IPv4 client can only match A records and an IPv6 client
// AAAA records (RFC 7208 §5.3, §5.4, §5.5), and for A records for
// "exists" (§5.7). It counts lookups and refuses those beyond
// spfQueryBudget.
//
// Asking both families of every "a" domain, MX host and PTR name, as the
// SPF library we used before did, one message whose record had ten mx
// terms of ten hosts each made 211 queries instead of 111.
type spfResolver struct {
	r      Resolver
	budget int

	mu        sync.Mutex
	lookups   int
	exhausted bool
}

func newSPFResolver(r Resolver) *spfResolver {
	budget := spfQueryBudget
	if spfBudgetForTest > 0 {
		budget = spfBudgetForTest
	}
	return &spfResolver{r: r, budget: budget}
}

// spfBudgetForTest, when positive, replaces spfQueryBudget in tests.
var spfBudgetForTest int

// spend accounts for one lookup of name, or refuses it when the budget is
// spent.
func (s *spfResolver) spend(name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lookups >= s.budget {
		s.exhausted = true
		return &net.DNSError{Err: "SPF DNS lookup budget exhausted", Name: name}
	}
	s.lookups++
	return nil
}

// Exhausted reports whether a lookup was refused because the budget was
// spent; the evaluation is then a permerror, whatever the evaluator made of
// the refusal.
func (s *spfResolver) Exhausted() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.exhausted
}

// Lookups returns the number of lookups made.
func (s *spfResolver) Lookups() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lookups
}

func (s *spfResolver) LookupTXT(ctx context.Context, name string) ([]string, error) {
	if err := s.spend(name); err != nil {
		return nil, err
	}
	return s.r.LookupTXT(ctx, name)
}

func (s *spfResolver) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
	if err := s.spend(name); err != nil {
		return nil, err
	}
	return s.r.LookupMX(ctx, name)
}

func (s *spfResolver) LookupAddr(ctx context.Context, addr string) ([]string, error) {
	if err := s.spend(addr); err != nil {
		return nil, err
	}
	return s.r.LookupAddr(ctx, addr)
}

// LookupIP returns the addresses of host of one family, network "ip4" or
// "ip6" (the evaluator asks for the client's family, and for IPv4 for an
// "exists" term). No address of that family is a "not found" error, which
// the evaluator takes as a void lookup, as RFC 7208 §4.6.4 does for an A
// or AAAA query with no answer.
func (s *spfResolver) LookupIP(ctx context.Context, network, host string) ([]net.IP, error) {
	if err := s.spend(host); err != nil {
		return nil, err
	}
	var ips []net.IP
	if l, ok := s.r.(ipLookuper); ok {
		var err error
		if ips, err = l.LookupIP(ctx, network, host); err != nil {
			return nil, err
		}
	} else {
		// A resolver without single-family lookups (test doubles) asks for
		// both; the other family's answers are dropped.
		addrs, err := s.r.LookupIPAddr(ctx, host)
		if err != nil {
			return nil, err
		}
		for _, a := range addrs {
			if (a.IP.To4() != nil) == (network == "ip4") {
				ips = append(ips, a.IP)
			}
		}
	}
	if len(ips) == 0 {
		return nil, &net.DNSError{Err: "no address of the family asked", Name: host, IsNotFound: true}
	}
	return ips, nil
}
