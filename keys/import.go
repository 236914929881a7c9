package keys

import (
	"crypto"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// readRegular reads at most max bytes of a regular file: the type is
// checked before opening (a FIFO is never opened, so a read can never
// block), then readRegularFile opens it non-blocking, checks it again on
// the descriptor (it may have been swapped in between) and refuses a
// larger file rather than cut it.
func readRegular(path string, max int64) ([]byte, os.FileInfo, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, nil, fmt.Errorf("%s: %w (%s)", path, ErrNotRegular, fileType(fi.Mode()))
	}
	return readRegularFile(path, max)
}

// SourceKey is a private key read from outside the key table, to be
// imported into it.
type SourceKey struct {
	// Path is the file it was read from ("" for a key given inline).
	Path string
	// PEM is the key as it will be written: its one PEM block, in the
	// encoding it came in (PKCS#1 or PKCS#8), without anything around it.
	PEM []byte
	// Signer is the parsed key.
	Signer crypto.Signer
	// Algorithm follows from the key type.
	Algorithm Algorithm
	// Bits is the RSA modulus size, or 256 for Ed25519.
	Bits int
	// Insecure, when not empty, says why the source file was exposed to
	// other users (mode o+r, o+w or g+w): the key may have been copied.
	Insecure string
}

// ReadSourceKey reads a private key file to import (an OpenDKIM .private,
// an openssl genpkey output): a regular file of at most 64 KiB holding a
// PEM RSA key (PKCS#1 or PKCS#8, at least MinRSABits) or a PKCS#8 Ed25519
// key. Unlike LoadKey it does not insist on the owner and mode of the file
// (it belongs to another program), but reports an exposed file in
// SourceKey.Insecure.
func ReadSourceKey(path string) (*SourceKey, error) {
	data, fi, err := readRegular(path, maxKeyFileSize)
	if err != nil {
		return nil, err
	}
	sk, err := sourceKey(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	sk.Path = path
	if m := fi.Mode().Perm(); m&0o026 != 0 {
		sk.Insecure = fmt.Sprintf("%s has mode %04o: other users could read or replace it", path, m)
	}
	return sk, nil
}

// DecodeInlineKey decodes a private key written into an OpenDKIM KeyTable
// itself: base64 of its DER (PKCS#1 or PKCS#8), or PEM.
func DecodeInlineKey(s string) (*SourceKey, error) {
	if strings.Contains(s, "-----BEGIN") {
		return sourceKey([]byte(s))
	}
	der, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil {
		return nil, fmt.Errorf("inline key is neither a file name (starting with /, ./ or ../) nor base64 DER: %w", err)
	}
	typ := "PRIVATE KEY"
	if _, err := x509.ParsePKCS1PrivateKey(der); err == nil {
		typ = "RSA PRIVATE KEY"
	}
	return sourceKey(pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}))
}

// sourceKey parses a PEM private key and keeps only its block.
func sourceKey(data []byte) (*SourceKey, error) {
	signer, err := ParsePrivateKey(data)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(data)
	sk := &SourceKey{Signer: signer, PEM: pem.EncodeToMemory(&pem.Block{Type: block.Type, Bytes: block.Bytes})}
	if r, ok := signer.(*rsa.PrivateKey); ok {
		sk.Algorithm, sk.Bits = RSASHA256, r.N.BitLen()
	} else {
		sk.Algorithm, sk.Bits = Ed25519SHA256, 256
	}
	return sk, nil
}

// ImportItem is one key to copy into the key table as
// <dir>/<Domain>/<Selector>.pem.
type ImportItem struct {
	Domain   string
	Selector string
	Key      *SourceKey
	// Testing records the key as a testing key (its published record
	// carries t=y, as opendkim-genkey -t writes it), so that the records
	// authmilter prints for it say so too.
	Testing bool
}

// ImportStatus is what CheckImport found at an item's place in the table.
type ImportStatus int

// The results of CheckImport.
const (
	// ImportNew: the place is free; Import writes the key.
	ImportNew ImportStatus = iota
	// ImportPresent: the same key is already there (an earlier import);
	// Import only records it in the state file if needed.
	ImportPresent
)

// sameKey reports whether two public keys are the same.
func sameKey(a, b crypto.PublicKey) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	eq, ok := a.(equaler)
	return ok && eq.Equal(b)
}

// CheckImport checks, without writing anything, that it can be imported
// into the key table at dir: its domain and selector are valid names (so a
// name such as "../../etc" never reaches the file system), the selector was
// not used before (retired/), and the place is free or holds the same key.
// A different key at the place, or an unreadable one, is an error.
func CheckImport(dir string, it ImportItem) (ImportStatus, error) {
	d := strings.ToLower(strings.TrimSuffix(it.Domain, "."))
	s := strings.ToLower(it.Selector)
	if !ValidDomain(d) {
		return 0, fmt.Errorf("keys: %q is not a domain name (use the A-label form for IDNs)", it.Domain)
	}
	if !ValidSelector(s) {
		return 0, fmt.Errorf("keys: %q is not a valid selector", it.Selector)
	}
	ddir := filepath.Join(dir, d)
	retired := filepath.Join(ddir, RetiredDir, s+".pem")
	if _, err := os.Lstat(retired); err == nil {
		return 0, fmt.Errorf("keys: %s/%s was used before and retired (%s); a selector is never reused", d, s, retired)
	}
	path := filepath.Join(ddir, s+".pem")
	if _, err := os.Lstat(path); errors.Is(err, os.ErrNotExist) {
		return ImportNew, nil
	} else if err != nil {
		return 0, fmt.Errorf("keys: %s: %w", path, err)
	}
	k, err := LoadKey(path, d, s)
	if err != nil {
		return 0, fmt.Errorf("keys: %s already exists and cannot be read (%w); move it away or import under another selector", path, err)
	}
	if !sameKey(k.Public(), it.Key.Signer.Public()) {
		return 0, fmt.Errorf("keys: %s already exists and holds a different key; a key is never replaced (move it away, or import under another selector)", path)
	}
	return ImportPresent, nil
}

// ownerOf returns a function that gives files to the owner of the key
// table dir when we run as root and dir belongs to another user (the
// daemon's): an administrator imports as root, since the daemon's user
// cannot read another program's keys, and the daemon must then be able to
// read the copies. Otherwise the function does nothing.
func ownerOf(dir string) func(paths ...string) error {
	none := func(...string) error { return nil }
	if os.Geteuid() != 0 {
		return none
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return none
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || st.Uid == 0 {
		return none
	}
	return func(paths ...string) error {
		for _, p := range paths {
			if err := os.Lchown(p, int(st.Uid), int(st.Gid)); err != nil {
				return err
			}
		}
		return nil
	}
}

// Import copies keys into the key table at dir, all or none: every item is
// checked first (CheckImport), then each new key is written as
// <dir>/<domain>/<selector>.pem, mode 0600, atomically and never over an
// existing file (a daemon reloading meanwhile never sees half a key); if a
// write fails, the keys written so far are removed again. Then each key is
// recorded in its domain's state file with FirstSeen = now (kept if
// already set), which orders it among the domain's keys: it counts as
// created now; and Testing, if the item says so. Run as root, the new
// files and folders are given to the owner of dir (see ownerOf). It returns
// the keys as loaded back from the table, in the order of items.
func Import(dir string, items []ImportItem, now time.Time) ([]*Key, error) {
	status := make([]ImportStatus, len(items))
	seen := map[string]int{}
	for i, it := range items {
		st, err := CheckImport(dir, it)
		if err != nil {
			return nil, err
		}
		status[i] = st
		id := strings.ToLower(strings.TrimSuffix(it.Domain, ".")) + "/" + strings.ToLower(it.Selector)
		if j, dup := seen[id]; dup && !sameKey(items[j].Key.Signer.Public(), it.Key.Signer.Public()) {
			return nil, fmt.Errorf("keys: two different keys for %s", id)
		}
		seen[id] = i
	}
	give := ownerOf(dir)
	var written, made []string
	undo := func() {
		for _, p := range written {
			os.Remove(p)
		}
		for i := len(made) - 1; i >= 0; i-- {
			os.Remove(made[i]) // only if empty
		}
	}
	out := make([]*Key, len(items))
	for i, it := range items {
		d := strings.ToLower(strings.TrimSuffix(it.Domain, "."))
		s := strings.ToLower(it.Selector)
		ddir := filepath.Join(dir, d)
		path := filepath.Join(ddir, s+".pem")
		if status[i] == ImportNew {
			if _, err := os.Lstat(path); err == nil {
				// An earlier item of this run with the same key.
				status[i] = ImportPresent
			} else {
				if _, err := os.Lstat(ddir); err != nil {
					made = append(made, ddir)
				}
				if err := os.MkdirAll(ddir, 0o700); err != nil {
					undo()
					return nil, fmt.Errorf("keys: %s/%s: %w", d, s, err)
				}
				if err := writeNew(path, it.Key.PEM, 0o600); err != nil {
					undo()
					return nil, fmt.Errorf("keys: %s/%s: %w", d, s, err)
				}
				written = append(written, path)
				if err := give(ddir, path); err != nil {
					undo()
					return nil, fmt.Errorf("keys: %s/%s: %w", d, s, err)
				}
			}
		}
		k, err := LoadKey(path, d, s)
		if err != nil {
			undo()
			return nil, err
		}
		out[i] = k
	}
	// The keys are in place; the state only orders them. A failure here
	// leaves the keys (a second run completes the state).
	for i, k := range out {
		ddir := filepath.Dir(k.Path)
		st, err := LoadState(ddir)
		if err != nil {
			return out, err
		}
		ks := st.Key(k.Selector)
		if ks.Algorithm == "" {
			ks.Algorithm = k.Algorithm
		}
		if ks.FirstSeen.IsZero() && ks.Created.IsZero() {
			ks.FirstSeen = now
		}
		ks.Testing = ks.Testing || items[i].Testing
		k.Testing = ks.Testing
		if err := st.Save(ddir); err != nil {
			return out, err
		}
		if err := give(filepath.Join(ddir, StateFile)); err != nil {
			return out, fmt.Errorf("keys: %w", err)
		}
		if ks.Created.IsZero() {
			k.Created = ks.FirstSeen
		} else {
			k.Created = ks.Created
		}
	}
	return out, nil
}
