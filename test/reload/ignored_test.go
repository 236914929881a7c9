package reload

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/authmilter/authmilter/internal/testdns"
)

// A key left under OpenDKIM's name is not silently unused: the daemon
// names it at start, and again when a reload finds another one.
func TestDaemonLogsIgnoredKeyFiles(t *testing.T) {
	dns := testdns.Start(t)
	dir := t.TempDir()
	keyDir := filepath.Join(dir, "keys")
	genKey(t, keyDir, "example.com", "2026-12", "rsa-2048")
	private := filepath.Join(keyDir, "example.com", "mail.private")
	if err := os.WriteFile(private, []byte("not read"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, sock, metrics := writeConfig(t, dir, dns.Addr(), keyDir, "")
	d := startDaemon(t, cfg, sock, metrics)
	d.waitLog(t, "mail.private: an OpenDKIM key is not read as is", 0, 10*time.Second)

	from := d.logLen()
	if err := os.WriteFile(filepath.Join(keyDir, "example.com", "mail.txt"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	d.hup(t)
	d.waitLog(t, "mail.txt: not a key", from, 10*time.Second)
}
