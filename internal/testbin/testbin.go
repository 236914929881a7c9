// Package testbin builds the real authmilter binary for the test packages
// that run it (test/cli, test/esp, test/reload, test/reports, test/contrib,
// test/soak), once per test binary, from TestMain.
package testbin

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Package is the import path of the command that is built.
const Package = "github.com/authmilter/authmilter/cmd/authmilter"

// Build builds Package with the go tool on PATH into a new temporary
// directory and returns the binary's path and a function that removes the
// directory. The directory is searchable by every user, because some tests
// run the daemon as an unprivileged user; the build error carries the
// compiler's output.
func Build() (binary string, cleanup func(), err error) {
	dir, err := os.MkdirTemp("", "authmilter-bin-")
	if err != nil {
		return "", nil, fmt.Errorf("build authmilter: %w", err)
	}
	cleanup = func() { os.RemoveAll(dir) }
	if err := os.Chmod(dir, 0o755); err != nil {
		cleanup()
		return "", nil, fmt.Errorf("build authmilter: %w", err)
	}
	binary = filepath.Join(dir, "authmilter")
	if out, err := exec.Command("go", "build", "-o", binary, Package).CombinedOutput(); err != nil {
		cleanup()
		return "", nil, fmt.Errorf("build authmilter: %w\n%s", err, out)
	}
	return binary, cleanup, nil
}

// Main is a whole TestMain: it builds the binary (Build), sets *binary to
// its path, runs the tests, removes the binary and exits with the tests'
// result. A failed build prints why and exits 1 without running a test.
func Main(m *testing.M, binary *string) {
	path, cleanup, err := Build()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	*binary = path
	code := m.Run()
	cleanup()
	os.Exit(code)
}

// Result is one run of the binary.
type Result struct {
	Stdout, Stderr string
	// Code is the exit status.
	Code int
}

// Run runs binary with args and stdin, killing it after timeout, and
// returns what it printed and its exit status (-1 when killed). It fails
// t when the binary cannot be run at all.
func Run(t testing.TB, binary string, timeout time.Duration, stdin []byte, args ...string) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Stdin = bytes.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	// Any exit is a result (killed at the timeout: -1); only a binary
	// that did not run fails the test here.
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%s %s: %v", filepath.Base(binary), strings.Join(args, " "), err)
	}
	return Result{Stdout: out.String(), Stderr: errb.String(), Code: code}
}

// mustRunTimeout bounds MustRun: far above any CLI command of the tests,
// so that only a hang hits it.
const mustRunTimeout = 5 * time.Minute

// MustRun runs binary with args (no input) and returns what it printed on
// standard output; any exit status but 0, or a hang of 5 minutes, fails
// the test with both outputs.
func MustRun(t testing.TB, binary string, args ...string) string {
	t.Helper()
	r := Run(t, binary, mustRunTimeout, nil, args...)
	if r.Code != 0 {
		t.Fatalf("%s %s: exit status %d\nstdout:\n%s\nstderr:\n%s", filepath.Base(binary), strings.Join(args, " "), r.Code, r.Stdout, r.Stderr)
	}
	return r.Stdout
}
