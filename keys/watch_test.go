package keys

import (
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// tableSummary is everything a caller can see of a table, for comparing a
// table read through the watcher with one read from scratch.
func tableSummary(t *Table) string {
	var b strings.Builder
	for _, d := range t.Domains() {
		fmt.Fprintf(&b, "%s:\n", d)
		for _, k := range t.Keys(d) {
			fmt.Fprintf(&b, "  %s %s %s %d mod=%d created=%d testing=%v pub=%x\n", k.Path, k.Selector, k.Algorithm, k.Bits,
				k.ModTime.UnixNano(), k.Created.UnixNano(), k.Testing, k.Fingerprint())
		}
	}
	for _, d := range t.RetiredDomains() {
		for _, r := range t.Retired(d) {
			fmt.Fprintf(&b, "retired %s %s %s %d\n", r.Domain, r.Selector, r.Algorithm, r.Retired.UnixNano())
		}
	}
	ign := slices.Clone(t.Ignored())
	sort.Strings(ign)
	fmt.Fprintf(&b, "ignored %q\n", ign)
	return b.String()
}

// watchedTable loads dir and establishes a watcher over it (closed at the
// test's end).
func watchedTable(t *testing.T, dir string) (*Table, *Watcher) {
	t.Helper()
	tab, err := LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	w, err := NewWatcher(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	if err := w.Establish(tab); err != nil {
		t.Fatal(err)
	}
	return tab, w
}

// TestWatcherMatchesFullLoad is a differential test: a random sequence of
// the changes admins and tools make to a key table (keys added, replaced
// in place, renamed, removed; folders added with capitals, renamed,
// removed, made group-writable; state files; stray files), and after each
// one a Load through the watcher must give exactly what a Load from
// scratch gives — whether or not the previous table was adopted, and
// whatever the error. It also checks that the watcher did most loads
// without the stat pass.
func TestWatcherMatchesFullLoad(t *testing.T) {
	dir := t.TempDir()
	srcs := []string{"rsa2048-pkcs1.pem", "rsa2048-pkcs8.pem", "ed25519-pkcs8.pem", "rsa1024-pkcs1.pem"}
	for i := range 6 {
		installKey(t, dir, fmt.Sprintf("d%d.example", i), "s1", srcs[i%len(srcs)], 0o600)
	}
	cur, w := watchedTable(t, dir)
	seed := uint64(time.Now().UnixNano())
	if s, err := strconv.ParseUint(os.Getenv("WATCH_SEED"), 10, 64); err == nil {
		seed = s
	}
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 2))
	pick := func() string {
		ents, _ := os.ReadDir(dir)
		var ds []string
		for _, e := range ents {
			if e.IsDir() {
				ds = append(ds, e.Name())
			}
		}
		if len(ds) == 0 {
			return "d0.example"
		}
		return ds[rng.IntN(len(ds))]
	}
	keyIn := func(d string) string {
		m, _ := filepath.Glob(filepath.Join(dir, d, "*.pem"))
		if len(m) == 0 {
			return ""
		}
		return m[rng.IntN(len(m))]
	}
	ops := []struct {
		name string
		do   func() error
	}{
		{"add key", func() error {
			installKey(t, dir, pick(), fmt.Sprintf("s%d", rng.IntN(5)), srcs[rng.IntN(len(srcs))], 0o600)
			return nil
		}},
		{"rewrite key in place", func() error {
			if k := keyIn(pick()); k != "" {
				data, _ := os.ReadFile(filepath.Join("..", "testdata", "keys", srcs[rng.IntN(len(srcs))]))
				return os.WriteFile(k, data, 0o600)
			}
			return nil
		}},
		{"remove key", func() error {
			if k := keyIn(pick()); k != "" {
				return os.Remove(k)
			}
			return nil
		}},
		{"rename key", func() error {
			if k := keyIn(pick()); k != "" {
				return os.Rename(k, filepath.Join(filepath.Dir(k), fmt.Sprintf("r%d.pem", rng.IntN(3))))
			}
			return nil
		}},
		{"touch key", func() error {
			if k := keyIn(pick()); k != "" {
				tm := time.Now().Add(time.Duration(rng.IntN(1000)) * time.Second)
				return os.Chtimes(k, tm, tm)
			}
			return nil
		}},
		{"new folder with capitals", func() error {
			installKey(t, dir, fmt.Sprintf("New%d.Example", rng.IntN(4)), "s1", srcs[rng.IntN(len(srcs))], 0o600)
			return nil
		}},
		{"remove folder", func() error { return os.RemoveAll(filepath.Join(dir, pick())) }},
		{"rename folder", func() error {
			from, to := filepath.Join(dir, pick()), filepath.Join(dir, fmt.Sprintf("moved%d.example", rng.IntN(4)))
			if from == to {
				return nil
			}
			os.RemoveAll(to)
			return os.Rename(from, to)
		}},
		{"state file", func() error {
			d := pick()
			if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
				return err
			}
			st := &DomainState{Keys: map[string]*KeyState{"s1": {Created: time.Unix(int64(rng.IntN(1e9)), 0).UTC(), Testing: rng.IntN(2) == 0}}}
			return st.Save(filepath.Join(dir, d))
		}},
		{"group-writable folder", func() error { return os.Chmod(filepath.Join(dir, pick()), 0o770) }},
		{"folder mode fixed", func() error {
			ents, _ := os.ReadDir(dir)
			for _, e := range ents {
				if e.IsDir() {
					os.Chmod(filepath.Join(dir, e.Name()), 0o700)
				}
			}
			return nil
		}},
		{"stray file", func() error {
			d := pick()
			if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(dir, d, "README.txt"), []byte("x"), 0o600)
		}},
		{"hidden file at the top", func() error {
			return os.WriteFile(filepath.Join(dir, ".authmilter-publication.json"), []byte(fmt.Sprint(rng.Int())), 0o600)
		}},
		{"file at the top", func() error { return os.WriteFile(filepath.Join(dir, "notes"), []byte("x"), 0o600) }},
	}
	patchedBefore, _ := w.Loads()
	for step := range 300 {
		op := ops[rng.IntN(len(ops))]
		if err := op.do(); err != nil && !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("step %d %s: %v", step, op.name, err)
		}
		want, wantErr := LoadDir(dir)
		got, gotErr := Load(dir, LoadOptions{Prev: cur, Watch: w, Verify: rng.IntN(10) == 0})
		if (wantErr == nil) != (gotErr == nil) {
			t.Fatalf("step %d %s: error %v, from scratch %v", step, op.name, gotErr, wantErr)
		}
		if wantErr != nil {
			continue
		}
		if g, w := tableSummary(got), tableSummary(want); g != w {
			t.Fatalf("step %d %s: through the watcher\n%s\nfrom scratch\n%s", step, op.name, g, w)
		}
		if ds, ok := got.ChangedSince(cur); ok {
			// Domains not listed are the previous table's, key for key.
			for _, d := range append(got.Domains(), cur.Domains()...) {
				if !slices.Contains(ds, d) && (!slices.Equal(got.Keys(d), cur.Keys(d)) || !slices.Equal(got.Retired(d), cur.Retired(d))) {
					t.Fatalf("step %d %s: %s changed but is not in ChangedSince %q", step, op.name, d, ds)
				}
			}
		}
		if rng.IntN(4) != 0 { // sometimes the daemon does not adopt it
			cur = got
		}
	}
	if b := w.Broken(); b != "" {
		t.Fatalf("watcher gave up: %s", b)
	}
	patched, full := w.Loads()
	if patched-patchedBefore < 100 {
		t.Errorf("only %d of 300 loads used the watcher (%d stat passes)", patched-patchedBefore, full)
	}
}

// TestWatcherGivesUp: after an event queue overflow, or when keys.dir is
// another folder than the one watched, Load makes the stat pass (and still
// sees every change).
func TestWatcherGivesUp(t *testing.T) {
	tests := []struct {
		name   string
		break_ func(t *testing.T, w *Watcher, dir string) string
	}{
		{"queue overflow", func(t *testing.T, w *Watcher, dir string) string {
			w.mu.Lock()
			w.event(-1, unix.IN_Q_OVERFLOW, "", func() uint64 { return 0 })
			w.mu.Unlock()
			return dir
		}},
		{"folder replaced", func(t *testing.T, w *Watcher, dir string) string {
			moved := dir + ".old"
			if err := os.Rename(dir, moved); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(moved) })
			installKey(t, dir, "a.example", "s1", "rsa2048-pkcs1.pem", 0o600)
			return dir
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "keys")
			installKey(t, dir, "a.example", "s1", "rsa2048-pkcs1.pem", 0o600)
			cur, w := watchedTable(t, dir)
			tt.break_(t, w, dir)
			installKey(t, dir, "a.example", "s2", "ed25519-pkcs8.pem", 0o600)
			got, err := Load(dir, LoadOptions{Prev: cur, Watch: w})
			if err != nil {
				t.Fatal(err)
			}
			if len(got.Keys("a.example")) != 2 {
				t.Errorf("keys after the change: %d, want 2", len(got.Keys("a.example")))
			}
			if w.Broken() == "" {
				t.Error("watcher did not give up")
			}
			if patched, _ := w.Loads(); patched != 0 {
				t.Errorf("%d loads used a broken watcher", patched)
			}
		})
	}
}
