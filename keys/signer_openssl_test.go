//go:build cgo && !purego && !nolibcrypto

package keys

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"fmt"
	"math/big"
	"strings"
	"sync"
	"testing"
)

// openSSLSigners loads each test key into libcrypto.
func openSSLSigners(tb testing.TB, ks []*rsa.PrivateKey) []*opensslRSA {
	tb.Helper()
	var out []*opensslRSA
	for _, k := range ks {
		s, err := newRSASigner(k)
		if err != nil {
			tb.Fatalf("%d bits: %v", k.N.BitLen(), err)
		}
		o, ok := s.(*opensslRSA)
		if !ok {
			tb.Fatalf("cgo build: signer is %T, want *opensslRSA", s)
		}
		out = append(out, o)
	}
	return out
}

// sameSignature signs digest with both signers and fails unless the
// signatures are byte for byte the same and crypto/rsa verifies them.
func sameSignature(t testing.TB, goKey *rsa.PrivateKey, lib crypto.Signer, digest []byte) {
	t.Helper()
	want, err := goKey.Sign(rand.Reader, digest, crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	got, err := lib.Sign(rand.Reader, digest, crypto.SHA256)
	if err != nil {
		t.Fatalf("%d bits: libcrypto: %v", goKey.N.BitLen(), err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%d bits, digest %x: libcrypto's signature differs from crypto/rsa's", goKey.N.BitLen(), digest)
	}
	if err := rsa.VerifyPKCS1v15(&goKey.PublicKey, crypto.SHA256, digest, got); err != nil {
		t.Fatalf("%d bits: crypto/rsa does not verify libcrypto's signature: %v", goKey.N.BitLen(), err)
	}
}

// TestOpenSSLSignerMatchesGo: PKCS#1 v1.5 is deterministic, so both
// signers make the same bytes, for every key size we load.
func TestOpenSSLSignerMatchesGo(t *testing.T) {
	ks := signerTestKeys(t)
	libs := openSSLSigners(t, ks)
	digests := [][]byte{make([]byte, 32), bytes.Repeat([]byte{0xff}, 32)}
	for i := range 8 {
		d := sha256.Sum256([]byte(fmt.Sprint("message ", i)))
		digests = append(digests, d[:])
	}
	for i, k := range ks {
		t.Run(fmt.Sprint(k.N.BitLen()), func(t *testing.T) {
			if libs[i].Public().(*rsa.PublicKey).N.Cmp(k.N) != 0 {
				t.Fatal("Public is not the key's")
			}
			for _, d := range digests {
				sameSignature(t, k, libs[i], d)
			}
		})
	}
}

// TestOpenSSLSignerFromTable: a key of the table (parsed from its compact
// form by SignerCache) signs through libcrypto, as the file's key would.
func TestOpenSSLSignerFromTable(t *testing.T) {
	dir := t.TempDir()
	path := installKey(t, dir, "example.com", "s", "rsa2048-pkcs1.pem", 0o600)
	k, err := loadTableKey(path, "example.com", "s", true, NewSignerCache(0))
	if err != nil {
		t.Fatal(err)
	}
	s, err := k.PrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := s.(*opensslRSA); !ok {
		t.Fatalf("table key's signer is %T, want the libcrypto signer", s)
	}
	want, err := LoadKey(path, "example.com", "s")
	if err != nil {
		t.Fatal(err)
	}
	d := sha256.Sum256([]byte("authmilter"))
	sameSignature(t, want.m.signer.(*rsa.PrivateKey), s, d[:])
}

// TestOpenSSLSignerConcurrent: one key signs from many goroutines at once
// (the daemon's transactions share the cached signer); run with -race.
func TestOpenSSLSignerConcurrent(t *testing.T) {
	k := signerTestKeys(t)[1]
	lib := openSSLSigners(t, []*rsa.PrivateKey{k})[0]
	d := sha256.Sum256([]byte("concurrent"))
	want, err := k.Sign(rand.Reader, d[:], crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			for range 50 {
				got, err := lib.Sign(rand.Reader, d[:], crypto.SHA256)
				if err == nil && !bytes.Equal(got, want) {
					err = fmt.Errorf("signature differs")
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestOpenSSLSignerErrors: a digest libcrypto cannot sign is an error with
// OpenSSL's reason, for that signature alone; the signer still works.
func TestOpenSSLSignerErrors(t *testing.T) {
	k := signerTestKeys(t)[0]
	lib := openSSLSigners(t, []*rsa.PrivateKey{k})[0]
	for _, tc := range []struct {
		name   string
		digest []byte
		want   string
	}{
		{"empty", nil, "empty digest"},
		{"short", make([]byte, 20), "libcrypto: sign: error:"},
		{"long", make([]byte, 64), "libcrypto: sign: error:"},
		{"huge", make([]byte, 1<<20), "libcrypto: sign: error:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sig, err := lib.Sign(rand.Reader, tc.digest, crypto.SHA256)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Sign = %x, %v; want an error with %q", sig, err, tc.want)
			}
			t.Log(err)
		})
	}
	d := sha256.Sum256(nil)
	sameSignature(t, k, lib, d[:])
}

// TestOpenSSLSignerOtherOptions: what libcrypto does not sign here (other
// hashes, PSS, Hash(0)) is signed by crypto/rsa, as before.
func TestOpenSSLSignerOtherOptions(t *testing.T) {
	k := signerTestKeys(t)[1]
	lib := openSSLSigners(t, []*rsa.PrivateKey{k})[0]
	d512 := sha512.Sum512([]byte("x"))
	for _, opts := range []crypto.SignerOpts{crypto.SHA512, crypto.Hash(0)} {
		want, err := k.Sign(rand.Reader, d512[:], opts)
		if err != nil {
			t.Fatal(err)
		}
		got, err := lib.Sign(rand.Reader, d512[:], opts)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("opts %v: %x, %v; want crypto/rsa's signature", opts, got, err)
		}
	}
	d := sha256.Sum256([]byte("pss"))
	pss := &rsa.PSSOptions{Hash: crypto.SHA256}
	sig, err := lib.Sign(rand.Reader, d[:], pss)
	if err != nil {
		t.Fatal(err)
	}
	if err := rsa.VerifyPSS(&k.PublicKey, crypto.SHA256, d[:], sig, pss); err != nil {
		t.Errorf("PSS: %v", err)
	}
}

// TestOpenSSLSignerRefusesBadKey: a key whose libcrypto signature crypto/rsa
// does not verify is refused when it is loaded, with the reason.
func TestOpenSSLSignerRefusesBadKey(t *testing.T) {
	k := signerTestKeys(t)[0]
	bad := *k
	bad.D = new(big.Int).Add(k.D, big.NewInt(2))
	bad.Precomputed.Dp = new(big.Int).Add(k.Precomputed.Dp, big.NewInt(2))
	bad.Precomputed.Dq = new(big.Int).Add(k.Precomputed.Dq, big.NewInt(2))
	s, err := newRSASigner(&bad)
	if err == nil || !strings.Contains(err.Error(), "libcrypto refused the key") {
		t.Fatalf("newRSASigner = %T, %v; want a refusal", s, err)
	}
	t.Log(err)

	three := *k
	three.Primes = append([]*big.Int{}, k.Primes...)
	three.Primes = append(three.Primes, big.NewInt(7))
	if _, err := newRSASigner(&three); err == nil {
		t.Fatal("a three-prime key was accepted")
	}
}

// TestOpenSSLSignerClose: Close frees libcrypto's key; a transaction that
// still holds the signer gets the same signature (from crypto/rsa).
func TestOpenSSLSignerClose(t *testing.T) {
	k := signerTestKeys(t)[0]
	lib := openSSLSigners(t, []*rsa.PrivateKey{k})[0]
	d := sha256.Sum256([]byte("close"))
	sameSignature(t, k, lib, d[:])
	lib.Close()
	lib.Close()
	if lib.lib != nil {
		t.Fatal("Close kept the libcrypto key")
	}
	sameSignature(t, k, lib, d[:])
}

// TestSignerCacheClosesEvicted: a key evicted from the cache (by use of
// others, or by Resize) has its libcrypto copy freed.
func TestSignerCacheClosesEvicted(t *testing.T) {
	dir := t.TempDir()
	cache := NewSignerCache(2)
	var signers []*opensslRSA
	for i, f := range []string{"rsa2048-pkcs1.pem", "rsa2048-pkcs8.pem", "rsa1024-pkcs1.pem"} {
		sel := fmt.Sprint("s", i)
		k, err := loadTableKey(installKey(t, dir, "example.com", sel, f, 0o600), "example.com", sel, true, cache)
		if err != nil {
			t.Fatal(err)
		}
		s, err := k.PrivateKey()
		if err != nil {
			t.Fatal(err)
		}
		signers = append(signers, s.(*opensslRSA))
	}
	if signers[0].lib != nil || signers[1].lib == nil || signers[2].lib == nil {
		t.Fatalf("after 3 keys in a cache of 2: freed = %v %v %v, want only the first",
			signers[0].lib == nil, signers[1].lib == nil, signers[2].lib == nil)
	}
	cache.Resize(1)
	if signers[1].lib != nil || signers[2].lib == nil {
		t.Fatal("Resize(1) did not free exactly the least recently used key")
	}
}

// TestSignerImplementation names libcrypto and its version.
func TestSignerImplementation(t *testing.T) {
	if s := SignerImplementation(); !strings.HasPrefix(s, "openssl libcrypto 3.") {
		t.Errorf("SignerImplementation() = %q", s)
	}
}

// FuzzOpenSSLSigner: for any 32-byte digest and any of the test keys,
// libcrypto and crypto/rsa make the same signature, byte for byte.
func FuzzOpenSSLSigner(f *testing.F) {
	ks := signerTestKeys(f)
	libs := openSSLSigners(f, ks)
	for i := range ks {
		f.Add(make([]byte, 32), uint8(i))
		f.Add(bytes.Repeat([]byte{0xff}, 32), uint8(i))
	}
	f.Fuzz(func(t *testing.T, in []byte, key uint8) {
		var digest [32]byte
		copy(digest[:], in)
		i := int(key) % len(ks)
		sameSignature(t, ks[i], libs[i], digest[:])
	})
}
