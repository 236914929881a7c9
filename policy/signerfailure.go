package policy

import (
	"crypto"
	"errors"
	"io"
)

// signerFailure is an error returned by a key's own Sign: the key's crypto
// (libcrypto's EVP_PKEY_sign, or crypto/rsa's check of its own signature)
// failed on this message. It is not a verdict on the message nor a
// property of the configuration: the message meets on_internal_error
// (Decision.InternalError), where an expected failure (a key file that no
// longer parses, a signature that dkimsign refuses to make) leaves it
// unsigned with the reason logged.
type signerFailure struct{ err error }

func (e *signerFailure) Error() string { return "signer failed: " + e.err.Error() }
func (e *signerFailure) Unwrap() error { return e.err }

// isSignerFailure reports whether err, from dkimsign.Sign, came from the
// key's Sign.
func isSignerFailure(err error) bool {
	var sf *signerFailure
	return errors.As(err, &sf)
}

// markedSigner is a key's signer whose Sign errors are signerFailures, so
// that they can be told from dkimsign's own errors, whichever signer
// (libcrypto, crypto/rsa, Ed25519) the key has.
type markedSigner struct{ crypto.Signer }

// Sign signs with the key and marks its failure.
func (s markedSigner) Sign(rand io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	sig, err := s.Signer.Sign(rand, digest, opts)
	if err != nil {
		return nil, &signerFailure{err: err}
	}
	return sig, nil
}
