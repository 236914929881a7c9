package web_test

import (
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/authmilter/authmilter/internal/browsertest"
)

// a11yViolations runs testdata/a11y.js in the page and returns what it
// found.
func a11yViolations(t *testing.T, p *browsertest.Page) []string {
	t.Helper()
	script, err := os.ReadFile("testdata/a11y.js")
	if err != nil {
		t.Fatal(err)
	}
	return browsertest.Evaluate[[]string](p, string(script))
}

// checkA11y fails the test with every accessibility violation of the page.
func checkA11y(t *testing.T, p *browsertest.Page) {
	t.Helper()
	if v := a11yViolations(t, p); len(v) > 0 {
		t.Errorf("%s: %d accessibility violations:\n  %s", p.URL, len(v), strings.Join(v, "\n  "))
	}
}

// TestA11yCheck tests the checker itself: a page that breaks each rule
// once gives exactly those violations, and a page that follows them (with
// the cases the checker must not flag) gives none.
func TestA11yCheck(t *testing.T) {
	srv := httptest.NewServer(http.FileServer(http.Dir("testdata")))
	defer srv.Close()
	b := browsertest.Start(t)

	// Each violation of a11y-bad.html: its rule and a part of its text.
	want := []struct{ rule, part string }{
		{"html-lang", "no lang attribute"},
		{"title", "no <title>"},
		{"one-h1", "2 h1 elements"},
		{"heading-order", "h4#skipped"},
		{"heading-empty", "h2#empty-heading"},
		{"landmark-banner", "no banner"},
		{"landmark-navigation-label", "nav"},
		{"landmark-main", "0 main landmarks"},
		{"landmark-contentinfo", "no contentinfo"},
		{"table-caption", "table#no-caption"},
		{"th-scope", "th#no-scope"},
		{"label", "input#unlabelled"},
		{"button-name", "button#nameless"},
		{"svg-img", `svg#chart: the svg has no role="img"`},
		{"svg-img", "svg#chart: the svg has no accessible name"},
		{"img-alt", "img#no-alt"},
		{"link-name", "a#empty-link"},
		{"contrast", "p#pale"},
		{"contrast", "p#faint"},
		{"contrast", "span#dark-on-dark"},
		{"contrast", "text#svg-pale"},
		{"contrast", "p#gradient"},
		{"labelledby", "div#dangling"},
	}
	got := a11yViolations(t, b.Open(t, srv.URL+"/a11y-bad.html", browsertest.PageOptions{}))
	matched := make([]bool, len(got))
	for _, w := range want {
		found := false
		for i, g := range got {
			if !matched[i] && strings.HasPrefix(g, w.rule+": ") && strings.Contains(g, w.part) {
				matched[i], found = true, true
				break
			}
		}
		if !found {
			t.Errorf("bad page: no %s violation about %q", w.rule, w.part)
		}
	}
	for i, g := range got {
		if !matched[i] {
			t.Errorf("bad page: unexpected violation %s", g)
		}
	}

	p := b.Open(t, srv.URL+"/a11y-good.html", browsertest.PageOptions{})
	checkA11y(t, p)
	p.Resize(390, 844)
	checkA11y(t, p)
}
