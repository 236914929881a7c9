package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
)

// edSelector is the selector of the Ed25519 key both milters sign with.
const edSelector = "bench-ed25519"

// setupEd25519 makes the Ed25519 key in a key directory of its own (an
// authmilter signs with every active key of a domain, so the RSA instance
// must not see it) and the config of the authmilter that signs with it; it
// returns the key's zone lines, for the DNS server.
func (r *runner) setupEd25519(ctx context.Context) (string, error) {
	keysDir := filepath.Join(r.work, "keys-ed25519")
	if err := os.Mkdir(keysDir, 0o700); err != nil {
		return "", err
	}
	port, err := freePort()
	if err != nil {
		return "", err
	}
	r.edInet = fmt.Sprintf("inet:127.0.0.1:%d", port)
	r.edConf = filepath.Join(r.work, "authmilter-ed25519.toml")
	if err := os.WriteFile(r.edConf, []byte(r.authmilterConfig([]string{r.edInet}, keysDir)), 0o600); err != nil {
		return "", err
	}
	zone, err := r.output(ctx, filepath.Join(r.o.bin, "authmilter"), "keygen", "-config", r.edConf,
		"-d", "example.com", "-s", edSelector, "-a", "ed25519", "-format", "zone")
	if err != nil {
		return "", fmt.Errorf("keygen ed25519: %w", err)
	}
	return zone, nil
}

// measureEd25519 measures Ed25519 signing over TCP at every concurrency:
// the Ed25519 authmilter against OpenDKIM signing with the same key, in
// place of the RSA pair, which is put back afterwards.
func (r *runner) measureEd25519(ctx context.Context) error {
	keysDir := filepath.Join(r.work, "keys-ed25519")
	rsaAM, rsaOD := r.am, r.odSign
	r.stop(rsaOD) // OpenDKIM's socket is r.odInet for both keys
	defer func() {
		r.am = rsaAM
		if od, err := r.startOpenDKIM(ctx, "sign", filepath.Join(r.work, "keys")); err != nil {
			r.note("OpenDKIM (RSA) did not restart after the Ed25519 points: %v", err)
		} else {
			r.odSign = od
		}
	}()
	edAM, err := r.start(ctx, "authmilter-ed25519", filepath.Join(r.o.bin, "authmilter"), []string{"run", "-config", r.edConf}, "")
	if err != nil {
		return err
	}
	defer r.stop(edAM)
	if err := waitConn(ctx, edAM, r.edInet); err != nil {
		return err
	}
	edOD, err := r.startOpenDKIM(ctx, "sign-ed25519", keysDir)
	if err != nil {
		return err
	}
	defer r.stop(edOD)
	r.am, r.odSign = edAM, edOD
	// Both must add an Ed25519 signature before the clock starts: the
	// points below only check that a DKIM-Signature is added.
	for _, a := range []string{r.edInet, r.odInet} {
		if _, err := r.load(ctx, "smoke", a, "-c", "1", "-n", "3", "-d", "10s", "-msg", r.msg4k,
			"-expect-header", "DKIM-Signature", "-expect-value", "a=ed25519-sha256"); err != nil {
			return fmt.Errorf("Ed25519 smoke test of %s: %w", a, err)
		}
	}
	for _, c := range r.o.conc {
		p, err := r.measurePair(ctx, fmt.Sprintf("c=%d", c), r.edInet, r.odInet, c, r.msg4k, false, r.o.quickack)
		if err != nil {
			return err
		}
		r.signEd = append(r.signEd, p)
	}
	return nil
}
