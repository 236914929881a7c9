package keys

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
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

// TestLastGoodSince: the time a record was first seen published
// everywhere is kept while its TXT values stay the same, survives a
// restart, restarts with another record, and is forgotten with the record;
// a version 1 file is read with MigratedSince, so an upgrade makes no key
// wait again.
func TestLastGoodSince(t *testing.T) {
	dir := t.TempDir()
	path := PublicationPath(dir)
	const name = "s1._domainkey.example.com"
	t0 := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
	var l LastGood
	steps := []struct {
		txt       []string
		at        time.Duration
		wantSince time.Duration
	}{
		{[]string{"v=DKIM1; p=A"}, 0, 0},
		{[]string{"v=DKIM1; p=A"}, time.Minute, 0},
		{[]string{"other", "v=DKIM1; p=A"}, 2 * time.Minute, 2 * time.Minute}, // another record set: starts over
		{[]string{"v=DKIM1; p=A", "other"}, 3 * time.Minute, 2 * time.Minute}, // the same set, shuffled
		{[]string{"v=DKIM1; p=B"}, 4 * time.Minute, 4 * time.Minute},
	}
	for i, st := range steps {
		if got := l.Published(name, st.txt, 5*time.Minute, t0.Add(st.at), nil); !got.Equal(t0.Add(st.wantSince)) {
			t.Errorf("step %d: since %v, want %v", i, got, t0.Add(st.wantSince))
		}
	}
	if err := l.Save(path); err != nil {
		t.Fatal(err)
	}
	var back LastGood
	if err := back.Load(path); err != nil {
		t.Fatal(err)
	}
	a, ok := back.Answer(name)
	if !ok || !a.Since.Equal(t0.Add(4*time.Minute)) || a.Hold != 5*time.Minute || len(a.TXT) != 1 || a.TXT[0] != "v=DKIM1; p=B" {
		t.Errorf("after a restart: %+v %v", a, ok)
	}
	// A Wrap lookup with the same answer keeps Since; another answer drops it.
	same := back.Wrap(func(context.Context, string) ([]string, error) { return []string{"v=DKIM1; p=B"}, nil })
	same(context.Background(), name)
	if a, _ := back.Answer(name); !a.Since.Equal(t0.Add(4 * time.Minute)) {
		t.Errorf("Wrap with the same answer: since %v", a.Since)
	}
	other := back.Wrap(func(context.Context, string) ([]string, error) { return []string{"v=DKIM1; p=C"}, nil })
	other(context.Background(), name)
	if a, _ := back.Answer(name); !a.Since.IsZero() {
		t.Errorf("Wrap with another answer: since %v", a.Since)
	}
	back.Forget(name)
	if _, ok := back.Answer(name); ok || back.Len() != 0 {
		t.Errorf("Forget kept %v", back.Names())
	}

	// Version 1, as the previous release wrote it.
	v1 := `{"version": 1, "records": {"` + name + `": {"txt": ["v=DKIM1; p=A"], "seen": "2026-12-01T00:00:00Z"}}}`
	if err := os.WriteFile(path, []byte(v1), 0o600); err != nil {
		t.Fatal(err)
	}
	var up LastGood
	if err := up.Load(path); err != nil {
		t.Fatal(err)
	}
	kdir := t.TempDir()
	k1, err := LoadKey(installKey(t, kdir, "example.com", "s1", "rsa2048-pkcs1.pem", 0o600), "example.com", "s1")
	if err != nil {
		t.Fatal(err)
	}
	k2, err := LoadKey(installKey(t, kdir, "example.com", "s2", "rsa2048-pkcs8.pem", 0o600), "example.com", "s1")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := up.Confirmed(k1); ok {
		t.Errorf("a version 1 answer confirms a key: it names none")
	}
	if got := up.Published(name, []string{"v=DKIM1; p=A"}, time.Hour, t0, k1); !got.Equal(MigratedSince) {
		t.Errorf("migrated since %v, want %v", got, MigratedSince)
	}
	if err := up.Save(path); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	if !strings.Contains(string(data), `"version":3`) || !strings.Contains(string(data), `"published_since":"1970-01-01T00:00:00Z"`) ||
		!strings.Contains(string(data), `"key_sha256":"`+k1.Fingerprint()+`"`) {
		t.Errorf("migrated file:\n%s", data)
	}
	// Confirmed: for the key found published only, after a restart too.
	var again LastGood
	if err := again.Load(path); err != nil {
		t.Fatal(err)
	}
	if a, ok := again.Confirmed(k1); !ok || !a.Since.Equal(MigratedSince) {
		t.Errorf("Confirmed(k1) = %v, %v", a, ok)
	}
	if _, ok := again.Confirmed(k2); ok {
		t.Errorf("another key file is confirmed by f1's answer")
	}
	// An unknown version is an error.
	os.WriteFile(path, []byte(`{"version": 9, "records": {}}`), 0o600)
	if err := (&LastGood{}).Load(path); err == nil || !strings.Contains(err.Error(), "unknown version 9") {
		t.Errorf("version 9: %v", err)
	}
}
