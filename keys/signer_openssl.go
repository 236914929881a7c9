//go:build cgo && !purego && !nolibcrypto

package keys

/*
#cgo pkg-config: libcrypto
#include <stdlib.h>
#include <string.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/opensslv.h>
#include <openssl/param_build.h>
#include <openssl/rsa.h>

#if OPENSSL_VERSION_MAJOR < 3
#error "authmilter's libcrypto signer needs OpenSSL 3 (Debian: libssl-dev); build with -tags nolibcrypto for the Go signer"
#endif

// am_errstr writes the reason of the last error in this thread's queue
// (or fallback) to buf and clears the queue. It runs in the same C call
// as the failing function: the queue is per thread and a goroutine may
// move to another thread between two cgo calls.
static void am_errstr(char *buf, size_t len, const char *fallback) {
	unsigned long e = ERR_peek_last_error();
	if (e == 0) {
		snprintf(buf, len, "%s", fallback);
	} else {
		char reason[256];
		ERR_error_string_n(e, reason, sizeof reason);
		snprintf(buf, len, "%s: %s", fallback, reason);
	}
	ERR_clear_error();
}

// am_rsa_load builds an RSA key pair from its eight PKCS#1 integers
// (big-endian) and returns it, or NULL with the reason in err.
static EVP_PKEY *am_rsa_load(const unsigned char **v, const int *vlen, char *err, size_t errlen) {
	static const char *names[8] = {
		OSSL_PKEY_PARAM_RSA_N, OSSL_PKEY_PARAM_RSA_E, OSSL_PKEY_PARAM_RSA_D,
		OSSL_PKEY_PARAM_RSA_FACTOR1, OSSL_PKEY_PARAM_RSA_FACTOR2,
		OSSL_PKEY_PARAM_RSA_EXPONENT1, OSSL_PKEY_PARAM_RSA_EXPONENT2,
		OSSL_PKEY_PARAM_RSA_COEFFICIENT1,
	};
	BIGNUM *bn[8] = {0};
	OSSL_PARAM_BLD *bld = NULL;
	OSSL_PARAM *params = NULL;
	EVP_PKEY_CTX *ctx = NULL;
	EVP_PKEY *pkey = NULL;
	const char *step = "build the key parameters";
	int i;

	ERR_clear_error();
	bld = OSSL_PARAM_BLD_new();
	if (bld == NULL) goto done;
	for (i = 0; i < 8; i++) {
		bn[i] = BN_bin2bn(v[i], vlen[i], NULL);
		if (bn[i] == NULL || !OSSL_PARAM_BLD_push_BN(bld, names[i], bn[i])) goto done;
	}
	params = OSSL_PARAM_BLD_to_param(bld);
	if (params == NULL) goto done;
	step = "load the key";
	ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
	if (ctx == NULL || EVP_PKEY_fromdata_init(ctx) <= 0 ||
	    EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_KEYPAIR, params) <= 0) {
		EVP_PKEY_free(pkey);
		pkey = NULL;
	}
done:
	if (pkey == NULL) am_errstr(err, errlen, step);
	EVP_PKEY_CTX_free(ctx);
	OSSL_PARAM_free(params);
	OSSL_PARAM_BLD_free(bld);
	for (i = 0; i < 8; i++) BN_clear_free(bn[i]);
	return pkey;
}

// am_rsa_prepare returns a context ready to sign SHA-256 digests with
// PKCS#1 v1.5 padding: each signature uses a copy of it, which is
// cheaper than preparing a new one.
static EVP_PKEY_CTX *am_rsa_prepare(EVP_PKEY *pkey, char *err, size_t errlen) {
	EVP_PKEY_CTX *ctx;

	ERR_clear_error();
	ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
	if (ctx == NULL || EVP_PKEY_sign_init(ctx) <= 0 ||
	    EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING) <= 0 ||
	    EVP_PKEY_CTX_set_signature_md(ctx, EVP_sha256()) <= 0) {
		am_errstr(err, errlen, "prepare the signing context");
		EVP_PKEY_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

// am_rsa_sign signs the SHA-256 digest with a copy of the prepared
// context; sig has room for siglen bytes, and siglen becomes the
// signature's length. It returns 1, or 0 with the reason in err.
static int am_rsa_sign(EVP_PKEY_CTX *prepared, const unsigned char *digest, size_t dlen,
                       unsigned char *sig, size_t *siglen, char *err, size_t errlen) {
	EVP_PKEY_CTX *ctx;
	int ok;

	ERR_clear_error();
	ctx = EVP_PKEY_CTX_dup(prepared);
	if (ctx == NULL) {
		am_errstr(err, errlen, "copy the signing context");
		return 0;
	}
	ok = EVP_PKEY_sign(ctx, sig, siglen, digest, dlen) > 0;
	if (!ok) am_errstr(err, errlen, "sign");
	EVP_PKEY_CTX_free(ctx);
	return ok;
}

static void am_rsa_free(EVP_PKEY_CTX *ctx, EVP_PKEY *pkey) {
	EVP_PKEY_CTX_free(ctx);
	EVP_PKEY_free(pkey);
}
*/
import "C"

import (
	"crypto"
	"crypto/rsa"
	"errors"
	"fmt"
	"io"
	"math/big"
	"runtime"
	"sync"
	"unsafe"
)

// errBufLen is the size of the buffer OpenSSL's error strings are written to.
const errBufLen = 320

// SignerImplementation names the RSA signer this binary was built with and
// the libcrypto it runs on (`authmilter version` prints it).
func SignerImplementation() string {
	return "openssl libcrypto " + C.GoString(C.OpenSSL_version(C.OPENSSL_VERSION_STRING))
}

// opensslRSA is an RSA private key loaded into libcrypto once: Sign with
// crypto.SHA256 and PKCS#1 v1.5 padding runs there, at about four times
// the speed of crypto/rsa on CPUs with wide multipliers; the signatures
// are byte for byte the same (PKCS#1 v1.5 is deterministic).
//
// Every other option (PSS, another hash) is signed by the Go key, as is a
// signature asked for after Close: the cache may evict a key that a
// transaction still holds, and that transaction must still get its
// signature.
type opensslRSA struct {
	goKey *rsa.PrivateKey
	size  int // of the modulus, in bytes

	// mu guards the libcrypto objects: Sign holds it shared, Close and
	// the cleanup exclusively, so the key is never freed under a Sign.
	mu  sync.RWMutex
	lib *opensslKeyHandle
}

// opensslKeyHandle holds the C pointers apart from opensslRSA, so that the
// cleanup that frees them does not keep the signer reachable.
type opensslKeyHandle struct {
	pkey *C.EVP_PKEY
	ctx  *C.EVP_PKEY_CTX
}

// free releases the libcrypto objects once.
func (h *opensslKeyHandle) free() {
	if h.pkey != nil || h.ctx != nil {
		C.am_rsa_free(h.ctx, h.pkey)
		h.pkey, h.ctx = nil, nil
	}
}

// newRSASigner loads k into libcrypto and checks that libcrypto signs with
// it as crypto/rsa verifies: a key libcrypto refuses, or signs wrongly
// with, is refused here (when the key is built), with libcrypto's reason.
func newRSASigner(k *rsa.PrivateKey) (crypto.Signer, error) {
	if len(k.Primes) != 2 || k.Precomputed.Dp == nil {
		return nil, errors.New("libcrypto signer: want a two-prime RSA key with its CRT values")
	}
	parts := [8]*big.Int{k.N, big.NewInt(int64(k.E)), k.D, k.Primes[0], k.Primes[1],
		k.Precomputed.Dp, k.Precomputed.Dq, k.Precomputed.Qinv}
	// The integers go to one C buffer: the array of pointers to them is
	// then Go memory holding no Go pointer, which cgo lets C read.
	var total int
	for _, v := range parts {
		total += (v.BitLen() + 7) / 8
	}
	buf := unsafe.Slice((*byte)(C.malloc(C.size_t(total+1))), total+1)
	defer func() {
		clear(buf) // the private exponent and the primes
		C.free(unsafe.Pointer(&buf[0]))
	}()
	var ptrs [8]*C.uchar
	var lens [8]C.int
	off := 0
	for i, v := range parts {
		n := (v.BitLen() + 7) / 8
		v.FillBytes(buf[off : off+n])
		ptrs[i], lens[i] = (*C.uchar)(unsafe.Pointer(&buf[off])), C.int(n)
		off += n
	}
	var errBuf [errBufLen]C.char
	h := &opensslKeyHandle{}
	h.pkey = C.am_rsa_load(&ptrs[0], &lens[0], &errBuf[0], errBufLen)
	if h.pkey == nil {
		return nil, fmt.Errorf("libcrypto refused the key: %s", C.GoString(&errBuf[0]))
	}
	h.ctx = C.am_rsa_prepare(h.pkey, &errBuf[0], errBufLen)
	if h.ctx == nil {
		h.free()
		return nil, fmt.Errorf("libcrypto refused the key: %s", C.GoString(&errBuf[0]))
	}
	s := &opensslRSA{goKey: k, size: k.Size(), lib: h}
	// Backstop for a signer dropped without Close (a cache that is itself
	// dropped): free libcrypto's copy once nothing can reach the signer.
	runtime.AddCleanup(s, func(h *opensslKeyHandle) { h.free() }, h)

	// One signature checked with crypto/rsa's verification (about 30 µs
	// for RSA-2048): a libcrypto that accepts the key but signs wrongly
	// with it must not sign mail.
	var probe [32]byte
	copy(probe[:], "authmilter libcrypto self-test.")
	sig, err := s.signLib(probe[:])
	if err == nil {
		err = rsa.VerifyPKCS1v15(&k.PublicKey, crypto.SHA256, probe[:], sig)
	}
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("libcrypto refused the key: self-test signature: %w", err)
	}
	return s, nil
}

// Public returns the *rsa.PublicKey.
func (s *opensslRSA) Public() crypto.PublicKey { return &s.goKey.PublicKey }

// Sign signs digest. With opts.HashFunc() == crypto.SHA256 and no PSS
// options, libcrypto makes a PKCS#1 v1.5 signature; anything else is
// passed to crypto/rsa with rand. A libcrypto failure is an error with
// OpenSSL's reason, never a crash.
func (s *opensslRSA) Sign(rand io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if _, pss := opts.(*rsa.PSSOptions); pss || opts.HashFunc() != crypto.SHA256 {
		return s.goKey.Sign(rand, digest, opts)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.lib == nil {
		return s.goKey.Sign(rand, digest, opts)
	}
	return s.signLib(digest)
}

// signLib signs digest in libcrypto; callers hold mu (shared) with lib set.
func (s *opensslRSA) signLib(digest []byte) ([]byte, error) {
	if len(digest) == 0 {
		return nil, errors.New("libcrypto sign: empty digest")
	}
	sig := make([]byte, s.size)
	sigLen := C.size_t(len(sig))
	var errBuf [errBufLen]C.char
	if C.am_rsa_sign(s.lib.ctx, (*C.uchar)(unsafe.Pointer(&digest[0])), C.size_t(len(digest)),
		(*C.uchar)(unsafe.Pointer(&sig[0])), &sigLen, &errBuf[0], errBufLen) != 1 {
		return nil, fmt.Errorf("libcrypto: %s", C.GoString(&errBuf[0]))
	}
	if int(sigLen) != len(sig) {
		return nil, fmt.Errorf("libcrypto: signature of %d bytes, want %d", sigLen, len(sig))
	}
	return sig, nil
}

// Close frees libcrypto's copy of the key, after any Sign running on it;
// later signatures are made by crypto/rsa. SignerCache calls it when the
// key leaves the cache.
func (s *opensslRSA) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lib != nil {
		s.lib.free()
		s.lib = nil
	}
	return nil
}
