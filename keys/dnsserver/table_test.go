package dnsserver

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/authmilter/authmilter/keys"
)

// tkey is a key of a test table: kind "ed" (a new Ed25519 key) or "rsa"
// (the RSA-2048 key of testdata).
type tkey struct {
	domain, selector, kind string
	created                time.Time
	testing                bool
}

// tretired is a retired key in a test table's state file.
type tretired struct {
	domain, selector string
	alg              keys.Algorithm
	retired          time.Time
}

// rsaPEM is the RSA-2048 key of testdata.
func rsaPEM(t testing.TB) []byte {
	t.Helper()
	data, err := os.ReadFile("../../testdata/keys/rsa2048-pkcs8.pem")
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// edPEM returns a new Ed25519 key in PKCS#8 PEM.
func edPEM(t testing.TB) []byte {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// writeTable writes keys and state files into the key folder dir.
func writeTable(t testing.TB, dir string, ks []tkey, rs []tretired) {
	t.Helper()
	states := map[string]*keys.DomainState{}
	state := func(d string) *keys.DomainState {
		if s, ok := states[d]; ok {
			return s
		}
		ddir := filepath.Join(dir, d)
		if err := os.MkdirAll(ddir, 0o700); err != nil {
			t.Fatal(err)
		}
		s, err := keys.LoadState(ddir)
		if err != nil {
			t.Fatal(err)
		}
		states[d] = s
		return s
	}
	for _, k := range ks {
		s := state(k.domain)
		data := rsaPEM(t)
		alg := keys.RSASHA256
		if k.kind == "ed" {
			data, alg = edPEM(t), keys.Ed25519SHA256
		}
		if err := os.WriteFile(filepath.Join(dir, k.domain, k.selector+".pem"), data, 0o600); err != nil {
			t.Fatal(err)
		}
		if !k.created.IsZero() {
			ks := s.NewKey(k.selector, alg, k.created)
			ks.Testing = k.testing
		}
	}
	for _, r := range rs {
		ks := state(r.domain).Key(r.selector)
		ks.Algorithm, ks.Retired = r.alg, r.retired
	}
	for d, s := range states {
		if err := s.Save(filepath.Join(dir, d)); err != nil {
			t.Fatal(err)
		}
	}
}

// loadTable reads the key folder dir.
func loadTable(t testing.TB, dir string) *keys.Table {
	t.Helper()
	tab, err := keys.LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	return tab
}

// removeKey removes a key file by hand (no state change).
func removeKey(t testing.TB, dir, domain, selector string) {
	t.Helper()
	if err := os.Remove(filepath.Join(dir, domain, selector+".pem")); err != nil {
		t.Fatal(err)
	}
}
