package testbin

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
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

// TestMustRun: the output of a run that exits 0; any other exit status
// fails the test with both outputs.
func TestMustRun(t *testing.T) {
	if got := MustRun(t, "/bin/sh", "-c", "echo out; echo err >&2"); got != "out\n" {
		t.Errorf("MustRun = %q, want the standard output", got)
	}
	r := &fatalRecorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		MustRun(r, "/bin/sh", "-c", "echo partial; echo broken >&2; exit 2")
	}()
	<-done
	if !strings.Contains(r.msg, "exit status 2") || !strings.Contains(r.msg, "partial") || !strings.Contains(r.msg, "broken") {
		t.Errorf("failure message %q lacks the status or an output", r.msg)
	}
}

// fatalRecorder is a testing.TB whose Fatalf records the message and ends
// the goroutine, as testing's does.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (r *fatalRecorder) Helper() {}
func (r *fatalRecorder) Fatalf(format string, args ...any) {
	r.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}
