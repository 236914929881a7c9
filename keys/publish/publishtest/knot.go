// Package publishtest runs a real authoritative DNS server that accepts
// RFC 2136 dynamic updates signed with TSIG, for tests of automatic key
// publication: Knot DNS (Debian package knot), started from a temporary
// directory with its own configuration on 127.0.0.1 and a free port, and
// killed (by PID) when the test ends.
//
// A missing knotd fails the test with the package to install; nothing is
// skipped.
package publishtest

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/authmilter/authmilter/internal/syncbuf"
)

// KnotBinary is the Knot DNS server binary.
const KnotBinary = "/usr/sbin/knotd"

// InstallHint is what to install when knotd is missing.
const InstallHint = "apt-get install knot"

// TSIGName is the name of the TSIG key the server accepts updates with.
const TSIGName = "authmilter-test."

// Knot is a running Knot DNS server.
type Knot struct {
	// Addr is the server's "127.0.0.1:port" (UDP and TCP).
	Addr string
	// Dir is the server's directory (config, zone files, journal).
	Dir string
	// TSIGSecret is the base64 HMAC-SHA256 secret of TSIGName.
	TSIGSecret string
	// SecretFile holds TSIGSecret alone, mode 0600.
	SecretFile string

	cmd  *exec.Cmd
	logs *syncbuf.Buffer
	done chan struct{}
}

// StartKnot starts knotd authoritative for zones (e.g. "example.com"), each
// with an SOA (negative TTL 1s) and an NS record, allowing updates signed
// with TSIGName. It fails the test if knotd is missing or does not answer.
func StartKnot(t testing.TB, zones ...string) *Knot {
	t.Helper()
	if _, err := os.Stat(KnotBinary); err != nil {
		t.Fatalf("publishtest: %s not found (%v); install it with: %s", KnotBinary, err, InstallHint)
	}
	var lastErr error
	for range 3 {
		k, err := startKnot(t, zones)
		if err == nil {
			return k
		}
		lastErr = err
	}
	t.Fatalf("publishtest: knotd did not start: %v", lastErr)
	return nil
}

func startKnot(t testing.TB, zones []string) (*Knot, error) {
	dir, err := os.MkdirTemp("", "knot-")
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	host, port, _ := net.SplitHostPort(addr)
	raw := make([]byte, 32)
	rand.Read(raw)
	k := &Knot{Addr: addr, Dir: dir, TSIGSecret: base64.StdEncoding.EncodeToString(raw),
		SecretFile: filepath.Join(dir, "tsig.secret"), logs: &syncbuf.Buffer{}, done: make(chan struct{})}
	if err := os.WriteFile(k.SecretFile, []byte(k.TSIGSecret+"\n"), 0o600); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(dir, "db"), 0o700); err != nil {
		return nil, err
	}
	var zs strings.Builder
	for _, z := range zones {
		z = strings.TrimSuffix(z, ".")
		zone := fmt.Sprintf("$ORIGIN %s.\n$TTL 60\n@ IN SOA ns1 hostmaster 1 3600 600 86400 1\n@ IN NS ns1\nns1 IN A 127.0.0.1\n", z)
		if err := os.WriteFile(filepath.Join(dir, z+".zone"), []byte(zone), 0o600); err != nil {
			return nil, err
		}
		fmt.Fprintf(&zs, "  - domain: %s\n    acl: update\n", z)
	}
	conf := fmt.Sprintf(`server:
    rundir: "%[1]s"
    listen: %[2]s@%[3]s
    pidfile: "%[1]s/knot.pid"
log:
  - target: stderr
    any: info
database:
    storage: "%[1]s/db"
control:
    listen: "%[1]s/knot.sock"
key:
  - id: %[4]s
    algorithm: hmac-sha256
    secret: %[5]s
acl:
  - id: update
    key: %[4]s
    action: update
template:
  - id: default
    storage: "%[1]s"
    file: "%%s.zone"
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: changes
zone:
%[6]s`, dir, host, port, TSIGName, k.TSIGSecret, zs.String())
	confPath := filepath.Join(dir, "knot.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	k.cmd = exec.Command(KnotBinary, "-c", confPath)
	k.cmd.Stdout, k.cmd.Stderr = k.logs, k.logs
	if err := k.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", KnotBinary, err)
	}
	go func() { k.cmd.Wait(); close(k.done) }()
	t.Cleanup(k.stop)
	deadline := time.Now().Add(10 * time.Second)
	for {
		ready := true
		for _, z := range zones {
			if _, err := k.query(dns.Fqdn(z), dns.TypeSOA); err != nil {
				ready = false
				break
			}
		}
		if ready {
			return k, nil
		}
		select {
		case <-k.done:
			return nil, fmt.Errorf("knotd exited: %s", k.logs.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			k.stop()
			return nil, fmt.Errorf("knotd does not answer on %s: %s", addr, k.logs.String())
		}
	}
}

// stop kills the server by its PID and waits for it.
func (k *Knot) stop() {
	select {
	case <-k.done:
		return
	default:
	}
	k.cmd.Process.Kill()
	<-k.done
}

// Logs returns what knotd logged so far.
func (k *Knot) Logs() string { return k.logs.String() }

func (k *Knot) query(name string, qtype uint16) (*dns.Msg, error) {
	q := new(dns.Msg)
	q.SetQuestion(name, qtype)
	c := &dns.Client{Net: "tcp", Timeout: time.Second}
	r, _, err := c.Exchange(q, k.Addr)
	if err != nil {
		return nil, err
	}
	if r.Rcode != dns.RcodeSuccess && r.Rcode != dns.RcodeNameError {
		return nil, fmt.Errorf("%s %s: %s", name, dns.TypeToString[qtype], dns.RcodeToString[r.Rcode])
	}
	return r, nil
}

// TXT returns the TXT records at name as the server holds them now, each
// record's strings joined; nil if there are none.
func (k *Knot) TXT(t testing.TB, name string) []string {
	t.Helper()
	r, err := k.query(dns.Fqdn(name), dns.TypeTXT)
	if err != nil {
		t.Fatalf("publishtest: query %s: %v", name, err)
	}
	var out []string
	for _, rr := range r.Answer {
		if txt, ok := rr.(*dns.TXT); ok {
			out = append(out, strings.Join(txt.Txt, ""))
		}
	}
	return out
}

// LookupTXT asks the server for the TXT records at name, with the error
// conventions of keys.TXTLookup.
func (k *Knot) LookupTXT(_ context.Context, name string) ([]string, error) {
	r, err := k.query(dns.Fqdn(name), dns.TypeTXT)
	if err != nil {
		return nil, &net.DNSError{Err: err.Error(), Name: name, IsTemporary: true}
	}
	var out []string
	for _, rr := range r.Answer {
		if txt, ok := rr.(*dns.TXT); ok {
			out = append(out, strings.Join(txt.Txt, ""))
		}
	}
	if len(out) == 0 {
		return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
	}
	return out, nil
}

// freeAddr finds a port on 127.0.0.1 that is free for both UDP and TCP.
func freeAddr() (string, error) {
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", err
		}
		addr := l.Addr().String()
		pc, err := net.ListenPacket("udp", addr)
		l.Close()
		if err != nil {
			continue
		}
		pc.Close()
		return addr, nil
	}
	return "", fmt.Errorf("no free port on 127.0.0.1")
}
