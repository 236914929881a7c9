package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/authmilter/authmilter/keys"
)

func keyRecordF(args []string, o, e *bytes.Buffer) error { return keyRecord(args, o, e) }

// TestKeysRecord prints the record of active, inactive and retired keys
// again, as keygen printed it.
func TestKeysRecord(t *testing.T) {
	e := newKeyEnv(t, "[keys.publish]\nttl = 600\n")
	zone, stderr, err := run(keygenF, "-config", e.cfg, "-d", "example.com", "-s", "s1", "-no-publish")
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	ed, stderr, err := run(keygenF, "-config", e.cfg, "-d", "example.com", "-s", "s2", "-a", "ed25519", "-format", "json", "-no-publish")
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	k1, err := keys.LoadKey(filepath.Join(e.dir, "example.com", "s1.pem"), "example.com", "s1")
	if err != nil {
		t.Fatal(err)
	}
	// Retire a third key by hand, as rotate does.
	if _, _, err := run(keygenF, "-config", e.cfg, "-d", "example.com", "-s", "old", "-no-publish"); err != nil {
		t.Fatal(err)
	}
	old, err := keys.LoadKey(filepath.Join(e.dir, "example.com", "old.pem"), "example.com", "old")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(e.dir, "example.com", keys.RetiredDir), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(old.Path, filepath.Join(e.dir, "example.com", keys.RetiredDir, "old.pem")); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name       string
		args       []string
		wantOut    string // exact, or a part for json
		wantStderr string
		wantErr    string
	}{
		{name: "zone, as keygen printed it", args: []string{"-d", "example.com", "-s", "s1"}, wantOut: zone},
		{name: "upper case and trailing dot", args: []string{"-d", "Example.COM.", "-s", "S1"}, wantOut: zone},
		{name: "value", args: []string{"-d", "example.com", "-s", "s1", "-format", "value"}, wantOut: keys.FormatRecord(k1) + "\n"},
		{name: "nsupdate", args: []string{"-d", "example.com", "-s", "s1", "-format", "nsupdate"}, wantOut: keys.NSUpdateScript(k1, 600, "", "")},
		{name: "json, as keygen printed it", args: []string{"-d", "example.com", "-s", "s2", "-format", "json"}, wantOut: ed},
		{name: "retired", args: []string{"-d", "example.com", "-s", "old", "-format", "value"}, wantOut: keys.FormatRecord(old) + "\n",
			wantStderr: "note: example.com/old is retired (moved to " + filepath.Join(e.dir, "example.com", keys.RetiredDir, "old.pem")},
		{name: "no such key", args: []string{"-d", "example.com", "-s", "nope"},
			wantErr: "no key example.com/nope: neither " + filepath.Join(e.dir, "example.com", "nope.pem") + " nor " +
				filepath.Join(e.dir, "example.com", "retired", "nope.pem") + " exists; the domain's keys: s1, s2, old (retired)"},
		{name: "no such domain", args: []string{"-d", "example.net", "-s", "s1"}, wantErr: "(the domain has no keys)"},
		{name: "path traversal", args: []string{"-d", "example.com", "-s", "../../etc/passwd"}, wantErr: `-s: "../../etc/passwd" is not a valid selector`},
		{name: "bad domain", args: []string{"-d", "..", "-s", "s1"}, wantErr: `-d: ".." is not a domain name`},
		{name: "bad format", args: []string{"-d", "example.com", "-s", "s1", "-format", "yaml"}, wantErr: "-format: want zone, value, nsupdate or json"},
		{name: "no selector", args: []string{"-d", "example.com"}, wantErr: "exit status 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, stderr, err := run(keyRecordF, append([]string{"-config", e.cfg}, tt.args...)...)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("%v\n%s", err, stderr)
			}
			if out != tt.wantOut {
				t.Errorf("got\n%s\nwant\n%s", out, tt.wantOut)
			}
			if !strings.Contains(stderr, tt.wantStderr) {
				t.Errorf("stderr %q lacks %q", stderr, tt.wantStderr)
			}
		})
	}
}

// TestKeygenTestingAndRSA1024: -t y makes a testing key whose record has
// t=y, now and when printed again; -a rsa-1024 warns and makes 1024 bits.
func TestKeygenTestingAndRSA1024(t *testing.T) {
	e := newKeyEnv(t, "")
	out, stderr, err := run(keygenF, "-config", e.cfg, "-d", "example.com", "-s", "try", "-t", "y", "-format", "value", "-no-publish")
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	if !strings.HasPrefix(out, "v=DKIM1; k=rsa; t=y; p=MII") {
		t.Errorf("testing record %q", out)
	}
	st, err := keys.LoadState(filepath.Join(e.dir, "example.com"))
	if err != nil {
		t.Fatal(err)
	}
	if ks := st.Keys["try"]; ks == nil || !ks.Testing || ks.Created.IsZero() {
		t.Errorf("state %+v", st.Keys["try"])
	}
	again, _, err := run(keyRecordF, "-config", e.cfg, "-d", "example.com", "-s", "try", "-format", "value")
	if err != nil || again != out {
		t.Errorf("keys record: %v\n%q, keygen printed %q", err, again, out)
	}
	js, _, err := run(keyRecordF, "-config", e.cfg, "-d", "example.com", "-s", "try", "-format", "json")
	var rec struct{ Value string }
	if err != nil || json.Unmarshal([]byte(js), &rec) != nil || rec.Value+"\n" != out {
		t.Errorf("json: %v %q", err, js)
	}
	if _, _, err := run(keygenF, "-config", e.cfg, "-d", "example.com", "-s", "bad", "-t", "s"); err == nil || !strings.Contains(err.Error(), "-t: want y") {
		t.Errorf("-t s: %v", err)
	}

	out, stderr, err = run(keygenF, "-config", e.cfg, "-d", "example.com", "-s", "small", "-a", "rsa-1024", "-format", "value", "-no-publish")
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	for _, w := range []string{"warning: a 1024-bit RSA key: RFC 8301 permits it", "authmilter rotate makes 2048-bit successors"} {
		if !strings.Contains(stderr, w) {
			t.Errorf("stderr lacks %q:\n%s", w, stderr)
		}
	}
	k, err := keys.LoadKey(filepath.Join(e.dir, "example.com", "small.pem"), "example.com", "small")
	if err != nil {
		t.Fatal(err)
	}
	if k.Bits != 1024 || strings.Contains(out, "t=y") || len(strings.TrimSpace(out)) > 255 {
		t.Errorf("%d bits, record %q", k.Bits, out)
	}
	if _, stderr, err := run(keygenF, "-config", e.cfg, "-d", "example.com", "-s", "x", "-a", "rsa-512"); err == nil {
		t.Errorf("rsa-512 accepted: %s", stderr)
	}
}

// TestKeysRecordCNAMEMode: in CNAME mode the record is printed at its name
// in the provider's zone, with the CNAME the customer must add.
func TestKeysRecordCNAMEMode(t *testing.T) {
	e := newKeyEnv(t, "[keys.publish]\ncname_zone = \"dkim.esp.example\"\ncname_domains = [\"customer.example\"]\n")
	if _, stderr, err := run(keygenF, "-config", e.cfg, "-d", "customer.example", "-s", "s1", "-a", "ed25519", "-no-publish"); err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	out, stderr, err := run(keyRecordF, "-config", e.cfg, "-d", "customer.example", "-s", "s1")
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	if !strings.HasPrefix(out, "s1.customer.example.dkim.esp.example.\tIN\tTXT\t( \"v=DKIM1; k=ed25519; p=") {
		t.Errorf("record %q", out)
	}
	if !strings.Contains(stderr, "s1._domainkey.customer.example") || !strings.Contains(stderr, "CNAME") ||
		!strings.Contains(stderr, "s1.customer.example.dkim.esp.example") {
		t.Errorf("stderr lacks the customer's CNAME:\n%s", stderr)
	}
}
