package keydns_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"
	"github.com/miekg/dns"

	"github.com/authmilter/authmilter/internal/dnsproc"
	"github.com/authmilter/authmilter/internal/dnstopo"
	"github.com/authmilter/authmilter/keys"
	"github.com/authmilter/authmilter/keys/dnsserver"
)

// KdigBinary is kdig (Debian knot-dnsutils).
const KdigBinary = "/usr/bin/kdig"

// table is a key folder and the server config serving it: delegated
// selector zones (myesp._domainkey.<customer>) and the CNAME-target zone
// dkim.myesp.example.
type table struct {
	dir string
	cfg dnsserver.Config
}

// cnameZone puts cname.example in CNAME mode.
func cnameZone(domain string) string {
	if domain == "cname.example" {
		return "dkim.myesp.example"
	}
	return ""
}

func newTable(t *testing.T) *table {
	t.Helper()
	tb := &table{dir: filepath.Join(t.TempDir(), "keys"), cfg: dnsserver.Config{
		Zones:       []string{"myesp._domainkey.*", "dkim.myesp.example"},
		Nameservers: []string{"ns1.keydns.myesp.example", "ns2.keydns.myesp.example"},
		TTL:         2 * time.Second, NegativeTTL: 2 * time.Second, RevokedFor: time.Hour,
	}}
	if err := os.Mkdir(tb.dir, 0o700); err != nil {
		t.Fatal(err)
	}
	tb.generate(t, "customer.example", "s1.myesp", "ed25519")
	tb.generate(t, "customer.example", "s2.myesp", "rsa-2048")
	tb.generate(t, "cname.example", "c1", "ed25519")
	// An RSA record at a long name: its answer does not fit in 512
	// bytes.
	tb.copyKey(t, "customer.example", "s2.myesp", longDomain, "big.myesp")
	return tb
}

// longDomain has a name long enough to push an RSA-2048 answer over 512
// bytes.
var longDomain = strings.Repeat("l", 63) + ".example"

// copyKey puts a copy of a key of the table under another name, created
// now.
func (tb *table) copyKey(t *testing.T, fromDomain, fromSelector, domain, selector string) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(tb.dir, fromDomain, fromSelector+".pem"))
	if err != nil {
		t.Fatal(err)
	}
	ddir := filepath.Join(tb.dir, domain)
	if err := os.MkdirAll(ddir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ddir, selector+".pem"), data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// generate adds a key, created now.
func (tb *table) generate(t *testing.T, domain, selector, algo string) *keys.Key {
	t.Helper()
	k, err := keys.Generate(tb.dir, domain, selector, algo)
	if err != nil {
		t.Fatal(err)
	}
	ddir := filepath.Join(tb.dir, domain)
	st, err := keys.LoadState(ddir)
	if err != nil {
		t.Fatal(err)
	}
	st.NewKey(k.Selector, k.Algorithm, time.Now())
	if err := st.Save(ddir); err != nil {
		t.Fatal(err)
	}
	return k
}

// zones builds the zones of the table as it is now.
func (tb *table) zones(t *testing.T) (*dnsserver.Zones, *keys.Table) {
	t.Helper()
	kt, err := keys.LoadDir(tb.dir)
	if err != nil {
		t.Fatal(err)
	}
	z, err := dnsserver.Build(tb.cfg, kt, cnameZone, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return z, kt
}

// serve starts a server for the table on listen, closed when the test
// ends.
func (tb *table) serve(t *testing.T, listen string, edit func(*dnsserver.Config)) *dnsserver.Server {
	t.Helper()
	cfg := tb.cfg
	cfg.Listen = []string{listen}
	if edit != nil {
		edit(&cfg)
	}
	s, err := dnsserver.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	z, _ := tb.zones(t)
	s.Swap(z)
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// kdigResult is what kdig printed.
type kdigResult struct {
	status string
	flags  []string
	answer []string // the answer section's records, as printed
	out    string
}

func (r kdigResult) hasFlag(f string) bool {
	for _, x := range r.flags {
		if x == f {
			return true
		}
	}
	return false
}

var (
	kdigStatus = regexp.MustCompile(`status: ([A-Z]+)`)
	kdigFlags  = regexp.MustCompile(`;; Flags: ([a-z ]*);`)
)

// kdig runs kdig against addr ("ip:port") with args.
func kdig(t *testing.T, addr string, args ...string) kdigResult {
	t.Helper()
	dnsproc.Require(t, "keydns", "apt-get install knot-dnsutils", KdigBinary)
	host, port, _ := strings.Cut(addr, ":")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	full := append([]string{"@" + host, "-p", port, "+retry=2", "+time=5"}, args...)
	out, err := exec.CommandContext(ctx, KdigBinary, full...).CombinedOutput()
	r := kdigResult{out: string(out)}
	if err != nil {
		t.Fatalf("kdig %s: %v\n%s", strings.Join(full, " "), err, out)
	}
	if m := kdigStatus.FindStringSubmatch(r.out); m != nil {
		r.status = m[1]
	}
	if m := kdigFlags.FindStringSubmatch(r.out); m != nil {
		r.flags = strings.Fields(m[1])
	}
	// A transfer is printed as records alone (and the TSIG record).
	inAnswer := slices.Contains(args, "AXFR")
	for _, l := range strings.Split(r.out, "\n") {
		switch {
		case strings.HasPrefix(l, ";; ANSWER SECTION:"):
			inAnswer = true
		case strings.HasPrefix(l, ";;") || strings.TrimSpace(l) == "":
			inAnswer = inAnswer && slices.Contains(args, "AXFR")
		case inAnswer:
			if f := strings.Fields(l); len(f) > 3 && f[3] != "TSIG" {
				r.answer = append(r.answer, strings.Join(f, " "))
			}
		}
	}
	return r
}

// joinTXT turns kdig's presentation of a TXT record's strings ("a" "b")
// into the value.
func joinTXT(rr string) string {
	var b strings.Builder
	for _, m := range regexp.MustCompile(`"((?:[^"\\]|\\.)*)"`).FindAllStringSubmatch(rr, -1) {
		b.WriteString(m[1])
	}
	return b.String()
}

func TestKdig(t *testing.T) {
	tb := newTable(t)
	s := tb.serve(t, "127.0.0.1:0", nil)
	addr := s.Addrs()[0]
	z := s.Zones()
	ed, _ := z.TXT("s1.myesp._domainkey.customer.example")
	rsa, _ := z.TXT("s2.myesp._domainkey.customer.example")
	big := "big.myesp._domainkey." + longDomain
	cases := []struct {
		name   string
		args   []string
		status string
		flags  []string // flags that must be set
		noFlag string   // a flag that must not be set
		answer []string // TXT values, or record types when not TXT
	}{
		{"TXT over UDP", []string{"+notcp", "TXT", "s1.myesp._domainkey.customer.example"}, "NOERROR", []string{"aa"}, "", []string{ed}},
		{"TXT over TCP", []string{"+tcp", "TXT", "S2.MYESP._domainkey.Customer.Example"}, "NOERROR", []string{"aa"}, "", []string{rsa}},
		{"TC without EDNS, then TCP", []string{"+noedns", "TXT", big}, "NOERROR", []string{"aa"}, "tc", []string{rsa}},
		{"TC kept", []string{"+noedns", "+ignore", "TXT", big}, "NOERROR", []string{"tc"}, "", nil},
		{"EDNS", []string{"+notcp", "+bufsize=1232", "TXT", big}, "NOERROR", []string{"aa"}, "tc", []string{rsa}},
		{"CNAME target", []string{"TXT", "c1.cname.example.dkim.myesp.example"}, "NOERROR", []string{"aa"}, "", []string{"v=DKIM1; k=ed25519; p="}},
		{"SOA", []string{"SOA", "myesp._domainkey.customer.example"}, "NOERROR", []string{"aa"}, "", []string{"SOA"}},
		{"NS", []string{"NS", "dkim.myesp.example"}, "NOERROR", []string{"aa"}, "", []string{"NS", "NS"}},
		{"NXDOMAIN", []string{"TXT", "s9.myesp._domainkey.customer.example"}, "NXDOMAIN", []string{"aa"}, "", nil},
		{"NODATA at an empty non-terminal", []string{"TXT", "cname.example.dkim.myesp.example"}, "NOERROR", []string{"aa"}, "", nil},
		{"REFUSED outside", []string{"TXT", "s1._domainkey.other.example"}, "REFUSED", nil, "aa", nil},
		{"ANY", []string{"ANY", "s1.myesp._domainkey.customer.example"}, "NOERROR", []string{"aa"}, "", []string{ed}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := kdig(t, addr, c.args...)
			if r.status != c.status {
				t.Fatalf("status %q, want %s:\n%s", r.status, c.status, r.out)
			}
			for _, f := range c.flags {
				if !r.hasFlag(f) {
					t.Errorf("flag %s missing:\n%s", f, r.out)
				}
			}
			if c.noFlag != "" && r.hasFlag(c.noFlag) {
				t.Errorf("flag %s set:\n%s", c.noFlag, r.out)
			}
			if len(r.answer) != len(c.answer) {
				t.Fatalf("answer %q, want %d records:\n%s", r.answer, len(c.answer), r.out)
			}
			for i, want := range c.answer {
				f := strings.Fields(r.answer[i])
				if len(f) < 4 {
					t.Fatalf("record %q", r.answer[i])
				}
				if !strings.HasPrefix(want, "v=DKIM1") {
					if f[3] != want {
						t.Errorf("record %q, want type %s", r.answer[i], want)
					}
					continue
				}
				if got := joinTXT(r.answer[i]); !strings.HasPrefix(got, want) {
					t.Errorf("TXT %q, want %q", got, want)
				}
			}
		})
	}
}

func TestKdigTransfer(t *testing.T) {
	secret := "a2V5ZG5zLXRlc3QtdHJhbnNmZXIta2V5LXNlY3JldA=="
	tb := newTable(t)
	s := tb.serve(t, "127.0.0.1:0", func(c *dnsserver.Config) {
		c.AllowTransfer = []string{"127.0.0.0/8"}
		c.TSIG = &dnsserver.TSIGKey{Name: "transfer", Secret: secret}
	})
	addr := s.Addrs()[0]
	serial, _ := s.Zones().Serial("dkim.myesp.example")

	r := kdig(t, addr, "-y", "hmac-sha256:transfer:"+secret, "AXFR", "dkim.myesp.example")
	var types []string
	for _, rr := range r.answer {
		types = append(types, strings.Fields(rr)[3])
	}
	if strings.Join(types, " ") != "SOA NS NS TXT SOA" || !strings.Contains(r.answer[0], " "+strconv.FormatUint(uint64(serial), 10)+" ") {
		t.Fatalf("AXFR with TSIG: %q, want SOA (serial %d) NS NS TXT SOA:\n%s", types, serial, r.out)
	}
	if strings.Contains(r.out, "TSIG") && strings.Contains(strings.ToLower(r.out), "bad") {
		t.Errorf("TSIG problem:\n%s", r.out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	host, port, _ := strings.Cut(addr, ":")
	out, _ := exec.CommandContext(ctx, KdigBinary, "@"+host, "-p", port, "AXFR", "dkim.myesp.example").CombinedOutput()
	if !bytes.Contains(out, []byte("REFUSED")) || bytes.Contains(out, []byte("IN\tTXT")) {
		t.Fatalf("AXFR without TSIG was not refused:\n%s", out)
	}
}

// knotSecondary starts knotd on addr ("127.0.0.1:port") as a secondary of
// zones from primary ("ip:port") with the TSIG key keyName/secret, which
// signs the transfers and the NOTIFYs it accepts from the primary's
// address. It returns when knotd serves every zone.
func knotSecondary(t *testing.T, addr, primary, keyName, secret string, zones []string) (logs func() string) {
	t.Helper()
	dnsproc.Require(t, "keydns", "apt-get install knot", dnsproc.KnotBinary, dnsproc.KnotcBinary)
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "db"), 0o700); err != nil {
		t.Fatal(err)
	}
	host, port, _ := strings.Cut(primary, ":")
	h, p, _ := strings.Cut(addr, ":")
	var conf strings.Builder
	conf.WriteString(dnsproc.KnotServerConf(dir, h+"@"+p))
	// Zones live in memory and the journal only (zonefile-load none):
	// everything the secondary serves came by transfer.
	fmt.Fprintf(&conf, `key:
  - id: %[1]s
    algorithm: hmac-sha256
    secret: %[2]s
remote:
  - id: primary
    address: %[3]s@%[4]s
    key: %[1]s
acl:
  - id: notify
    address: %[3]s
    key: %[1]s
    action: notify
template:
  - id: default
    storage: "%[5]s"
    zonefile-sync: -1
    zonefile-load: none
    journal-content: none
    master: primary
    acl: notify
zone:
`, keyName, secret, host, port, dir)
	for _, z := range zones {
		fmt.Fprintf(&conf, "  - domain: %s\n", dns.Fqdn(z))
	}
	path := filepath.Join(dir, "knot.conf")
	if err := os.WriteFile(path, []byte(conf.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if out, err := dnsproc.Run(ctx, dnsproc.KnotcBinary, "-c", path, "conf-check"); err != nil {
		t.Fatalf("knot configuration refused: %v\n%s\n%s", err, out, conf.String())
	}
	proc, err := dnsproc.Start(t, dnsproc.KnotBinary, "-c", path)
	if err != nil {
		t.Fatal(err)
	}
	err = proc.WaitReady(ctx, func(ctx context.Context) error {
		for _, z := range zones {
			if err := dnsproc.AnswersSOA(ctx, addr, z, false); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("knot secondary: %v", err)
	}
	return proc.Logs
}

// soaSerial asks addr for zone's SOA serial.
func soaSerial(addr, zone string) (uint32, error) {
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(zone), dns.TypeSOA)
	r, err := dns.Exchange(q, addr)
	if err != nil {
		return 0, err
	}
	for _, rr := range r.Answer {
		if soa, ok := rr.(*dns.SOA); ok {
			return soa.Serial, nil
		}
	}
	return 0, fmt.Errorf("SOA %s at %s: %s", zone, addr, dns.RcodeToString[r.Rcode])
}

// txtAt asks addr for the TXT value at name ("" if none).
func txtAt(addr, name string) (string, int, error) {
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(name), dns.TypeTXT)
	q.SetEdns0(4096, false)
	c := &dns.Client{Timeout: 5 * time.Second, UDPSize: 4096}
	r, _, err := c.Exchange(q, addr)
	if err != nil {
		return "", 0, err
	}
	for _, rr := range r.Answer {
		if txt, ok := rr.(*dns.TXT); ok {
			return strings.Join(txt.Txt, ""), r.Rcode, nil
		}
	}
	return "", r.Rcode, nil
}

func TestKnotSecondary(t *testing.T) {
	const keyName = "transfer."
	secret := "a25vdC1zZWNvbmRhcnktdHJhbnNmZXIta2V5LXNlY3I="
	zones := []string{"myesp._domainkey.customer.example", "dkim.myesp.example"}
	tb := newTable(t)
	secondary, err := dnsproc.FreeLoopbackAddr()
	if err != nil {
		t.Fatal(err)
	}
	// The server's first NOTIFYs find no secondary yet (they are retried
	// and given up): knotd loads the zones by itself when it starts.
	s := tb.serve(t, "127.0.0.1:0", func(c *dnsserver.Config) {
		c.AllowTransfer = []string{"127.0.0.1"}
		c.TSIG = &dnsserver.TSIGKey{Name: keyName, Secret: secret}
		c.Notify = []string{secondary}
	})
	logs := knotSecondary(t, secondary, s.Addrs()[0], keyName, secret, zones)
	z := s.Zones()
	for _, name := range []string{"s1.myesp._domainkey.customer.example", "s2.myesp._domainkey.customer.example", "c1.cname.example.dkim.myesp.example"} {
		want, _ := z.TXT(name)
		got, _, err := txtAt(secondary, name)
		if err != nil || got != want {
			t.Fatalf("secondary TXT %s = %q (%v), want %q\n%s", name, got, err, want, logs())
		}
	}

	// A new key: the zone's serial changes, the secondary hears of it by
	// NOTIFY, transfers the zone and serves the new record.
	before, _ := z.Serial("dkim.myesp.example")
	tb.generate(t, "cname.example", "c2", "ed25519")
	z2, _ := tb.zones(t)
	s.Swap(z2)
	after, _ := z2.Serial("dkim.myesp.example")
	if after == before {
		t.Fatalf("serial %d did not change with a new key", after)
	}
	want, _ := z2.TXT("c2.cname.example.dkim.myesp.example")
	deadline := time.Now().Add(60 * time.Second)
	for {
		serial, err := soaSerial(secondary, "dkim.myesp.example")
		got, _, _ := txtAt(secondary, "c2.cname.example.dkim.myesp.example")
		if err == nil && serial == after && got == want {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("secondary did not follow the NOTIFY: serial %d (want %d), TXT %q (%v); primary stats %+v\n%s",
				serial, after, got, err, s.Stats(), logs())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if st := s.Stats(); st.NotifySent == 0 || st.Transfers < 3 {
		t.Errorf("stats %+v: want NOTIFYs acknowledged and three transfers", st)
	}
	// The other zone did not change: the secondary keeps its serial.
	if serial, err := soaSerial(secondary, zones[0]); err != nil || serial != mustSerial(t, z2, zones[0]) {
		t.Errorf("unchanged zone: secondary serial %d (%v)", serial, err)
	}
}

// mustSerial returns a zone's serial.
func mustSerial(t *testing.T, z *dnsserver.Zones, zone string) uint32 {
	t.Helper()
	s, ok := z.Serial(zone)
	if !ok {
		t.Fatalf("no zone %s", zone)
	}
	return s
}

func TestUnboundDelegation(t *testing.T) {
	tb := newTable(t)
	// The customer's zone delegates the selector zone to our server; the
	// provider's zone delegates the CNAME-target zone, and holds the
	// addresses of our nameservers.
	w := dnstopo.Start(t, dnstopo.Options{
		CustomerZones: []string{"customer.example", "cname.example"},
		Records: []string{
			"ns1.keydns.myesp.example. A " + dnstopo.KeyDNSIP,
			"ns2.keydns.myesp.example. A " + dnstopo.KeyDNSIP,
			"dkim.myesp.example. NS ns1.keydns.myesp.example.",
			"dkim.myesp.example. NS ns2.keydns.myesp.example.",
			"c1._domainkey.cname.example. CNAME c1.cname.example.dkim.myesp.example.",
		},
	})
	tb.serve(t, dnstopo.KeyDNSIP+":53", nil)
	w.Add(t, "myesp._domainkey.customer.example. NS ns1.keydns.myesp.example.",
		"myesp._domainkey.customer.example. NS ns2.keydns.myesp.example.")
	_, kt := tb.zones(t)
	for _, c := range []struct{ domain, selector, name string }{
		{"customer.example", "s1.myesp", "s1.myesp._domainkey.customer.example"},
		{"customer.example", "s2.myesp", "s2.myesp._domainkey.customer.example"},
		{"cname.example", "c1", "c1._domainkey.cname.example"},
	} {
		var k *keys.Key
		for _, x := range kt.Keys(c.domain) {
			if x.Selector == c.selector {
				k = x
			}
		}
		want := keys.FormatRecord(k)
		w.WaitTXT(t, c.name, 60*time.Second, "key through unbound", func(txt []string, rcode int) bool {
			return len(txt) == 1 && txt[0] == want
		})
		msg := signMessage(t, k)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		err := w.Verify(ctx, msg)
		cancel()
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
	}
	// A name our server does not have: NXDOMAIN through the resolver.
	w.WaitTXT(t, "nope.myesp._domainkey.customer.example", 30*time.Second, "NXDOMAIN through unbound", func(txt []string, rcode int) bool {
		return rcode == dns.RcodeNameError
	})
}

// signMessage signs a small message with k, as the daemon would.
func signMessage(t *testing.T, k *keys.Key) []byte {
	t.Helper()
	signer, err := k.PrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	msg := fmt.Sprintf("From: Sender <user@%[1]s>\r\nTo: rcpt@receiver.example\r\nSubject: keydns\r\nDate: %[2]s\r\n"+
		"Message-ID: <keydns-%[3]d@%[1]s>\r\n\r\nHello.\r\n", k.Domain, time.Now().UTC().Format(time.RFC1123Z), time.Now().UnixNano())
	var out bytes.Buffer
	err = dkim.Sign(&out, strings.NewReader(msg), &dkim.SignOptions{
		Domain: k.Domain, Selector: k.Selector, Signer: signer,
		HeaderCanonicalization: dkim.CanonicalizationRelaxed, BodyCanonicalization: dkim.CanonicalizationRelaxed,
		HeaderKeys: []string{"From", "To", "Subject", "Date", "Message-ID"},
	})
	if err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}
