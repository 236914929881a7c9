package keys

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// loadDirWithin runs LoadDir and fails the test if it does not return
// within a generous bound: a key table must never block a reload.
func loadDirWithin(t *testing.T, dir string) (*Table, error) {
	t.Helper()
	type result struct {
		t   *Table
		err error
	}
	done := make(chan result, 1)
	go func() {
		tab, err := LoadDir(dir)
		done <- result{tab, err}
	}()
	select {
	case r := <-done:
		return r.t, r.err
	case <-time.After(20 * time.Second):
		t.Fatalf("LoadDir(%s) blocked for 20s", dir)
		return nil, nil
	}
}

// TestLoadDirOnlyRegularFiles: a FIFO (or a socket, or a device) named
// like a key is refused with its path, without ever blocking on it.
func TestLoadDirOnlyRegularFiles(t *testing.T) {
	dir := t.TempDir()
	installKey(t, dir, "example.com", "good", "rsa2048-pkcs8.pem", 0o600)
	fifo := filepath.Join(dir, "example.com", "x.pem")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := loadDirWithin(t, dir)
	if err == nil || !strings.Contains(err.Error(), fifo) || !strings.Contains(err.Error(), "not a regular file") {
		t.Fatalf("LoadDir with a FIFO key: %v, want an error naming %s as not a regular file", err, fifo)
	}
	// A symlink to a FIFO is no better.
	os.Remove(fifo)
	other := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(other, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(other, fifo); err != nil {
		t.Fatal(err)
	}
	if _, err := loadDirWithin(t, dir); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Fatalf("LoadDir with a symlink to a FIFO: %v", err)
	}
	// A symlink to a regular key file is read.
	os.Remove(fifo)
	target := installKey(t, t.TempDir(), "x.example", "s", "ed25519-pkcs8.pem", 0o600)
	if err := os.Symlink(target, fifo); err != nil {
		t.Fatal(err)
	}
	tab, err := loadDirWithin(t, dir)
	if err != nil || len(tab.Keys("example.com")) != 2 {
		t.Fatalf("LoadDir with a symlinked key: %v", err)
	}
}

// TestLoadDirOwner: a key file owned by someone other than the daemon's
// user or root is refused with its path. It needs root (to chown).
func TestLoadDirOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give a key file to another user")
	}
	dir := t.TempDir()
	p := installKey(t, dir, "example.com", "s1", "rsa2048-pkcs8.pem", 0o600)
	if _, err := LoadDir(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(p, 12345, 12345); err != nil {
		t.Fatal(err)
	}
	_, err := LoadDir(dir)
	if err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), "owned by uid 12345") {
		t.Fatalf("LoadDir with a key owned by uid 12345: %v", err)
	}
	// The owner of keys.dir controls the whole table anyway: a key it
	// owns is accepted when the reader is root (sudo authmilter check).
	if err := os.Chown(dir, 12345, 12345); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadDir(dir); err != nil {
		t.Fatalf("key owned by the owner of keys.dir, read as root: %v", err)
	}
}

// TestLoadDirFolderModes: keys.dir and the domain folders must not be
// writable by group or others (anyone could swap a key in).
func TestLoadDirFolderModes(t *testing.T) {
	for _, tt := range []struct {
		name   string
		folder func(dir string) string
		mode   os.FileMode
	}{
		{"domain folder group-writable", func(dir string) string { return filepath.Join(dir, "example.com") }, 0o770},
		{"domain folder world-writable", func(dir string) string { return filepath.Join(dir, "example.com") }, 0o707},
		{"keys.dir world-writable", func(dir string) string { return dir }, 0o777},
		{"keys.dir sticky and world-writable", func(dir string) string { return dir }, 0o777 | os.ModeSticky},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "keys")
			installKey(t, dir, "example.com", "s1", "rsa2048-pkcs8.pem", 0o600)
			folder := tt.folder(dir)
			if err := os.Chmod(folder, tt.mode); err != nil {
				t.Fatal(err)
			}
			_, err := LoadDir(dir)
			if err == nil || !strings.Contains(err.Error(), folder) || !strings.Contains(err.Error(), "writable by group or others") {
				t.Fatalf("LoadDir: %v, want an error naming %s", err, folder)
			}
		})
	}
}

// TestLoadDirMissing: a missing keys.dir is an empty table that says so
// (the daemon refuses to switch to it on reload); a keys.dir that is not a
// folder is an error.
func TestLoadDirMissing(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nope")
	tab, err := LoadDir(dir)
	if err != nil || !tab.Missing() || len(tab.All()) != 0 {
		t.Fatalf("LoadDir(missing) = %v, %v; want an empty table marked missing", tab, err)
	}
	if err := os.WriteFile(dir, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadDir(dir); err == nil || !strings.Contains(err.Error(), dir) {
		t.Fatalf("LoadDir(a file) = %v, want an error naming it", err)
	}
	ok := t.TempDir()
	if tab, err := LoadDir(ok); err != nil || tab.Missing() {
		t.Fatalf("LoadDir(empty folder) = %v, %v", tab, err)
	}
}
