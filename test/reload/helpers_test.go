package reload

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/authmilter/authmilter/internal/daemontest"
	"github.com/authmilter/authmilter/internal/miltertest"
	"github.com/authmilter/authmilter/internal/syncbuf"
	"github.com/authmilter/authmilter/internal/testbin"
	"github.com/authmilter/authmilter/keys"
	"github.com/authmilter/authmilter/policy"
	"github.com/authmilter/authmilter/policy/resolve"
)

// binary is the authmilter binary built by TestMain.
var binary string

func TestMain(m *testing.M) { testbin.Main(m, &binary) }

// daemon is a running `authmilter run`.
type daemon struct {
	cmd     *exec.Cmd
	logs    *syncbuf.Buffer
	cfgPath string
	sock    string
	metrics string // host:port of /metrics
	done    <-chan struct{}
}

// freePort returns a free TCP port on 127.0.0.1.
func freePort(t testing.TB) string { return daemontest.FreePort(t) }

// writeConfig writes the daemon's config: a unix socket in dir, metrics on a
// free port, DNS from dnsAddr, keys from keyDir, and extra TOML for [keys].
func writeConfig(t testing.TB, dir, dnsAddr, keyDir, keysExtra string) (cfgPath, sock, metrics string) {
	t.Helper()
	sock = filepath.Join(dir, "authmilter.sock")
	metrics = freePort(t)
	cfgPath = filepath.Join(dir, "authmilter.toml")
	conf := fmt.Sprintf(`listen = ["unix:%s"]
authserv_id = "mx.test.example"
shutdown_timeout = "10s"
[dns]
servers = [%q]
timeout = "1s"
[outbound]
networks = ["127.0.0.0/8"]
[reports]
record = false

[metrics]
listen = %q
[log]
level = "info"
[keys]
check = "resolver"
dir = %q
%s`, sock, dnsAddr, metrics, keyDir, keysExtra)
	if err := os.WriteFile(cfgPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfgPath, sock, metrics
}

// startDaemon starts `authmilter run -config cfgPath` and waits until it
// listens. It is stopped with SIGTERM (by PID) when the test ends.
func startDaemon(t testing.TB, cfgPath, sock, metrics string) *daemon {
	t.Helper()
	p := daemontest.StartRun(t, "", binary, cfgPath)
	d := &daemon{cmd: p.Cmd, logs: p.Logs, cfgPath: cfgPath, sock: sock, metrics: metrics, done: p.Done}
	d.waitLog(t, "listening", 0, 10*time.Second)
	return d
}

// hup sends SIGHUP.
func (d *daemon) hup(t testing.TB) {
	t.Helper()
	if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatalf("SIGHUP: %v", err)
	}
}

// logLen returns the length of the log so far, to wait for lines after it.
func (d *daemon) logLen() int { return len(d.logs.String()) }

// waitLog waits for a log line containing substr after offset from and
// returns the line and when it was seen.
func (d *daemon) waitLog(t testing.TB, substr string, from int, timeout time.Duration) (string, time.Time) {
	t.Helper()
	return daemontest.WaitLog(t, d.logs.String, d.done, substr, from, timeout, 5*time.Millisecond)
}

// metric returns the value of a counter or gauge line of /metrics, e.g.
// `authmilter_reloads_total{result="error"}`; 0 when absent.
func (d *daemon) metric(t testing.TB, series string) float64 {
	t.Helper()
	v, err := daemontest.Metric(d.metrics, series)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// sent is one message driven through the daemon.
type sent struct {
	start, end time.Time
	// selectors are the DKIM-Signatures' "d/s/a", in order.
	selectors []string
	// verify holds each signature's result.
	verify []string
	err    error
}

var sigTagRE = regexp.MustCompile(`(?:^|;)\s*([dsa])\s*=\s*([^;\s]+)`)

// sign drives one outbound message over c and verifies the result with r
// (unless r is nil).
func sign(ctx context.Context, c *miltertest.Conn, r *resolve.Resolver, n int) sent {
	raw := fmt.Sprintf("From: Alice <alice@example.com>\r\nTo: bob@example.org\r\nSubject: reload test %d\r\n"+
		"Date: Tue, 24 Nov 2026 12:00:00 +0000\r\nMessage-ID: <%d@example.com>\r\n\r\nMessage number %d.\r\n%s",
		n, n, n, strings.Repeat("Some body text to hash.\r\n", 40))
	s := sent{start: time.Now()}
	tx := miltertest.Transaction{ClientIP: "127.0.0.1", Helo: "client.example.com", MailFrom: "alice@example.com",
		RcptTo: []string{"bob@example.org"}, QueueID: fmt.Sprintf("Q%d", n), DaemonName: "ORIGINATING"}
	res, err := c.Do(ctx, tx, []byte(raw))
	s.end = time.Now()
	if err != nil {
		s.err = err
		return s
	}
	if !res.Accepted() {
		s.err = fmt.Errorf("message %d not accepted: stage %s, action %v", n, res.Stage, res.Action)
		return s
	}
	header, body, err := policy.SplitMessage(res.Message)
	if err != nil {
		s.err = err
		return s
	}
	for _, f := range header {
		if strings.EqualFold(f.Name, "DKIM-Signature") {
			tags := map[string]string{}
			for _, m := range sigTagRE.FindAllStringSubmatch(strings.NewReplacer("\r\n", "", "\t", " ").Replace(f.Value), -1) {
				tags[m[1]] = m[2]
			}
			s.selectors = append(s.selectors, tags["d"]+"/"+tags["s"]+"/"+tags["a"])
		}
	}
	if r == nil {
		return s
	}
	for _, v := range policy.VerifyDKIM(ctx, r, header, bytes.NewReader(body), 10) {
		res := v.Result
		if v.Result != "pass" {
			res += " (" + v.Reason + ")"
		}
		s.verify = append(s.verify, v.Domain+"/"+v.Selector+": "+res)
	}
	return s
}

// load drives messages over conns concurrent milter connections, each
// connection carrying a few transactions before it is replaced, until
// stop is closed and at least min messages were sent.
type load struct {
	sock    string
	res     *resolve.Resolver
	conns   int
	perConn int

	count     atomic.Int64
	connCount atomic.Int64
	mu        sync.Mutex
	results   []sent
}

func (l *load) run(ctx context.Context, total int) {
	var wg sync.WaitGroup
	for w := range l.conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for int(l.count.Load()) < total && ctx.Err() == nil {
				c, err := miltertest.NewConn(ctx, "unix", l.sock, miltertest.Options{LeadingSpace: w%2 == 0})
				if err != nil {
					l.add(sent{start: time.Now(), end: time.Now(), err: fmt.Errorf("connect: %w", err)})
					return
				}
				l.connCount.Add(1)
				for range l.perConn {
					n := int(l.count.Add(1))
					if n > total {
						break
					}
					s := sign(ctx, c, l.res, n)
					l.add(s)
					if s.err != nil {
						break
					}
				}
				c.Close()
			}
		}()
	}
	wg.Wait()
}

func (l *load) add(s sent) {
	l.mu.Lock()
	l.results = append(l.results, s)
	l.mu.Unlock()
}

func (l *load) snapshot() []sent {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]sent(nil), l.results...)
}

// waitCount waits until n messages were sent.
func (l *load) waitCount(t testing.TB, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for int(l.count.Load()) < n {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d messages sent within %s", l.count.Load(), n, timeout)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// newVerifier returns an uncached resolver for dnsAddr, so that each
// verification sees DNS as it is.
func newVerifier(t testing.TB, dnsAddr string) *resolve.Resolver {
	t.Helper()
	r, err := resolve.New(resolve.Config{Servers: []string{dnsAddr}, Timeout: 2 * time.Second, CacheSize: -1})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// genKey makes a key (atomically, as keygen and rotate do).
func genKey(t testing.TB, dir, domain, sel, algo string) *keys.Key {
	t.Helper()
	k, err := keys.Generate(dir, domain, sel, algo)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// runCmd runs the binary with args and returns its stdout; it fails the
// test on a non-zero exit.
func runCmd(t testing.TB, args ...string) string { return testbin.MustRun(t, binary, args...) }
