package keys

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"weak"
)

// RetiredDir is the folder inside a domain folder where rotation moves keys
// that are no longer used; keys there are never loaded.
const RetiredDir = "retired"

// Table is the key table read from the file system: <dir>/<domain>/<selector>.pem.
// The folder gives d=, the file name s=, the key itself the algorithm. A
// Table is immutable once loaded.
type Table struct {
	dir     string
	missing bool
	domains map[string][]*Key // sorted by selector, ascending
	retired map[string][]RetiredKey
	// folders tell the next Load which domain folders changed.
	folders map[string]folderInfo
	ignored []string
	names   []string // domains with keys, sorted
	all     []*Key   // by domain then selector
	cache   *SignerCache
	// base is the table this one was patched from (a watched reload), and
	// changed the domains read again that differ from it. Weak: a chain
	// of reloads must not keep every old table alive.
	base    weak.Pointer[Table]
	changed []string
}

// ChangedSince returns the domains whose keys, retired keys or folder may
// differ between prev and t, sorted, when t was made from prev by a
// watched reload or is prev; ok is false otherwise (compare everything).
func (t *Table) ChangedSince(prev *Table) (domains []string, ok bool) {
	if t == prev {
		return nil, true
	}
	if prev != nil && t.base.Value() == prev {
		return t.changed, true
	}
	return nil, false
}

// RetiredKey is a key that a domain's state file says was retired (moved
// to retired/) and whose selector has no key in the table now: the key DNS
// server serves its record revoked for a while.
type RetiredKey struct {
	Domain, Selector string
	Algorithm        Algorithm
	// Retired is when rotate moved the key to retired/.
	Retired time.Time
}

// ErrWritableFolder is returned for a key folder that group or others can
// write to: they could put their own key in.
var ErrWritableFolder = errors.New("key folder is writable by group or others")

// LoadOptions tune Load.
type LoadOptions struct {
	// Prev is the table read last time from the same folder: its keys
	// whose files did not change (see fileID) are taken over as they are,
	// not read again, and its SignerCache is shared. When nothing at all
	// changed, Load returns Prev itself.
	Prev *Table
	// CacheSize is the number of parsed private keys kept (DefaultKeyCache
	// if 0); with Prev, Prev's cache is resized to it.
	CacheSize int
	// Watch, when set, is the Watcher of dir: when it vouches for Prev,
	// only the domain folders it saw change are read, with no stat pass.
	Watch *Watcher
	// Verify makes the stat pass even when Watch vouches for Prev (the
	// periodic recheck does, for changes inotify cannot see).
	Verify bool
}

// LoadDir reads every key under dir (Load without a previous table).
func LoadDir(dir string) (*Table, error) { return Load(dir, LoadOptions{}) }

// Load reads every key under dir. A missing dir gives an empty table
// marked Missing (a fresh install signs nothing until keys are added; the
// daemon refuses to switch to such a table on reload); any key that cannot
// be used is an error, so that a reload with a broken key keeps the old
// table. Only regular files are read (see LoadKey), and neither dir nor a
// domain folder may be writable by group or others. Keys are checked but
// kept in compact form and parsed on first use (Key.PrivateKey). Domain
// folders are read in parallel: a reload of 100,000 domains is mostly
// stat calls.
func Load(dir string, opt LoadOptions) (*Table, error) {
	t := &Table{dir: dir, domains: map[string][]*Key{}, retired: map[string][]RetiredKey{}, folders: map[string]folderInfo{}}
	if opt.Prev != nil && opt.Prev.cache != nil && opt.Prev.dir == dir {
		t.cache = opt.Prev.cache
		if opt.CacheSize > 0 {
			t.cache.Resize(opt.CacheSize)
		}
	} else {
		t.cache = NewSignerCache(opt.CacheSize)
		opt.Prev = nil
	}
	fi, err := os.Stat(dir)
	if errors.Is(err, os.ErrNotExist) {
		t.missing = true
		return t, nil
	}
	if err != nil {
		return nil, fmt.Errorf("keys: read key table: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("keys: read key table: %s is %s, not a folder", dir, fileType(fi.Mode()))
	}
	if err := checkFolder(dir, fi); err != nil {
		return nil, err
	}
	var wl watchLoad
	if opt.Watch != nil {
		wl = opt.Watch.begin(opt.Prev, fileIDOf(fi), opt.Verify)
		if !wl.trusted {
			opt.Watch.full.Add(1)
		} else {
			opt.Watch.patched.Add(1)
			nt, err := patchTable(t, opt.Prev, &wl)
			if err == nil {
				wl.finish(nt)
			}
			return nt, err
		}
	}
	_, entries, err := readFolder(dir) // unsorted: index sorts the domains
	if err != nil {
		return nil, fmt.Errorf("keys: read key table: %w", err)
	}
	var errs []error
	var names []string
	for _, e := range entries {
		if !e.isDir() || strings.HasPrefix(e.name, ".") {
			continue
		}
		if !ValidDomain(strings.ToLower(e.name)) {
			errs = append(errs, fmt.Errorf("keys: %s: folder name is not a domain name (use the A-label form for IDNs)", filepath.Join(dir, e.name)))
			continue
		}
		names = append(names, e.name)
	}
	sort.Strings(names) // errors and ignored files in a stable order
	// The folder stays open while its domains are looked at: the stat
	// calls of unchanged domains are made relative to it (see reuseDomain).
	dirfd := atFDCWD
	if opt.Prev != nil {
		if fd, err := syscall.Open(dir, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0); err == nil {
			dirfd = fd
			defer syscall.Close(fd)
		}
	}
	results := make([]domainLoad, len(names))
	loadParallel(len(names), func(i int) {
		domain := strings.ToLower(names[i])
		if wl.established {
			// Watched before it is read: a change after the read is an
			// event for the next Load (errors leave the watcher broken,
			// and Load uses the stat pass).
			wl.w.watchFolder(domain, names[i])
		}
		results[i] = loadDomain(filepath.Join(dir, names[i]), domain, opt.Prev, dirfd, t.cache)
		if domain != names[i] {
			results[i].folder.name = names[i]
		}
	})
	for i, r := range results {
		domain := strings.ToLower(names[i])
		t.ignored = append(t.ignored, r.ignored...)
		if r.err != nil {
			errs = append(errs, r.err)
			continue
		}
		if len(r.keys) > 0 {
			t.domains[domain] = r.keys
		}
		if len(r.retired) > 0 {
			t.retired[domain] = r.retired
		}
		t.folders[domain] = r.folder
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if opt.Prev != nil && len(names) == len(opt.Prev.folders) && !slices.ContainsFunc(results, func(r domainLoad) bool { return !r.reused }) {
		// Nothing changed: the same folders, each taken over whole. The
		// previous table is returned itself, so that the daemon can keep
		// its snapshot instead of building an identical one.
		if wl.w != nil {
			wl.finish(opt.Prev)
		}
		return opt.Prev, nil
	}
	t.index()
	if wl.w != nil {
		wl.finish(t)
	}
	return t, nil
}

// index sorts the domains and keys once, for Domains and All.
func (t *Table) index() {
	t.names = make([]string, 0, len(t.domains))
	n := 0
	for d, ks := range t.domains {
		t.names = append(t.names, d)
		n += len(ks)
	}
	if !slices.IsSorted(t.names) { // map order: sorted once here
		sort.Strings(t.names)
	}
	t.all = make([]*Key, 0, n)
	for _, d := range t.names {
		t.all = append(t.all, t.domains[d]...)
	}
}

// loadParallel calls f(0) … f(n-1) on one goroutine per core: reading a
// key folder is system calls answered from the page cache, CPU work.
func loadParallel(n int, f func(i int)) {
	workers := min(runtime.GOMAXPROCS(0), n)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				f(i)
			}
		}()
	}
	wg.Wait()
}

// LoadDomain reads the keys of one domain folder, <dir>/<domain>, sorted by
// selector; a missing folder has no keys. Keys in retired/ are not loaded.
func LoadDomain(dir, domain string) ([]*Key, error) {
	domain = strings.ToLower(strings.TrimSuffix(domain, "."))
	if !ValidDomain(domain) {
		return nil, fmt.Errorf("keys: %q is not a domain name (use the A-label form for IDNs)", domain)
	}
	r := loadDomain(filepath.Join(dir, domain), domain, nil, atFDCWD, NewSignerCache(0))
	if errors.Is(r.err, os.ErrNotExist) {
		return nil, nil
	}
	return r.keys, r.err
}

// checkFolder refuses a key folder that group or others can write to.
// The sticky bit does not help: anyone could still add a key.
func checkFolder(path string, fi os.FileInfo) error {
	if fi.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("keys: %s has mode %04o: %w (run chmod go-w %s)", path, fi.Mode().Perm(), ErrWritableFolder, path)
	}
	return nil
}

// domainLoad is what loadDomain found in one domain folder.
type domainLoad struct {
	keys    []*Key
	retired []RetiredKey
	ignored []string
	folder  folderInfo
	reused  bool // taken over from the previous table whole
	err     error
}

// folderInfo is what the next Load needs to know about a domain folder to
// skip listing it again: a folder whose identity (fileID: its change time
// moves whenever an entry is added, removed or renamed) is unchanged holds
// the same names, so only its key files and state file need a stat.
type folderInfo struct {
	id      fileID
	state   fileID // of the state file (zero: none)
	ignored []string
	name    string // on disk, when it has capitals (the table's names are lower case)
}

// loadDomain loads the keys of the folder ddir for domain, with their
// creation times from its state file, the retired keys the state lists,
// and the files it ignored. Keys whose file and state file are unchanged
// since prev are taken from prev; a folder whose entries are unchanged is
// not listed again. A reload of 100,000 unchanged domains is thus two or
// three stat calls per domain, the first load about ten system calls.
func loadDomain(ddir, domain string, prev *Table, dirfd int, cache *SignerCache) domainLoad {
	if prev != nil {
		if r, ok := reuseDomain(ddir, domain, prev, dirfd); ok {
			return r
		}
	}
	fi, files, err := readFolder(ddir)
	if err != nil {
		return domainLoad{err: fmt.Errorf("keys: %s: %w", domain, err)}
	}
	if err := checkFolder(ddir, fi); err != nil {
		return domainLoad{err: err}
	}
	r := domainLoad{folder: folderInfo{id: fileIDOf(fi)}}
	var old map[string]*Key // prev's keys of the domain, by path
	if prev != nil {
		if ks := prev.domains[domain]; len(ks) > 0 {
			old = make(map[string]*Key, len(ks))
			for _, k := range ks {
				old[k.Path] = k
			}
		}
	}
	var errs []error
	for _, e := range files {
		name := e.name
		if name == StateFile {
			if sfi, err := os.Stat(filepath.Join(ddir, name)); err == nil {
				r.folder.state = fileIDOf(sfi)
			}
		}
		if strings.HasPrefix(name, ".") || (e.isDir() && name == RetiredDir) {
			continue
		}
		if e.isDir() || !strings.HasSuffix(name, ".pem") {
			r.folder.ignored = append(r.folder.ignored, ignoredReason(filepath.Join(ddir, name), e.isDir()))
			continue
		}
		selector := strings.TrimSuffix(name, ".pem")
		if !ValidSelector(selector) {
			errs = append(errs, fmt.Errorf("keys: %s/%s: %q is not a valid selector (letters, digits, '-', dot-separated labels)", domain, selector, selector))
			continue
		}
		path := filepath.Join(ddir, name)
		k, err := loadTableKey(path, domain, strings.ToLower(selector), e.isRegular(), cache)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if o := old[path]; o != nil && o.m.sum == k.m.sum {
			// Same content (touched, chmod'ed, copied back): keep the
			// material, so that its parsed signer stays cached.
			k.m = o.m
		}
		r.keys = append(r.keys, k)
	}
	r.ignored = r.folder.ignored
	if err := errors.Join(errs...); err != nil {
		r.err = err
		return r
	}
	state := &DomainState{}
	if r.folder.state != (fileID{}) {
		if state, err = LoadState(ddir); err != nil {
			r.err = err
			return r
		}
	}
	for _, k := range r.keys {
		state.Apply(k)
	}
	r.retired = state.retiredKeys(domain, r.keys)
	sort.Slice(r.keys, func(i, j int) bool { return r.keys[i].Selector < r.keys[j].Selector })
	return r
}

// reuseDomain takes a domain folder over from prev when neither its
// entries, nor its key files, nor its state file changed; it reports
// false (and the folder is read again) otherwise, or on any error.
//
// dirfd is the key table's folder, open (AT_FDCWD: none): the kernel then
// walks two path components per stat instead of all of them.
func reuseDomain(ddir, domain string, prev *Table, dirfd int) (domainLoad, bool) {
	pf, ok := prev.folders[domain]
	if !ok || pf.id == (fileID{}) {
		return domainLoad{}, false
	}
	prefix := filepath.Clean(prev.dir) + string(filepath.Separator)
	stat := func(path string) (fileID, uint32, error) {
		if r, ok := strings.CutPrefix(path, prefix); ok && dirfd != atFDCWD {
			return statAt(dirfd, r)
		}
		return statAt(atFDCWD, path)
	}
	id, mode, err := stat(ddir)
	if err != nil || id != pf.id || mode&0o022 != 0 {
		return domainLoad{}, false
	}
	if pf.state != (fileID{}) {
		if id, _, err := stat(filepath.Join(ddir, StateFile)); err != nil || id != pf.state {
			return domainLoad{}, false
		}
	}
	ks := prev.domains[domain]
	for _, k := range ks {
		if id, _, err := stat(k.Path); err != nil || id != k.file {
			return domainLoad{}, false
		}
	}
	return domainLoad{keys: ks, retired: prev.retired[domain], ignored: pf.ignored, folder: pf, reused: true}, true
}

// ignoredReason says why a file in a domain folder is not a key.
func ignoredReason(path string, dir bool) string {
	switch {
	case dir:
		return path + ": a folder (only retired/ is used)"
	case strings.HasSuffix(path, ".private"):
		return path + ": an OpenDKIM key is not read as is (import it: authmilter import-opendkim, or rename it to <selector>.pem)"
	case strings.HasSuffix(path, ".txt"):
		return path + ": not a key (keys are <selector>.pem)"
	}
	return path + ": not a key (keys are <selector>.pem)"
}

// Dir is the folder the table was read from.
func (t *Table) Dir() string { return t.dir }

// Missing reports whether the table's folder did not exist when it was
// read.
func (t *Table) Missing() bool { return t.missing }

// Keys returns the keys of one domain, sorted by selector.
func (t *Table) Keys(domain string) []*Key { return t.domains[strings.ToLower(domain)] }

// Retired returns the retired keys of one domain (see RetiredKey), by
// selector.
func (t *Table) Retired(domain string) []RetiredKey { return t.retired[strings.ToLower(domain)] }

// RetiredDomains returns the domains that have retired keys, sorted,
// including those with no key left (a customer who left: its records are
// still served revoked for a while).
func (t *Table) RetiredDomains() []string {
	out := make([]string, 0, len(t.retired))
	for d := range t.retired {
		out = append(out, d)
	}
	sort.Strings(out)
	return out
}

// Ignored lists the files and folders inside domain folders that are not
// keys, each with the reason, so that a key under the wrong name (an
// OpenDKIM mail.private, say) is not silently left unused.
func (t *Table) Ignored() []string { return t.ignored }

// Domains returns the domains that have keys, sorted.
func (t *Table) Domains() []string { return t.names }

// All returns every key, by domain then selector.
func (t *Table) All() []*Key { return t.all }

// Cache is the table's cache of parsed private keys.
func (t *Table) Cache() *SignerCache { return t.cache }

// Active chooses the keys to sign with from one domain's keys: for each
// algorithm, the newest created usable key (Key.Created; equal times are
// ordered by selector), whatever its selector's name, so an unpublished new
// key leaves the old one signing. If pinned is not empty, exactly the
// usable keys with those selectors are chosen instead.
func Active(domainKeys []*Key, pinned []string, usable func(*Key) bool) []*Key {
	var out []*Key
	if len(pinned) > 0 {
		for _, k := range domainKeys {
			for _, s := range pinned {
				if strings.EqualFold(k.Selector, s) && (usable == nil || usable(k)) {
					out = append(out, k)
				}
			}
		}
		return out
	}
	var rsaKey, edKey *Key // no map: this runs for each of 100,000 domains
	for _, k := range domainKeys {
		if usable != nil && !usable(k) {
			continue
		}
		best := &rsaKey
		if k.Algorithm == Ed25519SHA256 {
			best = &edKey
		}
		if *best == nil || Newer(k, *best) {
			*best = k
		}
	}
	// RSA first: receivers that do not know Ed25519 see the RSA signature first.
	for _, k := range []*Key{rsaKey, edKey} {
		if k != nil {
			out = append(out, k)
		}
	}
	return out
}

// Newer reports whether a was created after b (by Key.Created, then by
// selector for equal times, so that the order is total).
func Newer(a, b *Key) bool {
	if !a.Created.Equal(b.Created) {
		return a.Created.After(b.Created)
	}
	return a.Selector > b.Selector
}

// ValidSelector reports whether s is a DKIM selector: dot-separated labels
// of letters, digits and hyphens (RFC 6376 §3.1).
func ValidSelector(s string) bool {
	if s == "" || len(s) > 63*4 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range []byte(label) {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// ValidDomain reports whether s is an ASCII domain name usable as d=.
func ValidDomain(s string) bool {
	if s == "" || len(s) > 253 || !strings.Contains(s, ".") {
		return false
	}
	return ValidSelector(s)
}

// retiredKeys lists the keys the state says were retired, except those
// whose selector a current key of ks has again (alternating selectors).
func (s *DomainState) retiredKeys(domain string, ks []*Key) []RetiredKey {
	var out []RetiredKey
	for _, sel := range s.Selectors() {
		st := s.Keys[sel]
		if st.Retired.IsZero() || slices.ContainsFunc(ks, func(k *Key) bool { return k.Selector == sel }) {
			continue
		}
		out = append(out, RetiredKey{Domain: domain, Selector: sel, Algorithm: st.Algorithm, Retired: st.Retired})
	}
	return out
}
