package contrib_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/authmilter/authmilter/internal/miltertest"
	"github.com/authmilter/authmilter/internal/syncbuf"
	"github.com/authmilter/authmilter/internal/testdns"
)

// clientEnv, when set, makes the test binary a milter client (runClient)
// instead of running the tests; its value is a JSON clientSpec.
const clientEnv = "AUTHMILTER_CONTRIB_TEST_CLIENT"

// clientSpec tells the client process who to become and where to connect.
// It starts as root and does what Postfix's daemons do (master's children
// chdir to the queue directory, then chroot into it if master.cf says so,
// then drop to the mail_owner user), then drives one transaction.
type clientSpec struct {
	Chroot string   // chroot here first (a chrooted smtpd)
	Dir    string   // else change to this folder (an unchrooted smtpd)
	UID    int      // then become this user
	GID    int      // with this primary group
	Groups []int    // and these supplementary groups
	Path   string   // the milter's unix socket, as main.cf names it
	Header []string // message header fields
}

// clientResult is what the client reports on stdout.
type clientResult struct {
	UID, GID   int
	Groups     []int
	Err        string
	Denied     bool // the connection failed with EACCES
	Version    uint32
	Signatures int
	Accepted   bool
}

// runClient is the client process's main.
func runClient(specJSON string) int {
	var spec clientSpec
	res := clientResult{}
	defer func() { json.NewEncoder(os.Stdout).Encode(&res) }()
	fail := func(err error) int {
		res.Err = err.Error()
		res.Denied = errors.Is(err, syscall.EACCES)
		return 0
	}
	if err := json.Unmarshal([]byte(specJSON), &spec); err != nil {
		return fail(err)
	}
	if spec.Chroot != "" {
		if err := syscall.Chdir(spec.Chroot); err != nil {
			return fail(err)
		}
		if err := syscall.Chroot("."); err != nil {
			return fail(fmt.Errorf("chroot %s: %w", spec.Chroot, err))
		}
		if err := syscall.Chdir("/"); err != nil {
			return fail(err)
		}
	} else if spec.Dir != "" {
		if err := syscall.Chdir(spec.Dir); err != nil {
			return fail(err)
		}
	}
	if err := syscall.Setgroups(spec.Groups); err != nil {
		return fail(fmt.Errorf("setgroups: %w", err))
	}
	if err := syscall.Setgid(spec.GID); err != nil {
		return fail(fmt.Errorf("setgid: %w", err))
	}
	if err := syscall.Setuid(spec.UID); err != nil {
		return fail(fmt.Errorf("setuid: %w", err))
	}
	res.UID, res.GID = os.Getuid(), os.Getgid()
	res.Groups, _ = os.Getgroups()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := miltertest.NewConn(ctx, "unix", spec.Path, miltertest.Options{LeadingSpace: true})
	if err != nil {
		return fail(err)
	}
	defer c.Close()
	_, _, res.Version = c.Negotiated()
	// A message submitted with SMTP AUTH from outside outbound.networks.
	tx := miltertest.Transaction{ClientIP: "192.0.2.25", Helo: "laptop.example", MailFrom: "alice@example.com",
		RcptTo: []string{"bob@example.org"}, QueueID: "4SOCKGRP", AuthType: "PLAIN", AuthAuthen: "alice"}
	msg := strings.Join(spec.Header, "\r\n") + "\r\n\r\nHello through the MTA's socket.\r\n"
	r, err := c.Do(ctx, tx, []byte(msg))
	if err != nil {
		return fail(err)
	}
	res.Accepted = r.Accepted()
	res.Signatures = bytes.Count(r.Message, []byte("DKIM-Signature:"))
	return 0
}

// testUser is a user made for the test.
type testUser struct {
	name          string
	uid, gid      int
	groups        []int // all group IDs, as initgroups would set them
	groupName     string
	supplementary string // extra group given at creation
}

// Test accounts: the daemon's user (authmilter), the MTA's user and group
// (postfix), a user who is a member of the MTA's group only as a
// supplementary group, and a local user with nothing to do with mail.
const (
	daemonUser = "amtestd"
	mtaUser    = "amtestmta" // its primary group has the same name
	memberUser = "amtestsup"
	otherUser  = "amtestx"
)

// makeUsers creates the test's system users (removing leftovers of an
// interrupted run first) and removes them when the test ends.
func makeUsers(t *testing.T) map[string]*testUser {
	t.Helper()
	useradd := needTool(t, "useradd", "passwd")
	userdel := needTool(t, "userdel", "passwd")
	groupdel := needTool(t, "groupdel", "passwd")
	users := []*testUser{{name: daemonUser}, {name: mtaUser}, {name: memberUser, supplementary: mtaUser}, {name: otherUser}}
	remove := func() {
		for i := len(users) - 1; i >= 0; i-- {
			name := users[i].name
			if _, err := user.Lookup(name); err == nil {
				if out, err := exec.Command(userdel, name).CombinedOutput(); err != nil {
					t.Errorf("userdel %s: %v %s", name, err, out)
				}
			}
			if _, err := user.LookupGroup(name); err == nil {
				if out, err := exec.Command(groupdel, name).CombinedOutput(); err != nil {
					t.Errorf("groupdel %s: %v %s", name, err, out)
				}
			}
		}
	}
	remove()
	t.Cleanup(remove)
	out := map[string]*testUser{}
	for _, u := range users {
		args := []string{"--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin"}
		if u.supplementary != "" {
			args = append(args, "--groups", u.supplementary)
		}
		if b, err := exec.Command(useradd, append(args, u.name)...).CombinedOutput(); err != nil {
			t.Fatalf("useradd %s: %v %s", u.name, err, b)
		}
		pw, err := user.Lookup(u.name)
		if err != nil {
			t.Fatal(err)
		}
		u.uid, _ = strconv.Atoi(pw.Uid)
		u.gid, _ = strconv.Atoi(pw.Gid)
		u.groupName = u.name
		gids, err := pw.GroupIds()
		if err != nil {
			t.Fatal(err)
		}
		for _, g := range gids {
			n, _ := strconv.Atoi(g)
			u.groups = append(u.groups, n)
		}
		out[u.name] = u
	}
	return out
}

// cred is the credential of a process run as u, with u's groups.
func (u *testUser) cred() *syscall.Credential {
	c := &syscall.Credential{Uid: uint32(u.uid), Gid: uint32(u.gid), Groups: []uint32{}}
	for _, g := range u.groups {
		if g != u.gid {
			c.Groups = append(c.Groups, uint32(g))
		}
	}
	return c
}

// host is a root folder laid out as the contrib files lay out a real host,
// with the daemon running.
type host struct {
	root    string
	at      func(string) string // the folder that stands for a contrib path
	folder  string              // the socket's folder
	sock    string              // the socket
	cfgPath string
	daemon  *exec.Cmd
	logs    *syncbuf.Buffer
	exited  chan error
}

// startHost lays out a root folder as the contrib files do on a real host
// (Postfix's queue directory, the socket folder made by systemd-tmpfiles
// from contrib/authmilter.tmpfiles, the state directory, the config from
// contrib/authmilter.toml), makes and publishes a key as the daemon's user,
// and runs the daemon as that user with its own group only, as the unit
// does. names maps the contrib user and group names to the test's.
func startHost(t *testing.T, l layout, daemon *testUser, names map[string]string) *host {
	t.Helper()
	tmpfilesTool := needTool(t, "systemd-tmpfiles", "systemd")
	mtaGroup, err := user.LookupGroup(names[l.socketGroup])
	if err != nil {
		t.Fatal(err)
	}
	mtaGID, _ := strconv.Atoi(mtaGroup.Gid)

	// The root folder stands for "/": every contrib path P is root+P.
	root, err := os.MkdirTemp("", "authmilter-contrib-root")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	h := &host{root: root, at: func(p string) string { return filepath.Join(root, p) }}
	// Postfix's queue directory: root's, mode 0755.
	if err := os.MkdirAll(h.at(postfixQueueDir), 0o755); err != nil {
		t.Fatal(err)
	}
	// The socket folder, made by systemd-tmpfiles from the contrib line
	// with the test's path and names.
	tmpfiles := filepath.Join(root, "authmilter-tmpfiles.conf")
	line := fmt.Sprintf("d %s %s %s %s -\n", h.at(l.folder.path), l.folder.mode, names[l.folder.user], names[l.folder.group])
	if err := os.WriteFile(tmpfiles, []byte(line), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(tmpfilesTool, "--create", tmpfiles).CombinedOutput(); err != nil {
		t.Fatalf("systemd-tmpfiles --create (%s): %v\n%s", line, err, out)
	}
	h.folder = h.at(l.folder.path)
	checkOwner(t, h.folder, os.ModeDir|os.ModeSetgid|0o750, daemon.uid, mtaGID)
	// The state directory (systemd's StateDirectory=, mode 0700).
	state := h.at(filepath.Dir(l.keysDir))
	if err := os.MkdirAll(filepath.Dir(state), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(state, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(state, daemon.uid, daemon.gid); err != nil {
		t.Fatal(err)
	}

	// The config: contrib/authmilter.toml with the test's paths, group
	// and DNS, and no metrics listener.
	dns := testdns.Start(t)
	var cfg map[string]any
	if _, err := toml.Decode(readContrib(t, "authmilter.toml"), &cfg); err != nil {
		t.Fatal(err)
	}
	cfg["listen"] = []string{"unix:" + h.at(l.socket)}
	cfg["socket_group"] = names[l.socketGroup]
	cfg["dns"].(map[string]any)["servers"] = []string{dns.Addr()}
	cfg["keys"].(map[string]any)["dir"] = h.at(l.keysDir)
	cfg["keys"].(map[string]any)["check"] = "resolver" // one test DNS server answers for every zone
	cfg["metrics"].(map[string]any)["listen"] = ""
	// The reports store where the contrib files put it: in the state
	// directory that systemd-tmpfiles makes.
	cfg["reports"] = map[string]any{"database": h.at("/var/lib/authmilter/reports.db")}
	h.cfgPath = h.at("/etc/authmilter/authmilter.toml")
	os.MkdirAll(filepath.Dir(h.cfgPath), 0o755)
	var buf bytes.Buffer
	if err := toml.NewEncoder(&buf).Encode(cfg); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(h.cfgPath, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}

	// A key, made by the daemon's user as the README says, and published.
	rec := runAs(t, daemon, binary, "keygen", "-config", h.cfgPath, "-d", "example.com", "-s", "sock1", "-format", "value")
	dns.SetTXT("sock1._domainkey.example.com", strings.TrimSpace(rec))
	// ExecStartPre.
	runAs(t, daemon, binary, "check", "-config", h.cfgPath)

	// The daemon, as its user with its own group only (User=, Group=, no
	// SupplementaryGroups=) and systemd's UMask=0077.
	h.logs = &syncbuf.Buffer{}
	cmd := exec.Command(binary, "run", "-config", h.cfgPath)
	cmd.Stdout, cmd.Stderr = h.logs, h.logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(daemon.uid), Gid: uint32(daemon.gid), Groups: []uint32{}}}
	old := syscall.Umask(0o077)
	err = cmd.Start()
	syscall.Umask(old)
	if err != nil {
		t.Fatal(err)
	}
	h.daemon = cmd
	h.exited = make(chan error, 1)
	go func() { h.exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		err := <-h.exited
		h.exited <- err
	})
	h.sock = h.at(l.socket)
	deadline := time.After(15 * time.Second)
	for {
		if fi, err := os.Lstat(h.sock); err == nil && fi.Mode()&os.ModeSocket != 0 {
			break
		}
		select {
		case err := <-h.exited:
			h.exited <- err
			t.Fatalf("the daemon exited (%v) before creating %s:\n%s", err, h.sock, h.logs.String())
		case <-deadline:
			t.Fatalf("the daemon did not create %s:\n%s", h.sock, h.logs.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	if g := procGroups(t, cmd.Process.Pid); g != fmt.Sprintf("Gid:%d Groups:", daemon.gid) {
		t.Errorf("daemon credentials %q, want its own group only", g)
	}
	mode, _ := strconv.ParseUint(l.socketMode, 8, 32)
	checkOwner(t, h.sock, os.ModeSocket|os.FileMode(mode), daemon.uid, mtaGID)
	return h
}

// stop sends SIGTERM and checks for a clean exit that removes the socket.
func (h *host) stop(t *testing.T) {
	t.Helper()
	h.daemon.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-h.exited:
		h.exited <- err
		if err != nil {
			t.Errorf("daemon exit: %v\n%s", err, h.logs.String())
		}
	case <-time.After(40 * time.Second):
		t.Fatalf("the daemon did not stop on SIGTERM:\n%s", h.logs.String())
	}
	if _, err := os.Lstat(h.sock); !os.IsNotExist(err) {
		t.Errorf("the socket is still there after the daemon stopped: %v", err)
	}
}

// TestPostfixReachesSocketOthersDoNot runs the daemon on a contrib host
// (startHost) as its own user, without membership in the MTA's group, and
// connects as Postfix does: chrooted in the queue directory and unchrooted,
// with the relative path of contrib/postfix-main.cf. The MTA's user and a
// member of its group get their mail signed; another local user is refused
// with EACCES, both by the folder and, when the folder is opened, by the
// socket's own mode.
func TestPostfixReachesSocketOthersDoNot(t *testing.T) {
	needRoot(t)
	l := contribLayout(t)
	users := makeUsers(t)
	daemon, mta, member, other := users[daemonUser], users[mtaUser], users[memberUser], users[otherUser]
	h := startHost(t, l, daemon, map[string]string{l.user: daemon.name, l.socketGroup: mta.groupName})
	folder, sock, logs, at := h.folder, h.sock, h.logs, h.at

	header := []string{"From: Alice <alice@example.com>", "To: bob@example.org", "Subject: socket group", "Date: Sun, 6 Dec 2026 10:00:00 +0000", "Message-ID: <sockgrp@example.com>"}
	queue := at(postfixQueueDir)
	for _, c := range []struct {
		name   string
		u      *testUser
		spec   clientSpec
		denied bool
	}{
		{"postfix user, chrooted smtpd", mta, clientSpec{Chroot: queue, Path: l.postfixPath}, false},
		{"postfix user, unchrooted smtpd", mta, clientSpec{Dir: queue, Path: l.postfixPath}, false},
		{"member of the MTA group", member, clientSpec{Path: sock}, false},
		{"other user, chrooted like smtpd", other, clientSpec{Chroot: queue, Path: l.postfixPath}, true},
		{"other user", other, clientSpec{Path: sock}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.spec.Header = header
			r := runClientAs(t, c.u, c.spec)
			if c.denied {
				if !r.Denied || r.Signatures != 0 {
					t.Errorf("user %s (groups %v) was not refused with EACCES: %+v", c.u.name, r.Groups, r)
				}
				return
			}
			if r.Err != "" || !r.Accepted || r.Signatures != 1 || r.Version != 6 {
				t.Errorf("user %s (groups %v) did not get its mail signed over %s: %+v\n%s", c.u.name, r.Groups, c.spec.Path, r, logs.String())
			}
		})
	}

	// Should the folder be opened to everyone, the socket's mode (0660,
	// group of the MTA) still keeps other users out.
	t.Run("other user, folder opened", func(t *testing.T) {
		if err := os.Chmod(folder, os.ModeSetgid|0o755); err != nil {
			t.Fatal(err)
		}
		defer os.Chmod(folder, os.ModeSetgid|0o750)
		r := runClientAs(t, other, clientSpec{Path: sock, Header: header})
		if !r.Denied {
			t.Errorf("user %s reached a socket of mode %s: %+v", other.name, l.socketMode, r)
		}
	})

	h.stop(t)
}

// checkOwner fails unless path has exactly this type and mode, owner and group.
func checkOwner(t *testing.T, path string, mode os.FileMode, uid, gid int) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if fi.Mode() != mode || int(st.Uid) != uid || int(st.Gid) != gid {
		t.Errorf("%s: mode %v owner %d:%d, want %v %d:%d", path, fi.Mode(), st.Uid, st.Gid, mode, uid, gid)
	}
}

// procGroups returns a process's effective group and supplementary groups
// as "Gid:N Groups:a b".
func procGroups(t *testing.T, pid int) string {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var gid, groups string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ":")
		switch k {
		case "Gid":
			gid = strings.Fields(v)[1]
		case "Groups":
			groups = strings.Join(strings.Fields(v), " ")
		}
	}
	return "Gid:" + gid + " Groups:" + groups
}

// runAs runs a command as u and returns its standard output.
func runAs(t *testing.T, u *testUser, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: u.cred()}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	old := syscall.Umask(0o077)
	err := cmd.Run()
	syscall.Umask(old)
	if err != nil {
		t.Fatalf("%s %q as %s: %v\n%s", name, args, u.name, err, stderr.String())
	}
	return stdout.String()
}

// runClientAs re-runs the test binary as a milter client that becomes u.
func runClientAs(t *testing.T, u *testUser, spec clientSpec) clientResult {
	t.Helper()
	spec.UID, spec.GID = u.uid, u.gid
	spec.Groups = u.groups
	b, _ := json.Marshal(spec)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), clientEnv+"="+string(b))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("client as %s: %v\n%s%s", u.name, err, stdout.String(), stderr.String())
	}
	var r clientResult
	if err := json.Unmarshal(stdout.Bytes(), &r); err != nil {
		t.Fatalf("client as %s: %v\n%s%s", u.name, err, stdout.String(), stderr.String())
	}
	if r.UID != u.uid || r.GID != u.gid {
		t.Fatalf("client did not become %s: %+v", u.name, r)
	}
	return r
}
