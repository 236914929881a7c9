// Package flock takes an exclusive advisory lock (flock(2)) on a file,
// waiting a bounded time for another process that holds it: how test
// worlds and benchmark runs that share fixed ports or folders take turns.
package flock

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"
)

// ErrTimeout is Wait's error when another holder kept the lock beyond the
// timeout.
var ErrTimeout = errors.New("flock: the lock is still held by another")

// Wait opens the file at path (created with perm if missing) and takes an
// exclusive lock on it, returning the open file: closing it releases the
// lock. While another holds the lock, waiting (if set) is called once,
// and the lock is tried again every poll until it is free, ctx ends
// (ctx.Err()) or timeout has passed (ErrTimeout).
func Wait(ctx context.Context, path string, perm os.FileMode, timeout, poll time.Duration, waiting func()) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, perm)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	deadline := time.Now().Add(timeout)
	told := false
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if !told && waiting != nil {
			waiting()
		}
		told = true
		if time.Now().After(deadline) {
			f.Close()
			return nil, ErrTimeout
		}
		t := time.NewTimer(poll)
		select {
		case <-ctx.Done():
			t.Stop()
			f.Close()
			return nil, ctx.Err()
		case <-t.C:
		}
	}
}
