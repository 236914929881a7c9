package policy

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/emersion/go-msgauth/authres"
	"github.com/miekg/dns"
	"gopkg.in/yaml.v3"

	"github.com/authmilter/authmilter/internal/testdns"
)

var spfCase = flag.String("test.spf-case", "", "run only the OpenSPF suite case with this name")

const spfDir = "../testdata/spf"

// TestSPFSuite runs the OpenSPF RFC 7208 test suite (testdata/spf, the copy
// shipped by blitiri.com.ar/go/spf) through the whole inbound path: each
// scenario's zone data is served by a real DNS server, lookups go through
// our resolver, and each case's result is read back from our
// Authentication-Results field. Every case runs, including those the
// suite's copy marks "skip" for blitiri's own tests, and every case must
// give one of the results the suite accepts: there are no exceptions.
func TestSPFSuite(t *testing.T) {
	suites := readSPFSuites(t, filepath.Join(spfDir, "rfc7208-tests.yml"))

	total, passed := 0, 0
	for _, suite := range suites {
		names := make([]string, 0, len(suite.Tests))
		for name := range suite.Tests {
			if *spfCase == "" || *spfCase == name {
				names = append(names, name)
			}
		}
		if len(names) == 0 {
			continue
		}
		sort.Strings(names)
		srv := testdns.Start(t)
		front := startTimeoutFront(t, srv)
		loadSPFZone(t, srv, front, suite.ZoneData)
		pol := testPolicyWithDNS(t, front.addr, "[outbound]\nnetworks = []\n")

		for _, name := range names {
			tc := suite.Tests[name]
			total++
			got, ar, err := spfThroughAR(pol, tc)
			switch {
			case err != nil:
				t.Errorf("%s: %v", name, err)
			case slices.Contains(tc.Result, got):
				passed++
			default:
				t.Errorf("%s: got spf=%s, want one of %v (RFC 7208 %s: %s)\n\tour A-R: %q", name, got, tc.Result,
					strings.Join(tc.Spec, ", "), strings.TrimSpace(tc.Description), ar)
			}
		}
	}
	// The suite of release 2014.04 has 203 cases: a YAML reading that
	// loses some must not pass unnoticed.
	if *spfCase == "" && total != spfSuiteCases {
		t.Errorf("ran %d cases, the suite has %d", total, spfSuiteCases)
	}
	summary := fmt.Sprintf("OpenSPF RFC 7208 suite: %d/%d passed, %d failed, 0 exceptions", passed, total, total-passed)
	t.Log(summary)
	fmt.Println(summary)
}

// spfSuiteCases is the number of cases in testdata/spf/rfc7208-tests.yml.
const spfSuiteCases = 203

// spfThroughAR runs one case through the policy as an inbound message and
// returns the spf= result of our Authentication-Results field, after
// checking that it names the identity that was checked, and the field.
func spfThroughAR(pol *Policy, tc spfTest) (result, ar string, err error) {
	ip, err := netip.ParseAddr(tc.Host)
	if err != nil {
		return "", "", fmt.Errorf("host %q: %v", tc.Host, err)
	}
	env := &Envelope{ClientIP: ip, Helo: tc.Helo, MailFrom: tc.MailFrom}
	header, body, err := SplitMessage([]byte("From: <suite@spf-suite.test>\r\nSubject: SPF\r\n\r\nbody\r\n"))
	if err != nil {
		return "", "", err
	}
	m := pol.Begin(env, header)
	m.Write(body)
	d := m.Finish()
	if len(d.Prepend) == 0 || d.Prepend[0].Name != "Authentication-Results" {
		return "", "", errors.New("no Authentication-Results field")
	}
	ar = d.Prepend[0].Value
	_, results, err := authres.Parse(ar)
	if err != nil {
		return "", ar, fmt.Errorf("our Authentication-Results does not parse: %v: %q", err, d.Prepend[0].Value)
	}
	var spf []*authres.SPFResult
	for _, r := range results {
		if s, ok := r.(*authres.SPFResult); ok {
			spf = append(spf, s)
		}
	}
	if len(spf) != 1 {
		return "", ar, fmt.Errorf("%d spf results in %q", len(spf), d.Prepend[0].Value)
	}
	// RFC 7208 §2.4: with a null reverse-path, the HELO identity.
	if tc.MailFrom == "" {
		if spf[0].Helo == "" || spf[0].From != "" {
			return "", ar, fmt.Errorf("null MAIL FROM: want smtp.helo only, got %q", d.Prepend[0].Value)
		}
	} else if spf[0].From == "" || spf[0].Helo != "" {
		return "", ar, fmt.Errorf("want smtp.mailfrom only, got %q", d.Prepend[0].Value)
	}
	return string(spf[0].Value), ar, nil
}

// The suite's YAML, as documented at http://www.open-spf.org/Test_Suite/.

type spfSuite struct {
	Description string
	Tests       map[string]spfTest
	ZoneData    map[string][]spfRecord `yaml:"zonedata"`
}

type spfTest struct {
	Description string
	Spec        oneOrMore
	Helo        string
	Host        string
	MailFrom    string `yaml:"mailfrom"`
	// Result lists the acceptable results.
	Result      oneOrMore
	Explanation string
}

// spfRecord is one zonedata entry: one key of A, AAAA, MX, PTR, TXT, SPF,
// CNAME, or TIMEOUT.
type spfRecord struct {
	A     oneOrMore  `yaml:"A"`
	AAAA  oneOrMore  `yaml:"AAAA"`
	MX    []any      `yaml:"MX"`
	PTR   oneOrMore  `yaml:"PTR"`
	TXT   *oneOrMore `yaml:"TXT"`
	SPF   *oneOrMore `yaml:"SPF"`
	CNAME string     `yaml:"CNAME"`
	// TIMEOUT makes every query for the name time out.
	TIMEOUT bool `yaml:"TIMEOUT"`
}

// oneOrMore is a YAML scalar or sequence of strings.
type oneOrMore []string

func (o *oneOrMore) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.SequenceNode {
		var s []string
		if err := n.Decode(&s); err != nil {
			return err
		}
		*o = s
		return nil
	}
	var s string
	if err := n.Decode(&s); err != nil {
		return err
	}
	*o = oneOrMore{s}
	return nil
}

func readSPFSuites(t *testing.T, path string) []spfSuite {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var suites []spfSuite
	dec := yaml.NewDecoder(f)
	for {
		var s spfSuite
		err := dec.Decode(&s)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		suites = append(suites, s)
	}
	return suites
}

// timeoutFront is a DNS server in front of a testdns.Server: it passes
// queries on, except those that a TIMEOUT entry of the suite makes time
// out. In the suite, TIMEOUT applies to the types a name has no records of
// (spftimeout.example.net has a TXT record, and only its SPF-type lookups
// time out), which testdns's Drop, for every type, cannot express.
type timeoutFront struct {
	srv  *testdns.Server
	addr string

	mu sync.Mutex
	// timeouts maps a lowercase FQDN to the types it answers.
	timeouts map[string]map[uint16]bool
}

// setTimeout makes the name time out for the types it has no records of.
func (f *timeoutFront) setTimeout(fqdn string, answered map[uint16]bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.timeouts[strings.ToLower(fqdn)] = answered
}

func (f *timeoutFront) drop(q dns.Question) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	answered, ok := f.timeouts[strings.ToLower(q.Name)]
	return ok && !answered[q.Qtype]
}

func startTimeoutFront(t *testing.T, srv *testdns.Server) *timeoutFront {
	t.Helper()
	f := &timeoutFront{srv: srv, timeouts: map[string]map[uint16]bool{}}
	var pc net.PacketConn
	var l net.Listener
	var err error
	for range 20 { // the UDP port may be taken for TCP: try another
		if pc, err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		if l, err = net.Listen("tcp", pc.LocalAddr().String()); err == nil {
			break
		}
		pc.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	f.addr = pc.LocalAddr().String()
	for _, s := range []*dns.Server{{PacketConn: pc, Handler: f}, {Listener: l, Handler: f}} {
		started := make(chan struct{})
		s.NotifyStartedFunc = func() { close(started) }
		go s.ActivateAndServe()
		<-started
		t.Cleanup(func() { s.Shutdown() })
	}
	return f
}

// ServeDNS implements dns.Handler.
func (f *timeoutFront) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	if len(req.Question) == 1 && f.drop(req.Question[0]) {
		return // no answer: the client times out
	}
	f.srv.ServeDNS(w, req)
}

// loadSPFZone serves a scenario's zone data. As the suite asks of its
// drivers, SPF-type entries are also served as TXT unless the name has TXT
// entries; "NONE" stands for no record. A TXT or SPF entry that is a list
// is one record of several strings, joined by the resolver.
func loadSPFZone(t *testing.T, srv *testdns.Server, front *timeoutFront, zone map[string][]spfRecord) {
	t.Helper()
	for name, records := range zone {
		if _, ok := dns.IsDomainName(name); !ok {
			t.Logf("zone: %q is not a domain name, not served", name)
			continue
		}
		fqdn := dns.Fqdn(name)
		hdr := func(rrtype uint16) dns.RR_Header {
			return dns.RR_Header{Name: fqdn, Rrtype: rrtype, Class: dns.ClassINET, Ttl: 300}
		}
		hasTXT, timeout := false, false
		for _, r := range records {
			hasTXT = hasTXT || r.TXT != nil
			timeout = timeout || r.TIMEOUT
		}
		for _, r := range records {
			for _, a := range r.A {
				ip, err := netip.ParseAddr(a)
				if err != nil || !ip.Is4() {
					t.Fatalf("zone %s: bad A %q", name, a)
				}
				srv.Add(&dns.A{Hdr: hdr(dns.TypeA), A: ip.AsSlice()})
			}
			for _, a := range r.AAAA {
				ip, err := netip.ParseAddr(a)
				if err != nil {
					t.Fatalf("zone %s: bad AAAA %q", name, a)
				}
				srv.Add(&dns.AAAA{Hdr: hdr(dns.TypeAAAA), AAAA: ip.AsSlice()})
			}
			if len(r.MX) == 2 {
				prio, _ := r.MX[0].(int)
				host, _ := r.MX[1].(string)
				srv.Add(&dns.MX{Hdr: hdr(dns.TypeMX), Preference: uint16(prio), Mx: dns.Fqdn(host)})
			}
			for _, p := range r.PTR {
				srv.Add(&dns.PTR{Hdr: hdr(dns.TypePTR), Ptr: dns.Fqdn(p)})
			}
			if r.CNAME != "" {
				srv.Add(&dns.CNAME{Hdr: hdr(dns.TypeCNAME), Target: dns.Fqdn(r.CNAME)})
			}
			if txt := txtStrings(r.TXT); txt != nil {
				srv.Add(&dns.TXT{Hdr: hdr(dns.TypeTXT), Txt: txt})
			}
			if spf := txtStrings(r.SPF); spf != nil {
				srv.Add(&dns.SPF{Hdr: hdr(dns.TypeSPF), Txt: spf})
				if !hasTXT {
					srv.Add(&dns.TXT{Hdr: hdr(dns.TypeTXT), Txt: spf})
				}
			}
		}
		if timeout {
			types := map[uint16]bool{}
			for _, r := range records {
				for rrtype, has := range map[uint16]bool{dns.TypeA: len(r.A) > 0, dns.TypeAAAA: len(r.AAAA) > 0,
					dns.TypeMX: len(r.MX) > 0, dns.TypePTR: len(r.PTR) > 0, dns.TypeCNAME: r.CNAME != "",
					dns.TypeTXT: txtStrings(r.TXT) != nil || (!hasTXT && txtStrings(r.SPF) != nil),
					dns.TypeSPF: txtStrings(r.SPF) != nil} {
					types[rrtype] = types[rrtype] || has
				}
			}
			front.setTimeout(fqdn, types)
		}
	}
}

// txtStrings returns the character-strings of a TXT or SPF entry, nil for
// none.
func txtStrings(v *oneOrMore) []string {
	if v == nil || (len(*v) == 1 && (*v)[0] == "NONE") {
		return nil
	}
	out := []string{}
	for _, s := range *v {
		out = append(out, testdns.SplitTXT(s)...)
	}
	if len(out) == 0 {
		out = []string{""}
	}
	return out
}
