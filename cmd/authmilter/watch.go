package main

import (
	"runtime"
	"time"

	"golang.org/x/sys/unix"

	"github.com/authmilter/authmilter/keys"
)

// watchKeys starts following the changes of t's folders (keys.Watcher) in
// the background, once per keys.dir: from then on a reload reads only
// the domain folders that changed, instead of calling stat on every key
// file (a second of CPU at 100,000 domains). Establishing the watches
// costs about as much as one such reload; it starts watchDelay after the
// table is installed (not among a start's first signatures), on one
// thread of the lowest priority, so that signing keeps the CPUs. Where inotify is not available, or its watch limit is
// too low for the table, reloads keep the stat pass (logged once per
// folder).
func (d *daemon) watchKeys(t *keys.Table) {
	if t.Missing() {
		return
	}
	if w := d.watch.Load(); w != nil && w.Dir() == t.Dir() && w.Broken() == "" {
		return
	}
	d.watchMu.Lock()
	if d.watching || d.watchFailed == t.Dir() {
		d.watchMu.Unlock()
		return
	}
	d.watching = true
	d.watchMu.Unlock()
	go func() {
		select {
		case <-time.After(watchDelay):
		case <-d.exiting:
			d.watchMu.Lock()
			d.watching = false
			d.watchMu.Unlock()
			return
		}
		// The thread is niced and never given back (a goroutine that ends
		// locked ends its thread), so the priority stays with this work.
		runtime.LockOSThread()
		unix.Setpriority(unix.PRIO_PROCESS, unix.Gettid(), 19)
		start := time.Now()
		w, err := keys.NewWatcher(t.Dir())
		if err == nil {
			err = w.Establish(t)
		}
		d.watchMu.Lock()
		defer d.watchMu.Unlock()
		d.watching = false
		if err != nil {
			if w != nil {
				w.Close()
			}
			d.watchFailed = t.Dir()
			d.log.Warn("key table not watched: every reload looks at every key file", "dir", t.Dir(), "error", err)
			return
		}
		if old := d.watch.Swap(w); old != nil {
			old.Close()
		}
		d.log.Info("watching the key table for changes", "dir", t.Dir(), "folders", len(t.Domains()),
			"took", time.Since(start).Round(time.Millisecond).String())
	}()
}

// watchDelay is how long after the table is installed its watches are
// established.
const watchDelay = 10 * time.Second

// keyWatcher returns the watcher of dir, if there is one that works.
func (d *daemon) keyWatcher(dir string) *keys.Watcher {
	if w := d.watch.Load(); w != nil && w.Dir() == dir && w.Broken() == "" {
		return w
	}
	return nil
}
