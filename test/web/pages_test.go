package web_test

import (
	"bufio"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/authmilter/authmilter/internal/browsertest"
	"github.com/authmilter/authmilter/internal/daemontest"
	"github.com/authmilter/authmilter/internal/testbin"
)

// The messages the open daemon's subtests send: two signed on the way
// out, two from good.example's own server and one from the failing
// source on the way in.
var (
	outboundMail = []mail{{ip: "127.0.0.1", from: goodDomain}, {ip: "127.0.0.1", from: goodDomain}}
	inboundMail  = []mail{{ip: goodIP, from: goodDomain}, {ip: goodIP, from: goodDomain}, {ip: failingIP, from: goodDomain}}
)

// importedMessages are the messages of the imported reports about
// good.example (testdata/reports: 4321 + 1200 + 850 + 300).
const importedMessages = 6671

// TestStatusPages is issue 15's "done when": an admin opens the status
// pages of a running daemon and sees, for each domain, whether its active
// keys are published and how its mail fared at receivers. One browser
// serves three daemons on one world (keys in DNS, a reports store): one
// without login that got mail, one with a password file, and one whose
// reports store is down.
func TestStatusPages(t *testing.T) {
	w := newWorld(t)
	b := browsertest.Start(t)
	// `authmilter version` prints "authmilter VERSION", then the signer.
	first, _, _ := strings.Cut(testbin.MustRun(t, binary, "version"), "\n")
	version := strings.TrimSpace(strings.TrimPrefix(first, "authmilter"))

	t.Run("open", func(t *testing.T) {
		d := w.start(t, "open", daemonOptions{})
		waitKeysChecked(t, d, nil)
		reload(t, d)
		d.send(t, outboundMail...)
		d.send(t, inboundMail...)
		waitFor(t, 60*time.Second, "the inbound mail recorded in the store", func() error {
			var got dmarcJSON
			if err := d.tryJSON(t, "/dmarc?side=recorded", nil, &got); err != nil {
				return err
			}
			if len(got.Domains) != 1 || got.Domains[0].Domain != goodDomain || got.Domains[0].Messages != int64(len(inboundMail)) {
				return fmt.Errorf("recorded domains %+v", got.Domains)
			}
			return nil
		})
		v := newViewer(b, d, nil)
		t.Run("overview", func(t *testing.T) { checkOverview(t, v, version) })
		t.Run("keys", func(t *testing.T) { checkKeys(t, v, nil) })
		t.Run("keys search", func(t *testing.T) { checkKeySearch(t, v) })
		t.Run("domain keys", func(t *testing.T) { checkDomainKeys(t, v, nil) })
		t.Run("dmarc", func(t *testing.T) { checkDMARC(t, v) })
		t.Run("dmarc recorded", func(t *testing.T) { checkDMARCRecorded(t, v) })
		t.Run("dmarc domain", func(t *testing.T) { checkDMARCDomain(t, v) })
		t.Run("dmarc domain recorded", func(t *testing.T) { checkDMARCDomainRecorded(t, v) })
		t.Run("csp", func(t *testing.T) { checkCSP(t, v) })
		t.Run("bad requests", func(t *testing.T) { checkBadRequests(t, v) })
	})

	t.Run("login", func(t *testing.T) {
		const user, password = "admin", "correct horse battery staple"
		const token = "0123456789abcdef0123456789abcdef-web-test"
		d := w.start(t, "login", daemonOptions{passwordFile: writePasswordFile(t, user, password), tokenFile: writeTokenFile(t, token)})
		good := http.Header{"Authorization": {basicAuth(user, password)}}
		waitKeysChecked(t, d, good)
		checkLogin(t, b, d, user, password)
		t.Run("token", func(t *testing.T) { checkToken(t, b, d, token) })
	})

	t.Run("store down", func(t *testing.T) {
		d := w.start(t, "storedown", daemonOptions{database: filepath.Join(w.dir, "no-such-folder", "reports.db")})
		waitKeysChecked(t, d, nil)
		checkStoreDown(t, newViewer(b, d, nil), version)
	})
}

// waitKeysChecked waits until the daemon has checked every key and the
// retired one (it looks at retired keys a few seconds after its start).
func waitKeysChecked(t *testing.T, d *daemon, header http.Header) {
	t.Helper()
	want := map[string]string{
		goodDomain + "/" + goodRSA: "published", goodDomain + "/" + goodEd: "published",
		missingDomain + "/" + otherSelector: "missing", mismatchDomain + "/" + otherSelector: "mismatch",
	}
	waitFor(t, 60*time.Second, "the keys checked in DNS", func() error {
		var got keysJSON
		if err := d.tryJSON(t, "/keys", header, &got); err != nil {
			return err
		}
		m := keyMap(got.Domains)
		for id, st := range want {
			if m[id].DNS != st {
				return fmt.Errorf("%s is %q, want %q", id, m[id].DNS, st)
			}
		}
		var dom domainKeysJSON
		if err := d.tryJSON(t, "/keys/"+goodDomain, header, &dom); err != nil {
			return err
		}
		for _, r := range dom.Retired {
			if r.Selector == goodOld && r.Checked != "" {
				return nil
			}
		}
		return fmt.Errorf("the retired key %s/%s is not checked yet: %+v", goodDomain, goodOld, dom.Retired)
	})
}

// reload sends SIGHUP and waits for the reload, so that the overview has
// a last reload to show.
func reload(t *testing.T, d *daemon) {
	t.Helper()
	from := len(d.Logs.String())
	if err := d.Cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	daemontest.WaitLog(t, d.Logs.String, d.Done, "msg=reloaded", from, 60*time.Second, 20*time.Millisecond)
}

// checkOverview: the version, the last reload (ok), the keys and the
// messages that went through, the same as /metrics and the JSON.
func checkOverview(t *testing.T, v *viewer, version string) {
	p := v.load(t, "/", http.StatusOK)
	facts := p.Text("main dl.facts")
	containsAll(t, "the overview's facts", facts, "Version", version, "Last reload", "Uptime")
	if r := p.Text("main dd.reload"); !strings.HasPrefix(r, "ok at ") {
		t.Errorf("last reload reads %q, want ok at …", r)
	}
	containsAll(t, "the overview", p.Text("main"), "4 keys, 2 active")

	// The counts table: every window (last hour, last day, since start)
	// has the mail of this test, and /metrics says the same.
	counts := map[string][]string{}
	for _, row := range browsertest.Evaluate[[][]string](p, `Array.from(document.querySelectorAll("#counts-messages tbody tr"),
		tr => Array.from(tr.children, c => c.innerText.trim()))`) {
		counts[row[0]] = row[1:]
	}
	in := metricSum(t, v.d, "authmilter_messages_total", `direction="in"`)
	out := metricSum(t, v.d, "authmilter_messages_total", `direction="out"`)
	if in != float64(len(inboundMail)) || out != float64(len(outboundMail)) {
		t.Errorf("/metrics: %v inbound and %v outbound messages, want %d and %d", in, out, len(inboundMail), len(outboundMail))
	}
	for label, want := range map[string]float64{"Inbound messages": in, "Outbound messages": out, "Outbound signed": out} {
		cells := counts[label]
		if len(cells) != 3 {
			t.Errorf("counts table: row %q is %q, want 3 windows (rows: %v)", label, cells, sortedKeys(counts))
			continue
		}
		for i, c := range cells {
			if c != strconv.FormatFloat(want, 'f', -1, 64) {
				t.Errorf("counts table: %s, window %d, reads %q, want %v (as /metrics)", label, i+1, c, want)
			}
		}
	}

	var j overviewJSON
	v.d.getJSON(t, "/", nil, &j)
	if j.Version != version || !j.Reload.OK || j.Reload.At == "" || j.KeysTotal != 4 || j.KeysActive != 2 || len(j.Windows) != 3 {
		t.Errorf("overview JSON: %+v", j)
	}
	for _, win := range j.Windows {
		if win.InboundMessages != in || win.OutboundMessages != out || win.OutboundSigned != out {
			t.Errorf("overview JSON, window %s: %+v, want %v in and %v out (signed)", win.Window, win, in, out)
		}
	}
}

// metricSum sums the series of family whose labels contain match.
func metricSum(t *testing.T, d *daemon, family, match string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + d.cfg.metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, family+"{") || !strings.Contains(line, match) {
			continue
		}
		f, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			t.Fatalf("/metrics: %q: %v", line, err)
		}
		sum += f
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return sum
}

// wantKeys is what the keys table must say of each key.
var wantKeys = map[string]struct{ algorithm, state, active string }{
	goodDomain + "/" + goodRSA:           {"rsa", "published", "active"},
	goodDomain + "/" + goodEd:            {"ed25519", "published", "active"},
	missingDomain + "/" + otherSelector:  {"ed25519", "missing", "no: DNS record missing"},
	mismatchDomain + "/" + otherSelector: {"ed25519", "mismatch", "no: DNS record does not match the key"},
}

// checkKeyRows checks the rows read from a keys table against wantKeys
// (only those of the domains in only, if given) and against the page's
// JSON.
func checkKeyRows(t *testing.T, rows []keyCells, js map[string]keyJSON, only ...string) {
	t.Helper()
	got := keyRowMap(rows)
	n := 0
	for id, want := range wantKeys {
		domain, _, _ := strings.Cut(id, "/")
		if len(only) > 0 && !contains(only, domain) {
			continue
		}
		n++
		r, ok := got[id]
		if !ok {
			t.Errorf("no row for %s (rows: %v)", id, sortedKeys(got))
			continue
		}
		if !strings.Contains(r.Algorithm, want.algorithm) || r.State != want.state || r.Active != want.active {
			t.Errorf("%s reads %q, %q, %q; want %q, %q, %q", id, r.Algorithm, r.State, r.Active, want.algorithm, want.state, want.active)
		}
		// The JSON form says the same.
		k := js[id]
		active := "active"
		if !k.Active {
			active = "no: " + k.WhyInactive
		}
		if k.DNS != r.State || active != r.Active || k.Algorithm != r.Algorithm {
			t.Errorf("%s: the JSON says %q, %q, %q; the page %q, %q, %q", id, k.DNS, active, k.Algorithm, r.State, r.Active, r.Algorithm)
		}
	}
	if len(rows) != n {
		t.Errorf("%d key rows, want %d: %v", len(rows), n, sortedKeys(got))
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// checkKeys: /keys lists every domain with its keys' states, why the
// inactive ones do not sign, and the domains' warnings.
func checkKeys(t *testing.T, v *viewer, header http.Header) {
	p := v.load(t, "/keys", http.StatusOK)
	var js keysJSON
	v.d.getJSON(t, "/keys", header, &js)
	checkKeyRows(t, readKeyRows(p), keyMap(js.Domains))
	if d := p.Texts("#keys tbody[data-domain]"); len(d) != 3 || js.Total != 3 {
		t.Errorf("%d domains shown, JSON total %d; want 3", len(d), js.Total)
	}
	warnings := func(domain string) string {
		return strings.Join(p.Texts(fmt.Sprintf(`#keys tr.domain-warnings[data-domain=%q] ul.warnings li`, domain)), "\n")
	}
	containsAll(t, "missing.example's warnings", warnings(missingDomain), "missing.example has keys but none is active")
	containsAll(t, "mismatch.example's warnings", warnings(mismatchDomain), "mismatch.example has keys but none is active")
	containsAll(t, "good.example's warnings", warnings(goodDomain), "retired key good.example/old is still usable", "old._domainkey.good.example")
}

// checkKeySearch: /keys?q=missing shows only missing.example.
func checkKeySearch(t *testing.T, v *viewer) {
	p := v.load(t, "/keys?q=missing", http.StatusOK)
	var js keysJSON
	v.d.getJSON(t, "/keys?q=missing", nil, &js)
	checkKeyRows(t, readKeyRows(p), keyMap(js.Domains), missingDomain)
	containsAll(t, "the search's summary", p.Text("main p.summary"), "1 domain ")
	if got := evalString(p, `document.getElementById("q").value`); got != "missing" {
		t.Errorf("the search field holds %q, want missing", got)
	}
}

// checkDomainKeys: /keys/good.example shows both keys published and
// active, and its retired key whose record is still there.
func checkDomainKeys(t *testing.T, v *viewer, header http.Header) {
	p := v.load(t, "/keys/"+goodDomain, http.StatusOK)
	var js domainKeysJSON
	v.d.getJSON(t, "/keys/"+goodDomain, header, &js)
	checkKeyRows(t, readKeyRows(p), keyMap([]domainKeysJSON{js}), goodDomain)
	containsAll(t, "good.example's page", p.Text("main h1"), "good.example")
	containsAll(t, "good.example's warnings", strings.Join(p.Texts("main > ul.warnings li"), "\n"), "retired key good.example/old is still usable")
	retired := p.Texts(fmt.Sprintf(`#retired tr[data-selector=%q] td`, goodOld))
	if len(retired) < 4 || retired[3] != "no" {
		t.Errorf("the retired key's row reads %q, want withdrawn: no", retired)
	}
	if len(js.Retired) != 1 || js.Retired[0].Selector != goodOld || js.Retired[0].Withdrawn {
		t.Errorf("the JSON's retired keys: %+v, want %s not withdrawn", js.Retired, goodOld)
	}
	for _, sel := range []string{goodRSA, goodEd} {
		containsAll(t, "the DNS check of "+sel, p.Text("#check-"+sel), "DNS check of "+sel)
		containsAll(t, "the DNS check of "+sel, p.Text(fmt.Sprintf(`section[aria-labelledby="check-%s"]`, sel)),
			sel+"._domainkey.good.example", "published")
	}
}

// domainRow reads the cells of a domain's row in /dmarc's table.
func domainRow(p *browsertest.Page, domain string) []string {
	return p.Texts(fmt.Sprintf(`#domains tr[data-domain=%q] > *`, domain))
}

// checkDMARC: /dmarc shows the received reports (the default side when
// there are any): good.example with all its reported messages.
func checkDMARC(t *testing.T, v *viewer) {
	p := v.load(t, "/dmarc", http.StatusOK)
	var js dmarcJSON
	v.d.getJSON(t, "/dmarc", nil, &js)
	row := domainRow(p, goodDomain)
	if len(row) < 2 || row[1] != strconv.Itoa(importedMessages) {
		t.Errorf("good.example's row reads %q, want %d messages", row, importedMessages)
	}
	if js.Side != "received" || js.Total != 1 || len(js.Domains) != 1 || js.Domains[0].Messages != importedMessages {
		t.Errorf("/dmarc JSON: %+v, want good.example with %d received", js, importedMessages)
	}
	if href := evalString(p, fmt.Sprintf(`document.querySelector('#domains tr[data-domain=%q] a').getAttribute("href")`, goodDomain)); !strings.HasPrefix(href, "/dmarc/"+goodDomain) {
		t.Errorf("good.example links to %q", href)
	}
}

// checkDMARCRecorded: the recorded side counts the inbound mail of the
// test.
func checkDMARCRecorded(t *testing.T, v *viewer) {
	p := v.load(t, "/dmarc?side=recorded", http.StatusOK)
	row := domainRow(p, goodDomain)
	if len(row) < 2 || row[1] != strconv.Itoa(len(inboundMail)) {
		t.Errorf("good.example's recorded row reads %q, want %d messages", row, len(inboundMail))
	}
}

// checkDMARCDomain: /dmarc/good.example lists the failing source first
// with its volume per organisation, and a chart per organisation.
func checkDMARCDomain(t *testing.T, v *viewer) {
	p := v.load(t, "/dmarc/"+goodDomain, http.StatusOK)
	var js dmarcDomainJSON
	v.d.getJSON(t, "/dmarc/"+goodDomain, nil, &js)
	containsAll(t, "the summary", p.Text("main p.summary"), fmt.Sprintf("%d messages", importedMessages))
	src := readSources(p)
	if len(src) != 4 {
		t.Fatalf("%d sources, want 4: %+v", len(src), src)
	}
	if s := src[0]; s.IP != failingIP || s.Org != orgOne || s.Messages != strconv.Itoa(failingVolumeOne) || s.Neither != s.Messages {
		t.Errorf("the first source reads %+v, want %s reported by %s with %d messages failing", s, failingIP, orgOne, failingVolumeOne)
	}
	if s := src[1]; s.IP != failingIP || s.Org != orgTwo || s.Messages != "850" {
		t.Errorf("the second source reads %+v, want %s reported by %s with 850 messages", s, failingIP, orgTwo)
	}
	if len(js.Sources) != len(src) {
		t.Errorf("the JSON has %d sources, the page %d", len(js.Sources), len(src))
	}
	for i := range min(len(js.Sources), len(src)) {
		j, s := js.Sources[i], src[i]
		if j.IP != s.IP || j.Org != s.Org || strconv.FormatInt(j.Messages, 10) != s.Messages || strconv.FormatInt(j.Neither, 10) != s.Neither {
			t.Errorf("source %d: the JSON says %s %q %d (%d failing), the page %+v", i+1, j.IP, j.Org, j.Messages, j.Neither, s)
		}
	}
	orgs := p.Texts("section.org h3")
	if len(orgs) != 2 || !strings.HasPrefix(orgs[0], orgOne+": 5521 messages") || !strings.HasPrefix(orgs[1], orgTwo+": 1150 messages") {
		t.Errorf("the organisations read %q", orgs)
	}
	if len(js.Orgs) != 2 || js.Orgs[0].Org != orgOne || js.Orgs[0].Totals.Messages != 5521 || js.Orgs[1].Org != orgTwo {
		t.Errorf("the JSON's organisations: %+v", js.Orgs)
	}
	// A chart for the domain and one per organisation, each an image
	// with a name (the a11y check verifies the names).
	if n := p.Count(`main svg[role="img"]`); n != 3 {
		t.Errorf("%d charts, want 3 (the domain, two organisations)", n)
	}
}

// checkDMARCDomainRecorded: our own inbound mail from good.example, the
// failing source first.
func checkDMARCDomainRecorded(t *testing.T, v *viewer) {
	p := v.load(t, "/dmarc/"+goodDomain+"?side=recorded", http.StatusOK)
	src := readSources(p)
	if len(src) != 2 || src[0].IP != failingIP || src[0].Messages != "1" || src[0].Neither != "1" ||
		src[1].IP != goodIP || src[1].Messages != "2" || src[1].Neither != "0" {
		t.Errorf("recorded sources read %+v, want %s (1 failing) then %s (2 passing)", src, failingIP, goodIP)
	}
}

// writePasswordFile writes an htpasswd file with user's bcrypt hash,
// mode 0600 (the daemon refuses a file others can read).
func writePasswordFile(t *testing.T, user, password string) string {
	t.Helper()
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.DefaultCost)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "htpasswd")
	if err := os.WriteFile(path, []byte(user+":"+string(hash)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// basicAuth is an Authorization header's value for HTTP Basic.
func basicAuth(user, password string) string {
	r, _ := http.NewRequest(http.MethodGet, "/", nil)
	r.SetBasicAuth(user, password)
	return r.Header.Get("Authorization")
}

// checkLogin: without credentials (or with a wrong password) every page
// is 401 and names no domain; with them the pages load in the browser
// and the JSON agrees.
func checkLogin(t *testing.T, b *browsertest.Browser, d *daemon, user, password string) {
	status, body := d.get(t, "/keys", nil)
	if status != http.StatusUnauthorized || strings.Contains(string(body), goodDomain) {
		t.Errorf("GET /keys without login: status %d, want 401 without the domains:\n%s", status, body)
	}
	anonymous := newViewer(b, d, nil)
	t.Run("no login", func(t *testing.T) {
		for _, path := range []string{"/", "/keys", "/dmarc"} {
			p := anonymous.load(t, path, http.StatusUnauthorized)
			if text := p.Text("body"); strings.Contains(text, goodDomain) {
				t.Errorf("%s without login shows the domains:\n%s", path, text)
			}
		}
	})
	t.Run("wrong password", func(t *testing.T) {
		v := newViewer(b, d, map[string]string{"Authorization": basicAuth(user, "wrong")})
		v.load(t, "/keys", http.StatusUnauthorized)
	})
	login := newViewer(b, d, map[string]string{"Authorization": basicAuth(user, password)})
	header := http.Header{"Authorization": {basicAuth(user, password)}}
	t.Run("overview", func(t *testing.T) {
		p := login.load(t, "/", http.StatusOK)
		containsAll(t, "the overview", p.Text("main"), "4 keys, 2 active")
	})
	t.Run("keys", func(t *testing.T) { checkKeys(t, login, header) })
	t.Run("domain keys", func(t *testing.T) { checkDomainKeys(t, login, header) })
	t.Run("dmarc", func(t *testing.T) {
		p := login.load(t, "/dmarc/"+goodDomain, http.StatusOK)
		if src := readSources(p); len(src) == 0 || src[0].IP != failingIP {
			t.Errorf("sources read %+v, want %s first", src, failingIP)
		}
	})
}

// checkStoreDown: a reports store that cannot be opened shows its
// message on the DMARC pages, while the overview and the keys work.
func checkStoreDown(t *testing.T, v *viewer, version string) {
	for name, path := range map[string]string{"dmarc": "/dmarc", "dmarc domain": "/dmarc/" + goodDomain} {
		t.Run(name, func(t *testing.T) {
			p := v.load(t, path, http.StatusServiceUnavailable)
			msg := p.Texts("main p.store-error")
			if len(msg) != 1 || msg[0] == "" {
				t.Fatalf("%s: store error %q, want one message; the page says:\n%s", path, msg, p.Text("main"))
			}
			if role := evalString(p, `document.querySelector("p.store-error").getAttribute("role")`); role != "alert" {
				t.Errorf("the store error's role is %q, want alert", role)
			}
			status, body := v.d.get(t, path+"?format=json", nil)
			if status != http.StatusServiceUnavailable {
				t.Errorf("%s as JSON: status %d, want 503: %s", path, status, body)
			}
		})
	}
	t.Run("keys", func(t *testing.T) { checkKeys(t, v, nil) })
	t.Run("overview", func(t *testing.T) {
		p := v.load(t, "/", http.StatusOK)
		containsAll(t, "the overview", p.Text("main dl.facts"), version)
	})
}

// evalString evaluates a JavaScript expression whose value is a string.
func evalString(p *browsertest.Page, expr string) string {
	return browsertest.Evaluate[string](p, expr)
}

// checkCSP: the Content-Security-Policy holds in the browser: a script
// put into the page (as an injection would) does not run, and the
// browser reports the violation.
func checkCSP(t *testing.T, v *viewer) {
	p := v.load(t, "/keys", http.StatusOK)
	ran := browsertest.Evaluate[bool](p, `(() => {
		const s = document.createElement("script");
		s.textContent = "window.injected = true";
		document.body.appendChild(s);
		return window.injected === true;
	})()`)
	if ran {
		t.Errorf("an inline script ran: the Content-Security-Policy does not forbid scripts")
	}
	var reported bool
	for _, m := range p.Errors() {
		reported = reported || (m.Source == "security" && strings.Contains(m.Text, "Content Security Policy"))
	}
	if !reported {
		t.Errorf("the browser reported no Content-Security-Policy violation for the inline script: %v", p.Messages())
	}
}

// checkBadRequests: an unknown page is 404 and a malformed parameter 400,
// each an error page a person can read (with the reason, accessible, no
// console error but its own status).
func checkBadRequests(t *testing.T, v *viewer) {
	for _, c := range []struct {
		path   string
		status int64
		says   string
	}{
		{"/no-such-page", http.StatusNotFound, "no page at /no-such-page"},
		{"/keys?per=100000", http.StatusBadRequest, "per must be a number from 10 to 500"},
		{"/dmarc?days=0", http.StatusBadRequest, "days must be a number from 1 to 90"},
		{"/keys/unknown.example", http.StatusNotFound, "unknown.example"},
	} {
		p := v.load(t, c.path, c.status)
		containsAll(t, c.path, p.Text("main p.error"), c.says)
		status, body := v.d.get(t, c.path, http.Header{"Accept": {"application/json"}})
		if int64(status) != c.status || !strings.Contains(string(body), c.says) {
			t.Errorf("%s as JSON: status %d: %s", c.path, status, body)
		}
	}
}

// writeTokenFile writes a bearer token file, mode 0600.
func writeTokenFile(t *testing.T, token string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(path, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// checkToken: a script's bearer token opens the pages (JSON and, in the
// browser, HTML); another token does not.
func checkToken(t *testing.T, b *browsertest.Browser, d *daemon, token string) {
	var js keysJSON
	d.getJSON(t, "/keys", http.Header{"Authorization": {"Bearer " + token}}, &js)
	if js.Total != 3 {
		t.Errorf("/keys with the token: %d domains, want 3", js.Total)
	}
	if status, _ := d.get(t, "/keys?format=json", http.Header{"Authorization": {"Bearer " + strings.Repeat("x", len(token))}}); status != http.StatusUnauthorized {
		t.Errorf("/keys with another token: status %d, want 401", status)
	}
	v := newViewer(b, d, map[string]string{"Authorization": "Bearer " + token})
	p := v.load(t, "/keys", http.StatusOK)
	if rows := readKeyRows(p); len(rows) != len(wantKeys) {
		t.Errorf("/keys with the token shows %d keys, want %d", len(rows), len(wantKeys))
	}
}
