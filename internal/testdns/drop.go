package testdns

import "math/rand/v2"

// dropSeed seeds the random source of SetDropRate, so that a test sees the
// same sequence of drop decisions (in query order) on every run.
const dropSeed = 0x5eed_d0d5

// rateDrop is the state of SetDropRate; it is guarded by Server.mu.
type rateDrop struct {
	p       float64
	rnd     *rand.Rand
	dropped int
}

// SetDropRate makes the server silently not answer a fraction p (0 to 1) of
// all queries, whatever the name or protocol, on top of Drop: clients see
// timeouts, as behind a lossy link or an overloaded server. 0 turns it off.
// The decisions come from a random source with a fixed seed, reset by each
// call, so a test that sends the same queries in the same order sees the
// same ones dropped.
func (s *Server) SetDropRate(p float64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rateDrop.p = min(max(p, 0), 1)
	s.rateDrop.rnd = rand.New(rand.NewPCG(dropSeed, dropSeed))
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
