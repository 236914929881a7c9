package browsertest

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
)

// TestPage loads small pages from a local server in one browser: the text
// and the status are read, a script's console error, an exception and a
// blocked inline script (Content-Security-Policy) are collected, the
// extra headers reach the server, and screenshots are PNG files.
func TestPage(t *testing.T) {
	var gotAuth string
	mux := http.NewServeMux()
	mux.HandleFunc("/clean", func(w http.ResponseWriter, r *http.Request) {
		gotAuth = r.Header.Get("Authorization")
		fmt.Fprint(w, `<!doctype html><html lang="en"><title>clean</title><link rel="icon" href="data:,"><h1 id="t">Hello <b>there</b></h1><p class="x">one</p><p class="x">two</p>`)
	})
	mux.HandleFunc("/noisy", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", "default-src 'none'; script-src 'self'")
		fmt.Fprint(w, `<!doctype html><html lang="en"><title>noisy</title><link rel="icon" href="data:,"><script src="/noisy.js"></script><script>console.log("inline ran")</script>`)
	})
	mux.HandleFunc("/noisy.js", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/javascript")
		fmt.Fprint(w, `console.error("bad thing"); setTimeout(() => { throw new Error("boom") }, 0);`)
	})
	mux.HandleFunc("/denied", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no", http.StatusUnauthorized)
	})
	mux.HandleFunc("/login", func(w http.ResponseWriter, r *http.Request) {
		if _, _, ok := r.BasicAuth(); !ok {
			w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
			http.Error(w, "log in", http.StatusUnauthorized)
			return
		}
		fmt.Fprint(w, `<!doctype html><html lang="en"><title>in</title><p id="in">logged in</p>`)
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()

	b := Start(t)

	p := b.Open(t, srv.URL+"/clean", PageOptions{Header: map[string]string{"Authorization": "Bearer x"}})
	if p.Status() != 200 || p.Text("#t") != "Hello there" || strings.Join(p.Texts("p.x"), ",") != "one,two" || p.Count("p") != 2 {
		t.Errorf("clean page: status %d, texts %q %q", p.Status(), p.Text("#t"), p.Texts("p.x"))
	}
	if gotAuth != "Bearer x" {
		t.Errorf("Authorization header %q, want the extra header", gotAuth)
	}
	if errs := p.Errors(); len(errs) != 0 {
		t.Errorf("clean page has console errors: %v", errs)
	}
	dir := t.TempDir()
	p.ScreenshotWidths(dir, "clean", 1280, 390)
	for _, name := range []string{"clean-1280.png", "clean-390.png"} {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil || !bytes.HasPrefix(data, []byte("\x89PNG\r\n")) {
			t.Errorf("%s: not a PNG (%v)", name, err)
		}
	}

	p = b.Open(t, srv.URL+"/noisy", PageOptions{})
	// The exception is thrown after the load: wait for it.
	Evaluate[bool](p, `new Promise(r => setTimeout(() => r(true), 50))`, chromedp.EvalAwaitPromise)
	text := fmt.Sprint(p.Errors())
	for _, want := range []string{"bad thing", "boom", "Content Security Policy"} {
		if !strings.Contains(text, want) {
			t.Errorf("errors of the noisy page lack %q: %s", want, text)
		}
	}

	if p := b.Open(t, srv.URL+"/denied", PageOptions{}); p.Status() != http.StatusUnauthorized || p.LoadError != "" {
		t.Errorf("denied page: status %d (%s), want 401 shown", p.Status(), p.LoadError)
	}
	// A login challenge: the status is there, and why nothing is shown.
	if p := b.Open(t, srv.URL+"/login", PageOptions{}); p.Status() != http.StatusUnauthorized || p.LoadError == "" {
		t.Errorf("login page without credentials: status %d, load error %q; want 401 and an error", p.Status(), p.LoadError)
	}
	p = b.Open(t, srv.URL+"/login", PageOptions{Header: map[string]string{"Authorization": "Basic YTpi"}})
	if p.Status() != 200 || p.Text("#in") != "logged in" {
		t.Errorf("login page with credentials: status %d (%s)", p.Status(), p.LoadError)
	}
}

// TestExecPathMissing: a browser that is not there says what to install.
func TestExecPathMissing(t *testing.T) {
	t.Setenv("CHROMIUM", filepath.Join(t.TempDir(), "no-such-chromium"))
	_, err := ExecPath()
	if err == nil || !strings.Contains(err.Error(), InstallHint) {
		t.Errorf("ExecPath = %v, want an error with %q", err, InstallHint)
	}
}
