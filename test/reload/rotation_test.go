package reload

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/authmilter/authmilter/internal/miltertest"
	"github.com/authmilter/authmilter/keys"
	"github.com/authmilter/authmilter/keys/publish/publishtest"
	"github.com/authmilter/authmilter/policy/resolve"
)

// TestMonthlyRotation is issue 3's "done when": a cron-style monthly
// rotation (rotate_after = 30d, grace = 7d), end to end, against a real DNS
// server. Knot DNS is the primary
// of example.com and accepts RFC 2136 updates signed with TSIG; authmilter
// resolves from it. `authmilter rotate --all` runs once a (simulated) day
// for 75 days with -test-now while mail flows through the daemon, which
// runs in real time: after a run that makes keys, the test waits for the
// daemon to switch (keys.recheck = 1s) before the calendar moves on, as a
// real day would. Every message must be signed (RSA and Ed25519) and verify
// against Knot the moment it comes back, no message may carry a selector
// before its record was published, and retired keys' records must be gone.
func TestMonthlyRotation(t *testing.T) {
	knot := publishtest.StartKnot(t, "example.com")
	tmp := t.TempDir()
	keyDir := filepath.Join(tmp, "keys")
	cfgPath, sock, metrics := writeConfig(t, tmp, knot.Addr, keyDir, fmt.Sprintf(`recheck = "1s"
rotate_after = "30d"
grace = "7d"
[keys.publish]
server = %q
zone = "example.com"
tsig_name = %q
tsig_secret_file = %q
ttl = 300
`, knot.Addr, publishtest.TSIGName, knot.SecretFile))
	t0 := time.Date(2027, 1, 1, 3, 0, 0, 0, time.UTC) // cron at 03:00
	day := 24 * time.Hour
	rotateAt := func(when time.Time, args ...string) string {
		return runCmd(t, append([]string{"rotate", "-config", cfgPath, "-test-now", when.Format(time.RFC3339)}, args...)...)
	}
	published := map[string]time.Time{} // selector -> a moment before its record was published

	// Day 0: the domain's first keys, published by dynamic update.
	out := rotateAt(t0, "-d", "example.com", "-a", "rsa-2048,ed25519")
	for _, sel := range []string{"2027-01", "2027-01e"} {
		if !strings.Contains(out, "published "+sel+"._domainkey.example.com. TXT by RFC 2136 update to "+knot.Addr) {
			t.Fatalf("first keys not published:\n%s", out)
		}
		published[sel] = time.Now()
	}
	d := startDaemon(t, cfgPath, sock, metrics)
	d.waitLog(t, "key activated d=example.com s=2027-01 a=rsa-sha256", 0, 5*time.Second)
	d.waitLog(t, "key activated d=example.com s=2027-01e a=ed25519-sha256", 0, 5*time.Second)

	// Mail flows all along, verified against Knot as it comes back.
	tr := &traffic{sock: sock, res: newVerifier(t, knot.Addr)}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() { defer wg.Done(); tr.run(ctx) }()
	}
	stopTraffic := func() { cancel(); wg.Wait() }
	defer stopTraffic()
	tr.waitMore(t, 20)

	type event struct {
		day     int
		created []string // selectors made that day
		retired []string // selectors retired that day
	}
	// rotate_after is an age, so with a daily cron the keys come every 30
	// days: Jan 1, Jan 31 (the month's second key: 2027-01b), Mar 2. Each
	// old key is superseded from the run after its successor was made and
	// retired once 7 days and the recheck interval have passed.
	want := []event{
		{30, []string{"2027-01b", "2027-01eb"}, nil},
		{39, nil, []string{"2027-01", "2027-01e"}},
		{60, []string{"2027-03", "2027-03e"}, nil},
		{69, nil, []string{"2027-01b", "2027-01eb"}},
	}
	var got []event
	var activeSel = map[string]string{"rsa-sha256": "2027-01", "ed25519-sha256": "2027-01e"}
	for n := 1; n <= 75; n++ {
		now := t0.Add(time.Duration(n) * day)
		// A dry run changes nothing: files, state, DNS.
		if n == 30 || n == 39 {
			before := folderState(t, keyDir) + strings.Join(knot.TXT(t, keys.RecordName("example.com", activeSel["rsa-sha256"])), "")
			dry := rotateAt(now, "-all", "-dry-run")
			if !strings.Contains(dry, "(dry run)") {
				t.Errorf("day %d: dry run says nothing:\n%s", n, dry)
			}
			if after := folderState(t, keyDir) + strings.Join(knot.TXT(t, keys.RecordName("example.com", activeSel["rsa-sha256"])), ""); after != before {
				t.Fatalf("day %d: dry run changed something", n)
			}
		}
		from := d.logLen()
		// rotate publishes while it runs: the record cannot have been in
		// DNS before this moment, so a message finished earlier and signed
		// with the new key would be signed before publication.
		rotateStarted := time.Now()
		out := rotateAt(now, "-all")
		ev := event{day: n}
		for _, line := range strings.Split(out, "\n") {
			var sel, algo string
			if _, err := fmt.Sscanf(line, "example.com: new %s key %s", &algo, &sel); err == nil {
				ev.created = append(ev.created, sel)
			}
			if _, err := fmt.Sscanf(line, "example.com: retired %s", &sel); err == nil {
				ev.retired = append(ev.retired, sel)
			}
		}
		if ev.created == nil && ev.retired == nil {
			if out != "" {
				t.Errorf("day %d: nothing happened but rotate printed (cron would mail it):\n%s", n, out)
			}
			continue
		}
		got = append(got, ev)
		t.Logf("day %d (%s): rotate says:\n%s", n, now.Format("2006-01-02"), out)
		for _, sel := range ev.created {
			if !strings.Contains(out, "published "+sel+"._domainkey.example.com. TXT by RFC 2136 update") {
				t.Errorf("day %d: %s not published by dynamic update", n, sel)
			}
			published[sel] = rotateStarted
			k, err := keys.LoadKey(filepath.Join(keyDir, "example.com", sel+".pem"), "example.com", sel)
			if err != nil {
				t.Fatal(err)
			}
			if got := keys.CheckPublished(ctx, knot.LookupTXT, k); got.State != keys.Published {
				t.Errorf("day %d: Knot serves %s as %s: %s", n, sel, got.State, got.Detail)
			}
			// The daemon switches by itself (periodic recheck), and says so.
			_, switched := d.waitLog(t, fmt.Sprintf("key activated d=example.com s=%s a=%s (replaces %s)", sel, k.Algorithm, activeSel[string(k.Algorithm)]), from, 10*time.Second)
			activeSel[string(k.Algorithm)] = sel
			tr.switched(string(k.Algorithm), sel, switched)
		}
		for _, sel := range ev.retired {
			if _, err := os.Stat(filepath.Join(keyDir, "example.com", keys.RetiredDir, sel+".pem")); err != nil {
				t.Errorf("day %d: %s not in retired/: %v", n, sel, err)
			}
			if txt := knot.TXT(t, keys.RecordName("example.com", sel)); len(txt) != 0 {
				t.Errorf("day %d: retired %s still has its record: %q", n, sel, txt)
			}
			if !strings.Contains(out, "removed "+sel+"._domainkey.example.com. TXT by RFC 2136 update") {
				t.Errorf("day %d: removal of %s not reported", n, sel)
			}
		}
		tr.waitMore(t, 30) // mail flows over the new state of things
	}
	stopTraffic()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("rotation events (day, created, retired):\n got %v\nwant %v", got, want)
	}

	// Every message: accepted, signed with the two active keys, verified
	// against Knot on arrival, never with a key before its publication,
	// and with the new keys once the switch was logged.
	msgs := tr.snapshot()
	var failed, bad, early, late int
	perSel := map[string]int{}
	for _, m := range msgs {
		if m.err != nil {
			failed++
			if failed <= 5 {
				t.Errorf("message failed: %v", m.err)
			}
			continue
		}
		if len(m.selectors) != 2 || len(m.verify) != 2 || !strings.HasSuffix(m.verify[0], ": pass") || !strings.HasSuffix(m.verify[1], ": pass") {
			bad++
			if bad <= 5 {
				t.Errorf("message signed %q, verified %q", m.selectors, m.verify)
			}
			continue
		}
		for _, s := range m.selectors {
			parts := strings.Split(s, "/")
			perSel[parts[1]]++
			if p, ok := published[parts[1]]; !ok || !m.end.After(p) {
				early++
				t.Errorf("message ended at %s signed with %s, published at %s", m.end.Format(time.StampMicro), parts[1], p.Format(time.StampMicro))
			}
		}
		if tr.stale(m) {
			late++
		}
	}
	var sels []string
	for s, n := range perSel {
		sels = append(sels, fmt.Sprintf("%s=%d", s, n))
	}
	sort.Strings(sels)
	t.Logf("monthly rotation: %d messages over 75 daily rotate runs, signatures per selector %s; failed=%d bad=%d early=%d stale=%d",
		len(msgs), strings.Join(sels, " "), failed, bad, early, late)
	if failed+bad+early+late > 0 {
		t.Errorf("%d failed, %d unsigned or not verifying, %d signed before publication, %d with a replaced key after the switch", failed, bad, early, late)
	}

	// The end state: `keys` is happy; the state file tells the story.
	keysOut := runCmd(t, "keys", "-config", cfgPath)
	if !strings.Contains(keysOut, "2027-03 ") || strings.Contains(keysOut, "2027-01") {
		t.Errorf("keys at the end:\n%s", keysOut)
	}
	state, err := keys.LoadState(filepath.Join(keyDir, "example.com"))
	if err != nil {
		t.Fatal(err)
	}
	for _, sel := range []string{"2027-01", "2027-01b"} {
		ks := state.Keys[sel]
		if ks == nil || ks.Retired.IsZero() || ks.Withdrawn.IsZero() || ks.Superseded.IsZero() || ks.FirstActive.IsZero() || ks.Published.IsZero() {
			t.Errorf("state of %s: %+v", sel, ks)
		}
	}
}

// folderState describes the key folder (names, modes, contents) for
// before/after comparisons.
func folderState(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || strings.HasSuffix(p, ".lock") {
			return nil
		}
		data, _ := os.ReadFile(p)
		fmt.Fprintf(&b, "%s %v %x\n", p, fi.Mode(), data)
		return nil
	})
	return b.String()
}

// traffic sends messages continuously and remembers, per algorithm, when
// each key switch was logged.
type traffic struct {
	sock string
	res  *resolve.Resolver

	mu       sync.Mutex
	msgs     []sent
	n        int
	switches map[string][]switchAt
}

type switchAt struct {
	sel string
	at  time.Time
}

func (tr *traffic) run(ctx context.Context) {
	for ctx.Err() == nil {
		c, err := miltertest.NewConn(ctx, "unix", tr.sock, miltertest.Options{LeadingSpace: true})
		if err != nil {
			if ctx.Err() == nil {
				tr.add(sent{err: err})
			}
			return
		}
		for range 5 {
			tr.mu.Lock()
			tr.n++
			n := tr.n
			tr.mu.Unlock()
			s := sign(context.Background(), c, tr.res, n)
			tr.add(s)
			if s.err != nil || ctx.Err() != nil {
				break
			}
		}
		c.Close()
	}
}

func (tr *traffic) add(s sent) {
	tr.mu.Lock()
	tr.msgs = append(tr.msgs, s)
	tr.mu.Unlock()
}

func (tr *traffic) snapshot() []sent {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return append([]sent(nil), tr.msgs...)
}

// waitMore waits until n more messages were sent.
func (tr *traffic) waitMore(t *testing.T, n int) {
	t.Helper()
	tr.mu.Lock()
	target := len(tr.msgs) + n
	tr.mu.Unlock()
	deadline := time.Now().Add(20 * time.Second)
	for {
		tr.mu.Lock()
		have := len(tr.msgs)
		tr.mu.Unlock()
		if have >= target {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("traffic stalled at %d messages", have)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (tr *traffic) switched(algo, sel string, at time.Time) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if tr.switches == nil {
		tr.switches = map[string][]switchAt{}
	}
	tr.switches[algo] = append(tr.switches[algo], switchAt{sel, at})
}

// stale reports whether m, begun after a switch was logged, still carries
// a key that the switch replaced.
func (tr *traffic) stale(m sent) bool {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	for _, s := range m.selectors {
		parts := strings.Split(s, "/")
		for _, sw := range tr.switches[parts[2]] {
			if m.start.After(sw.at) && parts[1] < sw.sel {
				return true
			}
		}
	}
	return false
}
