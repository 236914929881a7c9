package milter

// Benchmarks of a full milter round trip: internal/miltertest plays Postfix
// on a loopback TCP socket to the real Server, one whole transaction (MAIL
// to the end-of-message reply and the two ABORTs) per operation, several
// transactions per connection.
//
//	go test -run '^$' -bench RoundTrip -benchmem ./milter
//	go test -run '^$' -bench 'RoundTrip/sign-rsa2048/parallel' -cpuprofile cpu.out ./milter
//	go tool pprof -top -focus 'HandleMilterCommands|dkim.NewSigner' milter.test cpu.out
//
// The client runs in the same process, so ns/op and allocs/op include the
// driver's own work (message splitting, modification bookkeeping); the
// "nosign" case (outbound mail for a domain without keys: no crypto at all)
// shows that fixed cost, protocol included. In a CPU profile the server's
// share is what runs under go-milter's HandleMilterCommands and
// go-msgauth's signer goroutines. No test here asserts a duration.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/authmilter/authmilter/internal/miltertest"
	"github.com/authmilter/authmilter/internal/testdns"
	"github.com/authmilter/authmilter/keys"
	"github.com/authmilter/authmilter/policy"
	"github.com/authmilter/authmilter/policy/resolve"
)

// benchServer runs the Server on 127.0.0.1:0 with the test keys of
// testdata/keys for example.com (2026-11: RSA-2048, 2026-11e: Ed25519),
// published in a test DNS server that also serves SPF and DMARC records.
func benchServer(b *testing.B, extra string) (addr string) {
	b.Helper()
	dir := b.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "example.com"), 0o700); err != nil {
		b.Fatal(err)
	}
	for sel, src := range map[string]string{"2026-11": "rsa2048-pkcs8.pem", "2026-11e": "ed25519-pkcs8.pem"} {
		data, err := os.ReadFile(filepath.Join("..", "testdata", "keys", src))
		if err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "example.com", sel+".pem"), data, 0o600); err != nil {
			b.Fatal(err)
		}
	}
	dns := testdns.Start(b)
	// Cacheable answers, positive and negative, as from a real zone: the
	// resolver's cache then answers after the first message.
	dns.SetDefaultTTL(300)
	dns.AddZoneText(b, "example.com.", `
@        300 IN TXT "v=spf1 ip4:192.0.2.0/24 -all"
_dmarc   300 IN TXT "v=DMARC1; p=none"
`)
	cfg, err := policy.ParseConfig("bench.toml", []byte(fmt.Sprintf(`
authserv_id = "mx.bench.example"
[dns]
servers = [%q]
[keys]
check = "resolver"
dir = %q
require_published = false
[outbound]
networks = ["127.0.0.0/8"]
%s`, dns.Addr(), dir, extra)))
	if err != nil {
		b.Fatal(err)
	}
	res, err := resolve.New(resolve.Config{Servers: []string{dns.Addr()}, Timeout: 2 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	pol, err := policy.Compile(context.Background(), cfg, res)
	if err != nil {
		b.Fatal(err)
	}
	for _, k := range pol.Table().All() {
		dns.SetTXT(keys.RecordName(k.Domain, k.Selector), keys.FormatRecord(k))
	}
	var cur atomic.Pointer[policy.Policy]
	cur.Store(pol)
	srv := &Server{Policy: cur.Load, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if err := srv.Listen([]string{"inet:127.0.0.1:0"}, 0o660, ""); err != nil {
		b.Fatal(err)
	}
	go srv.Serve()
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return srv.Addrs()[0].String()
}

// benchMsg returns a plain-text message of about size bytes, CRLF line ends.
func benchMsg(from string, size int) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: Load Sender <sender@%s>\r\nTo: Load Recipient <rcpt@example.org>\r\n"+
		"Subject: milter benchmark\r\nDate: Mon, 02 Nov 2026 10:00:00 +0000\r\n"+
		"Message-ID: <bench.1@%s>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n", from, from)
	words := strings.Fields("the quick brown fox jumps over a lazy dog while milters sign mail " +
		"with keys from DNS and relaxed canonicalization folds  white   space\tin lines")
	for i := 0; b.Len() < size; i++ {
		for j := 0; j < 10; j++ {
			if j > 0 {
				b.WriteByte(' ')
			}
			b.WriteString(words[(i*7+j*3)%len(words)])
		}
		b.WriteString("\r\n")
	}
	return b.Bytes()
}

// benchRoundTripCase is one kind of transaction.
type benchRoundTripCase struct {
	name   string
	config string                 // extra config
	tx     miltertest.Transaction // envelope
	msg    func(b *testing.B, addr string) []byte
	check  func(*miltertest.Result) error
}

var benchOutboundTx = miltertest.Transaction{ClientIP: "127.0.0.1", ClientHost: "localhost", Helo: "localhost",
	MailFrom: "sender@example.com", RcptTo: []string{"rcpt@example.org"}, QueueID: "BENCH1"}

var benchInboundTx = miltertest.Transaction{ClientIP: "192.0.2.25", Helo: "mail.example.com",
	MailFrom: "sender@example.com", RcptTo: []string{"rcpt@example.org"}, QueueID: "BENCH2"}

func benchFieldAdded(name, contains string) func(*miltertest.Result) error {
	return func(r *miltertest.Result) error {
		if !r.Accepted() {
			return fmt.Errorf("not accepted: %c", r.Action.Code)
		}
		for _, m := range r.Modifications {
			if (m.Code == gomilter.ActInsertHeader || m.Code == gomilter.ActAddHeader) &&
				strings.EqualFold(m.HeaderName, name) && strings.Contains(m.HeaderValue, contains) {
				return nil
			}
		}
		return fmt.Errorf("no %s field containing %q in %+v", name, contains, r.Modifications)
	}
}

func benchPlain(from string) func(*testing.B, string) []byte {
	return func(*testing.B, string) []byte { return benchMsg(from, 4<<10) }
}

var roundTripCases = []benchRoundTripCase{
	{"sign-rsa2048", "[keys.pin]\n\"example.com\" = [\"2026-11\"]\n", benchOutboundTx, benchPlain("example.com"),
		benchFieldAdded("DKIM-Signature", "a=rsa-sha256")},
	// A 1 MiB body: body canonicalization, hashing and buffers dominate.
	{"sign-rsa2048-1MiB", "[keys.pin]\n\"example.com\" = [\"2026-11\"]\n", benchOutboundTx,
		func(*testing.B, string) []byte { return benchMsg("example.com", 1<<20) },
		benchFieldAdded("DKIM-Signature", "a=rsa-sha256")},
	{"sign-ed25519", "[keys.pin]\n\"example.com\" = [\"2026-11e\"]\n", benchOutboundTx, benchPlain("example.com"),
		benchFieldAdded("DKIM-Signature", "a=ed25519-sha256")},
	// Outbound mail for a domain without keys: the protocol and the policy,
	// no crypto.
	{"nosign", "", benchOutboundTx, benchPlain("nokeys.example"), func(r *miltertest.Result) error {
		if !r.Accepted() || len(r.Modifications) != 0 {
			return fmt.Errorf("want accepted unchanged, got %c %+v", r.Action.Code, r.Modifications)
		}
		return nil
	}},
	// Inbound: DKIM (RSA-2048), SPF and DMARC, DNS answered by the test
	// server (and then the resolver's cache).
	{"verify-rsa2048", "[keys.pin]\n\"example.com\" = [\"2026-11\"]\n", benchInboundTx, benchSignedMsg,
		benchFieldAdded("Authentication-Results", "dkim=pass")},
}

// benchSignedMsg signs the 4 KiB message through the milter itself.
func benchSignedMsg(b *testing.B, addr string) []byte {
	b.Helper()
	res, err := miltertest.Run(context.Background(), "tcp", addr, benchOutboundTx, benchMsg("example.com", 4<<10))
	if err != nil {
		b.Fatal(err)
	}
	if err := benchFieldAdded("DKIM-Signature", "")(res); err != nil {
		b.Fatal(err)
	}
	return res.Message
}

// BenchmarkRoundTrip drives one transaction per operation: "serial" on one
// connection, "parallel" on 4×GOMAXPROCS connections at once.
func BenchmarkRoundTrip(b *testing.B) {
	for _, tc := range roundTripCases {
		b.Run(tc.name, func(b *testing.B) {
			addr := benchServer(b, tc.config)
			msg := tc.msg(b, addr)
			opts := miltertest.Options{LeadingSpace: true, StrayCheck: -1}
			b.Run("serial", func(b *testing.B) {
				c, err := miltertest.NewConn(context.Background(), "tcp", addr, opts)
				if err != nil {
					b.Fatal(err)
				}
				defer c.Close()
				b.ReportAllocs()
				start := time.Now()
				for b.Loop() {
					res, err := c.Do(context.Background(), tc.tx, msg)
					if err != nil {
						b.Fatal(err)
					}
					if err := tc.check(res); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
			})
			b.Run("parallel", func(b *testing.B) {
				b.SetParallelism(4)
				b.ReportAllocs()
				start := time.Now()
				b.RunParallel(func(pb *testing.PB) {
					c, err := miltertest.NewConn(context.Background(), "tcp", addr, opts)
					if err != nil {
						b.Error(err)
						return
					}
					defer c.Close()
					for pb.Next() {
						res, err := c.Do(context.Background(), tc.tx, msg)
						if err != nil {
							b.Error(err)
							return
						}
						if err := tc.check(res); err != nil {
							b.Error(err)
							return
						}
					}
				})
				b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
			})
		})
	}
}
