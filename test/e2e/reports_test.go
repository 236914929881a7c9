package e2e

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"net"
	"net/textproto"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/authmilter/authmilter/internal/reporttest"
)

// The senders of TestPostfixDMARCReports. Their DMARC records ask for
// aggregate reports at our.example (a relay domain of the test Postfix,
// so the reports go through it to the sink); rptPass also names a
// destination elsewhere that has not authorised it.
const (
	rptPass      = "dmarc-pass.example"  // p=none; SPF allows 192.0.2.10 and .11
	rptFail      = "dmarc-fail.example"  // p=quarantine; SPF allows nobody
	rptMailbox   = "dmarc@" + rcptDomain // our.example
	rptElsewhere = "agg@reports.elsewhere.example"
)

// TestPostfixDMARCReports is a day of inbound mail through Postfix and the
// daemon, and its aggregate reports sent through the same Postfix: clients
// at several addresses (presented with XCLIENT, which a listener added for
// this test allows from 127.0.0.1) send mail that passes and fails DMARC;
// `authmilter reports send -day today` then mails one report per reporting
// domain to its rua mailbox, where the test reads it: the Subject, the
// gzip attachment, the XML valid against RFC 9990's schema, and a record
// per source IP with the counts and results sent. A destination in another
// domain without its _report._dmarc authorization is skipped and logged.
func TestPostfixDMARCReports(t *testing.T) {
	e, pf := getPostfix(t)
	xsd := reporttest.Schema(t)

	e.dns.SetTXT(rptPass, "v=spf1 ip4:192.0.2.10 ip4:192.0.2.11 -all")
	e.dns.SetTXT("_dmarc."+rptPass, "v=DMARC1; p=none; rua=mailto:"+rptMailbox+",mailto:"+rptElsewhere)
	e.dns.SetTXT(rptFail, "v=spf1 -all")
	e.dns.SetTXT("_dmarc."+rptFail, "v=DMARC1; p=quarantine; rua=mailto:"+rptMailbox)
	// our.example takes reports about both (RFC 9990's external destination
	// verification); reports.elsewhere.example authorised nobody.
	e.dns.SetTXT(rptPass+"._report._dmarc."+rcptDomain, "v=DMARC1")
	e.dns.SetTXT(rptFail+"._report._dmarc."+rcptDomain, "v=DMARC1")

	rm, listener, cfg := e.startReportsMilter(t, pf)

	// The day's mail: source, From domain, messages, and what DMARC makes
	// of it (SPF is the only aligned identifier: nothing is signed).
	type source struct {
		ip, domain string
		n          int
		spf        string // policy_evaluated/spf
	}
	sources := []source{
		{"192.0.2.10", rptPass, 3, "pass"},
		{"192.0.2.11", rptPass, 2, "pass"},
		{"203.0.113.5", rptPass, 2, "fail"},
		{"198.51.100.7", rptFail, 4, "fail"},
	}
	total := 0
	for _, s := range sources {
		for i := range s.n {
			tok := token(fmt.Sprintf("report-%s-%d", strings.ReplaceAll(s.ip, ".", "-"), i))
			from := "news@" + s.domain
			rcpt := "reader@" + rcptDomain
			qid, err := sendXCLIENT(pf.addr(listener), s.ip, "mail."+s.domain, from, rcpt, message(tok, from, rcpt))
			if err != nil {
				t.Fatalf("submit from %s (XCLIENT): %v\nmaillog:\n%s", s.ip, err, tailFile(filepath.Join(pf.dir, "maillog"), 20))
			}
			m := waitDelivered(t, e, pf, tok, qid)
			if ours, _ := ourAR(headerFields(m.Data)); len(ours) != 1 {
				t.Fatalf("message from %s: %d Authentication-Results of ours, want 1", s.ip, len(ours))
			}
			// The milter saw the XCLIENT address; SPF is the only
			// identifier, so DMARC's result is SPF's.
			checkLog(t, rm, qid, "dir=in", "client="+s.ip+" ", "dmarc.result="+s.spf)
			total++
		}
	}
	waitRecorded(t, e.bin, cfg, total)

	day := time.Now().UTC().Format("2006-01-02")
	cmd := exec.Command(e.bin, "reports", "send", "-config", cfg, "-day", "today")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("authmilter reports send -day today (%s): %v\nstdout:\n%s\nstderr:\n%s", day, err, stdout.String(), stderr.String())
	}
	for _, d := range []string{rptPass, rptFail} {
		if !hasLine(stdout.String(), d, "sent") {
			t.Errorf("reports send: no line %q ... sent:\n%s", d, stdout.String())
		}
	}
	if !strings.Contains(stderr.String(), "reports.elsewhere.example") {
		t.Errorf("the unauthorised destination %s was not logged as skipped:\n%s", rptElsewhere, stderr.String())
	}

	want := map[string]map[string]source{}
	for _, s := range sources {
		if want[s.domain] == nil {
			want[s.domain] = map[string]source{}
		}
		want[s.domain][s.ip] = s
	}
	for _, domain := range []string{rptPass, rptFail} {
		m, err := e.sink.Wait("Report Domain: "+domain, deliveryTimeout)
		if err != nil {
			t.Errorf("%s: %v\nmaillog:\n%s", domain, err, tailFile(filepath.Join(pf.dir, "maillog"), 30))
			continue
		}
		if strings.Join(m.Rcpts, ",") != rptMailbox {
			t.Errorf("%s: report delivered to %v, want only %s", domain, m.Rcpts, rptMailbox)
		}
		x := reporttest.AttachedXML(t, m.Data, domain)
		reporttest.Validate(t, xsd, domain, x)
		var f struct {
			Domain  string `xml:"policy_published>domain"`
			Begin   int64  `xml:"report_metadata>date_range>begin"`
			Records []struct {
				IP          string   `xml:"row>source_ip"`
				Count       int      `xml:"row>count"`
				Disposition string   `xml:"row>policy_evaluated>disposition"`
				DKIM        string   `xml:"row>policy_evaluated>dkim"`
				SPF         string   `xml:"row>policy_evaluated>spf"`
				Reasons     []string `xml:"row>policy_evaluated>reason>type"`
				HeaderFrom  string   `xml:"identifiers>header_from"`
				SPFResult   string   `xml:"auth_results>spf>result"`
			} `xml:"record"`
		}
		if err := xml.Unmarshal(x, &f); err != nil {
			t.Fatalf("%s: report XML: %v", domain, err)
		}
		if f.Domain != domain || time.Unix(f.Begin, 0).UTC().Format("2006-01-02") != day {
			t.Errorf("report policy domain %q, begin %d; want %s on %s", f.Domain, f.Begin, domain, day)
		}
		got := map[string]int{}
		for _, r := range f.Records {
			got[r.IP] += r.Count
			w, ok := want[domain][r.IP]
			if !ok {
				t.Errorf("%s: a record for %s, which sent no mail as %s", domain, r.IP, domain)
				continue
			}
			if r.SPF != w.spf || r.DKIM != "fail" || r.Disposition != "none" || r.HeaderFrom != domain {
				t.Errorf("%s: record %+v, want spf %s, dkim fail, disposition none", domain, r, w.spf)
			}
			// p=quarantine not applied (enforcement is off): said why.
			if domain == rptFail && !slices.Contains(r.Reasons, "local_policy") {
				t.Errorf("%s: record %+v lacks the local_policy reason", domain, r)
			}
		}
		for ip, s := range want[domain] {
			if got[ip] != s.n {
				t.Errorf("%s: %d messages from %s in the report, want %d", domain, got[ip], ip, s.n)
			}
		}
	}
	for _, m := range e.sink.Find("Report Domain: ") {
		for _, r := range m.Rcpts {
			if r == rptElsewhere {
				t.Errorf("a report went to %s, which did not authorise it", rptElsewhere)
			}
		}
	}
}

// startReportsMilter starts an authmilter daemon that records into a store
// of its own and hands report mail to Postfix, and adds a Postfix listener
// that uses it as its milter and accepts XCLIENT from 127.0.0.1. It
// returns the daemon, the listener's port and the daemon's config.
func (e *env) startReportsMilter(t *testing.T, pf *postfix) (*milterProc, int, string) {
	t.Helper()
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	listener, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := e.writeMilterConfig("reports", port, false, canonRelaxed)
	if err != nil {
		t.Fatal(err)
	}
	// The template ends with [reports] and its own database: more of it.
	extra := fmt.Sprintf(`smtp = "127.0.0.1:%d"
org_name = "authmilter e2e"
email = "dmarc-reports@%s"
`, listener, authservID)
	f, err := os.OpenFile(cfg, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.WriteString(extra)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	m := &milterProc{name: "reports", port: port, canon: canonRelaxed, cfg: cfg, log: filepath.Join(e.root, "authmilter", "reports.log")}
	if err := e.runMilter(m); err != nil {
		t.Fatal(err)
	}
	e.onClose(m.stop)

	svc := fmt.Sprintf("127.0.0.1:%d/inet", listener)
	if out, err := exec.Command("postconf", "-c", pf.etc, "-M", fmt.Sprintf("127.0.0.1:%d/inet=127.0.0.1:%d inet n - n - - smtpd", listener, listener)).CombinedOutput(); err != nil {
		t.Fatalf("postconf -M: %v\n%s", err, out)
	}
	if out, err := exec.Command("postconf", "-c", pf.etc, "-P",
		svc+"/syslog_name=postfix/reports",
		svc+fmt.Sprintf("/smtpd_milters=inet:127.0.0.1:%d", port),
		svc+"/smtpd_authorized_xclient_hosts=127.0.0.1",
	).CombinedOutput(); err != nil {
		t.Fatalf("postconf -P: %v\n%s", err, out)
	}
	if out, err := exec.Command("postfix", "-c", pf.etc, "reload").CombinedOutput(); err != nil {
		t.Fatalf("postfix reload: %v\n%s", err, out)
	}
	if err := waitPort(pf.addr(listener), 30*time.Second, pf.p); err != nil {
		t.Fatalf("the reports listener: %v\n%s", err, pf.diagnose())
	}
	return m, listener, cfg
}

// sendXCLIENT submits one message from 127.0.0.1 presenting the client as
// addr (Postfix's XCLIENT, then EHLO again), and returns the queue ID.
func sendXCLIENT(server, addr, helo, from, to string, data []byte) (string, error) {
	nc, err := net.DialTimeout("tcp", server, 10*time.Second)
	if err != nil {
		return "", err
	}
	nc.SetDeadline(time.Now().Add(60 * time.Second))
	c := textproto.NewConn(nc)
	defer c.Close()
	// step sends line (none when empty) and reads the reply, which must
	// have the code want.
	step := func(want int, line string) (string, error) {
		if line != "" {
			if err := c.PrintfLine("%s", line); err != nil {
				return "", err
			}
		}
		_, msg, err := c.ReadResponse(want)
		var te *textproto.Error
		if errors.As(err, &te) {
			return "", fmt.Errorf("%q: %d %s", line, te.Code, te.Msg)
		}
		return msg, err
	}
	for _, s := range []struct {
		want int
		line string
	}{
		{220, ""},
		{250, "EHLO xclient.test"},
		// Postfix answers XCLIENT with a new greeting; the client's
		// address is then addr for everything, the milter included.
		{220, "XCLIENT ADDR=" + addr + " NAME=[UNAVAILABLE]"},
		{250, "EHLO " + helo},
		{250, "MAIL FROM:<" + from + ">"},
		{250, "RCPT TO:<" + to + ">"},
		{354, "DATA"},
	} {
		if _, err := step(s.want, s.line); err != nil {
			return "", err
		}
	}
	var b bytes.Buffer
	for _, l := range strings.SplitAfter(string(data), "\n") {
		if strings.HasPrefix(l, ".") {
			b.WriteByte('.')
		}
		b.WriteString(l)
	}
	b.WriteString(".\r\n")
	if _, err := c.W.Write(b.Bytes()); err != nil {
		return "", err
	}
	if err := c.W.Flush(); err != nil {
		return "", err
	}
	msg, err := step(250, "")
	if err != nil {
		return "", err
	}
	step(221, "QUIT")
	if m := queuedRe.FindStringSubmatch(msg); m != nil {
		return m[1] + m[2], nil
	}
	return "", fmt.Errorf("no queue ID in the final reply %q", msg)
}

// waitRecorded waits until `reports list` counts n messages today: the
// daemon writes its queue about once a second.
func waitRecorded(t *testing.T, bin, cfg string, n int) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		out, err := exec.Command(bin, "reports", "list", "-config", cfg, "-days", "1", "-json").Output()
		var days []struct {
			Messages int `json:"messages"`
		}
		got := 0
		if err == nil && json.Unmarshal(out, &days) == nil {
			for _, d := range days {
				got += d.Messages
			}
		}
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d messages recorded after a minute (err %v):\n%s", got, n, err, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// hasLine tells whether a line of out starts with the fields given.
func hasLine(out string, fields ...string) bool {
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) >= len(fields) && strings.Join(f[:len(fields)], " ") == strings.Join(fields, " ") {
			return true
		}
	}
	return false
}
