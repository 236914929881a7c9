package web

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// TestRoutes: every page in HTML and JSON, with its status, content type,
// the security headers and a piece of its content.
func TestRoutes(t *testing.T) {
	clock := newClock()
	h := newTestHandler(t, testOptions(t, clock))
	tests := []struct {
		target string
		accept string
		status int
		ctype  string
		want   []string
	}{
		{"/", "", 200, "text/html", []string{"<h1>Overview</h1>", "1.2.3-test", "Keys by DNS state"}},
		{"/?format=json", "", 200, "application/json", []string{`"version": "1.2.3-test"`, `"keys_total": 6`, `"outbound_messages": 5`}},
		{"/", "application/json", 200, "application/json", []string{`"uptime_seconds": 7200`}},
		{"/keys", "", 200, "text/html", []string{`<table id="keys">`, `data-domain="example.com" data-selector="2026-11"`, `class="warnings"`}},
		{"/keys?format=json", "", 200, "application/json", []string{`"page": 1`, `"per": 50`, `"total": 4`, `"pages": 1`, `"selector": "2026-11e"`}},
		{"/keys?q=fbl", "", 200, "text/html", []string{"fbl.esp.example", "ns2.esp.example (192.0.2.2): missing"}},
		{"/keys?state=problem&format=json", "", 200, "application/json", []string{`"total": 4`}},
		{"/keys?state=foreign&format=json", "", 200, "application/json", []string{`"total": 1`, `"domain": "other.test"`}},
		{"/keys?state=inactive&format=json", "", 200, "application/json", []string{`"total": 3`}},
		{"/keys?per=10&page=1", "", 200, "text/html", []string{"page 1 of 1"}},
		{"/keys/example.com", "", 200, "text/html", []string{"<h1>Keys of example.com</h1>", `href="/dmarc/example.com"`, "2026-09", "still usable"}},
		{"/keys/example.com?format=json", "", 200, "application/json", []string{`"dmarc_url": "/dmarc/example.com"`, `"dns_check"`, `"retired"`, `"rotation_due": true`, `"retire_after": "2026-11-10T00:10:00Z"`}},
		{"/keys/customer.test", "", 200, "text/html", []string{"Records the customer must add", "IN CNAME"}},
		{"/dmarc", "", 200, "text/html", []string{"<h1>DMARC results</h1>", `<table id="domains">`, "example.com"}},
		{"/dmarc?format=json", "", 200, "application/json", []string{`"side": "received"`, `"total": 2`}},
		{"/dmarc?side=recorded&format=json", "", 200, "application/json", []string{`"side": "recorded"`, `"domain": "sender.example"`}},
		{"/dmarc/example.com", "", 200, "text/html", []string{`<table id="sources">`, "203.0.113.9", "google.com", "<svg", "Yahoo"}},
		{"/dmarc/example.com?format=json", "", 200, "application/json", []string{`"organisations"`, `"org": "google.com"`, `"ip": "203.0.113.9"`}},
		{"/dmarc/example.com?side=recorded", "", 200, "text/html", []string{`<table id="sources">`}},
		{"/static/style.css", "", 200, "text/css", []string{"box-sizing"}},
		{"/nope", "", 404, "text/html", []string{"no page at /nope"}},
		{"/nope?format=json", "", 404, "application/json", []string{`"error":`}},
		{"/keys/unknown.example", "", 404, "text/html", []string{"no domain unknown.example"}},
		{"/keys/example.com/x", "", 404, "text/html", nil},
		{"/dmarc/not_a_domain", "", 404, "text/html", nil},
	}
	for _, tt := range tests {
		t.Run(tt.target+" "+tt.accept, func(t *testing.T) {
			var rec = get(h, "GET", tt.target, "Accept", tt.accept)
			if rec.Code != tt.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, tt.status, rec.Body)
			}
			if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, tt.ctype) {
				t.Errorf("Content-Type %q, want %s", ct, tt.ctype)
			}
			checkSecurityHeaders(t, rec.Header())
			for _, w := range tt.want {
				if !strings.Contains(rec.Body.String(), w) {
					t.Errorf("no %q in\n%s", w, rec.Body)
				}
			}
			if tt.ctype == "application/json" && !json.Valid(rec.Body.Bytes()) {
				t.Errorf("not JSON: %s", rec.Body)
			}
		})
	}
}

func checkSecurityHeaders(t *testing.T, hdr http.Header) {
	t.Helper()
	for _, kv := range securityHeaders {
		if got := hdr.Get(kv[0]); got != kv[1] {
			t.Errorf("%s: %q, want %q", kv[0], got, kv[1])
		}
	}
	cc := hdr.Get("Cache-Control")
	if cc != "no-store" && !strings.Contains(cc, "immutable") {
		t.Errorf("Cache-Control %q", cc)
	}
}
