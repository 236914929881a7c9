package resolve

import (
	"context"
	"errors"
	"net"
	"os"
	"strings"
	"time"
)

// Error texts. errNoSuchHost is the text net.Resolver uses for NXDOMAIN.
const (
	errNoSuchHost   = "no such host"
	errInvalidName  = "invalid domain name"
	errInvalidAddr  = "unrecognized address"
	errTimeout      = "i/o timeout"
	errCanceled     = "operation was canceled"
	errLongChain    = "CNAME chain longer than 8 names"
	errNoServers    = "no DNS servers configured"
	errWrongAnswer  = "answer does not match the question"
	errTCPTruncated = "answer truncated over TCP"
	errTCPRetry     = "truncated answer, TCP retry failed"
	errMismatchedID = "answer with a mismatched ID"
	errRcodePrefix  = "server answered "
)

// countError tells Config.OnError about a failed attempt: of the given kind,
// or, when kind is empty, of the kind err (from ask) is. Attempts canceled
// by the caller are not errors of the DNS and are not counted.
func (r *Resolver) countError(ctx context.Context, kind string, err *net.DNSError) {
	if r.onError == nil {
		return
	}
	if kind == "" {
		kind = errorKind(err)
	}
	if kind == "" || errors.Is(ctx.Err(), context.Canceled) {
		return
	}
	r.onError(kind)
}

// errorKind classifies an error made by ask for Config.OnError; "" for a
// canceled lookup.
func errorKind(e *net.DNSError) string {
	switch {
	case errors.Is(e, context.Canceled):
		return ""
	case e.IsTimeout:
		return "timeout"
	case strings.HasPrefix(e.Err, errTCPRetry), e.Err == errTCPTruncated:
		return "truncated"
	case e.Err == errRcodePrefix+"SERVFAIL":
		return "servfail"
	case e.Err == errRcodePrefix+"REFUSED":
		return "refused"
	case strings.HasPrefix(e.Err, errRcodePrefix):
		return "rcode"
	case e.Err == errWrongAnswer, e.Err == errMismatchedID:
		return "bad_answer"
	}
	return "network"
}

// IsNotFound reports whether err is a permanent "does not exist" answer:
// NXDOMAIN, NODATA (the name exists without records of the asked type), or a
// name that cannot exist in the DNS. It looks through wrapping.
func IsNotFound(err error) bool {
	var de *net.DNSError
	return errors.As(err, &de) && de.IsNotFound
}

// IsTemporary reports whether err is a temporary DNS failure that may go
// away if the lookup is tried again later: a timeout, SERVFAIL, REFUSED, a
// network error, a malformed or mismatched answer, a canceled context. It
// looks through wrapping.
func IsTemporary(err error) bool {
	var de *net.DNSError
	return errors.As(err, &de) && (de.IsTemporary || de.IsTimeout)
}

// notFound returns the permanent error for name.
func notFound(name, server, text string) *net.DNSError {
	return &net.DNSError{Err: text, Name: name, Server: server, IsNotFound: true}
}

// temporary returns a temporary error for name that is not a timeout.
func temporary(name, server, text string) *net.DNSError {
	return &net.DNSError{Err: text, Name: name, Server: server, IsTemporary: true}
}

// netError classifies an error from talking to server. ctx is the caller's
// context: when it is done, its error is what the caller gets, so that
// errors.Is(err, context.DeadlineExceeded) and context.Canceled work.
func netError(ctx context.Context, name, server, prefix string, err error) *net.DNSError {
	e := &net.DNSError{Name: name, Server: server, IsTemporary: true}
	var nerr net.Error
	cerr := ctx.Err()
	// The socket deadline is the context's deadline, and its timer can fire
	// before the context's own: a timeout at or past the context deadline is
	// the context's.
	if dl, ok := ctx.Deadline(); ok && cerr == nil && !time.Now().Before(dl) {
		cerr = context.DeadlineExceeded
	}
	switch {
	case errors.Is(cerr, context.Canceled):
		e.Err, e.UnwrapErr = errCanceled, cerr
	case errors.Is(cerr, context.DeadlineExceeded):
		e.Err, e.UnwrapErr, e.IsTimeout = errTimeout, cerr, true
	case errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &nerr) && nerr.Timeout():
		e.Err, e.IsTimeout = errTimeout, true
	default:
		e.Err = err.Error()
	}
	if prefix != "" {
		e.Err = prefix + ": " + e.Err
	}
	return e
}
