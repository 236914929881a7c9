package testbin

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestBuild: the binary runs, its folder is searchable by other users, and
// cleanup removes it.
func TestBuild(t *testing.T) {
	binary, cleanup, err := Build()
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(binary, "version").CombinedOutput()
	if err != nil {
		cleanup()
		t.Fatalf("%s version: %v\n%s", binary, err, out)
	}
	if !strings.Contains(string(out), "authmilter") {
		t.Errorf("%s version printed %q", binary, out)
	}
	if fi, err := os.Stat(filepath.Dir(binary)); err != nil {
		t.Errorf("binary's folder: %v", err)
	} else if fi.Mode().Perm()&0o011 != 0o011 {
		t.Errorf("binary's folder has mode %v; want it searchable by group and others", fi.Mode())
	}
	cleanup()
	if _, err := os.Stat(filepath.Dir(binary)); !os.IsNotExist(err) {
		t.Errorf("binary's folder after cleanup: %v, want it removed", err)
	}
}
