package keys

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// installKey copies a testdata key into dir/domain/selector.pem with mode.
func installKey(t *testing.T, dir, domain, selector, src string, mode os.FileMode) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "testdata", "keys", src))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, domain), 0o700); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, domain, selector+".pem")
	if err := os.WriteFile(p, data, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadKey(t *testing.T) {
	tests := []struct {
		file    string
		mode    os.FileMode
		algo    Algorithm
		bits    int
		wantErr string
	}{
		{file: "rsa2048-pkcs1.pem", mode: 0o600, algo: RSASHA256, bits: 2048},
		{file: "rsa2048-pkcs8.pem", mode: 0o600, algo: RSASHA256, bits: 2048},
		{file: "rsa2048-pkcs1-opendkim.pem", mode: 0o600, algo: RSASHA256, bits: 2048},
		{file: "rsa1024-pkcs1.pem", mode: 0o400, algo: RSASHA256, bits: 1024},
		{file: "ed25519-pkcs8.pem", mode: 0o600, algo: Ed25519SHA256, bits: 256},
		{file: "rsa512-pkcs1.pem", mode: 0o600, wantErr: "at least 1024"},
		{file: "garbage.pem", mode: 0o600, wantErr: "no PEM block"},
		{file: "rsa2048-pkcs8.pem", mode: 0o640, wantErr: "readable by group or others"},
		{file: "ed25519-pkcs8.pem", mode: 0o604, wantErr: "readable by group or others"},
	}
	for _, tt := range tests {
		t.Run(tt.file+"/"+tt.mode.String(), func(t *testing.T) {
			dir := t.TempDir()
			p := installKey(t, dir, "example.com", "sel", tt.file, tt.mode)
			k, err := LoadKey(p, "example.com", "sel")
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("LoadKey error = %v, want %q", err, tt.wantErr)
				}
				if !strings.Contains(err.Error(), "example.com/sel") {
					t.Errorf("error %q does not name the key", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if k.Algorithm != tt.algo || k.Bits != tt.bits {
				t.Errorf("got %s/%d, want %s/%d", k.Algorithm, k.Bits, tt.algo, tt.bits)
			}
		})
	}
	if _, err := LoadKey(filepath.Join(t.TempDir(), "nope.pem"), "example.com", "x"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

func TestLoadDirAndActive(t *testing.T) {
	dir := t.TempDir()
	installKey(t, dir, "example.com", "2026-10", "rsa2048-pkcs1.pem", 0o600)
	installKey(t, dir, "example.com", "2026-11", "rsa2048-pkcs8.pem", 0o600)
	installKey(t, dir, "example.com", "2026-11e", "ed25519-pkcs8.pem", 0o600)
	installKey(t, dir, "Other.ORG", "a", "rsa1024-pkcs1.pem", 0o600)
	// Retired keys and non-key files are ignored.
	installKey(t, dir, "example.com/retired", "2026-01", "rsa2048-pkcs1.pem", 0o600)
	os.WriteFile(filepath.Join(dir, "example.com", "README"), []byte("x"), 0o644)
	// The state file orders the keys by creation, whatever the names.
	day := 24 * time.Hour
	base := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	st := &DomainState{Keys: map[string]*KeyState{
		"2026-10":  {Created: base},
		"2026-11":  {Created: base.Add(30 * day)},
		"2026-11e": {Created: base.Add(30 * day)},
	}}
	if err := st.Save(filepath.Join(dir, "example.com")); err != nil {
		t.Fatal(err)
	}

	tab, err := LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if ign := tab.Ignored(); len(ign) != 1 || !strings.Contains(ign[0], "README") {
		t.Errorf("Ignored = %q, want the README only", ign)
	}
	if got := strings.Join(tab.Domains(), ","); got != "example.com,other.org" {
		t.Fatalf("domains = %s", got)
	}
	ids := func(ks []*Key) string {
		var s []string
		for _, k := range ks {
			s = append(s, k.Selector+"/"+string(k.Algorithm))
		}
		return strings.Join(s, ",")
	}
	all := tab.Keys("example.com")
	tests := []struct {
		name   string
		pinned []string
		usable func(*Key) bool
		want   string
	}{
		{"newest created per algorithm", nil, nil, "2026-11/rsa-sha256,2026-11e/ed25519-sha256"},
		{"unpublished newest keeps old signing", nil, func(k *Key) bool { return k.Selector != "2026-11" }, "2026-10/rsa-sha256,2026-11e/ed25519-sha256"},
		{"pinned", []string{"2026-10"}, nil, "2026-10/rsa-sha256"},
		{"pinned but unusable", []string{"2026-10"}, func(k *Key) bool { return false }, ""},
		{"nothing usable", nil, func(*Key) bool { return false }, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ids(Active(all, tt.pinned, tt.usable)); got != tt.want {
				t.Errorf("Active = %q, want %q", got, tt.want)
			}
		})
	}

	// Any selector naming: a migrated key first seen before the newest
	// date-named key does not take over, whatever the names' order; a
	// later-created "apr2009.myesp" replaces "mar2009.myesp".
	named := func(sel string, created time.Time) *Key {
		return &Key{Selector: sel, Algorithm: RSASHA256, Created: created}
	}
	for _, c := range []struct {
		name string
		ks   []*Key
		want string
	}{
		{"migrated mail older than 2026-12", []*Key{named("mail", base), named("2026-12", base.Add(day))}, "2026-12/rsa-sha256"},
		{"monthly names", []*Key{named("mar2009.myesp", base), named("apr2009.myesp", base.Add(30*day))}, "apr2009.myesp/rsa-sha256"},
		{"alternating s2 then s1", []*Key{named("s2", base), named("s1", base.Add(30*day))}, "s1/rsa-sha256"},
	} {
		if got := ids(Active(c.ks, nil, nil)); got != c.want {
			t.Errorf("%s: Active = %q, want %q", c.name, got, c.want)
		}
	}

	// One bad key fails the whole load, so a reload keeps the old table.
	installKey(t, dir, "bad.example", "s1", "rsa512-pkcs1.pem", 0o600)
	if _, err := LoadDir(dir); err == nil || !strings.Contains(err.Error(), "bad.example/s1") {
		t.Errorf("LoadDir with a weak key: %v", err)
	}
	// A missing directory is an empty table.
	tab, err = LoadDir(filepath.Join(dir, "none"))
	if err != nil || len(tab.All()) != 0 {
		t.Errorf("missing dir: %v %v", tab, err)
	}
}

func TestRecordRoundTripAndPublication(t *testing.T) {
	dir := t.TempDir()
	rsaKey, err := LoadKey(installKey(t, dir, "example.com", "r", "rsa2048-pkcs8.pem", 0o600), "example.com", "r")
	if err != nil {
		t.Fatal(err)
	}
	edKey, err := LoadKey(installKey(t, dir, "example.com", "e", "ed25519-pkcs8.pem", 0o600), "example.com", "e")
	if err != nil {
		t.Fatal(err)
	}
	otherKey, err := LoadKey(installKey(t, dir, "example.com", "o", "rsa2048-pkcs1.pem", 0o600), "example.com", "o")
	if err != nil {
		t.Fatal(err)
	}
	// The record opendkim-genkey printed for its key must match it.
	odk, err := LoadKey(installKey(t, dir, "example.com", "opendkim", "rsa2048-pkcs1-opendkim.pem", 0o600), "example.com", "opendkim")
	if err != nil {
		t.Fatal(err)
	}
	odkTXT, _ := os.ReadFile("../testdata/keys/rsa2048-pkcs1-opendkim.txt")
	parts := strings.Split(string(odkTXT), "\"")[1:]
	var odkRecord strings.Builder
	for i := 0; i < len(parts); i += 2 {
		odkRecord.WriteString(parts[i])
	}

	notFound := &net.DNSError{Err: "no such host", Name: "x", IsNotFound: true}
	temp := &net.DNSError{Err: "timeout", Name: "x", IsTimeout: true, IsTemporary: true}
	tests := []struct {
		name string
		key  *Key
		txt  []string
		err  error
		want State
	}{
		{"rsa published", rsaKey, []string{FormatRecord(rsaKey)}, nil, Published},
		{"ed25519 published", edKey, []string{FormatRecord(edKey)}, nil, Published},
		{"opendkim-genkey record", odk, []string{odkRecord.String()}, nil, Published},
		{"other key", rsaKey, []string{FormatRecord(otherKey)}, nil, Mismatch},
		{"wrong k=", edKey, []string{"v=DKIM1; k=rsa; p=" + edKey.PublicKeyData()}, nil, Mismatch},
		{"revoked", rsaKey, []string{"v=DKIM1; k=rsa; p="}, nil, Revoked},
		{"garbage p", rsaKey, []string{"v=DKIM1; p=!!!"}, nil, Mismatch},
		{"two records", rsaKey, []string{FormatRecord(rsaKey), FormatRecord(rsaKey)}, nil, Mismatch},
		{"unrelated TXT only", rsaKey, []string{"hello"}, nil, Missing},
		{"nxdomain", rsaKey, nil, notFound, Missing},
		{"timeout", rsaKey, nil, temp, TempError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lookup := func(ctx context.Context, name string) ([]string, error) {
				if want := tt.key.Selector + "._domainkey.example.com"; name != want {
					t.Errorf("looked up %q, want %q", name, want)
				}
				return tt.txt, tt.err
			}
			got := CheckPublished(context.Background(), lookup, tt.key)
			if got.State != tt.want {
				t.Errorf("state = %s (%s), want %s", got.State, got.Detail, tt.want)
			}
		})
	}
}

func TestParseRecord(t *testing.T) {
	tests := []struct {
		in      string
		wantErr bool
		keyType string
		flags   string
	}{
		{in: "v=DKIM1; k=rsa; p=AAAA", keyType: "rsa"},
		{in: "p=AAAA", keyType: "rsa"},
		{in: "v=DKIM1; k=ed25519; t=y:s; p=AA AA", keyType: "ed25519", flags: "y,s"},
		{in: "k=rsa; v=DKIM1; p=AAAA", wantErr: true},
		{in: "v=DKIM2; p=AAAA", wantErr: true},
		{in: "v=DKIM1; k=rsa", wantErr: true},
		{in: "v=DKIM1; p=A; p=B", wantErr: true},
		{in: "v=DKIM1; junk; p=A", wantErr: true},
	}
	for _, tt := range tests {
		r, err := ParseRecord(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("ParseRecord(%q) error = %v, wantErr %v", tt.in, err, tt.wantErr)
			continue
		}
		if err == nil && (r.KeyType != tt.keyType || strings.Join(r.Flags, ",") != tt.flags) {
			t.Errorf("ParseRecord(%q) = %+v", tt.in, r)
		}
	}
}

func TestGenerateAndZoneRecord(t *testing.T) {
	dir := t.TempDir()
	for _, algo := range []string{"rsa-2048", "ed25519"} {
		k, err := Generate(dir, "Example.COM", "2026-11-"+strings.ReplaceAll(algo, "-", ""), algo)
		if err != nil {
			t.Fatal(err)
		}
		fi, _ := os.Stat(k.Path)
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %o", k.Path, fi.Mode().Perm())
		}
		if _, err := Generate(dir, "example.com", k.Selector, algo); err == nil || !strings.Contains(err.Error(), "already exists") {
			t.Errorf("overwrite: %v", err)
		}
		zone := ZoneRecord(k)
		if !strings.HasPrefix(zone, k.Selector+"._domainkey.example.com.\tIN\tTXT\t( \"v=DKIM1; k=") {
			t.Errorf("zone record %q", zone)
		}
		// Every quoted string is at most 255 bytes, and they join to the record.
		var joined strings.Builder
		quoted := strings.Split(zone, "\"")
		for i := 1; i < len(quoted); i += 2 {
			if len(quoted[i]) > 255 {
				t.Errorf("string of %d bytes", len(quoted[i]))
			}
			joined.WriteString(quoted[i])
		}
		if joined.String() != FormatRecord(k) {
			t.Errorf("zone strings join to %q, want %q", joined.String(), FormatRecord(k))
		}
	}
	if _, err := Generate(dir, "example.com", "x", "rsa-512"); err == nil {
		t.Error("rsa-512 accepted")
	}
	if _, err := Generate(dir, "not a domain", "x", "ed25519"); err == nil {
		t.Error("bad domain accepted")
	}
}
