package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/authmilter/authmilter/internal/testdns"
	"github.com/authmilter/authmilter/keys"
	"github.com/authmilter/authmilter/keys/publish/publishtest"
	"github.com/authmilter/authmilter/policy"
)

// keyEnv is a key folder, a config that uses it and a test DNS server.
type keyEnv struct {
	dir  string // keys.dir
	cfg  string // config file
	dns  *testdns.Server
	tmp  string
	conf string // the config text
}

func newKeyEnv(t *testing.T, extra string) *keyEnv {
	t.Helper()
	e := &keyEnv{tmp: t.TempDir(), dns: testdns.Start(t)}
	e.dir = filepath.Join(e.tmp, "keys")
	e.cfg = filepath.Join(e.tmp, "authmilter.toml")
	e.conf = fmt.Sprintf("listen = [\"inet:127.0.0.1:0\"]\n[dns]\nservers = [%q]\ntimeout = \"2s\"\n[keys]\ncheck = \"resolver\"\ndir = %q\n%s", e.dns.Addr(), e.dir, extra)
	if err := os.WriteFile(e.cfg, []byte(e.conf), 0o600); err != nil {
		t.Fatal(err)
	}
	return e
}

// run calls a command function with args and captures its output.
func run(f func([]string, *bytes.Buffer, *bytes.Buffer) error, args ...string) (stdout, stderr string, err error) {
	var o, e bytes.Buffer
	err = f(args, &o, &e)
	return o.String(), e.String(), err
}

func keygenF(args []string, o, e *bytes.Buffer) error { return keygen(args, o, e) }
func keysF(args []string, o, e *bytes.Buffer) error   { return listKeys(args, o, e) }
func rotateF(args []string, o, e *bytes.Buffer) error { return rotate(args, o, e) }

// publish puts k's record into the test DNS server.
func (e *keyEnv) publish(t *testing.T, domain, selector string) *keys.Key {
	t.Helper()
	k, err := keys.LoadKey(filepath.Join(e.dir, domain, selector+".pem"), domain, selector)
	if err != nil {
		t.Fatal(err)
	}
	e.dns.SetTXT(keys.RecordName(domain, selector), keys.FormatRecord(k))
	return k
}

func TestKeygen(t *testing.T) {
	e := newKeyEnv(t, "selector_suffix = \".esp\"\n[keys.publish]\nttl = 600\n")
	month := time.Now().UTC().Format("2006-01")
	tests := []struct {
		args    []string
		wantSel string
		wantOut string // regexp on stdout
		wantErr string
	}{
		{args: []string{"-d", "example.com"}, wantSel: month + ".esp",
			wantOut: `^` + regexp.QuoteMeta(month+`.esp._domainkey.example.com.`) + `\tIN\tTXT\t\( "v=DKIM1; k=rsa; p=[A-Za-z0-9+/=]{200,}" "[A-Za-z0-9+/=]+" \)\n$`},
		{args: []string{"-d", "example.com", "-format", "value"}, wantSel: month + "b.esp",
			wantOut: `^v=DKIM1; k=rsa; p=[A-Za-z0-9+/=]{300,}\n$`},
		{args: []string{"-d", "Example.COM.", "-a", "ed25519", "-format", "nsupdate"}, wantSel: month + "e.esp",
			wantOut: `^update delete ` + regexp.QuoteMeta(month+`e.esp._domainkey.example.com.`) + ` TXT\nupdate add ` +
				regexp.QuoteMeta(month+`e.esp._domainkey.example.com.`) + ` 600 IN TXT "v=DKIM1; k=ed25519; p=[A-Za-z0-9+/=]{44}"\nsend\n$`},
		{args: []string{"-d", "example.com", "-a", "ed25519", "-format", "json"}, wantSel: month + "eb.esp",
			wantOut: `"name": "` + regexp.QuoteMeta(month+`eb.esp._domainkey.example.com.`) + `"`},
		{args: []string{"-d", "example.com", "-s", "manual", "-a", "rsa-3072"}, wantSel: "manual", wantOut: `k=rsa`},
		{args: []string{"-d", "example.com", "-s", "manual"}, wantErr: "already exists"},
		{args: []string{"-d", "example.com", "-format", "yaml"}, wantErr: "-format"},
		{args: []string{"-d", "example.com", "-a", "rsa-512"}, wantErr: "-a"}, // rsa-1024 is allowed now (with a warning)
		{args: []string{"-d", "not_a domain"}, wantErr: "not a domain"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			before, _ := os.ReadDir(filepath.Join(e.dir, "example.com"))
			out, stderr, err := run(keygenF, append([]string{"-config", e.cfg}, tt.args...)...)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want %q", err, tt.wantErr)
				}
				if after, _ := os.ReadDir(filepath.Join(e.dir, "example.com")); len(after) != len(before) {
					t.Errorf("a failed keygen changed the key folder: %d -> %d entries", len(before), len(after))
				}
				return
			}
			if err != nil {
				t.Fatalf("%v\n%s", err, stderr)
			}
			if !regexp.MustCompile(tt.wantOut).MatchString(out) {
				t.Errorf("output %q does not match %q", out, tt.wantOut)
			}
			path := filepath.Join(e.dir, "example.com", tt.wantSel+".pem")
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatalf("key not written: %v (stderr %s)", err, stderr)
			}
			if fi.Mode().Perm() != 0o600 {
				t.Errorf("mode %04o", fi.Mode().Perm())
			}
			if !strings.Contains(stderr, "wrote "+path) {
				t.Errorf("stderr %q does not name the file", stderr)
			}
			if strings.Contains(out, "PRIVATE") || strings.Contains(stderr, "PRIVATE") {
				t.Error("key material printed")
			}
		})
	}
	// Any selector name is fine: the newest created key becomes active,
	// whatever its name sorts like.
	_, stderr, err := run(keygenF, "-config", e.cfg, "-d", "example.com", "-s", "2000-01")
	if err != nil || strings.Contains(stderr, "warning") {
		t.Errorf("old selector: %v, stderr %q", err, stderr)
	}
	// The JSON output is complete.
	out, _, err := run(keygenF, "-config", e.cfg, "-d", "example.net", "-a", "ed25519", "-format", "json")
	if err != nil {
		t.Fatal(err)
	}
	var rec recordJSON
	if err := json.Unmarshal([]byte(out), &rec); err != nil {
		t.Fatal(err)
	}
	if rec.Domain != "example.net" || rec.Type != "TXT" || rec.TTL != 600 || rec.Algorithm != "ed25519-sha256" ||
		strings.Join(rec.Strings, "") != rec.Value || !strings.HasPrefix(rec.Value, "v=DKIM1; k=ed25519; p=") {
		t.Errorf("json record %+v", rec)
	}
	// The state file records when keygen made the key.
	st, err := keys.LoadState(filepath.Join(e.dir, "example.com"))
	if err != nil || st.Keys[month+".esp"] == nil || st.Keys[month+".esp"].Created.IsZero() {
		t.Errorf("state after keygen: %+v %v", st, err)
	}
}

// opendkimTestkey runs opendkim-testkey for domain/selector with keyFile,
// resolving through dnsAddr (an unbound stub zone: opendkim resolves with
// libunbound, which takes a server with a port from its own config file).
func opendkimTestkey(t *testing.T, dnsAddr, domain, selector, keyFile string) (string, error) {
	t.Helper()
	const bin = "/usr/sbin/opendkim-testkey"
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("%s not found (%v); install it with: apt-get install opendkim-tools", bin, err)
	}
	dir := t.TempDir()
	ip, port, _ := strings.Cut(dnsAddr, ":")
	unbound := fmt.Sprintf("server:\n    do-not-query-localhost: no\nstub-zone:\n    name: %q\n    stub-addr: %s@%s\n", domain, ip, port)
	if err := os.WriteFile(filepath.Join(dir, "unbound.conf"), []byte(unbound), 0o600); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "opendkim.conf")
	if err := os.WriteFile(conf, []byte("ResolverConfiguration "+filepath.Join(dir, "unbound.conf")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "-d", domain, "-s", selector, "-k", keyFile, "-x", conf, "-vvv").CombinedOutput()
	return string(out), err
}

// TestKeygenRecordAcceptedByOpenDKIM publishes the record keygen prints, as
// printed, and asks opendkim-testkey whether it matches the private key; a
// wrong key and a missing record must make it fail.
func TestKeygenRecordAcceptedByOpenDKIM(t *testing.T) {
	e := newKeyEnv(t, "")
	for _, algo := range []string{"rsa-2048", "rsa-4096"} {
		t.Run(algo, func(t *testing.T) {
			sel := "t-" + algo
			zone, stderr, err := run(keygenF, "-config", e.cfg, "-d", "example.com", "-s", sel, "-a", algo)
			if err != nil {
				t.Fatalf("%v: %s", err, stderr)
			}
			// Load the zone-file line exactly as printed into the DNS server.
			e.dns.AddZoneText(t, "example.com.", zone)
			keyFile := filepath.Join(e.dir, "example.com", sel+".pem")
			if out, err := opendkimTestkey(t, e.dns.Addr(), "example.com", sel, keyFile); err != nil || !strings.Contains(out, "key OK") {
				t.Fatalf("opendkim-testkey rejects keygen's record: %v\n%s", err, out)
			}
			// Another key against the same record: must fail.
			if _, _, err := run(keygenF, "-config", e.cfg, "-d", "example.com", "-s", sel+"-other", "-a", algo); err != nil {
				t.Fatal(err)
			}
			other := filepath.Join(e.dir, "example.com", sel+"-other.pem")
			if out, err := opendkimTestkey(t, e.dns.Addr(), "example.com", sel, other); err == nil {
				t.Fatalf("opendkim-testkey accepts a wrong key:\n%s", out)
			}
			// No record: must fail.
			if out, err := opendkimTestkey(t, e.dns.Addr(), "example.com", sel+"-other", other); err == nil {
				t.Fatalf("opendkim-testkey accepts a missing record:\n%s", out)
			}
		})
	}
}

func TestKeysCommand(t *testing.T) {
	tests := []struct {
		name      string
		conf      string
		setup     func(t *testing.T, e *keyEnv)
		wantRows  map[string]string // selector -> "dns active why-substring"
		wantExit  bool
		wantStder string
	}{
		{
			name: "published old key signs while the new one is missing",
			setup: func(t *testing.T, e *keyEnv) {
				gen(t, e, "example.com", "2026-10", "rsa-2048")
				gen(t, e, "example.com", "2026-11", "rsa-2048")
				gen(t, e, "example.com", "2026-11e", "ed25519")
				e.publish(t, "example.com", "2026-10")
				e.publish(t, "example.com", "2026-11e")
			},
			wantRows: map[string]string{"2026-10": "published true", "2026-11": "missing false DNS record missing",
				"2026-11e": "published true"},
		},
		{
			name: "superseded and mismatched",
			setup: func(t *testing.T, e *keyEnv) {
				gen(t, e, "example.com", "2026-10", "rsa-2048")
				gen(t, e, "example.com", "2026-11", "rsa-2048")
				gen(t, e, "example.com", "2026-12", "rsa-2048")
				e.publish(t, "example.com", "2026-10")
				e.publish(t, "example.com", "2026-11")
				e.dns.SetTXT(keys.RecordName("example.com", "2026-12"), "v=DKIM1; k=rsa; p="+e.publish(t, "example.com", "2026-10").PublicKeyData())
			},
			wantRows: map[string]string{"2026-10": "published false superseded by 2026-11", "2026-11": "published true",
				"2026-12": "mismatch false does not match"},
		},
		{
			name: "no key active",
			setup: func(t *testing.T, e *keyEnv) {
				gen(t, e, "example.com", "2026-11", "rsa-2048")
				e.dns.SetTXT(keys.RecordName("example.com", "2026-11"), "v=DKIM1; k=rsa; p=")
			},
			wantRows:  map[string]string{"2026-11": "revoked false revoked"},
			wantExit:  true,
			wantStder: "none is active",
		},
		{
			name: "temperror",
			setup: func(t *testing.T, e *keyEnv) {
				gen(t, e, "example.com", "2026-11", "rsa-2048")
				e.dns.Fail(keys.RecordName("example.com", "2026-11"), 2)
			},
			wantRows: map[string]string{"2026-11": "temperror false lookup failed"},
			wantExit: true,
		},
		{
			name: "require_published off: the active key is unpublished",
			conf: "require_published = false\n",
			setup: func(t *testing.T, e *keyEnv) {
				gen(t, e, "example.com", "2026-10", "rsa-2048")
				gen(t, e, "example.com", "2026-11", "rsa-2048")
				e.publish(t, "example.com", "2026-10")
			},
			wantRows:  map[string]string{"2026-10": "published false superseded by 2026-11", "2026-11": "missing true"},
			wantExit:  true,
			wantStder: "example.com/2026-11 is active but its DNS record is missing",
		},
		{
			name: "pinned",
			conf: "[keys.pin]\n\"example.com\" = [\"2026-10\"]\n",
			setup: func(t *testing.T, e *keyEnv) {
				gen(t, e, "example.com", "2026-10", "rsa-2048")
				gen(t, e, "example.com", "2026-11", "rsa-2048")
				e.publish(t, "example.com", "2026-10")
				e.publish(t, "example.com", "2026-11")
			},
			wantRows: map[string]string{"2026-10": "published true", "2026-11": "published false keys.pin selects 2026-10"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newKeyEnv(t, tt.conf)
			tt.setup(t, e)
			out, stderr, err := run(keysF, "-config", e.cfg, "-json")
			var ee exitError
			if tt.wantExit != (errors.As(err, &ee) && ee == 1) {
				t.Fatalf("keys: %v, want exit 1: %v; stderr %s", err, tt.wantExit, stderr)
			}
			if !tt.wantExit && err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(stderr, tt.wantStder) {
				t.Errorf("stderr %q does not contain %q", stderr, tt.wantStder)
			}
			var rows []keyInfo
			if err := json.Unmarshal([]byte(out), &rows); err != nil {
				t.Fatalf("%v: %s", err, out)
			}
			if len(rows) != len(tt.wantRows) {
				t.Errorf("%d rows, want %d: %s", len(rows), len(tt.wantRows), out)
			}
			for _, r := range rows {
				want := strings.SplitN(tt.wantRows[r.Selector], " ", 3)
				got := fmt.Sprintf("%s %v", r.DNS, r.Active)
				if got != want[0]+" "+want[1] || (len(want) == 3 && !strings.Contains(r.Why, want[2])) {
					t.Errorf("%s: %s, why %q; want %q", r.Selector, got, r.Why, tt.wantRows[r.Selector])
				}
				if r.Bits == 0 || r.Algorithm == "" || r.Created.IsZero() {
					t.Errorf("%s: incomplete row %+v", r.Selector, r)
				}
			}
			// The table form lists the same keys.
			table, _, _ := run(keysF, "-config", e.cfg)
			if !strings.HasPrefix(table, "DOMAIN") || strings.Count(table, "\n") != len(rows)+1 {
				t.Errorf("table:\n%s", table)
			}
		})
	}
}

// gen makes a key in e's folder.
func gen(t *testing.T, e *keyEnv, domain, sel, algo string) {
	t.Helper()
	if _, err := keys.Generate(e.dir, domain, sel, algo); err != nil {
		t.Fatal(err)
	}
}

// TestRotateCommand drives rotate by hand through two months with records
// published by the administrator (no [keys.publish]): what it prints, what
// it changes, and that a dry run and a repeated run change nothing.
func TestRotateCommand(t *testing.T) {
	e := newKeyEnv(t, "recheck = \"1m\"\n")
	day := 24 * time.Hour
	t0 := time.Date(2027, 3, 1, 6, 0, 0, 0, time.UTC)
	at := func(d time.Duration) string { return t0.Add(d).Format(time.RFC3339) }
	ddir := filepath.Join(e.dir, "example.com")

	// Usage errors.
	if _, _, err := run(rotateF, "-config", e.cfg); err != exitError(2) {
		t.Errorf("no -d nor -all: %v", err)
	}
	if _, _, err := run(rotateF, "-config", e.cfg, "-all", "-d", "example.com"); err != exitError(2) {
		t.Errorf("-d and -all: %v", err)
	}

	// A new domain: its first keys.
	out, stderr, err := run(rotateF, "-config", e.cfg, "-d", "example.com", "-a", "rsa-2048,ed25519", "-test-now", at(0))
	if err != nil {
		t.Fatalf("%v: %s", err, stderr)
	}
	for _, want := range []string{"new rsa-2048 key 2027-03", "new ed25519 key 2027-03e", "publish this record:", "2027-03._domainkey.example.com.\tIN\tTXT\t( \"v=DKIM1; k=rsa; p="} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	// Not yet published: nothing new is made, the record is asked for again.
	out, _, err = run(rotateF, "-config", e.cfg, "-all", "-force", "-test-now", at(40*day))
	if err != nil || !strings.Contains(out, "2027-03 waits for its DNS record (missing") || strings.Contains(out, "new ") {
		t.Fatalf("pending: %v\n%s", err, out)
	}
	e.publish(t, "example.com", "2027-03")
	e.publish(t, "example.com", "2027-03e")

	snapshot := func() string {
		var b strings.Builder
		filepath.Walk(e.dir, func(p string, fi os.FileInfo, err error) error {
			if err == nil && !strings.HasSuffix(p, ".lock") {
				data, _ := os.ReadFile(p)
				fmt.Fprintf(&b, "%s %v %x\n", p, fi.Mode(), data)
			}
			return nil
		})
		return b.String()
	}
	steps := []struct {
		name    string
		when    time.Duration
		publish []string // records the administrator publishes before the run
		want    []string
		files   string // the key folder afterwards: selectors, "retired/" ones
		same    bool   // the run changes nothing at all (not even the state file)
	}{
		{name: "young keys", when: 10 * day, want: nil, files: "2027-03 2027-03e"},
		{name: "a month later", when: 31 * day, want: []string{"new rsa-2048 key 2027-04 to follow 2027-03", "new ed25519 key 2027-04e to follow 2027-03e"},
			files: "2027-03 2027-03e 2027-04 2027-04e"},
		{name: "published: old keys superseded", when: 32 * day, publish: []string{"2027-04", "2027-04e"}, want: nil,
			files: "2027-03 2027-03e 2027-04 2027-04e"},
		{name: "within grace", when: 39 * day, want: nil, files: "2027-03 2027-03e 2027-04 2027-04e", same: true},
		{name: "grace passed", when: 39*day + 2*time.Minute, want: []string{"retired 2027-03 (rsa-sha256)", "retired 2027-03e (ed25519-sha256)",
			"remove the record 2027-03._domainkey.example.com. TXT (or revoke it: 2027-03._domainkey.example.com.\tIN\tTXT\t\"v=DKIM1; k=rsa; p=\")"},
			files: "2027-04 2027-04e retired/2027-03 retired/2027-03e"},
		{name: "repeated", when: 39*day + 3*time.Minute, want: nil, files: "2027-04 2027-04e retired/2027-03 retired/2027-03e", same: true},
		{name: "next month", when: 62 * day, want: []string{"new rsa-2048 key 2027-05 to follow 2027-04"},
			files: "2027-04 2027-04e 2027-05 2027-05e retired/2027-03 retired/2027-03e"},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			for _, s := range st.publish {
				e.publish(t, "example.com", s)
			}
			// A dry run first: it may print, but changes nothing.
			before := snapshot()
			dry, stderr, err := run(rotateF, "-config", e.cfg, "-all", "-dry-run", "-test-now", at(st.when))
			if err != nil {
				t.Fatalf("dry run: %v: %s", err, stderr)
			}
			if after := snapshot(); after != before {
				t.Fatalf("dry run changed the key folder:\n%s\n---\n%s", before, after)
			}
			for _, w := range st.want {
				if strings.HasPrefix(w, "new ") && !strings.Contains(dry, "(dry run) example.com: "+w) {
					t.Errorf("dry run does not announce %q:\n%s", w, dry)
				}
			}
			out, stderr, err := run(rotateF, "-config", e.cfg, "-all", "-test-now", at(st.when))
			if err != nil {
				t.Fatalf("%v: %s", err, stderr)
			}
			if st.same && snapshot() != before {
				t.Errorf("a run with nothing to do changed the key folder")
			}
			for _, w := range st.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			if st.want == nil && out != "" {
				t.Errorf("nothing to do, but rotate printed (cron would mail it):\n%s", out)
			}
			var files []string
			for _, dir := range []string{ddir, filepath.Join(ddir, keys.RetiredDir)} {
				entries, _ := os.ReadDir(dir)
				for _, en := range entries {
					if strings.HasSuffix(en.Name(), ".pem") {
						p := strings.TrimSuffix(en.Name(), ".pem")
						if dir != ddir {
							p = "retired/" + p
						}
						files = append(files, p)
					}
				}
			}
			if got := strings.Join(files, " "); got != st.files {
				t.Errorf("key folder: %s, want %s", got, st.files)
			}
		})
	}
	// Superseded times are in the state file, for `keys` to show.
	state, err := keys.LoadState(ddir)
	if err != nil {
		t.Fatal(err)
	}
	if ks := state.Keys["2027-03"]; ks == nil || !ks.Superseded.Equal(t0.Add(32*day)) || !ks.Retired.Equal(t0.Add(39*day+2*time.Minute)) {
		t.Errorf("state of 2027-03: %+v", ks)
	}
	// A DNS failure for a key of the domain stops rotate from changing it.
	e.dns.Fail(keys.RecordName("example.com", "2027-04"), 2)
	before := snapshot()
	_, stderr, err = run(rotateF, "-config", e.cfg, "-all", "-test-now", at(200*day))
	if err != exitError(1) || !strings.Contains(stderr, "DNS lookup failed") {
		t.Errorf("temperror: %v, %s", err, stderr)
	}
	if snapshot() != before {
		t.Error("rotate changed files despite a DNS failure")
	}
	// Two runs at once: the second one refuses.
	unlock, err := lockKeyDir(e.dir)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	e.dns.Clear(keys.RecordName("example.com", "2027-04"))
	if _, stderr, err := run(rotateF, "-config", e.cfg, "-all"); err == nil || !strings.Contains(err.Error()+stderr, "another authmilter rotate is running") {
		t.Errorf("concurrent run: %v %s", err, stderr)
	}
}

// TestRotatePublishes runs rotate with [keys.publish] against Knot: a
// failed update leaves the key unpublished and is retried by the next run;
// retire = "revoke" replaces a retired key's record with an empty p=.
func TestRotatePublishes(t *testing.T) {
	knot := publishtest.StartKnot(t, "example.com")
	wrongSecret := filepath.Join(t.TempDir(), "wrong")
	if err := os.WriteFile(wrongSecret, []byte("c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	publishConf := func(secret string) string {
		return fmt.Sprintf("recheck = \"1m\"\n[keys.publish]\nserver = %q\ntsig_name = %q\ntsig_secret_file = %q\nretire = \"revoke\"\nttl = 120\ntimeout = \"3s\"\n",
			knot.Addr, publishtest.TSIGName, secret)
	}
	e := newKeyEnv(t, publishConf(wrongSecret))
	// rotate resolves through the test DNS server; let it see Knot's zone.
	e.conf = strings.Replace(e.conf, e.dns.Addr(), knot.Addr, 1)
	os.WriteFile(e.cfg, []byte(e.conf), 0o600)
	t0 := time.Date(2027, 5, 1, 3, 0, 0, 0, time.UTC)
	at := func(d time.Duration) string { return t0.Add(d).Format(time.RFC3339) }
	day := 24 * time.Hour

	out, stderr, err := run(rotateF, "-config", e.cfg, "-d", "example.com", "-test-now", at(0))
	if err != exitError(1) || !strings.Contains(stderr, "TSIG") || !strings.Contains(out, "publish this record by hand") {
		t.Fatalf("rotate with a wrong TSIG secret: %v\n%s\n%s", err, out, stderr)
	}
	if _, err := os.Stat(filepath.Join(e.dir, "example.com", "2027-05.pem")); err != nil {
		t.Fatalf("the key should stay: %v", err)
	}
	if txt := knot.TXT(t, "2027-05._domainkey.example.com"); len(txt) != 0 {
		t.Fatalf("record published despite the error: %q", txt)
	}
	// Fixed secret: the next run publishes the waiting key, makes no other.
	e.conf = strings.Replace(e.conf, wrongSecret, knot.SecretFile, 1)
	os.WriteFile(e.cfg, []byte(e.conf), 0o600)
	out, stderr, err = run(rotateF, "-config", e.cfg, "-all", "-force", "-test-now", at(day))
	if err != nil || !strings.Contains(out, "2027-05 has no DNS record yet; publishing it again") || strings.Contains(out, "new ") {
		t.Fatalf("retry: %v\n%s\n%s", err, out, stderr)
	}
	if txt := knot.TXT(t, "2027-05._domainkey.example.com"); len(txt) != 1 || !strings.HasPrefix(txt[0], "v=DKIM1; k=rsa; p=MII") {
		t.Fatalf("record after retry: %q", txt)
	}
	// A month on: the next key; then the old one is revoked after the grace.
	for _, step := range []struct {
		when time.Duration
		want string
	}{
		{31 * day, "new rsa-2048 key 2027-06 to follow 2027-05"},
		{32 * day, ""},
		{40 * day, "revoked 2027-05._domainkey.example.com. TXT by RFC 2136 update"},
	} {
		out, stderr, err := run(rotateF, "-config", e.cfg, "-all", "-test-now", at(step.when))
		if err != nil || !strings.Contains(out, step.want) || (step.want == "" && out != "") {
			t.Fatalf("day %v: %v\n%s\n%s", step.when/day, err, out, stderr)
		}
	}
	if txt := knot.TXT(t, "2027-05._domainkey.example.com"); len(txt) != 1 || txt[0] != "v=DKIM1; k=rsa; p=" {
		t.Errorf("retired record: %q, want a revocation", txt)
	}
	// keygen publishes too, and -no-publish does not.
	out, stderr, err = run(keygenF, "-config", e.cfg, "-d", "example.com", "-s", "extra", "-a", "ed25519")
	if err != nil || !strings.Contains(stderr, "published extra._domainkey.example.com. TXT by RFC 2136 update") {
		t.Fatalf("keygen: %v\n%s\n%s", err, out, stderr)
	}
	if _, stderr, err = run(keygenF, "-config", e.cfg, "-d", "example.com", "-s", "extra2", "-no-publish"); err != nil || strings.Contains(stderr, "published") {
		t.Fatalf("keygen -no-publish: %v %s", err, stderr)
	}
	if txt := knot.TXT(t, "extra2._domainkey.example.com"); len(txt) != 0 {
		t.Errorf("-no-publish published: %q", txt)
	}
	// The nsupdate script names the configured server.
	out, _, err = run(keygenF, "-config", e.cfg, "-d", "example.com", "-s", "extra3", "-no-publish", "-format", "nsupdate")
	if host, port, _ := strings.Cut(knot.Addr, ":"); err != nil || !strings.HasPrefix(out, "server "+host+" "+port+"\nupdate delete extra3._domainkey.example.com. TXT\n") {
		t.Errorf("nsupdate script: %v\n%s", err, out)
	}
}

func TestKeyLifecycleConfig(t *testing.T) {
	tests := []struct {
		conf    string
		wantErr string
	}{
		{"[keys]\nrotate_after = \"30d\"\ngrace = \"0s\"\n", ""},
		{"[keys]\nrotate_after = \"10m\"\n", "keys.rotate_after"},
		{"[keys]\ngrace = \"-1d\"\n", "grace"},
		{"[keys.publish]\nserver = \"192.0.2.1\"\nzone = \"example.com\"\n", ""},
		{"[keys.publish]\nserver = \"ns.example.com\"\n", "keys.publish.server"},
		{"[keys.publish]\nserver = \"192.0.2.1:53\"\ntsig_name = \"k\"\n", "keys.publish.tsig_secret_file"},
		{"[keys.publish]\nserver = \"192.0.2.1:53\"\ntsig_algorithm = \"hmac-md5\"\n", "keys.publish.tsig_algorithm"},
		{"[keys.publish]\nserver = \"192.0.2.1:53\"\nttl = 0\n", "keys.publish.ttl"},
		{"[keys.publish]\nserver = \"192.0.2.1:53\"\nretire = \"delete\"\n", "keys.publish.retire"},
		{"[keys.publish]\nserver = \"192.0.2.1:53\"\nzone = \"not a zone\"\n", "keys.publish.zone"},
		{"[keys.publish]\nservre = \"192.0.2.1:53\"\n", "unknown key keys.publish.servre"},
	}
	for _, tt := range tests {
		t.Run(tt.conf, func(t *testing.T) {
			_, err := policy.ParseConfig("t.toml", []byte(tt.conf))
			if (err == nil) != (tt.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("ParseConfig error = %v, want %q", err, tt.wantErr)
			}
		})
	}
}
