package web

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/authmilter/authmilter/policy"
)

// maxURI is the longest request URI served (414 beyond).
const maxURI = 2048

// securityHeaders are set on every answer, errors included: no script,
// no frame, no referrer, only our own stylesheet and inline SVG.
var securityHeaders = [][2]string{
	{"Content-Security-Policy", "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"},
	{"X-Content-Type-Options", "nosniff"},
	{"Referrer-Policy", "no-referrer"},
	{"X-Frame-Options", "DENY"},
}

// Handler is the status pages' http.Handler. It only reads: the current
// snapshot (Options.Policy), the key details, the metrics and the reports
// store.
type Handler struct {
	opt     Options
	log     *slog.Logger
	auth    *authenticator
	pages   *pages
	sampler *sampler
	store   *lazyStore
	// source returns the keys pages' view of the current snapshot (nil
	// when there is none yet); tests give a table made in memory.
	source func() keySource
}

// NewHandler checks o, reads the login files and returns the handler
// Start serves. Its sampler is not running: Start runs it (tests call
// sample themselves).
func NewHandler(o Options) (*Handler, error) {
	if o.Policy == nil {
		return nil, errors.New("web: Options.Policy is nil")
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.ReportsRetry <= 0 {
		o.ReportsRetry = 30 * time.Second
	}
	def := policy.DefaultWebConfig()
	if o.Config.MaxConnections < 1 {
		o.Config.MaxConnections = def.MaxConnections
	}
	if o.Config.RequestTimeout.Duration <= 0 {
		o.Config.RequestTimeout = def.RequestTimeout
	}
	if o.Reload == nil {
		o.Reload = func() ReloadStatus { return ReloadStatus{} }
	}
	auth, err := newAuthenticator(o.Config.PasswordFile, o.Config.TokenFile, o.Now)
	if err != nil {
		return nil, err
	}
	pg, err := loadPages()
	if err != nil {
		return nil, err
	}
	h := &Handler{opt: o, log: o.Logger, auth: auth, pages: pg,
		sampler: newSampler(o.Metrics, o.Now), store: newLazyStore(o.OpenReports, o.ReportsRetry, o.Now)}
	h.source = func() keySource {
		if p := o.Policy(); p != nil {
			return policySource{p}
		}
		return nil
	}
	return h, nil
}

func (h *Handler) now() time.Time { return h.opt.Now() }

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rec := &statusWriter{ResponseWriter: w, status: http.StatusOK}
	for _, kv := range securityHeaders {
		w.Header().Set(kv[0], kv[1])
	}
	w.Header().Set("Cache-Control", "no-store")
	defer func() {
		if rec.status >= 400 {
			h.log.Info("web: refused", "method", clip(r.Method), "path", clip(r.URL.EscapedPath()),
				"remote", r.RemoteAddr, "status", rec.status)
		}
	}()
	// Until the query is parsed, errors answer in the form the request
	// seems to want.
	early := guessFormat(r)
	if len(r.RequestURI) > maxURI {
		h.fail(rec, r, early, httpError{http.StatusRequestURITooLong, fmt.Sprintf("the request URI is %d bytes long; at most %d", len(r.RequestURI), maxURI)})
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		h.fail(rec, r, early, httpError{http.StatusMethodNotAllowed, "the status pages are read-only: GET and HEAD only"})
		return
	}
	if status, msg := h.auth.check(r, h.log); status != 0 {
		if status == http.StatusUnauthorized {
			w.Header().Set("WWW-Authenticate", `Basic realm="authmilter"`)
		}
		h.fail(rec, r, early, httpError{status, msg})
		return
	}
	q, err := parseQuery(r)
	if err != nil {
		h.fail(rec, r, early, err)
		return
	}
	f, err := requestFormat(r, q)
	if err != nil {
		h.fail(rec, r, early, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.opt.Config.RequestTimeout.Duration)
	defer cancel()
	r = r.WithContext(ctx)
	if err := h.route(rec, r, q, f); err != nil {
		h.fail(rec, r, f, err)
	}
}

// route serves the page of r's path.
func (h *Handler) route(w http.ResponseWriter, r *http.Request, q query, f format) error {
	path := r.URL.Path
	switch {
	case path == "/":
		return h.serveOverview(w, r, f)
	case path == "/keys":
		return h.serveKeys(w, r, q, f)
	case strings.HasPrefix(path, "/keys/") && !strings.Contains(path[len("/keys/"):], "/"):
		return h.serveDomainKeys(w, r, f, path[len("/keys/"):])
	case path == "/dmarc":
		return h.serveDMARC(w, r, q, f)
	case strings.HasPrefix(path, "/dmarc/") && !strings.Contains(path[len("/dmarc/"):], "/"):
		return h.serveDMARCDomain(w, r, q, f, path[len("/dmarc/"):])
	case path == stylePath:
		h.serveStyle(w, r)
		return nil
	}
	return notFound{"no page at " + clip(r.URL.EscapedPath())}
}

// format is the answer's form.
type format int

const (
	formatHTML format = iota
	formatJSON
)

// requestFormat returns the form asked for: ?format=json or html, else an
// Accept header that asks for JSON and not HTML.
func requestFormat(r *http.Request, q query) (format, error) {
	switch q.text("format") {
	case "json":
		return formatJSON, nil
	case "html":
		return formatHTML, nil
	case "":
		if _, given := q.v["format"]; given {
			return formatHTML, badf("format must be html or json, got an empty value")
		}
	default:
		return formatHTML, badf("format must be html or json, got %q", clip(q.text("format")))
	}
	accept := r.Header.Get("Accept")
	if strings.Contains(accept, "application/json") && !strings.Contains(accept, "text/html") {
		return formatJSON, nil
	}
	return formatHTML, nil
}

// guessFormat is the form of an answer to a request whose query may be
// malformed: JSON if the Accept header or a format=json asks for it.
func guessFormat(r *http.Request) format {
	accept := r.Header.Get("Accept")
	if strings.Contains(accept, "application/json") && !strings.Contains(accept, "text/html") {
		return formatJSON
	}
	if len(r.URL.RawQuery) <= maxURI && strings.Contains(r.URL.RawQuery, "format=json") {
		return formatJSON
	}
	return formatHTML
}

// httpError is an answer with a status and a message.
type httpError struct {
	status int
	msg    string
}

func (e httpError) Error() string { return e.msg }

// notFound is a page that does not exist.
type notFound struct{ msg string }

func (e notFound) Error() string { return e.msg }

// statusOf returns the status and the message for an error.
func statusOf(err error) (int, string) {
	var he httpError
	var br badRequest
	var nf notFound
	var sd storeDown
	switch {
	case errors.As(err, &he):
		return he.status, he.msg
	case errors.As(err, &br):
		return http.StatusBadRequest, br.msg
	case errors.As(err, &nf):
		return http.StatusNotFound, nf.msg
	case errors.As(err, &sd):
		return http.StatusServiceUnavailable, sd.Error()
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusServiceUnavailable, "the page took longer than web.request_timeout to make"
	}
	return http.StatusInternalServerError, "internal error: " + err.Error()
}

// fail answers with err's status and message, as an error page or JSON.
func (h *Handler) fail(w *statusWriter, r *http.Request, f format, err error) {
	status, msg := statusOf(err)
	if status >= 500 {
		h.log.Error("web: page failed", "path", clip(r.URL.EscapedPath()), "status", status, "err", err)
	}
	if w.wrote {
		return // the answer is on its way: nothing to add
	}
	var sd storeDown
	h.writeError(w, r, f, status, msg, errors.As(err, &sd))
}

// statusWriter remembers the status written, for the log line.
type statusWriter struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (w *statusWriter) WriteHeader(status int) {
	if !w.wrote {
		w.status, w.wrote = status, true
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	w.wrote = true
	return w.ResponseWriter.Write(b)
}
