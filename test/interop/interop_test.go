// Package interop_test proves that signatures made by authmilter verify with
// dkimpy and OpenDKIM, and that theirs verify with authmilter. The milter runs
// on a real socket, is driven as Postfix drives it, and every key is served
// by a real DNS server on 127.x.y.z:53 (OpenDKIM cannot use another port).
package interop_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/authmilter/authmilter/internal/interop"
	"github.com/authmilter/authmilter/internal/miltertest"
	"github.com/authmilter/authmilter/internal/testdns"
	"github.com/authmilter/authmilter/keys"
	"github.com/authmilter/authmilter/milter"
	"github.com/authmilter/authmilter/policy"
	"github.com/authmilter/authmilter/policy/resolve"
)

// world is a DNS server with published keys and a resolver for it.
type world struct {
	dns     *testdns.Server
	res     *resolve.Resolver
	keyDir  string
	rsaPEM  []byte
	edPEM   []byte
	rsaSel  string
	edSel   string
	domain  string
	dnsAddr string
}

func newWorld(t *testing.T) *world {
	t.Helper()
	w := &world{keyDir: t.TempDir(), domain: "example.com", rsaSel: "2026-11", edSel: "2026-11e"}
	w.dns = testdns.Start(t, testdns.WithAddr(testdns.FreeLoopback53(t)))
	w.dnsAddr = w.dns.Addr()
	for _, g := range []struct{ sel, algo string }{{w.rsaSel, "rsa-2048"}, {w.edSel, "ed25519"}} {
		k, err := keys.Generate(w.keyDir, w.domain, g.sel, g.algo)
		if err != nil {
			t.Fatal(err)
		}
		w.dns.SetTXT(keys.RecordName(k.Domain, k.Selector), keys.FormatRecord(k))
		pem, err := os.ReadFile(k.Path)
		if err != nil {
			t.Fatal(err)
		}
		if g.algo == "ed25519" {
			w.edPEM = pem
		} else {
			w.rsaPEM = pem
		}
	}
	// The corpus carries one third-party signature (example.net).
	foreign, err := os.ReadFile("../../testdata/interop/sel2025._domainkey.example.net.txt")
	if err != nil {
		t.Fatal(err)
	}
	w.dns.SetTXT("sel2025._domainkey.example.net", strings.TrimSpace(string(foreign)))
	w.res, err = resolve.New(resolve.Config{Servers: []string{w.dnsAddr}, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// startMilter runs authmilter's milter server with canon on a loopback port.
func (w *world) startMilter(t *testing.T, canon string) string {
	t.Helper()
	cfg, err := policy.ParseConfig("interop.toml", []byte(fmt.Sprintf(`
authserv_id = "mx.interop.test"
[dns]
servers = [%q]
[keys]
check = "resolver"
dir = %q
[signing]
canonicalization = %q
[[signing.rule]]
from = "example.com"
subdomains = true
`, w.dnsAddr, w.keyDir, canon)))
	if err != nil {
		t.Fatal(err)
	}
	pol, err := policy.Compile(context.Background(), cfg, w.res)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(pol.ActiveKeys(w.domain)); n != 2 {
		t.Fatalf("%d active keys, want 2 (are the records published?)", n)
	}
	var cur atomic.Pointer[policy.Policy]
	cur.Store(pol)
	srv := &milter.Server{Policy: cur.Load, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if err := srv.Listen([]string{"inet:127.0.0.1:0"}, 0o600, ""); err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	t.Cleanup(srv.Close)
	return srv.Addrs()[0].String()
}

func corpus(t *testing.T) map[string][]byte {
	t.Helper()
	files, err := filepath.Glob("../../testdata/messages/*.eml")
	if err != nil || len(files) < 15 {
		t.Fatalf("corpus: %d messages, %v (need at least 15)", len(files), err)
	}
	out := map[string][]byte{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out[filepath.Base(f)] = b
	}
	return out
}

func sortedNames(m map[string][]byte) []string {
	var names []string
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// TestOurSignaturesVerifyWithPeers signs every corpus message through the
// milter, RSA and Ed25519, relaxed and simple, and has dkimpy and OpenDKIM
// verify each of our signatures.
func TestOurSignaturesVerifyWithPeers(t *testing.T) {
	w := newWorld(t)
	msgs := corpus(t)
	ctx := context.Background()
	checked := 0
	for _, canon := range []string{"relaxed/relaxed", "simple/simple", "relaxed/simple", "simple/relaxed"} {
		addr := w.startMilter(t, canon)
		for _, name := range sortedNames(msgs) {
			t.Run(canon+"/"+name, func(t *testing.T) {
				tx := miltertest.Transaction{ClientIP: "127.0.0.1", Helo: "client.example.com", MailFrom: "sender@example.com",
					RcptTo: []string{"rcpt@example.org"}, QueueID: "IOP1", LeadingSpace: true,
					Received: "from client.example.com (localhost [127.0.0.1]) by mx.interop.test (Postfix) with ESMTP id IOP1"}
				res, err := miltertest.Run(ctx, "tcp", addr, tx, msgs[name])
				if err != nil {
					t.Fatal(err)
				}
				if !res.Accepted() || res.Message == nil {
					t.Fatalf("not delivered: %+v", res.Action)
				}
				ours := func(d, s string) bool { return d == w.domain && (s == w.rsaSel || s == w.edSel) }

				py, err := interop.VerifyDkimpy(ctx, res.Message, w.dnsAddr)
				if err != nil {
					t.Fatalf("dkimpy: %v", err)
				}
				n := 0
				for _, r := range py {
					if !ours(r.Domain, r.Selector) {
						continue
					}
					n++
					if !r.OK {
						t.Errorf("dkimpy: %s", r)
					}
				}
				if n != 2 {
					t.Fatalf("dkimpy saw %d of our signatures, want 2 (RSA and Ed25519): %v", n, py)
				}

				od, err := interop.VerifyOpenDKIMEach(ctx, res.Message, w.dns.IP())
				if err != nil {
					t.Fatalf("OpenDKIM: %v", err)
				}
				n = 0
				for _, r := range od {
					if !ours(r.Domain, r.Selector) {
						continue
					}
					n++
					if r.Result != "pass" {
						t.Errorf("OpenDKIM: %s", r)
					}
				}
				if n != 2 {
					t.Fatalf("OpenDKIM reported %d of our signatures, want 2: %v", n, od)
				}
				checked++
			})
		}
	}
	t.Logf("%d messages × 2 signatures verified by dkimpy and OpenDKIM", checked)
}

// TestPeerSignaturesVerifyWithUs has dkimpy and OpenDKIM sign corpus
// messages and checks that authmilter's verifier passes them, and fails a
// copy with one body byte changed.
func TestPeerSignaturesVerifyWithUs(t *testing.T) {
	w := newWorld(t)
	msgs := corpus(t)
	ctx := context.Background()
	type signer struct {
		name string
		sign func(msg []byte) ([]byte, error)
		sel  string
		// broken marks a peer signer known to make invalid signatures:
		// then we must agree with dkimpy that they fail.
		broken string
	}
	signers := []signer{
		{"dkimpy/rsa/relaxed", func(m []byte) ([]byte, error) {
			return interop.SignDkimpy(ctx, m, w.rsaSel, w.domain, w.rsaPEM, "relaxed", "relaxed", "rsa-sha256")
		}, w.rsaSel, ""},
		{"dkimpy/rsa/simple", func(m []byte) ([]byte, error) {
			return interop.SignDkimpy(ctx, m, w.rsaSel, w.domain, w.rsaPEM, "simple", "simple", "rsa-sha256")
		}, w.rsaSel, ""},
		{"dkimpy/ed25519/relaxed", func(m []byte) ([]byte, error) {
			return interop.SignDkimpy(ctx, m, w.edSel, w.domain, w.edPEM, "relaxed", "relaxed", "ed25519-sha256")
		}, w.edSel, ""},
		{"dkimpy/ed25519/simple", func(m []byte) ([]byte, error) {
			return interop.SignDkimpy(ctx, m, w.edSel, w.domain, w.edPEM, "simple", "simple", "ed25519-sha256")
		}, w.edSel, ""},
		{"opendkim/rsa/relaxed", func(m []byte) ([]byte, error) {
			return interop.SignOpenDKIM(ctx, m, w.domain, w.rsaSel, w.rsaPEM, "relaxed/relaxed")
		}, w.rsaSel, ""},
		{"opendkim/rsa/simple", func(m []byte) ([]byte, error) {
			return interop.SignOpenDKIM(ctx, m, w.domain, w.rsaSel, w.rsaPEM, "simple/simple")
		}, w.rsaSel, ""},
		{"opendkim/ed25519/relaxed", func(m []byte) ([]byte, error) {
			return interop.SignOpenDKIM(ctx, m, w.domain, w.edSel, w.edPEM, "relaxed/relaxed")
		}, w.edSel, ""},
		// OpenDKIM 2.11.0~beta2 (Debian 12) makes Ed25519 signatures with
		// simple header canonicalization that neither dkimpy nor OpenDKIM
		// itself can verify; we must reject them too.
		{"opendkim/ed25519/simple", func(m []byte) ([]byte, error) {
			return interop.SignOpenDKIM(ctx, m, w.domain, w.edSel, w.edPEM, "simple/simple")
		}, w.edSel, "OpenDKIM's ed25519 + simple header canonicalization"},
	}
	verify := func(t *testing.T, msg []byte, sel string) string {
		t.Helper()
		header, body, err := policy.SplitMessage(msg)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range policy.VerifyDKIM(ctx, w.res, header, bytes.NewReader(body), 10) {
			if r.Domain == w.domain && r.Selector == sel {
				return r.Result + " " + r.Reason
			}
		}
		t.Fatalf("no signature by %s/%s found", w.domain, sel)
		return ""
	}
	passed := 0
	for _, s := range signers {
		for _, name := range sortedNames(msgs) {
			t.Run(s.name+"/"+name, func(t *testing.T) {
				signed, err := s.sign(msgs[name])
				if err != nil {
					t.Fatal(err)
				}
				if s.broken != "" {
					if got := verify(t, signed, s.sel); !strings.HasPrefix(got, "fail") {
						t.Fatalf("%s: we say %s; expected fail", s.broken, got)
					}
					py, err := interop.VerifyDkimpy(ctx, signed, w.dnsAddr)
					if err != nil {
						t.Fatal(err)
					}
					for _, r := range py {
						if r.Selector == s.sel && r.OK {
							t.Fatalf("%s: dkimpy now passes it: the peer was fixed, drop the exception", s.broken)
						}
					}
					return
				}
				if got := verify(t, signed, s.sel); !strings.HasPrefix(got, "pass") {
					t.Fatalf("verify: %s", got)
				}
				// Change one byte of the body (or add one to an empty body).
				tampered := tamperBody(signed)
				if got := verify(t, tampered, s.sel); !strings.HasPrefix(got, "fail") {
					t.Errorf("tampered copy: %s, want fail", got)
				}
				passed++
			})
		}
	}
	t.Logf("%d peer-signed messages verified (and their tampered copies failed)", passed)
}

// tamperBody changes the first body byte, or adds a line to an empty body.
func tamperBody(msg []byte) []byte {
	out := append([]byte(nil), msg...)
	i := bytes.Index(out, []byte("\r\n\r\n"))
	if i < 0 {
		return append(out, []byte("\r\n\r\ntampered\r\n")...)
	}
	i += 4
	if i >= len(out) {
		return append(out, []byte("tampered\r\n")...)
	}
	if out[i] == 'X' {
		out[i] = 'Y'
	} else {
		out[i] = 'X'
	}
	return out
}
