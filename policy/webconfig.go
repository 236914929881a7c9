package policy

import (
	"fmt"
	"net"
	"net/netip"
	"time"
)

// WebConfig is [web]: the daemon's read-only status pages. Off unless
// Listen is set.
type WebConfig struct {
	// Listen is the host:port of the status pages, e.g. "127.0.0.1:9892";
	// empty (the default) turns them off. An address that is not loopback
	// needs a login (PasswordFile or TokenFile): the pages name every
	// domain the daemon signs for.
	Listen string `toml:"listen"`
	// PasswordFile is an htpasswd file of bcrypt entries
	// ("admin:$2y$..." lines, as `htpasswd -B` writes them): HTTP Basic
	// login for browsers. It must not be readable by group or others.
	PasswordFile string `toml:"password_file"`
	// TokenFile holds one bearer token (at least 32 characters) that
	// scripts send as "Authorization: Bearer <token>". It must not be
	// readable by group or others.
	TokenFile string `toml:"token_file"`
	// MaxConnections bounds the connections served at once; more wait in
	// the kernel's queue. Default 16.
	MaxConnections int `toml:"max_connections"`
	// RequestTimeout bounds the making of one page (reports store queries
	// included) and the writing of its answer. Default "10s".
	RequestTimeout Duration `toml:"request_timeout"`
}

// Enabled reports whether the status pages are on.
func (w WebConfig) Enabled() bool { return w.Listen != "" }

// DefaultWebConfig is [web] when the file does not set it.
func DefaultWebConfig() WebConfig {
	return WebConfig{MaxConnections: 16, RequestTimeout: Duration{10 * time.Second}}
}

// validate checks [web].
func (w WebConfig) validate() []error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("web.%s: "+format, append([]any{key}, args...)...))
	}
	if w.MaxConnections < 1 {
		bad("max_connections", "must be at least 1, got %d", w.MaxConnections)
	}
	if w.RequestTimeout.Duration < time.Second {
		bad("request_timeout", "must be at least 1s")
	}
	if !w.Enabled() {
		return errs
	}
	host, port, err := net.SplitHostPort(w.Listen)
	if err != nil || port == "" {
		bad("listen", "%q is not host:port (e.g. 127.0.0.1:9892)", w.Listen)
		return errs
	}
	loopback := host == "localhost"
	if a, err := netip.ParseAddr(host); err == nil {
		loopback = a.IsLoopback()
	} else if host != "localhost" {
		bad("listen", "%q: the host must be an IP address or localhost", w.Listen)
		return errs
	}
	if !loopback && w.PasswordFile == "" && w.TokenFile == "" {
		bad("listen", "%q is not a loopback address: set web.password_file or web.token_file (the pages list every domain signed for), or listen on 127.0.0.1", w.Listen)
	}
	return errs
}
