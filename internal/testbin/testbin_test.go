package testbin

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
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

// TestRun: what the binary prints, reads and exits with is the result,
// a binary killed at the timeout included.
func TestRun(t *testing.T) {
	tests := []struct {
		name    string
		stdin   string
		args    []string
		timeout time.Duration
		want    Result
	}{
		{"script on stdin", "echo out; echo err >&2; exit 3", nil, time.Minute, Result{Stdout: "out\n", Stderr: "err\n", Code: 3}},
		{"arguments", "", []string{"-c", "echo \"$0\"", "arg"}, time.Minute, Result{Stdout: "arg\n"}},
		{"killed at the timeout", "", []string{"-c", "exec sleep 60"}, 100 * time.Millisecond, Result{Code: -1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Run(t, "/bin/sh", tt.timeout, []byte(tt.stdin), tt.args...); got != tt.want {
				t.Errorf("Run = %+v, want %+v", got, tt.want)
			}
		})
	}
}
