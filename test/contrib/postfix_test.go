package contrib_test

import (
	"bytes"
	"fmt"
	"net"
	"net/smtp"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestRealPostfixChrootedReachesSocket runs a private Postfix whose smtpd,
// cleanup and pickup are chrooted in its queue directory, as in Debian's
// master.cf, with the lines of contrib/postfix-main.cf as they are, against
// the daemon on a contrib host (startHost) running as its own user with the
// socket group postfix. A message over SMTP and one from the sendmail
// command (cleanup runs non_smtpd_milters) are both signed, and the
// processes that carried them are chrooted.
func TestRealPostfixChrootedReachesSocket(t *testing.T) {
	needRoot(t)
	postfixCmd := needTool(t, "postfix", "postfix")
	sendmailCmd := needTool(t, "sendmail", "postfix")
	pfUser, err := user.Lookup("postfix")
	if err != nil {
		t.Fatalf("%v: install the Debian package postfix", err)
	}
	l := contribLayout(t)
	users := makeUsers(t)
	daemon := users[daemonUser]
	// The real MTA group: the contrib names as they are, but the daemon's.
	h := startHost(t, l, daemon, map[string]string{l.user: daemon.name, l.socketGroup: l.socketGroup})

	queue := h.at(postfixQueueDir)
	etc := h.at("/etc/postfix")
	data := h.at("/var/lib/postfix")
	for _, d := range []string{etc, data} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	uid, _ := strconv.Atoi(pfUser.Uid)
	gid, _ := strconv.Atoi(pfUser.Gid)
	if err := os.Chown(data, uid, gid); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	maillog := filepath.Join(h.root, "maillog")
	maincf := fmt.Sprintf(`compatibility_level = 3.6
queue_directory = %s
data_directory = %s
mail_owner = postfix
setgid_group = postdrop
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
shlib_directory = /usr/lib/postfix
meta_directory = /etc/postfix
maillog_file = %s
maillog_file_prefixes = %s
myhostname = mx.contrib.test
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
default_transport = discard:contrib test
relay_transport = discard:contrib test
smtp_dns_support_level = disabled
smtpd_peername_lookup = no
mynetworks = 127.0.0.1/32
smtpd_relay_restrictions = permit_mynetworks, reject
# contrib/postfix-main.cf:
%s`, queue, data, maillog, h.root, readContrib(t, "postfix-main.cf"))
	// Debian's master.cf services (chroot column y where Debian has it),
	// with the smtp service on a test port.
	mastercf := fmt.Sprintf(`127.0.0.1:%d inet n - y - - smtpd
pickup    unix  n       -       y       60      1       pickup
cleanup   unix  n       -       y       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       y       -       -       trivial-rewrite
bounce    unix  -       -       y       -       0       bounce
defer     unix  -       -       y       -       0       bounce
trace     unix  -       -       y       -       0       bounce
verify    unix  -       -       y       -       1       verify
flush     unix  n       -       y       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
showq     unix  n       -       y       -       -       showq
error     unix  -       -       y       -       -       error
retry     unix  -       -       y       -       -       error
discard   unix  -       -       y       -       -       discard
anvil     unix  -       -       y       -       1       anvil
scache    unix  -       -       y       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
`, port)
	for name, text := range map[string]string{"main.cf": maincf, "master.cf": mastercf} {
		if err := os.WriteFile(filepath.Join(etc, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var pfOut bytes.Buffer
	master := exec.Command(postfixCmd, "-c", etc, "start-fg")
	master.Stdout, master.Stderr = &pfOut, &pfOut
	if err := master.Start(); err != nil {
		t.Fatal(err)
	}
	masterDone := make(chan error, 1)
	go func() { masterDone <- master.Wait() }()
	t.Cleanup(func() {
		exec.Command(postfixCmd, "-c", etc, "stop").Run()
		select {
		case <-masterDone:
		case <-time.After(10 * time.Second):
			master.Process.Kill()
			<-masterDone
		}
	})
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			break
		}
		select {
		case err := <-masterDone:
			t.Fatalf("postfix exited: %v\n%s\n%s", err, pfOut.String(), tail(maillog))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("postfix does not listen on %s:\n%s", addr, tail(maillog))
		}
		time.Sleep(50 * time.Millisecond)
	}

	// Over SMTP, from 127.0.0.1 (outbound).
	msg := "From: Alice <alice@example.com>\r\nTo: bob@example.org\r\nSubject: through chrooted smtpd\r\n\r\nHello.\r\n"
	if err := smtp.SendMail(addr, nil, "alice@example.com", []string{"bob@example.org"}, []byte(msg)); err != nil {
		t.Errorf("SMTP: %v\n%s\n%s", err, tail(maillog), h.logs.String())
	}
	// With the sendmail command: postdrop, pickup, cleanup.
	local := exec.Command(sendmailCmd, "-C", etc, "-i", "-f", "carol@example.com", "dave@example.org")
	local.Stdin = strings.NewReader("From: Carol <carol@example.com>\nTo: dave@example.org\nSubject: through chrooted cleanup\n\nHello.\n")
	if out, err := local.CombinedOutput(); err != nil {
		t.Errorf("sendmail command: %v\n%s", err, out)
	}
	for _, from := range []string{"alice@example.com", "carol@example.com"} {
		re := regexp.MustCompile(`msg=message .*mail_from=` + regexp.QuoteMeta(from) + ` .*signed=example\.com/sock1/rsa-sha256`)
		deadline := time.Now().Add(20 * time.Second)
		for !re.MatchString(h.logs.String()) {
			if time.Now().After(deadline) {
				t.Errorf("authmilter did not sign the message from %s:\n%s\nmaillog:\n%s", from, h.logs.String(), tail(maillog))
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	if b, _ := os.ReadFile(maillog); bytes.Contains(b, []byte("Milter")) {
		t.Errorf("Postfix complained about the milter:\n%s", tail(maillog))
	}
	// The Postfix processes that talked to authmilter are chrooted in the
	// queue directory (they linger for max_idle).
	for _, name := range []string{"smtpd", "cleanup"} {
		if n := chrooted(t, name, queue); n == 0 {
			t.Errorf("no %s process chrooted in %s", name, queue)
		}
	}
	// Postfix did not touch the socket folder.
	checkOwner(t, h.folder, os.ModeDir|os.ModeSetgid|0o750, daemon.uid, gid)
}

// chrooted counts the processes named name whose root is dir.
func chrooted(t *testing.T, name, dir string) int {
	t.Helper()
	procs, _ := filepath.Glob("/proc/[0-9]*")
	n := 0
	for _, p := range procs {
		comm, err := os.ReadFile(filepath.Join(p, "comm"))
		if err != nil || strings.TrimSpace(string(comm)) != name {
			continue
		}
		if root, err := os.Readlink(filepath.Join(p, "root")); err == nil && root == dir {
			n++
		}
	}
	return n
}

// tail returns the end of a log file.
func tail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 30 {
		lines = lines[len(lines)-30:]
	}
	return strings.Join(lines, "\n")
}
