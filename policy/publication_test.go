package policy

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/authmilter/authmilter/keys"
)

// checkerDNS is a fakeDNS with a PublicationChecker that answers from a
// table by selector, as the daemon's checker would.
type checkerDNS struct {
	fakeDNS
	checks map[string]PublicationCheck
	calls  int
}

func (c *checkerDNS) CheckPublication(_ context.Context, ks []*keys.Key) map[*keys.Key]PublicationCheck {
	c.calls++
	out := map[*keys.Key]PublicationCheck{}
	for _, k := range ks {
		if pc, ok := c.checks[k.Selector]; ok {
			out[k] = pc
		}
	}
	return out
}

// TestPublicationChecker: with a PublicationChecker, a published key
// waits for the longest of its DNS hold and keys.activate_after after it
// was first seen published everywhere; every other state is not usable.
func TestPublicationChecker(t *testing.T) {
	dir := t.TempDir()
	copyKey(t, dir, "example.com", "2026-10", "rsa2048-pkcs1.pem")
	copyKey(t, dir, "example.com", "2026-11", "rsa2048-pkcs8.pem")
	now := time.Now()
	pub := func(since time.Duration, hold time.Duration) PublicationCheck {
		return PublicationCheck{Publication: keys.Publication{State: keys.Published}, Since: now.Add(-since), Hold: hold}
	}
	other := func(s keys.State) PublicationCheck {
		return PublicationCheck{Publication: keys.Publication{State: s, Detail: "because"}}
	}
	tests := []struct {
		name          string
		activateAfter string
		checks        map[string]PublicationCheck
		want          map[string]keys.State
		active        string
	}{
		{name: "both published long ago: the newer signs",
			checks: map[string]PublicationCheck{"2026-10": pub(48*time.Hour, time.Hour), "2026-11": pub(24*time.Hour, time.Hour)},
			want:   map[string]keys.State{"2026-10": keys.Published, "2026-11": keys.Published}, active: "2026-11"},
		{name: "the newer one waits out the negative TTL",
			checks: map[string]PublicationCheck{"2026-10": pub(48*time.Hour, time.Hour), "2026-11": pub(time.Minute, 5*time.Minute)},
			want:   map[string]keys.State{"2026-10": keys.Published, "2026-11": keys.Waiting}, active: "2026-10"},
		{name: "activate_after is longer than the DNS hold", activateAfter: "2h",
			checks: map[string]PublicationCheck{"2026-10": pub(48*time.Hour, time.Hour), "2026-11": pub(time.Hour, 5*time.Minute)},
			want:   map[string]keys.State{"2026-10": keys.Published, "2026-11": keys.Waiting}, active: "2026-10"},
		{name: "the DNS hold is longer than activate_after", activateAfter: "1m",
			checks: map[string]PublicationCheck{"2026-10": pub(48*time.Hour, time.Hour), "2026-11": pub(10*time.Minute, time.Hour)},
			want:   map[string]keys.State{"2026-10": keys.Published, "2026-11": keys.Waiting}, active: "2026-10"},
		{name: "partial, delegation missing: not usable",
			checks: map[string]PublicationCheck{"2026-10": other(keys.Partial), "2026-11": other(keys.DelegationMissing)},
			want:   map[string]keys.State{"2026-10": keys.Partial, "2026-11": keys.DelegationMissing}},
		{name: "foreign, temperror: not usable",
			checks: map[string]PublicationCheck{"2026-10": other(keys.Foreign), "2026-11": other(keys.TempError)},
			want:   map[string]keys.State{"2026-10": keys.Foreign, "2026-11": keys.TempError}},
		{name: "a key the checker did not answer for is not usable",
			checks: map[string]PublicationCheck{"2026-10": pub(48*time.Hour, 0)},
			want:   map[string]keys.State{"2026-10": keys.Published, "2026-11": keys.TempError}, active: "2026-10"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conf := "[keys]\ndir = \"" + dir + "\"\n"
			if tt.activateAfter != "" {
				conf += "activate_after = \"" + tt.activateAfter + "\"\n"
			}
			cfg, err := ParseConfig("t.toml", []byte(conf))
			if err != nil {
				t.Fatal(err)
			}
			r := &checkerDNS{checks: tt.checks}
			pol, err := Compile(context.Background(), cfg, r)
			if err != nil {
				t.Fatal(err)
			}
			if r.calls != 1 {
				t.Errorf("checker called %d times", r.calls)
			}
			for _, k := range pol.Table().All() {
				got := pol.Publication(k)
				if got.State != tt.want[k.Selector] {
					t.Errorf("%s: %s (%s), want %s", k.Selector, got.State, got.Detail, tt.want[k.Selector])
				}
				if got.State == keys.Waiting && !strings.Contains(got.Detail, "active from") {
					t.Errorf("%s: waiting detail %q", k.Selector, got.Detail)
				}
			}
			var act []string
			for _, k := range pol.ActiveKeys("example.com") {
				act = append(act, k.Selector)
			}
			if strings.Join(act, ",") != tt.active {
				t.Errorf("active %v, want %q", act, tt.active)
			}
		})
	}
}

func TestActivationTime(t *testing.T) {
	t0 := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		activateAfter, hold, want time.Duration
	}{{0, 0, 0}, {0, 5 * time.Minute, 5 * time.Minute}, {time.Hour, 5 * time.Minute, time.Hour}, {time.Minute, time.Hour, time.Hour}} {
		cfg := DefaultConfig()
		cfg.Keys.ActivateAfter.Duration = tt.activateAfter
		if got := ActivationTime(cfg, t0, tt.hold); !got.Equal(t0.Add(tt.want)) {
			t.Errorf("activate_after %v, hold %v: %v, want %v", tt.activateAfter, tt.hold, got, t0.Add(tt.want))
		}
	}
}
