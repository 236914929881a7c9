package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/authmilter/authmilter/internal/syncbuf"
	"github.com/authmilter/authmilter/keys"
	"github.com/authmilter/authmilter/keys/dnscheck"
	"github.com/authmilter/authmilter/policy"
	"github.com/authmilter/authmilter/web"
)

// TestKeyChecksBounds: the kept checks stay bounded whatever the table's
// size: every check up to keepAllChecksUpTo, then only those of keys that
// are not published everywhere, up to maxKeptChecks.
func TestKeyChecksBounds(t *testing.T) {
	c := newKeyChecks()
	now := time.Now()
	published := dnscheck.Result{State: keys.Published, Name: "x"}
	missing := dnscheck.Result{State: keys.Missing, Name: "x", Detail: "no TXT record"}
	for i := range keepAllChecksUpTo {
		c.record(&keys.Key{Domain: fmt.Sprintf("p%d.example", i), Selector: "s"}, published, now)
	}
	if len(c.byKey) != keepAllChecksUpTo {
		t.Fatalf("kept %d checks of published keys, want %d", len(c.byKey), keepAllChecksUpTo)
	}
	c.record(&keys.Key{Domain: "one-more.example", Selector: "s"}, published, now)
	if len(c.byKey) != keepAllChecksUpTo {
		t.Errorf("a published key's check was kept beyond %d: %d", keepAllChecksUpTo, len(c.byKey))
	}
	for i := range maxKeptChecks {
		c.record(&keys.Key{Domain: fmt.Sprintf("m%d.example", i), Selector: "s"}, missing, now)
	}
	if len(c.byKey) != maxKeptChecks {
		t.Errorf("kept %d checks, want the bound %d", len(c.byKey), maxKeptChecks)
	}
	// A kept key found published again (large table) loses its check.
	var some *keys.Key
	for k := range c.byKey {
		some = k
		break
	}
	c.record(some, published, now)
	if _, ok := c.byKey[some]; ok {
		t.Error("a key found published again kept its old check")
	}
	var nilChecks *keyChecks
	nilChecks.record(some, missing, now) // [web] off: no panic, nothing kept
	nilChecks.prune(nil)
}

// retiredEnv is a key table with one active and one retired key of
// a.example, whose records a test DNS server serves.
func retiredEnv(t *testing.T) (*keyEnv, *daemon, *syncbuf.Buffer) {
	t.Helper()
	e := newKeyEnv(t, "")
	gen(t, e, "a.example", "s1", "rsa-2048")
	old := e.publish(t, "a.example", "s1")
	if _, err := keys.Retire(old); err != nil {
		t.Fatal(err)
	}
	// As rotate records it: the table lists retired keys from the state.
	ddir := filepath.Join(e.dir, "a.example")
	st, err := keys.LoadState(ddir)
	if err != nil {
		t.Fatal(err)
	}
	st.Key("s1").Retired = time.Now()
	if err := st.Save(ddir); err != nil {
		t.Fatal(err)
	}
	gen(t, e, "a.example", "s2", "rsa-2048")
	e.publish(t, "a.example", "s2")
	cfg, _, err := loadConfig(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	r, err := newResolver(cfg)
	if err != nil {
		t.Fatal(err)
	}
	checker, err := newChecker(cfg, r.Servers())
	if err != nil {
		t.Fatal(err)
	}
	pol, err := policy.Compile(context.Background(), cfg, r)
	if err != nil {
		t.Fatal(err)
	}
	if got := pol.Table().Retired("a.example"); len(got) != 1 || got[0].Selector != "s1" {
		t.Fatalf("retired keys of a.example: %+v, want s1", got)
	}
	logs := &syncbuf.Buffer{}
	d := &daemon{log: slog.New(slog.NewTextHandler(logs, nil)), checks: newKeyChecks()}
	d.dns.checker = checker
	d.current.Store(pol)
	return e, d, logs
}

// TestRetiredKeyChecks: the daemon checks whether a retired key's selector
// still gives a key (a lingering record), logs it once, shows it to the
// pages, sees the record's removal at the next check, and forgets keys
// that leave the table.
func TestRetiredKeyChecks(t *testing.T) {
	e, d, logs := retiredEnv(t)
	ctx := context.Background()
	every := d.current.Load().Config().Keys.Reverify.Duration
	pages := webKeys{d}

	if got := pages.Retired("a.example"); len(got) != 0 {
		t.Fatalf("retired checks before any ran: %+v", got)
	}
	now := time.Now()
	d.checkRetired(ctx, d.checks, now)
	got := pages.Retired("A.Example")
	if len(got) != 1 || got[0].Selector != "s1" || got[0].Withdrawn || got[0].State != string(keys.Published) || got[0].Checked.IsZero() {
		t.Fatalf("lingering retired record: got %+v, want s1 not withdrawn, published", got)
	}
	if n := strings.Count(logs.String(), "retired key is still usable"); n != 1 {
		t.Errorf("warning logged %d times, want once:\n%s", n, logs.String())
	}
	// Not due again before keys.reverify: no new lookup, no new line.
	d.checkRetired(ctx, d.checks, now.Add(every/2))
	if n := strings.Count(logs.String(), "retired key is still usable"); n != 1 {
		t.Errorf("warning logged %d times after a second pass, want once", n)
	}

	e.dns.SetTXT(keys.RecordName("a.example", "s1")) // removed
	// (a new checker: the old one caches the answer for its TTL, as a
	// day-long keys.reverify cycle would outlast)
	cfg := d.current.Load().Config()
	checker, err := newChecker(cfg, cfg.DNS.Servers)
	if err != nil {
		t.Fatal(err)
	}
	d.dns.checker = checker
	d.checkRetired(ctx, d.checks, now.Add(2*every))
	got = pages.Retired("a.example")
	if len(got) != 1 || !got[0].Withdrawn {
		t.Fatalf("after the record was removed: got %+v, want withdrawn", got)
	}

	// The retired key is forgotten (state and file): its check goes.
	ddir := filepath.Join(e.dir, "a.example")
	st, err := keys.LoadState(ddir)
	if err != nil {
		t.Fatal(err)
	}
	delete(st.Keys, "s1")
	if err := st.Save(ddir); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(ddir, keys.RetiredDir)); err != nil {
		t.Fatal(err)
	}
	table, err := keys.Load(e.dir, keys.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	d.checks.prune(table)
	if got := pages.Retired("a.example"); len(got) != 0 {
		t.Errorf("retired check kept after its key left the table: %+v", got)
	}
}

// TestWebKeyDetail: the pages get a key's last check (nameservers, path)
// and since when it has been published, and nothing for a key never
// checked.
func TestWebKeyDetail(t *testing.T) {
	_, d, _ := retiredEnv(t)
	pol := d.current.Load()
	k := pol.ActiveKeys("a.example")[0]
	pages := webKeys{d}
	if _, ok := pages.Detail(k); ok {
		t.Fatal("detail of a key never checked")
	}
	at := time.Now()
	d.checks.record(k, dnscheck.Result{State: keys.Partial, Name: "s2._domainkey.a.example", CNAMEs: []string{"s2.keys.esp.example"},
		Zone: "keys.esp.example", Nameservers: []dnscheck.Server{{Name: "ns1.esp.example", Addr: "192.0.2.53", State: keys.Missing, Detail: "no TXT record"}}}, at)
	got, ok := pages.Detail(k)
	if !ok || !got.Checked.Equal(at) || got.Zone != "keys.esp.example" || len(got.Path) != 2 || got.Path[1] != "s2.keys.esp.example" ||
		len(got.Nameservers) != 1 || got.Nameservers[0].State != "missing" || got.Nameservers[0].Addr != "192.0.2.53" {
		t.Errorf("detail: %+v, %v", got, ok)
	}
}

// TestWebPagesNameservers: in a provider's DNS world (Knot nameservers,
// Unbound), the daemon's own compile and retired-key checks feed the
// status pages: the domain page's JSON shows the key that one nameserver
// lacks as partial with each nameserver's answer, and the retired key whose
// record stays as still usable.
func TestWebPagesNameservers(t *testing.T) {
	w := newDNSWorld(t)
	// The retired keys as rotate records them (the table lists retired
	// keys from the state).
	ddir := filepath.Join(w.dir, "customer.example")
	st, err := keys.LoadState(ddir)
	if err != nil {
		t.Fatal(err)
	}
	st.Key("old").Retired, st.Key("gone").Retired = time.Now(), time.Now()
	if err := st.Save(ddir); err != nil {
		t.Fatal(err)
	}
	cfg, _, err := loadConfig(w.cfg)
	if err != nil {
		t.Fatal(err)
	}
	d := &daemon{log: slog.New(slog.NewTextHandler(io.Discard, nil)), metrics: newMetrics(), checks: newKeyChecks(),
		warned: map[string]string{}, exiting: make(chan struct{})}
	c := d.compile(cfg, dnsState{}, nil, false)
	if c.err != nil {
		t.Fatal(c.err)
	}
	d.dns = c.dns
	d.current.Store(c.pol)
	d.noteReload(nil)
	d.checkRetired(context.Background(), d.checks, time.Now())
	h, err := web.NewHandler(web.Options{Version: "test", Started: time.Now(), Policy: d.current.Load, Keys: webKeys{d},
		Reload: d.webReload, Metrics: d.metrics.reg, Config: policy.DefaultWebConfig(), Logger: d.log})
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/keys/customer.example?format=json", nil))
	if rec.Code != 200 {
		t.Fatalf("status %d: %s", rec.Code, rec.Body.String())
	}
	var page struct {
		Keys []struct {
			Selector string      `json:"selector"`
			DNS      string      `json:"dns"`
			Active   bool        `json:"active"`
			Check    *web.KeyDNS `json:"dns_check"`
		} `json:"keys"`
		Retired []web.RetiredKey `json:"retired"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &page); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, k := range page.Keys {
		if k.Selector != "2026-12.myesp" {
			continue
		}
		found = true
		if k.DNS != string(keys.Partial) || k.Active || k.Check == nil || len(k.Check.Nameservers) != 2 {
			t.Fatalf("2026-12.myesp: %+v (check %+v), want partial, inactive, two nameservers", k, k.Check)
		}
		states := map[string]bool{}
		for _, ns := range k.Check.Nameservers {
			states[ns.State] = true
		}
		if !states[string(keys.Published)] || !states[string(keys.Missing)] {
			t.Errorf("nameserver answers %+v, want one published and one missing", k.Check.Nameservers)
		}
	}
	if !found {
		t.Fatalf("no 2026-12.myesp key on the page: %s", rec.Body.String())
	}
	retired := map[string]web.RetiredKey{}
	for _, rk := range page.Retired {
		retired[rk.Selector] = rk
	}
	if old, ok := retired["old"]; !ok || old.Withdrawn || old.Checked.IsZero() {
		t.Errorf("retired key old (its record stays): %+v, want checked and not withdrawn", page.Retired)
	}
	if gone, ok := retired["gone"]; !ok || !gone.Withdrawn {
		t.Errorf("retired key gone (no record): %+v, want withdrawn", page.Retired)
	}
}

// TestRetiredChecksByDomain: the retired checks are kept per domain (the
// keys page's problem filter asks for each of 100,000 domains), case
// does not matter, and each domain gets only its own.
func TestRetiredChecksByDomain(t *testing.T) {
	c := newKeyChecks()
	at := time.Now()
	for i := range 1000 {
		d := fmt.Sprintf("D%04d.Example", i)
		for _, sel := range []string{"s2", "s1"} {
			c.retiredResult(keys.RetiredKey{Domain: d, Selector: sel}, dnscheck.RetiredResult{Retired: i%2 == 0, State: keys.Missing}, at)
		}
	}
	got := c.retiredOf("d0007.example")
	if len(got) != 2 || got[0].Selector != "s1" || got[1].Selector != "s2" || got[0].Withdrawn || !got[0].Checked.Equal(at) {
		t.Fatalf("retired checks of d0007.example: %+v, want s1 and s2, not withdrawn", got)
	}
	if len(c.retired) != 1000 {
		t.Errorf("%d domains indexed, want 1000", len(c.retired))
	}
	if got := c.retiredOf("nothing.example"); got != nil {
		t.Errorf("a domain without retired keys: %+v", got)
	}
}
