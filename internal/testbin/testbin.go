// Package testbin builds the real authmilter binary for the test packages
// that run it (test/cli, test/esp, test/reload, test/contrib, test/soak),
// once per test binary, from TestMain.
package testbin

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
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
