package testdns

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// TestDropRate sends 1000 queries, 100 at a time, to a server that drops
// 20% of them: the server counts between 10% and 30% dropped, clients see
// exactly those as timeouts, the count is the same on a second run (the
// random source is seeded), and rate 0 answers everything again.
func TestDropRate(t *testing.T) {
	s := Start(t)
	s.SetTXT("x.example", "hello")
	run := func(n int) (answered, timedOut int) {
		var a, to atomic.Int64
		var wg sync.WaitGroup
		sem := make(chan struct{}, 100)
		for range n {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				m := new(dns.Msg)
				m.SetQuestion("x.example.", dns.TypeTXT)
				c := &dns.Client{Net: "udp", Timeout: 500 * time.Millisecond}
				r, _, err := c.Exchange(m, s.Addr())
				var ne net.Error
				switch {
				case err == nil && len(txtOf(r)) == 1:
					a.Add(1)
				case errors.As(err, &ne) && ne.Timeout():
					to.Add(1)
				default:
					t.Errorf("query: %v %v", r, err)
				}
			}()
		}
		wg.Wait()
		return int(a.Load()), int(to.Load())
	}

	const n = 1000
	s.SetDropRate(0.2)
	answered, timedOut := run(n)
	dropped := s.DroppedByRate()
	t.Logf("%d queries at rate 0.2: %d answered, %d timed out, %d dropped by the server", n, answered, timedOut, dropped)
	if dropped < n/10 || dropped > 3*n/10 {
		t.Errorf("%d of %d queries dropped, want 10%%..30%%", dropped, n)
	}
	if answered != n-dropped || timedOut != dropped {
		t.Errorf("clients saw %d answers and %d timeouts; the server dropped %d of %d", answered, timedOut, dropped, n)
	}
	if q := s.Queries(); q != n {
		t.Errorf("Queries() = %d, want %d (dropped queries count too)", q, n)
	}

	s.SetDropRate(0.2) // same seed, same decisions
	run(n)
	if again := s.DroppedByRate() - dropped; again != dropped {
		t.Errorf("second run with the same seed dropped %d, first %d", again, dropped)
	}

	s.SetDropRate(0)
	before := s.DroppedByRate()
	if answered, _ := run(100); answered != 100 || s.DroppedByRate() != before {
		t.Errorf("rate 0: %d of 100 answered, %d more dropped", answered, s.DroppedByRate()-before)
	}
}
