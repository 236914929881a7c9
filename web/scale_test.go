package web

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/authmilter/authmilter/keys"
	"github.com/authmilter/authmilter/policy"
)

// memSource is a keySource made in memory: one key per domain, every
// 1000th missing from DNS. Writing 100,000 key folders would measure the
// file system, not the page.
type memSource struct {
	domains []string
	keys    map[string][]*keys.Key
	all     int
	cfg     *policy.Config
}

func newMemSource(t testing.TB, n int) *memSource {
	t.Helper()
	cfg, err := policy.ParseConfig("t.toml", []byte("[keys]\ndir = \""+t.TempDir()+"\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	s := &memSource{keys: make(map[string][]*keys.Key, n), cfg: cfg}
	for i := 0; i < n; i++ {
		d := fmt.Sprintf("d%07d.example", i)
		s.domains = append(s.domains, d)
		s.keys[d] = []*keys.Key{{Domain: d, Selector: fmt.Sprintf("S%d", i%7), Algorithm: keys.RSASHA256, Bits: 2048,
			Created: testNow.Add(-time.Duration(i%90) * 24 * time.Hour)}}
	}
	s.all = n
	return s
}

func (s *memSource) Domains() []string         { return s.domains }
func (s *memSource) Keys(d string) []*keys.Key { return s.keys[d] }
func (s *memSource) KeyCount() int             { return s.all }
func (s *memSource) Config() *policy.Config    { return s.cfg }
func (s *memSource) Signs(k *keys.Key) bool    { return s.Publication(k).State == keys.Published }
func (s *memSource) ActiveCount(d string) int {
	n := 0
	for _, k := range s.keys[d] {
		if s.Signs(k) {
			n++
		}
	}
	return n
}
func (s *memSource) Publication(k *keys.Key) keys.Publication {
	if k.Domain[len("d"):len("d0000000")][4:] == "999" {
		return keys.Publication{State: keys.Missing, Detail: "NXDOMAIN"}
	}
	return keys.Publication{State: keys.Published}
}
func (s *memSource) InactiveReason(*keys.Key, keys.Publication, time.Time) string {
	return "DNS record missing"
}

// scaleHandler is a handler whose keys pages show src.
func scaleHandler(t testing.TB, src keySource) *Handler {
	t.Helper()
	h := newTestHandler(t, testOptions(t, newClock()))
	h.source = func() keySource { return src }
	return h
}

// TestKeysAt100k: pages, filters and totals over 100,000 domains.
func TestKeysAt100k(t *testing.T) {
	src := newMemSource(t, 100_000)
	h := scaleHandler(t, src)
	tests := []struct {
		target       string
		total, pages int
		first        string
		rows         int
	}{
		{"/keys?page=2000&format=json", 100_000, 2000, "d0099950.example", 50},
		{"/keys?page=200&per=500&format=json", 100_000, 200, "d0099500.example", 500},
		{"/keys?q=d00123&format=json", 100, 2, "d0012300.example", 50},
		{"/keys?q=s6&per=10&format=json", 100_000 / 7, 1429, "d0000006.example", 10},
		{"/keys?state=missing&format=json", 100, 2, "d0000999.example", 50},
		{"/keys?state=problem&page=2&format=json", 100, 2, "d0050999.example", 50},
		{"/keys?state=inactive&q=d0001&format=json", 1, 1, "d0001999.example", 1},
	}
	for _, tt := range tests {
		t.Run(tt.target, func(t *testing.T) {
			rec := get(h, "GET", tt.target)
			if rec.Code != 200 {
				t.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
			var p keysPage
			if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil {
				t.Fatal(err)
			}
			if p.Total != tt.total || p.Pages != tt.pages || len(p.Domains) != tt.rows || p.Domains[0].Domain != tt.first {
				t.Errorf("total %d pages %d rows %d first %s; want %d %d %d %s", p.Total, p.Pages, len(p.Domains),
					p.Domains[0].Domain, tt.total, tt.pages, tt.rows, tt.first)
			}
		})
	}
	if rec := get(h, "GET", "/keys?page=2001"); rec.Code != 400 {
		t.Errorf("past the last page: status %d", rec.Code)
	}
}

// TestKeysWorkPerRequest: one page costs the same at 1,000 and at
// 100,000 domains (no work per domain off the page), and a search costs
// no allocation per domain.
func TestKeysWorkPerRequest(t *testing.T) {
	small, big := newMemSource(t, 1_000), newMemSource(t, 100_000)
	// Unfiltered, page 1; filtered, a page past the end: the whole table
	// is matched, no row is made, so what is counted is the matching.
	allocs := func(src keySource, search, state string) float64 {
		v := keyView{src: src, now: testNow}
		page := 1
		if search != "" || state != "" {
			page = maxPage
		}
		return testing.AllocsPerRun(5, func() {
			if _, err := v.listKeys(search, state, page, 50); (err != nil) != (page == maxPage) {
				t.Fatal(err)
			}
		})
	}
	for _, f := range []struct{ search, state string }{{"", ""}, {"d00009", ""}, {"s3", ""}, {"", "missing"}, {"", "problem"}, {"", "inactive"}} {
		a, b := allocs(small, f.search, f.state), allocs(big, f.search, f.state)
		// The error message's numbers differ in length: a few bytes.
		if b > a+2 {
			t.Errorf("search %q state %q: %v allocations at 1,000 domains, %v at 100,000", f.search, f.state, a, b)
		}
	}
}

// BenchmarkKeysPage100k: /keys at 100,000 domains, unfiltered (a slice
// of the table) and searched (a substring test per domain).
func BenchmarkKeysPage100k(b *testing.B) {
	src := newMemSource(b, 100_000)
	h := scaleHandler(b, src)
	for _, target := range []string{"/keys?page=1000", "/keys?page=1000&format=json", "/keys?q=d00999", "/keys?state=problem"} {
		b.Run(target, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if rec := get(h, "GET", target); rec.Code != 200 {
					b.Fatalf("status %d", rec.Code)
				}
			}
		})
	}
}
