package doctor_test

import (
	"bytes"
	"context"
	"fmt"
	"net/mail"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/authmilter/authmilter/internal/daemontest"
	"github.com/authmilter/authmilter/internal/miltertest"
	"github.com/authmilter/authmilter/policy/doctor"
)

// TestAgreesWithInboundVerification is the done-when: for each
// sending host of acme.example, doctor's SPF and DMARC verdicts are what
// the daemon's inbound verification writes in Authentication-Results for
// a message From acme.example with MAIL FROM postmaster@acme.example from
// that host (unsigned: DMARC rests on SPF alone, as doctor assumes).
func TestAgreesWithInboundVerification(t *testing.T) {
	w := newWorld(t)
	js := w.run(t, "-config", w.acmeCfg, "-json", "acme.example", "-ip", strayHost, "-ip", websiteHost)
	if js.Code != 2 {
		t.Fatalf("doctor: exit %d\n%s", js.Code, js.Stderr)
	}
	rep := one(t, jsonReports(t, js.Stdout), "acme.example")

	p := daemontest.StartRun(t, "acme", binary, w.acmeCfg)
	daemontest.WaitLog(t, p.Logs.String, p.Done, "listening", 0, 30*time.Second, 20*time.Millisecond)

	// What each host must get, so that agreeing on something else (both
	// wrong the same way, or nothing checked) fails too.
	want := map[string][2]string{
		ownMTA:      {"pass", "pass"},      // ip4:, before the lookups
		strayHost:   {"permerror", "fail"}, // the 11th lookup
		websiteHost: {"permerror", "fail"}, // a:www is the 12th
	}
	for _, ip := range []string{ownMTA, strayHost, websiteHost} {
		t.Run(ip, func(t *testing.T) {
			host := hostReport(rep, ip)
			spfHost := rep.SPF.HostResult(netip.MustParseAddr(ip))
			if host == nil || spfHost == nil {
				t.Fatalf("doctor did not check %s: hosts %+v", ip, rep.Hosts)
			}
			spf, dmarc, dis := inboundVerdict(t, p, w.sock, ip)
			if spf != host.SPFResult || spf != spfHost.Result {
				t.Errorf("spf: the daemon says %s, doctor %s (hosts) and %s (spf)", spf, host.SPFResult, spfHost.Result)
			}
			if dmarc != host.DMARCResult || dis != host.DMARCDisposition {
				t.Errorf("dmarc: the daemon says %s (dis=%s), doctor %s (%s)", dmarc, dis, host.DMARCResult, host.DMARCDisposition)
			}
			if w := want[ip]; spf != w[0] || dmarc != w[1] {
				t.Errorf("spf=%s dmarc=%s, want spf=%s dmarc=%s", spf, dmarc, w[0], w[1])
			}
		})
	}
}

// hostReport returns doctor's report of ip.
func hostReport(rep *doctor.Report, ip string) *doctor.HostReport {
	for i := range rep.Hosts {
		if rep.Hosts[i].IP == ip {
			return &rep.Hosts[i]
		}
	}
	return nil
}

// resultRE finds a method's result in one resinfo of
// Authentication-Results (RFC 8601 §2.2).
var resultRE = regexp.MustCompile(`^\s*(spf|dmarc)\s*=\s*([a-z]+)`)

// disRE finds the disposition in our dmarc= comment ("(p=quarantine dis=none)").
var disRE = regexp.MustCompile(`\bdis=([a-z]+)`)

// inboundVerdict sends a message from ip through the daemon as inbound
// mail and returns the spf= (for MAIL FROM) and dmarc= results of our
// Authentication-Results, and the DMARC disposition (its dis= comment).
func inboundVerdict(t *testing.T, p *daemontest.Process, sock, ip string) (spf, dmarc, dis string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	id := fmt.Sprintf("DOC%d", time.Now().UnixNano()%1e9)
	raw := "From: Acme <info@acme.example>\r\nTo: someone@receiver.test\r\nSubject: agreement\r\n" +
		"Date: Sun, 06 Dec 2026 12:00:00 +0000\r\nMessage-ID: <" + id + "@acme.example>\r\n\r\nHello.\r\n"
	tx := miltertest.Transaction{ClientIP: ip, Helo: "mail.acme.example", MailFrom: "postmaster@acme.example",
		RcptTo: []string{"someone@receiver.test"}, QueueID: id, Hostname: authservID, LeadingSpace: true}
	res, err := miltertest.Run(ctx, "unix", sock, tx, []byte(raw))
	if err != nil {
		t.Fatalf("message from %s: %v\n%s", ip, err, daemonLog(p))
	}
	if !res.Accepted() {
		t.Fatalf("message from %s not accepted: stage %s, action %v\n%s", ip, res.Stage, res.Action, daemonLog(p))
	}
	msg, err := mail.ReadMessage(bytes.NewReader(res.Message))
	if err != nil {
		t.Fatalf("delivered message: %v\n%s", err, res.Message)
	}
	var ours []string
	for _, v := range msg.Header["Authentication-Results"] {
		if f := strings.Fields(strings.ReplaceAll(v, ";", " ; ")); len(f) > 0 && strings.EqualFold(f[0], authservID) {
			ours = append(ours, v)
		}
	}
	if len(ours) != 1 {
		t.Fatalf("want one Authentication-Results of ours, got %q\n%s", ours, res.Message)
	}
	t.Logf("from %s: Authentication-Results: %s", ip, ours[0])
	for _, part := range strings.Split(ours[0], ";") {
		m := resultRE.FindStringSubmatch(part)
		if m == nil {
			continue
		}
		switch {
		case m[1] == "dmarc":
			dmarc = m[2]
			if d := disRE.FindStringSubmatch(part); d != nil {
				dis = d[1]
			}
		case strings.Contains(part, "smtp.mailfrom="):
			spf = m[2]
		}
	}
	if spf == "" || dmarc == "" || dis == "" {
		t.Fatalf("no spf= for MAIL FROM, dmarc= or dis= in %q", ours[0])
	}
	return spf, dmarc, dis
}
