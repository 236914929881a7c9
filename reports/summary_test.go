package reports

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/authmilter/authmilter/internal/testdns"
	"github.com/authmilter/authmilter/policy/resolve"
)

var may1 = time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)

// corpusRows imports the good corpus into a memory store and returns its
// rows about example.com.
func corpusRows(t *testing.T) []ReceivedRow {
	t.Helper()
	s := newImportMemStore()
	if _, err := Import(context.Background(), s, receivedGood, nil, ImportLimits{}); err != nil {
		t.Fatal(err)
	}
	rows, err := s.Received(context.Background(), "example.com", may1)
	if err != nil {
		t.Fatal(err)
	}
	return rows
}

// sourceWant is a source's numbers, tallied by hand from the corpus files.
type sourceWant struct {
	ip                                 string
	messages, dmarcFail, dkim, spf     int64
	none, quarantine, reject, passDisp int64
	orgs                               int
}

// TestSummarizeCorpus checks the summary of the corpus against numbers
// tallied by hand from its XML (see the comments), not by the code under
// test.
func TestSummarizeCorpus(t *testing.T) {
	s := Summarize(context.Background(), "example.com", corpusRows(t), nil, may1, time.Time{})

	// 10 reports from 8 reporters (google.com and mx.example.net sent two).
	// 198.51.100.10: 120+98+64+31+12+17+8+6 = 356, all aligned both ways,
	// 12 with RFC 9990's disposition "pass".
	// 203.0.113.25: 40+15+9 = 64, DKIM aligned only.
	// 192.0.2.66: 7+11+21 quarantined + 4 rejected = 43, failing.
	// 2001:db8:1::25: 3 (DKIM only) + 10 + 20 (both) = 33.
	// 203.0.113.99: 2 failing (forwarded). 2001:db8:5::6: 5 failing.
	if s.Reports != 10 || len(s.Reporters) != 8 || s.Messages != 503 || s.DMARCPass != 453 {
		t.Errorf("totals: %d reports, %d reporters, %d messages, %d pass", s.Reports, len(s.Reporters), s.Messages, s.DMARCPass)
	}
	if got, want := s.DMARCPassRate, 453.0/503; got != want {
		t.Errorf("DMARC pass rate %v, want %v", got, want)
	}
	want := []sourceWant{
		{"192.0.2.66", 43, 43, 0, 0, 0, 39, 4, 0, 3},
		{"2001:db8:5::6", 5, 5, 0, 0, 0, 5, 0, 0, 1},
		{"203.0.113.99", 2, 2, 0, 0, 0, 2, 0, 0, 1},
		{"198.51.100.10", 356, 0, 356, 356, 344, 0, 0, 12, 7},
		{"203.0.113.25", 64, 0, 64, 0, 64, 0, 0, 0, 3},
		{"2001:db8:1::25", 33, 0, 33, 30, 33, 0, 0, 0, 2},
	}
	if len(s.Sources) != len(want) {
		t.Fatalf("%d sources, want %d", len(s.Sources), len(want))
	}
	for i, w := range want {
		g := s.Sources[i]
		if g.IP.String() != w.ip {
			t.Errorf("source %d is %s, want %s (failing first, then volume)", i, g.IP, w.ip)
			continue
		}
		if g.Messages != w.messages || g.DMARCFail != w.dmarcFail || g.DMARCPass != w.messages-w.dmarcFail ||
			g.DKIMAlignedPass != w.dkim || g.SPFAlignedPass != w.spf || len(g.ReportingOrgs) != w.orgs {
			t.Errorf("%s: %+v, want %+v", w.ip, g, w)
		}
		if g.Dispositions["none"] != w.none || g.Dispositions["quarantine"] != w.quarantine || g.Dispositions["reject"] != w.reject || g.Dispositions["pass"] != w.passDisp {
			t.Errorf("%s dispositions %v", w.ip, g.Dispositions)
		}
		if g.DKIMAlignedRate != rate(w.dkim, w.messages) || g.SPFAlignedRate != rate(w.spf, w.messages) {
			t.Errorf("%s rates %v %v", w.ip, g.DKIMAlignedRate, g.SPFAlignedRate)
		}
		if g.Reverse != ReverseNotLookedUp || g.Org != OrgUnknown {
			t.Errorf("%s reverse %q org %q without a resolver", w.ip, g.Reverse, g.Org)
		}
	}
	if g := s.Sources[0].HeaderFromDomains; strings.Join(g, " ") != "billing.example.com example.com" {
		t.Errorf("192.0.2.66 From domains %v", g)
	}
	if r := s.Reporters[0]; r.OrgName != "google.com" || r.Reports != 2 || r.Messages != 279 || r.DMARCPass != 261 {
		t.Errorf("first reporter %+v, want google.com: 2 reports, 120+40+7+3+98+11 messages", r)
	}

	// Only the reports that begin on May 2: google.com's second and
	// mx.example.net's second.
	may2 := Summarize(context.Background(), "example.com", corpusRows(t), nil, may1.Add(24*time.Hour), may1.Add(48*time.Hour))
	if may2.Reports != 2 || may2.Messages != 98+11+20 {
		t.Errorf("May 2: %d reports, %d messages", may2.Reports, may2.Messages)
	}
	// A subdomain alone; and another domain has nothing.
	news := Summarize(context.Background(), "News.Example.com.", corpusRows(t), nil, time.Time{}, time.Time{})
	if news.Domain != "news.example.com" || news.Messages != 3+10+20 || len(news.Sources) != 1 {
		t.Errorf("news.example.com: %+v", news)
	}
	other := Summarize(context.Background(), "example.net", corpusRows(t), nil, time.Time{}, time.Time{})
	if other.Messages != 0 || len(other.Sources) != 0 {
		t.Errorf("example.net: %+v", other)
	}
}

// TestSummarizeReverseDNS looks the sources' reverse names up in a real
// DNS server: forward-confirmed names are verified and give the org, a
// mismatching one is unverified, a missing one is none, a timeout is a
// failed lookup.
func TestSummarizeReverseDNS(t *testing.T) {
	srv := testdns.Start(t)
	srv.AddZoneText(t, ".", `
$TTL 300
10.100.51.198.in-addr.arpa.  PTR  mx1.example.com.
mx1.example.com.             A    198.51.100.10
25.113.0.203.in-addr.arpa.   PTR  o1.mail.esp.example.co.uk.
o1.mail.esp.example.co.uk.   A    203.0.113.25
66.2.0.192.in-addr.arpa.     PTR  mail-fake.bigprovider.example.
66.2.0.192.in-addr.arpa.     PTR  other-fake.example.org.
mail-fake.bigprovider.example. A  192.0.2.67
other-fake.example.org.      A    192.0.2.68
`)
	v6, err := dns.ReverseAddr("2001:db8:1::25")
	if err != nil {
		t.Fatal(err)
	}
	srv.AddRR(t, v6+" 300 IN PTR news-out.example.com.")
	srv.AddRR(t, "news-out.example.com. 300 IN AAAA 2001:db8:1::25")
	dropped, err := dns.ReverseAddr("2001:db8:5::6")
	if err != nil {
		t.Fatal(err)
	}
	srv.Drop(dropped)
	r, err := resolve.New(resolve.Config{Servers: []string{srv.Addr()}, Timeout: 2 * time.Second}) // generous: a busy machine must not turn an answer into a timeout
	if err != nil {
		t.Fatal(err)
	}
	s := summarize(context.Background(), "example.com", corpusRows(t), r, may1, time.Time{}, 10*time.Second)
	want := map[string][3]string{
		"198.51.100.10":  {"mx1.example.com", ReverseVerified, "example.com"},
		"203.0.113.25":   {"o1.mail.esp.example.co.uk", ReverseVerified, "example.co.uk"},
		"2001:db8:1::25": {"news-out.example.com", ReverseVerified, "example.com"},
		"192.0.2.66":     {"", ReverseUnverified, OrgUnknown},
		"203.0.113.99":   {"", ReverseNone, OrgUnknown},
		"2001:db8:5::6":  {"", ReverseFailed, OrgUnknown},
	}
	for _, src := range s.Sources {
		w := want[src.IP.String()]
		if src.Reverse != w[1] || src.Org != w[2] || (w[0] != "" && src.ReverseName != w[0]) {
			t.Errorf("%s: name %q %s org %q, want %q %s %q", src.IP, src.ReverseName, src.Reverse, src.Org, w[0], w[1], w[2])
		}
		if src.IP.String() == "192.0.2.66" && src.ReverseName != "mail-fake.bigprovider.example" && src.ReverseName != "other-fake.example.org" {
			t.Errorf("unverified name %q is not one of the PTR names", src.ReverseName)
		}
	}
}

// countingPTR answers every address with a name that resolves back, and
// counts the lookups and how many ran at once.
type countingPTR struct {
	mu            sync.Mutex
	lookups       map[string]bool
	running, peak int
}

func (c *countingPTR) LookupAddr(ctx context.Context, addr string) ([]string, error) {
	c.mu.Lock()
	c.lookups[addr] = true
	c.running++
	c.peak = max(c.peak, c.running)
	c.mu.Unlock()
	time.Sleep(time.Millisecond) // let lookups overlap
	c.mu.Lock()
	c.running--
	c.mu.Unlock()
	if addr == "198.51.100.1" {
		return nil, &net.DNSError{Err: "no such host", Name: addr, IsNotFound: true}
	}
	return []string{"h-" + strings.ReplaceAll(addr, ".", "-") + ".example.net."}, nil
}

func (c *countingPTR) LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error) {
	ip := strings.ReplaceAll(strings.TrimSuffix(strings.TrimPrefix(host, "h-"), ".example.net"), "-", ".")
	a := net.ParseIP(ip)
	if a == nil {
		return nil, errors.New("bad test name")
	}
	return []net.IPAddr{{IP: a}}, nil
}

// TestSummarizeBoundsLookups: 300 sources, only the first 200 of the
// order are looked up, at most 8 at a time.
func TestSummarizeBoundsLookups(t *testing.T) {
	var rows []ReceivedRow
	for i := range 300 {
		ip := netip.AddrFrom4([4]byte{198, 51, 100 + byte(i/250), byte(1 + i%250)})
		aligned := "pass"
		if i%2 == 0 {
			aligned = "fail"
		}
		rows = append(rows, ReceivedRow{
			Row:     Row{Domain: "example.com", Day: may1, SourceIP: ip, Count: int64(1 + i), DKIMAligned: aligned, SPFAligned: "fail", Disposition: "none"},
			OrgName: "r.example", ReportID: "1", Begin: may1, End: may1.Add(24*time.Hour - time.Second),
		})
	}
	ptr := &countingPTR{lookups: map[string]bool{}}
	s := Summarize(context.Background(), "example.com", rows, ptr, time.Time{}, time.Time{})
	if len(ptr.lookups) != summaryMaxPTRLookups || ptr.peak > summaryPTRParallel {
		t.Errorf("%d lookups, %d at once; want %d, at most %d", len(ptr.lookups), ptr.peak, summaryMaxPTRLookups, summaryPTRParallel)
	}
	for i, src := range s.Sources {
		looked := ptr.lookups[src.IP.String()]
		if looked != (i < summaryMaxPTRLookups) {
			t.Fatalf("source %d (%s): looked up %v", i, src.IP, looked)
		}
		switch {
		case !looked && src.Reverse != ReverseNotLookedUp:
			t.Errorf("%s: %q, want not looked up", src.IP, src.Reverse)
		case looked && src.IP.String() == "198.51.100.1" && src.Reverse != ReverseNone:
			t.Errorf("%s: %q, want none", src.IP, src.Reverse)
		case looked && src.IP.String() != "198.51.100.1" && (src.Reverse != ReverseVerified || src.Org != "example.net"):
			t.Errorf("%s: %q org %q", src.IP, src.Reverse, src.Org)
		}
		if i > 0 {
			prev := s.Sources[i-1]
			if prev.DMARCFail < src.DMARCFail || (prev.DMARCFail == src.DMARCFail && prev.Messages < src.Messages) {
				t.Fatalf("sources %d and %d out of order", i-1, i)
			}
		}
	}
	// The 150 failing sources come first, the biggest first.
	if s.Sources[0].Messages != 299 || s.Sources[0].DMARCFail != 299 || s.Sources[150].DMARCFail != 0 {
		t.Errorf("order: first %+v, 151st %+v", s.Sources[0], s.Sources[150])
	}
}

// TestSummaryWriteText compares the text rendering of the corpus summary
// with its golden file, and checks the JSON names.
func TestSummaryWriteText(t *testing.T) {
	s := Summarize(context.Background(), "example.com", corpusRows(t), nil, may1, may1.Add(7*24*time.Hour))
	s.Sources[3].ReverseName, s.Sources[3].Reverse, s.Sources[3].Org = "mx1.example.com", ReverseVerified, "example.com"
	s.Sources[0].ReverseName, s.Sources[0].Reverse = "mail-fake.bigprovider.example", ReverseUnverified
	s.Sources[1].Reverse = ReverseFailed
	// A hostile org name from a store must not reach the terminal raw.
	s.Reporters[len(s.Reporters)-1].OrgName = "evil\x1b[2J\tcorp"
	var buf bytes.Buffer
	if err := s.WriteText(&buf); err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join(receivedGolden, "summary.txt")
	if *updateReceivedGolden {
		if err := os.WriteFile(golden, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run the test with -update-received-golden to write it)", err)
	}
	if !bytes.Equal(buf.Bytes(), want) {
		t.Errorf("WriteText differs from %s:\n%s", golden, buf.String())
	}
	if strings.Contains(buf.String(), "\x1b") {
		t.Error("an escape sequence reached the text")
	}

	js, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{`"domain":"example.com"`, `"dmarc_pass_rate":`, `"reporters":[{"org_name":"google.com"`,
		`"sources":[{"ip":"192.0.2.66","reverse_name":"mail-fake.bigprovider.example","reverse":"unverified"`,
		`"dkim_aligned_pass_rate":`, `"spf_aligned_pass_rate":`, `"dispositions":{"none":0,"quarantine":39,"reject":4}`,
		`"reporting_orgs":["Outlook.com","google.com","mail.example.org"]`} {
		if !bytes.Contains(js, []byte(key)) {
			t.Errorf("JSON lacks %s:\n%s", key, js)
		}
	}

	var empty bytes.Buffer
	none := Summarize(context.Background(), "example.net", nil, nil, time.Time{}, time.Time{})
	if err := none.WriteText(&empty); err != nil || !strings.Contains(empty.String(), "No report about this domain") {
		t.Errorf("empty summary: %q, %v", empty.String(), err)
	}
	if err := s.WriteText(failingWriter{}); err == nil {
		t.Error("WriteText to a failing writer succeeded")
	}
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, fmt.Errorf("disk full") }
