package dnstopo

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/authmilter/authmilter/internal/syncbuf"
)

// LockFile is locked (flock) for the life of a world: the addresses are
// fixed, so worlds of test packages that run in parallel take turns.
const LockFile = "/tmp/authmilter-dnstopo.lock"

// pidFile lists the processes of the world that holds the lock ("PID
// config-path" lines), so that the next world can kill what a crashed test
// binary left running (a killed test binary runs no cleanup).
const pidFile = "/tmp/authmilter-dnstopo.pids"

// process is one server process of the world.
type process struct {
	cmd  *exec.Cmd
	conf string
	logs *syncbuf.Buffer
	done chan struct{}
	err  error // Wait's result, set before done is closed
}

// startProcess starts a server in the foreground, recording its PID in
// pidFile, and kills it when the test ends.
func startProcess(t testing.TB, conf, name string, args ...string) (*process, error) {
	p := &process{conf: conf, logs: &syncbuf.Buffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(name, args...)
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	// If the test binary dies without its cleanups, the kernel still
	// kills the servers (and pidFile lets the next world find any that
	// survive).
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w (install with: %s)", name, err, InstallHint)
	}
	if f, err := os.OpenFile(pidFile, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600); err == nil {
		fmt.Fprintf(f, "%d %s\n", p.cmd.Process.Pid, conf)
		f.Close()
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(p.stop)
	return p, nil
}

// exited reports whether the process has ended, with its exit error.
func (p *process) exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// stop kills the process by its PID and waits for it. The servers hold
// nothing worth a clean shutdown.
func (p *process) stop() {
	if done, _ := p.exited(); done {
		return
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

// acquireLock takes LockFile, waiting at most timeout for another world
// to end, kills the leftovers of a world whose test binary died, and
// returns the release function.
func acquireLock(t testing.TB, timeout time.Duration) (func(), error) {
	f, err := os.OpenFile(LockFile, os.O_RDWR|os.O_CREATE, 0o666)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", LockFile, err)
	}
	deadline := time.Now().Add(timeout)
	logged := false
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", LockFile, err)
		}
		if time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("another dnstopo world (another test package, or a stuck test) has held %s for %v; only one can use 127.53.0.0/24:53 at a time (find it with: fuser -v %s)", LockFile, timeout, LockFile)
		}
		if !logged {
			t.Logf("dnstopo: waiting for another test's DNS world to end (lock %s)", LockFile)
			logged = true
		}
		time.Sleep(100 * time.Millisecond)
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

// run runs a control tool and returns its output, with the output in the
// error when it fails.
func run(ctx context.Context, name string, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}
