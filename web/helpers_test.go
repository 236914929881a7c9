package web

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/authmilter/authmilter/keys"
	"github.com/authmilter/authmilter/policy"
	"github.com/authmilter/authmilter/reports"
)

// testNow is the fake clock's start.
var testNow = time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)

// fakeClock is a clock the tests move.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock { return &fakeClock{t: testNow} }

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// checkerDNS answers publication checks from a table ("domain/selector"
// → check); it implements policy.Resolver and policy.PublicationChecker.
type checkerDNS struct {
	checks map[string]policy.PublicationCheck
}

func notFoundErr(name string) error {
	return &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}

func (c *checkerDNS) LookupTXT(_ context.Context, name string) ([]string, error) {
	return nil, notFoundErr(name)
}
func (c *checkerDNS) LookupMX(_ context.Context, name string) ([]*net.MX, error) {
	return nil, notFoundErr(name)
}
func (c *checkerDNS) LookupIPAddr(_ context.Context, name string) ([]net.IPAddr, error) {
	return nil, notFoundErr(name)
}
func (c *checkerDNS) LookupAddr(_ context.Context, name string) ([]string, error) {
	return nil, notFoundErr(name)
}
func (c *checkerDNS) CheckPublication(_ context.Context, ks []*keys.Key) map[*keys.Key]policy.PublicationCheck {
	out := map[*keys.Key]policy.PublicationCheck{}
	for _, k := range ks {
		if pc, ok := c.checks[k.ID()]; ok {
			out[k] = pc
		}
	}
	return out
}

func copyKey(t testing.TB, dir, domain, selector, src string) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "testdata", "keys", src))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, domain), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, domain, selector+".pem"), data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// testPolicy compiles a snapshot over a small key table that shows every
// case of the keys page:
//
//	example.com      2026-10 (RSA, superseded), 2026-11 (RSA, active), 2026-11e (Ed25519, active)
//	fbl.esp.example  esp1: partial (one nameserver lags): no active key
//	customer.test    2026-12: delegation missing
//	other.test       s1: foreign
func testPolicy(t testing.TB) *policy.Policy {
	t.Helper()
	dir := t.TempDir()
	copyKey(t, dir, "example.com", "2026-10", "rsa2048-pkcs1.pem")
	copyKey(t, dir, "example.com", "2026-11", "rsa2048-pkcs8.pem")
	copyKey(t, dir, "example.com", "2026-11e", "ed25519-pkcs8.pem")
	copyKey(t, dir, "fbl.esp.example", "esp1", "rsa2048-pkcs1.pem")
	copyKey(t, dir, "customer.test", "2026-12", "rsa2048-pkcs8.pem")
	copyKey(t, dir, "other.test", "s1", "ed25519-pkcs8.pem")
	st := &keys.DomainState{Version: 1, Keys: map[string]*keys.KeyState{}}
	st.NewKey("2026-10", keys.RSASHA256, time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC))
	st.Key("2026-10").Superseded = time.Date(2026, 11, 3, 0, 0, 0, 0, time.UTC)
	st.NewKey("2026-11", keys.RSASHA256, time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC))
	st.NewKey("2026-11e", keys.Ed25519SHA256, time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC))
	if err := st.Save(filepath.Join(dir, "example.com")); err != nil {
		t.Fatal(err)
	}
	cfg, err := policy.ParseConfig("test.toml", []byte("[keys]\ndir = \""+dir+"\"\nrequire_published = true\n"))
	if err != nil {
		t.Fatal(err)
	}
	long := time.Now().Add(-30 * 24 * time.Hour)
	pub := policy.PublicationCheck{Publication: keys.Publication{State: keys.Published}, Since: long}
	other := func(s keys.State, detail string) policy.PublicationCheck {
		return policy.PublicationCheck{Publication: keys.Publication{State: s, Detail: detail}}
	}
	r := &checkerDNS{checks: map[string]policy.PublicationCheck{
		"example.com/2026-10": pub, "example.com/2026-11": pub, "example.com/2026-11e": pub,
		"fbl.esp.example/esp1":  other(keys.Partial, "ns2.esp.example does not serve it"),
		"customer.test/2026-12": other(keys.DelegationMissing, "customer.test has no NS record for the selector zone"),
		"other.test/s1":         other(keys.Foreign, "a record this installation never published"),
	}}
	pol, err := policy.Compile(context.Background(), cfg, r)
	if err != nil {
		t.Fatal(err)
	}
	return pol
}

// fakeDetails is a KeyDetails with canned answers.
type fakeDetails struct {
	detail  map[string]KeyDNS
	retired map[string][]RetiredKey
}

func (f *fakeDetails) Detail(k *keys.Key) (KeyDNS, bool) {
	d, ok := f.detail[k.ID()]
	return d, ok
}

func (f *fakeDetails) Retired(domain string) []RetiredKey { return f.retired[domain] }

func testDetails() *fakeDetails {
	checked := testNow.Add(-5 * time.Minute)
	return &fakeDetails{
		detail: map[string]KeyDNS{
			"example.com/2026-11": {Checked: checked, PublishedSince: time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC),
				Path: []string{"2026-11._domainkey.example.com"}, Zone: "example.com"},
			"fbl.esp.example/esp1": {Checked: checked, Zone: "esp.example", Path: []string{"esp1._domainkey.fbl.esp.example"},
				Nameservers: []Nameserver{{Name: "ns1.esp.example", Addr: "192.0.2.1", State: "published"},
					{Name: "ns2.esp.example", Addr: "192.0.2.2", State: "missing", Detail: "NXDOMAIN"}}},
			"customer.test/2026-12": {Checked: checked, Zone: "keys.esp.example",
				Add: []string{"2026-12._domainkey.customer.test. IN CNAME 2026-12.customer.test.keys.esp.example."}},
		},
		retired: map[string][]RetiredKey{
			"example.com": {{Selector: "2026-09", Algorithm: "rsa-sha256", Retired: time.Date(2026, 10, 10, 0, 0, 0, 0, time.UTC),
				Checked: checked, Withdrawn: false, State: "published", Detail: "its selector still gives the key"}},
		},
	}
}

// fakeStore is a reports store with canned sums; only Close and the
// StatsReader methods are used by the pages.
type fakeStore struct {
	reports.Store
	recorded, imported []reports.DomainTotals
	days               []reports.DayTotals
	sources            []reports.SourceTotals
	closed             bool
	err                error
}

func (f *fakeStore) Close() error { f.closed = true; return nil }

func (f *fakeStore) DomainTotals(_ context.Context, q reports.StatsQuery, search string, offset, limit int) ([]reports.DomainTotals, int, error) {
	if f.err != nil {
		return nil, 0, f.err
	}
	rows := f.recorded
	if q.Imported {
		rows = f.imported
	}
	var match []reports.DomainTotals
	for _, r := range rows {
		if strings.Contains(r.Domain, search) {
			match = append(match, r)
		}
	}
	total := len(match)
	if offset > len(match) {
		offset = len(match)
	}
	match = match[offset:]
	return match[:min(limit, len(match))], total, nil
}

func (f *fakeStore) DayTotals(_ context.Context, q reports.StatsQuery) ([]reports.DayTotals, error) {
	var out []reports.DayTotals
	for _, d := range f.days {
		if (d.Org != "") == q.Imported {
			out = append(out, d)
		}
	}
	return out, f.err
}

func (f *fakeStore) Sources(_ context.Context, q reports.StatsQuery, limit int) ([]reports.SourceTotals, error) {
	return f.sources[:min(limit, len(f.sources))], f.err
}

func totals(msgs, dkim, spf, pass int64) reports.Totals {
	return reports.Totals{Messages: msgs, DKIMAligned: dkim, SPFAligned: spf, Pass: pass, Neither: msgs - pass}
}

func testStore() *fakeStore {
	day := func(n int) time.Time { return reports.DayOf(testNow).AddDate(0, 0, -n) }
	return &fakeStore{
		recorded: []reports.DomainTotals{{Domain: "sender.example", Totals: totals(40, 30, 20, 35)}},
		imported: []reports.DomainTotals{
			{Domain: "example.com", Totals: totals(1000, 900, 950, 980)},
			{Domain: "news.example.com", Totals: totals(10, 0, 10, 10)},
		},
		days: []reports.DayTotals{
			{Day: day(2), Org: "google.com", Totals: totals(300, 280, 290, 295)},
			{Day: day(2), Org: "Yahoo", Totals: totals(100, 90, 95, 97)},
			{Day: day(1), Org: "google.com", Totals: totals(600, 530, 565, 588)},
			{Day: day(1), Totals: totals(7, 7, 7, 7)},
		},
		sources: []reports.SourceTotals{
			{IP: netip.MustParseAddr("203.0.113.9"), Org: "google.com", HeaderFrom: []string{"example.com"}, Totals: totals(15, 0, 0, 0)},
			{IP: netip.MustParseAddr("192.0.2.25"), Org: "google.com", HeaderFrom: []string{"example.com"}, Totals: totals(900, 880, 890, 900)},
		},
	}
}

// testOptions are Options over the test snapshot, details, store and a
// registry with a few counters.
func testOptions(t testing.TB, clock *fakeClock) Options {
	t.Helper()
	pol := testPolicy(t)
	reg := prometheus.NewRegistry()
	msgs := prometheus.NewCounterVec(prometheus.CounterOpts{Name: famMessages, Help: "m"}, []string{"direction", "action"})
	msgs.WithLabelValues("out", "accept").Add(5)
	msgs.WithLabelValues("in", "accept").Add(3)
	reg.MustRegister(msgs)
	store := testStore()
	return Options{
		Version: "1.2.3-test",
		Started: testNow.Add(-2 * time.Hour),
		Policy:  func() *policy.Policy { return pol },
		Keys:    testDetails(),
		Reload: func() ReloadStatus {
			return ReloadStatus{At: testNow.Add(-time.Hour), OK: true, Generation: 3, Loaded: testNow.Add(-time.Hour)}
		},
		Metrics:     reg,
		OpenReports: func(context.Context) (reports.Store, error) { return store, nil },
		Config:      policy.DefaultWebConfig(),
		Logger:      slog.New(slog.NewTextHandler(io.Discard, nil)),
		Now:         clock.now,
	}
}

func newTestHandler(t testing.TB, o Options) *Handler {
	t.Helper()
	h, err := NewHandler(o)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// get serves one request; hdr are header name, value pairs.
func get(h http.Handler, method, target string, hdr ...string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, target, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

var errDown = errors.New("dial tcp 127.0.0.1:5432: connection refused")

// getFrom serves GET / from remote with an Authorization header and
// returns the status.
func getFrom(h http.Handler, remote, authz string) int {
	req := httptest.NewRequest("GET", "/", nil)
	req.RemoteAddr = remote
	req.Header.Set("Authorization", authz)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Code
}
