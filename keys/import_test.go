package keys

import (
	"encoding/base64"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestReadSourceKey reads keys as other tools leave them, and refuses what
// cannot be imported.
func TestReadSourceKey(t *testing.T) {
	genkey := tool(t, "/usr/sbin/opendkim-genkey", "opendkim-tools")
	openssl := tool(t, "/usr/bin/openssl", "openssl")
	dir := t.TempDir()
	run(t, dir, genkey, "-d", "example.com", "-s", "mail")
	run(t, dir, genkey, "-d", "example.com", "-s", "small", "-b", "1024")
	run(t, dir, openssl, "genrsa", "-traditional", "-out", "pkcs1.pem", "2048")
	run(t, dir, openssl, "genpkey", "-algorithm", "ed25519", "-out", "ed.pem")
	run(t, dir, openssl, "genrsa", "-traditional", "-out", "tiny.pem", "512")
	fifo := filepath.Join(dir, "fifo.private")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big.private")
	if err := os.WriteFile(big, make([]byte, maxKeyFileSize+1), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "garbage.private"), []byte("not a key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	exposed := filepath.Join(dir, "exposed.private")
	data, _ := os.ReadFile(filepath.Join(dir, "mail.private"))
	if err := os.WriteFile(exposed, data, 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chmod(exposed, 0o644)
	tests := []struct {
		file     string
		algo     Algorithm
		bits     int
		pemType  string
		insecure bool
		wantErr  string
	}{
		{file: "mail.private", algo: RSASHA256, bits: 2048, pemType: "PRIVATE KEY"},
		{file: "small.private", algo: RSASHA256, bits: 1024, pemType: "PRIVATE KEY"},
		{file: "pkcs1.pem", algo: RSASHA256, bits: 2048, pemType: "RSA PRIVATE KEY"},
		{file: "ed.pem", algo: Ed25519SHA256, bits: 256, pemType: "PRIVATE KEY"},
		{file: "exposed.private", algo: RSASHA256, bits: 2048, pemType: "PRIVATE KEY", insecure: true},
		{file: "tiny.pem", wantErr: "RSA key has 512 bits; at least 1024"},
		{file: "fifo.private", wantErr: "not a regular file (a FIFO)"},
		{file: "big.private", wantErr: "larger than"},
		{file: "garbage.private", wantErr: "no PEM block"},
		{file: "missing.private", wantErr: "no such file"},
		{file: ".", wantErr: "not a regular file (a folder)"},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			sk, err := ReadSourceKey(filepath.Join(dir, tt.file))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if sk.Algorithm != tt.algo || sk.Bits != tt.bits || (sk.Insecure != "") != tt.insecure {
				t.Errorf("got %s %d insecure=%q", sk.Algorithm, sk.Bits, sk.Insecure)
			}
			b, rest := pem.Decode(sk.PEM)
			if b == nil || b.Type != tt.pemType || len(strings.TrimSpace(string(rest))) != 0 {
				t.Errorf("PEM to write: %q", sk.PEM)
			}
		})
	}
}

func TestDecodeInlineKey(t *testing.T) {
	for _, src := range []string{"rsa2048-pkcs1.pem", "rsa2048-pkcs8.pem", "ed25519-pkcs8.pem"} {
		data, err := os.ReadFile(filepath.Join("..", "testdata", "keys", src))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := pem.Decode(data)
		sk, err := DecodeInlineKey(base64.StdEncoding.EncodeToString(b.Bytes))
		if err != nil {
			t.Fatalf("%s: %v", src, err)
		}
		want, _ := ParsePrivateKey(data)
		if !sameKey(sk.Signer.Public(), want.Public()) {
			t.Errorf("%s: different key", src)
		}
		if back, _ := pem.Decode(sk.PEM); back.Type != b.Type {
			t.Errorf("%s: written as %s, was %s", src, back.Type, b.Type)
		}
	}
	for _, bad := range []string{"not base64!", base64.StdEncoding.EncodeToString([]byte("garbage"))} {
		if _, err := DecodeInlineKey(bad); err == nil {
			t.Errorf("DecodeInlineKey(%q) succeeded", bad)
		}
	}
}

func sourceFrom(t *testing.T, src string) *SourceKey {
	t.Helper()
	sk, err := ReadSourceKey(filepath.Join("..", "testdata", "keys", src))
	if err != nil {
		t.Fatal(err)
	}
	return sk
}

// TestImport: all or nothing, never over another key, idempotent.
func TestImport(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys")
	rsa := sourceFrom(t, "rsa2048-pkcs1.pem")
	rsa8 := sourceFrom(t, "rsa2048-pkcs8.pem")
	ed := sourceFrom(t, "ed25519-pkcs8.pem")
	now := time.Date(2026, 11, 5, 10, 0, 0, 0, time.UTC)

	// A bad item anywhere: nothing is written.
	_, err := Import(dir, []ImportItem{
		{Domain: "example.com", Selector: "mail", Key: rsa},
		{Domain: "example.com", Selector: "../../etc", Key: ed},
	}, now)
	if err == nil || !strings.Contains(err.Error(), `"../../etc" is not a valid selector`) {
		t.Fatalf("err = %v", err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("something was written: %v", err)
	}
	_, err = Import(dir, []ImportItem{
		{Domain: "example.com", Selector: "mail", Key: rsa},
		{Domain: "example.com", Selector: "mail", Key: ed},
	}, now)
	if err == nil || !strings.Contains(err.Error(), "two different keys for example.com/mail") {
		t.Fatalf("err = %v", err)
	}

	ks, err := Import(dir, []ImportItem{
		{Domain: "Example.COM.", Selector: "Mail", Key: rsa},
		{Domain: "example.com", Selector: "mail", Key: rsa}, // the same key twice: once
		{Domain: "example.com", Selector: "ed", Key: ed, Testing: true},
		{Domain: "example.net", Selector: "s1", Key: rsa8},
	}, now)
	if err != nil {
		t.Fatal(err)
	}
	if len(ks) != 4 || ks[0].ID() != "example.com/mail" || ks[2].Algorithm != Ed25519SHA256 || ks[3].ID() != "example.net/s1" {
		t.Fatalf("keys %v", ks)
	}
	for _, k := range ks {
		fi, err := os.Stat(k.Path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v", k.Path, fi.Mode())
		}
		if !k.Created.Equal(now) {
			t.Errorf("%s: Created %v", k.ID(), k.Created)
		}
	}
	st, err := LoadState(filepath.Join(dir, "example.com"))
	if err != nil {
		t.Fatal(err)
	}
	if ks := st.Keys["mail"]; ks == nil || !ks.FirstSeen.Equal(now) || ks.Algorithm != RSASHA256 || !ks.Created.IsZero() || ks.Testing {
		t.Errorf("state %+v", st.Keys["mail"])
	}
	if ks := st.Keys["ed"]; ks == nil || !ks.Testing {
		t.Errorf("state of the testing key: %+v", st.Keys["ed"])
	}
	// The table loads them; the source files are still there.
	tab, err := LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := len(tab.All()); got != 3 {
		t.Errorf("table has %d keys", got)
	}
	for _, k := range tab.All() {
		if k.Testing != (k.Selector == "ed") || !k.Created.Equal(now) {
			t.Errorf("%s loaded with Testing %v, Created %v", k.ID(), k.Testing, k.Created)
		}
	}
	if _, err := os.Stat(filepath.Join("..", "testdata", "keys", "rsa2048-pkcs1.pem")); err != nil {
		t.Fatal(err)
	}

	// Again: nothing changes, FirstSeen stays.
	if _, err := Import(dir, []ImportItem{{Domain: "example.com", Selector: "mail", Key: rsa}}, now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if st, _ := LoadState(filepath.Join(dir, "example.com")); !st.Keys["mail"].FirstSeen.Equal(now) {
		t.Errorf("FirstSeen moved to %v", st.Keys["mail"].FirstSeen)
	}
	// Another key at a taken place, or at a retired selector: refused,
	// and the other items of the run are not written.
	if err := os.MkdirAll(filepath.Join(dir, "example.org", RetiredDir), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "example.org", RetiredDir, "old.pem"), rsa.PEM, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		item ImportItem
		want string
	}{
		{ImportItem{Domain: "example.com", Selector: "mail", Key: ed}, "already exists and holds a different key"},
		{ImportItem{Domain: "example.org", Selector: "old", Key: rsa}, "was used before and retired"},
		{ImportItem{Domain: "../../etc", Selector: "x", Key: rsa}, "is not a domain name"},
	} {
		_, err := Import(dir, []ImportItem{{Domain: "example.info", Selector: "new", Key: rsa}, tt.item}, now)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%+v: err = %v, want %q", tt.item, err, tt.want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "example.info", "new.pem")); !os.IsNotExist(err) {
		t.Errorf("example.info/new.pem written by a failed import: %v", err)
	}
}

// TestImportRollsBack: when a write fails half way, the keys written by the
// run are removed again.
func TestImportRollsBack(t *testing.T) {
	dir := t.TempDir()
	rsa := sourceFrom(t, "rsa2048-pkcs1.pem")
	// A dangling symbolic link passes the checks (nothing is there) but
	// cannot be made a folder (root can write anywhere else).
	if err := os.Symlink(filepath.Join(dir, "nowhere", "deeper"), filepath.Join(dir, "example.net")); err != nil {
		t.Fatal(err)
	}
	_, err := Import(dir, []ImportItem{
		{Domain: "example.com", Selector: "mail", Key: rsa},
		{Domain: "example.net", Selector: "mail", Key: rsa},
	}, time.Now())
	if err == nil {
		t.Fatal("import into a file succeeded")
	}
	if _, err := os.Stat(filepath.Join(dir, "example.com")); !os.IsNotExist(err) {
		t.Errorf("example.com/ left behind: %v", err)
	}
}

// TestImportAsRootGivesToOwner: run as root, the copies belong to the
// owner of the key table (the daemon's user), who must read them; run as
// anyone else, to that user.
func TestImportAsRootGivesToOwner(t *testing.T) {
	uid, gid := uint32(os.Geteuid()), uint32(os.Getegid())
	dir := filepath.Join(t.TempDir(), "keys")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if uid == 0 {
		uid, gid = 65534, 65534 // nobody
		if err := os.Chown(dir, int(uid), int(gid)); err != nil {
			t.Fatal(err)
		}
	}
	ks, err := Import(dir, []ImportItem{{Domain: "example.com", Selector: "mail", Key: sourceFrom(t, "rsa2048-pkcs1.pem")}}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{filepath.Dir(ks[0].Path), ks[0].Path, filepath.Join(filepath.Dir(ks[0].Path), StateFile)} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st := fi.Sys().(*syscall.Stat_t); st.Uid != uid || st.Gid != gid {
			t.Errorf("%s belongs to %d:%d, want %d:%d", p, st.Uid, st.Gid, uid, gid)
		}
	}
}
