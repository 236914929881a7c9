package milter

import (
	"bytes"
	"context"
	"crypto"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/authmilter/authmilter/internal/miltertest"
	"github.com/authmilter/authmilter/internal/syncbuf"
	"github.com/authmilter/authmilter/internal/testdns"
	"github.com/authmilter/authmilter/keys"
	"github.com/authmilter/authmilter/policy"
	"github.com/authmilter/authmilter/policy/resolve"
)

// brokenSigner is a key whose crypto fails at every signature, as a
// libcrypto that can no longer sign with its copy of the key would.
type brokenSigner struct{ pub crypto.PublicKey }

func (s brokenSigner) Public() crypto.PublicKey { return s.pub }
func (brokenSigner) Sign(io.Reader, []byte, crypto.SignerOpts) ([]byte, error) {
	return nil, errors.New("libcrypto: sign: error:1C800066:Provider routines::cipher operation failed")
}

// countingObserver records MessageDone's failed flags, as the daemon's
// metrics count authmilter_internal_errors_total from them.
type countingObserver struct {
	mu     sync.Mutex
	failed []bool
	// done are the decisions as observed: action, signatures, unsigned
	// reason (what the metrics count).
	done []observed
}

// observed is what MessageDone saw of a decision.
type observed struct {
	action     policy.Action
	signatures int
	unsigned   string
}

func (o *countingObserver) MessageDone(d *policy.Decision, failed bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.failed = append(o.failed, failed)
	o.done = append(o.done, observed{d.Action, d.Signatures, d.UnsignedReason})
}

func (o *countingObserver) decisions() []observed {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]observed(nil), o.done...)
}

func (o *countingObserver) ConnectionEvent(string) {}

func (o *countingObserver) results() []bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]bool(nil), o.failed...)
}

// startBrokenSigner runs the milter as start does, with on_internal_error
// set and the RSA key of example.com (selector 2026-11) unable to sign;
// the Ed25519 key (2026-11e) signs.
func startBrokenSigner(t *testing.T, onInternalError string) (*env, *countingObserver) {
	t.Helper()
	e := &env{dns: testdns.Start(t), logs: &syncbuf.Buffer{}, keys: t.TempDir()}
	for _, g := range []struct{ sel, algo string }{{"2026-11", "rsa-2048"}, {"2026-11e", "ed25519"}} {
		k, err := keys.Generate(e.keys, "example.com", g.sel, g.algo)
		if err != nil {
			t.Fatal(err)
		}
		e.dns.SetTXT(keys.RecordName(k.Domain, k.Selector), keys.FormatRecord(k))
	}
	cfg, err := policy.ParseConfig("test.toml", []byte(fmt.Sprintf(`
authserv_id = "mx.test.example"
on_internal_error = %q
[dns]
servers = [%q]
[keys]
check = "resolver"
dir = %q
[outbound]
networks = ["127.0.0.0/8"]
`, onInternalError, e.dns.Addr(), e.keys)))
	if err != nil {
		t.Fatal(err)
	}
	e.res, err = resolve.New(resolve.Config{Servers: []string{e.dns.Addr()}, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	pol, err := policy.Compile(context.Background(), cfg, e.res)
	if err != nil {
		t.Fatal(err)
	}
	broken := 0
	for _, k := range pol.ActiveKeys("example.com") {
		if k.Selector == "2026-11" {
			k.SignWithForTesting(brokenSigner{k.Public()})
			broken++
		}
	}
	if broken != 1 {
		t.Fatalf("RSA key 2026-11 not active: %v", pol.ActiveKeys("example.com"))
	}
	e.pol.Store(pol)
	obs := &countingObserver{}
	e.srv = &Server{Policy: e.pol.Load, Logger: slog.New(slog.NewTextHandler(e.logs, nil)), Observer: obs}
	if err := e.srv.Listen([]string{"inet:127.0.0.1:0"}, 0o660, ""); err != nil {
		t.Fatal(err)
	}
	e.addr = e.srv.Addrs()[0].String()
	go e.srv.Serve()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := e.srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return e, obs
}

// TestSignerFailureIsInternalError: a key whose crypto fails on a message
// is an internal error for that message, answered per on_internal_error
// through the real session: tempfail is a 451 (the MTA retries), accept
// lets the message go with the signatures that could be made; both log the
// failure at level ERROR with the key and count it as an internal error,
// and the daemon goes on with the next message.
func TestSignerFailureIsInternalError(t *testing.T) {
	for _, mode := range []string{"tempfail", "accept"} {
		t.Run(mode, func(t *testing.T) {
			e, obs := startBrokenSigner(t, mode)
			for i := range 2 {
				queue := fmt.Sprintf("SIGNFAIL%d", i)
				tx := miltertest.Transaction{ClientIP: "127.0.0.1", Helo: "client.example.com", MailFrom: "alice@example.com",
					RcptTo: []string{"bob@example.org"}, QueueID: queue}
				res, err := miltertest.Run(context.Background(), "tcp", e.addr, tx, []byte(outboundMsg))
				if err != nil {
					t.Fatalf("message %d: %v", i, err)
				}
				switch mode {
				case "tempfail":
					if res.Accepted() || res.Action.SMTPCode != 451 {
						t.Fatalf("message %d: %+v, want a 451 tempfail", i, res.Action)
					}
				case "accept":
					if !res.Accepted() {
						t.Fatalf("message %d: not accepted: %+v", i, res.Action)
					}
					results := e.verify(t, res.Message)
					if len(results) != 1 || results[0].Selector != "2026-11e" || results[0].Result != "pass" {
						t.Fatalf("message %d: signatures %+v, want the Ed25519 one only, passing", i, results)
					}
				}
			}
			if got := obs.results(); len(got) != 2 || !got[0] || !got[1] {
				t.Errorf("MessageDone failed flags %v, want [true true]", got)
			}
			// The metrics count what the MTA was told: a tempfailed
			// message was neither accepted nor signed nor sent unsigned.
			want := observed{policy.TempFail, 0, ""}
			if mode == "accept" {
				want = observed{policy.Accept, 1, ""}
			}
			for i, got := range obs.decisions() {
				if got != want {
					t.Errorf("message %d observed as %+v, want %+v", i, got, want)
				}
			}
			logs := e.logs.String()
			for _, want := range []string{"level=ERROR", "queue=SIGNFAIL1", "example.com/2026-11: dkimsign: sign: signer failed: libcrypto: sign",
				"on_internal_error=" + mode} {
				if !strings.Contains(logs, want) {
					t.Errorf("log lacks %q:\n%s", want, logs)
				}
			}
		})
	}
}

// TestSignerSuccessIsNotInternalError: the same daemon with working keys
// counts no internal error (the flag is the signer's failure, not signing).
func TestSignerSuccessIsNotInternalError(t *testing.T) {
	e, obs := startBrokenSigner(t, "tempfail")
	// The broken key is swapped back for its own, working one.
	for _, k := range e.pol.Load().ActiveKeys("example.com") {
		if k.Selector == "2026-11" {
			tab, err := keys.LoadDir(e.keys)
			if err != nil {
				t.Fatal(err)
			}
			for _, fresh := range tab.Keys("example.com") {
				if fresh.Selector == k.Selector {
					s, err := fresh.PrivateKey()
					if err != nil {
						t.Fatal(err)
					}
					k.SignWithForTesting(s)
				}
			}
		}
	}
	tx := miltertest.Transaction{ClientIP: "127.0.0.1", MailFrom: "alice@example.com", RcptTo: []string{"bob@example.org"}, QueueID: "SIGNOK"}
	res, err := miltertest.Run(context.Background(), "tcp", e.addr, tx, []byte(outboundMsg))
	if err != nil {
		t.Fatal(err)
	}
	if !res.Accepted() || !bytes.HasPrefix(res.Message, []byte("DKIM-Signature: ")) {
		t.Fatalf("not signed and accepted: %+v", res.Action)
	}
	if got := obs.results(); len(got) != 1 || got[0] {
		t.Errorf("MessageDone failed flags %v, want [false]", got)
	}
	if strings.Contains(e.logs.String(), "level=ERROR") {
		t.Errorf("error logged:\n%s", e.logs.String())
	}
}
