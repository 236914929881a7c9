package browsertest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// Defaults of PageOptions.
const (
	DefaultWidth   = 1280
	DefaultHeight  = 800
	DefaultTimeout = 60 * time.Second
)

// tabLifetime bounds everything done in one tab (loading, reading,
// screenshots): a stuck browser fails the test instead of hanging it.
const tabLifetime = 5 * time.Minute

// PageOptions say how a tab shows its page.
type PageOptions struct {
	// Width and Height are the viewport in CSS pixels; 0 means
	// DefaultWidth × DefaultHeight.
	Width, Height int64
	// Header are extra HTTP request headers sent with every request of
	// the tab, e.g. Authorization.
	Header map[string]string
	// Timeout bounds the loading of the page and each later action; 0
	// means DefaultTimeout.
	Timeout time.Duration
}

// Page is one tab that loaded one page. Its methods fail the test on a
// browser error.
type Page struct {
	// URL is the address loaded; Response the answer to its document.
	URL      string
	Response *network.Response
	// LoadError is why the browser did not show the document although
	// the server answered, e.g. net::ERR_INVALID_AUTH_CREDENTIALS for a
	// 401 with a login challenge (headless Chromium asks nobody); Response
	// is then the answer it got. Empty when the page loaded.
	LoadError string

	t       testing.TB
	ctx     context.Context
	timeout time.Duration

	mu       sync.Mutex
	messages []Message
	// document is the last answer to a document request of the tab.
	document *network.Response
}

// Message is one thing the page wrote to its console: a call of the
// console API, an uncaught exception, or an entry of the browser's log
// (a failed request, a Content-Security-Policy violation).
type Message struct {
	// Level is "error", "warning", "info", "log" or "debug"; an
	// exception is "error".
	Level string
	// Source is "console", "exception" or the browser log's source
	// ("network", "security", ...).
	Source string
	Text   string
	URL    string
}

func (m Message) String() string {
	s := m.Level + " (" + m.Source + "): " + m.Text
	if m.URL != "" {
		s += " [" + m.URL + "]"
	}
	return s
}

// Open opens a new tab, sets its viewport and headers, loads url and
// waits for the page's load event. The tab is closed when t ends.
func (b *Browser) Open(t testing.TB, url string, o PageOptions) *Page {
	t.Helper()
	if o.Width == 0 {
		o.Width, o.Height = DefaultWidth, DefaultHeight
	}
	if o.Timeout == 0 {
		o.Timeout = DefaultTimeout
	}
	p := &Page{URL: url, t: t, timeout: o.Timeout}
	life, cancelLife := context.WithTimeout(b.ctx, tabLifetime)
	ctx, cancelTab := chromedp.NewContext(life, chromedp.WithListener(p.listen))
	t.Cleanup(func() { cancelTab(); cancelLife() })
	p.ctx = ctx
	// The first action opens the tab; it runs on ctx itself (a deadline
	// of its own would close the tab when it ends).
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(o.Width, o.Height)); err != nil {
		t.Fatalf("browsertest: open a tab for %s: %v", url, err)
	}
	if len(o.Header) > 0 {
		h := network.Headers{}
		for k, v := range o.Header {
			h[k] = v
		}
		if _, err := chromedp.Call(ctx, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{Headers: h}); err != nil {
			t.Fatalf("browsertest: set the headers of %s: %v", url, err)
		}
	}
	resp, err := run(p, chromedp.NavigateResponse(url))
	var loadErr *chromedp.LoadError
	switch {
	case errors.As(err, &loadErr) && p.documentResponse() != nil:
		p.LoadError, resp = loadErr.ErrorText, p.documentResponse()
	case err != nil:
		t.Fatalf("browsertest: load %s: %v", url, err)
	}
	p.Response = resp
	return p
}

// documentResponse returns the last answer to a document request.
func (p *Page) documentResponse() *network.Response {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.document
}

// run runs a within the page's timeout.
func run[T any](p *Page, a chromedp.Action[T]) (T, error) {
	ctx, cancel := context.WithTimeout(p.ctx, p.timeout)
	defer cancel()
	return chromedp.Run(ctx, a)
}

// Status is the HTTP status of the page's document.
func (p *Page) Status() int64 {
	if p.Response == nil {
		return 0
	}
	return p.Response.Status
}

// listen keeps the console messages; it runs in the tab's event loop, so
// it only appends.
func (p *Page) listen(ev any) {
	var m Message
	switch ev := ev.(type) {
	case *network.EventResponseReceived:
		if ev.Type == network.ResourceTypeDocument && ev.Response != nil {
			p.mu.Lock()
			p.document = ev.Response
			p.mu.Unlock()
		}
		return
	case *runtime.EventConsoleAPICalled:
		m = Message{Level: consoleLevel(ev.Type), Source: "console", Text: argsText(ev.Args)}
		if st := ev.StackTrace; st != nil && len(st.CallFrames) > 0 {
			m.URL = st.CallFrames[0].URL
		}
	case *runtime.EventExceptionThrown:
		d := ev.ExceptionDetails
		if d == nil {
			return
		}
		m = Message{Level: "error", Source: "exception", Text: d.Text, URL: d.URL}
		if d.Exception != nil {
			m.Text += " " + d.Exception.Description
		}
	case *log.EventEntryAdded:
		e := ev.Entry
		if e == nil {
			return
		}
		m = Message{Level: string(e.Level), Source: string(e.Source), Text: e.Text, URL: e.URL}
	default:
		return
	}
	p.mu.Lock()
	p.messages = append(p.messages, m)
	p.mu.Unlock()
}

// consoleLevel maps a console API call to a level: error and assert are
// errors, warning a warning, the rest log.
func consoleLevel(typ runtime.ConsoleAPICalledType) string {
	switch typ {
	case runtime.ConsoleAPICalledTypeError, runtime.ConsoleAPICalledTypeAssert:
		return "error"
	case runtime.ConsoleAPICalledTypeWarning:
		return "warning"
	}
	return "log"
}

// argsText is the arguments of a console call as text.
func argsText(args []*runtime.RemoteObject) string {
	var parts []string
	for _, a := range args {
		switch {
		case a.Description != "":
			parts = append(parts, a.Description)
		case len(a.Value) > 0:
			var s string
			if json.Unmarshal(a.Value, &s) == nil {
				parts = append(parts, s)
			} else {
				parts = append(parts, string(a.Value))
			}
		default:
			parts = append(parts, string(a.Type))
		}
	}
	return strings.Join(parts, " ")
}

// Messages returns what the page wrote to its console so far. It first
// makes a round trip to the tab, so that every event the browser sent
// before is in.
func (p *Page) Messages() []Message {
	p.t.Helper()
	if _, err := run(p, chromedp.Evaluate[chromedp.Void](`0`)); err != nil {
		p.t.Fatalf("browsertest: %s: %v", p.URL, err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Message(nil), p.messages...)
}

// Errors returns the console messages of level error (console.error,
// exceptions, failed requests, Content-Security-Policy violations).
func (p *Page) Errors() []Message {
	p.t.Helper()
	var errs []Message
	for _, m := range p.Messages() {
		if m.Level == "error" {
			errs = append(errs, m)
		}
	}
	return errs
}

// Evaluate evaluates a JavaScript expression in the page and decodes its
// result (JSON) into T; a thrown exception fails the test. With
// chromedp.EvalAwaitPromise, a promise's value is awaited.
func Evaluate[T any](p *Page, expression string, opts ...chromedp.EvaluateOption) T {
	p.t.Helper()
	v, err := run(p, chromedp.Evaluate[T](expression, opts...))
	if err != nil {
		p.t.Fatalf("browsertest: %s: evaluate: %v", p.URL, err)
	}
	return v
}

// Texts returns the rendered text (innerText) of every element matching
// the CSS selector, in document order.
func (p *Page) Texts(selector string) []string {
	p.t.Helper()
	return Evaluate[[]string](p, fmt.Sprintf(`Array.from(document.querySelectorAll(%s), e => e.innerText.trim())`, jsString(selector)))
}

// Text returns the rendered text of the first element matching the CSS
// selector; none fails the test.
func (p *Page) Text(selector string) string {
	p.t.Helper()
	texts := p.Texts(selector)
	if len(texts) == 0 {
		p.t.Fatalf("browsertest: %s: nothing matches %s", p.URL, selector)
	}
	return texts[0]
}

// Count returns how many elements match the CSS selector.
func (p *Page) Count(selector string) int {
	p.t.Helper()
	return Evaluate[int](p, fmt.Sprintf(`document.querySelectorAll(%s).length`, jsString(selector)))
}

// Resize sets the viewport (the responsive layout follows it).
func (p *Page) Resize(width, height int64) {
	p.t.Helper()
	if _, err := run(p, chromedp.EmulateViewport(width, height)); err != nil {
		p.t.Fatalf("browsertest: %s: resize to %dx%d: %v", p.URL, width, height, err)
	}
}

// Screenshot writes a PNG of the whole page (beyond the viewport) to path.
func (p *Page) Screenshot(path string) {
	p.t.Helper()
	png, err := run(p, chromedp.FullScreenshot(100))
	if err != nil {
		p.t.Fatalf("browsertest: %s: screenshot: %v", p.URL, err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		p.t.Fatalf("browsertest: screenshot: %v", err)
	}
}

// ScreenshotWidths resizes the viewport to each width in turn, writes a
// full-page screenshot dir/<name>-<width>.png for each, logs its path,
// and restores the first width.
func (p *Page) ScreenshotWidths(dir, name string, widths ...int64) {
	p.t.Helper()
	for _, w := range widths {
		p.Resize(w, DefaultHeight)
		path := filepath.Join(dir, fmt.Sprintf("%s-%d.png", safeName(name), w))
		p.Screenshot(path)
		if abs, err := filepath.Abs(path); err == nil {
			path = abs
		}
		p.t.Logf("screenshot of %s at %dpx: %s", p.URL, w, path)
	}
	if len(widths) > 0 {
		p.Resize(widths[0], DefaultHeight)
	}
}

// jsString is s as a JavaScript string literal.
func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
