package flock

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"
)

// TestWait: a free lock is taken at once; a held one makes Wait say so
// once and time out, or stop with its context, or succeed once released.
func TestWait(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lock")
	ctx := context.Background()
	held, err := Wait(ctx, path, 0o600, time.Second, 10*time.Millisecond, func() { t.Error("waited for a free lock") })
	if err != nil {
		t.Fatal(err)
	}
	waits := 0
	if _, err := Wait(ctx, path, 0o600, 100*time.Millisecond, 10*time.Millisecond, func() { waits++ }); !errors.Is(err, ErrTimeout) || waits != 1 {
		t.Fatalf("held lock: %v, told %d times; want ErrTimeout, once", err, waits)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := Wait(cctx, path, 0o600, time.Minute, 10*time.Millisecond, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("held lock, context ended: %v, want context.Canceled", err)
	}
	go func() {
		time.Sleep(50 * time.Millisecond)
		held.Close()
	}()
	f, err := Wait(ctx, path, 0o600, time.Minute, 10*time.Millisecond, nil)
	if err != nil {
		t.Fatalf("released lock: %v", err)
	}
	f.Close()
	if _, err := Wait(ctx, filepath.Join(t.TempDir(), "no", "such", "folder"), 0o600, time.Second, time.Millisecond, nil); err == nil || errors.Is(err, ErrTimeout) {
		t.Fatalf("unopenable path: %v", err)
	}
}
