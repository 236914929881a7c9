package keys

import "crypto"

// SignWithForTesting makes k sign with s instead of its own private key.
// Tests use it to make a key's crypto fail on a message (a signer whose
// Sign returns an error), which no key file that loads can do: both
// signers refuse a key they cannot sign with when it is loaded. Call it
// before k signs anything, never concurrently with signing; the daemon
// never calls it.
func (k *Key) SignWithForTesting(s crypto.Signer) {
	k.m.signer = s
}
