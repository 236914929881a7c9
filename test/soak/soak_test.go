//go:build soak

package soak

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"

	"github.com/authmilter/authmilter/internal/loadmsg"
	"github.com/authmilter/authmilter/internal/miltertest"
	"github.com/authmilter/authmilter/internal/testdns"
	"github.com/authmilter/authmilter/keys"
	"github.com/authmilter/authmilter/policy"
)

const (
	total    = 10000            // messages
	conns    = 8                // concurrent milter connections
	perConn  = 100              // transactions per connection before it is replaced, as an MTA's session ends
	msgSize  = 2048             // bytes per message
	dropRate = 0.2              // fraction of DNS queries never answered
	hupEvery = time.Second      // SIGHUP period
	runLimit = 10 * time.Minute // bound on the whole load
)

// published is the DNS side of the test's key table: which key records are
// served, and since when. The verifier reads its records from here, not
// through the lossy server.
type published struct {
	mu    sync.Mutex
	since map[string]time.Time // "d/s" -> when its record was published
	txt   map[string]string    // record name -> record
}

// publish serves k's record and remembers when. The time is taken before the
// record is served, so "signed before since" is always a violation.
func (p *published) publish(dns *testdns.Server, k *keys.Key) time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	p.since[k.ID()] = now
	name := keys.RecordName(k.Domain, k.Selector)
	p.txt[strings.ToLower(strings.TrimSuffix(name, "."))] = keys.FormatRecord(k)
	dns.SetTXT(name, keys.FormatRecord(k))
	return now
}

func (p *published) publishedSince(id string) (time.Time, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	t, ok := p.since[id]
	return t, ok
}

// lookupTXT answers the verifier from the published records.
func (p *published) lookupTXT(name string) ([]string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if v, ok := p.txt[strings.ToLower(strings.TrimSuffix(name, "."))]; ok {
		return []string{v}, nil
	}
	return nil, &net.DNSError{Err: "no such record", Name: name, IsNotFound: true}
}

// sig is one DKIM-Signature a message came back with.
type sig struct {
	id   string // "d/s"
	algo string
	ok   bool   // verified against the published record
	why  string // why not
}

func (s sig) String() string { return s.id + "/" + s.algo }

// result is one message driven through the daemon.
type result struct {
	n          int
	queue      string
	from       string
	start, end time.Time
	lost       string // why the message is lost: no reply, broken connection, unexpected reply
	sigs       []sig
}

var sigTagRE = regexp.MustCompile(`(?:^|;)\s*([dsa])\s*=\s*([^;\s]+)`)

// domainOf spreads messages over the domains: half a.example (RSA and
// Ed25519), 40% b.example (RSA, rotated midway), 10% c.example (its only
// key is never published).
func domainOf(n int) string {
	switch n % 10 {
	case 0, 1, 2, 3, 4:
		return "a.example"
	case 9:
		return "c.example"
	default:
		return "b.example"
	}
}

// send drives message n over c and checks its signatures against pub.
func send(ctx context.Context, c *miltertest.Conn, pub *published, bodies map[string][]byte, n int) (r result, connOK bool) {
	r = result{n: n, queue: fmt.Sprintf("SOAK%05d", n), from: domainOf(n), start: time.Now()}
	tx := miltertest.Transaction{ClientIP: "127.0.0.1", ClientPort: 40000 + uint16(n%20000), Helo: "client.soak.example",
		MailFrom: "sender@" + r.from, RcptTo: []string{"rcpt@example.org"}, QueueID: r.queue}
	res, err := c.Do(ctx, tx, bodies[r.from])
	r.end = time.Now()
	switch {
	case err != nil:
		r.lost = "no reply or broken connection: " + err.Error()
		return r, false
	case !res.Accepted():
		r.lost = fmt.Sprintf("unexpected reply at %s: %v", res.Stage, res.Action)
		return r, true
	}
	header, _, err := policy.SplitMessage(res.Message)
	if err != nil {
		r.lost = "message as delivered does not parse: " + err.Error()
		return r, true
	}
	for _, f := range header {
		if !strings.EqualFold(f.Name, "DKIM-Signature") {
			continue
		}
		tags := map[string]string{}
		for _, m := range sigTagRE.FindAllStringSubmatch(strings.NewReplacer("\r\n", "", "\t", " ").Replace(f.Value), -1) {
			tags[m[1]] = m[2]
		}
		r.sigs = append(r.sigs, sig{id: tags["d"] + "/" + tags["s"], algo: tags["a"]})
	}
	if len(r.sigs) == 0 {
		return r, true
	}
	vs, err := dkim.VerifyWithOptions(bytes.NewReader(res.Message), &dkim.VerifyOptions{LookupTXT: pub.lookupTXT})
	if err != nil || len(vs) != len(r.sigs) {
		for i := range r.sigs {
			r.sigs[i].why = fmt.Sprintf("verifier: %d results for %d signatures, error %v", len(vs), len(r.sigs), err)
		}
		return r, true
	}
	for i, v := range vs { // go-msgauth reports signatures top to bottom
		if v.Err != nil {
			r.sigs[i].why = v.Err.Error()
		} else {
			r.sigs[i].ok = true
		}
	}
	return r, true
}

// load drives messages over conns concurrent milter connections until
// total were sent. A broken connection is replaced; its message is lost.
type load struct {
	sock   string
	pub    *published
	bodies map[string][]byte

	count     atomic.Int64
	connCount atomic.Int64
	mu        sync.Mutex
	results   []result
}

func (l *load) run(ctx context.Context) {
	var wg sync.WaitGroup
	for w := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for int(l.count.Load()) < total && ctx.Err() == nil {
				c, err := miltertest.NewConn(ctx, "unix", l.sock, miltertest.Options{LeadingSpace: w%2 == 0})
				if err != nil {
					n := int(l.count.Add(1))
					if n <= total {
						l.add(result{n: n, queue: fmt.Sprintf("SOAK%05d", n), from: domainOf(n), start: time.Now(), end: time.Now(),
							lost: "connect: " + err.Error()})
					}
					time.Sleep(100 * time.Millisecond)
					continue
				}
				l.connCount.Add(1)
				for range perConn {
					n := int(l.count.Add(1))
					if n > total {
						break
					}
					r, ok := send(ctx, c, l.pub, l.bodies, n)
					l.add(r)
					if !ok {
						break
					}
				}
				c.Close()
			}
		}()
	}
	wg.Wait()
}

func (l *load) add(r result) {
	l.mu.Lock()
	l.results = append(l.results, r)
	l.mu.Unlock()
}

// waitCount waits until n messages were begun.
func (l *load) waitCount(t testing.TB, ctx context.Context, n int) {
	t.Helper()
	for int(l.count.Load()) < n {
		if ctx.Err() != nil {
			t.Fatalf("only %d of %d messages sent before the time limit", l.count.Load(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func genKey(t testing.TB, dir, domain, sel, algo string) *keys.Key {
	t.Helper()
	k, err := keys.Generate(dir, domain, sel, algo)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestSoak: see the package documentation.
func TestSoak(t *testing.T) {
	tmp := t.TempDir()
	dns := testdns.Start(t)
	seed := uint64(0) // testdns's default: the same drop pattern every run
	if v := os.Getenv("SOAK_SEED"); v != "" {
		var err error
		if seed, err = strconv.ParseUint(v, 0, 64); err != nil {
			t.Fatalf("SOAK_SEED=%q: %v", v, err)
		}
	}
	dns.SetDropSeed(seed)
	dns.SetDropRate(dropRate)
	keyDir := filepath.Join(tmp, "keys")
	pub := &published{since: map[string]time.Time{}, txt: map[string]string{}}

	// The key table. Published from the start: a.example's RSA and Ed25519
	// keys and b.example's RSA key. Never published, files present: newer
	// RSA and Ed25519 keys of a.example (they would win if they counted as
	// published) and c.example's only key.
	for _, k := range []*keys.Key{
		genKey(t, keyDir, "a.example", "2026-10", "rsa-2048"),
		genKey(t, keyDir, "a.example", "2026-10e", "ed25519"),
		genKey(t, keyDir, "b.example", "2026-10", "rsa-2048"),
	} {
		pub.publish(dns, k)
	}
	never := []string{"a.example/2026-12", "a.example/2026-12e", "c.example/s1"}
	genKey(t, keyDir, "a.example", "2026-12", "rsa-2048")
	genKey(t, keyDir, "a.example", "2026-12e", "ed25519")
	genKey(t, keyDir, "c.example", "s1", "ed25519")

	d := startDaemon(t, tmp, dns.Addr(), "500ms", keyDir, "recheck = \"2s\"\n")
	startLog := d.logLen(t)
	if keep := os.Getenv("SOAK_LOG"); keep != "" {
		t.Cleanup(func() {
			if err := os.WriteFile(keep, []byte(d.logs(t)), 0o644); err != nil {
				t.Error(err)
			}
		})
	}

	bodies := map[string][]byte{}
	for _, dom := range []string{"a.example", "b.example", "c.example"} {
		bodies[dom] = loadmsg.Generate(msgSize, "soak", dom, "example.org")
	}
	ctx, cancel := context.WithTimeout(context.Background(), runLimit)
	defer cancel()
	began := time.Now()
	l := &load{sock: d.sock, pub: pub, bodies: bodies}
	loadDone := make(chan struct{})
	go func() { l.run(ctx); close(loadDone) }()

	// SIGHUP every second for the whole run.
	stopHUP := make(chan struct{})
	hupDone := make(chan int)
	go func() {
		n := 0
		tick := time.NewTicker(hupEvery)
		defer tick.Stop()
		for {
			select {
			case <-stopHUP:
				hupDone <- n
				return
			case <-tick.C:
				if d.cmd.Process.Signal(syscall.SIGHUP) == nil {
					n++
				}
			}
		}
	}()

	// Rotation midway: b.example's next key appears in the folder,
	// unpublished (seen by a reload and not used), then it is published and
	// activated by a SIGHUP or the recheck, with queries being dropped.
	l.waitCount(t, ctx, total/4)
	from := d.logLen(t)
	newKey := genKey(t, keyDir, "b.example", "2026-11", "rsa-2048")
	d.waitLog(t, `msg="key not usable" key=b.example/2026-11`, from, 30*time.Second)
	addedAt := int(l.count.Load())
	l.waitCount(t, ctx, addedAt+total/10) // a few reloads with the new key unpublished
	from = d.logLen(t)
	tPub := pub.publish(dns, newKey)
	pubAt := int(l.count.Load())
	_, tSwitch := d.waitLog(t, "key activated d=b.example s=2026-11 a=rsa-sha256 (replaces 2026-10)", from, 60*time.Second)
	switchAt := int(l.count.Load())

	select {
	case <-loadDone:
	case <-ctx.Done():
		<-loadDone
		t.Errorf("load did not finish within %s: %d of %d messages begun", runLimit, l.count.Load(), total)
	}
	elapsed := time.Since(began)
	close(stopHUP)
	hups := <-hupDone

	// Messages, signatures and verification.
	results := l.results
	byQueue := map[string]*result{}
	var lost, unpublishedUse, badVerify, signedMsgs, unsignedMsgs, partial, newKeyUse, oldAfterSwitch, afterSwitch int
	sigCount := map[string]int{}
	for i := range results {
		r := &results[i]
		byQueue[r.queue] = r
		if r.lost != "" {
			lost++
			if lost <= 10 {
				t.Errorf("message %s (%s) lost: %s", r.queue, r.from, r.lost)
			}
			continue
		}
		if len(r.sigs) == 0 {
			unsignedMsgs++
		} else {
			signedMsgs++
		}
		if r.from == "a.example" && len(r.sigs) == 1 {
			partial++
		}
		for _, s := range r.sigs {
			sigCount[s.String()]++
			since, ok := pub.publishedSince(s.id)
			if !ok || !r.end.After(since) {
				unpublishedUse++
				if unpublishedUse <= 10 {
					t.Errorf("message %s signed with %s, whose record was not published (published: %v, since %v; message %v to %v)",
						r.queue, s, ok, since.Format(time.StampMicro), r.start.Format(time.StampMicro), r.end.Format(time.StampMicro))
				}
			}
			if !s.ok {
				badVerify++
				if badVerify <= 10 {
					t.Errorf("message %s: signature %s does not verify against the published record: %s", r.queue, s, s.why)
				}
			}
			if s.id == "b.example/2026-11" {
				newKeyUse++
			}
		}
		if r.from == "b.example" && r.start.After(tSwitch) {
			afterSwitch++
			if len(r.sigs) != 1 || r.sigs[0].id != "b.example/2026-11" {
				oldAfterSwitch++
				if oldAfterSwitch <= 10 {
					t.Errorf("message %s begun after b.example/2026-11 was activated is signed %v", r.queue, r.sigs)
				}
			}
		}
	}
	if len(results) != total || len(byQueue) != total {
		t.Errorf("%d results for %d queue IDs, want %d", len(results), len(byQueue), total)
	}

	// The per-message log lines.
	logs := d.logs(t)
	logged := map[string]int{}
	var noLine, noReason, logMismatch int
	reasons := map[string]int{}
	for _, line := range strings.Split(logs[startLog:], "\n") {
		if !strings.Contains(line, " msg=message ") {
			continue
		}
		a := logfmt(line)
		q := a["queue"]
		logged[q]++
		r := byQueue[q]
		if r == nil || r.lost != "" {
			continue
		}
		var got []string
		for _, s := range r.sigs {
			got = append(got, s.String())
		}
		if want := strings.Join(got, ","); a["signed"] != want {
			logMismatch++
			if logMismatch <= 10 {
				t.Errorf("message %s carries signatures %q, its log line says signed=%q: %s", q, want, a["signed"], line)
			}
		}
		if len(r.sigs) == 0 {
			// The reason: the stable token (unsigned=, Decision.UnsignedReason)
			// and the text for people (not_signed=); either will do.
			if a["unsigned"] == "" && a["not_signed"] == "" {
				noReason++
				if noReason <= 10 {
					t.Errorf("message %s left unsigned, logged without a reason: %s", q, line)
				}
				continue
			}
			reasons[fmt.Sprintf("unsigned=%q not_signed=%q", a["unsigned"], a["not_signed"])]++
		}
	}
	for q := range byQueue {
		if logged[q] != 1 {
			noLine++
			if noLine <= 10 {
				t.Errorf("message %s has %d per-message log lines, want 1", q, logged[q])
			}
		}
	}
	for _, id := range never {
		if n := sigCount[id+"/rsa-sha256"] + sigCount[id+"/ed25519-sha256"]; n > 0 {
			t.Errorf("%d signatures with %s, whose record was never published", n, id)
		}
	}

	// What the daemon said about reloads and keys.
	var reloaded, reloadFailed, stale, deactivated, activated int
	for _, line := range strings.Split(logs[startLog:], "\n") {
		switch {
		case strings.Contains(line, "msg=reloaded"):
			reloaded++
		case strings.Contains(line, "reload failed"):
			reloadFailed++
			t.Errorf("reload failed: %s", line)
		case strings.Contains(line, "using the last good answer"):
			stale++
		case strings.Contains(line, "key deactivated"):
			deactivated++
			t.Errorf("a published key was deactivated: %s", line)
		case strings.Contains(line, "key activated"):
			activated++
		}
	}
	okReloads := d.metric(t, `authmilter_reloads_total{result="ok"}`)
	dropped, queries := dns.DroppedByRate(), dns.Queries()

	var sigList []string
	for k, v := range sigCount {
		sigList = append(sigList, fmt.Sprintf("%s=%d", k, v))
	}
	sort.Strings(sigList)
	var reasonList []string
	for k, v := range reasons {
		reasonList = append(reasonList, fmt.Sprintf("%s: %d", k, v))
	}
	sort.Strings(reasonList)
	t.Logf("soak: %d messages over %d milter connections (%d at a time) in %s (%.0f msgs/s)",
		len(results), l.connCount.Load(), conns, elapsed.Round(time.Millisecond), float64(len(results))/elapsed.Seconds())
	t.Logf("soak: lost=%d signed=%d unsigned=%d (a.example with one signature of two: %d); signatures: %s",
		lost, signedMsgs, unsignedMsgs, partial, strings.Join(sigList, " "))
	t.Logf("soak: unsigned reasons: %s", strings.Join(reasonList, "; "))
	t.Logf("soak: signed with an unpublished key=%d, signatures not verifying=%d, messages without exactly one log line=%d, unsigned without reason=%d, log/signature mismatches=%d",
		unpublishedUse, badVerify, noLine, noReason, logMismatch)
	t.Logf("soak: %d SIGHUPs sent; %d reloads logged (SIGHUP), reloads_total{ok}=%v (the start, SIGHUPs, rechecks), failed=%d; key activated lines=%d, deactivated=%d, last-good answers used=%d",
		hups, reloaded, okReloads, reloadFailed, activated, deactivated, stale)
	t.Logf("soak: DNS (drop seed %d): %d queries, %d dropped (%.1f%%)", seed, queries, dropped, 100*float64(dropped)/float64(max(queries, 1)))
	t.Logf("soak: rotation: b.example/2026-11 added after message %d, published after %d (%s into the run), activation logged after %d (%s after publication); %d signatures with it, %d b.example messages begun after the activation",
		addedAt, pubAt, tPub.Sub(began).Round(time.Millisecond), switchAt, tSwitch.Sub(tPub).Round(time.Millisecond), newKeyUse, afterSwitch)

	if lost > 0 {
		t.Errorf("%d messages lost, want none", lost)
	}
	if unpublishedUse > 0 || badVerify > 0 {
		t.Errorf("%d signatures with an unpublished key, %d not verifying; want none", unpublishedUse, badVerify)
	}
	if noLine > 0 || noReason > 0 || logMismatch > 0 {
		t.Errorf("%d messages without their log line, %d unsigned without a reason, %d log lines that disagree with the message", noLine, noReason, logMismatch)
	}
	if oldAfterSwitch > 0 {
		t.Errorf("%d of %d b.example messages begun after the activation are not signed with the new key", oldAfterSwitch, afterSwitch)
	}
	if newKeyUse == 0 || afterSwitch < total/20 {
		t.Errorf("rotation too late to show anything: %d signatures with the new key, %d messages after the activation", newKeyUse, afterSwitch)
	}
	// A loaded machine may skip a tick; the last SIGHUP's reload may still
	// be running (a dropped query takes dns.timeout), and a SIGHUP that
	// arrives while another is pending merges with it.
	if wantHUPs := int(elapsed/hupEvery) * 8 / 10; hups < wantHUPs || reloaded < hups-2 {
		t.Errorf("%d SIGHUPs sent in %s (want at least %d), %d reloads logged", hups, elapsed, wantHUPs, reloaded)
	}
	if dropped == 0 {
		t.Errorf("the DNS server dropped no query")
	}
	if t.Failed() {
		t.Logf("authmilter log, without message lines (last 60):\n%s", tail(nonMessage(logs), 60))
	}
}

// nonMessage returns the log without per-message lines.
func nonMessage(logs string) string {
	var b strings.Builder
	for _, line := range strings.Split(logs, "\n") {
		if !strings.Contains(line, " msg=message ") {
			b.WriteString(line)
			b.WriteByte('\n')
		}
	}
	return b.String()
}
