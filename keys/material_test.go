package keys

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// signWith signs a fixed digest: PKCS#1 v1.5 and Ed25519 are
// deterministic, so two equal keys give equal signatures.
func signWith(t *testing.T, s crypto.Signer) []byte {
	t.Helper()
	digest := sha256.Sum256([]byte("authmilter"))
	var sig []byte
	var err error
	if _, ok := s.Public().(*rsa.PublicKey); ok { // crypto/rsa's key or libcrypto's signer
		sig, err = s.Sign(rand.Reader, digest[:], crypto.SHA256)
	} else {
		sig, err = s.Sign(rand.Reader, digest[:], crypto.Hash(0))
	}
	if err != nil {
		t.Fatal(err)
	}
	return sig
}

// writeKeyPEM writes a PEM block as dir/domain/sel.pem.
func writeKeyPEM(t *testing.T, dir, domain, sel, typ string, der []byte) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(dir, domain), 0o700); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, domain, sel+".pem")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestMaterialSignsLikeTheFile: the compact form gives the same public
// key and byte-identical signatures as the key parsed by crypto/x509, for
// every encoding and size we load.
func TestMaterialSignsLikeTheFile(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{}
	for _, f := range []string{"rsa2048-pkcs1.pem", "rsa2048-pkcs8.pem", "rsa2048-pkcs1-opendkim.pem", "rsa1024-pkcs1.pem", "ed25519-pkcs8.pem"} {
		files[f] = installKey(t, dir, "example.com", strings.TrimSuffix(f, ".pem"), f, 0o600)
	}
	k3072, err := rsa.GenerateKey(rand.Reader, 3072)
	if err != nil {
		t.Fatal(err)
	}
	files["rsa3072"] = writeKeyPEM(t, dir, "example.com", "rsa3072", "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(k3072))
	cache := NewSignerCache(0)
	for name, path := range files {
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			want, err := ParsePrivateKey(data)
			if err != nil {
				t.Fatal(err)
			}
			k, err := loadTableKey(path, "example.com", "s", true, cache)
			if err != nil {
				t.Fatal(err)
			}
			if k.PublicKeyData() != PublicKeyData(want.Public()) {
				t.Errorf("public key differs from crypto/x509's")
			}
			got, err := k.PrivateKey()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(signWith(t, got), signWith(t, want)) {
				t.Errorf("signature differs from the one made with crypto/x509's key")
			}
		})
	}
}

// TestMaterialHostile: every malformed key is refused at load, with a
// clear error, never at first use.
func TestMaterialHostile(t *testing.T) {
	good, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	pkcs1 := x509.MarshalPKCS1PrivateKey(good)
	badPrimes := *good
	badPrimes.Primes = []*big.Int{good.Primes[0], new(big.Int).Add(good.Primes[1], big.NewInt(2))}
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecDER, _ := x509.MarshalPKCS8PrivateKey(ec)
	threePrime, _ := asn1.Marshal(struct {
		Version int
		N, E    *big.Int
	}{1, good.N, big.NewInt(65537)})
	evenE := *good
	evenE.E = 65536
	edDER, _ := os.ReadFile(filepath.Join("..", "testdata", "keys", "ed25519-pkcs8.pem"))
	edBlock, _ := pem.Decode(edDER)
	tests := []struct {
		name, typ string
		der       []byte
		want      string
	}{
		{"truncated", "RSA PRIVATE KEY", pkcs1[:len(pkcs1)/2], "malformed RSA private key"},
		{"trailing", "RSA PRIVATE KEY", append(append([]byte(nil), pkcs1...), 0), "malformed RSA private key"},
		{"primes", "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(&badPrimes), "do not multiply"},
		{"three primes", "RSA PRIVATE KEY", threePrime, "more than two primes"},
		{"even e", "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(&evenE), "public exponent"},
		{"ecdsa", "PRIVATE KEY", ecDER, "unsupported key type"},
		{"ed25519 truncated", "PRIVATE KEY", edBlock.Bytes[:len(edBlock.Bytes)-1], "malformed"},
		{"encrypted", "ENCRYPTED PRIVATE KEY", []byte{0x30, 0}, "encrypted private keys are not supported"},
		{"certificate", "CERTIFICATE", []byte{0x30, 0}, "is not a private key"},
		{"empty", "PRIVATE KEY", nil, "malformed PKCS#8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			p := writeKeyPEM(t, dir, "example.com", "s", tt.typ, tt.der)
			_, err := loadTableKey(p, "example.com", "s", true, NewSignerCache(0))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error = %v, want %q", err, tt.want)
			}
			if !strings.Contains(err.Error(), "example.com/s") {
				t.Errorf("error %q does not name the key", err)
			}
		})
	}
}

// TestMaterialCRTFromPrimes: the key is rebuilt from n, e, p and q, so
// wrong CRT values in the file change nothing (the signature is the
// correct key's); and what only building finds (e not invertible modulo
// λ(n), which the structural checks at load do not see) fails at first
// use, as a clear error for that key alone.
func TestMaterialCRTFromPrimes(t *testing.T) {
	good, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	bad := *good
	bad.Precomputed.Dp = new(big.Int).Add(good.Precomputed.Dp, big.NewInt(2))
	dir := t.TempDir()
	k, err := loadTableKey(writeKeyPEM(t, dir, "example.com", "crt", "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(&bad)), "example.com", "crt", true, NewSignerCache(0))
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	s, err := k.PrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(signWith(t, s), signWith(t, good)) {
		t.Errorf("wrong CRT values in the file changed the signature")
	}

	// e = 3 with 3 | p-1: p·q = n holds, d does not exist.
	var p, q *big.Int
	for p == nil || new(big.Int).Mod(p, big.NewInt(3)).Int64() != 1 {
		if p, err = rand.Prime(rand.Reader, 512); err != nil {
			t.Fatal(err)
		}
	}
	if q, err = rand.Prime(rand.Reader, 512); err != nil {
		t.Fatal(err)
	}
	n := new(big.Int).Mul(p, q)
	one := big.NewInt(1)
	der, err := asn1.Marshal(struct {
		Version                     int
		N, E, D, P, Q, Dp, Dq, Qinv *big.Int
	}{0, n, big.NewInt(3), one, p, q, one, one, one})
	if err != nil {
		t.Fatal(err)
	}
	k, err = loadTableKey(writeKeyPEM(t, dir, "example.com", "noinv", "RSA PRIVATE KEY", der), "example.com", "noinv", true, NewSignerCache(0))
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	if _, err := k.PrivateKey(); err == nil || !strings.Contains(err.Error(), "invalid RSA key") || !strings.Contains(err.Error(), "example.com/noinv") {
		t.Fatalf("first use: error %v, want an invalid RSA key error naming the key", err)
	}
}

// TestSignerCacheBounded: the cache never holds more than its size, and a
// key evicted from it signs the same after being parsed again.
func TestSignerCacheBounded(t *testing.T) {
	dir := t.TempDir()
	installKey(t, dir, "a.example", "s", "rsa2048-pkcs1.pem", 0o600)
	installKey(t, dir, "b.example", "s", "rsa1024-pkcs1.pem", 0o600)
	installKey(t, dir, "c.example", "s", "ed25519-pkcs8.pem", 0o600)
	tab, err := Load(dir, LoadOptions{CacheSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	if n := tab.Cache().Len(); n != 0 {
		t.Fatalf("cache holds %d keys after load, want 0 (parsed on first use)", n)
	}
	first := map[string][]byte{}
	for round := range 3 {
		for _, k := range tab.All() {
			s, err := k.PrivateKey()
			if err != nil {
				t.Fatal(err)
			}
			sig := signWith(t, s)
			if round == 0 {
				first[k.ID()] = sig
			} else if !bytes.Equal(sig, first[k.ID()]) {
				t.Errorf("%s signs differently after eviction", k.ID())
			}
			if n := tab.Cache().Len(); n > 2 {
				t.Fatalf("cache holds %d keys, size is 2", n)
			}
		}
	}
}

// TestLoadIncremental: a reload takes unchanged keys over as they are
// (same *Key, so the old snapshot's publication state applies), reads a
// changed file again, keeps the parsed key of a file whose content did not
// change, applies a changed state file to copies (the old table keeps
// its values), and signs with a key whose file was deleted after loading.
func TestLoadIncremental(t *testing.T) {
	dir := t.TempDir()
	installKey(t, dir, "a.example", "s1", "rsa2048-pkcs1.pem", 0o600)
	installKey(t, dir, "b.example", "s1", "rsa2048-pkcs8.pem", 0o600)
	pc := installKey(t, dir, "c.example", "s1", "ed25519-pkcs8.pem", 0o600)
	pd := installKey(t, dir, "d.example", "s1", "rsa1024-pkcs1.pem", 0o600)
	t1, err := LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	key := func(tab *Table, d string) *Key { return tab.Keys(d)[0] }
	if _, err := key(t1, "d.example").PrivateKey(); err != nil {
		t.Fatal(err)
	}
	// Nothing changed: the previous table itself.
	if same, err := Load(dir, LoadOptions{Prev: t1}); err != nil || same != t1 {
		t.Fatalf("reload with nothing changed: %v, same table %v", err, same == t1)
	}

	// b: another key under the same name; c: same content, new mtime;
	// d: state file added (a creation time).
	installKey(t, dir, "b.example", "s1", "rsa1024-pkcs1.pem", 0o600)
	later := time.Now().Add(time.Hour)
	if err := os.Chtimes(pc, later, later); err != nil {
		t.Fatal(err)
	}
	created := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	st := &DomainState{Keys: map[string]*KeyState{"s1": {Created: created, Testing: true}}}
	if err := st.Save(filepath.Join(dir, "d.example")); err != nil {
		t.Fatal(err)
	}
	t2, err := Load(dir, LoadOptions{Prev: t1})
	if err != nil {
		t.Fatal(err)
	}
	if key(t2, "a.example") != key(t1, "a.example") {
		t.Errorf("unchanged key was read again")
	}
	if key(t2, "b.example") == key(t1, "b.example") || key(t2, "b.example").Bits != 1024 {
		t.Errorf("replaced key file not read again: %d bits", key(t2, "b.example").Bits)
	}
	if c1, c2 := key(t1, "c.example"), key(t2, "c.example"); c1.m != c2.m || !c2.ModTime.Equal(later.Truncate(time.Nanosecond)) && c2.ModTime.Unix() != later.Unix() {
		t.Errorf("touched key: material shared = %v, mtime %v", c1.m == c2.m, c2.ModTime)
	}
	d1, d2 := key(t1, "d.example"), key(t2, "d.example")
	if d1 == d2 || !d2.Created.Equal(created) || !d2.Testing {
		t.Errorf("state not applied: created %v testing %v", d2.Created, d2.Testing)
	}
	if d1.Created.Equal(created) || d1.Testing {
		t.Errorf("the previous table's key was changed")
	}
	if t2.Cache() != t1.Cache() || t2.Cache().Len() != 1 {
		t.Errorf("parsed keys not kept across the reload (cache len %d)", t2.Cache().Len())
	}

	// Deleted after loading: still signs (nothing is read again), until a
	// reload, which no longer lists it.
	if err := os.Remove(pd); err != nil {
		t.Fatal(err)
	}
	t2.Cache().Resize(1)
	if _, err := key(t2, "c.example").PrivateKey(); err != nil {
		t.Fatal(err)
	}
	if _, err := d2.PrivateKey(); err != nil {
		t.Errorf("key deleted after loading: %v", err)
	}
	t3, err := Load(dir, LoadOptions{Prev: t2})
	if err != nil {
		t.Fatal(err)
	}
	if len(t3.Keys("d.example")) != 0 {
		t.Errorf("deleted key still loaded")
	}
	// A file that became broken fails the reload.
	if err := os.WriteFile(filepath.Join(dir, "a.example", "s1.pem"), []byte("-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(dir, LoadOptions{Prev: t3}); err == nil || !strings.Contains(err.Error(), "a.example/s1") {
		t.Errorf("broken key: error %v", err)
	}
}

// TestIndex: a table loaded through its index reads no unchanged key file
// (Load returns the index's table itself), its keys sign as the files do,
// a file changed since is read again, a key file removed after the start
// fails at that key's first use only, and a damaged index is an error.
func TestIndex(t *testing.T) {
	dir := t.TempDir()
	installKey(t, dir, "a.example", "s1", "rsa2048-pkcs1.pem", 0o600)
	installKey(t, dir, "b.example", "s1", "ed25519-pkcs8.pem", 0o600)
	pc := installKey(t, dir, "c.example", "s1", "rsa1024-pkcs1.pem", 0o600)
	os.WriteFile(filepath.Join(dir, "c.example", "README"), []byte("x"), 0o600)
	full, err := LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := full.SaveIndex(IndexPath(dir)); err != nil {
		t.Fatal(err)
	}
	if idx, err := LoadIndex(IndexPath(dir), "/elsewhere", 0); err == nil || idx != nil {
		t.Errorf("index of another folder: %v", err)
	}
	idx, err := LoadIndex(IndexPath(dir), dir, 0)
	if err != nil || idx == nil {
		t.Fatalf("LoadIndex: %v", err)
	}
	tab, err := Load(dir, LoadOptions{Prev: idx})
	if err != nil {
		t.Fatal(err)
	}
	if tab != idx || len(tab.All()) != 3 || len(tab.Ignored()) != 1 || strings.Join(tab.Domains(), ",") != "a.example,b.example,c.example" {
		t.Fatalf("unchanged table through the index: same %v, %d keys, ignored %q, domains %q", tab == idx, len(tab.All()), tab.Ignored(), tab.Domains())
	}
	for i, k := range tab.All() {
		want := full.All()[i]
		if k.Fingerprint() != want.Fingerprint() || k.Algorithm != want.Algorithm || k.Bits != want.Bits || !k.Created.Equal(want.Created) {
			t.Errorf("%s from the index differs from the file", k.ID())
		}
		s, err := k.PrivateKey()
		if err != nil {
			t.Fatal(err)
		}
		ws, _ := want.PrivateKey()
		if !bytes.Equal(signWith(t, s), signWith(t, ws)) || k.PublicKeyData() != want.PublicKeyData() {
			t.Errorf("%s from the index signs differently", k.ID())
		}
	}

	// Changed since the index: read again.
	installKey(t, dir, "a.example", "s1", "rsa2048-pkcs8.pem", 0o600)
	idx, _ = LoadIndex(IndexPath(dir), dir, 0)
	tab, err = Load(dir, LoadOptions{Prev: idx})
	if err != nil {
		t.Fatal(err)
	}
	if tab == idx || tab.Keys("a.example")[0].Fingerprint() == full.Keys("a.example")[0].Fingerprint() {
		t.Errorf("a key file changed since the index was not read again")
	}
	// Removed after the start, before its first use: that key fails alone.
	c := tab.Keys("c.example")[0]
	if err := os.Remove(pc); err != nil {
		t.Fatal(err)
	}
	if _, err := c.PrivateKey(); err == nil || !strings.Contains(err.Error(), "c.example/s1") {
		t.Errorf("indexed key whose file is gone: error %v", err)
	}
	if c.Public() != nil {
		t.Errorf("indexed key whose file is gone has a public key")
	}
	// Damaged: an error, and the caller reads every file.
	if err := os.WriteFile(IndexPath(dir), []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if idx, err := LoadIndex(IndexPath(dir), dir, 0); err == nil || idx != nil {
		t.Errorf("damaged index: %v", err)
	}
}

// TestLoadLeavesPrevUnchanged: a Load that takes a touched key's material
// over from Prev must not change Prev (tables are immutable): a reload
// whose table the daemon did not adopt, followed by another from the same
// Prev, still sees the touch.
func TestLoadLeavesPrevUnchanged(t *testing.T) {
	dir := t.TempDir()
	p := installKey(t, dir, "a.example", "s1", "rsa2048-pkcs1.pem", 0o600)
	t1, err := LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	before := t1.Keys("a.example")[0].ModTime
	later := before.Add(time.Hour)
	if err := os.Chtimes(p, later, later); err != nil {
		t.Fatal(err)
	}
	for i := range 2 { // the first table is not adopted
		t2, err := Load(dir, LoadOptions{Prev: t1})
		if err != nil {
			t.Fatal(err)
		}
		if t2 == t1 || !t2.Keys("a.example")[0].ModTime.Equal(later) {
			t.Fatalf("load %d from the same previous table: same table %v, mtime %v, want %v", i+1, t2 == t1, t2.Keys("a.example")[0].ModTime, later)
		}
		if !t1.Keys("a.example")[0].ModTime.Equal(before) {
			t.Fatalf("the previous table changed")
		}
	}
}
