package interop

import (
	"context"
	"crypto/ed25519"
	_ "embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
)

//go:embed dkimpy_verify.py
var dkimpyVerifyScript string

//go:embed dkimpy_sign.py
var dkimpySignScript string

// installDkimpy is what to run when dkimpy is missing.
const installDkimpy = "apt-get install python3-dkim python3-dnspython python3-nacl"

// DkimpyResult is dkimpy's verdict on one DKIM-Signature field.
type DkimpyResult struct {
	// Index is the position of the signature among the message's
	// DKIM-Signature fields, 0 being the topmost.
	Index int `json:"index"`
	// Domain, Selector and Algorithm are the d=, s= and a= tags.
	Domain    string `json:"d"`
	Selector  string `json:"s"`
	Algorithm string `json:"a"`
	// OK is true when dkimpy verified the signature.
	OK bool `json:"ok"`
	// Error is dkimpy's reason when OK is false.
	Error string `json:"error"`
}

// String formats the result for test output.
func (r DkimpyResult) String() string {
	if r.OK {
		return fmt.Sprintf("#%d d=%s s=%s a=%s: pass", r.Index, r.Domain, r.Selector, r.Algorithm)
	}
	return fmt.Sprintf("#%d d=%s s=%s a=%s: fail: %s", r.Index, r.Domain, r.Selector, r.Algorithm, r.Error)
}

// checkDkimpyScript imports what the scripts need (see dkimpy_verify.py
// for why the DNS-over-HTTPS modules are kept out).
const checkDkimpyScript = `import sys
for m in ("httpx", "requests", "h2", "aioquic"):
    sys.modules.setdefault(m, None)
import dkim, dns.resolver, nacl.signing`

var (
	dkimpyMu sync.Mutex
	dkimpyOK bool
)

// checkDkimpy makes sure /usr/bin/python3 can import dkim, dns and nacl.
func checkDkimpy(ctx context.Context) error {
	dkimpyMu.Lock()
	defer dkimpyMu.Unlock()
	if dkimpyOK {
		return nil
	}
	if err := checkExecutable(pythonBin, pythonBin, "apt-get install python3"); err != nil {
		return err
	}
	out, err := exec.CommandContext(ctx, pythonBin, "-c", checkDkimpyScript).CombinedOutput()
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("interop: checking dkimpy: %w", ctx.Err())
		}
		return &MissingToolError{
			Tool:    "dkimpy for " + pythonBin,
			Install: installDkimpy,
			Err:     fmt.Errorf("%w: %s", err, strings.TrimSpace(string(out))),
		}
	}
	dkimpyOK = true
	return nil
}

// VerifyDkimpy verifies every DKIM-Signature of msg with dkimpy, looking
// keys up only at the DNS server dnsAddr ("ip:port", any port). It returns
// one result per signature, top to bottom (none for an unsigned message);
// the error is about running dkimpy, not about the signatures.
func VerifyDkimpy(ctx context.Context, msg []byte, dnsAddr string) ([]DkimpyResult, error) {
	if err := checkDkimpy(ctx); err != nil {
		return nil, err
	}
	out, err := run(ctx, msg, pythonBin+" dkimpy_verify.py "+dnsAddr, pythonBin, "-c", dkimpyVerifyScript, dnsAddr, "5")
	if err != nil {
		return nil, fmt.Errorf("interop: dkimpy verify: %w", err)
	}
	var res []DkimpyResult
	if err := json.Unmarshal(out, &res); err != nil {
		return nil, fmt.Errorf("interop: dkimpy verify: bad output %q: %w", clip(string(out)), err)
	}
	return res, nil
}

// VerifyDkimpyAll is VerifyDkimpy that also fails unless the message has at
// least one signature and dkimpy verifies every one.
func VerifyDkimpyAll(ctx context.Context, msg []byte, dnsAddr string) ([]DkimpyResult, error) {
	res, err := VerifyDkimpy(ctx, msg, dnsAddr)
	if err != nil {
		return nil, err
	}
	if len(res) == 0 {
		return res, errors.New("interop: dkimpy: message has no DKIM-Signature")
	}
	var bad []string
	for _, r := range res {
		if !r.OK {
			bad = append(bad, r.String())
		}
	}
	if len(bad) > 0 {
		return res, fmt.Errorf("interop: dkimpy: %s", strings.Join(bad, "; "))
	}
	return res, nil
}

// SignDkimpy signs msg with dkimpy and returns the signed message (dkimpy's
// DKIM-Signature field followed by msg unchanged). keyPEM is a PEM private
// key (PKCS#8 or PKCS#1 RSA, PKCS#8 Ed25519); algo is "rsa-sha256" or
// "ed25519-sha256" and must match the key; headerCanon and bodyCanon are
// "simple" or "relaxed". dkimpy signs its default header list (RFC 6376's
// recommended fields that are present, From signed twice).
func SignDkimpy(ctx context.Context, msg []byte, selector, domain string, keyPEM []byte, headerCanon, bodyCanon, algo string) ([]byte, error) {
	if err := checkDkimpy(ctx); err != nil {
		return nil, err
	}
	for _, c := range []string{headerCanon, bodyCanon} {
		if c != "simple" && c != "relaxed" {
			return nil, fmt.Errorf("interop: dkimpy sign: bad canonicalization %q", c)
		}
	}
	key, err := parseKey(keyPEM)
	if err != nil {
		return nil, err
	}
	if got := keyAlgorithm(key); got != algo {
		return nil, fmt.Errorf("interop: dkimpy sign: algorithm %q does not match the %s key", algo, got)
	}
	// dkimpy reads RSA keys as PEM (PKCS#1 or PKCS#8) and Ed25519 keys as
	// the base64 of the 32-byte seed (nacl.signing.SigningKey).
	keyData := keyPEM
	if k, ok := key.(ed25519.PrivateKey); ok {
		keyData = []byte(base64.StdEncoding.EncodeToString(k.Seed()) + "\n")
	}
	dir, cleanup, err := tempDir("dkimpy-")
	if err != nil {
		return nil, err
	}
	defer cleanup()
	keyFile := filepath.Join(dir, "key")
	if err := os.WriteFile(keyFile, keyData, 0o600); err != nil {
		return nil, fmt.Errorf("interop: dkimpy sign: write key: %w", err)
	}
	args := []string{selector, domain, keyFile, headerCanon, bodyCanon, algo}
	display := pythonBin + " dkimpy_sign.py " + strings.Join(args, " ")
	out, err := run(ctx, msg, display, pythonBin, append([]string{"-c", dkimpySignScript}, args...)...)
	if err != nil {
		return nil, fmt.Errorf("interop: dkimpy sign: %w", err)
	}
	return out, nil
}
