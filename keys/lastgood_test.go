package keys

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestLastGoodPersisted: the last good answers survive a restart through
// PublicationFile, answer Offline lookups, and are checked against the key
// on disk again (a replaced key file does not inherit the publication).
func TestLastGoodPersisted(t *testing.T) {
	dir := t.TempDir()
	path := PublicationPath(dir)
	installKey(t, dir, "example.com", "s1", "rsa2048-pkcs8.pem", 0o600)
	tab, err := LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	k := tab.Keys("example.com")[0]
	name := RecordName(k.Domain, k.Selector)

	var first LastGood
	live := first.Wrap(func(context.Context, string) ([]string, error) { return []string{FormatRecord(k)}, nil })
	if pub := CheckPublished(context.Background(), live, k); pub.State != Published {
		t.Fatalf("live check: %+v", pub)
	}
	if err := first.Save(path); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("saved file: %v %v", fi, err)
	}
	// A second Save with nothing new does not rewrite the file.
	os.Remove(path)
	if err := first.Save(path); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err == nil {
		t.Errorf("Save rewrote an unchanged state")
	}
	first.dirty = true
	if err := first.Save(path); err != nil {
		t.Fatal(err)
	}

	// A restart: nothing in memory, DNS not asked.
	var stale []error
	second := LastGood{Stale: func(_ string, err error) { stale = append(stale, err) }}
	if err := second.Load(path); err != nil {
		t.Fatal(err)
	}
	offline := second.Wrap(Offline)
	if pub := CheckPublished(context.Background(), offline, k); pub.State != Published {
		t.Fatalf("offline check after a restart: %+v", pub)
	}
	if len(stale) != 1 || !IsNotLookedUp(stale[0]) {
		t.Errorf("Stale got %v, want one ErrNotLookedUp", stale)
	}
	// The key file is replaced by another key with the same selector: the
	// saved record does not match it.
	installKey(t, dir, "example.com", "s1", "rsa2048-pkcs1.pem", 0o600)
	tab2, err := LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if pub := CheckPublished(context.Background(), offline, tab2.Keys("example.com")[0]); pub.State != Mismatch {
		t.Errorf("replaced key, offline: %+v, want mismatch", pub)
	}
	// A name never saved is a temporary error.
	if _, err := offline(context.Background(), "other._domainkey.example.com"); !IsNotLookedUp(err) {
		t.Errorf("unknown name offline: %v", err)
	}
	// Prune forgets records of keys that left the table.
	second.Prune(func(n string) bool { return n != name })
	if second.Len() != 0 {
		t.Errorf("Prune kept %v", second.Names())
	}
	// A record really removed is forgotten, on disk too.
	third := LastGood{}
	if err := third.Load(path); err != nil {
		t.Fatal(err)
	}
	gone := third.Wrap(func(context.Context, string) ([]string, error) {
		return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
	})
	gone(context.Background(), name)
	if err := third.Save(path); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	if strings.Contains(string(data), name) {
		t.Errorf("removed record still saved:\n%s", data)
	}
	// A damaged file is an error naming it; nothing is loaded.
	os.WriteFile(filepath.Join(dir, "bad.json"), []byte("{"), 0o600)
	if err := (&LastGood{}).Load(filepath.Join(dir, "bad.json")); err == nil || !strings.Contains(err.Error(), "bad.json") {
		t.Errorf("damaged file: %v", err)
	}
	// The key table ignores the file.
	if tab, err := LoadDir(dir); err != nil || len(tab.Domains()) != 1 {
		t.Errorf("LoadDir with the publication file: %v", err)
	}
}
