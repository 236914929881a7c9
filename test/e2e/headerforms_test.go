package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/authmilter/authmilter/internal/interop"
	"github.com/authmilter/authmilter/internal/smtpsink"
)

// headerFormCase is a message (a file under testdata/) whose header
// fields have a shape that a signer must reproduce byte for byte for simple
// header canonicalization, and what Postfix and Sendmail do to it.
type headerFormCase struct {
	file string
	// pf and sm are the changes Postfix and Sendmail make to the message
	// (nil: none; it is delivered as it was submitted).
	pf, sm *mtaChange
}

// mtaChange is how an MTA changes a message between the client and the
// receiver.
type mtaChange struct {
	// replace lists old, new, old, new...: the delivered message (below our
	// signatures and the MTA's Received field) is the submitted one with
	// each old (which must occur once) replaced by its new.
	replace []string
	// broken lists the canonicalizations whose signatures do not survive
	// the change, because the MTA makes it after the milters have seen the
	// message. For these both dkimpy and OpenDKIM must fail both our
	// signatures on the header hash (the body hash is right).
	broken []string
}

// headerFormCases: folding with spaces and tabs, a tab or nothing after
// the colon, doubled and trailing white space, empty values, values that
// start on a continuation line, repeated and many fields, lower-case
// names, comments; and address fields that the MTAs rewrite.
var headerFormCases = []headerFormCase{
	{file: "messages/02-folded-subject-spaces.eml"},
	{file: "messages/03-folded-subject-tabs.eml"},
	{file: "messages/04-tab-after-colon.eml"},
	{file: "messages/05-no-space-after-colon.eml"},
	{file: "messages/06-long-lines.eml"},
	{file: "messages/07-trailing-whitespace.eml"},
	{file: "messages/13-rfc2047-subject.eml"},
	{file: "messages/18-display-name-comments.eml"},
	{file: "messages/19-duplicate-to.eml"},
	{file: "messages/22-many-headers.eml"},
	{file: "e2e/messages/e2e-unstructured-forms.eml"},
	{file: "e2e/messages/e2e-address-forms.eml"},
	// Sendmail formats address fields (From, To, Cc, Reply-To...) anew
	// when it delivers (headers.c: commaize): ", " between addresses, a
	// fold before an address that would pass column 78, with eight spaces,
	// no other folds, no white space after the last address. Relaxed canonicalization does not see the
	// difference; simple does.
	{file: "e2e/messages/e2e-address-refolding.eml", sm: &mtaChange{
		replace: []string{
			"To: Bob Receiver <bob@example.org>, Carol Receiver <carol@example.org>, Dave Receiver <dave@example.org>\r\n",
			"To: Bob Receiver <bob@example.org>, Carol Receiver <carol@example.org>,\r\n        Dave Receiver <dave@example.org>\r\n",
			"Cc:  Erin  Receiver  <erin@example.org>,\r\n   Frank <frank@example.org>\r\n",
			"Cc:  Erin  Receiver  <erin@example.org>, Frank <frank@example.org>\r\n",
			"Reply-To: alice+reply@example.com   \r\n",
			"Reply-To: alice+reply@example.com\r\n",
		},
		broken: []string{canonSimple},
	}},
	// The same formatting drops the space before a comma, which relaxed
	// canonicalization keeps: both break.
	{file: "e2e/messages/e2e-address-space-before-comma.eml", sm: &mtaChange{
		replace: []string{
			"To: Bob Receiver <bob@example.org> , Carol <carol@example.org>\r\n",
			"To: Bob Receiver <bob@example.org>, Carol <carol@example.org>\r\n",
		},
		broken: []string{canonRelaxed, canonSimple},
	}},
	// An address without a domain gets ours (myorigin; Sendmail's $j) from
	// both MTAs, which write the whole field anew. Postfix does it in
	// cleanup, before its milters see the header, so the signatures cover
	// the new field; Sendmail does it on delivery, after, and both break.
	{file: "e2e/messages/e2e-address-unqualified.eml",
		pf: &mtaChange{replace: unqualifiedRewrite},
		sm: &mtaChange{replace: unqualifiedRewrite, broken: []string{canonRelaxed, canonSimple}},
	},
}

var unqualifiedRewrite = []string{
	"Cc: carol,\r\n  Dave Receiver <dave@example.org>\r\n",
	"Cc: carol@" + authservID + ", Dave Receiver <dave@example.org>\r\n",
}

// messageIDRe finds the local part of the Message-ID, where each run puts
// its token (the value may start on a continuation line).
var messageIDRe = regexp.MustCompile(`(?im)^(Message-ID:\s*<)[^@>]*@`)

// headerFormMessage reads a headerFormCases file and puts tok in its
// Message-ID, so that the sink can tell the deliveries apart; nothing else
// changes.
func headerFormMessage(t *testing.T, e *env, file, tok string) []byte {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(e.repo, "testdata", file))
	if err != nil {
		t.Fatal(err)
	}
	if len(messageIDRe.FindAllIndex(raw, -1)) != 1 {
		t.Fatalf("%s: want exactly one Message-ID field to put the token in", file)
	}
	return messageIDRe.ReplaceAll(raw, []byte("${1}"+tok+"@"))
}

// headerFormRoute is one way into an MTA: a listener whose authmilter signs
// with the given canonicalization.
type headerFormRoute struct {
	canon  string
	server string
	milter *milterProc
}

// TestPostfixHeaderForms signs the header-form messages through Postfix,
// once with relaxed/relaxed (the main listener) and once with simple/simple
// (a listener whose smtpd_milters is the "simple" daemon), and checks what
// the sink receives with dkimpy and OpenDKIM.
func TestPostfixHeaderForms(t *testing.T) {
	e, pf := getPostfix(t)
	runHeaderForms(t, e, "pf", func(c headerFormCase) *mtaChange { return c.pf }, []headerFormRoute{
		{canonRelaxed, pf.addr(pf.Ports.Main), e.main},
		{canonSimple, pf.addr(pf.Ports.Simple), e.simple},
	}, func(qid string) string { return "maillog:\n" + pf.logFor(qid) })
}

// TestSendmailHeaderForms is TestPostfixHeaderForms through Sendmail: the
// main port (INPUT_MAIL_FILTERS authmilter, spy, spyplain) and a port with
// InputMailFilters=simple.
func TestSendmailHeaderForms(t *testing.T) {
	e, sm := getSendmail(t)
	runHeaderForms(t, e, "sm", func(c headerFormCase) *mtaChange { return c.sm }, []headerFormRoute{
		{canonRelaxed, sm.addr(sm.Ports.Main), e.main},
		{canonSimple, sm.addr(sm.Ports.Simple), e.simple},
	}, func(string) string { return "Sendmail traffic:\n" + sm.traffic() })
}

// headerFormRun is one message on its way through an MTA.
type headerFormRun struct {
	msg  []byte
	qid  string
	got  smtpsink.Message
	err  error
	done chan struct{}
}

// runHeaderForms sends every case through every route at once (most of the
// time is spent waiting for the MTA, so the sends do not wait for one
// another, nor for go test -parallel), then checks each delivery in its own
// subtest.
func runHeaderForms(t *testing.T, e *env, mta string, change func(headerFormCase) *mtaChange, routes []headerFormRoute, diag func(qid string) string) {
	runs := make([][]*headerFormRun, len(routes))
	for i, r := range routes {
		if r.milter.canon != r.canon {
			t.Fatalf("authmilter %s signs with %s, want %s", r.milter.name, r.milter.canon, r.canon)
		}
		for _, c := range headerFormCases {
			tok := token(mta + "-" + strings.SplitN(r.canon, "/", 2)[0])
			run := &headerFormRun{msg: headerFormMessage(t, e, c.file, tok), done: make(chan struct{})}
			runs[i] = append(runs[i], run)
			go func() {
				defer close(run.done)
				from := "alice@" + ourDomain
				run.qid, run.err = send(submission{
					Server: r.server, Source: internalIP,
					From: from, To: []string{"bob@example.org"}, Data: run.msg,
				})
				if run.err != nil {
					run.err = fmt.Errorf("submit: %w", run.err)
					return
				}
				if run.got, run.err = e.sink.Wait(tok, deliveryTimeout); run.err != nil {
					run.err = fmt.Errorf("queue ID %s: %w\n%s", run.qid, run.err, diag(run.qid))
				}
			}()
		}
	}
	for i, r := range routes {
		t.Run(strings.ReplaceAll(r.canon, "/", "-"), func(t *testing.T) {
			for j, c := range headerFormCases {
				run := runs[i][j]
				t.Run(strings.TrimSuffix(filepath.Base(c.file), ".eml"), func(t *testing.T) {
					t.Parallel()
					<-run.done
					if run.err != nil {
						t.Fatal(run.err)
					}
					checkHeaderForm(t, e, r, run.qid, change(c), run.msg, run.got.Data)
				})
			}
		})
	}
}

// checkHeaderForm asserts that the delivered message is our two signatures
// (with the route's c=), the MTA's Received field, and then the submitted
// message byte for byte, or changed exactly as ch says; and that dkimpy and
// OpenDKIM verify both signatures, or (when ch says the change breaks them)
// fail both on the header hash.
func checkHeaderForm(t *testing.T, e *env, r headerFormRoute, qid string, ch *mtaChange, sent, got []byte) {
	t.Helper()
	want := sent
	broken := false
	if ch != nil {
		for i := 0; i+1 < len(ch.replace); i += 2 {
			if n := bytes.Count(want, []byte(ch.replace[i])); n != 1 {
				t.Fatalf("the expected change replaces %q, which occurs %d times in the message, want once", ch.replace[i], n)
			}
			want = bytes.Replace(want, []byte(ch.replace[i]), []byte(ch.replace[i+1]), 1)
		}
		broken = slices.Contains(ch.broken, r.canon)
	}
	if broken {
		e.checkBrokenSigs(t, got)
	} else {
		e.checkSignedByUs(t, got)
	}
	fs := headerFields(got)
	for _, s := range fieldsNamed(fs, "DKIM-Signature") {
		if c := dkimTags(s.unfolded())["c"]; c != r.canon {
			t.Errorf("signature has c=%s, want %s: %s", c, r.canon, s.unfolded())
		}
	}
	checkLog(t, r.milter, qid, "dir=out", "signed="+string(wantOurSigs[0]), string(wantOurSigs[1]))

	rest := got
	for i := 0; i < len(wantOurSigs)+1; i++ {
		var name string
		name, rest = cutField(rest)
		wantName := "DKIM-Signature"
		if i == len(wantOurSigs) {
			wantName = "Received"
		}
		if !strings.EqualFold(name, wantName) {
			t.Fatalf("delivered field %d is %q, want %s; header: %s", i, name, wantName, names(fs))
		}
	}
	if !bytes.Equal(rest, want) {
		what := "the submitted one"
		if ch != nil {
			what = "the submitted one with the expected changes"
		}
		t.Errorf("below the signatures and the MTA's Received field, the delivered message differs from %s:\n%s", what, lineDiff(want, rest))
	}
}

// checkBrokenSigs asserts that msg carries our two signatures on top and
// that dkimpy and OpenDKIM both fail each of them on the header hash (the
// body hash matches): the MTA changed a signed field after signing.
func (e *env) checkBrokenSigs(t *testing.T, msg []byte) {
	t.Helper()
	fs := headerFields(msg)
	var got []sigID
	for _, f := range fs {
		if !strings.EqualFold(f.Name, "DKIM-Signature") {
			break
		}
		tags := dkimTags(f.unfolded())
		got = append(got, sigID(tags["d"]+"/"+tags["s"]+"/"+tags["a"]))
	}
	if !sameSigs(got, wantOurSigs) {
		t.Fatalf("signatures on top %v, want %v; header: %s", got, wantOurSigs, names(fs))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := interop.VerifyDkimpy(ctx, msg, e.dnsAddr)
	if err != nil {
		t.Fatalf("dkimpy: %v", err)
	}
	var failed []sigID
	for _, r := range res {
		if !r.OK && !strings.Contains(r.Error, "body hash") {
			failed = append(failed, sigID(r.Domain+"/"+r.Selector+"/"+r.Algorithm))
		} else {
			t.Errorf("dkimpy: %s, want a failed signature with the body hash right", r)
		}
	}
	if !sameSigs(failed, wantOurSigs) {
		t.Errorf("dkimpy failed %v on the header, want %v", failed, wantOurSigs)
	}
	ores, err := interop.VerifyOpenDKIMEach(ctx, msg, e.dnsAddr)
	if err != nil {
		t.Fatalf("opendkim: %v", err)
	}
	failed = nil
	for _, r := range ores {
		if r.Result == "fail" && r.Reason == "signature verification failed" {
			failed = append(failed, sigID(r.Domain+"/"+r.Selector+"/"+r.Algorithm))
		} else {
			t.Errorf("opendkim: %s, want fail (signature verification failed)", r)
		}
	}
	if !sameSigs(failed, wantOurSigs) {
		t.Errorf("opendkim failed %v on the header, want %v", failed, wantOurSigs)
	}
}

// cutField splits the first header field (its line and continuation lines)
// off msg and returns its name and the rest.
func cutField(msg []byte) (string, []byte) {
	name, _, _ := bytes.Cut(msg, []byte(":"))
	for i := 0; ; {
		j := bytes.Index(msg[i:], []byte("\r\n"))
		if j < 0 {
			return string(name), nil
		}
		i += j + 2
		if i >= len(msg) || (msg[i] != ' ' && msg[i] != '\t') {
			return string(name), msg[i:]
		}
	}
}

// lineDiff shows the first lines where want and got differ, quoted (after
// a line added or removed, every later line differs).
func lineDiff(want, got []byte) string {
	wl := strings.SplitAfter(string(want), "\r\n")
	gl := strings.SplitAfter(string(got), "\r\n")
	var b strings.Builder
	shown := 0
	for i := 0; i < len(wl) || i < len(gl); i++ {
		var w, g string
		if i < len(wl) {
			w = wl[i]
		}
		if i < len(gl) {
			g = gl[i]
		}
		if w == g {
			continue
		}
		fmt.Fprintf(&b, "line %d: want %q\n         got  %q\n", i+1, w, g)
		if shown++; shown == 6 {
			b.WriteString("...\n")
			break
		}
	}
	return b.String()
}
