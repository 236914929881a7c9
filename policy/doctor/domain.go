package doctor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/miekg/dns"

	"github.com/authmilter/authmilter/keys"
	"github.com/authmilter/authmilter/policy/resolve"
)

// checkDomain checks that the name is a domain name and that the domain
// exists; ok is false when nothing else can be checked.
func checkDomain(ctx context.Context, e *env) (fs []Finding, ok bool) {
	name := strings.ToLower(strings.TrimSuffix(e.domain, "."))
	if _, err := netip.ParseAddr(name); err == nil || !keys.ValidDomain(name) {
		return []Finding{{Check: CheckDomain, Severity: Error, Code: "domain-invalid",
			Message: fmt.Sprintf("%q is not a domain name: nothing else was checked", clipText(e.domain)),
			Fix:     "give a domain name such as example.com (no address, spaces or empty labels)"}}, false
	}
	_, err := e.r.LookupRR(ctx, name, dns.TypeSOA)
	switch {
	case err == nil, resolve.IsNotFound(err) && !isNXDOMAIN(err):
		// NODATA: the name exists without a SOA of its own (a subdomain
		// inside its parent's zone), which is fine.
		return []Finding{{Check: CheckDomain, Severity: OK, Code: "domain-exists",
			Message: fmt.Sprintf("%s exists in the DNS", name)}}, true
	case isNXDOMAIN(err):
		return []Finding{{Check: CheckDomain, Severity: Error, Code: "domain-not-found",
			Message: fmt.Sprintf("%s does not exist (NXDOMAIN): nothing else was checked", name),
			Fix:     "check the spelling, or publish the domain's zone"}}, false
	default:
		// Go on: every other check then reports its own DNS problem.
		return []Finding{dnsFailure(CheckDomain, "domain-dns-error", "", "SOA "+name, err)}, true
	}
}

// isNXDOMAIN reports whether err is an NXDOMAIN answer: nothing exists at
// or below the name (RFC 8020). policy/resolve, like package net, gives it
// the text "no such host"; NODATA has another text.
func isNXDOMAIN(err error) bool {
	var de *net.DNSError
	return errors.As(err, &de) && de.IsNotFound && de.Err == "no such host"
}

// dnsFailure is the finding for a lookup that got no usable answer (a
// timeout, SERVFAIL): never a verdict that the record is missing. what is
// the record type and name, e.g. "TXT _dmarc.example.com".
func dnsFailure(check, code, subject, what string, err error) Finding {
	return Finding{Check: check, Severity: Error, Code: code, Subject: subject,
		Message: fmt.Sprintf("no answer for %s: %s; this check could not conclude", what, dnsFailureText(err)),
		Fix:     "make the domain's name servers answer (or try again if this was a passing outage), then run doctor again"}
}

// dnsFailureText says why a lookup failed: "timeout", "SERVFAIL", or the
// resolver's text.
func dnsFailureText(err error) string {
	var de *net.DNSError
	if !errors.As(err, &de) {
		return err.Error()
	}
	switch {
	case de.IsTimeout:
		return "timeout"
	case strings.HasPrefix(de.Err, "server answered "):
		return strings.TrimPrefix(de.Err, "server answered ")
	}
	return de.Err
}

// clipText shortens hostile text (a name, a record) before it goes into a
// finding, and makes control characters visible.
func clipText(s string) string {
	const limit = 120
	if len(s) > limit {
		s = s[:limit] + "..."
	}
	return strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return '?'
		}
		return r
	}, s)
}
