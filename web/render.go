package web

import (
	"bytes"
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/authmilter/authmilter/reports"
)

//go:embed templates/*.html static/style.css
var assets embed.FS

// stylePath is the stylesheet's URL path; the version query (its hash)
// lets it be cached for a year.
const stylePath = "/static/style.css"

// pageNames are the templates of the pages, each with layout.html.
var pageNames = []string{"overview", "keys", "domainkeys", "dmarc", "dmarcdomain", "error"}

// pages are the parsed templates and the stylesheet.
type pages struct {
	tmpl     map[string]*template.Template
	style    []byte
	styleURL string
}

// loadPages parses the embedded templates.
func loadPages() (*pages, error) {
	style, err := assets.ReadFile("static/style.css")
	if err != nil {
		return nil, fmt.Errorf("web: stylesheet: %w", err)
	}
	sum := sha256.Sum256(style)
	p := &pages{tmpl: map[string]*template.Template{}, style: style,
		styleURL: stylePath + "?v=" + hex.EncodeToString(sum[:6])}
	for _, name := range pageNames {
		t, err := template.New("layout.html").Funcs(templateFuncs).ParseFS(assets, "templates/layout.html", "templates/parts.html", "templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("web: template %s: %w", name, err)
		}
		p.tmpl[name] = t
	}
	return p, nil
}

// templateFuncs are the helpers the templates use.
var templateFuncs = template.FuncMap{
	"time": func(t any) string {
		switch v := t.(type) {
		case time.Time:
			if v.IsZero() {
				return "—"
			}
			return v.UTC().Format("2006-01-02 15:04 UTC")
		case *time.Time:
			if v == nil || v.IsZero() {
				return "—"
			}
			return v.UTC().Format("2006-01-02 15:04 UTC")
		}
		return "—"
	},
	"date": func(t time.Time) string { return t.UTC().Format("2006-01-02") },
	"iso":  func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
	"pct": func(part, whole int64) string {
		if whole == 0 {
			return "—"
		}
		return strconv.FormatFloat(float64(part)*100/float64(whole), 'f', 1, 64) + "%"
	},
	"num":        func(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) },
	"dur":        func(d time.Duration) string { return d.Round(time.Second).String() },
	"statusText": http.StatusText,
	"orgName":    orgName,
	"dayTable": func(caption string, days []reports.DayTotals) dayTableData {
		return dayTableData{caption, days}
	},
}

// dayTableData is the daytable template's data: a chart's numbers.
type dayTableData struct {
	Caption string
	Days    []reports.DayTotals
}

// layout is what every page's template gets.
type layout struct {
	Title    string
	Nav      string
	StyleURL string
	Version  string
	// Data is the page's own data (the same as its JSON).
	Data any
}

// render writes a page: its data as JSON, or its template over the
// layout. The answer is made whole before it is written, so that an error
// is still an error page and a slow client holds no lock.
func (h *Handler) render(w http.ResponseWriter, r *http.Request, f format, name, title string, data any) error {
	return h.renderStatus(w, r, f, http.StatusOK, name, title, data)
}

func (h *Handler) renderStatus(w http.ResponseWriter, r *http.Request, f format, status int, name, title string, data any) error {
	if err := r.Context().Err(); err != nil {
		return err
	}
	var buf bytes.Buffer
	if f == formatJSON {
		enc := json.NewEncoder(&buf)
		enc.SetIndent("", "  ")
		if err := enc.Encode(data); err != nil {
			return fmt.Errorf("web: %s: json: %w", name, err)
		}
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
	} else {
		l := layout{Title: title, Nav: navOf(name), StyleURL: h.pages.styleURL, Version: h.opt.Version, Data: data}
		if err := h.pages.tmpl[name].Execute(&buf, l); err != nil {
			return fmt.Errorf("web: %s: template: %w", name, err)
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
	}
	w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(buf.Bytes())
	}
	return nil
}

// navOf is the main navigation entry of a page.
func navOf(name string) string {
	switch name {
	case "keys", "domainkeys":
		return "keys"
	case "dmarc", "dmarcdomain":
		return "dmarc"
	case "overview":
		return "overview"
	}
	return ""
}

// errorPage is an error answer. JSON: {"error": "..."}.
type errorPage struct {
	Status int    `json:"-"`
	Error  string `json:"error"`
	// Store is set when the reports store cannot be used.
	Store bool `json:"-"`
}

// writeError writes an error page (or JSON) with status.
func (h *Handler) writeError(w http.ResponseWriter, r *http.Request, f format, status int, msg string, store bool) {
	data := errorPage{Status: status, Error: msg, Store: store}
	title := strconv.Itoa(status) + " " + http.StatusText(status)
	name := "error"
	if store {
		title = "DMARC results: the reports store is not reachable"
	}
	if err := h.renderStatus(w, r.WithContext(context.WithoutCancel(r.Context())), f, status, name, title, data); err != nil {
		h.log.Error("web: error page", "err", err)
		http.Error(w, msg, status)
	}
}

// serveStyle serves the stylesheet, cached for a year: its URL changes
// with its content.
func (h *Handler) serveStyle(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/css; charset=utf-8")
	w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	w.Header().Set("Content-Length", strconv.Itoa(len(h.pages.style)))
	if r.Method != http.MethodHead {
		_, _ = w.Write(h.pages.style)
	}
}

// pageURL is path with the non-empty params, page and per (per only when
// not def).
func pageURL(path string, params map[string]string, page, per, def int) string {
	v := url.Values{}
	for k, val := range params {
		if val != "" {
			v.Set(k, val)
		}
	}
	if page > 1 {
		v.Set("page", strconv.Itoa(page))
	}
	if per != def {
		v.Set("per", strconv.Itoa(per))
	}
	if len(v) == 0 {
		return path
	}
	return path + "?" + v.Encode()
}
