// Package browsertest drives a real, headless Chromium (Debian's chromium)
// through chromedp for the tests of the daemon's status pages (test/web):
// one browser process per test, a tab per page, with the page's console
// errors and exceptions collected, its text read, scripts evaluated and
// full-page screenshots taken.
package browsertest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// DefaultExecPath is where Debian's chromium package installs the browser.
const DefaultExecPath = "/usr/bin/chromium"

// InstallHint is what a test says when the browser is missing.
const InstallHint = "install Debian's chromium (scripts/install-deps.sh)"

// startTimeout bounds the start of the browser: far above a start on a
// busy machine (a few seconds), so that only a hang hits it.
const startTimeout = 90 * time.Second

// ExecPath returns the browser to run: $CHROMIUM if set, else
// DefaultExecPath. The error, when it cannot be run, says what to install.
func ExecPath() (string, error) {
	path := os.Getenv("CHROMIUM")
	if path == "" {
		path = DefaultExecPath
	}
	resolved, err := exec.LookPath(path)
	if err != nil {
		return "", fmt.Errorf("browsertest: no browser at %s (%w): %s, or set $CHROMIUM to a Chromium binary", path, err, InstallHint)
	}
	return resolved, nil
}

// Browser is a running headless Chromium; Open gives it a new tab. Tabs of
// one Browser may be used from several goroutines, one goroutine per tab.
type Browser struct {
	ctx context.Context // the browser's chromedp context
}

// Start starts a headless Chromium for t, with a fresh profile in a
// temporary directory, and stops it when t ends (the browser is closed,
// then its process, found by its PID, is killed if it is still there). A
// missing browser or one that does not start fails the test with
// InstallHint.
func Start(t testing.TB) *Browser {
	t.Helper()
	path, err := ExecPath()
	if err != nil {
		t.Fatal(err)
	}
	profile := filepath.Join(t.TempDir(), "chromium-profile")
	if err := os.Mkdir(profile, 0o700); err != nil {
		t.Fatal(err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.Headless,
		// The tests run as root, where Chromium's sandbox cannot start.
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.UserDataDir(profile),
		// Nothing but the pages under test: no component updates, no
		// translation, no first-run tasks talking to the network.
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("no-pings", true),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelBrowser := chromedp.NewContext(allocCtx)
	started := make(chan error, 1)
	go func() { started <- chromedp.Do(ctx) }()
	select {
	case err = <-started:
	case <-time.After(startTimeout):
		err = fmt.Errorf("no answer within %s", startTimeout)
	}
	var proc *os.Process
	if c := chromedp.FromContext(ctx); c != nil && c.Browser != nil {
		proc = c.Browser.Process()
	}
	t.Cleanup(func() { stop(t, cancelBrowser, cancelAlloc, proc) })
	if err != nil {
		t.Fatalf("browsertest: start %s: %v (%s)", path, err, InstallHint)
	}
	return &Browser{ctx: ctx}
}

// stop closes the browser and makes sure its process is gone.
func stop(t testing.TB, cancelBrowser, cancelAlloc context.CancelFunc, proc *os.Process) {
	cancelBrowser() // closes the browser, gracefully
	done := make(chan struct{})
	go func() { cancelAlloc(); close(done) }() // kills it and waits for it
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Errorf("browsertest: Chromium did not stop within 30s")
	}
	if proc != nil {
		if err := proc.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
			t.Errorf("browsertest: kill Chromium (pid %d): %v", proc.Pid, err)
		}
	}
}

// ScreenshotDir returns dir/name (name made safe for a file name, e.g.
// a test's name), created if needed.
func ScreenshotDir(t testing.TB, dir, name string) string {
	t.Helper()
	path := filepath.Join(dir, safeName(name))
	if err := os.MkdirAll(path, 0o755); err != nil {
		t.Fatalf("browsertest: screenshots: %v", err)
	}
	return path
}

// safeName keeps letters, digits, '.', '-' and '_' of s, and turns the
// rest into '_'.
func safeName(s string) string {
	b := []byte(s)
	for i, c := range b {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '-', c == '_':
		default:
			b[i] = '_'
		}
	}
	return string(b)
}
