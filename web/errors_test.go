package web

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
)

// TestBadParameters: each malformed parameter is a 400 with a message
// that names it, as a page and as JSON, with the security headers.
func TestBadParameters(t *testing.T) {
	h := newTestHandler(t, testOptions(t, newClock()))
	long := strings.Repeat("a", maxQuery+1)
	tests := []struct{ target, want string }{
		{"/keys?page=0", "page must be a number from 1"},
		{"/keys?page=-1", "page must be"},
		{"/keys?page=abc", "page must be"},
		{"/keys?page=99999999999999999999", "page must be"},
		{"/keys?page=2", "page 2 is past the last page (1)"},
		{"/keys?per=9", "per must be a number from 10 to 500"},
		{"/keys?per=9999", "per must be a number from 10 to 500"},
		{"/keys?per=", "per is empty"},
		{"/keys?state=bogus", "state must be one of"},
		{"/keys?q=" + long, "q is 254 bytes long"},
		{"/keys?q=%ff%fe", "not UTF-8"},
		{"/keys?q=a%00b", "control character"},
		{"/keys?q=a&q=b", "given 2 times"},
		{"/keys?q=%zz", "malformed"},
		{"/keys?format=xml", "format must be html or json"},
		{"/?format=", "format must be html or json"},
		{"/dmarc?days=0", "days must be a number from 1 to 90"},
		{"/dmarc?days=91", "days must be"},
		{"/dmarc?side=sent", "side must be received or recorded"},
		{"/dmarc?page=0", "page must be"},
		{"/dmarc?per=501", "per must be"},
		{"/dmarc?q=" + long, "q is 254 bytes long"},
		{"/dmarc?page=5", "past the last page"},
		{"/dmarc/example.com?days=100", "days must be"},
		{"/dmarc/example.com?side=x", "side must be"},
	}
	for _, tt := range tests {
		for _, f := range []string{"html", "json"} {
			t.Run(tt.target+" "+f, func(t *testing.T) {
				var accept string
				if f == "json" {
					accept = "application/json"
				}
				rec := get(h, "GET", tt.target, "Accept", accept)
				if rec.Code != 400 {
					t.Fatalf("status %d, want 400: %s", rec.Code, rec.Body)
				}
				checkSecurityHeaders(t, rec.Header())
				body := rec.Body.String()
				if f == "json" && !strings.Contains(tt.target, "format=") {
					var e struct{ Error string }
					if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil {
						t.Fatalf("not JSON: %v: %s", err, body)
					}
					body = e.Error
				}
				if !strings.Contains(body, tt.want) {
					t.Errorf("no %q in %s", tt.want, body)
				}
			})
		}
	}
}

// TestMethodsAndLimits: only GET and HEAD; a URI over 2 KiB is 414.
func TestMethodsAndLimits(t *testing.T) {
	h := newTestHandler(t, testOptions(t, newClock()))
	for _, m := range []string{"POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"} {
		rec := get(h, m, "/keys")
		if rec.Code != 405 || rec.Header().Get("Allow") != "GET, HEAD" {
			t.Errorf("%s: status %d, Allow %q", m, rec.Code, rec.Header().Get("Allow"))
		}
		checkSecurityHeaders(t, rec.Header())
	}
	rec := get(h, "HEAD", "/keys")
	if rec.Code != 200 || rec.Body.Len() != 0 || rec.Header().Get("Content-Length") == "" {
		t.Errorf("HEAD: status %d, %d bytes, Content-Length %q", rec.Code, rec.Body.Len(), rec.Header().Get("Content-Length"))
	}
	rec = get(h, "GET", "/keys?q="+strings.Repeat("a", maxURI))
	if rec.Code != 414 {
		t.Errorf("long URI: status %d, want 414", rec.Code)
	}
	checkSecurityHeaders(t, rec.Header())
}

// TestRefusalsLogged: one log line per refused request, with the method,
// the escaped path, the remote address and the status; a failed login
// is logged without the password.
func TestRefusalsLogged(t *testing.T) {
	var buf syncBuffer
	passwd, _ := writeLoginFiles(t)
	o := testOptions(t, newClock())
	o.Config.PasswordFile = passwd
	o.Logger = slog.New(slog.NewTextHandler(&buf, nil))
	h := newTestHandler(t, o)
	get(h, "GET", "/keys", "Authorization", basic("admin", "hunter2"))
	get(h, "GET", "/no%20such?x=1", "Authorization", basic("admin", "secret"))
	log := buf.String()
	for _, want := range []string{
		`msg="web: login failed" remote=192.0.2.1:1234 user=admin`,
		`msg="web: refused" method=GET path=/keys remote=192.0.2.1:1234 status=401`,
		`msg="web: refused" method=GET path=/no%20such remote=192.0.2.1:1234 status=404`,
	} {
		if !strings.Contains(log, want) {
			t.Errorf("no %q in the log:\n%s", want, log)
		}
	}
	if strings.Contains(log, "hunter2") {
		t.Errorf("the password is in the log:\n%s", log)
	}
	if n := strings.Count(log, "web: refused"); n != 2 {
		t.Errorf("%d refusal lines, want 2", n)
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
