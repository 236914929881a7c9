package main

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/authmilter/authmilter/keys"
)

// The table layout. Domain i (1-based) is d%06d.example and has one
// RSA-2048 key, selector rsaSelector; every fourth domain (i divisible by
// 4) also has an Ed25519 key, selector edSelector, so n domains hold
// n + n/4 keys and every domain signs with RSA, as in the figures.
// The keys come from a pool generated once (RSA-2048 takes 0.1-0.5 s per
// key: 100,000 would take hours): domain i uses RSA key (i-1) mod the pool
// size and Ed25519 key (i/4-1) mod the pool size, each written to its own
// file.
const (
	rsaSelector = "2026-11"
	edSelector  = "2026-11e"
	// layoutVersion changes whenever the layout above changes, so that a
	// cached table of another layout is rebuilt.
	layoutVersion = 1
	// tableMarker, in a table's folder, says the table is complete and
	// what it holds. It starts with a dot: the key table ignores it.
	tableMarker = ".scale-table.json"
	poolMarker  = ".scale-pool.json"
)

// keyTime is the modification time of every table key, so that a key the
// benchmark adds later is always the newest (keys are ordered by it when
// there is no state file).
var keyTime = time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)

// domainName is the name of domain i.
func domainName(i int) string { return fmt.Sprintf("d%06d.example", i) }

// hasEd25519 reports whether domain i has an Ed25519 key too.
func hasEd25519(i int) bool { return i%4 == 0 }

// keyCount is the number of keys of an n-domain table.
func keyCount(n int) int { return n + n/4 }

// poolKey is one key of the pool.
type poolKey struct {
	pem    []byte // PKCS#8 PEM, as keygen writes it
	record string // the TXT value that publishes it
}

// pool is the set of keys the tables are made of.
type pool struct {
	rsa, ed []poolKey
	// sum identifies the pool's content: a table made of another pool is
	// rebuilt.
	sum string
}

// poolInfo is the content of poolMarker.
type poolInfo struct {
	Size int `json:"size"`
}

// loadPool returns the pool of size RSA-2048 and size Ed25519 keys kept in
// dir, generating it first if dir does not hold a complete one.
func loadPool(dir string, size int) (*pool, error) {
	if size < 1 {
		return nil, fmt.Errorf("pool size %d: want at least 1", size)
	}
	var info poolInfo
	if err := readMarker(filepath.Join(dir, poolMarker), &info); err != nil || info.Size != size {
		if err := buildPool(dir, size); err != nil {
			return nil, err
		}
	}
	p := &pool{}
	h := sha256.New()
	for i := 0; i < size; i++ {
		for _, kind := range []string{"rsa", "ed"} {
			path := filepath.Join(dir, fmt.Sprintf("%s-%02d.pem", kind, i))
			data, err := os.ReadFile(path)
			if err != nil {
				return nil, fmt.Errorf("key pool: %w", err)
			}
			rec, err := recordOf(data)
			if err != nil {
				return nil, fmt.Errorf("key pool: %s: %w", path, err)
			}
			h.Write(data)
			if kind == "rsa" {
				p.rsa = append(p.rsa, poolKey{data, rec})
			} else {
				p.ed = append(p.ed, poolKey{data, rec})
			}
		}
	}
	p.sum = hex.EncodeToString(h.Sum(nil))
	return p, nil
}

// buildPool generates a pool in dir (replacing whatever is there) by way
// of a temporary folder, so that an interrupted build leaves no pool that
// looks complete.
func buildPool(dir string, size int) error {
	tmp := dir + ".building"
	if err := os.RemoveAll(tmp); err != nil {
		return fmt.Errorf("key pool: %w", err)
	}
	if err := mkdirPrivate(tmp); err != nil {
		return fmt.Errorf("key pool: %w", err)
	}
	for i := 0; i < size; i++ {
		rk, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			return fmt.Errorf("key pool: generate RSA-2048: %w", err)
		}
		_, ek, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return fmt.Errorf("key pool: generate Ed25519: %w", err)
		}
		for kind, k := range map[string]crypto.Signer{"rsa": rk, "ed": ek} {
			der, err := x509.MarshalPKCS8PrivateKey(k)
			if err != nil {
				return fmt.Errorf("key pool: encode: %w", err)
			}
			data := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
			if err := os.WriteFile(filepath.Join(tmp, fmt.Sprintf("%s-%02d.pem", kind, i)), data, 0o600); err != nil {
				return fmt.Errorf("key pool: %w", err)
			}
		}
	}
	if err := writeMarker(filepath.Join(tmp, poolMarker), poolInfo{Size: size}); err != nil {
		return fmt.Errorf("key pool: %w", err)
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("key pool: %w", err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		return fmt.Errorf("key pool: %w", err)
	}
	return nil
}

// recordOf returns the DKIM TXT value that publishes the PEM private key
// data, made the way `authmilter keygen` makes it.
func recordOf(data []byte) (string, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return "", errors.New("no PEM block")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return "", err
	}
	switch k := k.(type) {
	case *rsa.PrivateKey:
		return "v=DKIM1; k=rsa; p=" + keys.PublicKeyData(k.Public()), nil
	case ed25519.PrivateKey:
		return "v=DKIM1; k=ed25519; p=" + keys.PublicKeyData(k.Public()), nil
	}
	return "", fmt.Errorf("unexpected key type %T", k)
}

// tableKey is one key of a table.
type tableKey struct {
	domain, selector string
	key              *poolKey
}

// path is the key's file in the table folder dir.
func (k tableKey) path(dir string) string {
	return filepath.Join(dir, k.domain, k.selector+".pem")
}

// recordName is the fully qualified name of the key's record.
func (k tableKey) recordName() string {
	return keys.RecordName(k.domain, k.selector) + "."
}

// tableKeys calls fn for each key of the n-domain table, in order.
func (p *pool) tableKeys(n int, fn func(tableKey) error) error {
	for i := 1; i <= n; i++ {
		d := domainName(i)
		if err := fn(tableKey{d, rsaSelector, &p.rsa[(i-1)%len(p.rsa)]}); err != nil {
			return err
		}
		if hasEd25519(i) {
			if err := fn(tableKey{d, edSelector, &p.ed[(i/4-1)%len(p.ed)]}); err != nil {
				return err
			}
		}
	}
	return nil
}

// tableInfo is the content of tableMarker.
type tableInfo struct {
	Layout  int    `json:"layout"`
	Domains int    `json:"domains"`
	Keys    int    `json:"keys"`
	Pool    string `json:"pool"`
}

// buildTable makes sure dir holds the n-domain table made of p, and
// reports whether it was there already. A folder of another table made by
// this tool (another size, pool or layout) is replaced; a folder that this
// tool did not make is an error, never removed. Folders are mode 0700, key
// files 0600, as the daemon requires.
func buildTable(dir string, n int, p *pool) (reused bool, err error) {
	want := tableInfo{Layout: layoutVersion, Domains: n, Keys: keyCount(n), Pool: p.sum}
	var have tableInfo
	switch err := readMarker(filepath.Join(dir, tableMarker), &have); {
	case err == nil && have == want:
		if err := checkOwned(dir); err != nil {
			return false, err
		}
		return true, nil
	case err == nil:
		// Ours, but another table: replaced below.
	case errors.Is(err, os.ErrNotExist):
		if entries, rerr := os.ReadDir(dir); rerr == nil && len(entries) > 0 {
			return false, fmt.Errorf("%s exists and was not made by this tool (no %s); remove it or choose another -cache", dir, tableMarker)
		}
	default:
		return false, err
	}
	tmp := dir + ".building"
	if err := os.RemoveAll(tmp); err != nil {
		return false, fmt.Errorf("key table: %w", err)
	}
	if err := mkdirPrivate(tmp); err != nil {
		return false, fmt.Errorf("key table: %w", err)
	}
	made := map[string]bool{}
	err = p.tableKeys(n, func(k tableKey) error {
		if !made[k.domain] {
			if err := mkdirPrivate(filepath.Join(tmp, k.domain)); err != nil {
				return err
			}
			made[k.domain] = true
		}
		path := k.path(tmp)
		if err := os.WriteFile(path, k.key.pem, 0o600); err != nil {
			return err
		}
		return os.Chtimes(path, keyTime, keyTime)
	})
	if err != nil {
		return false, fmt.Errorf("key table: %w", err)
	}
	if err := writeMarker(filepath.Join(tmp, tableMarker), want); err != nil {
		return false, fmt.Errorf("key table: %w", err)
	}
	if err := os.RemoveAll(dir); err != nil {
		return false, fmt.Errorf("key table: %w", err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		return false, fmt.Errorf("key table: %w", err)
	}
	return false, nil
}

// checkOwned fails unless dir belongs to the user we run as: the daemon
// refuses key files owned by another user.
func checkOwned(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Getuid() {
		return fmt.Errorf("%s belongs to user %d, not to us (%d): the daemon would refuse its keys; remove it or choose another -cache", dir, st.Uid, os.Getuid())
	}
	return nil
}

// mkdirPrivate makes dir (and its parents) and gives it mode 0700
// whatever the umask or an earlier run left.
func mkdirPrivate(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	return os.Chmod(dir, 0o700)
}

func readMarker(path string, v any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

func writeMarker(path string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(data, '\n'), 0o600)
}

// records returns the DNS records of the n-domain table: record name
// (lower case, fully qualified) to TXT character-strings.
func (p *pool) records(n int) map[string][]string {
	out := make(map[string][]string, keyCount(n))
	split := map[*poolKey][]string{} // the strings are shared by the domains of one pool key
	p.tableKeys(n, func(k tableKey) error {
		s, ok := split[k.key]
		if !ok {
			s = keys.RecordStrings(k.key.record)
			split[k.key] = s
		}
		out[strings.ToLower(k.recordName())] = s
		return nil
	})
	return out
}
