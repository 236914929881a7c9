package web

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

const testToken = "0123456789abcdef0123456789abcdef-token"

// writeLoginFiles writes an htpasswd file (admin:secret) and a token file
// with mode 0600 and returns their paths.
func writeLoginFiles(t *testing.T) (passwd, token string) {
	t.Helper()
	dir := t.TempDir()
	hash, err := bcrypt.GenerateFromPassword([]byte("secret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	passwd, token = filepath.Join(dir, "htpasswd"), filepath.Join(dir, "token")
	writeFile(t, passwd, "# admins\nadmin:"+string(hash)+"\n", 0o600)
	writeFile(t, token, testToken+"\n", 0o600)
	return passwd, token
}

func writeFile(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

func basic(user, pass string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
}

// TestLogin: with a login configured every path (stylesheet and JSON
// included) needs it: Basic against bcrypt, or the bearer token.
func TestLogin(t *testing.T) {
	passwd, token := writeLoginFiles(t)
	o := testOptions(t, newClock())
	o.Config.PasswordFile, o.Config.TokenFile = passwd, token
	h := newTestHandler(t, o)
	tests := []struct {
		name, path, authz string
		status            int
	}{
		{"none", "/", "", 401},
		{"none, stylesheet", "/static/style.css", "", 401},
		{"none, JSON", "/keys?format=json", "", 401},
		{"wrong password", "/", basic("admin", "wrong"), 401},
		{"unknown user", "/", basic("root", "secret"), 401},
		{"right", "/", basic("admin", "secret"), 200},
		{"right again (remembered)", "/keys", basic("admin", "secret"), 200},
		{"right, stylesheet", "/static/style.css", basic("admin", "secret"), 200},
		{"bearer", "/keys?format=json", "Bearer " + testToken, 200},
		{"bearer, lower case scheme", "/", "bearer " + testToken, 200},
		{"wrong bearer", "/", "Bearer " + strings.Repeat("x", len(testToken)), 401},
		{"short bearer", "/", "Bearer x", 401},
		{"other scheme", "/", "Digest x", 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := get(h, "GET", tt.path, "Authorization", tt.authz)
			if rec.Code != tt.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, tt.status, rec.Body)
			}
			checkSecurityHeaders(t, rec.Header())
			if tt.status == 401 && rec.Header().Get("WWW-Authenticate") != `Basic realm="authmilter"` {
				t.Errorf("WWW-Authenticate %q", rec.Header().Get("WWW-Authenticate"))
			}
		})
	}
}

// TestLockout: ten failed logins from one address within a minute lock
// it out for a minute, even with the right password; other addresses
// are not affected.
func TestLockout(t *testing.T) {
	passwd, _ := writeLoginFiles(t)
	clock := newClock()
	o := testOptions(t, clock)
	o.Config.PasswordFile = passwd
	h := newTestHandler(t, o)
	for i := 0; i < maxFailures; i++ {
		if rec := get(h, "GET", "/", "Authorization", basic("admin", "guess")); rec.Code != 401 {
			t.Fatalf("failure %d: status %d", i+1, rec.Code)
		}
		clock.add(time.Second)
	}
	if rec := get(h, "GET", "/", "Authorization", basic("admin", "secret")); rec.Code != 429 {
		t.Fatalf("locked out: status %d, want 429", rec.Code)
	}
	req := getFrom(h, "198.51.100.7:4000", basic("admin", "secret"))
	if req != 200 {
		t.Errorf("another address: status %d, want 200", req)
	}
	clock.add(lockout + time.Second)
	if rec := get(h, "GET", "/", "Authorization", basic("admin", "secret")); rec.Code != 200 {
		t.Errorf("after the lockout: status %d, want 200", rec.Code)
	}
}

// TestLockoutMapBounded: failures from more addresses than maxTracked
// keep the map at its bound.
func TestLockoutMapBounded(t *testing.T) {
	a, err := newAuthenticator("", "", newClock().now)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < maxTracked+500; i++ {
		a.failed("addr-"+itoa(i), testNow)
	}
	if n := len(a.failures); n > maxTracked {
		t.Errorf("%d addresses tracked, bound %d", n, maxTracked)
	}
}

// TestLoginFilesRefused: Start and NewHandler refuse a login file that is
// not bcrypt (with its line), a short token, and files group or others
// can read.
func TestLoginFilesRefused(t *testing.T) {
	dir := t.TempDir()
	hash, _ := bcrypt.GenerateFromPassword([]byte("x"), bcrypt.MinCost)
	p := func(name, content string, mode os.FileMode) string {
		path := filepath.Join(dir, name)
		writeFile(t, path, content, mode)
		return path
	}
	tests := []struct {
		name            string
		password, token string
		want            string
	}{
		{"md5 entry", p("md5", "admin:"+string(hash)+"\nbob:$apr1$abc$def\n", 0o600), "", "md5:2: the entry of \"bob\" is not bcrypt"},
		{"plain entry", p("plain", "admin:secret\n", 0o600), "", "plain:1: the entry of \"admin\" is not bcrypt"},
		{"no colon", p("nocolon", "admin\n", 0o600), "", "nocolon:1: not a user:hash line"},
		{"empty", p("empty", "# nobody\n", 0o600), "", "has no user"},
		{"world readable password file", p("wr", "admin:"+string(hash)+"\n", 0o644), "", "mode 0644"},
		{"group readable token", "", p("gr", testToken, 0o640), "mode 0640"},
		{"short token", "", p("short", "abc\n", 0o600), "at least 32"},
		{"two tokens", "", p("two", testToken+" "+testToken, 0o600), "one token"},
		{"missing file", filepath.Join(dir, "absent"), "", "no such file"},
		{"a folder", dir, "", "not a regular file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := testOptions(t, newClock())
			o.Config.PasswordFile, o.Config.TokenFile = tt.password, tt.token
			o.Config.Listen = "127.0.0.1:0"
			s, err := Start(o)
			if err == nil {
				s.Close()
				t.Fatal("Start accepted it")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q, want %q", err, tt.want)
			}
		})
	}
}

// TestPasswordCheckRate: guesses from many addresses (each under the
// per-address lockout) cannot make the daemon spend its CPU on bcrypt:
// beyond bcryptBurst checks at once and bcryptPerSecond after, logins are
// refused with 429 without a check; a login already verified still
// passes, and checks resume as the bucket refills.
func TestPasswordCheckRate(t *testing.T) {
	passwd, _ := writeLoginFiles(t)
	clock := newClock()
	o := testOptions(t, clock)
	o.Config.PasswordFile = passwd
	h := newTestHandler(t, o)
	if code := getFrom(h, "192.0.2.1:1000", basic("admin", "secret")); code != 200 {
		t.Fatalf("first login: %d", code)
	}
	refused := 0
	for i := range 200 {
		switch code := getFrom(h, "203.0.113."+itoa(i%250)+":1000", basic("admin", "guess-"+itoa(i))); code {
		case 401:
		case 429:
			refused++
		default:
			t.Fatalf("guess %d: status %d", i, code)
		}
	}
	if checked := 200 - refused; checked > bcryptBurst {
		t.Errorf("%d password checks made at one moment, want at most %d", checked, bcryptBurst)
	}
	if code := getFrom(h, "192.0.2.1:1000", basic("admin", "secret")); code != 200 {
		t.Errorf("verified login during the guessing: %d, want 200", code)
	}
	if code := getFrom(h, "192.0.2.2:1000", basic("admin", "secret-2")); code != 429 {
		t.Errorf("a new check while the bucket is empty: %d, want 429", code)
	}
	clock.add(time.Second)
	if code := getFrom(h, "192.0.2.2:1000", basic("admin", "wrong")); code != 401 {
		t.Errorf("a check a second later: %d, want 401 (checked again)", code)
	}
}
