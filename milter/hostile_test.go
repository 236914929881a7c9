package milter

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/authmilter/authmilter/internal/miltertest"
)

// The hostile stream corpus: testdata/hostile/streams/*.stream, one milter
// conversation each with the outcome it must have (the format is in
// testdata/hostile/README.md). After every stream the daemon must have no
// transaction open, no goroutine left behind, and must sign the next honest
// client's message.

// hostileStream is one parsed .stream file.
type hostileStream struct {
	name   string
	config []string
	steps  []streamStep
}

type streamStep struct {
	line int
	verb string // send, expect
	args string
}

func parseStream(t *testing.T, path string) hostileStream {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := hostileStream{name: filepath.Base(path)}
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimRight(line, "\r")
		if strings.TrimSpace(line) == "" || strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		verb, args, _ := strings.Cut(line, " ")
		switch verb {
		case "config":
			s.config = append(s.config, args)
		case "send", "expect":
			s.steps = append(s.steps, streamStep{line: i + 1, verb: verb, args: args})
		default:
			t.Fatalf("%s:%d: unknown verb %q", path, i+1, verb)
		}
	}
	return s
}

// unescape turns \r, \n, \t, \\ and \xHH into bytes.
func unescape(s string) []byte {
	var out []byte
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' || i+1 == len(s) {
			out = append(out, s[i])
			continue
		}
		i++
		switch s[i] {
		case 'r':
			out = append(out, '\r')
		case 'n':
			out = append(out, '\n')
		case 't':
			out = append(out, '\t')
		case 'x':
			if i+3 <= len(s) {
				if b, err := hex.DecodeString(s[i+1 : i+3]); err == nil {
					out = append(out, b...)
					i += 2
					continue
				}
			}
			out = append(out, '\\', 'x')
		default:
			out = append(out, s[i])
		}
	}
	return out
}

// streamPackets turns one "send" line into wire bytes.
func streamPackets(args string) ([]byte, error) {
	cmd, rest, _ := strings.Cut(args, " ")
	u32 := func(v ...uint32) []byte {
		var b []byte
		for _, x := range v {
			b = binary.BigEndian.AppendUint32(b, x)
		}
		return b
	}
	switch cmd {
	case "repeat":
		nStr, inner, _ := strings.Cut(rest, " ")
		n, err := strconv.Atoi(nStr)
		if err != nil {
			return nil, err
		}
		one, err := streamPackets(inner)
		if err != nil {
			return nil, err
		}
		return bytes.Repeat(one, n), nil
	case "optneg":
		return packet('O', u32(6, 0x1ff, 0x1fffff)), nil
	case "optneg-reply-headers": // SMFIP_NR_HDR not offered
		return packet('O', u32(6, 0x1ff, 0x1fffff&^uint32(gomilter.OptNoHeaderReply))), nil
	case "optneg-replies": // no SMFIP_NR_* offered: every command is answered
		return packet('O', u32(6, 0x1ff, 0x1fffff&^uint32(allNoReply))), nil
	case "connect":
		ip := rest
		return packet('C', append(append([]byte("client.example\x004"), 0, 25), []byte(ip+"\x00")...)), nil
	case "helo":
		return packet('H', []byte(rest+"\x00")), nil
	case "macro":
		// macro STAGE name=value ...
		f := strings.Fields(rest)
		data := []byte(f[0])
		for _, kv := range f[1:] {
			k, v, _ := strings.Cut(kv, "=")
			data = append(append(append(data, k...), 0), append([]byte(v), 0)...)
		}
		return packet('D', data), nil
	case "mail":
		return packet('M', []byte(rest+"\x00")), nil
	case "rcpt":
		return packet('R', []byte(rest+"\x00")), nil
	case "header":
		name, value, ok := strings.Cut(rest, ":")
		if !ok {
			return nil, fmt.Errorf("header without colon: %q", rest)
		}
		return packet('L', append(append([]byte(name), 0), append(unescape(value), 0)...)), nil
	case "bigheader":
		// bigheader NAME SIZE: one field whose value is SIZE bytes.
		name, sz, _ := strings.Cut(rest, " ")
		n, err := strconv.Atoi(sz)
		if err != nil {
			return nil, err
		}
		return packet('L', append(append([]byte(name), 0), append(bytes.Repeat([]byte("a"), n), 0)...)), nil
	case "bigname":
		// bigname SIZE: a field whose name is SIZE bytes.
		n, err := strconv.Atoi(rest)
		if err != nil {
			return nil, err
		}
		return packet('L', append(bytes.Repeat([]byte("A"), n), 0, 'x', 0)), nil
	case "bigbody":
		// bigbody SIZE: one body chunk of SIZE bytes.
		n, err := strconv.Atoi(rest)
		if err != nil {
			return nil, err
		}
		return packet('B', bytes.Repeat([]byte("b"), n)), nil
	case "eoh":
		return packet('N', nil), nil
	case "body":
		return packet('B', unescape(rest)), nil
	case "eom":
		return packet('E', nil), nil
	case "abort":
		return packet('A', nil), nil
	case "quit":
		return packet('Q', nil), nil
	case "raw":
		return hex.DecodeString(strings.ReplaceAll(rest, " ", ""))
	}
	return nil, fmt.Errorf("unknown send command %q", cmd)
}

// repliesOwed counts the commands in b that the daemon answers.
// offered is the protocol mask of the stream's OPTNEG: the daemon must
// leave unanswered every command whose SMFIP_NR_* flag is offered.
func repliesOwed(b []byte, offered gomilter.OptProtocol) int {
	n := 0
	for len(b) >= 5 {
		l := int(binary.BigEndian.Uint32(b))
		if l == 0 || 4+l > len(b) {
			break
		}
		code := gomilter.Code(b[4])
		switch code {
		case gomilter.CodeOptNeg:
			n++
		case gomilter.CodeConn, gomilter.CodeHelo, gomilter.CodeMail, gomilter.CodeRcpt,
			gomilter.CodeEOH, gomilter.CodeBody, gomilter.CodeHeader:
			if offered&noReplyOption(code) == 0 {
				n++
			}
		}
		b = b[4+l:]
	}
	return n
}

// offeredProtocol returns the protocol mask of the OPTNEG packets in b,
// or last if there is none.
func offeredProtocol(b []byte, last gomilter.OptProtocol) gomilter.OptProtocol {
	for len(b) >= 5 {
		l := int(binary.BigEndian.Uint32(b))
		if l == 0 || 4+l > len(b) {
			break
		}
		if b[4] == byte(gomilter.CodeOptNeg) && l >= optNegLen {
			last = gomilter.OptProtocol(binary.BigEndian.Uint32(b[4+9 : 4+13]))
		}
		b = b[4+l:]
	}
	return last
}

// streamReply is one reply packet.
type streamReply struct {
	code byte
	data []byte
}

func readReply(c net.Conn, timeout time.Duration) (*streamReply, error) {
	c.SetReadDeadline(time.Now().Add(timeout))
	var hdr [4]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n == 0 || n > 1<<20 {
		return nil, fmt.Errorf("bad reply length %d", n)
	}
	data := make([]byte, n)
	if _, err := io.ReadFull(c, data); err != nil {
		return nil, err
	}
	return &streamReply{code: data[0], data: data[1:]}, nil
}

// runStream plays one stream against e and checks its expectations.
func runStream(t *testing.T, e *env, s hostileStream) {
	c, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	w := bufio.NewWriterSize(c, 64<<10)
	var mods []streamReply // modifications seen before the last final reply
	// owed counts the replies the daemon owes for commands sent and not
	// yet read: OPTNEG, and connect, HELO, MAIL, RCPT, header fields, EOH
	// and body chunks unless their SMFIP_NR_* flag was negotiated.
	owed := 0
	var offered gomilter.OptProtocol
	readOwed := func(where string) {
		for ; owed > 0; owed-- {
			r, err := readReply(c, 30*time.Second)
			if err != nil {
				t.Fatalf("%s: reading the %d replies owed: %v", where, owed, err)
			}
			if r.code != 'c' && r.code != 'O' {
				t.Fatalf("%s: reply %q %q where continue was owed", where, r.code, r.data)
			}
		}
	}
	// A stream may send more than the daemon reads (it stops reading once
	// it closes the connection): writes are bounded by a deadline.
	flush := func() error {
		c.SetWriteDeadline(time.Now().Add(30 * time.Second))
		return w.Flush()
	}
	for _, st := range s.steps {
		where := fmt.Sprintf("%s:%d", s.name, st.line)
		if st.verb == "send" {
			b, err := streamPackets(st.args)
			if err != nil {
				t.Fatalf("%s: %v", where, err)
			}
			w.Write(b)
			offered = offeredProtocol(b, offered)
			owed += repliesOwed(b, offered)
			continue
		}
		// Expectations read what the daemon sent since the last one.
		if err := flush(); err != nil && !strings.HasPrefix(st.args, "closed") {
			t.Fatalf("%s: write: %v", where, err)
		}
		kind, rest, _ := strings.Cut(st.args, " ")
		switch kind {
		case "reply":
			// reply CODE [TEXT-PREFIX]: the next reply.
			owed = max(owed-1, 0)
			r, err := readReply(c, 15*time.Second)
			if err != nil {
				t.Fatalf("%s: want reply %s: %v", where, rest, err)
			}
			code, text, _ := strings.Cut(rest, " ")
			if string(r.code) != code || !bytes.HasPrefix(r.data, []byte(text)) {
				t.Fatalf("%s: reply %q %q, want %q %q", where, r.code, r.data, code, text)
			}
		case "final":
			// final CODE [TEXT-PREFIX]: the replies owed, modifications,
			// then this reply.
			readOwed(where)
			mods = mods[:0]
			for {
				r, err := readReply(c, 30*time.Second)
				if err != nil {
					t.Fatalf("%s: want final %s: %v", where, rest, err)
				}
				if strings.ContainsRune("hmiq+-e", rune(r.code)) {
					mods = append(mods, *r)
					continue
				}
				code, text, _ := strings.Cut(rest, " ")
				if string(r.code) != code || !bytes.HasPrefix(r.data, []byte(text)) {
					t.Fatalf("%s: final reply %q %q, want %q %q", where, r.code, r.data, code, text)
				}
				break
			}
		case "insert", "no-insert":
			// insert NAME SUBSTRING: a field NAME was inserted whose value
			// contains SUBSTRING; no-insert NAME: none was.
			name, sub, _ := strings.Cut(rest, " ")
			found := false
			for _, m := range mods {
				if m.code != 'i' || len(m.data) < 4 {
					continue
				}
				parts := bytes.Split(m.data[4:], []byte{0})
				if len(parts) >= 2 && strings.EqualFold(string(parts[0]), name) && bytes.Contains(parts[1], []byte(sub)) {
					found = true
				}
			}
			if found != (kind == "insert") {
				t.Fatalf("%s: %s %s %q: modifications %q", where, kind, name, sub, mods)
			}
		case "delete":
			// delete NAME N1,N2,...: exactly these occurrences were deleted.
			name, list, _ := strings.Cut(rest, " ")
			var got []string
			for _, m := range mods {
				if m.code != 'm' || len(m.data) < 4 {
					continue
				}
				parts := bytes.Split(m.data[4:], []byte{0})
				if len(parts) >= 2 && strings.EqualFold(string(parts[0]), name) && len(parts[1]) == 0 {
					got = append(got, strconv.Itoa(int(binary.BigEndian.Uint32(m.data[:4]))))
				}
			}
			// Deletions are sent from the last to the first.
			for i, j := 0, len(got)-1; i < j; i, j = i+1, j-1 {
				got[i], got[j] = got[j], got[i]
			}
			if want := list; strings.Join(got, ",") != want {
				t.Fatalf("%s: deleted %s %v, want %s", where, name, got, want)
			}
		case "silence":
			// Nothing arrives for a moment beyond the replies owed (no
			// unsolicited reply).
			readOwed(where)
			c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			var b [1]byte
			n, err := c.Read(b[:])
			if n > 0 {
				t.Fatalf("%s: unexpected byte %q from the daemon", where, b[:n])
			}
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				t.Fatalf("%s: want silence, got %v", where, err)
			}
		case "closed":
			// The daemon closes the connection, sending nothing first.
			c.SetReadDeadline(time.Now().Add(30 * time.Second))
			b, err := io.ReadAll(io.LimitReader(c, 1<<20))
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("%s: connection still open after 30s", where)
			}
			// Only replies owed may come first: an OPTNEG reply, then
			// continues (the last one perhaps cut short by the close).
			if len(b) >= 5 && b[4] == 'O' && owed > 0 {
				if n := 4 + int(binary.BigEndian.Uint32(b)); n <= len(b) {
					b, owed = b[n:], owed-1
				}
			}
			cont := []byte{0, 0, 0, 1, 'c'}
			for i := range b {
				if owed == 0 || i/5 >= owed || b[i] != cont[i%5] {
					t.Fatalf("%s: %d unexpected bytes before close: %q", where, len(b), b[:min(len(b), 40)])
				}
			}
			owed = 0
		default:
			t.Fatalf("%s: unknown expectation %q", where, kind)
		}
	}
	flush()
}

func TestHostileStreams(t *testing.T) {
	files, err := filepath.Glob("../testdata/hostile/streams/*.stream")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 25 {
		t.Fatalf("only %d hostile streams found", len(files))
	}
	// Streams with the same config share a daemon.
	envs := map[string]*env{}
	for _, f := range files {
		s := parseStream(t, f)
		t.Run(strings.TrimSuffix(s.name, ".stream"), func(t *testing.T) {
			key := strings.Join(s.config, "\n")
			e := envs[key]
			if e == nil {
				e = start(t, key)
				envs[key] = e
				t.Cleanup(func() { delete(envs, key) })
			}
			before := runtime.NumGoroutine()
			runStream(t, e, s)
			checkClean(t, e, before)
		})
	}
}

// checkClean asserts that nothing of a finished conversation is left and
// that the next honest client is served.
func checkClean(t *testing.T, e *env, goroutinesBefore int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for e.srv.inflight.Load() != 0 || e.srv.conns.Load() > int64(len(e.srv.Addrs())) || runtime.NumGoroutine() > goroutinesBefore+5 {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Fatalf("left behind: %d transactions, %d connections, %d goroutines (were %d)\n%s",
				e.srv.inflight.Load(), e.srv.conns.Load(), runtime.NumGoroutine(), goroutinesBefore, buf)
		}
		time.Sleep(10 * time.Millisecond)
	}
	tx := miltertest.Transaction{ClientIP: "127.0.0.1", MailFrom: "a@example.com", RcptTo: []string{"b@example.org"}, QueueID: "HONEST"}
	res, err := miltertest.Run(context.Background(), "tcp", e.addr, tx, []byte("From: a@example.com\r\nSubject: after\r\n\r\nbody\r\n"))
	if err != nil {
		t.Fatalf("next honest client: %v", err)
	}
	if n := bytes.Count(res.Message, []byte("DKIM-Signature:")); n != 2 {
		t.Fatalf("next honest client: %d signatures, want 2", n)
	}
}

// TestHostileMessages drives the real milter with every message of the
// hostile corpus (testdata/hostile/*.eml, format in its README) and checks
// the Authentication-Results we add against the case's .expect file.
func TestHostileMessages(t *testing.T) {
	files, err := filepath.Glob("../testdata/hostile/*.eml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no hostile messages found")
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".eml")
		t.Run(name, func(t *testing.T) {
			raw, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			exp, err := os.ReadFile(strings.TrimSuffix(f, ".eml") + ".expect")
			if err != nil {
				t.Fatal(err)
			}
			e := start(t, "")
			envelope := map[string]string{"ip": "198.51.100.7", "helo": "client.example", "mailfrom": "x@example.org"}
			var must, mustNot []string
			for _, line := range strings.Split(string(exp), "\n") {
				if strings.HasPrefix(line, "#") || strings.TrimSpace(line) == "" {
					continue
				}
				k, v, _ := strings.Cut(line, ":")
				v = strings.TrimSpace(v)
				switch k {
				case "must":
					must = append(must, v)
				case "mustnot":
					mustNot = append(mustNot, v)
				case "dns":
					zone, err := os.ReadFile(filepath.Join(filepath.Dir(f), v))
					if err != nil {
						t.Fatal(err)
					}
					e.dns.AddZoneText(t, ".", "$TTL 300\n"+string(zone))
				case "ip", "helo", "mailfrom":
					envelope[k] = v
				default:
					t.Fatalf("%s.expect: unknown key %q", name, k)
				}
			}
			var stream []byte
			add := func(cmd string) {
				b, err := streamPackets(cmd)
				if err != nil {
					t.Fatal(err)
				}
				stream = append(stream, b...)
			}
			add("optneg")
			add("connect " + envelope["ip"])
			add("helo " + envelope["helo"])
			add("mail <" + envelope["mailfrom"] + ">")
			add("rcpt <postmaster@test.example>")
			header, body, _ := strings.Cut(string(raw), "\n\n")
			for _, field := range splitFields(header) {
				n, v, ok := strings.Cut(field, ":")
				if !ok {
					t.Fatalf("header line without a colon: %q", field)
				}
				stream = append(stream, packet('L', []byte(n+"\x00"+v+"\x00"))...)
			}
			add("eoh")
			stream = append(stream, packet('B', []byte(strings.ReplaceAll(body, "\n", "\r\n")))...)
			add("eom")
			c, err := net.Dial("tcp", e.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			go c.Write(stream)
			var ar string
			for {
				r, err := readReply(c, 30*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				if r.code == 'i' {
					parts := bytes.Split(r.data[4:], []byte{0})
					if strings.EqualFold(string(parts[0]), "Authentication-Results") {
						ar = strings.ReplaceAll(string(parts[1]), "\n\t", " ")
					}
				}
				if r.code == 'c' || r.code == 'O' || r.code == 'h' || r.code == 'i' || r.code == 'm' {
					if r.code == 'c' && ar != "" {
						break
					}
					continue
				}
				t.Fatalf("final reply %q %q", r.code, r.data)
			}
			for _, m := range must {
				if !strings.Contains(ar, m) {
					t.Errorf("Authentication-Results lacks %q:\n%s", m, ar)
				}
			}
			for _, m := range mustNot {
				if strings.Contains(ar, m) {
					t.Errorf("Authentication-Results has %q:\n%s", m, ar)
				}
			}
		})
	}
}

// splitFields splits a header (LF line ends) into fields the way an MTA
// does: a field runs to a line end not followed by a space or a tab. Names
// are kept as they are, white space included.
func splitFields(header string) []string {
	var fields []string
	for _, line := range strings.Split(header, "\n") {
		if len(fields) > 0 && (strings.HasPrefix(line, " ") || strings.HasPrefix(line, "\t")) {
			fields[len(fields)-1] += "\n" + line
			continue
		}
		fields = append(fields, line)
	}
	return fields
}
