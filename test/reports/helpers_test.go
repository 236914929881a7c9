package reports

import (
	"bytes"
	"context"
	"encoding/xml"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/authmilter/authmilter/internal/daemontest"
	"github.com/authmilter/authmilter/internal/miltertest"
	"github.com/authmilter/authmilter/internal/reporttest"
	"github.com/authmilter/authmilter/internal/syncbuf"
	"github.com/authmilter/authmilter/internal/testbin"
	"github.com/authmilter/authmilter/internal/testdns"
)

// The test's world: our MX is mx.receiver.test; mail comes in from
// senders whose DMARC records ask for aggregate reports.
const (
	authservID = "mx.receiver.test"
	// passDomain's SPF allows passIP: its mail passes DMARC (SPF aligned).
	passDomain = "pass.test"
	passIP     = "192.0.2.10"
	// failDomain (p=reject) authorises nobody: its mail from failIP fails
	// DMARC; enforcement is off, so it is delivered (local_policy).
	failDomain = "fail.test"
	failIP     = "198.51.100.20"
)

// startDNS serves the senders' SPF and DMARC records; each rua is in the
// domain itself, so no _report._dmarc authorization is needed.
func startDNS(t *testing.T) *testdns.Server {
	t.Helper()
	d := testdns.Start(t)
	d.AddZoneText(t, "", fmt.Sprintf(`
%[1]s.        60 IN TXT "v=spf1 ip4:%[2]s -all"
_dmarc.%[1]s. 60 IN TXT "v=DMARC1; p=none; rua=mailto:dmarc@%[1]s"
%[3]s.        60 IN TXT "v=spf1 -all"
_dmarc.%[3]s. 60 IN TXT "v=DMARC1; p=reject; rua=mailto:dmarc@%[3]s"
`, passDomain, passIP, failDomain))
	return d
}

// daemon is a running `authmilter run`.
type daemon struct {
	name    string
	cmd     *exec.Cmd
	logs    *syncbuf.Buffer
	cfgPath string
	sock    string
	metrics string // host:port of /metrics
	done    <-chan struct{}
}

// writeConfig writes a daemon's config into dir: a unix socket, metrics on
// a free port, DNS from dnsAddr, no keys (it only verifies), and [reports]
// with database, the SMTP sink smtp and the extra lines given.
func writeConfig(t *testing.T, dir, dnsAddr, database, smtp string, reportsExtra ...string) (cfgPath, sock, metrics string) {
	t.Helper()
	keys := filepath.Join(dir, "keys")
	if err := os.MkdirAll(keys, 0o700); err != nil {
		t.Fatal(err)
	}
	sock = filepath.Join(dir, "authmilter.sock")
	metrics = daemontest.FreePort(t)
	cfgPath = filepath.Join(dir, "authmilter.toml")
	conf := fmt.Sprintf(`listen = ["unix:%s"]
authserv_id = %q
shutdown_timeout = "10s"
[dns]
servers = [%q]
timeout = "2s"
[outbound]
networks = ["127.0.0.1/32"]
[keys]
dir = %q
check = "resolver"
[metrics]
listen = %q
[log]
level = "info"
[reports]
database = %q
smtp = %q
org_name = "Receiver Test"
email = "dmarc-reports@receiver.test"
%s
`, sock, authservID, dnsAddr, keys, metrics, database, smtp, strings.Join(reportsExtra, "\n"))
	if err := os.WriteFile(cfgPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfgPath, sock, metrics
}

// startDaemon starts `authmilter run -config cfgPath` and waits until it
// listens. It is stopped with SIGTERM (by PID) when the test ends.
func startDaemon(t *testing.T, name, cfgPath, sock, metrics string) *daemon {
	t.Helper()
	p := daemontest.StartRun(t, name, binary, cfgPath)
	d := &daemon{name: name, cmd: p.Cmd, logs: p.Logs, cfgPath: cfgPath, sock: sock, metrics: metrics, done: p.Done}
	d.waitLog(t, "listening", 0, 30*time.Second)
	return d
}

// waitLog waits for a log line containing substr after offset from.
func (d *daemon) waitLog(t *testing.T, substr string, from int, timeout time.Duration) string {
	t.Helper()
	line, _ := daemontest.WaitLog(t, d.logs.String, d.done, substr, from, timeout, 20*time.Millisecond)
	return line
}

// metric reads one series of the daemon's /metrics.
func (d *daemon) metric(t *testing.T, series string) float64 {
	t.Helper()
	v, err := daemontest.Metric(d.metrics, series)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// waitMetric waits until series reaches at least want.
func (d *daemon) waitMetric(t *testing.T, series string, want float64, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		v := d.metric(t, series)
		if v >= want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s = %v after %s, want %v\n%s", d.name, series, v, timeout, want, daemontest.Tail(d.logs.String(), 30))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// inbound is one message from an outside client.
type inbound struct {
	from, ip string
}

// sendInbound drives msgs through the daemon, each over its own milter
// connection (the client address is the connection's), and checks each
// is accepted with our Authentication-Results.
func (d *daemon) sendInbound(t *testing.T, msgs ...inbound) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for i, m := range msgs {
		id := fmt.Sprintf("%s%d%d", strings.ToUpper(d.name), time.Now().UnixNano()%1e9, i)
		raw := fmt.Sprintf("From: Sender <news@%s>\r\nTo: rcpt@receiver.test\r\nSubject: inbound %s\r\n"+
			"Date: Tue, 24 Nov 2026 12:00:00 +0000\r\nMessage-ID: <%s@%s>\r\n\r\nHello.\r\n", m.from, id, id, m.from)
		tx := miltertest.Transaction{ClientIP: m.ip, Helo: "mail." + m.from, MailFrom: "bounce@" + m.from,
			RcptTo: []string{"rcpt@receiver.test"}, QueueID: id, Hostname: authservID, LeadingSpace: true}
		res, err := miltertest.Run(ctx, "unix", d.sock, tx, []byte(raw))
		if err != nil {
			t.Fatalf("%s: message %s: %v", d.name, id, err)
		}
		if !res.Accepted() {
			t.Fatalf("%s: message %s from %s not accepted: stage %s, action %v", d.name, id, m.ip, res.Stage, res.Action)
		}
		if !bytes.Contains(res.Message, []byte("Authentication-Results: "+authservID)) {
			t.Fatalf("%s: message %s has no Authentication-Results of ours:\n%s", d.name, id, res.Message)
		}
	}
}

// repeat is n copies of m.
func repeat(m inbound, n int) []inbound {
	out := make([]inbound, n)
	for i := range out {
		out[i] = m
	}
	return out
}

// runCLI runs the binary and returns stdout; it fails the test on a
// non-zero exit.
func runCLI(t *testing.T, args ...string) string { return testbin.MustRun(t, binary, args...) }

// reportFeedback is what the tests read from a report's XML.
type reportFeedback struct {
	ReportID string `xml:"report_metadata>report_id"`
	OrgName  string `xml:"report_metadata>org_name"`
	Domain   string `xml:"policy_published>domain"`
	Records  []struct {
		SourceIP    string `xml:"row>source_ip"`
		Count       int64  `xml:"row>count"`
		Disposition string `xml:"row>policy_evaluated>disposition"`
		DKIM        string `xml:"row>policy_evaluated>dkim"`
		SPF         string `xml:"row>policy_evaluated>spf"`
		HeaderFrom  string `xml:"identifiers>header_from"`
	} `xml:"record"`
}

// readReportMail checks a report message (reporttest.AttachedXML) and
// returns its XML, validated with xmllint against the schema, and what it
// says.
func readReportMail(t *testing.T, raw []byte) ([]byte, reportFeedback) {
	t.Helper()
	x := reporttest.AttachedXML(t, raw, "")
	reporttest.Validate(t, reporttest.Schema(t), "report mail", x)
	var f reportFeedback
	if err := xml.Unmarshal(x, &f); err != nil {
		t.Fatalf("report XML: %v", err)
	}
	return x, f
}
