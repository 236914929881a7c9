package dnsserver

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/authmilter/authmilter/keys"
)

func TestRecordValueIsFormatRecord(t *testing.T) {
	dir := t.TempDir()
	var ks []tkey
	for _, testing := range []bool{false, true} {
		ks = append(ks, tkey{domain: fmt.Sprintf("t%v.example", testing), selector: "ed", kind: "ed", created: day(11, 1), testing: testing},
			tkey{domain: fmt.Sprintf("t%v.example", testing), selector: "rsa", kind: "rsa", created: day(11, 1), testing: testing})
	}
	writeTable(t, dir, ks, nil)
	// RSA keys of other sizes and exponents: the length encodings of DER
	// differ, and an exponent with its top bit set needs a zero byte.
	for _, c := range []struct {
		bits, e int
	}{{1024, 65537}, {1024, 3}, {1536, 65537}, {3072, 65537}, {1024, 0x80000001}} {
		k, err := rsa.GenerateKey(rand.Reader, c.bits)
		if err != nil {
			t.Fatal(err)
		}
		if c.e != 65537 {
			// Such a key would not load (Go refuses small and odd
			// exponents): compare the encodings of the public half.
			pub := &rsa.PublicKey{N: k.N, E: c.e}
			want, err := x509.MarshalPKIXPublicKey(pub)
			if err != nil {
				t.Fatal(err)
			}
			if got := rsaSPKI(pub); string(got) != string(want) {
				t.Errorf("RSA-%d e=%d: SPKI differs", c.bits, c.e)
			}
			continue
		}
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		d := filepath.Join(dir, fmt.Sprintf("rsa%d.example", c.bits))
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "s.pem"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tab := loadTable(t, dir)
	n := 0
	for _, k := range tab.All() {
		if got, want := recordValue(k), keys.FormatRecord(k); got != want {
			t.Errorf("%s: %q, want %q", k.ID(), got, want)
		}
		n++
	}
	if n != 7 {
		t.Fatalf("%d keys compared", n)
	}
}
