package keys

import (
	"bufio"
	"crypto/sha256"
	"encoding/gob"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"time"
)

// IndexFile is the file in keys.dir where the daemon keeps an index of the
// key table it last loaded, <keys.dir>/.authmilter-index: the identity of
// every domain folder, key file and state file (see fileID), and of each
// key its SHA-256, algorithm, size and creation time. It holds no key
// material. A start with it is a reload (one stat per folder and file)
// instead of a read of every key file: at 100,000 domains that is a million
// system calls fewer. Keys taken from it are read from their file when
// first used (and must still have the indexed content), so a key file that
// becomes unreadable after a start is noticed at that key's first message
// (a sign error, logged) or at the next reload, whichever comes first.
// Deleting the file is safe: the next start reads every key file again.
const IndexFile = ".authmilter-index"

// indexVersion is the format version of IndexFile.
const indexVersion = 1

// indexHeader starts IndexFile (gob); Domains indexDomain values follow,
// each its own gob value, so that neither writing nor reading holds the
// whole index in memory.
type indexHeader struct {
	Version int
	Dir     string
	Domains int
}

// indexDomain is one domain folder of the index.
type indexDomain struct {
	Name    string
	Folder  indexID
	State   indexID
	Ignored []string
	Retired []RetiredKey
	Keys    []indexKey
}

// indexKey is one key of the index.
type indexKey struct {
	Selector, Path   string
	File             indexID
	Sum              []byte // SHA-256 (a slice: gob encodes arrays element by element)
	Algorithm        Algorithm
	Bits             int
	ModTime, Created time.Time
	Testing          bool
}

// indexID is a fileID as the index stores it.
type indexID struct{ Dev, Ino, Size, Mtime, Ctime int64 }

func (f fileID) array() indexID {
	return indexID{int64(f.dev), int64(f.ino), f.size, f.mtime, f.ctime}
}

func fileIDFrom(a indexID) fileID {
	return fileID{dev: uint64(a.Dev), ino: uint64(a.Ino), size: a.Size, mtime: a.Mtime, ctime: a.Ctime}
}

// IndexPath returns the IndexFile of keys.dir dir.
func IndexPath(dir string) string { return filepath.Join(dir, IndexFile) }

// SaveIndex writes the index of t atomically to path (mode 0600).
func (t *Table) SaveIndex(path string) error {
	if t.missing {
		return nil
	}
	err := writeReplaceWith(path, 0o600, func(w io.Writer) error {
		enc := gob.NewEncoder(w)
		if err := enc.Encode(indexHeader{Version: indexVersion, Dir: t.dir, Domains: len(t.folders)}); err != nil {
			return err
		}
		for name, f := range t.folders {
			d := indexDomain{Name: name, Folder: f.id.array(), State: f.state.array(), Ignored: f.ignored, Retired: t.retired[name]}
			for _, k := range t.domains[name] {
				d.Keys = append(d.Keys, indexKey{Selector: k.Selector, Path: k.Path, File: k.file.array(), Sum: k.m.sum[:],
					Algorithm: k.Algorithm, Bits: k.Bits, ModTime: k.ModTime, Created: k.Created, Testing: k.Testing})
			}
			if err := enc.Encode(&d); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("keys: save the key table index: %w", err)
	}
	return nil
}

// LoadIndex reads the index at path as a table of dir to give Load as
// Prev: Load then takes every unchanged folder and key over from it with
// a stat, and reads only what changed. Its keys are read from their files
// when first used. A missing file gives (nil, nil); an index of another
// folder or version, or a damaged one, is an error (the caller loads the
// table without it).
func LoadIndex(path, dir string, cacheSize int) (*Table, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("keys: %w", err)
	}
	defer f.Close()
	dec := gob.NewDecoder(bufio.NewReaderSize(f, 1<<16))
	var h indexHeader
	if err := dec.Decode(&h); err != nil {
		return nil, fmt.Errorf("keys: %s: %w (delete it; the next start reads every key file)", path, err)
	}
	if h.Version != indexVersion || h.Dir != dir || h.Domains < 0 {
		return nil, fmt.Errorf("keys: %s: version %d of %s, not version %d of %s", path, h.Version, h.Dir, indexVersion, dir)
	}
	n := min(h.Domains, 1<<22) // a size hint only
	t := &Table{dir: dir, domains: make(map[string][]*Key, n), retired: map[string][]RetiredKey{},
		folders: make(map[string]folderInfo, n), cache: NewSignerCache(cacheSize)}
	for range h.Domains {
		var d indexDomain
		if err := dec.Decode(&d); err != nil {
			return nil, fmt.Errorf("keys: %s: %w (delete it; the next start reads every key file)", path, err)
		}
		t.folders[d.Name] = folderInfo{id: fileIDFrom(d.Folder), state: fileIDFrom(d.State), ignored: d.Ignored}
		if len(d.Retired) > 0 {
			t.retired[d.Name] = d.Retired
		}
		if len(d.Keys) == 0 {
			continue
		}
		ks := make([]*Key, len(d.Keys))
		for i, k := range d.Keys {
			if len(k.Sum) != sha256.Size {
				return nil, fmt.Errorf("keys: %s: damaged entry for %s/%s (delete it; the next start reads every key file)", path, d.Name, k.Selector)
			}
			ks[i] = &Key{Domain: d.Name, Selector: k.Selector, Path: k.Path, Algorithm: k.Algorithm, Bits: k.Bits,
				ModTime: k.ModTime, Created: k.Created, Testing: k.Testing,
				file: fileIDFrom(k.File), m: &material{sum: [sha256.Size]byte(k.Sum), cache: t.cache, lazy: &lazyFill{path: k.Path}}}
		}
		t.domains[d.Name] = ks
	}
	t.index()
	folders := make([]string, 0, len(t.folders))
	for name := range t.folders {
		folders = append(folders, name)
	}
	sort.Strings(folders)
	for _, name := range folders {
		t.ignored = append(t.ignored, t.folders[name].ignored...)
	}
	return t, nil
}
