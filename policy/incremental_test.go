package policy

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/authmilter/authmilter/internal/testdns"
	"github.com/authmilter/authmilter/keys"
	"github.com/authmilter/authmilter/policy/resolve"
)

// snapshotSummary is what a snapshot decides: each key's publication state
// and each domain's active keys.
func snapshotSummary(p *Policy) string {
	var b strings.Builder
	for _, d := range p.table.Domains() {
		fmt.Fprintf(&b, "%s active=", d)
		for _, k := range p.ActiveKeys(d) {
			fmt.Fprintf(&b, "%s,", k.Selector)
		}
		b.WriteString("\n")
		for _, k := range p.table.Keys(d) {
			fmt.Fprintf(&b, "  %s %v\n", k.Selector, p.Publication(k).State)
		}
	}
	fmt.Fprintf(&b, "count=%d", p.ActiveCount())
	for _, st := range []keys.State{keys.Published, keys.Missing, keys.Mismatch, keys.Revoked, keys.TempError,
		keys.Unchecked, keys.Partial, keys.DelegationMissing, keys.Foreign, keys.Waiting} {
		if n := p.CountState(st); n > 0 {
			fmt.Fprintf(&b, " %v=%d", st, n)
		}
	}
	return b.String()
}

// TestCompileFromMatchesCompileTable: after random changes to a key table
// (keys added, removed, replaced; records published and withdrawn), a
// snapshot compiled from the previous one gives exactly what a full
// compile gives, and it did redo only a few domains.
func TestCompileFromMatchesCompileTable(t *testing.T) {
	dir := t.TempDir()
	srv := testdns.Start(t)
	res, err := resolve.New(resolve.Config{Servers: []string{srv.Addr()}, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := ParseConfig("test.toml", []byte("authserv_id = \"mx.test\"\n[keys]\ndir = \""+dir+"\"\nrequire_published = true\ncheck = \"resolver\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	srcs := []string{"rsa2048-pkcs1.pem", "ed25519-pkcs8.pem", "rsa2048-pkcs8.pem"}
	install := func(domain, sel, src string) {
		data, err := os.ReadFile(filepath.Join("..", "testdata", "keys", src))
		if err != nil {
			t.Fatal(err)
		}
		os.MkdirAll(filepath.Join(dir, domain), 0o700)
		if err := os.WriteFile(filepath.Join(dir, domain, sel+".pem"), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	publish := func(tab *keys.Table, domain, sel string) {
		for _, k := range tab.Keys(domain) {
			if k.Selector == sel {
				srv.AddRR(t, fmt.Sprintf("%s. 0 IN TXT %q", keys.RecordName(domain, sel), keys.FormatRecord(k)))
			}
		}
	}
	for i := range 20 {
		install(fmt.Sprintf("d%d.example", i), "s1", srcs[i%len(srcs)])
	}
	tab, err := keys.LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 15 {
		publish(tab, fmt.Sprintf("d%d.example", i), "s1")
	}
	w, err := keys.NewWatcher(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := w.Establish(tab); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	prev, err := CompileTable(ctx, cfg, tab, res)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(7, 8))
	incremental := 0
	for step := range 40 {
		d := fmt.Sprintf("d%d.example", rng.IntN(22))
		sel := fmt.Sprintf("s%d", rng.IntN(3))
		switch rng.IntN(4) {
		case 0:
			install(d, sel, srcs[rng.IntN(len(srcs))])
		case 1:
			os.Remove(filepath.Join(dir, d, sel+".pem"))
		case 2:
			publish(prev.Table(), d, sel)
		case 3: // nothing changed
		}
		tab, err := keys.Load(dir, keys.LoadOptions{Prev: prev.Table(), Watch: w})
		if err != nil {
			t.Fatal(err)
		}
		got, err := CompileFrom(ctx, cfg, tab, res, prev)
		if err != nil {
			t.Fatal(err)
		}
		want, err := CompileTable(ctx, cfg, tab, res)
		if err != nil {
			t.Fatal(err)
		}
		if g, w := snapshotSummary(got), snapshotSummary(want); g != w {
			t.Fatalf("step %d: compiled from the previous snapshot\n%s\nfull compile\n%s", step, g, w)
		}
		if ds, ok := changedDomains(prev, got); ok {
			incremental++
			if len(ds) > 8 {
				t.Errorf("step %d: %d domains redone", step, len(ds))
			}
		}
		gotCh, wantCh := strings.Join(KeyChanges(prev, got), "\n"), strings.Join(KeyChanges(prev, want), "\n")
		gotDe, wantDe := strings.Join(KeyDeactivations(prev, got), "\n"), strings.Join(KeyDeactivations(prev, want), "\n")
		if gotCh != wantCh || gotDe != wantDe {
			t.Fatalf("step %d: changes %q / %q, want %q / %q", step, gotCh, gotDe, wantCh, wantDe)
		}
		prev = got
	}
	if incremental < 20 {
		t.Errorf("only %d of 40 compiles started from the previous snapshot", incremental)
	}
}
