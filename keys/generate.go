package keys

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// DateSelector returns the default selector for a key made at t: "YYYY-MM",
// with "e" appended for Ed25519 so RSA and Ed25519 keys of one month can sit
// side by side, then the configured suffix (e.g. ".myesp"). Selectors made
// this way sort by time, which is what picks the active key.
func DateSelector(t time.Time, algo, suffix string) string {
	s := t.UTC().Format("2006-01")
	if algo == "ed25519" {
		s += "e"
	}
	return s + suffix
}

// Generate makes a new key and writes it as <dir>/<domain>/<selector>.pem
// (PKCS#8, mode 0600). It refuses to overwrite an existing key.
func Generate(dir, domain, selector, algo string) (*Key, error) {
	domain = strings.ToLower(strings.TrimSuffix(domain, "."))
	if !ValidDomain(domain) {
		return nil, fmt.Errorf("keys: %q is not a domain name (use the A-label form for IDNs)", domain)
	}
	if !ValidSelector(selector) {
		return nil, fmt.Errorf("keys: %q is not a valid selector", selector)
	}
	var signer crypto.Signer
	var err error
	switch algo {
	case "rsa-2048", "rsa":
		signer, err = rsa.GenerateKey(rand.Reader, 2048)
	case "rsa-3072":
		signer, err = rsa.GenerateKey(rand.Reader, 3072)
	case "rsa-4096":
		signer, err = rsa.GenerateKey(rand.Reader, 4096)
	case "ed25519":
		_, signer, err = ed25519.GenerateKey(rand.Reader)
	default:
		return nil, fmt.Errorf("keys: unknown algorithm %q (rsa-2048, rsa-3072, rsa-4096, ed25519)", algo)
	}
	if err != nil {
		return nil, fmt.Errorf("keys: generate %s: %w", algo, err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(signer)
	if err != nil {
		return nil, fmt.Errorf("keys: encode: %w", err)
	}
	ddir := filepath.Join(dir, domain)
	if err := os.MkdirAll(ddir, 0o700); err != nil {
		return nil, fmt.Errorf("keys: %w", err)
	}
	path := filepath.Join(ddir, selector+".pem")
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("keys: %s already exists; choose another selector", path)
	}
	if err != nil {
		return nil, fmt.Errorf("keys: %w", err)
	}
	if err := pem.Encode(f, &pem.Block{Type: "PRIVATE KEY", Bytes: der}); err != nil {
		f.Close()
		os.Remove(path)
		return nil, fmt.Errorf("keys: write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("keys: write %s: %w", path, err)
	}
	return LoadKey(path, domain, selector)
}

// ZoneRecord formats k's record for a zone file, the TXT data split into
// quoted strings of at most 255 bytes (RFC 1035 §3.3.14), e.g.
//
//	2026-11._domainkey.example.com. IN TXT ( "v=DKIM1; k=rsa; p=MIIB..." "..." )
func ZoneRecord(k *Key) string {
	value := FormatRecord(k)
	var b strings.Builder
	fmt.Fprintf(&b, "%s.\tIN\tTXT\t(", RecordName(k.Domain, k.Selector))
	for len(value) > 0 {
		n := min(len(value), 255)
		fmt.Fprintf(&b, " %q", value[:n])
		value = value[n:]
	}
	b.WriteString(" )\n")
	return b.String()
}
