package main

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/authmilter/authmilter/keys"
	"github.com/authmilter/authmilter/policy"
)

func TestNextBackoff(t *testing.T) {
	var got []time.Duration
	b := time.Duration(0)
	for range 7 {
		b = nextBackoff(b, 30*time.Second)
		got = append(got, b)
	}
	want := []time.Duration{2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 30 * time.Second, 30 * time.Second, 30 * time.Second}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("backoff %v, want %v", got, want)
		}
	}
	if b := nextBackoff(0, time.Second); b != 2*time.Second {
		t.Errorf("keys.recheck 1s: first retry %v, want 2s", b)
	}
}

// TestLogSwitch: level and format change in place, for loggers derived
// before the change too.
func TestLogSwitch(t *testing.T) {
	var buf bytes.Buffer
	cfg := policy.DefaultConfig()
	sw := newLogSwitch(&buf, cfg)
	derived := sw.logger().With("conn", 7)
	derived.Debug("hidden")
	derived.Info("text line")
	cfg.Log.Level, cfg.Log.Format = "debug", "json"
	sw.set(cfg)
	derived.Debug("json line")
	cfg.Log.Level = "error"
	sw.set(cfg)
	derived.Warn("hidden too")
	out := buf.String()
	if strings.Contains(out, "hidden") || !strings.Contains(out, "level=INFO msg=\"text line\" conn=7") ||
		!strings.Contains(out, `"msg":"json line","conn":7`) {
		t.Errorf("log output:\n%s", out)
	}
}

// TestCheckSwitch: the snapshots a reload refuses to switch to.
func TestCheckSwitch(t *testing.T) {
	tmp := t.TempDir()
	compile := func(dir string) *policy.Policy {
		t.Helper()
		cfg, err := policy.ParseConfig("t.toml", []byte("[keys]\ndir = \""+dir+"\"\n"))
		if err != nil {
			t.Fatal(err)
		}
		pol, err := policy.Compile(context.Background(), cfg, nil) // no resolver: keys unchecked, active
		if err != nil {
			t.Fatal(err)
		}
		return pol
	}
	withKeys := filepath.Join(tmp, "keys")
	for _, dom := range []string{"a.example", "b.example"} {
		if _, err := keys.Generate(withKeys, dom, "s1", "ed25519"); err != nil {
			t.Fatal(err)
		}
	}
	oneDomain := filepath.Join(tmp, "one")
	if _, err := keys.Generate(oneDomain, "a.example", "s1", "ed25519"); err != nil {
		t.Fatal(err)
	}
	empty := t.TempDir()
	missing := filepath.Join(tmp, "missing")

	full := compile(withKeys)
	tests := []struct {
		name     string
		old, new *policy.Policy
		want     string // "" = allowed
	}{
		{"start without keys.dir", nil, compile(missing), ""},
		{"keys.dir still missing", compile(missing), compile(missing), ""},
		{"keys.dir gone", full, compile(missing), "does not exist"},
		{"keys.dir emptied", full, compile(empty), "no keys while 2 were active"},
		{"one domain left", full, compile(oneDomain), ""},
		{"keys.dir made", compile(missing), full, ""},
		{"empty before, empty now", compile(empty), compile(empty), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkSwitch(tt.old, tt.new)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil || !errors.Is(err, errRefused) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("checkSwitch = %v, want %q", err, tt.want)
			}
		})
	}
}
