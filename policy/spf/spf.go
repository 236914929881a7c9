// Package spf evaluates SPF (RFC 7208): CheckHost is the check_host()
// function of §4, over a strict parser of the whole record (§4.6: a syntax
// error anywhere in a record the evaluation reaches is a permerror), with
// macro expansion (§7), every mechanism (§5) and modifier (§6), and the
// limits of §4.6.4: ten DNS-querying terms, two void lookups, ten MX hosts
// per mx term and ten PTR names. The explanation of exp= is not fetched:
// its domain-spec is only checked for syntax.
//
// The DNS is the caller's Resolver, which asks for one address family at a
// time: an IPv4 client only ever matches A records and an IPv6 client AAAA
// records, so the other family is never queried (the exists mechanism
// always asks for A records, §5.7).
package spf

import (
	"context"
	"errors"
	"net"
)

// Result is the result of an SPF evaluation (RFC 7208 §2.6), spelled as
// in Authentication-Results (RFC 8601 §2.7.2).
type Result string

// Results of RFC 7208 §2.6.
const (
	// None: no usable domain, or no SPF record.
	None Result = "none"
	// Neutral: the domain makes no assertion about the client.
	Neutral Result = "neutral"
	// Pass: the client is authorized.
	Pass Result = "pass"
	// Fail: the client is not authorized.
	Fail Result = "fail"
	// SoftFail: probably not authorized.
	SoftFail Result = "softfail"
	// TempError: a transient (DNS) error; a later retry may succeed.
	TempError Result = "temperror"
	// PermError: the records cannot be interpreted; needs a fix by the
	// domain owner.
	PermError Result = "permerror"
)

// Errors that explain a result. They read well in an
// Authentication-Results comment.
var (
	// ErrNoRecord: the domain has no SPF record (none; permerror for an
	// include or redirect target, §5.2, §6.1).
	ErrNoRecord = errors.New("no DNS record found")
	// ErrInvalidDomain: the domain is not a valid multi-label domain name
	// (none, RFC 7208 §4.3).
	ErrInvalidDomain = errors.New("invalid domain")
	// ErrMultipleRecords: more than one SPF record (permerror, §4.5).
	ErrMultipleRecords = errors.New("multiple SPF records")
	// ErrLookupLimit: more than ten DNS-querying terms (permerror,
	// §4.6.4).
	ErrLookupLimit = errors.New("lookup limit reached")
	// ErrVoidLookupLimit: more than two lookups with no answer
	// (permerror, §4.6.4).
	ErrVoidLookupLimit = errors.New("void lookup limit reached")
	// ErrTooManyMX: an mx term's domain has more than ten MX hosts
	// (permerror, §4.6.4).
	ErrTooManyMX = errors.New("too many MX records")
)

// Limits of RFC 7208 §4.6.4.
const (
	// MaxTerms is the most DNS-querying terms (include, a, mx, ptr,
	// exists, redirect) of one evaluation.
	MaxTerms = 10
	// MaxVoidLookups is the most lookups of those terms that may have an
	// empty answer or NXDOMAIN.
	MaxVoidLookups = 2
	// MaxMXHosts is the most MX hosts of one mx term.
	MaxMXHosts = 10
	// MaxPTRNames is the most PTR names of the client that are validated
	// (for ptr and the p macro); the rest are ignored.
	MaxPTRNames = 10
)

// Resolver is the DNS of an evaluation. A name that does not exist, or has
// no records of the asked type, is a *net.DNSError with IsNotFound set;
// any other error is temporary (a temperror).
type Resolver interface {
	LookupTXT(ctx context.Context, name string) ([]string, error)
	LookupMX(ctx context.Context, name string) ([]*net.MX, error)
	// LookupIP returns the addresses of host of one family, network
	// "ip4" (A records) or "ip6" (AAAA records).
	LookupIP(ctx context.Context, network, host string) ([]net.IP, error)
	// LookupAddr returns the PTR names of an address.
	LookupAddr(ctx context.Context, addr string) ([]string, error)
}

// isNotFound reports whether err says the name or the records do not
// exist.
func isNotFound(err error) bool {
	var de *net.DNSError
	return errors.As(err, &de) && de.IsNotFound
}
