package keys

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"
)

// LastGood remembers the last successful answer to each TXT lookup made
// through it and gives it again when a later lookup of the same name fails
// temporarily. The daemon checks its keys' records at every reload and
// recheck; without this, a DNS outage at that moment would make every
// published key "temperror", hence unusable, and mail would go out
// unsigned. With it, a key stays usable until DNS answers otherwise: a
// definitive "no such record" (the record was removed) or a different
// record. A name never answered before still gives the temporary error.
//
// The answers can be kept on disk (Load, Save) so that they survive a
// restart: a daemon started while DNS is down signs with the keys it last
// saw published instead of signing nothing until DNS answers. The answer
// is always compared with the key on disk again, so a replaced key file
// never inherits its predecessor's publication.
//
// The zero value is ready to use; it is safe for concurrent use.
type LastGood struct {
	// Stale, if set, is called (without locks held) each time the last good
	// answer stands in for a failed lookup, for logging.
	Stale func(name string, err error)

	mu    sync.Mutex
	m     map[string]entry
	dirty bool // changed since Load or the last Save
}

// entry is one remembered answer in memory, compact: a provider's daemon
// remembers 100,000 of them, and the TXT values themselves (about 400
// bytes for an RSA-2048 record) are needed only to compare a key with an
// answer that does not name its key file.
type entry struct {
	// txt is kept only without key: Wrap's answers and those of files
	// saved before version 3.
	txt    []string
	txtSum [sha256.Size]byte // of the TXT values in any order (sumTXT)
	key    [sha256.Size]byte // the key file found published; zero: none
	seen   time.Time
	since  time.Time
	hold   int64 // seconds
}

// lastAnswer is one answer as PublicationFile stores it.
type lastAnswer struct {
	TXT []string `json:"txt,omitempty"`
	// TXTSum is the SHA-256 of the TXT values (see sumTXT), in hex.
	TXTSum string `json:"txt_sha256,omitempty"`
	// Seen is when DNS last gave this answer.
	Seen time.Time `json:"seen"`
	// Since is when the record was first seen published everywhere with
	// these TXT values (zero: not seen so).
	Since time.Time `json:"published_since,omitzero"`
	// Hold is the DNS wait seen then, in seconds (see Answer.Hold).
	Hold int64 `json:"hold_seconds,omitempty"`
	// Key is the Fingerprint of the key file found published (Since set).
	Key string `json:"key_sha256,omitempty"`
}

// sumTXT is the SHA-256 of TXT values in any order (resolvers may shuffle
// the records of an RRset).
func sumTXT(txt []string) [sha256.Size]byte {
	sorted := append([]string(nil), txt...)
	sort.Strings(sorted)
	h := sha256.New()
	for _, t := range sorted {
		h.Write([]byte(t))
		h.Write([]byte{0})
	}
	var out [sha256.Size]byte
	h.Sum(out[:0])
	return out
}

// file returns e as the file stores it.
func (e entry) file() lastAnswer {
	a := lastAnswer{TXT: e.txt, TXTSum: hex.EncodeToString(e.txtSum[:]), Seen: e.seen, Since: e.since, Hold: e.hold}
	if e.key != ([sha256.Size]byte{}) {
		a.Key = hex.EncodeToString(e.key[:])
	}
	return a
}

// fromFile returns a saved answer as an entry; ok is false for one that
// is unusable (no TXT values and no valid sums).
func fromFile(a lastAnswer) (entry, bool) {
	e := entry{seen: a.Seen, since: a.Since, hold: a.Hold}
	if a.Key != "" {
		if b, err := hex.DecodeString(a.Key); err == nil && len(b) == sha256.Size {
			copy(e.key[:], b)
		}
	}
	switch b, err := hex.DecodeString(a.TXTSum); {
	case len(a.TXT) > 0:
		e.txtSum = sumTXT(a.TXT)
		if e.key == ([sha256.Size]byte{}) {
			e.txt = a.TXT
		}
	case err == nil && len(b) == sha256.Size && e.key != ([sha256.Size]byte{}):
		copy(e.txtSum[:], b)
	default:
		return entry{}, false
	}
	return e, true
}

// Answer is what LastGood remembers about one key record name.
type Answer struct {
	// TXT are the TXT values DNS gave for the name (the public path).
	TXT []string
	// Seen is when DNS last gave them.
	Seen time.Time
	// Since is when the record was first seen published everywhere (every
	// authoritative nameserver and the public path) with these TXT values;
	// zero when it has not been. A key is activated some time after Since
	// (see policy.ActivationTime), and the time must survive restarts.
	// Answers saved by version 1 of the file have MigratedSince.
	Since time.Time
	// Hold is how long receivers may keep an older answer cached (the
	// zone's negative TTL, the record's TTL), as last seen.
	Hold time.Duration
	// Key is the Fingerprint of the key file that was found published
	// (empty in files saved before version 3): a key with this
	// fingerprint needs no DNS check to count as published, only the slow
	// reverification cycle (keys.reverify). TXT is then not kept.
	Key string
}

// MigratedSince is the Since of answers read from a version 1
// PublicationFile, which did not record it: long ago. The daemon that
// wrote them was signing with those keys, so an upgrade must not make
// them wait again.
var MigratedSince = time.Unix(0, 0).UTC()

// PublicationFile is the file in keys.dir where the daemon keeps the last
// good DNS answer for each key record, <keys.dir>/.authmilter-publication.json,
// and when each record was first seen published everywhere. It starts with
// a dot and is not a folder, so the key table ignores it. Deleting it is
// safe: the daemon then waits for DNS at its next start, and new keys wait
// out their activation delay again.
const PublicationFile = ".authmilter-publication.json"

// publicationVersion is the format version of PublicationFile: 2 added
// published_since and hold_seconds, 3 key_sha256 and txt_sha256 (the TXT
// values themselves are no longer kept when the key file is named); older
// files are read too (their keys are checked in DNS once, at the first
// start).
const publicationVersion = 3

// publicationFile is the content of PublicationFile.
type publicationFile struct {
	Version int                   `json:"version"`
	Records map[string]lastAnswer `json:"records"`
}

// ErrNotLookedUp is the temporary error of Offline: the name was not
// looked up at all.
var ErrNotLookedUp = errors.New("not looked up yet")

// Offline is a TXTLookup that never asks DNS: every name fails with
// ErrNotLookedUp, a temporary error. Wrapped by LastGood it answers from
// what was saved, which is how the daemon starts before DNS answers.
func Offline(ctx context.Context, name string) ([]string, error) {
	return nil, &net.DNSError{Err: ErrNotLookedUp.Error(), Name: name, IsTemporary: true}
}

// IsNotLookedUp reports whether err is Offline's error.
func IsNotLookedUp(err error) bool {
	var dnsErr *net.DNSError
	return errors.As(err, &dnsErr) && dnsErr.Err == ErrNotLookedUp.Error()
}

// Wrap returns a lookup that asks next and falls back to the last good
// answer on temporary failures.
func (l *LastGood) Wrap(next TXTLookup) TXTLookup {
	return func(ctx context.Context, name string) ([]string, error) {
		txts, err := next(ctx, name)
		l.mu.Lock()
		if err == nil {
			if l.m == nil {
				l.m = map[string]entry{}
			}
			prev, ok := l.m[name]
			sum := sumTXT(txts)
			if !ok || prev.txtSum != sum || time.Since(prev.seen) > time.Hour {
				l.dirty = true
			}
			e := entry{txt: append([]string(nil), txts...), txtSum: sum, seen: time.Now().UTC().Truncate(time.Second)}
			if ok && prev.txtSum == sum {
				e.since, e.hold = prev.since, prev.hold
			}
			l.m[name] = e
			l.mu.Unlock()
			return txts, nil
		}
		var dnsErr *net.DNSError
		if errors.As(err, &dnsErr) && dnsErr.IsNotFound {
			if _, ok := l.m[name]; ok {
				delete(l.m, name)
				l.dirty = true
			}
			l.mu.Unlock()
			return nil, err
		}
		prev, ok := l.m[name]
		txt := append([]string(nil), prev.txt...)
		l.mu.Unlock()
		if !ok || len(txt) == 0 {
			return nil, err
		}
		if l.Stale != nil {
			l.Stale(name, err)
		}
		return txt, nil
	}
}

// Answer returns what is remembered about name.
func (l *LastGood) Answer(name string) (Answer, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.m[name]
	if !ok {
		return Answer{}, false
	}
	return e.answer(), true
}

// answer returns e as an Answer.
func (e entry) answer() Answer {
	a := Answer{TXT: append([]string(nil), e.txt...), Seen: e.seen, Since: e.since, Hold: time.Duration(e.hold) * time.Second}
	if e.key != ([sha256.Size]byte{}) {
		a.Key = hex.EncodeToString(e.key[:])
	}
	return a
}

// Confirmed returns what is remembered about k's record if it was found
// published everywhere for the key file of k: such a key counts as
// published without a DNS check (see Answer.Key).
func (l *LastGood) Confirmed(k *Key) (Answer, bool) {
	// The record name is built on the stack: a reload asks this for each
	// of 100,000 keys, and a map index with string(bytes) allocates nothing.
	var buf [2*253 + 12]byte
	name := append(append(append(buf[:0], k.Selector...), "._domainkey."...), k.Domain...)
	l.mu.Lock()
	e, ok := l.m[string(name)]
	l.mu.Unlock()
	if !ok || e.since.IsZero() || e.key != k.m.sum {
		return Answer{}, false
	}
	return Answer{Seen: e.seen, Since: e.since, Hold: time.Duration(e.hold) * time.Second}, true
}

// Published records that name's record was seen published everywhere at
// now for the key k (nil: no key file is named, and the TXT values are
// kept instead), with the TXT values txt on the public path and the DNS
// wait hold, and returns when it was first seen so: the remembered Since
// while the TXT values stay the same, else now.
func (l *LastGood) Published(name string, txt []string, hold time.Duration, now time.Time, k *Key) time.Time {
	now = now.UTC().Truncate(time.Second)
	sum := sumTXT(txt)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.m == nil {
		l.m = map[string]entry{}
	}
	prev, ok := l.m[name]
	e := entry{txtSum: sum, seen: now, since: now, hold: int64(hold / time.Second)}
	if k != nil {
		e.key = k.m.sum
	} else {
		e.txt = append([]string(nil), txt...)
	}
	if ok && prev.txtSum == sum && !prev.since.IsZero() {
		e.since = prev.since
	}
	// Seen changes at every check; it is saved when something else
	// changed, or an hour later (a restart then knows when each key was
	// last verified, to within an hour).
	if !ok || !prev.since.Equal(e.since) || prev.hold != e.hold || prev.key != e.key || prev.txtSum != sum || now.Sub(prev.seen) > time.Hour {
		l.dirty = true
	}
	l.m[name] = e
	return e.since
}

// Forget drops what is remembered about name: DNS said for sure that its
// record is not (or no longer) published everywhere.
func (l *LastGood) Forget(name string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.m[name]; ok {
		delete(l.m, name)
		l.dirty = true
	}
}

// Prune forgets the answers for names keep does not want (records of keys
// that left the key table), so that the saved file does not grow for ever.
func (l *LastGood) Prune(keep func(name string) bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for name := range l.m {
		if !keep(name) {
			delete(l.m, name)
			l.dirty = true
		}
	}
}

// Len returns the number of names remembered.
func (l *LastGood) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.m)
}

// Load adds the answers saved in path (a PublicationFile) to those in
// memory, without replacing any. A missing file is not an error.
func (l *LastGood) Load(path string) error {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("keys: %w", err)
	}
	var f publicationFile
	if err := json.Unmarshal(data, &f); err != nil {
		return fmt.Errorf("keys: %s: %w (delete it; the daemon then waits for DNS at start)", path, err)
	}
	switch f.Version {
	case 1:
		// Version 1 did not record since when: see MigratedSince.
		for name, a := range f.Records {
			a.Since = MigratedSince
			f.Records[name] = a
		}
	case 2, publicationVersion:
	default:
		return fmt.Errorf("keys: %s: unknown version %d (want %d)", path, f.Version, publicationVersion)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.m == nil {
		l.m = make(map[string]entry, len(f.Records))
	}
	for name, a := range f.Records {
		if _, ok := l.m[name]; ok {
			continue
		}
		if e, ok := fromFile(a); ok {
			l.m[name] = e
			l.dirty = l.dirty || f.Version != publicationVersion
		}
	}
	return nil
}

// Save writes the answers atomically to path (mode 0600) if they changed
// since Load or the last Save.
func (l *LastGood) Save(path string) error {
	l.mu.Lock()
	if !l.dirty {
		l.mu.Unlock()
		return nil
	}
	type record struct {
		name string
		e    entry
	}
	records := make([]record, 0, len(l.m))
	for name, e := range l.m {
		records = append(records, record{name, e})
	}
	l.dirty = false
	l.mu.Unlock()
	// Written record by record: at 100,000 keys the file is about 60 MB,
	// which json.Marshal would build in memory first.
	err := writeReplaceWith(path, 0o600, func(w io.Writer) error {
		if _, err := fmt.Fprintf(w, `{"version":%d,"records":{`, publicationVersion); err != nil {
			return err
		}
		for i, r := range records {
			name, err := json.Marshal(r.name)
			if err != nil {
				return err
			}
			value, err := json.Marshal(r.e.file())
			if err != nil {
				return err
			}
			if i > 0 {
				w.Write([]byte{','})
			}
			w.Write(name)
			w.Write([]byte{':'})
			if _, err := w.Write(value); err != nil {
				return err
			}
		}
		_, err := w.Write([]byte("}}\n"))
		return err
	})
	if err != nil {
		l.mu.Lock()
		l.dirty = true
		l.mu.Unlock()
		return fmt.Errorf("keys: save publication state: %w", err)
	}
	return nil
}

// PublicationPath returns the PublicationFile of keys.dir dir.
func PublicationPath(dir string) string { return filepath.Join(dir, PublicationFile) }

// Names returns the remembered names, sorted (for tests and logs).
func (l *LastGood) Names() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]string, 0, len(l.m))
	for n := range l.m {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}
