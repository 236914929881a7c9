package web

import (
	"context"
	"strings"
	"testing"

	"golang.org/x/net/html"

	"github.com/authmilter/authmilter/reports"
)

// TestHTMLStructure: every page (errors and the store message included)
// parses, is in English, has one h1 and headings in order, the
// landmarks and a skip link, a caption and scoped headers in every
// table, a label for every form control, charts with a role and a title,
// and no script, style attribute or external URL.
func TestHTMLStructure(t *testing.T) {
	h := newTestHandler(t, testOptions(t, newClock()))
	down := testOptions(t, newClock())
	down.OpenReports = func(context.Context) (reports.Store, error) { return nil, errDown }
	hDown := newTestHandler(t, down)
	pages := []struct {
		h      *Handler
		target string
	}{
		{h, "/"}, {h, "/keys"}, {h, "/keys?q=example&state=published&per=10"}, {h, "/keys?q=nothing-matches"},
		{h, "/keys/example.com"}, {h, "/keys/fbl.esp.example"}, {h, "/keys/customer.test"},
		{h, "/dmarc"}, {h, "/dmarc?side=recorded"}, {h, "/dmarc?q=none"}, {h, "/dmarc/example.com"}, {h, "/dmarc/example.com?side=recorded"},
		{h, "/dmarc/nodata.example"}, {h, "/nope"}, {h, "/keys?page=0"}, {hDown, "/dmarc"}, {hDown, "/dmarc/example.com"},
	}
	for _, p := range pages {
		t.Run(p.target, func(t *testing.T) {
			rec := get(p.h, "GET", p.target)
			doc, err := html.Parse(rec.Body)
			if err != nil {
				t.Fatal(err)
			}
			checkPage(t, doc)
		})
	}
}

func checkPage(t *testing.T, doc *html.Node) {
	t.Helper()
	var nodes []*html.Node
	var walk func(n *html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode {
			nodes = append(nodes, n)
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(doc)
	count := map[string]int{}
	ids := map[string]bool{}
	labels := map[string]bool{}
	lastLevel := 0
	for _, n := range nodes {
		count[n.Data]++
		if id := getAttr(n, "id"); id != "" {
			if ids[id] {
				t.Errorf("id %q twice", id)
			}
			ids[id] = true
		}
		if n.Data == "label" {
			labels[getAttr(n, "for")] = true
		}
		if len(n.Data) == 2 && n.Data[0] == 'h' && n.Data[1] >= '1' && n.Data[1] <= '6' {
			level := int(n.Data[1] - '0')
			if level > lastLevel+1 {
				t.Errorf("heading %s after h%d", n.Data, lastLevel)
			}
			lastLevel = level
		}
		if hasAttr(n, "style") {
			t.Errorf("<%s> has a style attribute", n.Data)
		}
		for _, a := range []string{"href", "src", "action"} {
			v := getAttr(n, a)
			if strings.HasPrefix(v, "http:") || strings.HasPrefix(v, "https:") || strings.HasPrefix(v, "//") {
				t.Errorf("<%s %s=%q>: external URL", n.Data, a, v)
			}
		}
		switch n.Data {
		case "html":
			if getAttr(n, "lang") != "en" {
				t.Error("html without lang=en")
			}
		case "table":
			first := firstElement(n)
			if first == nil || first.Data != "caption" {
				t.Errorf("table %q without a caption first", getAttr(n, "id"))
			}
		case "th":
			if s := getAttr(n, "scope"); s != "col" && s != "row" {
				t.Errorf("th without scope: %q", text(n))
			}
		case "nav":
			if getAttr(n, "aria-label") == "" {
				t.Error("nav without aria-label")
			}
		case "svg":
			if getAttr(n, "role") != "img" || getAttr(n, "aria-labelledby") == "" {
				t.Error("svg without role=img and aria-labelledby")
			}
		}
	}
	for _, n := range nodes {
		switch n.Data {
		case "input", "select", "textarea":
			if getAttr(n, "type") == "hidden" {
				continue
			}
			if id := getAttr(n, "id"); id == "" || !labels[id] {
				t.Errorf("<%s name=%q> without a label", n.Data, getAttr(n, "name"))
			}
		case "svg":
			if id := getAttr(n, "aria-labelledby"); !ids[id] {
				t.Errorf("svg labelled by missing %q", id)
			}
		}
	}
	for tag, want := range map[string]int{"h1": 1, "header": 1, "main": 1, "footer": 1, "script": 0, "style": 0, "iframe": 0, "img": 0} {
		if count[tag] != want {
			t.Errorf("%d <%s>, want %d", count[tag], tag, want)
		}
	}
	var mainNav, skip bool
	for _, n := range nodes {
		mainNav = mainNav || (n.Data == "nav" && getAttr(n, "aria-label") == "Main")
		skip = skip || (n.Data == "a" && getAttr(n, "href") == "#main")
	}
	if !mainNav || !skip || !ids["main"] {
		t.Errorf("main nav %v, skip link %v, #main %v", mainNav, skip, ids["main"])
	}
}

func getAttr(n *html.Node, name string) string {
	for _, a := range n.Attr {
		if a.Key == name {
			return a.Val
		}
	}
	return ""
}

func hasAttr(n *html.Node, name string) bool {
	for _, a := range n.Attr {
		if a.Key == name {
			return true
		}
	}
	return false
}

func firstElement(n *html.Node) *html.Node {
	for c := n.FirstChild; c != nil; c = c.NextSibling {
		if c.Type == html.ElementNode {
			return c
		}
	}
	return nil
}

func text(n *html.Node) string {
	var b strings.Builder
	var walk func(*html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.TextNode {
			b.WriteString(n.Data)
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(n)
	return b.String()
}
