package dnstopo

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/authmilter/authmilter/internal/dnsproc"
	"github.com/authmilter/authmilter/internal/flock"
)

// LockFile is locked (flock) for the life of a world: the addresses are
// fixed, so worlds of test packages that run in parallel take turns.
const LockFile = "/tmp/authmilter-dnstopo.lock"

// pidFile lists the processes of the world that holds the lock ("PID
// config-path" lines), so that the next world can kill what a crashed test
// binary left running (a killed test binary runs no cleanup).
const pidFile = "/tmp/authmilter-dnstopo.pids"

// startProcess starts a server of the world (dnsproc.Start: killed when
// the test ends, and by the kernel if the test binary dies) and records
// its PID with its configuration path in pidFile, so that the next world
// can kill it should it survive a crashed test binary.
func startProcess(t testing.TB, conf, name string, args ...string) (*dnsproc.Process, error) {
	p, err := dnsproc.Start(t, name, args...)
	if err != nil {
		return nil, fmt.Errorf("%w (install with: %s)", err, InstallHint)
	}
	if f, err := os.OpenFile(pidFile, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600); err == nil {
		fmt.Fprintf(f, "%d %s\n", p.PID(), conf)
		f.Close()
	}
	return p, nil
}

// acquireLock takes LockFile, waiting at most timeout for another world
// to end, kills the leftovers of a world whose test binary died, and
// returns the release function.
func acquireLock(t testing.TB, timeout time.Duration) (func(), error) {
	f, err := flock.Wait(context.Background(), LockFile, 0o666, timeout, 100*time.Millisecond, func() {
		t.Logf("dnstopo: waiting for another test's DNS world to end (lock %s)", LockFile)
	})
	if errors.Is(err, flock.ErrTimeout) {
		return nil, fmt.Errorf("another dnstopo world (another test package, or a stuck test) has held %s for %v; only one can use 127.53.0.0/24:53 at a time (find it with: fuser -v %s)", LockFile, timeout, LockFile)
	}
	if err != nil {
		return nil, err
	}
	killLeftovers()
	return func() {
		_ = os.Truncate(pidFile, 0)
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}

// killLeftovers kills the processes listed in pidFile that still run with
// the configuration recorded there (so never a process that merely reuses
// the PID), then empties the file.
func killLeftovers() {
	f, err := os.Open(pidFile)
	if err != nil {
		return
	}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		pidStr, conf, ok := strings.Cut(sc.Text(), " ")
		pid, err := strconv.Atoi(pidStr)
		if !ok || err != nil || pid <= 1 || conf == "" {
			continue
		}
		cmdline, err := os.ReadFile("/proc/" + pidStr + "/cmdline")
		if err != nil || !strings.Contains(string(cmdline), conf) {
			continue
		}
		_ = syscall.Kill(pid, syscall.SIGKILL)
		for range 100 {
			if _, err := os.Stat("/proc/" + pidStr); err != nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	f.Close()
	_ = os.Truncate(pidFile, 0)
}
