package main

import (
	"fmt"
	"testing"
	"time"

	"github.com/authmilter/authmilter/policy"
)

// TestNextReverify: every key is looked up again between half a period
// and one and a half periods after its last lookup, exactly one period
// after a lookup at its own moment, and the moments of many keys spread
// evenly over the period.
func TestNextReverify(t *testing.T) {
	const period = 24 * time.Hour
	t0 := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	bins := make([]int, 24)
	const n = 10000
	for i := range n {
		name := fmt.Sprintf("s%d._domainkey.d%06d.example", i%3, i)
		due := nextReverify(name, t0, period)
		if due.Before(t0.Add(period/2)) || !due.Before(t0.Add(3*period/2)) {
			t.Fatalf("%s: due %v, want within [%v, %v)", name, due, t0.Add(period/2), t0.Add(3*period/2))
		}
		if again := nextReverify(name, due, period); !again.Equal(due.Add(period)) {
			t.Fatalf("%s: checked at its moment %v, next %v, want one period later", name, due, again)
		}
		bins[due.Sub(t0.Add(period/2))/time.Hour]++
	}
	for h, c := range bins {
		if c < n/24*7/10 || c > n/24*13/10 {
			t.Errorf("hour %d of the cycle has %d of %d keys: not spread evenly (%v)", h, c, n, bins)
		}
	}
}

func TestChecksPerSecond(t *testing.T) {
	for _, tt := range []struct {
		check string
		qps   int
		want  float64
	}{{"resolver", 20, 20}, {"nameservers", 20, 5}, {"nameservers", 1, 0.25}} {
		cfg := policy.DefaultConfig()
		cfg.Keys.Check, cfg.Keys.DNSQPS = tt.check, tt.qps
		if got := checksPerSecond(cfg); got != tt.want {
			t.Errorf("%s, %d qps: %v checks/s, want %v", tt.check, tt.qps, got, tt.want)
		}
	}
}
