package web_test

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/authmilter/authmilter/internal/browsertest"
)

// screenshotRoot is where the pages' screenshots go (ignored by git),
// relative to the package: test/web/screenshots/<test>/<page>-<width>.png.
const screenshotRoot = "screenshots"

// screenshotWidths are a desktop and a phone (the responsive layout).
var screenshotWidths = []int64{1280, 390}

// viewer loads a daemon's pages in the shared browser, with the login
// header given (nil: none).
type viewer struct {
	b      *browsertest.Browser
	d      *daemon
	header map[string]string
}

func newViewer(b *browsertest.Browser, d *daemon, header map[string]string) *viewer {
	return &viewer{b: b, d: d, header: header}
}

// allowed is a console error a page may have: its own document's status
// (a 401 or a 503 page says so in the console).
type allowed func(browsertest.Message) bool

// documentStatus allows the console's note of the document's own status.
func documentStatus(p *browsertest.Page, status int64) allowed {
	return func(m browsertest.Message) bool {
		return m.Source == "network" && m.URL == p.URL && strings.Contains(m.Text, fmt.Sprintf("status of %d", status))
	}
}

// load opens path, takes its screenshots at every width first (so they
// are there when a check fails), fails the test unless the status is
// want, and checks that the page wrote no error to the console (a
// Content-Security-Policy violation is one) and passes the
// accessibility check at every width.
func (v *viewer) load(t *testing.T, path string, want int64) *browsertest.Page {
	t.Helper()
	p := v.b.Open(t, v.d.base+path, browsertest.PageOptions{Header: v.header})
	name := strings.NewReplacer("/", "_", "?", "_", "=", "-", "&", "_").Replace(strings.TrimPrefix(path, "/"))
	if name == "" {
		name = "overview"
	}
	p.ScreenshotWidths(browsertest.ScreenshotDir(t, screenshotRoot, t.Name()), name, screenshotWidths...)
	if p.Status() != want {
		t.Fatalf("%s: status %d (%s), want %d; the page says:\n%s", path, p.Status(), p.LoadError, want, p.Text("body"))
	}
	if p.LoadError != "" {
		if want == http.StatusOK {
			t.Fatalf("%s: not shown: %s", path, p.LoadError)
		}
		// A login challenge: headless Chromium shows its own error page
		// (nobody to ask for a password), nothing of ours to check.
		t.Logf("%s: status %d, the browser shows: %s", path, p.Status(), p.LoadError)
		return p
	}
	// Every page declares no icon (<link rel="icon" href="data:,">), so
	// the browser asks for no /favicon.ico: any console error counts.
	ok := func(browsertest.Message) bool { return false }
	if want != http.StatusOK {
		ok = documentStatus(p, want)
	}
	for _, m := range p.Errors() {
		if !ok(m) {
			t.Errorf("%s: console error: %s", path, m)
		}
	}
	for _, w := range screenshotWidths {
		p.Resize(w, browsertest.DefaultHeight)
		if found := a11yViolations(t, p); len(found) > 0 {
			t.Errorf("%s at %dpx: %d accessibility violations:\n  %s", path, w, len(found), strings.Join(found, "\n  "))
		}
		// Responsive: the page fits the width; only wide tables scroll,
		// inside their own box.
		if over := browsertest.Evaluate[int](p, `document.documentElement.scrollWidth - window.innerWidth`); over > 0 {
			t.Errorf("%s at %dpx: the page is %dpx wider than the window", path, w, over)
		}
	}
	p.Resize(screenshotWidths[0], browsertest.DefaultHeight)
	return p
}

// keyCells is what a person reads in one row of a keys table.
type keyCells struct {
	Domain    string `json:"domain"`
	Selector  string `json:"selector"`
	Algorithm string `json:"algorithm"`
	State     string `json:"state"`  // the DNS state, without its detail
	Detail    string `json:"detail"` // the state's detail
	Active    string `json:"active"` // "active" or "no: <why>"
	Warnings  string `json:"warnings"`
}

// readKeyRows reads the rows of table#keys.
func readKeyRows(p *browsertest.Page) []keyCells {
	return browsertest.Evaluate[[]keyCells](p, `Array.from(document.querySelectorAll("#keys tr[data-selector]"), tr => {
		const cells = tr.querySelectorAll("td");
		const state = tr.querySelector("td.state");
		const detail = state.querySelector(".detail");
		const stateOnly = state.cloneNode(true);
		stateOnly.querySelectorAll(".detail").forEach(e => e.remove());
		return {
			domain: tr.dataset.domain, selector: tr.dataset.selector,
			algorithm: cells[1].innerText.trim(),
			state: stateOnly.textContent.trim(), detail: detail ? detail.innerText.trim() : "",
			active: tr.querySelector("td.active").innerText.trim(),
			warnings: cells[cells.length - 1].innerText.trim(),
		};
	})`)
}

// keyRowMap indexes rows by domain/selector.
func keyRowMap(rows []keyCells) map[string]keyCells {
	m := map[string]keyCells{}
	for _, r := range rows {
		m[r.Domain+"/"+r.Selector] = r
	}
	return m
}

// sourceCells is one row of table#sources on a domain's DMARC page.
type sourceCells struct {
	IP       string `json:"ip"`
	Org      string `json:"org"`
	Messages string `json:"messages"`
	Neither  string `json:"neither"`
}

// readSources reads the rows of table#sources (received side: with the
// reporting organisation).
func readSources(p *browsertest.Page) []sourceCells {
	return browsertest.Evaluate[[]sourceCells](p, `(() => {
		const heads = Array.from(document.querySelectorAll("#sources thead th"), th => th.innerText.trim());
		const col = name => heads.indexOf(name);
		return Array.from(document.querySelectorAll("#sources tbody tr[data-ip]"), tr => {
			const cells = Array.from(tr.children, c => c.innerText.trim());
			return {ip: tr.dataset.ip, org: col("Reported by") >= 0 ? cells[col("Reported by")] : "",
				messages: cells[col("Messages")], neither: cells[col("Neither")]};
		});
	})()`)
}

// containsAll fails the test for each want that text lacks.
func containsAll(t *testing.T, what, text string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(text, w) {
			t.Errorf("%s does not say %q:\n%s", what, w, text)
		}
	}
}

// sortedKeys returns m's keys in order.
func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
