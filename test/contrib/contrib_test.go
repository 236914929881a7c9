// Package contrib_test checks the files in contrib/ as they are shipped: that
// they agree with each other (socket path, folder, user and group), that the
// systemd unit verifies, that make install puts them in place, that the
// Sendmail snippet adds a milter without touching Sendmail's daemons, and
// (socketgroup_test.go) that the daemon, run as its own user with the
// contrib layout, can be reached by the MTA's group and by no one else.
//
// The tests run as root (they create users) and need systemd's tools
// (systemd-analyze, systemd-tmpfiles), passwd (useradd), make, m4 and the
// Sendmail tree that test/e2e/install-deps.sh unpacks. A missing tool fails
// the test with the package to install; nothing is skipped.
package contrib_test

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"

	"github.com/authmilter/authmilter/internal/testbin"
)

const contribDir = "../../contrib"

// binary is the authmilter binary built for these tests.
var binary string

func TestMain(m *testing.M) {
	// socketgroup_test.go re-runs this test binary as an MTA-side milter
	// client under another user.
	if spec := os.Getenv(clientEnv); spec != "" {
		os.Exit(runClient(spec))
	}
	testbin.Main(m, &binary)
}

// needTool returns the path of a command (on PATH or in /usr/sbin, /sbin,
// which a root PATH may lack) and fails the test, naming its Debian
// package, if it is missing.
func needTool(t *testing.T, tool, pkg string) string {
	t.Helper()
	if p, err := exec.LookPath(tool); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/sbin"} {
		p := filepath.Join(dir, tool)
		if fi, err := os.Stat(p); err == nil && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	t.Fatalf("%s is not installed: install the Debian package %s (apt-get install %s)", tool, pkg, pkg)
	return ""
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatalf("this test creates users and runs the daemon and the MTA side as them: run it as root")
	}
}

func readContrib(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(contribDir, name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// unitFile is a systemd unit: every key of every section, in order.
type unitFile map[string][]string // "Section.Key" -> values

func parseUnit(t *testing.T, text string) unitFile {
	t.Helper()
	u := unitFile{}
	section := ""
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		if strings.HasPrefix(line, "[") {
			section = strings.Trim(line, "[]")
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("unit: bad line %q", line)
		}
		u[section+"."+k] = append(u[section+"."+k], v)
	}
	return u
}

func (u unitFile) one(t *testing.T, key string) string {
	t.Helper()
	if len(u[key]) != 1 {
		t.Fatalf("unit: want exactly one %s, have %q", key, u[key])
	}
	return u[key][0]
}

// tmpfilesLine is one "d" line of a tmpfiles.d file.
type tmpfilesLine struct{ path, mode, user, group string }

func parseTmpfiles(t *testing.T, text string) []tmpfilesLine {
	t.Helper()
	var out []tmpfilesLine
	for _, line := range strings.Split(text, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		if f[0] != "d" || len(f) < 5 {
			t.Fatalf("tmpfiles: unexpected line %q (this test knows \"d\" lines only)", line)
		}
		out = append(out, tmpfilesLine{f[1], f[2], f[3], f[4]})
	}
	return out
}

// contribConfig is the part of contrib/authmilter.toml the layout depends on.
type contribConfig struct {
	Listen      []string `toml:"listen"`
	SocketMode  string   `toml:"socket_mode"`
	SocketGroup string   `toml:"socket_group"`
	Keys        struct {
		Dir string `toml:"dir"`
	} `toml:"keys"`
}

// postfixSetting returns the value of a main.cf setting (not commented out).
func postfixSetting(t *testing.T, maincf, name string) string {
	t.Helper()
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `\s*=\s*(.*)$`)
	m := re.FindAllStringSubmatch(maincf, -1)
	if len(m) != 1 {
		t.Fatalf("postfix-main.cf: want one %s line, have %d", name, len(m))
	}
	return strings.TrimSpace(m[0][1])
}

// postfixQueueDir is Postfix's queue directory, the chroot of Debian's smtpd
// and cleanup; a relative milter pathname is read from it.
const postfixQueueDir = "/var/spool/postfix"

// layout is what the contrib files say about the Postfix socket.
type layout struct {
	socket      string // absolute path of the unix socket
	folder      tmpfilesLine
	socketMode  string
	socketGroup string
	postfixPath string // the milter's path in main.cf (relative to the queue directory)
	keysDir     string
	user        string // the daemon's user (User= of the unit)
}

// contribLayout reads the contrib files and fails unless they agree.
func contribLayout(t *testing.T) layout {
	t.Helper()
	var cfg contribConfig
	if _, err := toml.Decode(readContrib(t, "authmilter.toml"), &cfg); err != nil {
		t.Fatalf("authmilter.toml: %v", err)
	}
	var l layout
	if len(cfg.Listen) != 1 || !strings.HasPrefix(cfg.Listen[0], "unix:") {
		t.Fatalf("authmilter.toml: want one unix listener, have %q", cfg.Listen)
	}
	l.socket = strings.TrimPrefix(cfg.Listen[0], "unix:")
	l.socketMode, l.socketGroup, l.keysDir = cfg.SocketMode, cfg.SocketGroup, cfg.Keys.Dir
	if l.socketMode != "0660" || l.socketGroup != "postfix" {
		t.Errorf("authmilter.toml: socket_mode %q socket_group %q, want 0660 and postfix", l.socketMode, l.socketGroup)
	}

	// The socket's folder is made by tmpfiles.d, inside Postfix's queue
	// directory, owned by the daemon's user and the MTA's group, closed to
	// others, set-group-ID.
	lines := parseTmpfiles(t, readContrib(t, "authmilter.tmpfiles"))
	if len(lines) != 1 {
		t.Fatalf("authmilter.tmpfiles: want one line, have %d", len(lines))
	}
	l.folder = lines[0]
	if filepath.Dir(l.socket) != l.folder.path {
		t.Errorf("the socket %s is not in the folder authmilter.tmpfiles makes (%s)", l.socket, l.folder.path)
	}
	if !strings.HasPrefix(l.folder.path, postfixQueueDir+"/") {
		t.Errorf("the socket folder %s is outside Postfix's queue directory %s: a chrooted smtpd cannot see it", l.folder.path, postfixQueueDir)
	}
	if l.folder.mode != "2750" || l.folder.group != l.socketGroup {
		t.Errorf("authmilter.tmpfiles: folder mode %s group %s, want 2750 and %s", l.folder.mode, l.folder.group, l.socketGroup)
	}

	// The unit runs as the folder's owner, may write the folder, and does
	// not need the MTA's group.
	u := parseUnit(t, readContrib(t, "authmilter.service"))
	l.user = u.one(t, "Service.User")
	if l.folder.user != l.user {
		t.Errorf("authmilter.tmpfiles: folder owner %s, but the unit runs as %s", l.folder.user, l.user)
	}
	if g := u["Service.SupplementaryGroups"]; len(g) != 0 {
		t.Errorf("unit: SupplementaryGroups=%q: the set-group-ID folder gives the socket its group; the daemon needs no membership", g)
	}
	if u.one(t, "Service.ProtectSystem") != "strict" {
		t.Errorf("unit: ProtectSystem is not strict")
	}
	rw := strings.Fields(strings.Join(u["Service.ReadWritePaths"], " "))
	found := false
	for _, p := range rw {
		if strings.TrimPrefix(p, "-") == l.folder.path {
			found = true
		}
	}
	if !found {
		t.Errorf("unit: ReadWritePaths=%q lacks %s: under ProtectSystem=strict the daemon could not create its socket", rw, l.folder.path)
	}
	if u.one(t, "Service.RuntimeDirectory") != "authmilter" || u.one(t, "Service.RuntimeDirectoryMode") != "0750" {
		t.Errorf("unit: RuntimeDirectory %q mode %q, want authmilter 0750 (Sendmail's socket, root only)",
			u["Service.RuntimeDirectory"], u["Service.RuntimeDirectoryMode"])
	}
	if !strings.HasPrefix(l.keysDir, "/var/lib/"+u.one(t, "Service.StateDirectory")+"/") {
		t.Errorf("keys.dir %s is not in the unit's StateDirectory", l.keysDir)
	}

	// sysusers.d makes the user.
	sysusers := readContrib(t, "authmilter.sysusers")
	if !regexp.MustCompile(`(?m)^u\s+` + regexp.QuoteMeta(l.user) + `\s`).MatchString(sysusers) {
		t.Errorf("authmilter.sysusers does not create user %s", l.user)
	}

	// Postfix names the socket relative to its queue directory, for
	// smtpd and for cleanup (non_smtpd_milters).
	maincf := readContrib(t, "postfix-main.cf")
	milter := postfixSetting(t, maincf, "smtpd_milters")
	rel, err := filepath.Rel(postfixQueueDir, l.socket)
	if err != nil || milter != "unix:"+rel {
		t.Errorf("postfix-main.cf: smtpd_milters = %s, want unix:%s (the socket relative to the queue directory)", milter, rel)
	}
	if v := postfixSetting(t, maincf, "non_smtpd_milters"); v != "$smtpd_milters" {
		t.Errorf("postfix-main.cf: non_smtpd_milters = %s, want $smtpd_milters", v)
	}
	l.postfixPath = strings.TrimPrefix(milter, "unix:")
	return l
}

// TestContribFilesAgree checks that the config, the unit, the tmpfiles.d and
// sysusers.d files and the Postfix snippet describe one layout, and that
// systemd accepts the unit.
func TestContribFilesAgree(t *testing.T) {
	contribLayout(t)

	// The Sendmail socket is in the unit's RuntimeDirectory, as the
	// config's comment says.
	mc := readContrib(t, "sendmail.mc")
	m := regexp.MustCompile(`(?m)^INPUT_MAIL_FILTER\(` + "`authmilter', `S=unix:([^,]+),").FindStringSubmatch(mc)
	if m == nil {
		t.Fatalf("sendmail.mc: no INPUT_MAIL_FILTER for authmilter on a unix socket")
	}
	if filepath.Dir(m[1]) != "/run/authmilter" {
		t.Errorf("sendmail.mc: socket %s is not in /run/authmilter (the unit's RuntimeDirectory)", m[1])
	}
	if !strings.Contains(readContrib(t, "authmilter.toml"), `listen = ["unix:`+m[1]+`"]`) {
		t.Errorf("authmilter.toml does not show the Sendmail listener unix:%s", m[1])
	}

	// systemd-analyze verify: syntax, known keys, executable commands. The
	// commands point at the binary built for the test.
	analyze := needTool(t, "systemd-analyze", "systemd")
	dir := t.TempDir()
	unit := strings.ReplaceAll(readContrib(t, "authmilter.service"), "/usr/local/bin/authmilter", binary)
	path := filepath.Join(dir, "authmilter.service")
	if err := os.WriteFile(path, []byte(unit), 0o644); err != nil {
		t.Fatal(err)
	}
	verifyUnit(t, analyze, path)
}

// verifyUnit runs systemd-analyze verify. It exits 0 even for unknown keys,
// so any message about our unit fails the test too (messages about units
// of the host that ours refers to, such as postfix.service, are logged).
func verifyUnit(t *testing.T, analyze, path string) {
	t.Helper()
	var stderr bytes.Buffer
	cmd := exec.Command(analyze, "verify", path)
	cmd.Stderr = &stderr
	err := cmd.Run()
	ours := strings.Contains(stderr.String(), filepath.Base(path)) || strings.Contains(stderr.String(), path)
	if err != nil || ours {
		t.Errorf("systemd-analyze verify %s: %v\n%s", path, err, stderr.String())
	} else if stderr.Len() != 0 {
		t.Logf("systemd-analyze verify %s, about other units:\n%s", path, stderr.String())
	}
}

// TestMakeInstall runs make install into a DESTDIR, twice: the config is
// installed once and then kept.
func TestMakeInstall(t *testing.T) {
	mk := needTool(t, "make", "make")
	dest := t.TempDir()
	install := func() string {
		t.Helper()
		cmd := exec.Command(mk, "-s", "-C", "../..", "install", "DESTDIR="+dest, "PREFIX=/usr", "BIN="+binary)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("make install: %v\n%s", err, out)
		}
		return string(out)
	}
	install()
	want := map[string]os.FileMode{
		"usr/bin/authmilter":                         0o755,
		"etc/authmilter/authmilter.toml":             0o644,
		"etc/systemd/system/authmilter.service":      0o644,
		"etc/sysusers.d/authmilter.conf":             0o644,
		"etc/tmpfiles.d/authmilter.conf":             0o644,
		"usr/share/doc/authmilter/README.md":         0o644,
		"usr/share/doc/authmilter/authmilter.toml":   0o644,
		"usr/share/doc/authmilter/postfix-main.cf":   0o644,
		"usr/share/doc/authmilter/postfix-master.cf": 0o644,
		"usr/share/doc/authmilter/sendmail.mc":       0o644,
	}
	var got []string
	filepath.Walk(dest, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			rel, _ := filepath.Rel(dest, p)
			got = append(got, rel)
			if mode, ok := want[rel]; !ok {
				t.Errorf("make install made an unexpected file %s", rel)
			} else if fi.Mode().Perm() != mode {
				t.Errorf("%s has mode %o, want %o", rel, fi.Mode().Perm(), mode)
			}
		}
		return nil
	})
	if len(got) != len(want) {
		t.Errorf("make install made %q, want %d files", got, len(want))
	}
	for rel, src := range map[string]string{
		"etc/authmilter/authmilter.toml": "authmilter.toml",
		"etc/tmpfiles.d/authmilter.conf": "authmilter.tmpfiles",
		"etc/sysusers.d/authmilter.conf": "authmilter.sysusers",
	} {
		if b, _ := os.ReadFile(filepath.Join(dest, rel)); string(b) != readContrib(t, src) {
			t.Errorf("%s differs from contrib/%s", rel, src)
		}
	}
	// The unit names the installed binary and documentation.
	unit, _ := os.ReadFile(filepath.Join(dest, "etc/systemd/system/authmilter.service"))
	u := parseUnit(t, string(unit))
	if u.one(t, "Service.ExecStart") != "/usr/bin/authmilter run -config /etc/authmilter/authmilter.toml" ||
		u.one(t, "Service.ExecStartPre") != "/usr/bin/authmilter check -config /etc/authmilter/authmilter.toml" ||
		u.one(t, "Unit.Documentation") != "file:///usr/share/doc/authmilter/README.md" {
		t.Errorf("installed unit does not name PREFIX=/usr:\n%s", unit)
	}
	if strings.Contains(string(unit), "/usr/local") {
		t.Errorf("installed unit still names /usr/local:\n%s", unit)
	}
	// It verifies, with its commands pointing at the DESTDIR binary.
	analyze := needTool(t, "systemd-analyze", "systemd")
	check := filepath.Join(t.TempDir(), "authmilter.service")
	os.WriteFile(check, []byte(strings.ReplaceAll(string(unit), "/usr/bin/authmilter", filepath.Join(dest, "usr/bin/authmilter"))), 0o644)
	verifyUnit(t, analyze, check)

	// A second install keeps the administrator's config.
	cfg := filepath.Join(dest, "etc/authmilter/authmilter.toml")
	if err := os.WriteFile(cfg, []byte("# mine\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	out := install()
	if b, _ := os.ReadFile(cfg); string(b) != "# mine\n" {
		t.Errorf("make install overwrote the existing config:\n%s", b)
	}
	if !strings.Contains(out, "kept "+cfg) {
		t.Errorf("make install did not say it kept the config:\n%s", out)
	}
}

// sendmailRoot is the Sendmail tree that test/e2e/install-deps.sh unpacks
// (the packages conflict with postfix).
func sendmailRoot() string {
	if d := os.Getenv("AUTHMILTER_E2E_SENDMAIL"); d != "" {
		return d
	}
	return "/opt/authmilter-e2e/sendmail"
}

// m4cf builds a sendmail.cf from mc text with Sendmail's m4 macros.
func m4cf(t *testing.T, m4, mc string) string {
	t.Helper()
	cfDir := filepath.Join(sendmailRoot(), "usr/share/sendmail/cf")
	if _, err := os.Stat(filepath.Join(cfDir, "m4/cf.m4")); err != nil {
		t.Fatalf("%v: Sendmail's m4 files are not unpacked in %s: run test/e2e/install-deps.sh as root (or set AUTHMILTER_E2E_SENDMAIL)", err, sendmailRoot())
	}
	path := filepath.Join(t.TempDir(), "test.mc")
	if err := os.WriteFile(path, []byte(mc), 0o644); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd := exec.Command(m4, "-D_CF_DIR_="+cfDir+"/", filepath.Join(cfDir, "m4/cf.m4"), path)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil || stderr.Len() != 0 {
		t.Fatalf("m4: %v\n%s\n--- mc:\n%s", err, stderr.String(), mc)
	}
	return string(out)
}

// withSnippet inserts contrib/sendmail.mc before the first MAILER line, as
// its first line says.
func withSnippet(t *testing.T, mc, snippet string) string {
	t.Helper()
	i := regexp.MustCompile(`(?m)^MAILER`).FindStringIndex(mc)
	if i == nil {
		t.Fatal("no MAILER line in the base mc")
	}
	return mc[:i[0]] + snippet + mc[i[0]:]
}

// TestSendmailSnippetKeepsDaemons builds sendmail.cf from Sendmail's own
// defaults and from Debian's stock sendmail.mc, each with and without
// contrib/sendmail.mc, and checks that the snippet adds the milter and its
// macros and leaves the daemons (ports and names) exactly as they were. A
// DAEMON_OPTIONS line in the snippet would drop Sendmail's default MTA
// daemon and bind port 587 a second time next to the default MSA.
func TestSendmailSnippetKeepsDaemons(t *testing.T) {
	m4 := needTool(t, "m4", "m4")
	snippet := readContrib(t, "sendmail.mc")
	if regexp.MustCompile(`(?m)^\s*DAEMON_OPTIONS`).MatchString(snippet) {
		t.Errorf("contrib/sendmail.mc defines a daemon; it must keep Sendmail's own")
	}
	upstream := "OSTYPE(`linux')dnl\nDOMAIN(`generic')dnl\nMAILER(`local')dnl\nMAILER(`smtp')dnl\n"
	debianMC, err := os.ReadFile(filepath.Join(sendmailRoot(), "usr/share/sendmail/cf/debian/sendmail.mc"))
	if err != nil {
		t.Fatalf("%v: run test/e2e/install-deps.sh as root", err)
	}
	// Debian's mc includes cf.m4 and its own m4 files by absolute paths;
	// point them into the unpacked tree (cf.m4 comes from m4cf; Debian's
	// ostype and domain files include autoconf.m4 unless sm_version, which
	// it defines, is defined already).
	cfm4 := "include(`/usr/share/sendmail/cf/m4/cf.m4')dnl\n"
	if !strings.Contains(string(debianMC), cfm4) {
		t.Fatalf("Debian's sendmail.mc has no line %q (test assumption)", cfm4)
	}
	debian := strings.Replace(string(debianMC), cfm4, "include(`"+sendmailRoot()+"/usr/share/sendmail/cf/debian/autoconf.m4')dnl\n", 1)
	// dialup.m4 and provider.m4 are made by sendmailconfig at install,
	// empty unless the administrator fills them.
	debian = regexp.MustCompile("(?m)^include\\(`/etc/mail/m4/(dialup|provider).m4'\\)dnl\n").ReplaceAllString(debian, "")
	for _, base := range []struct {
		name, mc string
		daemons  []string
	}{
		{"sendmail defaults", upstream, []string{"Name=MTA", "Port=587, Name=MSA, M=E"}},
		{"debian stock", debian, []string{"Family=inet,  Name=MTA-v4, Port=smtp, Addr=127.0.0.1", "Family=inet,  Name=MSP-v4, Port=submission, M=Ea, Addr=127.0.0.1"}},
	} {
		t.Run(base.name, func(t *testing.T) {
			plain := m4cf(t, m4, base.mc)
			cf := m4cf(t, m4, withSnippet(t, base.mc, snippet))
			if got := daemonOptions(plain); strings.Join(got, "|") != strings.Join(base.daemons, "|") {
				t.Fatalf("the base config's daemons are %q, want %q (test assumption)", got, base.daemons)
			}
			if got := daemonOptions(cf); strings.Join(got, "|") != strings.Join(base.daemons, "|") {
				t.Errorf("with contrib/sendmail.mc the daemons are %q, want Sendmail's own %q", got, base.daemons)
			}
			for _, want := range []string{
				"\nO InputMailFilters=authmilter\n",
				"\nXauthmilter, S=unix:/run/authmilter/authmilter.sock, F=T, T=C:10s;S:30s;R:30s;E:5m\n",
				"\nO Milter.macros.connect=j, _, {daemon_name}, {if_name}, {if_addr}\n",
				"\nO Milter.macros.envfrom=i, {auth_type}, {auth_authen}, {auth_ssf}, {auth_author}, {mail_mailer}, {mail_host}, {mail_addr}\n",
				"\nO Milter.macros.eom={msg_id}, i\n",
			} {
				if !strings.Contains(cf, want) {
					t.Errorf("sendmail.cf lacks %q", strings.TrimSpace(want))
				}
			}
		})
	}
}

// daemonOptions returns the DaemonPortOptions of a sendmail.cf.
func daemonOptions(cf string) []string {
	var out []string
	for _, m := range regexp.MustCompile(`(?m)^O DaemonPortOptions=(.*)$`).FindAllStringSubmatch(cf, -1) {
		out = append(out, m[1])
	}
	return out
}
