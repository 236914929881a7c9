// Package interop runs the real peer implementations that authmilter must
// interoperate with — dkimpy (Debian python3-dkim) and OpenDKIM (Debian
// opendkim, opendkim-tools) — to sign and verify messages in tests.
//
// Every function fails with an error that carries the tool's own output
// when the tool fails, and with a *MissingToolError (errors.Is
// ErrToolMissing) naming the Debian package to install when the tool is
// not there. Nothing here skips a test: a missing peer is a failure.
//
// DNS: each verifier asks only the DNS server it is given. dkimpy takes any
// "ip:port". OpenDKIM resolves through libunbound, which cannot be given a
// port, so it needs a server on port 53 of some loopback address (for
// example testdns on a random 127.x.y.z:53).
package interop

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// Python is the interpreter that has Debian's python3-dkim and dnspython;
// the python3 first on PATH may be another one.
const Python = "/usr/bin/python3"

// Paths of the tools actually run; tests point them elsewhere to check the
// missing-tool errors.
var (
	pythonBin   = Python
	opendkimBin = OpenDKIM
)

// ErrToolMissing is matched (errors.Is) by every *MissingToolError.
var ErrToolMissing = errors.New("interop: peer tool not installed")

// MissingToolError says which tool is missing and how to install it.
type MissingToolError struct {
	// Tool is what was looked for.
	Tool string
	// Install is the command that installs it.
	Install string
	// Err is the underlying error.
	Err error
}

// Error names the tool and the install command.
func (e *MissingToolError) Error() string {
	return fmt.Sprintf("interop: %s is not available (%v); install it with: %s", e.Tool, e.Err, e.Install)
}

// Is makes errors.Is(err, ErrToolMissing) true.
func (e *MissingToolError) Is(target error) bool { return target == ErrToolMissing }

// Unwrap returns the underlying error.
func (e *MissingToolError) Unwrap() error { return e.Err }

// ToolError is a peer tool that ran and failed.
type ToolError struct {
	// Cmd is the command line (without the message).
	Cmd string
	// Err is the exit error.
	Err error
	// Stdout and Stderr are the tool's output, trimmed.
	Stdout, Stderr string
}

// Error gives the command, its exit status and its output.
func (e *ToolError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "interop: %s: %v", e.Cmd, e.Err)
	if e.Stderr != "" {
		fmt.Fprintf(&b, "; stderr: %s", e.Stderr)
	}
	if e.Stdout != "" {
		fmt.Fprintf(&b, "; stdout: %s", e.Stdout)
	}
	return b.String()
}

// Unwrap returns the exit error.
func (e *ToolError) Unwrap() error { return e.Err }

// run runs a command with stdin and returns its stdout. display is the
// command as error messages show it.
func run(ctx context.Context, stdin []byte, display, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdin = bytes.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), &ToolError{
			Cmd:    display,
			Err:    err,
			Stdout: clip(stdout.String()),
			Stderr: clip(stderr.String()),
		}
	}
	return stdout.Bytes(), nil
}

// clip keeps error messages readable.
func clip(s string) string {
	s = strings.TrimSpace(s)
	if len(s) > 4000 {
		s = s[:4000] + "…"
	}
	return s
}

// tempDir makes a private directory for key files and sockets.
func tempDir(prefix string) (string, func(), error) {
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		return "", nil, fmt.Errorf("interop: temp dir: %w", err)
	}
	return dir, func() { os.RemoveAll(dir) }, nil
}

// parseKey reads a PEM private key: PKCS#8 (RSA or Ed25519) or PKCS#1
// (RSA).
func parseKey(keyPEM []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(keyPEM)
	if block == nil {
		return nil, errors.New("interop: key: no PEM block")
	}
	switch block.Type {
	case "RSA PRIVATE KEY":
		k, err := x509.ParsePKCS1PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("interop: key: %w", err)
		}
		return k, nil
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("interop: key: %w", err)
		}
		switch k := k.(type) {
		case *rsa.PrivateKey:
			return k, nil
		case ed25519.PrivateKey:
			return k, nil
		default:
			return nil, fmt.Errorf("interop: key: unsupported key type %T", k)
		}
	}
	return nil, fmt.Errorf("interop: key: unsupported PEM type %q", block.Type)
}

// keyAlgorithm returns the DKIM algorithm for a key.
func keyAlgorithm(k crypto.Signer) string {
	if _, ok := k.(ed25519.PrivateKey); ok {
		return "ed25519-sha256"
	}
	return "rsa-sha256"
}

// DNSRecord returns the DKIM key record (the TXT value, unsplit) for the
// public half of a PEM private key: "v=DKIM1; k=rsa; p=..." with the
// SubjectPublicKeyInfo for RSA, "v=DKIM1; k=ed25519; p=..." with the raw
// 32-byte key for Ed25519 (RFC 8463). Tests use it to publish keys.
func DNSRecord(keyPEM []byte) (string, error) {
	k, err := parseKey(keyPEM)
	if err != nil {
		return "", err
	}
	switch pub := k.Public().(type) {
	case ed25519.PublicKey:
		return "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(pub), nil
	default:
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			return "", fmt.Errorf("interop: public key: %w", err)
		}
		return "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(der), nil
	}
}

// checkExecutable returns a *MissingToolError if path is not an
// executable file.
func checkExecutable(path, tool, install string) error {
	if _, err := exec.LookPath(path); err != nil {
		return &MissingToolError{Tool: tool, Install: install, Err: err}
	}
	return nil
}
