package interop_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/authmilter/authmilter/internal/miltertest"
	"github.com/authmilter/authmilter/internal/testdns"
	"github.com/authmilter/authmilter/keys"
	"github.com/authmilter/authmilter/milter"
	"github.com/authmilter/authmilter/policy"
	"github.com/authmilter/authmilter/policy/resolve"
)

// arcTestdata holds chains sealed by dkimpy's arc_sign through two and
// three intermediaries (policy/arc/testdata/gen.py) and their keys.
var arcTestdata = filepath.Join("..", "..", "policy", "arc", "testdata")

// arcVerifyScript runs dkimpy's arc_verify on stdin, its keys from the
// test's DNS server, and prints "cv reason".
const arcVerifyScript = `import sys
for m in ("httpx", "requests", "h2", "aioquic"):
    sys.modules.setdefault(m, None)
import dkim, dns.resolver
r = dns.resolver.Resolver(configure=False)
r.nameservers = [sys.argv[1]]
r.port = int(sys.argv[2])
def txt(name, timeout=5):
    try:
        a = r.resolve(name.decode().rstrip("."), "TXT", lifetime=timeout)
    except Exception:
        return None
    return b"".join(b"".join(x.strings) for x in a)
cv, results, reason = dkim.arc_verify(sys.stdin.buffer.read(), dnsfunc=txt)
print(cv.decode() if cv else "None", reason)
`

// arcVerifyDkimpy returns dkimpy's chain validation status and reason.
func arcVerifyDkimpy(t *testing.T, s *testdns.Server, msg []byte) (string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/usr/bin/python3", "-c", arcVerifyScript, s.IP(), strconv.Itoa(s.Port()))
	cmd.Stdin = bytes.NewReader(msg)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("dkimpy arc_verify: %v: %s\n(install: apt-get install python3-dkim python3-dnspython python3-authres)", err, out)
	}
	cv, reason, _ := strings.Cut(strings.TrimSpace(string(out)), " ")
	return cv, reason
}

// arcPolicy is a policy that seals as relay.example, over s.
func arcPolicy(t *testing.T, s *testdns.Server) *policy.Policy {
	t.Helper()
	res, err := resolve.New(resolve.Config{Servers: []string{s.Addr()}, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	pemData, err := os.ReadFile(filepath.Join(arcTestdata, "relay.example.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "relay.example"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "relay.example", "arc1.pem"), pemData, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := policy.ParseConfig("arc.toml", []byte("authserv_id = \"relay.example\"\n[keys]\ndir = \""+dir+
		"\"\nrequire_published = false\n[arc]\nseal = true\ndomain = \"relay.example\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	pol, err := policy.Compile(context.Background(), cfg, res)
	if err != nil {
		t.Fatal(err)
	}
	return pol
}

// relay runs msg through the policy and returns our A-R value and the
// message as we pass it on, with our fields on top.
func relay(t *testing.T, pol *policy.Policy, msg []byte) (string, []byte) {
	t.Helper()
	header, body, err := policy.SplitMessage(msg)
	if err != nil {
		t.Fatal(err)
	}
	env := &policy.Envelope{Helo: "mail.lists.example", MailFrom: "bounce@lists.example"}
	env.ClientIP = netip.MustParseAddr("192.0.2.3")
	m := pol.Begin(env, header)
	m.Write(body)
	d := m.Finish()
	var b bytes.Buffer
	ar := ""
	for _, f := range d.Prepend {
		if f.Name == "Authentication-Results" {
			ar = f.Value
		}
		b.WriteString(f.Name + ":" + f.Value + "\r\n")
	}
	for _, f := range header {
		b.WriteString(f.Name + ":" + f.Value + "\r\n")
	}
	b.WriteString("\r\n")
	b.Write(body)
	return ar, b.Bytes()
}

// TestARCInterop: dkimpy's chains through two intermediaries verify with
// us, our seal on top of them verifies with dkimpy's arc_verify, and a
// chain with a broken middle instance fails in both.
func TestARCInterop(t *testing.T) {
	s := testdns.Start(t)
	s.AddZoneFile(t, filepath.Join(arcTestdata, "keys.zone"))
	pol := arcPolicy(t, s)
	for _, tc := range []struct {
		file            string
		ours, dkimpyOut string
	}{
		{"chain1.eml", "arc=pass (i=1", "pass"},
		{"chain2.eml", "arc=pass (i=2", "pass"},
		{"chain3.eml", "arc=pass (i=3", "pass"},
		{"brokenmiddle.eml", "arc=fail (i=2 ARC-Seal", "fail"},
	} {
		t.Run(tc.file, func(t *testing.T) {
			msg, err := os.ReadFile(filepath.Join(arcTestdata, tc.file))
			if err != nil {
				t.Fatal(err)
			}
			if cv, reason := arcVerifyDkimpy(t, s, msg); cv != tc.dkimpyOut {
				t.Fatalf("dkimpy on %s: %s %s, want %s", tc.file, cv, reason, tc.dkimpyOut)
			}
			ar, sealed := relay(t, pol, msg)
			if !strings.Contains(ar, tc.ours) {
				t.Fatalf("our A-R %q, want %q", ar, tc.ours)
			}
			// dkimpy answers None ("the chain is terminated") for a
			// chain whose newest seal says cv=fail: not a pass either.
			if cv, reason := arcVerifyDkimpy(t, s, sealed); cv != tc.dkimpyOut && !(tc.dkimpyOut == "fail" && cv == "None") {
				t.Fatalf("dkimpy on our seal over %s: %s %s, want %s\n%s", tc.file, cv, reason, tc.dkimpyOut, sealed)
			}
		})
	}
	// Our own first seal, on a message without a chain.
	_, sealed := relay(t, pol, []byte("From: Alice <alice@example.org>\r\nTo: b@example.net\r\nSubject: hi\r\n\r\nbody\r\n"))
	if cv, reason := arcVerifyDkimpy(t, s, sealed); cv != "pass" {
		t.Fatalf("dkimpy on our i=1 seal: %s %s\n%s", cv, reason, sealed)
	}
}

// arcSignScript is one intermediary: it adds its Authentication-Results
// (argv[5], arc= included from the second hop on) and seals with dkimpy's
// arc_sign, then prints the message.
const arcSignScript = `import sys
for m in ("httpx", "requests", "h2", "aioquic"):
    sys.modules.setdefault(m, None)
import dkim
sel, domain, keyfile, ar = sys.argv[1:5]
msg = ("Authentication-Results: " + ar + "\r\n").encode() + sys.stdin.buffer.read()
fields = dkim.arc_sign(msg, sel.encode(), domain.encode(), open(keyfile, "rb").read(), domain.encode())
if not fields:
    sys.exit("arc_sign added no set")
sys.stdout.buffer.write(b"".join(fields) + msg)
`

// arcSignDkimpy seals msg as domain with dkimpy, after adding ar as
// domain's Authentication-Results.
func arcSignDkimpy(t *testing.T, msg []byte, keyPath, domain, ar string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/usr/bin/python3", "-c", arcSignScript, "arc1", domain, keyPath, ar)
	cmd.Stdin = bytes.NewReader(msg)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("dkimpy arc_sign as %s: %v: %s\n(install: apt-get install python3-dkim python3-authres)", domain, err, stderr.Bytes())
	}
	return out
}

// TestARCLiveChainThroughMilter: a message goes through two intermediaries
// that seal it with dkimpy now, their keys generated by the test and
// served by its DNS server; the real milter verifies the chain (arc=pass)
// and seals it, and dkimpy verifies our seal. The same with a second
// intermediary whose published key is not the one it sealed with: both
// fail it.
func TestARCLiveChainThroughMilter(t *testing.T) {
	s := testdns.Start(t, testdns.WithAddr(testdns.FreeLoopback53(t)))
	keyDir := t.TempDir()
	hopDir := t.TempDir()
	paths := map[string]string{}
	for _, d := range []string{"fwd.example", "lists.example", "other.example"} {
		k, err := keys.Generate(hopDir, d, "arc1", "rsa-2048")
		if err != nil {
			t.Fatal(err)
		}
		s.SetTXT(keys.RecordName(k.Domain, k.Selector), keys.FormatRecord(k))
		paths[d] = k.Path
	}
	relayKey, err := keys.Generate(keyDir, "relay.example", "arc1", "rsa-2048")
	if err != nil {
		t.Fatal(err)
	}
	s.SetTXT(keys.RecordName(relayKey.Domain, relayKey.Selector), keys.FormatRecord(relayKey))
	res, err := resolve.New(resolve.Config{Servers: []string{s.Addr()}, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := policy.ParseConfig("arc.toml", []byte(fmt.Sprintf(`
authserv_id = "relay.example"
[dns]
servers = [%q]
[keys]
check = "resolver"
dir = %q
[arc]
seal = true
domain = "relay.example"
`, s.Addr(), keyDir)))
	if err != nil {
		t.Fatal(err)
	}
	pol, err := policy.Compile(context.Background(), cfg, res)
	if err != nil {
		t.Fatal(err)
	}
	var cur atomic.Pointer[policy.Policy]
	cur.Store(pol)
	srv := &milter.Server{Policy: cur.Load, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if err := srv.Listen([]string{"inet:127.0.0.1:0"}, 0o600, ""); err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	t.Cleanup(srv.Close)
	addr := srv.Addrs()[0].String()

	original := []byte("From: Alice <alice@example.org>\r\nTo: list@lists.example\r\nSubject: live ARC\r\n" +
		"Date: Sun, 06 Dec 2026 10:00:00 +0000\r\nMessage-ID: <live-arc@example.org>\r\n\r\nHello.\r\n")
	for _, tc := range []struct {
		name, secondKey, ours, dkimpyOut string
	}{
		{"two intermediaries", paths["lists.example"], "arc=pass (i=2, sealers fwd.example lists.example)", "pass"},
		// lists.example seals with other.example's key: its seal and
		// AMS cannot verify with its published record.
		{"broken middle", paths["other.example"], "arc=fail (i=2 ARC-", "fail"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			msg := arcSignDkimpy(t, original, paths["fwd.example"], "fwd.example",
				"fwd.example; spf=pass smtp.mailfrom=example.org; dmarc=pass header.from=example.org; iprev=pass smtp.remote-ip=192.0.2.1")
			msg = arcSignDkimpy(t, msg, tc.secondKey, "lists.example",
				"lists.example; dmarc=pass header.from=example.org; arc=pass; iprev=pass smtp.remote-ip=192.0.2.2")
			// The list's footer after sealing would break it; before is
			// what a list does, so the body stays as sealed here.
			tx := miltertest.Transaction{ClientIP: "192.0.2.3", Helo: "mail.lists.example", MailFrom: "bounce@lists.example",
				RcptTo: []string{"bob@relay.example"}, QueueID: "ARC1", LeadingSpace: true,
				Received: "from mail.lists.example ([192.0.2.3]) by relay.example (Postfix) with ESMTP id ARC1"}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			out, err := miltertest.Run(ctx, "tcp", addr, tx, msg)
			if err != nil {
				t.Fatal(err)
			}
			if !out.Accepted() || out.Message == nil {
				t.Fatalf("not delivered: %+v", out.Action)
			}
			if !bytes.Contains(out.Message, []byte(tc.ours)) {
				t.Fatalf("our A-R lacks %q:\n%s", tc.ours, out.Message)
			}
			if !bytes.Contains(out.Message, []byte("ARC-Seal: i=3;")) {
				t.Fatalf("no i=3 seal of ours:\n%s", out.Message)
			}
			cv, reason := arcVerifyDkimpy(t, s, out.Message)
			if cv != tc.dkimpyOut && !(tc.dkimpyOut == "fail" && cv == "None") {
				t.Fatalf("dkimpy on our seal: %s %s, want %s\n%s", cv, reason, tc.dkimpyOut, out.Message)
			}
		})
	}
}
