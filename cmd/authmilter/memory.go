package main

import (
	"context"
	"os"
	"runtime/debug"
	rtmetrics "runtime/metrics"
	"time"
)

// memoryHeadroom is how much the Go heap may grow above what the running
// snapshot needs before the garbage collector works harder to stay
// below: room for 64 concurrent 1 MiB messages and their copies, and for
// the collector to run seldom under load (each collection marks the whole
// key table: about 80 ms of CPU at 100,000 keys).
const memoryHeadroom = 128 << 20

// tuneMemory runs after a snapshot is installed. It returns the garbage of
// the build to the system at once (the runtime would keep it for minutes)
// and sets the runtime's soft memory limit to what the snapshot needs plus
// memoryHeadroom. Without the limit the heap may grow to twice what is
// live before a collection (GOGC=100): with a 100,000-domain key table
// (about 150 MB) that would be 300 MB of RSS. For small tables the limit
// is far above what GOGC allows and changes nothing. An administrator's
// GOMEMLIMIT wins.
func tuneMemory() {
	debug.FreeOSMemory()
	// Once more a moment later: the goroutines of the build that made the
	// garbage (DNS checks, the old snapshot's last transactions) may hold
	// some of it for a little while after the install.
	time.Sleep(tuneAgain)
	debug.FreeOSMemory()
	if os.Getenv("GOMEMLIMIT") != "" {
		return
	}
	live := []rtmetrics.Sample{{Name: "/gc/heap/live:bytes"}}
	rtmetrics.Read(live)
	if live[0].Value.Kind() != rtmetrics.KindUint64 {
		return
	}
	debug.SetMemoryLimit(int64(live[0].Value.Uint64()) + memoryHeadroom)
}

// tuneAgain is when tuneMemory returns the garbage a second time.
const tuneAgain = 2 * time.Second

// idleEvery is how often idleMemory looks whether the daemon is idle.
const idleEvery = 30 * time.Second

// idleMemory returns the free heap to the system when no message was
// handled for idleEvery: under load the heap uses its headroom (fewer
// collections), at rest the daemon's RSS is what its snapshot needs.
func (d *daemon) idleMemory(ctx context.Context) {
	t := time.NewTicker(idleEvery)
	defer t.Stop()
	last, freed := d.metrics.done.Load(), false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			n := d.metrics.done.Load()
			if n == last && !freed {
				debug.FreeOSMemory()
				freed = true
			}
			if n != last {
				freed = false
			}
			last = n
		}
	}
}

// reloadHeadroom is the least room capForReload leaves: a reload that
// adds a key to a 100,000-domain table builds about 50 MB of new maps (the
// snapshot shares everything else with the previous one). With only an
// eighth above a freshly trimmed heap (150 MB) the collector ran five
// times during it, each time marking the whole key table: 1.1 s instead
// of 0.2 s.
const reloadHeadroom = 64 << 20

// capForReload lowers the soft memory limit to an eighth (at least
// reloadHeadroom) above what the daemon holds now while a reload compiles,
// and returns the function that puts the previous limit back. Compiling a
// new snapshot of a large key table makes tens of MB of garbage; within
// the headroom the collector would leave it, and the RSS would rise by
// that much at every reload (keys.recheck: every 10 minutes). The compile
// is short, so collecting more during it costs little. An
// administrator's GOMEMLIMIT wins.
func capForReload(saving bool) (restore func()) {
	// Not while the publication state and index are being written in the
	// background: their garbage would make the collector run throughout.
	if os.Getenv("GOMEMLIMIT") != "" || saving {
		return func() {}
	}
	s := []rtmetrics.Sample{{Name: "/memory/classes/total:bytes"}, {Name: "/memory/classes/heap/released:bytes"}}
	rtmetrics.Read(s)
	if s[0].Value.Kind() != rtmetrics.KindUint64 || s[1].Value.Kind() != rtmetrics.KindUint64 {
		return func() {}
	}
	held := s[0].Value.Uint64() - s[1].Value.Uint64()
	prev := debug.SetMemoryLimit(int64(held + max(held/8, reloadHeadroom)))
	return func() { debug.SetMemoryLimit(prev) }
}
