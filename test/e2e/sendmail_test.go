package e2e

import (
	"errors"
	"github.com/authmilter/authmilter/internal/smtpsink"
	"strings"
	"testing"
	"time"
)

// TestSendmail runs authmilter inside a private Sendmail 8.17 (Debian's
// package, unpacked) with INPUT_MAIL_FILTER, for the same core cases as
// TestPostfix, SMTP AUTH (Cyrus SASL, sasldb) included. The sendmail
// command is a Postfix-only case.
func TestSendmail(t *testing.T) {
	e, sm := getSendmail(t)

	waitSM := func(t *testing.T, tok string) smtpsink.Message {
		t.Helper()
		m, err := e.sink.Wait(tok, deliveryTimeout)
		if err != nil {
			t.Fatalf("%v\nSendmail traffic:\n%s", err, sm.traffic())
		}
		return m
	}

	t.Run("internal_client_signed", func(t *testing.T) {
		tok := token("sm-internal")
		from := "alice@" + ourDomain
		qid, err := send(submission{
			Server: sm.addr(sm.Ports.Main), Source: internalIP,
			From: from, To: []string{"bob@remote.example"},
			Data: message(tok, from, "bob@remote.example"),
		})
		if err != nil {
			t.Fatalf("submit: %v", err)
		}
		m := waitSM(t, tok)
		e.checkSignedByUs(t, m.Data)
		fs := headerFields(m.Data)
		if len(fs) > 2 && !strings.EqualFold(fs[2].Name, "Received") {
			t.Errorf("field after the signatures is %s, want Sendmail's Received; header: %s", fs[2].Name, names(fs))
		}
		checkLog(t, e.main, qid, "dir=out", "signed="+string(wantOurSigs[0]), string(wantOurSigs[1]))
	})

	// SMTP AUTH from 127.0.0.2, outside Sendmail's relay access and
	// outbound.networks: relaying is refused without AUTH; with AUTH PLAIN
	// (TRUST_AUTH_MECH) it is allowed and the message is signed because
	// {auth_authen} is set.
	t.Run("sasl_submission_signed", func(t *testing.T) {
		tok := token("sm-sasl")
		from := "carol@" + ourDomain
		sub := submission{
			Server: sm.addr(sm.Ports.Auth), Source: externalIP,
			From: from, To: []string{"dave@remote.example"},
			Data: message(tok, from, "dave@remote.example"),
		}
		_, err := send(sub)
		var se *smtpError
		if !errors.As(err, &se) || se.Stage != "RCPT" || se.Code/100 != 5 {
			t.Fatalf("relay from %s without AUTH: got %v, want a 5xx at RCPT (Relaying denied)\nSendmail traffic:\n%s", externalIP, err, sm.traffic())
		}
		// A wrong password is refused: the users come from the private sasldb.
		sub.User, sub.Pass = saslUser, "wrong-"+saslPass
		if _, err := send(sub); !errors.As(err, &se) || se.Stage != "AUTH" || se.Code/100 != 5 {
			t.Fatalf("AUTH with a wrong password: got %v, want a 5xx", err)
		}
		sub.User, sub.Pass = saslUser, saslPass
		qid, err := send(sub)
		if err != nil {
			t.Fatalf("submit with AUTH: %v\nSendmail traffic:\n%s", err, sm.traffic())
		}
		m := waitSM(t, tok)
		e.checkSignedByUs(t, m.Data)
		checkLog(t, e.main, qid, "dir=out", "why=auth", "signed=")
		if l := e.main.logLine(qid); strings.Contains(l, "network=") {
			t.Errorf("signed because of the network, not AUTH: %s", l)
		}
	})

	t.Run("external_client_authentication_results", func(t *testing.T) {
		tok := token("sm-inbound")
		from := "erin@" + extDomain
		// 127.0.0.2 is outside: Sendmail refuses to relay for it.
		_, err := send(submission{
			Server: sm.addr(sm.Ports.Main), Source: externalIP,
			From: from, To: []string{"bob@remote.example"}, Data: message(tok+"-relay", from, "bob@remote.example"),
		})
		var se *smtpError
		if !errors.As(err, &se) || se.Stage != "RCPT" || se.Code/100 != 5 {
			t.Fatalf("relay from %s: got %v, want a 5xx at RCPT (Relaying denied)", externalIP, err)
		}

		msg := e.signExternal(t, message(tok, from, "user@"+rcptDomain))
		extB := dkimTags(headerFields(msg)[0].unfolded())["b"]
		qid, err := send(submission{
			Server: sm.addr(sm.Ports.Main), Source: externalIP, Helo: "mail." + extDomain,
			From: from, To: []string{"user@" + rcptDomain}, Data: msg,
		})
		if err != nil {
			t.Fatalf("submit: %v", err)
		}
		m := waitSM(t, tok)
		fs := headerFields(m.Data)
		if n := len(fieldsNamed(fs, "DKIM-Signature")); n != 1 {
			t.Errorf("inbound message has %d DKIM-Signature fields, want only the sender's", n)
		}
		ar := checkOurAR(t, fs)
		checkDKIMResult(t, ar, "pass", extDomain, extSel, "rsa-sha256", extB)
		checkResult(t, ar, "spf", "pass", "", map[string]string{"smtp.mailfrom": from})
		checkResult(t, ar, "dmarc", "pass", "p=reject dis=none", map[string]string{"header.from": extDomain})
		checkLog(t, e.main, qid, "dir=in")
	})

	t.Run("forged_authentication_results_removed", func(t *testing.T) {
		tok := token("sm-forged")
		from := "frank@" + extDomain
		_, err := send(submission{
			Server: sm.addr(sm.Ports.Main), Source: externalIP, Helo: "mail." + extDomain,
			From: from, To: []string{"user@" + rcptDomain}, Data: forgedARMessage(tok, from),
		})
		if err != nil {
			t.Fatalf("submit: %v", err)
		}
		m := waitSM(t, tok)
		checkForgedARRemoved(t, m.Data, from)
	})

	t.Run("dmarc_reject_enforced", func(t *testing.T) {
		tok := token("sm-dmarc")
		from := "ceo@" + rejDomain
		_, err := send(submission{
			Server: sm.addr(sm.Ports.Enforce), Source: externalIP, Helo: "mail.attacker.example",
			From: "bounce@" + rejDomain, To: []string{"user@" + rcptDomain},
			Data: message(tok, from, "user@"+rcptDomain),
		})
		var se *smtpError
		if !errors.As(err, &se) || se.Code != 550 || !strings.HasPrefix(se.Msg, "5.7.1") || se.Stage != "end of data" {
			t.Fatalf("got %v, want 550 5.7.1 at the end of DATA", err)
		}
		time.Sleep(300 * time.Millisecond)
		if got := e.sink.Find(tok); len(got) != 0 {
			t.Errorf("the rejected message was delivered:\n%s", got[0].Data)
		}
	})

	t.Run("milter_down", func(t *testing.T) {
		from := "ivan@" + ourDomain
		sub := func(port int, tok string) submission {
			return submission{
				Server: sm.addr(port), Source: internalIP,
				From: from, To: []string{"judy@remote.example"},
				Data: message(tok, from, "judy@remote.example"),
			}
		}
		tok := token("sm-down-up")
		if _, err := send(sub(sm.Ports.DownTempfail, tok)); err != nil {
			t.Fatalf("with authmilter running: %v", err)
		}
		e.checkSignedByUs(t, waitSM(t, tok).Data)

		e.down.stop()
		restarted := false
		defer func() {
			if !restarted {
				if err := e.runMilter(e.down); err != nil {
					t.Errorf("restart: %v", err)
				}
			}
		}()
		tokTF := token("sm-down-tempfail")
		_, err := send(sub(sm.Ports.DownTempfail, tokTF))
		var se *smtpError
		if !errors.As(err, &se) || se.Code/100 != 4 {
			t.Errorf("F=T with authmilter down: got %v, want a 4xx reply", err)
		} else {
			t.Logf("F=T: Sendmail answered %s", se)
		}
		tokAC := token("sm-down-accept")
		if _, err := send(sub(sm.Ports.DownAccept, tokAC)); err != nil {
			t.Fatalf("no F flag with authmilter down: %v", err)
		}
		m := waitSM(t, tokAC)
		if n := len(fieldsNamed(headerFields(m.Data), "DKIM-Signature")); n != 0 {
			t.Errorf("delivered with %d signatures while authmilter was down", n)
		}
		restarted = true
		if err := e.runMilter(e.down); err != nil {
			t.Fatalf("restart authmilter: %v", err)
		}
		if _, err := send(sub(sm.Ports.DownTempfail, tokTF)); err != nil {
			t.Fatalf("retry after restart: %v", err)
		}
		e.checkSignedByUs(t, waitSM(t, tokTF).Data)
		if n := len(e.sink.Find(tokTF)); n != 1 {
			t.Errorf("the tempfailed message was delivered %d times, want once (after the retry)", n)
		}
	})
}

// TestSendmailMilterProtocol records what Sendmail sends to a milter.
func TestSendmailMilterProtocol(t *testing.T) {
	e, sm := getSendmail(t)
	tok := token("sm-spy")
	from := "kim@" + ourDomain
	qid, err := send(submission{
		Server: sm.addr(sm.Ports.Main), Source: internalIP, Helo: "client.test",
		From: from, To: []string{"lee@remote.example"},
		Data: message(tok, from, "lee@remote.example"),
	})
	if err != nil {
		t.Fatalf("submit: %v", err)
	}
	if _, err := e.sink.Wait(tok, deliveryTimeout); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		spy  *spyMilter
	}{{"leadspc", e.spy}, {"plain", e.spyPlain}} {
		t.Run(c.name, func(t *testing.T) {
			sc := c.spy.waitFor(tok, 'Q', 1, 10*time.Second)
			if sc == nil {
				t.Fatalf("the spy milter saw no header with %s", tok)
			}
			t.Logf("Sendmail → milter (%s), queue ID %s:\n%s", c.name, qid, sc.report())

			// Sendmail 8.17 offers SMFIP_HDR_LEADSPC as Postfix does.
			if sc.Offered[0] != 6 || sc.Offered[2]&smfipHdrLeadSpc == 0 {
				t.Errorf("Sendmail offered version %d, protocol %#x; want 6 with SMFIP_HDR_LEADSPC", sc.Offered[0], sc.Offered[2])
			}
			// Issue 14: every SMFIP_NR_* flag authmilter asks for is offered,
			// so a message costs one round trip.
			if got := sc.Offered[2] & smfipNRAll; got != smfipNRAll {
				t.Errorf("Sendmail offered SMFIP_NR_* %#x of %#x: authmilter would answer the commands of the others", got, smfipNRAll)
			}
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
			// Sendmail runs its filters one after the other over the whole
			// message: a filter listed after authmilter sees its signatures.
			if sc.firstHeader() != "DKIM-Signature" {
				t.Errorf("first header field seen by the filter after authmilter is %q, want authmilter's DKIM-Signature", sc.firstHeader())
			}
			conn, _ := sc.macrosAt('C')
			if conn["j"] != authservID || conn["{daemon_name}"] != "MTA" {
				t.Errorf("connect macros %q: want j=%s {daemon_name}=MTA", conn, authservID)
			}
			mail, _ := sc.macrosAt('M')
			if mail["i"] != qid || mail["{mail_addr}"] != from {
				t.Errorf("MAIL macros %q: want i=%s (the queue ID) and {mail_addr}=%s", mail, qid, from)
			}
			eom, _ := sc.macrosAt('E')
			if want := "<" + tok + "@" + ourDomain + ">"; eom["{msg_id}"] != want {
				t.Errorf("end-of-message macros %q: want {msg_id}=%s", eom, want)
			}
			if _, ok := eom["i"]; ok {
				t.Errorf("Sendmail sent i at end of message (%q); DESIGN.md says it does not", eom["i"])
			}
			if seq := sc.sequence(); !strings.HasSuffix(seq, "D(E) E Q") {
				t.Errorf("sequence %q: want end of message, then QUIT, no ABORT", seq)
			}
		})
	}
}
