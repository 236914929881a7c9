package miltertest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/textproto"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-milter"
)

// recorder collects what a test milter saw, across sessions.
type recorder struct {
	mu       sync.Mutex
	connects int
	headers  [][2]string
	chunks   [][]byte
	macros   map[string]map[string]string // stage → macros seen there
	mods     func(m *milter.Modifier) error
	bodyResp milter.Response
	hdrResp  milter.Response // nil: the milter does not answer headers
}

func (r *recorder) saw(stage string, m *milter.Modifier) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.macros == nil {
		r.macros = map[string]map[string]string{}
	}
	cp := map[string]string{}
	for k, v := range m.Macros {
		cp[k] = v
	}
	r.macros[stage] = cp
}

// testMilter is a go-milter server backend that records events and applies
// r.mods at the end of the message.
type testMilter struct {
	milter.NoOpMilter
	r *recorder
}

func (t *testMilter) Connect(host, family string, port uint16, addr net.IP, m *milter.Modifier) (milter.Response, error) {
	t.r.mu.Lock()
	t.r.connects++
	t.r.mu.Unlock()
	t.r.saw("connect", m)
	return milter.RespContinue, nil
}

func (t *testMilter) MailFrom(from string, m *milter.Modifier) (milter.Response, error) {
	t.r.saw("mail", m)
	return milter.RespContinue, nil
}

func (t *testMilter) RcptTo(rcpt string, m *milter.Modifier) (milter.Response, error) {
	t.r.saw("rcpt", m)
	return milter.RespContinue, nil
}

func (t *testMilter) Header(name, value string, m *milter.Modifier) (milter.Response, error) {
	t.r.mu.Lock()
	t.r.headers = append(t.r.headers, [2]string{name, value})
	t.r.mu.Unlock()
	t.r.saw("header", m)
	return t.r.hdrResp, nil
}

func (t *testMilter) Headers(h textproto.MIMEHeader, m *milter.Modifier) (milter.Response, error) {
	t.r.saw("eoh", m)
	return milter.RespContinue, nil
}

func (t *testMilter) BodyChunk(chunk []byte, m *milter.Modifier) (milter.Response, error) {
	t.r.mu.Lock()
	t.r.chunks = append(t.r.chunks, append([]byte(nil), chunk...))
	t.r.mu.Unlock()
	t.r.saw("body", m)
	return milter.RespContinue, nil
}

func (t *testMilter) Body(m *milter.Modifier) (milter.Response, error) {
	t.r.saw("eom", m)
	if t.r.mods != nil {
		if err := t.r.mods(m); err != nil {
			return nil, err
		}
	}
	if t.r.bodyResp != nil {
		return t.r.bodyResp, nil
	}
	return milter.RespAccept, nil
}

// startMilter serves a test milter on a loopback TCP port.
func startMilter(t *testing.T, r *recorder, proto milter.OptProtocol) string {
	t.Helper()
	if r.hdrResp == nil && proto&milter.OptNoHeaderReply == 0 {
		r.hdrResp = milter.RespContinue
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &milter.Server{
		NewMilter: func() milter.Milter { return &testMilter{r: r} },
		Actions:   milter.OptAddHeader | milter.OptChangeHeader | milter.OptAddRcpt | milter.OptRemoveRcpt | milter.OptChangeBody,
		Protocol:  proto,
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

const crlf = "\r\n"

var splitMsg = strings.Join([]string{
	"From: Alice <alice@example.com>",
	"Subject:no-space",
	"Subject:\ttab after colon",
	"Subject:  two spaces ",
	"X-Folded: line one",
	"\tline two",
	"  line three",
	"Cc :  spaced name",
	"X-Empty:",
	"",
	"body",
	"",
}, crlf)

func TestHeaderSplitting(t *testing.T) {
	want := map[bool][][2]string{
		false: {
			{"From", "Alice <alice@example.com>"},
			{"Subject", "no-space"},
			{"Subject", "\ttab after colon"},
			{"Subject", " two spaces "},
			{"X-Folded", "line one\n\tline two\n  line three"},
			{"Cc", " spaced name"},
			{"X-Empty", ""},
		},
		true: {
			{"From", " Alice <alice@example.com>"},
			{"Subject", "no-space"},
			{"Subject", "\ttab after colon"},
			{"Subject", "  two spaces "},
			{"X-Folded", " line one\n\tline two\n  line three"},
			{"Cc", "  spaced name"},
			{"X-Empty", ""},
		},
	}
	for _, lead := range []bool{false, true} {
		t.Run(fmt.Sprint("leadspc=", lead), func(t *testing.T) {
			r := &recorder{}
			var proto milter.OptProtocol
			if lead {
				proto = milter.OptHeaderLeadingSpace
			}
			addr := startMilter(t, r, proto)
			res, err := Run(ctx(t), "tcp", addr, Transaction{ClientIP: "192.0.2.1", MailFrom: "a@example.com", RcptTo: []string{"b@example.org"}, LeadingSpace: lead}, []byte(splitMsg))
			if err != nil {
				t.Fatal(err)
			}
			r.mu.Lock()
			got := r.headers
			r.mu.Unlock()
			if fmt.Sprintf("%q", got) != fmt.Sprintf("%q", want[lead]) {
				t.Errorf("milter saw\n%q\nwant\n%q", got, want[lead])
			}
			if fmt.Sprintf("%q", res.HeaderValues) != fmt.Sprintf("%q", want[lead]) {
				t.Errorf("HeaderValues\n%q\nwant\n%q", res.HeaderValues, want[lead])
			}
			if !bytes.Equal(res.Message, []byte(splitMsg)) {
				t.Errorf("unmodified message changed:\n%q\nwant\n%q", res.Message, splitMsg)
			}
		})
	}
}

func TestSplitMessageEdges(t *testing.T) {
	tests := []struct {
		name, in  string
		fields    []string
		separator bool
		body      string
	}{
		{"bare LF", "A: 1\nB: 2\n\nx\ny", []string{"A: 1\r\n", "B: 2\r\n"}, true, "x\r\ny\r\n"},
		{"header only, no blank line", "A: 1\r\nB: 2\r\n", []string{"A: 1\r\n", "B: 2\r\n"}, false, ""},
		{"empty body", "A: 1\r\n\r\n", []string{"A: 1\r\n"}, true, ""},
		{"no final CRLF", "A: 1\r\n\r\nlast", []string{"A: 1\r\n"}, true, "last\r\n"},
		{"non-header line ends header", "A: 1\r\nnot a header\r\nmore\r\n", []string{"A: 1\r\n"}, false, "not a header\r\nmore\r\n"},
		{"trailing blank lines kept", "A: 1\r\n\r\nx\r\n\r\n\r\n", []string{"A: 1\r\n"}, true, "x\r\n\r\n\r\n"},
		{"lone CR kept", "A: 1\r\n\r\na\rb\r\n", []string{"A: 1\r\n"}, true, "a\rb\r\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := SplitMessage([]byte(tc.in), false)
			var got []string
			for _, f := range m.Fields {
				got = append(got, string(f.Raw))
			}
			if fmt.Sprintf("%q", got) != fmt.Sprintf("%q", tc.fields) || m.Separator != tc.separator || string(m.Body) != tc.body {
				t.Errorf("got %q sep=%v body=%q; want %q sep=%v body=%q", got, m.Separator, m.Body, tc.fields, tc.separator, tc.body)
			}
		})
	}
	raw := "A: 1\n\nno final newline"
	if m := SplitMessage([]byte(raw), true); string(m.Body) != "no final newline" || string(m.Fields[0].Raw) != "A: 1\n" {
		t.Errorf("raw mode changed bytes: %q %q", m.Fields[0].Raw, m.Body)
	}
}

func TestChunks(t *testing.T) {
	body := strings.Repeat(strings.Repeat("x", 98)+crlf, 1500) // 150000 bytes
	msg := "From: a@example.com" + crlf + crlf + body
	for _, tc := range []struct {
		size int
		want []int
	}{
		{0, []int{65535, 65535, 18930}},
		{1000, nil},
	} {
		r := &recorder{}
		addr := startMilter(t, r, 0)
		res, err := Run(ctx(t), "tcp", addr, Transaction{ChunkSize: tc.size, RcptTo: []string{"b@example.org"}}, []byte(msg))
		if err != nil {
			t.Fatal(err)
		}
		if !res.Accepted() {
			t.Fatalf("not accepted: %+v", res.Action)
		}
		var sizes []int
		var all []byte
		for _, c := range r.chunks {
			sizes = append(sizes, len(c))
			all = append(all, c...)
		}
		if string(all) != body {
			t.Errorf("size %d: body changed in transit", tc.size)
		}
		if tc.want != nil && fmt.Sprint(sizes) != fmt.Sprint(tc.want) {
			t.Errorf("chunk sizes %v, want %v", sizes, tc.want)
		}
		for i, n := range sizes[:len(sizes)-1] {
			want := tc.size
			if want == 0 {
				want = MaxChunk
			}
			if n != want {
				t.Errorf("chunk %d has %d bytes, want %d", i, n, want)
			}
		}
	}
}

func TestMacros(t *testing.T) {
	r := &recorder{}
	addr := startMilter(t, r, 0)
	tx := Transaction{
		ClientIP: "192.0.2.7", ClientPort: 4321, Helo: "client.example",
		MailFrom: "user@example.com", RcptTo: []string{"b@example.org"},
		QueueID: "4Xk2abc", DaemonName: "ORIGINATING", AuthType: "PLAIN", AuthAuthen: "user",
	}
	if _, err := Run(ctx(t), "tcp", addr, tx, []byte("From: a@example.com\r\n\r\nhi\r\n")); err != nil {
		t.Fatal(err)
	}
	want := map[string]map[string]string{
		"connect": {"j": "mx.example.com", "{daemon_name}": "ORIGINATING", "{daemon_addr}": "127.0.0.1", "v": "Postfix 3.7.11", "_": "unknown [192.0.2.7]"},
		"mail":    {"{mail_addr}": "user@example.com", "{auth_type}": "PLAIN", "{auth_authen}": "user"},
		"rcpt":    {"{rcpt_addr}": "b@example.org"},
		"header":  {"i": "4Xk2abc"},
		"eoh":     {"i": "4Xk2abc"},
		"body":    {"i": "4Xk2abc"},
		"eom":     {"i": "4Xk2abc"},
	}
	for stage, w := range want {
		if fmt.Sprint(r.macros[stage]) != fmt.Sprint(w) {
			t.Errorf("%s macros %v, want %v", stage, r.macros[stage], w)
		}
	}
}

func TestModifications(t *testing.T) {
	in := strings.Join([]string{
		"From: a@example.com",
		"To: one@example.org",
		"To: two@example.org",
		"Subject: old",
		"",
		"body",
		"",
	}, crlf)
	mods := func(m *milter.Modifier) error {
		for _, err := range []error{
			m.InsertHeader(0, "X-Top", "above received"),
			m.InsertHeader(1, "X-First", "first visible"),
			m.InsertHeader(3, "X-Three", "index three"),
			m.AddHeader("X-Last", "multi\n\tline"),
			m.ChangeHeader(1, "Subject", "new"),
			m.ChangeHeader(2, "to", ""),
			m.ChangeHeader(1, "X-Missing", ""),
			m.ChangeHeader(2, "X-Nope", "appended"),
		} {
			if err != nil {
				return err
			}
		}
		return nil
	}
	// Postfix counts its own Received field and every field inserted so
	// far: X-Top goes above Received (index 0), X-First then lands at
	// index 1, which is now again above Received, and X-Three at index 3
	// just below Received. X-Top now being first, Postfix's "skip the
	// first header" rule for changes skips X-Top, not Received.
	wantWith := strings.Join([]string{
		"X-Top: above received",
		"X-First: first visible",
		"Received: from client by mx",
		"X-Three: index three",
		"From: a@example.com",
		"To: one@example.org",
		"Subject: new",
		"X-Last: multi",
		"\tline",
		"X-Nope: appended",
		"",
		"body",
		"",
	}, crlf)
	wantWithout := strings.Replace(wantWith, "Received: from client by mx"+crlf, "", 1)
	for _, received := range []string{"from client by mx", ""} {
		r := &recorder{mods: mods}
		addr := startMilter(t, r, 0)
		res, err := Run(ctx(t), "tcp", addr, Transaction{RcptTo: []string{"x@example.org"}, Received: received}, []byte(in))
		if err != nil {
			t.Fatal(err)
		}
		want := wantWith
		if received == "" {
			want = wantWithout
		}
		if string(res.Message) != want {
			t.Errorf("received=%q:\n%s\nwant\n%s", received, res.Message, want)
		}
		if len(res.Modifications) != 8 {
			t.Errorf("got %d modifications, want 8", len(res.Modifications))
		}
	}
}

func TestApplyIndexes(t *testing.T) {
	msg := SplitMessage([]byte("A: 1\r\nB: 2\r\nA: 3\r\n\r\n"), false)
	tests := []struct {
		name string
		mods []milter.ModifyAction
		want string
	}{
		{"insert past end appends", []milter.ModifyAction{{Code: milter.ActInsertHeader, HeaderIndex: 99, HeaderName: "Z", HeaderValue: "z"}},
			"A: 1\r\nB: 2\r\nA: 3\r\nZ: z\r\n\r\n"},
		{"change index 0 is 1", []milter.ModifyAction{{Code: milter.ActChangeHeader, HeaderIndex: 0, HeaderName: "a", HeaderValue: "x"}},
			"a: x\r\nB: 2\r\nA: 3\r\n\r\n"},
		{"delete second", []milter.ModifyAction{{Code: milter.ActChangeHeader, HeaderIndex: 2, HeaderName: "A"}},
			"A: 1\r\nB: 2\r\n\r\n"},
		{"insert then change counts inserted", []milter.ModifyAction{
			{Code: milter.ActInsertHeader, HeaderIndex: 1, HeaderName: "A", HeaderValue: "new"},
			{Code: milter.ActChangeHeader, HeaderIndex: 1, HeaderName: "A", HeaderValue: "changed"}},
			"A: changed\r\nA: 1\r\nB: 2\r\nA: 3\r\n\r\n"},
		{"replace body", []milter.ModifyAction{{Code: milter.ActReplBody, Body: []byte("new\nbody")}},
			"A: 1\r\nB: 2\r\nA: 3\r\n\r\nnew\r\nbody\r\n"},
	}
	for _, tc := range tests {
		fields, body := Apply(msg, tc.mods, "", false, false)
		if got := string(Assemble(fields, msg.Separator, body)); got != tc.want {
			t.Errorf("%s: got %q want %q", tc.name, got, tc.want)
		}
	}
	// One insertion at a time, with Postfix's own Received field shown.
	for idx, want := range map[uint32]string{
		0: "X: x\r\nReceived: r\r\nA: 1\r\nB: 2\r\nA: 3\r\n\r\n",
		1: "Received: r\r\nX: x\r\nA: 1\r\nB: 2\r\nA: 3\r\n\r\n",
		2: "Received: r\r\nA: 1\r\nX: x\r\nB: 2\r\nA: 3\r\n\r\n",
	} {
		fields, body := Apply(msg, []milter.ModifyAction{{Code: milter.ActInsertHeader, HeaderIndex: idx, HeaderName: "X", HeaderValue: "x"}}, "r", false, false)
		if got := string(Assemble(fields, msg.Separator, body)); got != want {
			t.Errorf("insert at %d: got %q want %q", idx, got, want)
		}
	}
	fields, body := Apply(msg, []milter.ModifyAction{{Code: milter.ActAddHeader, HeaderName: "X", HeaderValue: " lead"}}, "", true, false)
	if got := string(Assemble(fields, msg.Separator, body)); !strings.Contains(got, "X: lead\r\n") {
		t.Errorf("leading space mode: %q", got)
	}
}

func TestConnReuse(t *testing.T) {
	r := &recorder{mods: func(m *milter.Modifier) error { return m.InsertHeader(1, "X-Seen", "yes") }}
	addr := startMilter(t, r, 0)
	c, err := NewConn(ctx(t), "tcp", addr, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := 0; i < 3; i++ {
		res, err := c.Do(ctx(t), Transaction{Helo: "h", RcptTo: []string{"b@example.org"}, QueueID: fmt.Sprint("Q", i)}, []byte(fmt.Sprintf("Subject: %d\r\n\r\nbody %d\r\n", i, i)))
		if err != nil {
			t.Fatalf("transaction %d: %v", i, err)
		}
		want := fmt.Sprintf("X-Seen: yes\r\nSubject: %d\r\n\r\nbody %d\r\n", i, i)
		if string(res.Message) != want {
			t.Errorf("transaction %d: %q, want %q", i, res.Message, want)
		}
	}
	if r.connects != 1 {
		t.Errorf("milter saw %d connects, want 1", r.connects)
	}
	if got := r.macros["eom"]["i"]; got != "Q2" {
		t.Errorf("last queue ID %q", got)
	}
}

func TestReject(t *testing.T) {
	r := &recorder{bodyResp: milter.RespReject}
	addr := startMilter(t, r, 0)
	res, err := Run(ctx(t), "tcp", addr, Transaction{RcptTo: []string{"b@example.org"}}, []byte("Subject: x\r\n\r\nbody\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	if res.Accepted() || res.Action.Code != milter.ActReject || res.Stage != "eom" {
		t.Errorf("got %+v stage %s accepted %v", res.Action, res.Stage, res.Accepted())
	}
}

// A go-milter server that negotiates SMFIP_NR_HDR but still answers each
// header desynchronises the protocol; the driver must say so rather than
// report a wrong result.
func TestNoHeaderReplyDesync(t *testing.T) {
	r := &recorder{hdrResp: milter.RespContinue}
	addr := startMilter(t, r, milter.OptNoHeaderReply)
	_, err := Run(ctx(t), "tcp", addr, Transaction{RcptTo: []string{"b@example.org"}}, []byte("A: 1\r\nB: 2\r\n\r\nbody\r\n"))
	if !errors.Is(err, ErrStray) {
		t.Fatalf("err = %v, want ErrStray", err)
	}
	// The same milter returning no response from Header is fine.
	r2 := &recorder{}
	addr2 := startMilter(t, r2, milter.OptNoHeaderReply)
	if _, err := Run(ctx(t), "tcp", addr2, Transaction{RcptTo: []string{"b@example.org"}}, []byte("A: 1\r\nB: 2\r\n\r\nbody\r\n")); err != nil {
		t.Fatal(err)
	}
}

func TestContextCancel(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			defer c.Close()
			time.Sleep(5 * time.Second) // never answers
		}
	}()
	c, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err = Run(c, "tcp", ln.Addr().String(), Transaction{}, []byte("A: 1\r\n\r\n"))
	// The context's deadline, not the 10 s read timeout, must end the wait.
	if err == nil || c.Err() == nil || !errors.Is(err, os.ErrDeadlineExceeded) && !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v (context: %v), want the context deadline", err, c.Err())
	}
}
