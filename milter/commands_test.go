package milter

import (
	"bytes"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"
)

func TestParseConnect(t *testing.T) {
	cases := []struct {
		name       string
		data       string
		host, fam  string
		port       uint16
		addr       string
		short, bad bool
	}{
		{"tcp4", "mx.example\x004\x00\x19192.0.2.1\x00", "mx.example", "tcp4", 25, "192.0.2.1", false, false},
		{"tcp6", "mx.example\x006\x01\xbb2001:db8::1\x00", "mx.example", "tcp6", 443, "2001:db8::1", false, false},
		{"unix", "localhost\x00L/run/x.sock\x00", "localhost", "unix", 0, "", false, false},
		{"unknown family", "h\x00U", "h", "unknown", 0, "", false, false},
		{"family go-milter does not name", "h\x00Z1.2.3.4\x00", "h", "", 0, "1.2.3.4", false, false},
		{"tcp4 without port", "h\x004\x01", "h", "", 0, "", true, false},
		{"no NUL after host", "host-only", "", "", 0, "", false, true},
		{"no family", "h\x00", "", "", 0, "", false, true},
		{"address without NUL", "h\x004\x00\x19192.0.2.9", "h", "tcp4", 25, "192.0.2.9", false, false},
		{"address that is not an IP", "h\x004\x00\x19[nonsense]\x00", "h", "tcp4", 25, "", false, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			host, fam, port, addr, short, err := parseConnect([]byte(c.data))
			if c.bad {
				if !errors.Is(err, errProtocol) {
					t.Fatalf("err = %v, want a protocol error", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := ""
			if addr != nil {
				got = addr.String()
			}
			if host != c.host || fam != c.fam || port != c.port || got != c.addr || short != c.short {
				t.Fatalf("got %q %q %d %q short=%v, want %q %q %d %q short=%v", host, fam, port, got, short, c.host, c.fam, c.port, c.addr, c.short)
			}
		})
	}
}

// TestConnModifierEncoding checks the replies against the encoding of
// go-milter's Modifier (which its client decodes in the milter tests):
// index, name NUL, value with LF line ends NUL.
func TestConnModifierEncoding(t *testing.T) {
	ours, theirs := net.Pipe()
	defer ours.Close()
	defer theirs.Close()
	c := &negotiatingConn{Conn: ours, srv: &Server{}}
	m := connModifier{c}
	go func() {
		m.InsertHeader(0, "DKIM-Signature", " v=1; a=rsa-sha256;\r\n\tb=abc")
		m.ChangeHeader(2, "Authentication-Results", "")
		m.Quarantine("held")
	}()
	want := [][]byte{
		append([]byte{0, 0, 0, 47, 'i', 0, 0, 0, 0}, "DKIM-Signature\x00 v=1; a=rsa-sha256;\n\tb=abc\x00"...),
		append([]byte{0, 0, 0, 29, 'm', 0, 0, 0, 2}, "Authentication-Results\x00\x00"...),
		append([]byte{0, 0, 0, 6, 'q'}, "held\x00"...),
	}
	theirs.SetReadDeadline(time.Now().Add(time.Minute))
	for i, w := range want {
		got := make([]byte, len(w))
		if _, err := io.ReadFull(theirs, got); err != nil {
			t.Fatalf("reply %d: %v", i, err)
		}
		if !bytes.Equal(got, w) {
			t.Errorf("reply %d = %q, want %q", i, got, w)
		}
	}
}

// TestMacrosOfTheLastStage checks that a command sees the macros sent for
// its own stage only, as with go-milter, which replaced its macro map with
// every macro command.
func TestMacrosOfTheLastStage(t *testing.T) {
	ss := &session{}
	ss.command(byte(gomilter.CodeMacro), []byte("C{daemon_name}\x00ORIGINATING\x00j\x00mx\x00"))
	if got := ss.macro("{daemon_name}"); got != "ORIGINATING" {
		t.Fatalf("daemon_name = %q", got)
	}
	ss.command(byte(gomilter.CodeMacro), []byte("Mi\x00ABC123\x00{auth_authen}\x00"))
	if got := ss.macro("{daemon_name}"); got != "" {
		t.Errorf("daemon_name after the MAIL stage's macros = %q, want empty", got)
	}
	if got := ss.macro("i"); got != "ABC123" {
		t.Errorf("i = %q", got)
	}
	// An odd count: the last name has an empty value, as with go-milter.
	if got := ss.macro("{auth_authen}"); got != "" {
		t.Errorf("auth_authen = %q", got)
	}
}
