package e2e

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/authmilter/authmilter/internal/interop"
	"github.com/authmilter/authmilter/internal/smtpsink"
)

// deliveryTimeout bounds how long a queued message may take to reach the
// sink (Postfix delivers at once; this only guards against a hang).
const deliveryTimeout = 20 * time.Second

// TestPostfix runs authmilter inside a private Postfix 3.7 instance.
func TestPostfix(t *testing.T) {
	e, pf := getPostfix(t)

	// Internal client (127.0.0.1, in mynetworks and outbound.networks):
	// signed with both keys, on top of Postfix's own Received field, and the
	// signatures verify with dkimpy and OpenDKIM.
	t.Run("internal_client_signed", func(t *testing.T) {
		tok := token("internal")
		from := "alice@" + ourDomain
		qid, err := send(submission{
			Server: pf.addr(pf.Ports.Main), Source: internalIP,
			From: from, To: []string{"bob@remote.example"},
			Data: message(tok, from, "bob@remote.example"),
		})
		if err != nil {
			t.Fatalf("submit: %v", err)
		}
		m := waitDelivered(t, e, pf, tok, qid)
		e.checkSignedByUs(t, m.Data)
		fs := headerFields(m.Data)
		if len(fs) > 2 && !strings.EqualFold(fs[2].Name, "Received") {
			t.Errorf("field after the signatures is %s, want Postfix's Received; header: %s", fs[2].Name, names(fs))
		}
		if ours, _ := ourAR(fs); len(ours) != 0 {
			t.Errorf("outbound message got our Authentication-Results: %q", ours[0].Value)
		}
		checkLog(t, e.main, qid, "dir=out", "signed="+string(wantOurSigs[0]), string(wantOurSigs[1]))
	})

	// SMTP AUTH from 127.0.0.2, which is outside mynetworks and
	// outbound.networks: Postfix refuses to relay without AUTH, and with
	// AUTH the message is signed because {auth_authen} is set.
	t.Run("sasl_submission_signed", func(t *testing.T) {
		tok := token("sasl")
		from := "carol@" + ourDomain
		msg := message(tok, from, "dave@remote.example")
		sub := submission{
			Server: pf.addr(pf.Ports.Main), Source: externalIP,
			From: from, To: []string{"dave@remote.example"}, Data: msg,
		}
		_, err := send(sub)
		var se *smtpError
		if !errors.As(err, &se) || se.Stage != "RCPT" || se.Code/100 != 5 {
			t.Fatalf("relay from %s without AUTH: got %v, want a 5xx at RCPT (Relay access denied): is %s really outside mynetworks?", externalIP, err, externalIP)
		}
		sub.User, sub.Pass = saslUser, saslPass
		qid, err := send(sub)
		if err != nil {
			t.Fatalf("submit with AUTH: %v", err)
		}
		m := waitDelivered(t, e, pf, tok, qid)
		e.checkSignedByUs(t, m.Data)
		checkLog(t, e.main, qid, "dir=out", "why=auth", "signed=")
		if l := e.main.logLine(qid); strings.Contains(l, "network=") {
			t.Errorf("signed because of the network, not AUTH: %s", l)
		}
	})

	// A listener with -o milter_macro_daemon_name=ORIGINATING: signed
	// because of {daemon_name}, though the client is outside and did not
	// authenticate.
	t.Run("daemon_name_originating_signed", func(t *testing.T) {
		tok := token("originating")
		from := "olga@" + ourDomain
		qid, err := send(submission{
			Server: pf.addr(pf.Ports.Originating), Source: externalIP,
			From: from, To: []string{"user@" + rcptDomain},
			Data: message(tok, from, "user@"+rcptDomain),
		})
		if err != nil {
			t.Fatalf("submit: %v", err)
		}
		m := waitDelivered(t, e, pf, tok, qid)
		e.checkSignedByUs(t, m.Data)
		checkLog(t, e.main, qid, "dir=out", "ORIGINATING", "signed=")
	})

	// An outside sender (127.0.0.2, no AUTH) whose domain passes SPF, DKIM
	// (dkimpy's signature) and DMARC: not signed by us, one
	// Authentication-Results field with our authserv-id on top.
	t.Run("external_client_authentication_results", func(t *testing.T) {
		tok := token("inbound")
		from := "erin@" + extDomain
		msg := e.signExternal(t, message(tok, from, "user@"+rcptDomain))
		extB := dkimTags(headerFields(msg)[0].unfolded())["b"]
		qid, err := send(submission{
			Server: pf.addr(pf.Ports.Main), Source: externalIP, Helo: "mail." + extDomain,
			From: from, To: []string{"user@" + rcptDomain}, Data: msg,
		})
		if err != nil {
			t.Fatalf("submit: %v", err)
		}
		m := waitDelivered(t, e, pf, tok, qid)
		fs := headerFields(m.Data)
		for _, s := range fieldsNamed(fs, "DKIM-Signature") {
			if d := dkimTags(s.unfolded())["d"]; d != extDomain {
				t.Errorf("inbound message got a signature with d=%s", d)
			}
		}
		if n := len(fieldsNamed(fs, "DKIM-Signature")); n != 1 {
			t.Errorf("inbound message has %d DKIM-Signature fields, want only the sender's", n)
		}
		ar := checkOurAR(t, fs)
		checkDKIMResult(t, ar, "pass", extDomain, extSel, "rsa-sha256", extB)
		checkResult(t, ar, "spf", "pass", "", map[string]string{"smtp.mailfrom": from})
		checkResult(t, ar, "dmarc", "pass", "p=reject dis=none", map[string]string{"header.from": extDomain})
		// The sender's signature still verifies after Postfix and us.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := interop.VerifyDkimpyAll(ctx, m.Data, e.dnsAddr); err != nil {
			t.Errorf("the sender's signature no longer verifies: %v", err)
		}
		checkLog(t, e.main, qid, "dir=in")
	})

	// Authentication-Results fields that claim to be ours are removed
	// (whatever their folding); another authserv-id's field is kept as it was.
	t.Run("forged_authentication_results_removed", func(t *testing.T) {
		tok := token("forged")
		from := "frank@" + extDomain
		qid, err := send(submission{
			Server: pf.addr(pf.Ports.Main), Source: externalIP, Helo: "mail." + extDomain,
			From: from, To: []string{"user@" + rcptDomain}, Data: forgedARMessage(tok, from),
		})
		if err != nil {
			t.Fatalf("submit: %v", err)
		}
		m := waitDelivered(t, e, pf, tok, qid)
		ar := checkForgedARRemoved(t, m.Data, from)
		checkResult(t, ar, "spf", "pass", "", map[string]string{"smtp.mailfrom": from})
		checkLog(t, e.main, qid, "dir=in")
	})

	// Postfix's sendmail command: postdrop → pickup → cleanup, where
	// non_smtpd_milters applies; the milter sees client 127.0.0.1.
	t.Run("sendmail_command_signed", func(t *testing.T) {
		tok := token("sendmail")
		from := "gina@" + ourDomain
		if err := pf.sendmailCmd(from, message(tok, from, "henry@remote.example")); err != nil {
			t.Fatal(err)
		}
		m, err := e.sink.Wait(tok, deliveryTimeout)
		if err != nil {
			t.Fatalf("%v\nmaillog:\n%s", err, tailFile(pf.dir+"/maillog", 20))
		}
		e.checkSignedByUs(t, m.Data)
		if m.From != from {
			t.Errorf("envelope sender %q, want %q", m.From, from)
		}
	})

	// DMARC p=reject failure with [dmarc] enforce = true: 550 5.7.1 at the
	// end of DATA, nothing delivered. The same message through the
	// non-enforcing instance is delivered with dmarc=fail.
	t.Run("dmarc_reject_enforced", func(t *testing.T) {
		tok := token("dmarc")
		from := "ceo@" + rejDomain
		sub := submission{
			Server: pf.addr(pf.Ports.Enforce), Source: externalIP, Helo: "mail.attacker.example",
			From: "bounce@" + rejDomain, To: []string{"user@" + rcptDomain},
			Data: message(tok, from, "user@"+rcptDomain),
		}
		_, err := send(sub)
		var se *smtpError
		if !errors.As(err, &se) || se.Code != 550 || !strings.HasPrefix(se.Msg, "5.7.1") {
			t.Fatalf("got %v, want 550 5.7.1 at the end of DATA", err)
		}
		if se.Stage != "end of data" {
			t.Errorf("rejected at %s, want at the end of DATA", se.Stage)
		}
		tok2 := token("dmarc-noenforce")
		sub.Server = pf.addr(pf.Ports.Main)
		sub.Data = message(tok2, from, "user@"+rcptDomain)
		qid, err := send(sub)
		if err != nil {
			t.Fatalf("without enforcement: %v", err)
		}
		m := waitDelivered(t, e, pf, tok2, qid)
		ar := checkOurAR(t, headerFields(m.Data))
		checkResult(t, ar, "dmarc", "fail", "", map[string]string{"header.from": rejDomain})
		if rs := ar.byMethod("dmarc"); len(rs) == 1 && !strings.HasPrefix(rs[0].Comment, "p=reject ") {
			t.Errorf("dmarc comment (%s), want (p=reject dis=...)", rs[0].Comment)
		}
		checkResult(t, ar, "spf", "fail", "", map[string]string{"smtp.mailfrom": "bounce@" + rejDomain})
		if got := e.sink.Find(tok); len(got) != 0 {
			t.Errorf("the rejected message was delivered:\n%s", got[0].Data)
		}
	})

	// authmilter stopped: milter_default_action decides. tempfail: the
	// client gets a 4xx and keeps the message, which goes through signed
	// once authmilter is back; accept: delivered unsigned. Nothing is lost.
	t.Run("milter_down", func(t *testing.T) {
		from := "ivan@" + ourDomain
		sub := func(port int, tok string) submission {
			return submission{
				Server: pf.addr(port), Source: internalIP,
				From: from, To: []string{"judy@remote.example"},
				Data: message(tok, from, "judy@remote.example"),
			}
		}
		// Wired up: with the daemon running, this listener signs.
		tok := token("down-up")
		qid, err := send(sub(pf.Ports.DownTempfail, tok))
		if err != nil {
			t.Fatalf("with authmilter running: %v", err)
		}
		e.checkSignedByUs(t, waitDelivered(t, e, pf, tok, qid).Data)

		e.down.stop()
		restarted := false
		defer func() {
			if !restarted {
				if err := e.runMilter(e.down); err != nil {
					t.Errorf("restart: %v", err)
				}
			}
		}()

		tokTF := token("down-tempfail")
		_, err = send(sub(pf.Ports.DownTempfail, tokTF))
		var se *smtpError
		if !errors.As(err, &se) || se.Code/100 != 4 {
			t.Errorf("milter_default_action=tempfail with authmilter down: got %v, want a 4xx reply", err)
		} else {
			t.Logf("tempfail: Postfix answered %s", se)
		}

		tokAC := token("down-accept")
		qid, err = send(sub(pf.Ports.DownAccept, tokAC))
		if err != nil {
			t.Fatalf("milter_default_action=accept with authmilter down: %v", err)
		}
		m := waitDelivered(t, e, pf, tokAC, qid)
		fs := headerFields(m.Data)
		if n := len(fieldsNamed(fs, "DKIM-Signature")); n != 0 {
			t.Errorf("delivered with %d signatures while authmilter was down", n)
		}

		// The client retries the tempfailed message once authmilter is back.
		restarted = true
		if err := e.runMilter(e.down); err != nil {
			t.Fatalf("restart authmilter: %v", err)
		}
		qid, err = send(sub(pf.Ports.DownTempfail, tokTF))
		if err != nil {
			t.Fatalf("retry after restart: %v", err)
		}
		m = waitDelivered(t, e, pf, tokTF, qid)
		e.checkSignedByUs(t, m.Data)
		if n := len(e.sink.Find(tokTF)); n != 1 {
			t.Errorf("the tempfailed message was delivered %d times, want once (after the retry)", n)
		}
	})
}

// TestPostfixMilterProtocol records what Postfix sends to a milter (see
// spy_test.go) and checks the facts authmilter's design relies on.
func TestPostfixMilterProtocol(t *testing.T) {
	e, pf := getPostfix(t)
	for _, c := range []struct {
		name string
		port int
		spy  *spyMilter
	}{
		{"leadspc", pf.Ports.Spy, e.spy},
		{"plain", pf.Ports.SpyPlain, e.spyPlain},
	} {
		t.Run(c.name, func(t *testing.T) {
			tok := token("spy-" + c.name)
			from := "kim@" + ourDomain
			qid, err := send(submission{
				Server: pf.addr(c.port), Source: externalIP, Helo: "client.test",
				User: saslUser, Pass: saslPass,
				From: from, To: []string{"lee@remote.example"},
				Data: message(tok, from, "lee@remote.example"),
			})
			if err != nil {
				t.Fatalf("submit: %v", err)
			}
			waitDelivered(t, e, pf, tok, qid)
			sc := c.spy.waitFor(tok, 'Q', 1, 10*time.Second)
			if sc == nil {
				t.Fatalf("the spy milter saw no header with %s", tok)
			}
			t.Logf("Postfix → milter (%s):\n%s", c.name, sc.report())

			if sc.Offered[0] != 6 || sc.Offered[2]&smfipHdrLeadSpc == 0 {
				t.Errorf("Postfix offered version %d, protocol %#x; want 6 with SMFIP_HDR_LEADSPC", sc.Offered[0], sc.Offered[2])
			}
			// Issue 14: every SMFIP_NR_* flag authmilter asks for is offered,
			// so a message costs one round trip.
			if got := sc.Offered[2] & smfipNRAll; got != smfipNRAll {
				t.Errorf("Postfix offered SMFIP_NR_* %#x of %#x: authmilter would answer the commands of the others", got, smfipNRAll)
			}
			// Header values: with SMFIP_HDR_LEADSPC exactly as in the
			// message; without, one leading space removed (a tab stays).
			// Folds arrive as LF.
			lead := ""
			if c.spy.leadSpace {
				lead = " "
			}
			for name, want := range map[string]string{
				"Subject": lead + "end-to-end " + tok + "\n\tfolded line",
				"To":      lead + " Test Recipient  <lee@remote.example>",
				"X-Test":  "\ttab after the colon",
			} {
				if got, _ := sc.header(name); got != want {
					t.Errorf("header %s value %q, want %q", name, got, want)
				}
			}
			conn, _ := sc.macrosAt('C')
			if conn["j"] != authservID || conn["{daemon_name}"] != authservID {
				t.Errorf("connect macros %q: want j and {daemon_name} = %s", conn, authservID)
			}
			if args := sc.connectArgs(); len(args) != 4 || args[0] != "["+externalIP+"]" || args[3] != externalIP {
				t.Errorf("connect %q, want host [%s] (no reverse DNS) and address %s", args, externalIP, externalIP)
			}
			mail, _ := sc.macrosAt('M')
			if mail["{auth_authen}"] != saslUser || mail["{mail_addr}"] != from {
				t.Errorf("MAIL macros %q: want {auth_authen}=%s {mail_addr}=%s", mail, saslUser, from)
			}
			if _, ok := mail["i"]; ok {
				t.Errorf("Postfix sent i at MAIL over SMTP (%q); DESIGN.md says it does not", mail["i"])
			}
			for _, stage := range []byte("TNE") {
				if m, _ := sc.macrosAt(stage); m["i"] != qid {
					t.Errorf("macro i at %c is %q, want the queue ID %s", stage, m["i"], qid)
				}
			}
			if seq := sc.sequence(); !strings.HasSuffix(seq, "D(E) E A A Q") {
				t.Errorf("sequence %q: want two ABORTs after end of message, then QUIT", seq)
			}
		})
	}
}

// waitDelivered waits for the message with tok at the sink; on failure it
// shows what Postfix logged about the queue ID.
func waitDelivered(t *testing.T, e *env, pf *postfix, tok, qid string) smtpsink.Message {
	t.Helper()
	m, err := e.sink.Wait(tok, deliveryTimeout)
	if err != nil {
		t.Fatalf("queue ID %s: %v\nmaillog:\n%s", qid, err, pf.logFor(qid))
	}
	return m
}

// checkLog asserts that the daemon logged one line for the queue ID with
// every want in it.
func checkLog(t *testing.T, m *milterProc, qid string, want ...string) {
	t.Helper()
	l := m.waitLogLine(qid)
	if l == "" {
		t.Errorf("authmilter %s logged no message line with queue=%s; log:\n%s", m.name, qid, tailFile(m.log, 20))
		return
	}
	for _, w := range want {
		if !strings.Contains(l, w) {
			t.Errorf("log line lacks %q: %s", w, l)
		}
	}
}

// checkOurAR asserts that the message has exactly one Authentication-Results
// field with our authserv-id, as its first field, and parses it.
func checkOurAR(t *testing.T, fs []field) authResults {
	t.Helper()
	ours, all := ourAR(fs)
	if len(ours) != 1 {
		t.Fatalf("want exactly one Authentication-Results with authserv-id %s, got %d of %d: %q; header: %s", authservID, len(ours), len(all), all, names(fs))
	}
	if len(fs) == 0 || !strings.EqualFold(fs[0].Name, "Authentication-Results") || fs[0].Value != ours[0].Value {
		t.Errorf("our Authentication-Results is not the first field; header: %s", names(fs))
	}
	ar, err := parseAR(ours[0].unfolded())
	if err != nil {
		t.Fatalf("parse %q: %v", ours[0].unfolded(), err)
	}
	if ar.AuthservID != authservID {
		t.Errorf("authserv-id %q, want %q", ar.AuthservID, authservID)
	}
	for _, m := range []string{"dkim", "spf", "dmarc"} {
		if len(ar.byMethod(m)) == 0 {
			t.Errorf("no %s= result in %q", m, ours[0].unfolded())
		}
	}
	t.Logf("Authentication-Results:%s", ours[0].Value)
	return ar
}

// checkResult asserts one result of a method, its first comment (if want
// is not empty) and properties.
func checkResult(t *testing.T, ar authResults, method, result, comment string, props map[string]string) {
	t.Helper()
	rs := ar.byMethod(method)
	if len(rs) != 1 {
		t.Errorf("%d %s= results, want 1: %+v", len(rs), method, ar.Results)
		return
	}
	r := rs[0]
	if r.Result != result {
		t.Errorf("%s=%s, want %s=%s (%+v)", method, r.Result, method, result, r)
	}
	if comment != "" && r.Comment != comment {
		t.Errorf("%s comment (%s), want (%s)", method, r.Comment, comment)
	}
	for k, v := range props {
		if r.Props[k] != v {
			t.Errorf("%s: %s=%q, want %q (%+v)", method, k, r.Props[k], v, r.Props)
		}
	}
}

// checkDKIMResult asserts the dkim= result for one signature.
func checkDKIMResult(t *testing.T, ar authResults, result, d, s, a, b string) {
	t.Helper()
	want := map[string]string{"header.d": d, "header.s": s, "header.a": a, "header.b": b[:8]}
	checkResult(t, ar, "dkim", result, "", want)
}

// forgedARField is the other authserv-id's field of forgedARMessage, which
// must be kept as it is.
func forgedARField(from string) string { return " other.example; spf=pass smtp.mailfrom=" + from }

// forgedARMessage is an inbound message carrying two Authentication-Results
// fields that claim our authserv-id (one folded before it) and one of
// another authserv-id.
func forgedARMessage(tok, from string) []byte {
	return message(tok, from, "user@"+rcptDomain,
		"Authentication-Results: "+authservID+"; dkim=pass header.d=bank.example header.s=forged",
		"Authentication-Results:"+forgedARField(from),
		"Authentication-Results:\n\t"+authservID+";\n\tdmarc=pass header.from=bank.example",
	)
}

// checkForgedARRemoved checks a delivered forgedARMessage: the forged fields
// are gone, ours is there once, the other one is kept verbatim. It returns
// our field, parsed.
func checkForgedARRemoved(t *testing.T, data []byte, from string) authResults {
	t.Helper()
	fs := headerFields(data)
	if strings.Contains(string(data), "bank.example") {
		t.Errorf("a forged Authentication-Results field survived:\n%s", data)
	}
	ours, all := ourAR(fs)
	if len(ours) != 1 {
		t.Errorf("%d Authentication-Results fields with %s, want exactly ours", len(ours), authservID)
	}
	kept := 0
	for _, f := range all {
		if f.Value == forgedARField(from) {
			kept++
		}
	}
	if kept != 1 || len(all) != 2 {
		t.Errorf("want our field plus the other.example field kept verbatim, got %d fields: %q", len(all), all)
	}
	return checkOurAR(t, fs)
}
