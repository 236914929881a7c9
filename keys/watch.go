package keys

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"
	"weak"

	"golang.org/x/sys/unix"
)

// Watcher follows the changes of a key table's folders with inotify, so
// that a reload reads only the domain folders that changed instead of
// calling stat on every key file: at 100,000 domains those 225,000 stat
// calls take about a second of CPU, the watcher's answer a few
// milliseconds.
//
// It is an optimisation that may give up, never a source of truth: Load
// uses it only for a previous table that the watcher vouches for (one it
// produced or verified after its watches were in place), and it falls back
// to the stat pass when it cannot vouch: before Establish finished, after
// the kernel's event queue overflowed, when a watch could not be added
// (fs.inotify.max_user_watches), or when keys.dir is no longer the folder
// it watches. Changes that inotify does not report at all (a write to a
// key file through a hard link outside the key table, a network file
// system changed by another host) are seen by the periodic recheck, which
// always loads with the stat pass (LoadOptions.Verify).
//
// Events are read only when Load asks (the descriptor is non-blocking):
// no goroutine, and a table that does not change costs nothing.
type Watcher struct {
	dir string
	fd  int

	mu sync.Mutex
	// top is the watch of dir itself, wds the watch of each domain folder.
	top     int32
	topID   fileID
	wds     map[int32]string
	watched map[string]int32
	// broken is why the watcher gave up (empty: it has not).
	broken string
	// established is set once every domain folder of a table is watched.
	established bool
	// seq counts the reads of the event queue that found events; an event
	// is stamped with the seq of the read that found it.
	seq uint64
	// lastEvent is the stamp of the last event of each domain folder (an
	// event of dir about the folder's own entry counts too).
	lastEvent map[string]uint64
	// eventName is the name on disk of a folder with capitals that an
	// event named.
	eventName map[string]string
	// base is the table the watcher vouches for: its folders were read
	// (or verified) after the stamp baseSeq, with their watches in place.
	// pending is a newer such table, which becomes base when Load is given
	// it as Prev (the daemon adopted it).
	base, pending       *Table
	baseSeq, pendingSeq uint64

	// patched and full count the Loads with and without the stat pass.
	patched, full atomic.Uint64
}

// Loads returns how many Loads read only the folders with events
// (patched), and how many made the stat pass (full).
func (w *Watcher) Loads() (patched, full uint64) {
	return w.patched.Load(), w.full.Load()
}

// watchMask is what a domain folder's watch reports: any change of its
// entries or of the files in it, and of the folder itself.
const watchMask = unix.IN_CREATE | unix.IN_DELETE | unix.IN_MODIFY | unix.IN_CLOSE_WRITE |
	unix.IN_MOVED_FROM | unix.IN_MOVED_TO | unix.IN_ATTRIB | unix.IN_DELETE_SELF |
	unix.IN_MOVE_SELF | unix.IN_ONLYDIR | unix.IN_DONT_FOLLOW | unix.IN_EXCL_UNLINK

// NewWatcher opens an inotify instance for the key table at dir and
// watches dir itself. Domain folders are watched by Establish, and by Load
// for folders that appear later.
func NewWatcher(dir string) (*Watcher, error) {
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("keys: watch %s: inotify: %w", dir, err)
	}
	w := &Watcher{dir: filepath.Clean(dir), fd: fd, wds: map[int32]string{}, watched: map[string]int32{}, lastEvent: map[string]uint64{}, eventName: map[string]string{}}
	wd, err := unix.InotifyAddWatch(fd, w.dir, watchMask)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("keys: watch %s: %w", dir, err)
	}
	w.top = int32(wd)
	if w.topID, _, err = statAt(atFDCWD, w.dir); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("keys: watch %s: %w", dir, err)
	}
	return w, nil
}

// Close releases the inotify instance.
func (w *Watcher) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.fd < 0 {
		return nil
	}
	err := unix.Close(w.fd)
	w.fd = -1
	w.broken = "closed"
	return err
}

// Broken says why the watcher gave up, or "" while it works.
func (w *Watcher) Broken() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.broken
}

// Establish watches every domain folder of t (a table read from the
// watcher's folder) and then checks, with the same stat calls a reload
// makes, that each still is what t holds; a folder that changed meanwhile
// is marked changed. From then on t (if it is still the daemon's table)
// needs no stat pass at the next Load. It is meant to run in the
// background after start, on the calling goroutine alone (one core, so
// that signing keeps the others): about one system call more per folder
// than a reload.
func (w *Watcher) Establish(t *Table) error {
	if t == nil || filepath.Clean(t.dir) != w.dir {
		return fmt.Errorf("keys: watch: table of %v is not the watched folder %s", t, w.dir)
	}
	names := make([]string, 0, len(t.folders))
	for d := range t.folders {
		names = append(names, d)
	}
	for _, d := range names {
		name := d
		if f := t.folders[d]; f.name != "" {
			name = f.name
		}
		if err := w.watchFolder(d, name); err != nil {
			return err
		}
	}
	w.mu.Lock()
	w.drainLocked()
	seq := w.seq
	w.mu.Unlock()
	// Verify after the watches are in place: a change from now on is an
	// event, one made before shows in the stat calls.
	changed := make([]bool, len(names))
	for i, d := range names {
		name := d
		if f := t.folders[d]; f.name != "" {
			name = f.name
		}
		_, ok := reuseDomain(filepath.Join(t.dir, name), d, t, atFDCWD)
		changed[i] = !ok
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.broken != "" {
		return errors.New("keys: watch: " + w.broken)
	}
	w.established = true
	marked := false
	for i, c := range changed {
		if c {
			if !marked {
				w.seq++
				marked = true
			}
			w.lastEvent[names[i]] = w.seq
		}
	}
	if w.pending == nil && w.base == nil {
		w.pending, w.pendingSeq = t, seq
	}
	return nil
}

// watchFolder adds the watch of one domain folder, named name on disk (a
// no-op if it has one).
func (w *Watcher) watchFolder(domain, name string) error {
	w.mu.Lock()
	if _, ok := w.watched[domain]; ok || w.broken != "" {
		w.mu.Unlock()
		return nil
	}
	fd := w.fd
	w.mu.Unlock()
	wd, err := unix.InotifyAddWatch(fd, filepath.Join(w.dir, name), watchMask)
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
			// Gone or replaced since it was listed: the top folder's
			// event says so, and the next Load reads dir again.
			return nil
		}
		if errors.Is(err, unix.ENOSPC) {
			w.broken = "the inotify watch limit is reached (raise the sysctl fs.inotify.max_user_watches); every reload makes a stat pass"
		} else {
			w.broken = fmt.Sprintf("cannot watch %s: %v; every reload makes a stat pass", domain, err)
		}
		return errors.New("keys: watch: " + w.broken)
	}
	if other, ok := w.wds[int32(wd)]; ok && other != domain {
		// The folder was renamed from other (its events not read yet): the
		// watch now speaks for domain, and other is read again next time.
		if w.watched[other] == int32(wd) {
			delete(w.watched, other)
		}
		w.seq++
		w.lastEvent[other] = w.seq
	}
	w.wds[int32(wd)] = domain
	w.watched[domain] = int32(wd)
	return nil
}

// drainLocked reads every queued event and stamps the folders they name.
func (w *Watcher) drainLocked() {
	if w.broken != "" {
		return
	}
	var buf [64 << 10]byte
	stamped := false
	stamp := func() uint64 {
		if !stamped {
			w.seq++
			stamped = true
		}
		return w.seq
	}
	for {
		n, err := unix.Read(w.fd, buf[:])
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || n <= 0 {
			if err != nil && !errors.Is(err, unix.EAGAIN) {
				w.broken = fmt.Sprintf("reading inotify events: %v", err)
			}
			return
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			nameEnd := off + unix.SizeofInotifyEvent + int(ev.Len)
			if nameEnd > n {
				break
			}
			name := strings.TrimRight(string(buf[off+unix.SizeofInotifyEvent:nameEnd]), "\x00")
			off = nameEnd
			w.event(ev.Wd, ev.Mask, name, stamp)
			if w.broken != "" {
				return
			}
		}
	}
}

// event records one inotify event.
func (w *Watcher) event(wd int32, mask uint32, name string, stamp func() uint64) {

	if mask&unix.IN_Q_OVERFLOW != 0 {
		w.broken = "the inotify event queue overflowed (more changes than fs.inotify.max_queued_events between two reloads); every reload makes a stat pass"
		return
	}
	if wd == w.top {
		if mask&(unix.IN_DELETE_SELF|unix.IN_MOVE_SELF|unix.IN_IGNORED) != 0 {
			w.broken = w.dir + " was removed or moved"
			return
		}
		if name == "" || strings.HasPrefix(name, ".") {
			// The folder itself (its mode is checked at every Load), or a
			// hidden file: the daemon's own saved state lives there.
			return
		}
		s := stamp()
		domain := strings.ToLower(name)
		w.lastEvent[domain] = s
		if domain != name {
			w.eventName[domain] = name
		}
		return
	}
	domain, ok := w.wds[wd]
	if !ok {
		return
	}
	w.lastEvent[domain] = stamp()
	if mask&(unix.IN_IGNORED|unix.IN_MOVE_SELF|unix.IN_DELETE_SELF) != 0 {
		// The folder is gone, or renamed: a watch follows the folder, not
		// its name, so it no longer tells about domain. The folder's new
		// name (an event of the top folder) gets the watch again when it
		// is read.
		delete(w.wds, wd)
		if w.watched[domain] == wd {
			delete(w.watched, domain)
		}
	}
}

// watchLoad is the watcher's answer for one Load: whether it vouches for
// prev, and then which domain folders changed since prev was read.
type watchLoad struct {
	w       *Watcher
	seq     uint64 // the stamp the new table is read at
	trusted bool   // prev is vouched for
	// established: every folder of the tables is watched, so a folder
	// read now is watched first.
	established bool
	dirty       map[string]bool
}

// begin reads the queued events and says what Load may skip. It adopts
// prev as the base when prev is the table the watcher vouched for last.
func (w *Watcher) begin(prev *Table, dirID fileID, verify bool) watchLoad {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.broken == "" && (dirID.dev != w.topID.dev || dirID.ino != w.topID.ino) {
		w.broken = w.dir + " is no longer the folder that was watched"
	}
	w.drainLocked()
	wl := watchLoad{w: w, seq: w.seq, established: w.established && w.broken == ""}
	if w.broken != "" || !w.established || verify || prev == nil {
		return wl
	}
	if prev == w.pending && prev != nil {
		w.base, w.baseSeq = w.pending, w.pendingSeq
		w.pending = nil
		for d, s := range w.lastEvent {
			if s <= w.baseSeq {
				delete(w.lastEvent, d)
			}
		}
	}
	if prev != w.base {
		return wl
	}
	wl.trusted = true
	wl.dirty = make(map[string]bool)
	for d, s := range w.lastEvent {
		if s > w.baseSeq {
			wl.dirty[d] = true
		}
	}

	return wl
}

// finish records t, read at wl.seq with every folder watched, as the table
// to vouch for once the daemon adopts it.
func (wl *watchLoad) finish(t *Table) {
	w := wl.w
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.broken != "" || !w.established {
		return
	}
	for d := range t.folders {
		if _, ok := w.watched[d]; !ok {
			return // a folder whose watch could not be added: no vouching
		}
	}
	w.pending, w.pendingSeq = t, wl.seq
}

// String names the watcher in logs.
func (w *Watcher) String() string {
	return "inotify watcher of " + w.dir
}

// patchTable is Load when the watcher vouches for prev: prev's maps are
// copied and only the domain folders with events are read again (with
// their watches added first, so that no change between the read and the
// watch goes unseen). Nothing changed: prev itself.
func patchTable(t, prev *Table, wl *watchLoad) (*Table, error) {
	if len(wl.dirty) == 0 {
		return prev, nil
	}
	dirty := make([]string, 0, len(wl.dirty))
	for d := range wl.dirty {
		dirty = append(dirty, d)
	}
	sort.Strings(dirty)
	results := make([]domainLoad, len(dirty))
	present := make([]bool, len(dirty))
	loadParallel(len(dirty), func(i int) {
		domain := dirty[i]
		name := wl.w.folderName(domain, prev)
		ddir := filepath.Join(prev.dir, name)
		fi, err := os.Lstat(ddir)
		if err != nil || !fi.IsDir() || strings.HasPrefix(name, ".") {
			return // gone, or not a folder: not a domain of the table
		}
		present[i] = true
		if !ValidDomain(domain) {
			results[i].err = fmt.Errorf("keys: %s: folder name is not a domain name (use the A-label form for IDNs)", ddir)
			return
		}
		if err := wl.w.watchFolder(domain, name); err != nil {
			results[i].err = err
			return
		}
		results[i] = loadDomain(ddir, domain, prev, atFDCWD, t.cache)
		results[i].folder.name = name
	})
	var errs []error
	for i, r := range results {
		if r.err != nil {
			errs = append(errs, r.err)
		}
		if _, had := prev.folders[dirty[i]]; !r.reused || had != present[i] {
			t.changed = append(t.changed, dirty[i])
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if len(t.changed) == 0 {
		return prev, nil
	}
	t.base = weak.Make(prev)
	t.domains, t.retired, t.folders = maps.Clone(prev.domains), maps.Clone(prev.retired), maps.Clone(prev.folders)
	sameNames := true
	for i, domain := range dirty {
		r := results[i]
		_, hadKeys := prev.domains[domain]
		delete(t.domains, domain)
		delete(t.retired, domain)
		delete(t.folders, domain)
		if present[i] {
			if len(r.keys) > 0 {
				t.domains[domain] = r.keys
			}
			if len(r.retired) > 0 {
				t.retired[domain] = r.retired
			}
			t.folders[domain] = r.folder
		}
		if hadKeys != (len(r.keys) > 0) {
			sameNames = false
		}
	}
	// Ignored files: prev's, without those of the folders read again.
	for _, why := range prev.ignored {
		if !slices.ContainsFunc(dirty, func(d string) bool {
			return strings.HasPrefix(why, filepath.Join(prev.dir, wl.w.folderName(d, prev))+string(filepath.Separator))
		}) {
			t.ignored = append(t.ignored, why)
		}
	}
	for _, r := range results {
		t.ignored = append(t.ignored, r.ignored...)
	}
	sort.Strings(t.ignored)
	if sameNames {
		t.names = prev.names
		t.all = make([]*Key, 0, len(prev.all)+4)
		for _, d := range t.names {
			t.all = append(t.all, t.domains[d]...)
		}
	} else {
		t.index()
	}
	return t, nil
}

// folderName is the name on disk of domain's folder: as an event or a
// listing gave it (folder names may have capitals; the table's names are
// lower case).
func (w *Watcher) folderName(domain string, prev *Table) string {
	w.mu.Lock()
	n, ok := w.eventName[domain]
	w.mu.Unlock()
	if ok {
		return n
	}
	if f, ok := prev.folders[domain]; ok && f.name != "" {
		return f.name
	}
	return domain
}

// Dir is the folder watched.
func (w *Watcher) Dir() string { return w.dir }
