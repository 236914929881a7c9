package web

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// Login limits.
const (
	// maxLoginFile is the largest password or token file read.
	maxLoginFile = 1 << 20
	// minTokenLen is the shortest bearer token accepted.
	minTokenLen = 32
	// maxFailures failed logins from one address within failWindow lock
	// that address out for lockout.
	maxFailures = 10
	failWindow  = time.Minute
	lockout     = time.Minute
	// maxTracked bounds the addresses whose failures are counted.
	maxTracked = 10_000
	// verifiedTTL is how long a Basic login that passed bcrypt is
	// remembered (by its hash), so that a page and its stylesheet do not
	// cost a bcrypt each; maxVerified bounds them.
	verifiedTTL = 5 * time.Minute
	maxVerified = 64
	// bcryptPerSecond and bcryptBurst bound the password checks of all
	// clients together: each costs tens of milliseconds of CPU, and the
	// daemon's CPU is for mail. A person logs in once per verifiedTTL;
	// more than this is someone guessing from many addresses.
	bcryptPerSecond = 5
	bcryptBurst     = 10
)

// authenticator checks the login of each request: HTTP Basic against a
// bcrypt htpasswd file, or a bearer token. Without either file every
// request passes.
type authenticator struct {
	users map[string][]byte // user → bcrypt hash
	token [sha256.Size]byte // SHA-256 of the token
	// hasToken is set when a token file is configured.
	hasToken bool
	// dummy is compared when the user is unknown, so that an unknown user
	// costs as long as a wrong password.
	dummy []byte
	now   func() time.Time

	mu       sync.Mutex
	failures map[string]*failures
	verified map[[sha256.Size]byte]time.Time
	// tokens and filled are the bucket of password checks (see
	// bcryptPerSecond).
	tokens float64
	filled time.Time
}

// failures counts the failed logins of one address.
type failures struct {
	count       int
	since       time.Time
	lockedUntil time.Time
}

// newAuthenticator reads the login files; empty paths are not used.
func newAuthenticator(passwordFile, tokenFile string, now func() time.Time) (*authenticator, error) {
	a := &authenticator{now: now, failures: map[string]*failures{}, verified: map[[sha256.Size]byte]time.Time{}, tokens: bcryptBurst}
	if passwordFile != "" {
		data, err := readSecretFile(passwordFile)
		if err != nil {
			return nil, err
		}
		if a.users, err = parseHtpasswd(passwordFile, data); err != nil {
			return nil, err
		}
		cost := bcrypt.DefaultCost
		for _, h := range a.users {
			cost, _ = bcrypt.Cost(h)
			break
		}
		if a.dummy, err = bcrypt.GenerateFromPassword([]byte("not a password"), cost); err != nil {
			return nil, fmt.Errorf("web: %w", err)
		}
	}
	if tokenFile != "" {
		data, err := readSecretFile(tokenFile)
		if err != nil {
			return nil, err
		}
		tok := strings.TrimSpace(string(data))
		if strings.ContainsAny(tok, " \t\r\n") {
			return nil, fmt.Errorf("web: %s: the token file must hold one token on one line", tokenFile)
		}
		if len(tok) < minTokenLen {
			return nil, fmt.Errorf("web: %s: the token is %d characters long; at least %d (e.g. openssl rand -hex 32)", tokenFile, len(tok), minTokenLen)
		}
		a.token, a.hasToken = sha256.Sum256([]byte(tok)), true
	}
	return a, nil
}

// readSecretFile reads a login file that only its owner may read.
func readSecretFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("web: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("web: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("web: %s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("web: %s has mode %04o: it must not be readable by group or others (run chmod 600 %s)", path, perm, path)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxLoginFile+1))
	if err != nil {
		return nil, fmt.Errorf("web: %s: %w", path, err)
	}
	if len(data) > maxLoginFile {
		return nil, fmt.Errorf("web: %s is larger than %d bytes", path, maxLoginFile)
	}
	return data, nil
}

// parseHtpasswd reads "user:hash" lines; every hash must be bcrypt
// (htpasswd -B). Empty lines and # comments are skipped.
func parseHtpasswd(path string, data []byte) (map[string][]byte, error) {
	users := map[string][]byte{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		user, hash, ok := strings.Cut(line, ":")
		if !ok || user == "" {
			return nil, fmt.Errorf("web: %s:%d: not a user:hash line", path, n)
		}
		if _, err := bcrypt.Cost([]byte(hash)); err != nil || !strings.HasPrefix(hash, "$2") {
			return nil, fmt.Errorf("web: %s:%d: the entry of %q is not bcrypt (make it with htpasswd -B)", path, n, user)
		}
		users[user] = []byte(hash)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("web: %s: %w", path, err)
	}
	if len(users) == 0 {
		return nil, fmt.Errorf("web: %s has no user", path)
	}
	return users, nil
}

// enabled reports whether a login is required.
func (a *authenticator) enabled() bool { return a.users != nil || a.hasToken }

// check returns 0 when r may be served, else the status to answer
// (401, 429) and why. Failed logins are logged and counted per address.
func (a *authenticator) check(r *http.Request, log *slog.Logger) (int, string) {
	if !a.enabled() {
		return 0, ""
	}
	addr := remoteHost(r.RemoteAddr)
	now := a.now()
	if a.locked(addr, now) {
		return http.StatusTooManyRequests, "too many failed logins from this address: try again in a minute"
	}
	authz := r.Header.Get("Authorization")
	if authz == "" {
		return http.StatusUnauthorized, "log in to see the status pages"
	}
	ok := false
	user := ""
	switch {
	case a.hasToken && len(authz) > 7 && strings.EqualFold(authz[:7], "Bearer "):
		got := sha256.Sum256([]byte(strings.TrimSpace(authz[7:])))
		ok = subtle.ConstantTimeCompare(got[:], a.token[:]) == 1
		user = "(bearer token)"
	case a.users != nil:
		var pass string
		var basic bool
		user, pass, basic = r.BasicAuth()
		if basic {
			var busy bool
			if ok, busy = a.checkPassword(user, pass, now); busy {
				log.Warn("web: password checks over their rate; login refused", "remote", r.RemoteAddr)
				return http.StatusTooManyRequests, "too many logins are being checked: try again in a few seconds"
			}
		}
	}
	if ok {
		return 0, ""
	}
	if a.failed(addr, now) {
		log.Warn("web: login failed; address locked out for a minute", "remote", r.RemoteAddr, "user", clip(user))
	} else {
		log.Warn("web: login failed", "remote", r.RemoteAddr, "user", clip(user))
	}
	return http.StatusUnauthorized, "wrong login"
}

// checkPassword compares with bcrypt, remembering a success for a while;
// busy is true (and ok false) when the password checks are over their
// rate and this one was not made.
func (a *authenticator) checkPassword(user, pass string, now time.Time) (ok, busy bool) {
	key := sha256.Sum256([]byte(user + "\x00" + pass))
	a.mu.Lock()
	until, seen := a.verified[key]
	a.mu.Unlock()
	if seen && now.Before(until) {
		return true, false
	}
	if !a.takeCheck(now) {
		return false, true
	}
	hash, known := a.users[user]
	if !known {
		_ = bcrypt.CompareHashAndPassword(a.dummy, []byte(pass))
		return false, false
	}
	if bcrypt.CompareHashAndPassword(hash, []byte(pass)) != nil {
		return false, false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for k, t := range a.verified {
		if !now.Before(t) {
			delete(a.verified, k)
		}
	}
	for k := range a.verified {
		if len(a.verified) < maxVerified {
			break
		}
		delete(a.verified, k)
	}
	a.verified[key] = now.Add(verifiedTTL)
	return true, false
}

// takeCheck takes one password check from the bucket; false when it is
// empty.
func (a *authenticator) takeCheck(now time.Time) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.filled.IsZero() {
		a.tokens = min(a.tokens+now.Sub(a.filled).Seconds()*bcryptPerSecond, bcryptBurst)
	}
	a.filled = now
	if a.tokens < 1 {
		return false
	}
	a.tokens--
	return true
}

// locked reports whether addr is locked out.
func (a *authenticator) locked(addr string, now time.Time) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	f := a.failures[addr]
	return f != nil && now.Before(f.lockedUntil)
}

// failed counts a failed login of addr; true when it locks addr out.
func (a *authenticator) failed(addr string, now time.Time) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	f := a.failures[addr]
	if f == nil {
		if len(a.failures) >= maxTracked {
			a.evict(now)
		}
		f = &failures{since: now}
		a.failures[addr] = f
	}
	if now.Sub(f.since) > failWindow {
		f.count, f.since = 0, now
	}
	f.count++
	if f.count >= maxFailures {
		f.lockedUntil, f.count, f.since = now.Add(lockout), 0, now
		return true
	}
	return false
}

// evict makes room in the failures map: entries whose window and lockout
// are over go first; if none is, an arbitrary one (the map stays bounded
// when more than maxTracked addresses fail at once).
func (a *authenticator) evict(now time.Time) {
	for k, f := range a.failures {
		if now.Sub(f.since) > failWindow && !now.Before(f.lockedUntil) {
			delete(a.failures, k)
		}
	}
	for k := range a.failures {
		if len(a.failures) < maxTracked {
			return
		}
		delete(a.failures, k)
	}
}

// remoteHost is the address part of a remote address.
func remoteHost(remote string) string {
	if h, _, err := net.SplitHostPort(remote); err == nil {
		return h
	}
	return remote
}
