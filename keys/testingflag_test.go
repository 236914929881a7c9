package keys

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestTestingFlag: a testing key's record carries t=y, and a record
// matches its key whatever its t= says, with a note when they disagree.
func TestTestingFlag(t *testing.T) {
	dir := t.TempDir()
	k, err := LoadKey(installKey(t, dir, "example.com", "r", "rsa2048-pkcs8.pem", 0o600), "example.com", "r")
	if err != nil {
		t.Fatal(err)
	}
	normal := FormatRecord(k)
	if !strings.HasPrefix(normal, "v=DKIM1; k=rsa; p=MII") {
		t.Fatalf("record %q", normal)
	}
	tk := *k
	tk.Testing = true
	testRec := FormatRecord(&tk)
	if want := "v=DKIM1; k=rsa; t=y; p=" + k.PublicKeyData(); testRec != want {
		t.Fatalf("testing record\n got %q\nwant %q", testRec, want)
	}
	if r, err := ParseRecord(testRec); err != nil || len(r.Flags) != 1 || r.Flags[0] != "y" {
		t.Fatalf("ParseRecord(%q) = %+v, %v", testRec, r, err)
	}
	if zr := ZoneRecord(&tk); !strings.Contains(zr, `"v=DKIM1; k=rsa; t=y; p=`) {
		t.Errorf("zone record %q", zr)
	}
	tests := []struct {
		name   string
		key    *Key
		txt    string
		detail string // "" or a part of it
	}{
		{"testing key, t=y", &tk, testRec, ""},
		{"testing key, opendkim-genkey -t record", &tk, "v=DKIM1; h=sha256; k=rsa; t=y; s=email; p=" + k.PublicKeyData(), ""},
		{"testing key, t=y:s", &tk, "v=DKIM1; k=rsa; t=s:y; p=" + k.PublicKeyData(), ""},
		{"testing key, no t=", &tk, normal, "lacks t=y"},
		{"normal key, t=y", k, testRec, "the record has t=y"},
		{"normal key, t=s", k, "v=DKIM1; k=rsa; t=s; p=" + k.PublicKeyData(), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lookup := func(context.Context, string) ([]string, error) { return []string{tt.txt}, nil }
			got := CheckPublished(context.Background(), lookup, tt.key)
			if got.State != Published {
				t.Fatalf("state %s (%s), want published", got.State, got.Detail)
			}
			if (tt.detail == "") != (got.Detail == "") || !strings.Contains(got.Detail, tt.detail) {
				t.Errorf("detail %q, want %q", got.Detail, tt.detail)
			}
		})
	}
}

// TestGenerateRSA1024: allowed on request, loaded like any key; rotation
// replaces it by a 2048-bit key.
func TestGenerateRSA1024(t *testing.T) {
	dir := t.TempDir()
	k, err := Generate(dir, "example.com", "small", "rsa-1024")
	if err != nil {
		t.Fatal(err)
	}
	if k.Bits != 1024 || k.Algorithm != RSASHA256 {
		t.Fatalf("got %s %d bits", k.Algorithm, k.Bits)
	}
	if _, err := LoadKey(filepath.Join(dir, "example.com", "small.pem"), "example.com", "small"); err != nil {
		t.Fatal(err)
	}
	if g := GenAlgorithm(k); g != "rsa-2048" {
		t.Errorf("GenAlgorithm of a 1024-bit key = %s, want rsa-2048", g)
	}
	// A 1024-bit record fits in one 255-byte string less often than not,
	// but in one short TXT value: what some DNS hosting forms need.
	if n := len(FormatRecord(k)); n > 255 {
		t.Errorf("1024-bit record is %d bytes, want at most 255", n)
	}
	if _, err := Generate(dir, "example.com", "tiny", "rsa-512"); err == nil || !strings.Contains(err.Error(), "rsa-1024 (not recommended)") {
		t.Errorf("rsa-512: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "example.com", "tiny.pem")); !os.IsNotExist(err) {
		t.Errorf("tiny.pem: %v", err)
	}
}
