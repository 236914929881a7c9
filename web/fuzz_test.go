package web

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// FuzzHandler sends hostile paths, queries, methods and Accept headers to
// the pages: every answer is one of the statuses the pages give, carries
// the security headers, and never panics.
func FuzzHandler(f *testing.F) {
	for _, seed := range []struct{ method, target, accept string }{
		{"GET", "/", ""},
		{"GET", "/keys?q=example&state=problem&page=1&per=10", ""},
		{"GET", "/keys/example.com?format=json", ""},
		{"HEAD", "/dmarc?side=received&days=7&q=ex%25_&page=2", "application/json"},
		{"GET", "/dmarc/example.com?side=recorded&days=90", "text/html"},
		{"GET", "/static/style.css?v=x", ""},
		{"POST", "/keys", ""},
		{"GET", "/keys?page=0&per=99999&state=%00&q=%ff%fe", ""},
		{"GET", "/dmarc/..%2f..%2fetc%2fpasswd", ""},
		{"GET", "/keys?q=a&q=b", "application/json;q=0.9, text/html;q=0.1"},
		{"GET", "/" + strings.Repeat("a", 3000), ""},
	} {
		f.Add(seed.method, seed.target, seed.accept)
	}
	h := newTestHandler(f, testOptions(f, newClock()))
	allowed := map[int]bool{200: true, 400: true, 404: true, 405: true, 414: true, 503: true}
	f.Fuzz(func(t *testing.T, method, target, accept string) {
		if !strings.HasPrefix(target, "/") || strings.ContainsAny(target, " \r\n\t#") || strings.ContainsAny(method, " \r\n\t") || method == "" {
			return // not a request line net/http would hand to a handler
		}
		req, err := http.NewRequest(method, "http://127.0.0.1:9892"+target, nil)
		if err != nil {
			return
		}
		req.RemoteAddr = "127.0.0.1:40000"
		req.Header.Set("Accept", accept)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if !allowed[rec.Code] {
			t.Fatalf("%s %q (Accept %q): status %d: %.200s", method, target, accept, rec.Code, rec.Body.String())
		}
		for _, kv := range securityHeaders {
			if rec.Header().Get(kv[0]) != kv[1] {
				t.Fatalf("%s %q: header %s = %q", method, target, kv[0], rec.Header().Get(kv[0]))
			}
		}
		if rec.Code != http.StatusOK && method != "HEAD" && rec.Body.Len() == 0 {
			t.Fatalf("%s %q: status %d without a message", method, target, rec.Code)
		}
	})
}
