package keys

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestNextSelector(t *testing.T) {
	nov := time.Date(2026, 11, 24, 19, 0, 0, 0, time.UTC)
	tests := []struct {
		name    string
		algo    string
		suffix  string
		taken   []string
		newest  string
		want    string
		wantErr bool
	}{
		{name: "first rsa", algo: "rsa-2048", want: "2026-11"},
		{name: "first ed25519", algo: "ed25519", want: "2026-11e"},
		{name: "suffix", algo: "rsa-2048", suffix: ".myesp", want: "2026-11.myesp"},
		{name: "last month's key", algo: "rsa-2048", taken: []string{"2026-10"}, newest: "2026-10", want: "2026-11"},
		{name: "second key of the month", algo: "rsa-4096", taken: []string{"2026-11"}, newest: "2026-11", want: "2026-11b"},
		{name: "third", algo: "rsa-2048", taken: []string{"2026-11", "2026-11b"}, newest: "2026-11b", want: "2026-11c"},
		{name: "retired selector is not reused", algo: "rsa-2048", taken: []string{"2026-11"}, newest: "", want: "2026-11b"},
		{name: "ed25519 second", algo: "ed25519", taken: []string{"2026-11", "2026-11e"}, newest: "2026-11e", want: "2026-11eb"},
		{name: "rsa skips the ed25519 name", algo: "rsa-2048", taken: []string{"2026-11", "2026-11b", "2026-11c", "2026-11d", "2026-11e"}, newest: "2026-11d", want: "2026-11f"},
		{name: "after z", algo: "rsa-2048", taken: []string{"2026-11", "2026-11b", "2026-11c", "2026-11d", "2026-11e", "2026-11f", "2026-11g", "2026-11h", "2026-11i", "2026-11j", "2026-11k", "2026-11l", "2026-11m", "2026-11n", "2026-11o", "2026-11p", "2026-11q", "2026-11r", "2026-11s", "2026-11t", "2026-11u", "2026-11v", "2026-11w", "2026-11x", "2026-11y", "2026-11z"}, newest: "2026-11z", want: "2026-11zb"},
		{name: "suffix second", algo: "rsa-2048", suffix: ".myesp", taken: []string{"2026-11.myesp"}, newest: "2026-11.myesp", want: "2026-11b.myesp"},
		{name: "suffix added later", algo: "rsa-2048", suffix: ".myesp", taken: []string{"2026-11b"}, newest: "2026-11b", want: "2026-11.myesp"},
		// Keys are ordered by creation, not by name: a newest key with a
		// name that sorts later does not stand in the way.
		{name: "newest from the future", algo: "rsa-2048", taken: []string{"2026-12"}, newest: "2026-12", want: "2026-11"},
		{name: "non-date newest", algo: "rsa-2048", taken: []string{"mail"}, newest: "mail", want: "2026-11"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := NextSelector(nov, tt.algo, tt.suffix, tt.taken, tt.newest)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("NextSelector = %q, want an error", got)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("NextSelector = %q, %v; want %q", got, err, tt.want)
			}
			if !ValidSelector(got) {
				t.Errorf("%q is not a valid selector", got)
			}
		})
	}
	// A long run of keys in one month never repeats a selector.
	var taken []string
	seen := map[string]bool{}
	for i := range 60 {
		s, err := NextSelector(nov, "rsa-2048", "", taken, "")
		if err != nil {
			t.Fatal(err)
		}
		if seen[s] || !ValidSelector(s) {
			t.Fatalf("key %d: %q repeats or is invalid", i, s)
		}
		seen[s] = true
		taken = append(taken, s)
	}
}

// fakeKey is a key for planning tests: no key material is needed.
func fakeKey(sel string, algo Algorithm, bits int, made time.Time) *Key {
	return &Key{Domain: "example.com", Selector: sel, Algorithm: algo, Bits: bits, ModTime: made, Created: made,
		Path: "/keys/example.com/" + sel + ".pem"}
}

func TestPlanRotation(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	day := 24 * time.Hour
	pol := RotatePolicy{Now: now, RotateAfter: 30 * day, Grace: 7 * day, Recheck: 10 * time.Minute}
	type keySpec struct {
		sel    string
		algo   Algorithm
		bits   int
		age    time.Duration
		state  State
		active bool
	}
	rsa := func(sel string, age time.Duration, st State, active bool) keySpec {
		return keySpec{sel, RSASHA256, 2048, age, st, active}
	}
	ed := func(sel string, age time.Duration, st State, active bool) keySpec {
		return keySpec{sel, Ed25519SHA256, 256, age, st, active}
	}
	tests := []struct {
		name       string
		keys       []keySpec
		retired    []string
		state      map[string]*KeyState
		force      bool
		withdraw   bool
		scheme     SelectorScheme
		want       []string // "kind selector [genalgo]"
		wantErr    string
		superseded map[string]time.Time // expected state.Superseded afterwards
	}{
		{name: "young active key", keys: []keySpec{rsa("2026-11", 10*day, Published, true)}},
		{name: "old active key", keys: []keySpec{rsa("2026-11", 31*day, Published, true)},
			want: []string{"create 2026-12 rsa-2048"}},
		{name: "forced", keys: []keySpec{rsa("2026-11", day, Published, true)}, force: true,
			want: []string{"create 2026-12 rsa-2048"}},
		{name: "second key in a month", keys: []keySpec{rsa("2026-12", 31*day, Published, true)},
			want: []string{"create 2026-12b rsa-2048"}},
		{name: "rsa and ed25519", keys: []keySpec{rsa("2026-10", 40*day, Published, true), ed("2026-10e", 40*day, Published, true)},
			want: []string{"create 2026-12 rsa-2048", "create 2026-12e ed25519"}},
		{name: "selector sorting after every date", keys: []keySpec{{"a-2026", RSASHA256, 4096, 40 * day, Published, true}},
			want: []string{"create 2026-12 rsa-4096"}},
		{name: "rsa-1024 becomes rsa-2048", keys: []keySpec{{"2026-10", RSASHA256, 1024, 40 * day, Published, true}},
			want: []string{"create 2026-12 rsa-2048"}},
		{name: "rsa-4096 stays rsa-4096", keys: []keySpec{{"2026-10", RSASHA256, 4096, 40 * day, Published, true}},
			want: []string{"create 2026-12 rsa-4096"}},
		{name: "newest pending: no second new key", keys: []keySpec{rsa("2026-10", 60*day, Published, true), rsa("2026-11", 31*day, Missing, false)},
			force: true, want: []string{"pending 2026-11"}},
		{name: "newest mismatched", keys: []keySpec{rsa("2026-10", 60*day, Published, true), rsa("2026-11", 31*day, Mismatch, false)},
			want: []string{"pending 2026-11"}},
		{name: "superseded: grace starts", keys: []keySpec{rsa("2026-10", 60*day, Published, false), rsa("2026-11", 20*day, Published, true)},
			want: []string{"wait 2026-10"}, superseded: map[string]time.Time{"2026-10": now}},
		{name: "within grace", keys: []keySpec{rsa("2026-10", 60*day, Published, false), rsa("2026-11", 20*day, Published, true)},
			state: map[string]*KeyState{"2026-10": {Superseded: now.Add(-7 * day)}},
			want:  []string{"wait 2026-10"}, superseded: map[string]time.Time{"2026-10": now.Add(-7 * day)}},
		{name: "grace and recheck passed", keys: []keySpec{rsa("2026-10", 60*day, Published, false), rsa("2026-11", 20*day, Published, true)},
			state: map[string]*KeyState{"2026-10": {Superseded: now.Add(-7*day - 10*time.Minute)}},
			want:  []string{"retire 2026-10"}},
		{name: "unpublished older key is retired too", keys: []keySpec{rsa("2026-09", 90*day, Missing, false), rsa("2026-11", 20*day, Published, true)},
			state: map[string]*KeyState{"2026-09": {Superseded: now.Add(-30 * day)}},
			want:  []string{"retire 2026-09"}},
		{name: "old key active again", keys: []keySpec{rsa("2026-10", 60*day, Published, true), rsa("2026-11", 20*day, Revoked, false)},
			state: map[string]*KeyState{"2026-10": {Superseded: now.Add(-3 * day)}},
			want:  []string{"pending 2026-11"}, superseded: map[string]time.Time{"2026-10": {}}},
		{name: "other algorithm does not supersede", keys: []keySpec{rsa("2026-10", 10*day, Published, true), ed("2026-11e", 10*day, Published, true)}},
		{name: "withdraw retry", keys: []keySpec{rsa("2026-11", 10*day, Published, true)}, retired: []string{"2026-09", "2026-10"},
			state:    map[string]*KeyState{"2026-10": {Algorithm: RSASHA256, Retired: now.Add(-day)}, "2026-09": {Retired: now.Add(-40 * day), Withdrawn: now.Add(-40 * day)}},
			withdraw: true, want: []string{"withdraw 2026-10"}},
		{name: "no withdraw without publication", keys: []keySpec{rsa("2026-11", 10*day, Published, true)}, retired: []string{"2026-10"},
			state: map[string]*KeyState{"2026-10": {Algorithm: RSASHA256, Retired: now.Add(-day)}}},
		{name: "temperror changes nothing", keys: []keySpec{rsa("2026-10", 60*day, Published, false), rsa("2026-11", 40*day, TempError, true)},
			wantErr: "DNS lookup failed"},
		{name: "non-date selector", keys: []keySpec{rsa("mail", 400*day, Published, true)}, want: []string{"create 2026-12 rsa-2048"}},
		{name: "alternating: the retired selector is used again in the same run",
			keys:   []keySpec{rsa("s1", 62*day, Published, false), rsa("s2", 31*day, Published, true)},
			state:  map[string]*KeyState{"s1": {Superseded: now.Add(-24 * day)}},
			scheme: SelectorScheme{Alternate: []string{"s1", "s2"}},
			want:   []string{"retire s1", "create s1 rsa-2048"}},
		{name: "alternating: the other selector still in its grace period",
			keys:   []keySpec{rsa("s1", 35*day, Published, false), rsa("s2", 31*day, Published, true)},
			state:  map[string]*KeyState{"s1": {Superseded: now.Add(-2 * day)}},
			scheme: SelectorScheme{Alternate: []string{"s1", "s2"}},
			want:   []string{"wait s1", "hold s2"}},
		{name: "template: apr2009 follows mar2009",
			keys:   []keySpec{rsa("mar2009.myesp", 31*day, Published, true)},
			scheme: SelectorScheme{Format: "%b%Y.myesp"},
			want:   []string{"create dec2026.myesp rsa-2048"}},
		{name: "newest by creation, not by name", keys: []keySpec{rsa("2026-11", 40*day, Published, false), rsa("mail", 10*day, Published, true)},
			want: []string{"wait 2026-11"}, superseded: map[string]time.Time{"2026-11": now}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := DomainView{Domain: "example.com", Retired: tt.retired, State: &DomainState{Keys: map[string]*KeyState{}}}
			pubs := map[*Key]Publication{}
			for _, s := range tt.keys {
				k := fakeKey(s.sel, s.algo, s.bits, now.Add(-s.age))
				v.Keys = append(v.Keys, k)
				pubs[k] = Publication{State: s.state}
				if s.active {
					v.Active = append(v.Active, k)
				}
			}
			for sel, ks := range tt.state {
				c := *ks
				v.State.Keys[sel] = &c
			}
			v.Publication = func(k *Key) Publication { return pubs[k] }
			p := pol
			p.Force, p.CanWithdraw, p.Scheme = tt.force, tt.withdraw, tt.scheme
			plan, err := PlanRotation(v, p)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want %q", err, tt.wantErr)
				}
				if !strings.Contains(err.Error(), "example.com/") {
					t.Errorf("error %q does not name the key", err)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, a := range plan {
				s := string(a.Kind) + " " + a.Selector
				if a.Kind == ActCreate {
					s += " " + a.GenAlgo
				}
				got = append(got, s)
			}
			if strings.Join(got, "; ") != strings.Join(tt.want, "; ") {
				t.Errorf("plan = %q, want %q", got, tt.want)
			}
			for sel, want := range tt.superseded {
				if got := v.State.Keys[sel].Superseded; !got.Equal(want) {
					t.Errorf("state of %s: superseded %v, want %v", sel, got, want)
				}
			}
			for _, a := range plan {
				if a.Kind == ActWait && !a.RetireAt.Equal(v.State.Keys[a.Selector].Superseded.Add(p.Grace+p.Recheck)) {
					t.Errorf("wait %s: retire at %v", a.Selector, a.RetireAt)
				}
			}
		})
	}
}

func TestStateRoundTripAndRetire(t *testing.T) {
	dir := t.TempDir()
	k, err := Generate(dir, "example.com", "2026-10", "ed25519")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Generate(dir, "example.com", "2026-11", "ed25519"); err != nil {
		t.Fatal(err)
	}
	ddir := filepath.Join(dir, "example.com")
	s, err := LoadState(ddir)
	if err != nil || len(s.Keys) != 0 {
		t.Fatalf("missing state: %v %v", s, err)
	}
	when := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	s.Key("2026-10").Superseded = when
	s.Key("2026-10").Algorithm = Ed25519SHA256
	if err := s.Save(ddir); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(ddir, StateFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file: %v %v", fi, err)
	}
	s2, err := LoadState(ddir)
	if err != nil || !s2.Keys["2026-10"].Superseded.Equal(when) || s2.Keys["2026-10"].Algorithm != Ed25519SHA256 {
		t.Fatalf("round trip: %+v %v", s2.Keys["2026-10"], err)
	}
	s2.Apply(k)
	if got := k.Created; !got.Equal(k.ModTime) {
		t.Errorf("Created without a record = %v, want the mtime %v", got, k.ModTime)
	}
	s2.Key("2026-10").FirstSeen = when.Add(time.Hour)
	s2.Apply(k)
	if got := k.Created; !got.Equal(when.Add(time.Hour)) {
		t.Errorf("Created with only first_seen = %v, want %v", got, when.Add(time.Hour))
	}
	s2.Key("2026-10").Created = when
	s2.Apply(k)
	if got := k.Created; !got.Equal(when) {
		t.Errorf("Created = %v, want %v", got, when)
	}

	dst, err := Retire(k)
	if err != nil {
		t.Fatal(err)
	}
	if dst != filepath.Join(ddir, RetiredDir, "2026-10.pem") {
		t.Errorf("retired to %s", dst)
	}
	if fi, err := os.Stat(filepath.Join(ddir, RetiredDir)); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("retired folder: %v %v", fi, err)
	}
	// The table no longer sees it, nor the state file, nor temporary files.
	os.WriteFile(filepath.Join(ddir, ".2026-12.pem.tmp-abc"), []byte("partial"), 0o600)
	tab, err := LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if ks := tab.Keys("example.com"); len(ks) != 1 || ks[0].Selector != "2026-11" {
		t.Errorf("keys after retire: %v", ks)
	}
	if sels, err := RetiredSelectors(ddir); err != nil || strings.Join(sels, ",") != "2026-10" {
		t.Errorf("RetiredSelectors = %v, %v", sels, err)
	}
	if _, err := Retire(k); err == nil {
		t.Error("retiring twice succeeded")
	}
	// Generate leaves no temporary file behind and refuses a retired name's file.
	entries, _ := os.ReadDir(ddir)
	for _, e := range entries {
		if strings.Contains(e.Name(), ".tmp-") && e.Name() != ".2026-12.pem.tmp-abc" {
			t.Errorf("temporary file left: %s", e.Name())
		}
	}
	os.WriteFile(filepath.Join(ddir, StateFile), []byte("{garbage"), 0o600)
	if _, err := LoadState(ddir); err == nil || !strings.Contains(err.Error(), StateFile) {
		t.Errorf("garbage state: %v", err)
	}
}

func TestLastGood(t *testing.T) {
	notFound := &net.DNSError{Err: "no such host", IsNotFound: true}
	temp := &net.DNSError{Err: "timeout", IsTemporary: true, IsTimeout: true}
	type answer struct {
		txt []string
		err error
	}
	steps := []struct {
		dns     answer
		want    []string
		wantErr error
	}{
		{answer{nil, temp}, nil, temp}, // never answered: the error
		{answer{[]string{"v=DKIM1; p=A"}, nil}, []string{"v=DKIM1; p=A"}, nil},
		{answer{nil, temp}, []string{"v=DKIM1; p=A"}, nil}, // outage: last good answer
		{answer{[]string{"v=DKIM1; p=B"}, nil}, []string{"v=DKIM1; p=B"}, nil},
		{answer{nil, fmt.Errorf("wrapped: %w", temp)}, []string{"v=DKIM1; p=B"}, nil},
		{answer{nil, notFound}, nil, notFound}, // removed: definitive
		{answer{nil, temp}, nil, temp},         // and forgotten
	}
	var stale []string
	lg := LastGood{Stale: func(name string, err error) { stale = append(stale, name) }}
	i := 0
	lookup := lg.Wrap(func(context.Context, string) ([]string, error) { return steps[i].dns.txt, steps[i].dns.err })
	for ; i < len(steps); i++ {
		got, err := lookup(context.Background(), "s._domainkey.example.com")
		if strings.Join(got, "|") != strings.Join(steps[i].want, "|") || !errors.Is(err, steps[i].wantErr) {
			t.Errorf("step %d: got %q, %v; want %q, %v", i, got, err, steps[i].want, steps[i].wantErr)
		}
	}
	if len(stale) != 2 {
		t.Errorf("Stale called %d times, want 2", len(stale))
	}
}
