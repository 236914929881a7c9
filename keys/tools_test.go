package keys

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// tool returns the path of a program the test needs, failing the test with
// the Debian package to install when it is missing.
func tool(t *testing.T, path, pkg string) string {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("%s not found (%v); install it with: apt-get install %s", path, err, pkg)
	}
	return path
}

func run(t *testing.T, dir string, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// zoneTXT joins the quoted strings of a zone-file TXT record, as
// opendkim-genkey writes it.
func zoneTXT(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, m := range regexp.MustCompile(`"((?:[^"\\]|\\.)*)"`).FindAllStringSubmatch(string(data), -1) {
		b.WriteString(m[1])
	}
	return b.String()
}

// TestKeysFromOtherTools loads keys made by opendkim-genkey and openssl (in
// every private key encoding they write) and checks that the record
// opendkim-genkey prints matches its key.
func TestKeysFromOtherTools(t *testing.T) {
	genkey := tool(t, "/usr/sbin/opendkim-genkey", "opendkim-tools")
	openssl := tool(t, "/usr/bin/openssl", "openssl")
	work := t.TempDir()
	tests := []struct {
		name   string
		cmd    []string
		file   string
		algo   Algorithm
		bits   int
		record string // opendkim-genkey's record file, if any
	}{
		{name: "opendkim-genkey 2048", cmd: []string{genkey, "-b", "2048", "-d", "example.com", "-s", "odk2048"},
			file: "odk2048.private", algo: RSASHA256, bits: 2048, record: "odk2048.txt"},
		{name: "opendkim-genkey 1024", cmd: []string{genkey, "-b", "1024", "-d", "example.com", "-s", "odk1024"},
			file: "odk1024.private", algo: RSASHA256, bits: 1024, record: "odk1024.txt"},
		{name: "openssl genrsa (PKCS#8)", cmd: []string{openssl, "genrsa", "-out", "genrsa.pem", "3072"},
			file: "genrsa.pem", algo: RSASHA256, bits: 3072},
		{name: "openssl genrsa -traditional (PKCS#1)", cmd: []string{openssl, "genrsa", "-traditional", "-out", "trad.pem", "2048"},
			file: "trad.pem", algo: RSASHA256, bits: 2048},
		{name: "openssl genpkey RSA", cmd: []string{openssl, "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "genpkey-rsa.pem"},
			file: "genpkey-rsa.pem", algo: RSASHA256, bits: 2048},
		{name: "openssl genpkey ed25519", cmd: []string{openssl, "genpkey", "-algorithm", "ed25519", "-out", "ed.pem"},
			file: "ed.pem", algo: Ed25519SHA256, bits: 256},
	}
	keyDir := t.TempDir()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			run(t, work, tt.cmd[0], tt.cmd[1:]...)
			data, err := os.ReadFile(filepath.Join(work, tt.file))
			if err != nil {
				t.Fatal(err)
			}
			sel := strings.TrimSuffix(strings.TrimSuffix(tt.file, ".pem"), ".private")
			p := filepath.Join(keyDir, "example.com", sel+".pem")
			os.MkdirAll(filepath.Dir(p), 0o700)
			if err := os.WriteFile(p, data, 0o600); err != nil {
				t.Fatal(err)
			}
			k, err := LoadKey(p, "example.com", sel)
			if err != nil {
				t.Fatal(err)
			}
			if k.Algorithm != tt.algo || k.Bits != tt.bits {
				t.Errorf("loaded as %s/%d, want %s/%d", k.Algorithm, k.Bits, tt.algo, tt.bits)
			}
			// Our record for the key is what a verifier needs.
			lookup := func(_ context.Context, name string) ([]string, error) {
				if name != RecordName("example.com", sel) {
					return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
				}
				return []string{FormatRecord(k)}, nil
			}
			if got := CheckPublished(context.Background(), lookup, k); got.State != Published {
				t.Errorf("own record: %s %s", got.State, got.Detail)
			}
			if tt.record == "" {
				return
			}
			// opendkim-genkey's own record matches the key.
			rec := zoneTXT(t, filepath.Join(work, tt.record))
			lookup = func(context.Context, string) ([]string, error) { return []string{rec}, nil }
			if got := CheckPublished(context.Background(), lookup, k); got.State != Published {
				t.Errorf("opendkim-genkey record %q: %s %s", rec, got.State, got.Detail)
			}
		})
	}
	// The whole folder loads as a key table.
	tab, err := LoadDir(keyDir)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(tab.Keys("example.com")); n != len(tests) {
		t.Errorf("table has %d keys, want %d", n, len(tests))
	}
}
