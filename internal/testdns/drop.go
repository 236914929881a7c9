package testdns

import "math/rand/v2"

// dropSeed is the default seed of SetDropRate's random source, so that a
// test sees the same sequence of drop decisions (in query order) on every
// run; SetDropSeed chooses another.
const dropSeed = 0x5eed_d0d5

// rateDrop is the state of SetDropRate; it is guarded by Server.mu.
type rateDrop struct {
	p       float64
	seed    uint64 // 0: dropSeed
	rnd     *rand.Rand
	dropped int
}

// SetDropRate makes the server silently not answer a fraction p (0 to 1) of
// all queries, whatever the name or protocol, on top of Drop: clients see
// timeouts, as behind a lossy link or an overloaded server. 0 turns it off.
// The decisions come from a random source with a fixed seed (see
// SetDropSeed), reset by each call, so a test that sends the same queries
// in the same order sees the same ones dropped.
func (s *Server) SetDropRate(p float64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rateDrop.p = min(max(p, 0), 1)
	seed := s.rateDrop.seed
	if seed == 0 {
		seed = dropSeed
	}
	s.rateDrop.rnd = rand.New(rand.NewPCG(seed, seed))
}

// SetDropSeed sets the seed used by the next SetDropRate (0: the default),
// for a test that wants other drop patterns than the default one.
func (s *Server) SetDropSeed(seed uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rateDrop.seed = seed
}

// DroppedByRate returns the number of queries dropped because of
// SetDropRate (queries dropped by Drop are not counted).
func (s *Server) DroppedByRate() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rateDrop.dropped
}

// dropRandomLocked decides whether the query being answered is dropped by
// the drop rate, and counts it.
func (s *Server) dropRandomLocked() bool {
	r := &s.rateDrop
	if r.p <= 0 || r.rnd == nil || r.rnd.Float64() >= r.p {
		return false
	}
	r.dropped++
	return true
}
