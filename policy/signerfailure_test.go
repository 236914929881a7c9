package policy

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"io"
	"strings"
	"testing"
)

// failingSigner is a key whose crypto fails at every signature, with the
// words libcrypto would use.
type failingSigner struct{ pub crypto.PublicKey }

func (s failingSigner) Public() crypto.PublicKey { return s.pub }
func (failingSigner) Sign(io.Reader, []byte, crypto.SignerOpts) ([]byte, error) {
	return nil, errors.New("libcrypto: sign: error:1C800066:Provider routines::cipher operation failed")
}

// TestSignerFailureIsInternal: a key's Sign failing marks the decision an
// internal error (the milter then applies on_internal_error), whatever the
// other keys did; a signature dkimsign refuses to make (a key type DKIM
// has no algorithm for) is an expected failure: unsigned, no internal
// error.
func TestSignerFailureIsInternal(t *testing.T) {
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		selectors []string
		broken    string // the selector whose signer is replaced
		signer    func(pub crypto.PublicKey) crypto.Signer
		internal  bool
		sigs      int
		unsigned  string
		logWant   string
	}{
		{"the only key fails", []string{"2026-11"}, "2026-11",
			func(pub crypto.PublicKey) crypto.Signer { return failingSigner{pub} }, true, 0, ReasonSignError, "signer failed: libcrypto: sign"},
		{"one of two keys fails", []string{"2026-11", "2026-11e"}, "2026-11",
			func(pub crypto.PublicKey) crypto.Signer { return failingSigner{pub} }, true, 1, "", "signer failed: libcrypto: sign"},
		{"Ed25519 key fails", []string{"2026-11e"}, "2026-11e",
			func(pub crypto.PublicKey) crypto.Signer { return failingSigner{pub} }, true, 0, ReasonSignError, "signer failed"},
		{"expected failure: no DKIM algorithm for the key", []string{"2026-11"}, "2026-11",
			func(crypto.PublicKey) crypto.Signer { return ecKey }, false, 0, ReasonSignError, "unsupported key type"},
		{"nothing fails", []string{"2026-11", "2026-11e"}, "",
			nil, false, 2, "", ""},
	}
	header, body := benchMessage(2 << 10)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			quoted := make([]string, len(tc.selectors))
			for i, s := range tc.selectors {
				quoted[i] = `"` + s + `"`
			}
			pol, _ := testPolicy(t, "[keys.pin]\n\"example.com\" = ["+strings.Join(quoted, ", ")+"]\n")
			for _, k := range pol.SigningKeys("example.com") {
				if k.Selector == tc.broken {
					k.SignWithForTesting(tc.signer(k.Public()))
				}
			}
			env := benchOutboundEnv
			m := pol.Begin(&env, header)
			m.Write(body)
			d := m.Finish()
			if d.InternalError != tc.internal || d.Signatures != tc.sigs || d.UnsignedReason != tc.unsigned || d.Action != Accept {
				t.Fatalf("InternalError %v, %d signatures, unsigned %q, action %v; want %v, %d, %q, accept; log %v",
					d.InternalError, d.Signatures, d.UnsignedReason, d.Action, tc.internal, tc.sigs, tc.unsigned, d.Log)
			}
			logged := ""
			for _, a := range d.Log {
				if a.Key == "sign_error" {
					logged = a.Value.String()
				}
			}
			if !strings.Contains(logged, tc.logWant) || (tc.logWant == "") != (logged == "") {
				t.Errorf("sign_error %q, want it to contain %q", logged, tc.logWant)
			}
			if tc.broken != "" && !strings.Contains(logged, "example.com/"+tc.broken) {
				t.Errorf("sign_error %q does not name the key", logged)
			}
		})
	}
}
