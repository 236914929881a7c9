package interop

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/authmilter/authmilter/internal/miltertest"
	"github.com/authmilter/authmilter/internal/syncbuf"
	"github.com/emersion/go-milter"
)

// OpenDKIM is the OpenDKIM milter binary (Debian package opendkim).
//
// Why the milter and not opendkim-testmsg (opendkim-tools): opendkim-testmsg
// signs only rsa-sha1 with relaxed/simple (it has no algorithm or
// canonicalization option, and fails with "dkim_eom(): Resource
// unavailable" on an Ed25519 key), resolves keys through the C library's
// resolver and so /etc/resolv.conf (no way to name a test DNS server), and
// when verifying says nothing but an exit status about the first
// signature. "opendkim -t FILE" uses the configuration (Nameservers) and
// prints an Authentication-Results field per signature, but its test
// harness hands header values to the filter without their leading white
// space, so valid simple-canonicalized signatures over fields such as
// "To:x" or "Subject:\tx" fail there and nowhere else. The real milter
// driven the way Postfix drives it (internal/miltertest) has neither
// problem and reports every signature in its Authentication-Results field.
const OpenDKIM = "/usr/sbin/opendkim"

const installOpenDKIM = "apt-get install opendkim opendkim-tools"

// openDKIMAuthservID is the authserv-id of the Authentication-Results
// field that the verifying instance adds.
const openDKIMAuthservID = "interop.opendkim.test"

// OpenDKIMResult is OpenDKIM's verdict on one signature, read from the
// Authentication-Results field it adds.
type OpenDKIMResult struct {
	// Result is the RFC 8601 result: pass, fail, neutral, policy,
	// temperror, permerror.
	Result string
	// Reason is OpenDKIM's reason="..." text, if any.
	Reason string
	// Comment is the parenthesised comment, e.g. "2048-bit key; unprotected".
	Comment string
	// Domain, Identity, Selector, Algorithm are header.d, header.i,
	// header.s and header.a; BPrefix is header.b (the first 8 characters
	// of the signature).
	Domain, Identity, Selector, Algorithm, BPrefix string
}

// String formats the result for test output.
func (r OpenDKIMResult) String() string {
	s := fmt.Sprintf("d=%s s=%s a=%s b=%s: %s", r.Domain, r.Selector, r.Algorithm, r.BPrefix, r.Result)
	if r.Reason != "" {
		s += " (" + r.Reason + ")"
	}
	if r.Comment != "" {
		s += " [" + r.Comment + "]"
	}
	return s
}

// DNSIP checks that dnsAddr ("ip" or "ip:53") names port 53 and returns
// the IP: OpenDKIM's resolver (libunbound forwarding) always uses port 53.
func DNSIP(dnsAddr string) (string, error) {
	if a, err := netip.ParseAddr(dnsAddr); err == nil {
		return a.String(), nil
	}
	host, port, err := net.SplitHostPort(dnsAddr)
	if err != nil {
		return "", fmt.Errorf("interop: DNS address %q: %w", dnsAddr, err)
	}
	if port != "53" {
		return "", fmt.Errorf("interop: DNS address %q: OpenDKIM can only use port 53", dnsAddr)
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return "", fmt.Errorf("interop: DNS address %q: %w", dnsAddr, err)
	}
	return a.String(), nil
}

// VerifyOpenDKIMEach verifies msg with OpenDKIM and returns its result for
// each signature, in the order of its Authentication-Results field (the
// order of the DKIM-Signature fields). Keys are looked up at dnsIP port 53
// only. An unsigned message gives no results. The error is about running
// OpenDKIM, not about the signatures.
func VerifyOpenDKIMEach(ctx context.Context, msg []byte, dnsIP string) ([]OpenDKIMResult, error) {
	ip, err := DNSIP(dnsIP)
	if err != nil {
		return nil, err
	}
	conf := strings.Join([]string{
		"Mode v",
		"Nameservers " + ip,
		"AuthservID " + openDKIMAuthservID,
		"AlwaysAddARHeader yes",
		"MaximumSignaturesToVerify 20",
		"DNSTimeout 5",
	}, "\n")
	o, err := startOpenDKIM(ctx, conf, nil)
	if err != nil {
		return nil, err
	}
	defer o.stop()
	tx := miltertest.Transaction{
		ClientHost: "mail.example.net",
		ClientIP:   "192.0.2.25",
		ClientPort: 40025,
		Helo:       "mail.example.net",
		MailFrom:   "sender@example.net",
		RcptTo:     []string{"rcpt@example.org"},
		QueueID:    "INTEROPV",
	}
	res, err := o.run(ctx, tx, msg)
	if err != nil {
		return nil, err
	}
	var ar []string
	for _, m := range res.Modifications {
		if (m.Code == milter.ActInsertHeader || m.Code == milter.ActAddHeader) &&
			strings.EqualFold(m.HeaderName, "Authentication-Results") {
			ar = append(ar, m.HeaderValue)
		}
	}
	if len(ar) != 1 {
		return nil, o.fail(fmt.Errorf("interop: opendkim verify: want one Authentication-Results field, got %d (action %c, modifications %d)", len(ar), res.Action.Code, len(res.Modifications)))
	}
	out, err := parseOpenDKIMAR(ar[0])
	if err != nil {
		return nil, o.fail(err)
	}
	return out, nil
}

// VerifyOpenDKIM verifies msg with OpenDKIM (keys looked up at dnsIP port
// 53 only) and returns nil only if the message has at least one signature
// and OpenDKIM passes every one; otherwise the error lists each result.
func VerifyOpenDKIM(ctx context.Context, msg []byte, dnsIP string) error {
	res, err := VerifyOpenDKIMEach(ctx, msg, dnsIP)
	if err != nil {
		return err
	}
	if len(res) == 0 {
		return errors.New("interop: opendkim: message has no DKIM-Signature")
	}
	var bad []string
	for _, r := range res {
		if r.Result != "pass" {
			bad = append(bad, r.String())
		}
	}
	if len(bad) > 0 {
		var all []string
		for _, r := range res {
			all = append(all, r.String())
		}
		return fmt.Errorf("interop: opendkim: %d of %d signatures did not pass: %s", len(bad), len(res), strings.Join(all, "; "))
	}
	return nil
}

// SignOpenDKIM signs msg with OpenDKIM as d=domain s=selector (whatever the
// From domain) and returns the message as Postfix would deliver it.
// keyPEM is a PEM private key (RSA or Ed25519; the algorithm follows the
// key: rsa-sha256 or ed25519-sha256); canon is OpenDKIM's Canonicalization
// setting ("relaxed/simple", "simple", ...). OpenDKIM signs its default
// header list.
func SignOpenDKIM(ctx context.Context, msg []byte, domain, selector string, keyPEM []byte, canon string) ([]byte, error) {
	key, err := parseKey(keyPEM)
	if err != nil {
		return nil, err
	}
	// OpenDKIM reads the key with OpenSSL (PKCS#8 and PKCS#1 alike).
	algo := keyAlgorithm(key)
	files := map[string][]byte{"key.pem": keyPEM}
	conf := strings.Join([]string{
		"Mode s",
		"Canonicalization " + canon,
		"SignatureAlgorithm " + algo,
		"KeyTable refile:%DIR%/keytable",
		"SigningTable refile:%DIR%/signingtable",
		"InternalHosts 127.0.0.1",
		// No DNS is needed to sign; point the resolver nowhere useful.
		"Nameservers 127.0.0.1",
	}, "\n")
	files["keytable"] = []byte(fmt.Sprintf("interopkey %s:%s:%%DIR%%/key.pem\n", domain, selector))
	files["signingtable"] = []byte("* interopkey\n")
	o, err := startOpenDKIM(ctx, conf, files)
	if err != nil {
		return nil, err
	}
	defer o.stop()
	tx := miltertest.Transaction{
		ClientHost: "localhost",
		ClientIP:   "127.0.0.1",
		ClientPort: 40587,
		Helo:       "localhost",
		MailFrom:   "sender@" + domain,
		RcptTo:     []string{"rcpt@example.org"},
		QueueID:    "INTEROPS",
	}
	res, err := o.run(ctx, tx, msg)
	if err != nil {
		return nil, err
	}
	signed := false
	for _, m := range res.Modifications {
		if strings.EqualFold(m.HeaderName, "DKIM-Signature") {
			signed = true
		}
	}
	if !signed || res.Message == nil {
		return nil, o.fail(fmt.Errorf("interop: opendkim sign: no DKIM-Signature added (stage %s, action %c)", res.Stage, res.Action.Code))
	}
	return res.Message, nil
}

// openDKIMInstance is one opendkim process serving a unix socket.
type openDKIMInstance struct {
	cmd    *exec.Cmd
	dir    string
	sock   string
	output *syncbuf.Buffer
	done   chan error
}

// startOpenDKIM writes conf (plus the settings every instance needs) and
// files into a private directory, "%DIR%" replaced by its path, starts
// opendkim in the foreground and waits for its socket.
func startOpenDKIM(ctx context.Context, conf string, files map[string][]byte) (*openDKIMInstance, error) {
	if err := checkExecutable(opendkimBin, opendkimBin, installOpenDKIM); err != nil {
		return nil, err
	}
	dir, cleanup, err := tempDir("opendkim-")
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			cleanup()
		}
	}()
	sock := filepath.Join(dir, "milter.sock")
	full := strings.Join([]string{
		conf,
		"Socket local:" + sock,
		"Background no",
		"Syslog no",
		"RequireSafeKeys no",
		"UMask 007",
		"",
	}, "\n")
	full = strings.ReplaceAll(full, "%DIR%", dir)
	if err := os.WriteFile(filepath.Join(dir, "opendkim.conf"), []byte(full), 0o600); err != nil {
		return nil, fmt.Errorf("interop: opendkim: write config: %w", err)
	}
	for name, data := range files {
		data = bytes.ReplaceAll(data, []byte("%DIR%"), []byte(dir))
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			return nil, fmt.Errorf("interop: opendkim: write %s: %w", name, err)
		}
	}
	out := &syncbuf.Buffer{}
	cmd := exec.Command(opendkimBin, "-f", "-x", filepath.Join(dir, "opendkim.conf"))
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Dir = dir
	if err := cmd.Start(); err != nil {
		return nil, &MissingToolError{Tool: opendkimBin, Install: installOpenDKIM, Err: err}
	}
	o := &openDKIMInstance{cmd: cmd, dir: dir, sock: sock, output: out, done: make(chan error, 1)}
	go func() { o.done <- cmd.Wait() }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			break
		}
		select {
		case err := <-o.done:
			o.done <- err
			cleanup()
			return nil, &ToolError{Cmd: "opendkim -f -x opendkim.conf", Err: fmt.Errorf("exited before serving: %v", err), Stderr: clip(out.String()), Stdout: "config:\n" + full}
		case <-ctx.Done():
			o.kill()
			cleanup()
			return nil, fmt.Errorf("interop: opendkim start: %w", ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			o.kill()
			cleanup()
			return nil, &ToolError{Cmd: "opendkim -f -x opendkim.conf", Err: errors.New("socket did not appear within 10s"), Stderr: clip(out.String())}
		}
	}
	ok = true
	return o, nil
}

// run drives one transaction through the instance.
func (o *openDKIMInstance) run(ctx context.Context, tx miltertest.Transaction, msg []byte) (*miltertest.Result, error) {
	tx.LeadingSpace = true // Postfix offers SMFIP_HDR_LEADSPC
	res, err := miltertest.Run(ctx, "unix", o.sock, tx, msg)
	if err != nil {
		return nil, o.fail(fmt.Errorf("interop: opendkim milter: %w", err))
	}
	return res, nil
}

// fail adds the process output to err.
func (o *openDKIMInstance) fail(err error) error {
	if s := clip(o.output.String()); s != "" {
		return fmt.Errorf("%w; opendkim output: %s", err, s)
	}
	return err
}

// kill stops the process. It is killed outright: it holds nothing worth
// a clean shutdown, and it takes up to five seconds to act on SIGTERM.
func (o *openDKIMInstance) kill() {
	_ = o.cmd.Process.Kill()
	err := <-o.done
	o.done <- err
}

// stop kills the process and removes its directory.
func (o *openDKIMInstance) stop() {
	o.kill()
	os.RemoveAll(o.dir)
}

// parseOpenDKIMAR reads the dkim= results of an Authentication-Results
// value written by OpenDKIM.
func parseOpenDKIMAR(value string) ([]OpenDKIMResult, error) {
	v := strings.NewReplacer("\r\n", " ", "\n", " ", "\t", " ").Replace(value)
	parts := splitTopLevel(v, ';')
	if len(parts) == 0 || strings.TrimSpace(parts[0]) != openDKIMAuthservID {
		return nil, fmt.Errorf("interop: opendkim: unexpected Authentication-Results %q", value)
	}
	var out []OpenDKIMResult
	for _, p := range parts[1:] {
		p = strings.TrimSpace(p)
		if !strings.HasPrefix(p, "dkim=") {
			continue
		}
		r, err := parseResinfo(p)
		if err != nil {
			return nil, fmt.Errorf("interop: opendkim: %q: %w", value, err)
		}
		if r.Result == "none" && r.Domain == "" {
			continue // no signatures at all
		}
		out = append(out, r)
	}
	return out, nil
}

// parseResinfo reads one "dkim=result [reason="..."] [(comment)]
// header.x=y..." element.
func parseResinfo(s string) (OpenDKIMResult, error) {
	var r OpenDKIMResult
	i := 0
	next := func() string {
		for i < len(s) && s[i] == ' ' {
			i++
		}
		start := i
		switch {
		case i < len(s) && s[i] == '(':
			depth := 0
			for ; i < len(s); i++ {
				if s[i] == '(' {
					depth++
				} else if s[i] == ')' {
					depth--
					if depth == 0 {
						i++
						break
					}
				}
			}
		default:
			inQuote := false
			for ; i < len(s); i++ {
				if s[i] == '"' {
					inQuote = !inQuote
				} else if s[i] == ' ' && !inQuote {
					break
				}
			}
		}
		return s[start:i]
	}
	for tok := next(); tok != ""; tok = next() {
		if strings.HasPrefix(tok, "(") {
			r.Comment = strings.TrimSuffix(strings.TrimPrefix(tok, "("), ")")
			continue
		}
		k, v, ok := strings.Cut(tok, "=")
		if !ok {
			return r, fmt.Errorf("bad token %q", tok)
		}
		v = strings.Trim(v, `"`)
		switch strings.ToLower(k) {
		case "dkim":
			r.Result = v
		case "reason":
			r.Reason = v
		case "header.d":
			r.Domain = v
		case "header.i":
			r.Identity = v
		case "header.s":
			r.Selector = v
		case "header.a":
			r.Algorithm = v
		case "header.b":
			r.BPrefix = v
		}
	}
	if r.Result == "" {
		return r, errors.New("no result")
	}
	return r, nil
}

// splitTopLevel splits s at sep outside comments and quoted strings.
func splitTopLevel(s string, sep byte) []string {
	var out []string
	depth, inQuote, start := 0, false, 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' && depth == 0:
			inQuote = !inQuote
		case c == '(' && !inQuote:
			depth++
		case c == ')' && !inQuote && depth > 0:
			depth--
		case c == sep && depth == 0 && !inQuote:
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}
