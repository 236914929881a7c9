package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// defaultSendmailRoot is where install-deps.sh extracts Debian's
// sendmail-bin, sendmail-base and sendmail-cf (they conflict with postfix
// as installed packages, so they are unpacked, not installed).
const defaultSendmailRoot = "/opt/authmilter-e2e/sendmail"

// sendmailRoot is the extracted package tree: $AUTHMILTER_E2E_SENDMAIL or
// the default.
func sendmailRoot() string {
	if d := os.Getenv("AUTHMILTER_E2E_SENDMAIL"); d != "" {
		return d
	}
	return defaultSendmailRoot
}

// sendmail is the private Sendmail instance.
type sendmail struct {
	dir   string
	cf    string
	p     *proc
	Ports struct {
		Main, Enforce, DownTempfail, DownAccept, Simple, Auth int
	}
}

func (s *sendmail) addr(port int) string { return fmt.Sprintf("127.0.0.1:%d", port) }

var (
	sendmailOnce sync.Once
	sendmailErr  error
	theSendmail  *sendmail
)

// getSendmail starts Sendmail on first use.
func getSendmail(t *testing.T) (*env, *sendmail) {
	t.Helper()
	e := getEnv(t)
	sendmailOnce.Do(func() {
		theSendmail, sendmailErr = e.startSendmail()
	})
	if sendmailErr != nil {
		t.Fatalf("sendmail setup: %v", sendmailErr)
	}
	return e, theSendmail
}

func (e *env) startSendmail() (*sendmail, error) {
	root := sendmailRoot()
	bin := filepath.Join(root, "usr/libexec/sendmail/sendmail")
	cfDir := filepath.Join(root, "usr/share/sendmail/cf")
	for _, f := range []string{bin, filepath.Join(cfDir, "m4/cf.m4"), filepath.Join(root, "etc/mail/helpfile")} {
		if _, err := os.Stat(f); err != nil {
			return nil, fmt.Errorf("%v: Sendmail is not unpacked in %s: run test/e2e/install-deps.sh as root (it runs apt-get download sendmail-bin sendmail-base sendmail-cf and dpkg-deb -x; the packages conflict with postfix, so they are not installed), or set AUTHMILTER_E2E_SENDMAIL to such a tree", err, root)
		}
	}
	if err := needTools(
		[2]string{"m4", "m4"},
		[2]string{"unshare", "util-linux"},
		[2]string{"mount", "mount"},
		[2]string{"hostname", "hostname"},
		[2]string{"/usr/sbin/saslpasswd2", "sasl2-bin"},
	); err != nil {
		return nil, err
	}
	// Cyrus SASL's sasldb auxprop plugin (the PLAIN and LOGIN mechanisms
	// come with it).
	if plugins, _ := filepath.Glob("/usr/lib/*/sasl2/libsasldb.so*"); len(plugins) == 0 {
		return nil, fmt.Errorf("Cyrus SASL's sasldb plugin (/usr/lib/*/sasl2/libsasldb.so) is not installed: install the Debian package libsasl2-modules (or run test/e2e/install-deps.sh as root)")
	}
	saslDirs, err := saslConfDirs()
	if err != nil {
		return nil, err
	}
	sm := &sendmail{dir: filepath.Join(e.root, "sendmail")}
	mq := filepath.Join(sm.dir, "mqueue")
	if err := os.MkdirAll(mq, 0o700); err != nil {
		return nil, err
	}
	for _, p := range []*int{&sm.Ports.Main, &sm.Ports.Enforce, &sm.Ports.DownTempfail, &sm.Ports.DownAccept, &sm.Ports.Simple, &sm.Ports.Auth} {
		if *p, err = freePort(); err != nil {
			return nil, err
		}
	}
	helpfile, err := os.ReadFile(filepath.Join(root, "etc/mail/helpfile"))
	if err != nil {
		return nil, err
	}
	dnsIP := strings.TrimSuffix(e.dnsAddr, ":53")
	files := map[string]string{
		// Host lookups from files only; the private /etc/hosts (below) has
		// our name.
		"service.switch": "hosts files\naliases files\n",
		"hosts":          "127.0.0.1 localhost mx.test.example\n",
		// Whatever Sendmail still asks DNS goes to the test's server.
		"resolv.conf": "nameserver " + dnsIP + "\noptions timeout:1 attempts:1\n",
		"helpfile":    string(helpfile),
		"aliases":     "",
		"statistics":  "",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(sm.dir, name), []byte(content), 0o644); err != nil {
			return nil, err
		}
	}
	// SASL: Sendmail.conf in a private directory that is bind-mounted over
	// the library's configuration directories (below), and the users in a
	// private sasldb.
	saslDir := filepath.Join(sm.dir, "sasl2")
	if err := os.MkdirAll(saslDir, 0o755); err != nil {
		return nil, err
	}
	if err := e.render("sendmail/Sendmail.conf", filepath.Join(saslDir, "Sendmail.conf"), map[string]any{"Dir": sm.dir}); err != nil {
		return nil, err
	}
	if err := sm.addSASLUser(saslUser, saslPass); err != nil {
		return nil, err
	}
	mc := filepath.Join(sm.dir, "authmilter.mc")
	err = e.render("sendmail/authmilter.mc", mc, map[string]any{
		"Dir":               sm.dir,
		"Ports":             sm.Ports,
		"SinkIP":            sinkIP,
		"SinkPort":          e.sink.Port(),
		"MilterPort":        e.main.port,
		"EnforceMilterPort": e.enforce.port,
		"DownMilterPort":    e.down.port,
		"SimpleMilterPort":  e.simple.port,
		"SpyPort":           e.spy.port,
		"SpyPlainPort":      e.spyPlain.port,
	})
	if err != nil {
		return nil, err
	}
	sm.cf = filepath.Join(sm.dir, "authmilter.cf")
	m4 := exec.Command("m4", "-D_CF_DIR_="+cfDir+"/", filepath.Join(cfDir, "m4/cf.m4"), mc)
	var stderr strings.Builder
	m4.Stderr = &stderr
	cf, err := m4.Output()
	if err != nil {
		return nil, fmt.Errorf("m4 %s: %v\n%s", mc, err, stderr.String())
	}
	if err := os.WriteFile(sm.cf, cf, 0o644); err != nil {
		return nil, err
	}
	// Sendmail sleeps 60 s at start when the host name has no dot ("My
	// unqualified host name (vm) unknown; sleeping for retry"), so it runs
	// in its own UTS namespace with host name mx.test.example, and in its
	// own mount namespace with private /etc/hosts and /etc/resolv.conf.
	// unshare and sh exec, so the PID we hold is Sendmail's daemon.
	// Sendmail's SASL library reads Sendmail.conf from the first of its
	// configuration directories that has one; the private sasl2/ is
	// mounted over each of them that exists (the system's are not
	// changed).
	mounts := ""
	for _, d := range saslDirs {
		mounts += fmt.Sprintf(" && mount --bind %s %s", saslDir, d)
	}
	script := fmt.Sprintf("hostname mx.test.example && mount --bind %s /etc/hosts && mount --bind %s /etc/resolv.conf%s && exec %s -C %s -bD -X %s",
		filepath.Join(sm.dir, "hosts"), filepath.Join(sm.dir, "resolv.conf"), mounts, bin, sm.cf, filepath.Join(sm.dir, "traffic.log"))
	sm.p, err = startProc("sendmail", filepath.Join(sm.dir, "sendmail.out"), "unshare", "--uts", "--mount", "sh", "-c", script)
	if err != nil {
		return nil, err
	}
	e.onClose(sm.p.stop)
	for _, port := range []int{sm.Ports.Main, sm.Ports.Enforce, sm.Ports.DownTempfail, sm.Ports.DownAccept, sm.Ports.Simple, sm.Ports.Auth} {
		if err := waitPort(sm.addr(port), 20*time.Second, sm.p); err != nil {
			return nil, fmt.Errorf("sendmail: %v", err)
		}
	}
	return sm, nil
}

// traffic returns Sendmail's -X trace (every SMTP line in and out).
func (s *sendmail) traffic() string { return tailFile(filepath.Join(s.dir, "traffic.log"), 60) }

// saslConfPath is Cyrus SASL's configuration search path on Debian 12
// (libsasl2-2; the multiarch directory is the plugin directory, e.g.
// /usr/lib/x86_64-linux-gnu/sasl2): the first directory with
// Sendmail.conf wins.
func saslConfPath() []string {
	multiarch, _ := filepath.Glob("/usr/lib/*-linux-gnu*/sasl2")
	return append(append([]string{"/etc/sasl2", "/etc/sasl"}, multiarch...), "/usr/lib/sasl2")
}

// saslConfDirs returns the directories of saslConfPath to mount the
// private one over: those that exist, except the plugin directory (the
// mechanisms are loaded from it). It fails if none exists, or if the
// plugin directory holds a Sendmail.conf that would be read before ours.
func saslConfDirs() ([]string, error) {
	var dirs []string
	for _, d := range saslConfPath() {
		if fi, err := os.Stat(d); err != nil || !fi.IsDir() {
			continue
		}
		if strings.Contains(d, "-linux-gnu") {
			if _, err := os.Stat(filepath.Join(d, "Sendmail.conf")); err == nil && len(dirs) == 0 {
				return nil, fmt.Errorf("%s/Sendmail.conf would be read by the test's Sendmail instead of its own; the tests mount a private directory over /etc/sasl2 (create it empty) or /usr/lib/sasl2", d)
			}
			continue
		}
		dirs = append(dirs, d)
	}
	if len(dirs) == 0 {
		return nil, fmt.Errorf("none of /etc/sasl2, /etc/sasl, /usr/lib/sasl2 exists to mount the test's SASL configuration over: install the Debian package libsasl2-2 (it has /usr/lib/sasl2)")
	}
	return dirs, nil
}

// addSASLUser adds user (user@realm) to the instance's sasldb.
func (s *sendmail) addSASLUser(user, pass string) error {
	name, realm, ok := strings.Cut(user, "@")
	if !ok {
		realm = "mx.test.example"
	}
	cmd := exec.Command("/usr/sbin/saslpasswd2", "-f", filepath.Join(s.dir, "sasldb2"), "-c", "-p", "-u", realm, name)
	cmd.Stdin = strings.NewReader(pass)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("saslpasswd2: %v\n%s", err, out)
	}
	return nil
}
