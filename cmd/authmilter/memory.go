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
