package miltertest

import (
	"encoding/binary"
	"io"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/emersion/go-milter"
)

// rawMilter is a protocol-level fake milter that answers option
// negotiation with version 6 (go-milter's server only speaks version 2)
// and records every command it receives.
type rawMilter struct {
	proto milter.OptProtocol
	mu    sync.Mutex
	log   []string // command codes, macros as "D<code>"
	done  chan struct{}
}

func (r *rawMilter) serve(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	r.done = make(chan struct{})
	go func() {
		defer close(r.done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		send := func(code byte, data []byte) {
			buf := make([]byte, 5, 5+len(data))
			binary.BigEndian.PutUint32(buf, uint32(len(data)+1))
			buf[4] = code
			c.Write(append(buf, data...))
		}
		for {
			var hdr [4]byte
			if _, err := io.ReadFull(c, hdr[:]); err != nil {
				return
			}
			pkt := make([]byte, binary.BigEndian.Uint32(hdr[:]))
			if _, err := io.ReadFull(c, pkt); err != nil {
				return
			}
			code := pkt[0]
			entry := string(code)
			if code == 'D' {
				entry += string(pkt[1])
			}
			r.mu.Lock()
			r.log = append(r.log, entry)
			r.mu.Unlock()
			noReply := map[byte]milter.OptProtocol{
				'C': milter.OptNoConnReply, 'H': milter.OptNoHeloReply, 'M': milter.OptNoMailReply,
				'R': milter.OptNoRcptReply, 'T': milter.OptNoDataReply, 'L': milter.OptNoHeaderReply,
				'N': milter.OptNoEOHReply, 'B': milter.OptNoBodyReply,
			}
			switch code {
			case 'O':
				var d [12]byte
				binary.BigEndian.PutUint32(d[0:], 6)
				binary.BigEndian.PutUint32(d[4:], uint32(milter.OptAddHeader))
				binary.BigEndian.PutUint32(d[8:], uint32(r.proto))
				send('O', d[:])
			case 'C', 'H', 'M', 'R', 'T', 'L', 'N', 'B':
				if r.proto&noReply[code] == 0 {
					send('c', nil)
				}
			case 'E':
				send('h', []byte("X-Raw\x00 v6\x00"))
				send('a', nil)
			case 'Q':
				return
			}
		}
	}()
	return ln.Addr().String()
}

func TestVersion6Sequence(t *testing.T) {
	for _, tc := range []struct {
		name  string
		proto milter.OptProtocol
		want  string
	}{
		{"all events", 0,
			"O DC C DH H DM M DR R DT T DL L DL L DN N DB B DE E A A Q"},
		{"no data, no helo, no header replies", milter.OptNoData | milter.OptNoHelo | milter.OptNoHeaderReply | milter.OptHeaderLeadingSpace,
			"O DC C DH DM M DR R DT DL L DL L DN N DB B DE E A A Q"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &rawMilter{proto: tc.proto}
			addr := r.serve(t)
			res, err := Run(ctx(t), "tcp", addr, Transaction{
				ClientIP: "192.0.2.1", Helo: "h", MailFrom: "a@example.com", RcptTo: []string{"b@example.org"},
				QueueID: "Q", LeadingSpace: true,
			}, []byte("A: 1\r\nB: 2\r\n\r\nbody\r\n"))
			if err != nil {
				t.Fatal(err)
			}
			<-r.done
			if got := strings.Join(r.log, " "); got != tc.want {
				t.Errorf("commands\n got %s\nwant %s", got, tc.want)
			}
			// SMFIR_ADDHEADER appends; without SMFIP_HDR_LEADSPC Postfix
			// adds a space of its own after the colon.
			want := "A: 1\r\nB: 2\r\nX-Raw: v6\r\n\r\nbody\r\n"
			if tc.proto&milter.OptHeaderLeadingSpace == 0 {
				want = "A: 1\r\nB: 2\r\nX-Raw:  v6\r\n\r\nbody\r\n"
			}
			if string(res.Message) != want {
				t.Errorf("message %q, want %q", res.Message, want)
			}
		})
	}
}
