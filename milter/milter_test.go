package milter

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/authmilter/authmilter/internal/miltertest"
	"github.com/authmilter/authmilter/internal/syncbuf"
	"github.com/authmilter/authmilter/internal/testdns"
	"github.com/authmilter/authmilter/keys"
	"github.com/authmilter/authmilter/policy"
	"github.com/authmilter/authmilter/policy/resolve"
)

// env is a running milter with a real DNS server and real keys.
type env struct {
	srv  *Server
	addr string
	dns  *testdns.Server
	res  *resolve.Resolver
	pol  atomic.Pointer[policy.Policy]
	logs *syncbuf.Buffer
	keys string
}

// start runs the milter on 127.0.0.1:0 with keys for example.com (RSA and
// Ed25519), published in a test DNS server, and the given extra config.
func start(t testing.TB, extra string) *env {
	t.Helper()
	e := &env{dns: testdns.Start(t), logs: &syncbuf.Buffer{}, keys: t.TempDir()}
	for _, g := range []struct{ sel, algo string }{{"2026-11", "rsa-2048"}, {"2026-11e", "ed25519"}} {
		k, err := keys.Generate(e.keys, "example.com", g.sel, g.algo)
		if err != nil {
			t.Fatal(err)
		}
		e.dns.SetTXT(keys.RecordName(k.Domain, k.Selector), keys.FormatRecord(k))
	}
	e.dns.AddZoneText(t, "example.com.", `
@        300 IN TXT "v=spf1 ip4:192.0.2.0/24 -all"
_dmarc   300 IN TXT "v=DMARC1; p=reject"
`)
	cfg, err := policy.ParseConfig("test.toml", []byte(fmt.Sprintf(`
authserv_id = "mx.test.example"
[dns]
servers = [%q]
[keys]
check = "resolver"
dir = %q
[outbound]
networks = ["127.0.0.0/8"]
%s`, e.dns.Addr(), e.keys, extra)))
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
	if n := len(pol.ActiveKeys("example.com")); n != 2 {
		t.Fatalf("%d active keys, want 2", n)
	}
	e.pol.Store(pol)
	e.srv = &Server{Policy: e.pol.Load, Logger: slog.New(slog.NewTextHandler(io.MultiWriter(e.logs), nil))}
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
	return e
}

func (e *env) verify(t *testing.T, msg []byte) []policy.DKIMResult {
	t.Helper()
	header, body, err := policy.SplitMessage(msg)
	if err != nil {
		t.Fatal(err)
	}
	return policy.VerifyDKIM(context.Background(), e.res, header, bytes.NewReader(body), 10)
}

const outboundMsg = "From: Alice <alice@example.com>\r\nTo: bob@example.org\r\nSubject:no-space\r\nX-Tab:\tvalue\r\n" +
	"Subject2:  two  spaces\r\n folded\r\n\r\nHello\r\n\r\n"

func TestOutboundSigned(t *testing.T) {
	for _, canon := range []string{"relaxed/relaxed", "simple/simple"} {
		for _, lead := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/leadspc=%v", canon, lead), func(t *testing.T) {
				e := start(t, "[signing]\ncanonicalization = \""+canon+"\"\nheaders = [\"From\", \"To\", \"Subject\", \"X-Tab\", \"Subject2\"]\n")
				tx := miltertest.Transaction{ClientIP: "127.0.0.1", Helo: "client.example.com", MailFrom: "alice@example.com",
					RcptTo: []string{"bob@example.org"}, QueueID: "4Xk2", LeadingSpace: lead,
					Received: "from client (localhost [127.0.0.1]) by mx.test.example (Postfix) with ESMTP id 4Xk2"}
				res, err := miltertest.Run(context.Background(), "tcp", e.addr, tx, []byte(outboundMsg))
				if err != nil {
					t.Fatal(err)
				}
				if !res.Accepted() {
					t.Fatalf("not accepted: %+v", res.Action)
				}
				if !bytes.HasPrefix(res.Message, []byte("DKIM-Signature: ")) {
					t.Fatalf("DKIM-Signature not on top:\n%s", res.Message)
				}
				results := e.verify(t, res.Message)
				if len(results) != 2 {
					t.Fatalf("%d signatures", len(results))
				}
				// Without SMFIP_HDR_LEADSPC, "Subject:no-space" reaches us
				// as if it were "Subject: no-space": simple header
				// canonicalization cannot verify then, which is why we
				// negotiate it. Relaxed is immune.
				want := "pass"
				if canon == "simple/simple" && !lead {
					want = "fail"
				}
				for _, r := range results {
					if r.Result != want {
						t.Errorf("%s/%s: %s (%s), want %s", r.Domain, r.Selector, r.Result, r.Reason, want)
					}
				}
				logs := e.logs.String()
				if !strings.Contains(logs, "queue=4Xk2 dir=out") || !strings.Contains(logs, "signed=example.com/2026-11/rsa-sha256,example.com/2026-11e/ed25519-sha256") {
					t.Errorf("log line missing:\n%s", logs)
				}
			})
		}
	}
}

func TestDirectionByMacros(t *testing.T) {
	e := start(t, "")
	msg := []byte("From: alice@example.com\r\nSubject: x\r\n\r\nbody\r\n")
	tests := []struct {
		name   string
		tx     miltertest.Transaction
		signed bool
	}{
		{"network", miltertest.Transaction{ClientIP: "127.0.0.1"}, true},
		{"outside", miltertest.Transaction{ClientIP: "198.51.100.7"}, false},
		{"ipv6 outside", miltertest.Transaction{ClientIP: "2001:db8::1"}, false},
		{"smtp auth", miltertest.Transaction{ClientIP: "198.51.100.7", AuthType: "PLAIN", AuthAuthen: "alice"}, true},
		{"daemon name", miltertest.Transaction{ClientIP: "198.51.100.7", DaemonName: "ORIGINATING"}, true},
		{"local submission", miltertest.Transaction{ClientHost: "localhost", ClientIP: "127.0.0.1"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.tx.MailFrom, tt.tx.RcptTo, tt.tx.QueueID = "alice@example.com", []string{"bob@example.org"}, "Q"+strings.ReplaceAll(tt.name, " ", "")
			res, err := miltertest.Run(context.Background(), "tcp", e.addr, tt.tx, msg)
			if err != nil {
				t.Fatal(err)
			}
			signed := bytes.Contains(res.Message, []byte("DKIM-Signature:"))
			if signed != tt.signed {
				t.Fatalf("signed = %v, want %v:\n%s", signed, tt.signed, res.Message)
			}
			if !tt.signed && !bytes.HasPrefix(res.Message, []byte("Authentication-Results: mx.test.example;")) {
				t.Errorf("inbound message has no Authentication-Results on top:\n%s", res.Message)
			}
		})
	}
}

func TestManyTransactionsPerConnection(t *testing.T) {
	e := start(t, "")
	ctx := context.Background()
	c, err := miltertest.NewConn(ctx, "tcp", e.addr, miltertest.Options{LeadingSpace: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := 0; i < 20; i++ {
		tx := miltertest.Transaction{ClientIP: "127.0.0.1", MailFrom: "alice@example.com", RcptTo: []string{"b@example.org"}, QueueID: fmt.Sprintf("Q%d", i)}
		msg := fmt.Sprintf("From: alice@example.com\r\nSubject: n%d\r\n\r\nbody %d\r\n", i, i)
		res, err := c.Do(ctx, tx, []byte(msg))
		if err != nil {
			t.Fatalf("transaction %d: %v", i, err)
		}
		for _, r := range e.verify(t, res.Message) {
			if r.Result != "pass" {
				t.Fatalf("transaction %d: %s/%s %s", i, r.Domain, r.Selector, r.Result)
			}
		}
		if n := bytes.Count(res.Message, []byte("DKIM-Signature:")); n != 2 {
			t.Fatalf("transaction %d: %d signatures", i, n)
		}
	}
}

func TestConcurrentConnections(t *testing.T) {
	e := start(t, "")
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for w := 0; w < 32; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < 5; i++ {
				tx := miltertest.Transaction{ClientIP: "127.0.0.1", MailFrom: "a@example.com", RcptTo: []string{"b@example.org"}, QueueID: fmt.Sprintf("W%dM%d", w, i)}
				msg := fmt.Sprintf("From: a@example.com\r\nSubject: w%d m%d\r\n\r\n%s\r\n", w, i, strings.Repeat("x", 100*i))
				res, err := miltertest.Run(context.Background(), "tcp", e.addr, tx, []byte(msg))
				if err != nil {
					errs <- err
					return
				}
				if n := bytes.Count(res.Message, []byte("DKIM-Signature:")); n != 2 {
					errs <- fmt.Errorf("worker %d message %d: %d signatures", w, i, n)
					return
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestBrokenMessagesGetAnAnswer(t *testing.T) {
	e := start(t, "")
	tests := []struct{ name, msg, log string }{
		{"no from", "Subject: x\r\n\r\nbody\r\n", "not_signed"},
		{"two from", "From: a@example.com\r\nFrom: b@example.com\r\n\r\nbody\r\n", "multiple From"},
		// MTAs pass header values as C strings, so no NUL inside them.
		{"garbage bytes", "From: \x7f\xff\xfe@@\r\nSubject: \x01\r\n\r\n\xff\x00\r\n", "not_signed"},
		{"header only", "From: a@example.com\r\nSubject: no body", "signed="},
		{"huge header", "From: a@example.com\r\n" + strings.Repeat("X-Big: "+strings.Repeat("a", 990)+"\r\n", 1200) + "\r\nbody\r\n", "header larger than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tx := miltertest.Transaction{ClientIP: "127.0.0.1", MailFrom: "a@example.com", RcptTo: []string{"b@example.org"}, QueueID: "BRK" + strings.ReplaceAll(tt.name, " ", "")}
			res, err := miltertest.Run(context.Background(), "tcp", e.addr, tx, []byte(tt.msg))
			if err != nil {
				t.Fatal(err)
			}
			if !res.Accepted() {
				t.Errorf("not accepted: %+v", res.Action)
			}
			deadline := time.Now().Add(2 * time.Second)
			for {
				logs := e.logs.String()
				var line string
				for _, l := range strings.Split(logs, "\n") {
					if strings.Contains(l, "queue="+tx.QueueID) {
						line = l
					}
				}
				if strings.Contains(line, tt.log) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("no log line with queue=%s and %q:\n%s", tx.QueueID, tt.log, logs)
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
}

func TestGracefulShutdownWaitsForTransaction(t *testing.T) {
	e := start(t, "")
	ctx := context.Background()
	c, err := miltertest.NewConn(ctx, "tcp", e.addr, miltertest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Begin a transaction, then ask the server to shut down: it must wait.
	done := make(chan error, 1)
	go func() {
		tx := miltertest.Transaction{ClientIP: "127.0.0.1", MailFrom: "a@example.com", RcptTo: []string{"b@example.org"}, QueueID: "GRACE", ChunkSize: 1}
		res, err := c.Do(ctx, tx, []byte("From: a@example.com\r\n\r\n"+strings.Repeat("slow body\r\n", 300)))
		if err == nil && !bytes.Contains(res.Message, []byte("DKIM-Signature:")) {
			err = fmt.Errorf("not signed")
		}
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := e.srv.Shutdown(sctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if err := <-done; err != nil {
		t.Fatalf("in-flight transaction: %v", err)
	}
	// New connections are refused after shutdown.
	if _, err := miltertest.NewConn(ctx, "tcp", e.addr, miltertest.Options{}); err == nil {
		t.Error("connection accepted after shutdown")
	}
}

func TestUnixSocketMode(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "a.sock")
	s := &Server{Policy: func() *policy.Policy { return nil }, Logger: slog.Default()}
	if err := s.Listen([]string{"unix:" + sock}, 0o600, ""); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 || fi.Mode()&os.ModeSocket == 0 {
		t.Errorf("mode %v", fi.Mode())
	}
	// A second daemon on the same socket is refused; a stale file is replaced.
	s2 := &Server{Logger: slog.Default()}
	if err := s2.Listen([]string{"unix:" + sock}, 0o600, ""); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("second listen: %v", err)
	}
	s.Close()
	os.WriteFile(sock, nil, 0o600)
	if err := s2.Listen([]string{"unix:" + sock}, 0o600, ""); err == nil {
		t.Error("a regular file was replaced")
	}
	os.Remove(sock)
	if err := s2.Listen([]string{"unix:" + sock}, 0o600, ""); err != nil {
		t.Errorf("listen after remove: %v", err)
	}
	s2.Close()
}

// A panic while handling one message (here: no policy at all) is a logged
// internal error answered per on_internal_error, and the daemon goes on.
func TestPanicIsContained(t *testing.T) {
	logs := &syncbuf.Buffer{}
	srv := &Server{Policy: func() *policy.Policy { return nil }, Logger: slog.New(slog.NewTextHandler(logs, nil))}
	if err := srv.Listen([]string{"inet:127.0.0.1:0"}, 0o600, ""); err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	defer srv.Close()
	addr := srv.Addrs()[0].String()
	for i := 0; i < 2; i++ {
		tx := miltertest.Transaction{ClientIP: "127.0.0.1", MailFrom: "a@example.com", RcptTo: []string{"b@example.org"}, QueueID: fmt.Sprintf("PANIC%d", i)}
		res, err := miltertest.Run(context.Background(), "tcp", addr, tx, []byte("From: a@example.com\r\n\r\nbody\r\n"))
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if res.Accepted() || res.Action.SMTPCode != 451 {
			t.Fatalf("message %d: %+v, want a 451 tempfail", i, res.Action)
		}
	}
	if !strings.Contains(logs.String(), "internal error") || !strings.Contains(logs.String(), "queue=PANIC") {
		t.Errorf("no internal error logged with the queue ID:\n%s", logs.String())
	}
}

// IPv4 and IPv6 inet sockets and a unix socket with a group, served at once.
func TestListenEveryKind(t *testing.T) {
	e := start(t, "")
	grp, err := user.LookupGroupId(fmt.Sprint(os.Getgid()))
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "run", "am.sock")
	srv := &Server{Policy: e.pol.Load, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if err := srv.Listen([]string{"inet:127.0.0.1:0", "inet:[::1]:0", "unix:" + sock}, 0o640, grp.Name); err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	defer srv.Close()
	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); !ok || fmt.Sprint(st.Gid) != grp.Gid || fi.Mode().Perm() != 0o640 {
		t.Errorf("socket %s: mode %v, group %v; want 0640, %s", sock, fi.Mode(), fi.Sys(), grp.Gid)
	}
	addrs := srv.Addrs()
	if len(addrs) != 3 {
		t.Fatalf("listening on %v", addrs)
	}
	for _, a := range addrs {
		network := "tcp"
		if a.Network() == "unix" {
			network = "unix"
		}
		tx := miltertest.Transaction{ClientIP: "127.0.0.1", MailFrom: "a@example.com", RcptTo: []string{"b@example.org"}, QueueID: "L"}
		res, err := miltertest.Run(context.Background(), network, a.String(), tx, []byte("From: a@example.com\r\n\r\nbody\r\n"))
		if err != nil {
			t.Fatalf("%s: %v", a, err)
		}
		if n := bytes.Count(res.Message, []byte("DKIM-Signature:")); n != 2 {
			t.Errorf("%s: %d signatures", a, n)
		}
	}
	if err := srv.Listen([]string{"unix:" + filepath.Join(t.TempDir(), "b.sock")}, 0o600, "no-such-group-here"); err == nil || !strings.Contains(err.Error(), "no-such-group-here") {
		t.Errorf("unknown group: %v", err)
	}
}
