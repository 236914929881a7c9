package web

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// TestSamplerWindows: the last hour and day are now minus the sample
// that old; while the daemon is younger than a window, the window is
// since start and says so.
func TestSamplerWindows(t *testing.T) {
	clock := newClock()
	start := clock.now()
	reg := prometheus.NewRegistry()
	msgs := prometheus.NewCounterVec(prometheus.CounterOpts{Name: famMessages, Help: "m"}, []string{"direction", "action"})
	unsigned := prometheus.NewCounterVec(prometheus.CounterOpts{Name: famUnsigned, Help: "u"}, []string{"reason"})
	reg.MustRegister(msgs, unsigned)
	s := newSampler(reg, clock.now)
	// Ten messages out a minute, one of them unsigned, for 90 minutes.
	for i := 0; i < 90; i++ {
		s.sample()
		msgs.WithLabelValues("out", "accept").Add(10)
		unsigned.WithLabelValues("no_key").Inc()
		clock.add(time.Minute)
	}
	cur := s.current()
	hour := s.window(cur, "hour", time.Hour, start)
	if hour.SinceStart || hour.OutboundMessages != 600 || hour.OutboundUnsigned != 60 || hour.OutboundSigned != 540 {
		t.Errorf("hour: %+v", hour)
	}
	if !hour.Since.Equal(clock.now().Add(-time.Hour)) {
		t.Errorf("hour since %s, want %s", hour.Since, clock.now().Add(-time.Hour))
	}
	day := s.window(cur, "day", 24*time.Hour, start)
	if !day.SinceStart || day.OutboundMessages != 900 || !day.Since.Equal(start) {
		t.Errorf("day (younger than a day): %+v", day)
	}
	if len(hour.Unsigned) != 1 || hour.Unsigned[0].Label != "no_key" || hour.Unsigned[0].Count != 60 {
		t.Errorf("unsigned by reason: %+v", hour.Unsigned)
	}
	if len(hour.Actions) != 1 || hour.Actions[0].Label != "out/accept" {
		t.Errorf("actions: %+v", hour.Actions)
	}
	pm := s.perMinute(cur, 60)
	if len(pm) != 60 {
		t.Fatalf("%d points per minute, want 60", len(pm))
	}
	for i, v := range pm {
		if v != 10 {
			t.Fatalf("minute %d: %v messages, want 10", i, v)
		}
	}
	// A day and more later the ring has wrapped; the day window is now a
	// real day.
	for i := 0; i < sampleSlots+10; i++ {
		s.sample()
		msgs.WithLabelValues("in", "accept").Add(1)
		clock.add(time.Minute)
	}
	cur = s.current()
	day = s.window(cur, "day", 24*time.Hour, start)
	if day.SinceStart || day.InboundMessages != 24*60 {
		t.Errorf("day after wrapping: since start %v, inbound %v, want %d", day.SinceStart, day.InboundMessages, 24*60)
	}
}

// TestSamplerBounded: a family whose label explodes keeps at most
// maxSeriesPerFamily series.
func TestSamplerBounded(t *testing.T) {
	clock := newClock()
	reg := prometheus.NewRegistry()
	dns := prometheus.NewCounterVec(prometheus.CounterOpts{Name: famDNSErrors, Help: "d"}, []string{"kind"})
	other := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "unrelated_total", Help: "o"}, []string{"x"})
	reg.MustRegister(dns, other)
	for i := 0; i < 500; i++ {
		dns.WithLabelValues("kind" + itoa(i)).Inc()
		other.WithLabelValues(itoa(i)).Inc()
	}
	s := newSampler(reg, clock.now)
	for i := 0; i < 3; i++ {
		s.sample()
		clock.add(time.Minute)
	}
	if len(s.names) != maxSeriesPerFamily {
		t.Errorf("%d series kept, want %d", len(s.names), maxSeriesPerFamily)
	}
	w := s.window(s.current(), "hour", time.Hour, testNow)
	if len(w.DNSErrors) != maxSeriesPerFamily {
		t.Errorf("%d DNS error kinds shown, want %d", len(w.DNSErrors), maxSeriesPerFamily)
	}
}

// TestSamplerStops: run returns when stopped.
func TestSamplerStops(t *testing.T) {
	s := newSampler(prometheus.NewRegistry(), time.Now)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { s.run(stop); close(done) }()
	close(stop)
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the sampler did not stop")
	}
}

// TestRoughDuration: the overview's window headings read as people
// write durations.
func TestRoughDuration(t *testing.T) {
	for _, c := range []struct {
		d    time.Duration
		want string
	}{
		{0, "0s"}, {6*time.Second + 300*time.Millisecond, "6s"}, {59 * time.Second, "59s"},
		{42*time.Minute + 10*time.Second, "42m"}, {3*time.Hour + 5*time.Minute, "3h5m"},
	} {
		if got := roughDuration(c.d); got != c.want {
			t.Errorf("roughDuration(%v) = %q, want %q", c.d, got, c.want)
		}
	}
}
