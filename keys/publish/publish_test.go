package publish

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/authmilter/authmilter/keys"
	"github.com/authmilter/authmilter/keys/publish/publishtest"
)

func newKey(t *testing.T, dir, domain, selector, algo string) *keys.Key {
	t.Helper()
	k, err := keys.Generate(dir, domain, selector, algo)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestPublishAgainstKnot(t *testing.T) {
	knot := publishtest.StartKnot(t, "example.com", "example.net")
	dir := t.TempDir()
	rsa2048 := newKey(t, dir, "example.com", "2026-11", "rsa-2048")
	rsa4096 := newKey(t, dir, "example.com", "2026-11b", "rsa-4096") // three 255-byte strings
	ed := newKey(t, dir, "example.com", "2026-11e", "ed25519")
	other := newKey(t, dir, "sub.example.net", "s1", "ed25519")
	ctx := context.Background()

	for _, zone := range []string{"", "example.com"} {
		t.Run("zone="+zone, func(t *testing.T) {
			u, err := New(Config{Server: knot.Addr, Zone: zone, TSIGName: publishtest.TSIGName,
				TSIGSecret: knot.TSIGSecret, TTL: 300})
			if err != nil {
				t.Fatal(err)
			}
			set := NewSet(nil, u)
			for _, k := range []*keys.Key{rsa2048, rsa4096, ed} {
				// Twice: the second finds the record there and sends nothing.
				for i := range 2 {
					up, err := set.Publish(ctx, k, Ownership{})
					if err != nil {
						t.Fatal(err)
					}
					if up.Zone != "example.com." || up.Target != u || up.Name != keys.RecordName(k.Domain, k.Selector)+"." {
						t.Errorf("updated %s in zone %q at %s", up.Name, up.Zone, up.Target.Server())
					}
					if wantNoop := i == 1 || (zone != "" && k != rsa2048); up.Noop != wantNoop { // the first run removed rsa2048
						t.Errorf("publication %d: Noop = %v, want %v", i+1, up.Noop, wantNoop)
					}
				}
				if got := keys.CheckPublished(ctx, knot.LookupTXT, k); got.State != keys.Published {
					t.Fatalf("%s after Publish: %s %s", k.ID(), got.State, got.Detail)
				}
				if got := keys.CheckPublished(ctx, u.Lookup, k); got.State != keys.Published {
					t.Fatalf("%s via Updater.Lookup: %s %s", k.ID(), got.State, got.Detail)
				}
			}
			if _, err := set.Withdraw(ctx, "example.com", rsa2048.Selector, rsa2048.Algorithm, true, Ownership{Key: rsa2048}); err != nil {
				t.Fatal(err)
			}
			if got := keys.CheckPublished(ctx, knot.LookupTXT, rsa2048); got.State != keys.Revoked {
				t.Errorf("after Revoke: %s %s", got.State, got.Detail)
			}
			revoked := Ownership{Known: []string{keys.RevokedRecord(rsa2048.Algorithm)}}
			for i := range 2 { // removing what is gone succeeds, and sends nothing
				up, err := set.Withdraw(ctx, "example.com", rsa2048.Selector, rsa2048.Algorithm, false, revoked)
				if err != nil {
					t.Fatal(err)
				}
				if up.Noop != (i == 1) {
					t.Errorf("removal %d: Noop = %v", i+1, up.Noop)
				}
			}
			if got := keys.CheckPublished(ctx, knot.LookupTXT, rsa2048); got.State != keys.Missing {
				t.Errorf("after Remove: %s %s", got.State, got.Detail)
			}
			if got := keys.CheckPublished(ctx, u.Lookup, rsa2048); got.State != keys.Missing {
				t.Errorf("after Remove via Updater.Lookup: %s %s", got.State, got.Detail)
			}
			// The others are untouched.
			if got := keys.CheckPublished(ctx, knot.LookupTXT, ed); got.State != keys.Published {
				t.Errorf("ed25519 key after removing the RSA one: %s", got.State)
			}
		})
	}

	t.Run("zone found per record", func(t *testing.T) {
		u, _ := New(Config{Server: knot.Addr, TSIGName: publishtest.TSIGName, TSIGSecret: knot.TSIGSecret, TTL: 60})
		up, err := NewSet(nil, u).Publish(ctx, other, Ownership{})
		if err != nil || up.Zone != "example.net." {
			t.Fatalf("Publish = %+v, %v", up, err)
		}
		if got := keys.CheckPublished(ctx, knot.LookupTXT, other); got.State != keys.Published {
			t.Errorf("%s", got.State)
		}
	})

	fresh := newKey(t, dir, "example.com", "fresh", "ed25519")
	failures := []struct {
		name    string
		cfg     Config
		key     *keys.Key
		wantErr string
	}{
		{"wrong secret", Config{TSIGName: publishtest.TSIGName, TSIGSecret: "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"}, fresh, "TSIG"},
		{"unknown key name", Config{TSIGName: "nobody.", TSIGSecret: knot.TSIGSecret}, fresh, "TSIG"},
		{"unsigned", Config{}, fresh, "NOTAUTH"},
		{"record outside the zone", Config{Zone: "example.org", TSIGName: publishtest.TSIGName, TSIGSecret: knot.TSIGSecret}, fresh, "not in its zone example.org"},
		{"zone not served", Config{TSIGName: publishtest.TSIGName, TSIGSecret: knot.TSIGSecret}, newKey(t, dir, "example.org", "x", "ed25519"), "REFUSED"},
	}
	for _, tt := range failures {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.Server = knot.Addr
			tt.cfg.Timeout = 3 * time.Second
			u, err := New(tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			name := keys.RecordName(tt.key.Domain, tt.key.Selector)
			served := tt.key.Domain == "example.com"
			var before []string
			if served {
				before = knot.TXT(t, name)
			}
			_, err = NewSet(nil, u).Publish(ctx, tt.key, Ownership{})
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Publish error = %v, want %q", err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.key.ID()) {
				t.Errorf("error %q does not name the key", err)
			}
			if !served {
				return
			}
			if after := knot.TXT(t, name); strings.Join(after, "|") != strings.Join(before, "|") {
				t.Errorf("refused update changed the zone: %q -> %q", before, after)
			}
		})
	}
}

func TestNew(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"ok", Config{Server: "127.0.0.1:53", TSIGName: "k", TSIGSecret: "c2VjcmV0"}, ""},
		{"no port", Config{Server: "127.0.0.1"}, "ip:port"},
		{"bad algorithm", Config{Server: "127.0.0.1:53", TSIGName: "k", TSIGAlgorithm: "hmac-md5", TSIGSecret: "c2VjcmV0"}, "TSIG algorithm"},
		{"bad secret", Config{Server: "127.0.0.1:53", TSIGName: "k", TSIGSecret: "!!"}, "not base64"},
		{"empty secret", Config{Server: "127.0.0.1:53", TSIGName: "k"}, "not base64"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cfg)
			if (err == nil) != (tt.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("New error = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func TestReadSecretFile(t *testing.T) {
	const secret = "3mbcXuMybFddiXVZP5wdWW0jwFHg/6b7nrIgkg3QDmA="
	tests := []struct {
		name     string
		content  string
		mode     os.FileMode
		wantAlgo string
		wantErr  string
	}{
		{"bare", secret + "\n", 0o600, "", ""},
		{"bind tsig-keygen", "key \"authmilter\" {\n\talgorithm hmac-sha512;\n\tsecret \"" + secret + "\";\n};\n", 0o640, "hmac-sha512", ""},
		{"knot keymgr -t", "key:\n  - id: authmilter\n    algorithm: hmac-sha256\n    secret: " + secret + "\n", 0o600, "hmac-sha256", ""},
		{"garbage", "not a secret at all!\n", 0o600, "", "no base64 secret"},
		{"readable by others", secret, 0o644, "", "readable by others"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "secret")
			if err := os.WriteFile(p, []byte(tt.content), tt.mode); err != nil {
				t.Fatal(err)
			}
			os.Chmod(p, tt.mode)
			got, algo, err := ReadSecretFile(p)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != secret || algo != tt.wantAlgo {
				t.Errorf("ReadSecretFile = %q, %q, %v", got, algo, err)
			}
		})
	}
}

// TestNSUpdateScript feeds keygen's -format nsupdate output to knsupdate
// (Knot's nsupdate) and checks that the server then holds the record.
func TestNSUpdateScript(t *testing.T) {
	const knsupdate = "/usr/bin/knsupdate"
	if _, err := os.Stat(knsupdate); err != nil {
		t.Fatalf("%s not found (%v); install it with: apt-get install knot-dnsutils", knsupdate, err)
	}
	knot := publishtest.StartKnot(t, "example.com")
	dir := t.TempDir()
	for _, algo := range []string{"rsa-4096", "ed25519"} {
		k := newKey(t, dir, "example.com", "ns-"+algo, algo)
		// knsupdate needs the zone line (BIND's nsupdate would find the zone).
		for _, zone := range []string{"example.com", "example.com."} {
			script := keys.NSUpdateScript(k, 300, knot.Addr, zone)
			cmd := exec.Command(knsupdate, "-y", "hmac-sha256:"+publishtest.TSIGName+":"+knot.TSIGSecret)
			cmd.Stdin = strings.NewReader(script)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("knsupdate failed: %v\n%s\nscript:\n%s", err, out, script)
			}
			if got := keys.CheckPublished(context.Background(), knot.LookupTXT, k); got.State != keys.Published {
				t.Fatalf("%s after nsupdate script: %s %s\nscript:\n%s", k.ID(), got.State, got.Detail, script)
			}
		}
	}
}
