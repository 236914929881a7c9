package dnsserver

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/authmilter/authmilter/keys"
)

// benchTable returns a key folder of n domains, d000001.example …, each
// with an RSA-2048 key "2026-11.myesp" and every fourth one an Ed25519
// key "2026-11e.myesp" too, all in the pattern zone myesp._domainkey.*. It
// is kept in the temporary folder between runs (writing 125,000 files
// takes a while); a marker file says it is complete.
func benchTable(b *testing.B, n int) string {
	b.Helper()
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("authmilter-dnsserver-bench-%d-v1", n))
	marker := filepath.Join(dir, ".complete")
	if _, err := os.Stat(marker); err == nil {
		return dir
	}
	if err := os.RemoveAll(dir); err != nil {
		b.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		b.Fatal(err)
	}
	rsaKey, edKey := rsaPEM(b), edPEM(b)
	created := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	for i := 1; i <= n; i++ {
		d := filepath.Join(dir, fmt.Sprintf("d%06d.example", i))
		if err := os.Mkdir(d, 0o700); err != nil {
			b.Fatal(err)
		}
		files := map[string][]byte{"2026-11.myesp.pem": rsaKey}
		if i%4 == 0 {
			files["2026-11e.myesp.pem"] = edKey
		}
		for name, data := range files {
			path := filepath.Join(d, name)
			if err := os.WriteFile(path, data, 0o600); err != nil {
				b.Fatal(err)
			}
			if err := os.Chtimes(path, created, created); err != nil {
				b.Fatal(err)
			}
		}
	}
	if err := os.WriteFile(marker, nil, 0o600); err != nil {
		b.Fatal(err)
	}
	return dir
}

func benchConfig() Config {
	return Config{
		Zones:       []string{"myesp._domainkey.*"},
		Nameservers: []string{"ns1.myesp.example", "ns2.myesp.example"},
		TTL:         time.Hour, NegativeTTL: 5 * time.Minute, RevokedFor: 7 * 24 * time.Hour,
	}
}

// BenchmarkBuild100k builds the zones of 100,000 domains (125,000 keys)
// and reports the heap the result holds (MiB-held).
func BenchmarkBuild100k(b *testing.B) { benchBuild(b, 100000) }

// BenchmarkBuild10k is the same at 10,000 domains.
func BenchmarkBuild10k(b *testing.B) { benchBuild(b, 10000) }

func benchBuild(b *testing.B, n int) {
	tab, err := keys.LoadDir(benchTable(b, n))
	if err != nil {
		b.Fatal(err)
	}
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	var held uint64
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		var before, after runtime.MemStats
		b.StopTimer()
		runtime.GC()
		runtime.ReadMemStats(&before)
		b.StartTimer()
		z, err := Build(benchConfig(), tab, nil, now)
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		runtime.GC()
		runtime.ReadMemStats(&after)
		if nz, _ := z.Len(); nz != n {
			b.Fatalf("%d zones", nz)
		}
		held = after.HeapAlloc - before.HeapAlloc
		runtime.KeepAlive(z)
		b.StartTimer()
	}
	b.ReportMetric(float64(held)/(1<<20), "MiB-held")
}

// BenchmarkServe100k answers TXT queries for keys of the 100,000-domain
// zone set through the request handler (no sockets), on every core.
func BenchmarkServe100k(b *testing.B) {
	tab, err := keys.LoadDir(benchTable(b, 100000))
	if err != nil {
		b.Fatal(err)
	}
	z, err := Build(benchConfig(), tab, nil, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	s, err := New(benchConfig(), nil)
	if err != nil {
		b.Fatal(err)
	}
	s.Swap(z)
	queries := make([][]byte, 1000)
	for i := range queries {
		q := question(fmt.Sprintf("2026-11.myesp._domainkey.d%06d.example.", i*97+1), dns.TypeTXT)
		q.SetEdns0(1232, false)
		queries[i], _ = q.Pack()
	}
	src := netip.MustParseAddr("127.0.0.1")
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			s.serve(queries[i%len(queries)], src, false, func([]byte) error { return nil })
			i++
		}
	})
}
