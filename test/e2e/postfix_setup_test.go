package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// postfix is the private Postfix instance.
type postfix struct {
	dir string // the instance directory ($P)
	etc string // its config_directory
	p   *proc  // postfix start-fg: the master daemon
	// Ports of the smtpd listeners (see testdata/e2e/postfix/master.cf).
	Ports struct {
		Main, Originating, Enforce, DownTempfail, DownAccept, Simple, Spy, SpyPlain int
	}
}

func (p *postfix) addr(port int) string { return fmt.Sprintf("127.0.0.1:%d", port) }

var (
	postfixOnce sync.Once
	postfixErr  error
)

// getPostfix starts Dovecot and Postfix on first use.
func getPostfix(t *testing.T) (*env, *postfix) {
	t.Helper()
	e := getEnv(t)
	postfixOnce.Do(func() {
		if postfixErr = needTools(
			[2]string{"postfix", "postfix"},
			[2]string{"postconf", "postfix"},
			[2]string{"dovecot", "dovecot-core"},
			[2]string{"script", "bsdutils"},
		); postfixErr != nil {
			return
		}
		var dovecotPort int
		if dovecotPort, postfixErr = e.startDovecot(); postfixErr != nil {
			return
		}
		e.postfix, postfixErr = e.startPostfix(dovecotPort)
	})
	if postfixErr != nil {
		t.Fatalf("postfix setup: %v", postfixErr)
	}
	return e, e.postfix
}

// startDovecot runs a private Dovecot as the SASL server, with one user in
// a passwd-file, and returns its auth port.
func (e *env) startDovecot() (int, error) {
	dir := filepath.Join(e.root, "dovecot")
	for _, d := range []string{dir, filepath.Join(dir, "state")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return 0, err
		}
	}
	// Dovecot's auth process runs as the dovecot user.
	passwd := filepath.Join(dir, "passwd")
	if err := os.WriteFile(passwd, []byte(saslUser+":{PLAIN}"+saslPass+"::::::\n"), 0o640); err != nil {
		return 0, err
	}
	g, err := user.LookupGroup("dovecot")
	if err != nil {
		return 0, missing("group dovecot", "dovecot-core", err)
	}
	gid, _ := strconv.Atoi(g.Gid)
	if err := os.Chown(passwd, 0, gid); err != nil {
		return 0, err
	}
	port, err := freePort()
	if err != nil {
		return 0, err
	}
	conf := filepath.Join(dir, "dovecot.conf")
	if err := e.render("dovecot/dovecot.conf", conf, map[string]any{"Dir": dir, "Port": port}); err != nil {
		return 0, err
	}
	p, err := startProc("dovecot", filepath.Join(dir, "dovecot.out"), "dovecot", "-F", "-c", conf)
	if err != nil {
		return 0, err
	}
	e.dovecot = p
	e.onClose(p.stop)
	if err := waitPort(fmt.Sprintf("127.0.0.1:%d", port), 15*time.Second, p); err != nil {
		return 0, fmt.Errorf("dovecot: %v\n%s", err, tailFile(filepath.Join(dir, "dovecot.log"), 20))
	}
	return port, nil
}

// startPostfix writes the instance's main.cf and master.cf from
// testdata/e2e/postfix and starts it with `postfix -c DIR start`.
func (e *env) startPostfix(dovecotPort int) (*postfix, error) {
	pf := &postfix{dir: filepath.Join(e.root, "postfix")}
	pf.etc = filepath.Join(pf.dir, "etc")
	for _, d := range []string{pf.etc, filepath.Join(pf.dir, "spool"), filepath.Join(pf.dir, "data")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	u, err := user.Lookup("postfix")
	if err != nil {
		return nil, missing("user postfix", "postfix", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chown(filepath.Join(pf.dir, "data"), uid, gid); err != nil {
		return nil, err
	}
	for _, p := range []*int{&pf.Ports.Main, &pf.Ports.Originating, &pf.Ports.Enforce, &pf.Ports.DownTempfail, &pf.Ports.DownAccept, &pf.Ports.Simple, &pf.Ports.Spy, &pf.Ports.SpyPlain} {
		if *p, err = freePort(); err != nil {
			return nil, err
		}
	}
	data := map[string]any{
		"Dir":               pf.dir,
		"Ports":             pf.Ports,
		"SinkIP":            sinkIP,
		"SinkPort":          e.sink.Port(),
		"DovecotPort":       dovecotPort,
		"MilterPort":        e.main.port,
		"EnforceMilterPort": e.enforce.port,
		"DownMilterPort":    e.down.port,
		"SimpleMilterPort":  e.simple.port,
		"SpyPort":           e.spy.port,
		"SpyPlainPort":      e.spyPlain.port,
	}
	for _, f := range []string{"main.cf", "master.cf"} {
		if err := e.render("postfix/"+f, filepath.Join(pf.etc, f), data); err != nil {
			return nil, err
		}
	}
	// start-fg keeps the master daemon in the foreground as our child, so
	// that we see it exit (and its errors in postfix.out).
	pf.p, err = startProc("postfix", filepath.Join(pf.dir, "postfix.out"), "postfix", "-c", pf.etc, "start-fg")
	if err != nil {
		return nil, err
	}
	// The master daemon forks its services; stopping it is postfix stop.
	watch.add(pf.p, "postfix -c "+pf.etc+" stop")
	e.onClose(pf.stop)
	for _, port := range []int{pf.Ports.Main, pf.Ports.Originating, pf.Ports.Enforce, pf.Ports.DownTempfail, pf.Ports.DownAccept, pf.Ports.Simple, pf.Ports.Spy, pf.Ports.SpyPlain} {
		if err := waitPort(pf.addr(port), 15*time.Second, pf.p); err != nil {
			return nil, fmt.Errorf("postfix: %v\n%s", err, pf.diagnose())
		}
	}
	return pf, nil
}

// diagnose collects what Postfix said: `postfix check` run under script(1)
// (Postfix prints to stderr only on a terminal) and the end of the maillog.
func (pf *postfix) diagnose() string {
	out, _ := exec.Command("script", "-qec", "postfix -c "+pf.etc+" check", "/dev/null").CombinedOutput()
	return fmt.Sprintf("postfix check:\n%s\nmaillog:\n%s", out, tailFile(filepath.Join(pf.dir, "maillog"), 30))
}

// stop stops the instance with `postfix -c DIR stop` and waits for its
// master daemon (our child) to exit; after 10 s it is killed by PID.
func (pf *postfix) stop() {
	exec.Command("postfix", "-c", pf.etc, "stop").Run()
	select {
	case <-pf.p.done:
	case <-time.After(10 * time.Second):
		pf.p.stop()
	}
}

// logFor returns the maillog lines about a queue ID.
func (pf *postfix) logFor(queueID string) string {
	b, _ := os.ReadFile(filepath.Join(pf.dir, "maillog"))
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if queueID != "" && strings.Contains(l, queueID) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// sendmailCmd submits msg with Postfix's sendmail command to this instance
// (the postdrop/pickup path, so non_smtpd_milters applies).
func (pf *postfix) sendmailCmd(from string, msg []byte) error {
	cmd := exec.Command("/usr/sbin/sendmail", "-C", pf.etc, "-i", "-f", from, "-t")
	cmd.Stdin = bytes.NewReader(msg)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("sendmail -C %s -i -f %s -t: %v\n%s", pf.etc, from, err, out)
	}
	return nil
}
