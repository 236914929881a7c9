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
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/authmilter/authmilter/internal/dnsproc"
)

// KnotBinary is the Knot DNS server binary.
const KnotBinary = dnsproc.KnotBinary

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

	proc *dnsproc.Process
}

// StartKnot starts knotd authoritative for zones (e.g. "example.com"), each
// with an SOA (negative TTL 1s) and an NS record, allowing updates signed
// with TSIGName. It fails the test if knotd is missing or does not answer.
func StartKnot(t testing.TB, zones ...string) *Knot {
	t.Helper()
	dnsproc.Require(t, "publishtest", InstallHint, KnotBinary)
	texts := make(map[string]string, len(zones))
	for _, z := range zones {
		z = strings.TrimSuffix(z, ".")
		texts[z] = fmt.Sprintf("$ORIGIN %s.\n$TTL 60\n@ IN SOA ns1 hostmaster 1 3600 600 86400 1\n@ IN NS ns1\nns1 IN A 127.0.0.1\n", z)
	}
	// Another process may take the free port before knotd binds it.
	var lastErr error
	for range 3 {
		addr, err := dnsproc.FreeLoopbackAddr()
		if err == nil {
			var k *Knot
			if k, err = launchKnot(t, addr, texts); err == nil {
				return k
			}
		}
		lastErr = err
	}
	t.Fatalf("publishtest: knotd did not start: %v", lastErr)
	return nil
}

// launchKnot starts knotd on addr ("ip:port") from a new directory,
// authoritative for the zones given as zone-file texts by origin (without
// the final dot) and accepting updates signed with TSIGName, and waits
// until it serves every zone; a knotd that does not is killed.
func launchKnot(t testing.TB, addr string, zones map[string]string) (*Knot, error) {
	// Not t.TempDir: a long test name would make the control socket's
	// path longer than a unix socket's 107 bytes.
	dir, err := os.MkdirTemp("", "knot-")
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	k := &Knot{Addr: addr, Dir: dir, SecretFile: filepath.Join(dir, "tsig.secret")}
	if k.TSIGSecret, err = dnsproc.NewSecret(k.SecretFile); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(dir, "db"), 0o700); err != nil {
		return nil, err
	}
	origins := slices.Sorted(maps.Keys(zones))
	var zs strings.Builder
	for _, z := range origins {
		if err := os.WriteFile(filepath.Join(dir, z+".zone"), []byte(zones[z]), 0o600); err != nil {
			return nil, err
		}
		fmt.Fprintf(&zs, "  - domain: %s\n    acl: update\n", z)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	conf := dnsproc.KnotServerConf(dir, host+"@"+port) + fmt.Sprintf(`key:
  - id: %[2]s
    algorithm: hmac-sha256
    secret: %[3]s
acl:
  - id: update
    key: %[2]s
    action: update
template:
  - id: default
    storage: "%[1]s"
    file: "%%s.zone"
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: changes
zone:
%[4]s`, dir, TSIGName, k.TSIGSecret, zs.String())
	confPath := filepath.Join(dir, "knot.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	if k.proc, err = dnsproc.Start(t, KnotBinary, "-c", confPath); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	err = k.proc.WaitReady(ctx, func(ctx context.Context) error {
		for _, z := range origins {
			if err := dnsproc.AnswersSOA(ctx, addr, z, false); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		k.proc.Stop()
		return nil, fmt.Errorf("knotd on %s: %w", addr, err)
	}
	return k, nil
}

// Logs returns what knotd logged so far.
func (k *Knot) Logs() string { return k.proc.Logs() }

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
