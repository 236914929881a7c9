package web

import (
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// The sampler's bounds: one sample a minute for a day (and one more, so
// that the sample a day old is still there), at most maxSeriesPerFamily
// series of each family: a label that explodes costs no more.
const (
	sampleEvery        = time.Minute
	sampleSlots        = 24*60 + 1
	maxSeriesPerFamily = 50
)

// The metric families the overview shows (cmd/authmilter/metrics.go).
const (
	famMessages   = "authmilter_messages_total"
	famSignatures = "authmilter_signatures_total"
	famUnsigned   = "authmilter_unsigned_total"
	famDKIM       = "authmilter_dkim_results_total"
	famSPF        = "authmilter_spf_results_total"
	famDMARC      = "authmilter_dmarc_results_total"
	famDNSErrors  = "authmilter_dns_errors_total"
	famConnEvents = "authmilter_connection_events_total"
	famConnsOpen  = "authmilter_connections_open"
)

// sampledFamilies are the counters kept in the ring.
var sampledFamilies = map[string]bool{famMessages: true, famSignatures: true, famUnsigned: true, famDKIM: true,
	famSPF: true, famDMARC: true, famDNSErrors: true, famConnEvents: true}

// series names one sampled series: its family and its label values
// joined by "/" (see labelOf).
type series struct{ family, label string }

// sample is the counters at one time; values[i] is column i (a series
// that appeared later has no value in older samples: 0).
type sample struct {
	at     time.Time
	values []float64
}

// sampler reads the daemon's counters once a minute and keeps a day of
// them, so that the overview can say what happened in the last hour and
// day: now minus the sample that old. Memory is bounded: sampleSlots
// samples of at most len(sampledFamilies)*maxSeriesPerFamily values.
type sampler struct {
	g   prometheus.Gatherer
	now func() time.Time

	mu        sync.Mutex
	columns   map[series]int
	perFamily map[string]int
	names     []series
	ring      [sampleSlots]sample
	next, n   int
	// gatherErr is the last error of the registry, shown on the overview.
	gatherErr string
}

func newSampler(g prometheus.Gatherer, now func() time.Time) *sampler {
	return &sampler{g: g, now: now, columns: map[series]int{}, perFamily: map[string]int{}}
}

// run samples every sampleEvery until stop is closed.
func (s *sampler) run(stop <-chan struct{}) {
	s.sample()
	t := time.NewTicker(sampleEvery)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			s.sample()
		}
	}
}

// sample adds the counters as they are now to the ring.
func (s *sampler) sample() {
	if s.g == nil {
		return
	}
	at := s.now()
	mfs, err := s.g.Gather()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.noteErr(err)
	slot := &s.ring[s.next]
	slot.at = at
	slot.values = s.fill(slot.values[:0], mfs)
	s.next = (s.next + 1) % sampleSlots
	s.n = min(s.n+1, sampleSlots)
}

func (s *sampler) noteErr(err error) {
	s.gatherErr = ""
	if err != nil {
		s.gatherErr = clip(err.Error())
	}
}

// fill appends to vals the value of every column from mfs (s.mu held),
// adding columns for new series while their family has room.
func (s *sampler) fill(vals []float64, mfs []*dto.MetricFamily) []float64 {
	for _, mf := range mfs {
		fam := mf.GetName()
		if !sampledFamilies[fam] {
			continue
		}
		for _, m := range mf.GetMetric() {
			key := series{fam, labelOf(m)}
			col, ok := s.columns[key]
			if !ok {
				if s.perFamily[fam] >= maxSeriesPerFamily {
					continue
				}
				s.perFamily[fam]++
				col = len(s.names)
				s.columns[key] = col
				s.names = append(s.names, key)
			}
			for len(vals) <= col {
				vals = append(vals, 0)
			}
			vals[col] = m.GetCounter().GetValue()
		}
	}
	for len(vals) < len(s.names) {
		vals = append(vals, 0)
	}
	return vals
}

// labelOf joins a metric's label values: direction first (in, out),
// then the others in label-name order, e.g. "out/accept".
func labelOf(m *dto.Metric) string {
	var dir string
	var parts []string
	for _, l := range m.GetLabel() {
		if l.GetName() == "direction" {
			dir = l.GetValue()
			continue
		}
		parts = append(parts, l.GetValue())
	}
	if dir != "" {
		parts = append([]string{dir}, parts...)
	}
	return strings.Join(parts, "/")
}

// current reads the counters now (not kept) and the open connections.
type current struct {
	at        time.Time
	values    []float64
	connsOpen float64
	err       string
}

func (s *sampler) current() current {
	cur := current{at: s.now()}
	if s.g == nil {
		return cur
	}
	mfs, err := s.g.Gather()
	for _, mf := range mfs {
		if mf.GetName() == famConnsOpen {
			for _, m := range mf.GetMetric() {
				cur.connsOpen += m.GetGauge().GetValue()
			}
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		cur.err = clip(err.Error())
	} else {
		cur.err = s.gatherErr
	}
	cur.values = s.fill(nil, mfs)
	return cur
}

// base returns the newest sample taken at or before t (s.mu held).
func (s *sampler) base(t time.Time) (sample, bool) {
	for i := 0; i < s.n; i++ {
		sm := s.ring[(s.next-1-i+2*sampleSlots)%sampleSlots]
		if !sm.at.After(t) {
			return sm, true
		}
	}
	return sample{}, false
}

// labelCount is one series' count in a window. JSON: label, count.
type labelCount struct {
	Label string  `json:"label"`
	Count float64 `json:"count"`
}

// windowCounts are the counters' increase over a window. JSON fields:
// window ("hour", "day", "start"), since (RFC 3339), since_start (true
// when the daemon is younger than the window: the numbers are since it
// started), outbound_messages, outbound_signed, outbound_unsigned,
// signatures, inbound_messages, unsigned_by_reason, dkim_results (by
// direction/result), spf_results, dmarc_results, messages_by_action (by
// direction/action), dns_errors (by kind), connection_events (by event).
type windowCounts struct {
	Window           string       `json:"window"`
	Since            time.Time    `json:"since"`
	SinceStart       bool         `json:"since_start"`
	OutboundMessages float64      `json:"outbound_messages"`
	OutboundSigned   float64      `json:"outbound_signed"`
	OutboundUnsigned float64      `json:"outbound_unsigned"`
	Signatures       float64      `json:"signatures"`
	InboundMessages  float64      `json:"inbound_messages"`
	Unsigned         []labelCount `json:"unsigned_by_reason"`
	DKIM             []labelCount `json:"dkim_results"`
	SPF              []labelCount `json:"spf_results"`
	DMARC            []labelCount `json:"dmarc_results"`
	Actions          []labelCount `json:"messages_by_action"`
	DNSErrors        []labelCount `json:"dns_errors"`
	ConnEvents       []labelCount `json:"connection_events"`
}

// window returns the increase of the counters from the sample length old
// (or from the start, when there is none that old) to cur.
func (s *sampler) window(cur current, name string, length time.Duration, started time.Time) windowCounts {
	s.mu.Lock()
	defer s.mu.Unlock()
	w := windowCounts{Window: name, Since: started.UTC(), SinceStart: true}
	var base []float64
	if length > 0 {
		if b, ok := s.base(cur.at.Add(-length)); ok {
			base, w.Since, w.SinceStart = b.values, b.at.UTC(), false
		}
	}
	by := map[string][]labelCount{}
	for col, key := range s.names {
		if col >= len(cur.values) {
			break
		}
		d := cur.values[col]
		if col < len(base) && base[col] <= d {
			d -= base[col]
		}
		switch key.family {
		case famMessages:
			if strings.HasPrefix(key.label, "out/") {
				w.OutboundMessages += d
			} else {
				w.InboundMessages += d
			}
		case famSignatures:
			w.Signatures += d
		case famUnsigned:
			w.OutboundUnsigned += d
		}
		by[key.family] = append(by[key.family], labelCount{key.label, d})
	}
	w.OutboundSigned = max(0, w.OutboundMessages-w.OutboundUnsigned)
	sorted := func(fam string) []labelCount {
		l := by[fam]
		sort.Slice(l, func(i, j int) bool { return l[i].Label < l[j].Label })
		if l == nil {
			l = []labelCount{}
		}
		return l
	}
	w.Unsigned, w.DKIM, w.SPF, w.DMARC = sorted(famUnsigned), sorted(famDKIM), sorted(famSPF), sorted(famDMARC)
	w.Actions, w.DNSErrors, w.ConnEvents = sorted(famMessages), sorted(famDNSErrors), sorted(famConnEvents)
	return w
}

// perMinute returns the messages of each of the last n minutes that the
// ring covers (oldest first), ending with cur.
func (s *sampler) perMinute(cur current, n int) []float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	total := func(vals []float64) float64 {
		var t float64
		for col, key := range s.names {
			if key.family == famMessages && col < len(vals) {
				t += vals[col]
			}
		}
		return t
	}
	points := []float64{total(cur.values)}
	for i := 0; i < s.n && len(points) <= n; i++ {
		sm := s.ring[(s.next-1-i+2*sampleSlots)%sampleSlots]
		if cur.at.Sub(sm.at) > time.Duration(n)*sampleEvery+sampleEvery/2 {
			break
		}
		points = append(points, total(sm.values))
	}
	out := make([]float64, 0, len(points))
	for i := len(points) - 1; i > 0; i-- {
		out = append(out, max(0, points[i-1]-points[i]))
	}
	return out
}
