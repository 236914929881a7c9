package cli_test

import (
	"bufio"
	"bytes"
	"context"
	be "encoding/binary"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/authmilter/authmilter/internal/miltertest"
	"github.com/authmilter/authmilter/internal/syncbuf"
)

// rssKiB reads a process's resident set size.
func rssKiB(t *testing.T, pid int) int {
	t.Helper()
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`VmRSS:\s+(\d+) kB`).FindSubmatch(data)
	if m == nil {
		t.Fatalf("no VmRSS in /proc/%d/status", pid)
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

func milterPacket(code byte, data []byte) []byte {
	out := be.BigEndian.AppendUint32(nil, uint32(len(data)+1))
	return append(append(out, code), data...)
}

// TestAttacksFromOutside re-runs issue 8's connection-level attacks against
// the real binary, started with 256 descriptors as `prlimit --nofile=256`
// does: 400 silent connections (descriptor exhaustion ended the daemon),
// 100 connections claiming 1 MiB packets, and 300 header fields of 1 MB in
// one message. The daemon must stay up, within its memory bound, and sign
// the next honest client's message.
func TestAttacksFromOutside(t *testing.T) {
	prlimit, err := exec.LookPath("prlimit")
	if err != nil {
		t.Fatal("prlimit not found: install util-linux (apt-get install util-linux)")
	}
	cfg, _ := setup(t)
	data, _ := os.ReadFile(cfg)
	inet := regexp.MustCompile(`inet:(127\.0\.0\.1:\d+)`).FindSubmatch(data)[1]
	logs := &syncbuf.Buffer{}
	cmd := exec.Command(prlimit, "--nofile=256:256", "--", binary, "run", "-config", cfg)
	cmd.Stderr = logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	alive := func(stage string) {
		t.Helper()
		select {
		case err := <-exited:
			t.Fatalf("daemon ended %s: %v\n%s", stage, err, logs.String())
		default:
		}
	}
	sock := filepath.Join(filepath.Dir(cfg), "run", "authmilter.sock")
	deadline := time.Now().Add(20 * time.Second)
	for {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon did not listen:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	honest := func(id string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		tx := miltertest.Transaction{ClientIP: "127.0.0.1", MailFrom: "a@example.com", RcptTo: []string{"b@example.org"}, QueueID: id}
		res, err := miltertest.Run(ctx, "unix", sock, tx, []byte("From: a@example.com\r\nSubject: honest\r\n\r\nbody\r\n"))
		if err != nil || strings.Count(string(res.Message), "DKIM-Signature:") != 2 {
			t.Fatalf("honest client %s not signed: %v\n%s", id, err, logs.String())
		}
	}

	// Descriptor exhaustion.
	var silent []net.Conn
	for i := 0; i < 400; i++ {
		c, err := net.DialTimeout("tcp", string(inet), 5*time.Second)
		if err != nil {
			break // the backlog is full: the point is made
		}
		silent = append(silent, c)
	}
	deadline = time.Now().Add(20 * time.Second)
	for !strings.Contains(logs.String(), "accept failed; retrying") {
		if time.Now().After(deadline) {
			t.Fatalf("no accept failure with %d connections open and 256 descriptors:\n%s", len(silent), logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	alive("out of descriptors")
	for _, c := range silent {
		c.Close()
	}
	honest("AFTEREMFILE")
	alive("after descriptor exhaustion")

	pid := cmd.Process.Pid
	before := rssKiB(t, pid)

	// Claimed 1 MiB packets that never arrive.
	var claims []net.Conn
	optneg := milterPacket('O', be.BigEndian.AppendUint32(be.BigEndian.AppendUint32(be.BigEndian.AppendUint32(nil, 6), 0x1ff), 0x1fffff))
	for i := 0; i < 100; i++ {
		c, err := net.Dial("tcp", string(inet))
		if err != nil {
			t.Fatal(err)
		}
		claims = append(claims, c)
		c.Write(optneg)
		c.Write(append(be.BigEndian.AppendUint32(nil, 1<<20), 'B', 'x'))
	}

	// 300 header fields of 1 MB in one inbound message.
	c, err := net.Dial("tcp", string(inet))
	if err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriterSize(c, 1<<20)
	w.Write(optneg)
	w.Write(milterPacket('C', append([]byte("evil\x004\x00\x19"), "198.51.100.7\x00"...)))
	w.Write(milterPacket('M', []byte("<x@example.com>\x00")))
	w.Write(milterPacket('R', []byte("<b@cli.test>\x00")))
	big := milterPacket('L', append([]byte("X-Big\x00"), append(bytes.Repeat([]byte("a"), 1_000_000), 0)...))
	peak := 0
	for i := 0; i < 300; i++ {
		w.Write(big)
		if i%50 == 49 {
			w.Flush()
			peak = max(peak, rssKiB(t, pid))
		}
	}
	w.Write(milterPacket('N', nil))
	w.Write(milterPacket('E', nil))
	w.Flush()
	c.SetReadDeadline(time.Now().Add(60 * time.Second))
	var reply []byte
	buf := make([]byte, 4096)
	for !bytes.Contains(reply, []byte("552 5.3.4")) {
		n, err := c.Read(buf)
		reply = append(reply, buf[:n]...)
		if err != nil {
			t.Fatalf("oversized message: no 552 reply: %v %q", err, reply)
		}
	}
	c.Close()
	peak = max(peak, rssKiB(t, pid))
	t.Logf("RSS %d MiB before, peak %d MiB during 100 claimed packets and 300 MB of header fields", before>>10, peak>>10)
	if peak > before+100<<10 {
		t.Errorf("RSS grew from %d MiB to %d MiB", before>>10, peak>>10)
	}
	for _, c := range claims {
		c.Close()
	}
	alive("after the memory attacks")
	honest("AFTERFLOOD")

	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("daemon exit: %v", err)
		}
	case <-time.After(40 * time.Second):
		t.Fatalf("daemon did not stop:\n%s", logs.String())
	}
}
