// Package dmarc evaluates DMARC as RFC 9989 defines it: policy discovery and
// Organizational Domains by the DNS Tree Walk (§4.10), Identifier Alignment
// (§4.4), and the policy tags p, sp, np, psd and t (§4.7). A legacy mode
// (PSL) finds Organizational Domains with the public suffix list as RFC 7489
// §3.2 did, for comparison.
//
// Reading of RFC 9989 that this package implements (section numbers are
// those of draft-ietf-dmarc-dmarcbis-41, the text that became RFC 9989):
//
//   - Tree walk (§4.10): query _dmarc.<domain>; then drop labels from the
//     left one at a time, except that a name of 8 or more labels is first
//     shortened to its 7-label suffix, so one walk makes at most 8 queries.
//     TXT records that do not start with v=DMARC1 are discarded; several
//     DMARC records at one name count as none there; a single record with
//     psd=y or psd=n stops the walk.
//   - Organizational Domain (§4.10.2), over the records found, longest name
//     first: a psd=n record makes its name the Organizational Domain; a
//     psd=y record (other than at the starting name) makes the name one
//     label below it the Organizational Domain; otherwise the record with
//     the fewest labels names it; with no record at all, the starting
//     domain is its own Organizational Domain.
//   - Policy discovery (§4.10.1): the record at the Author Domain if there
//     is one (its p applies); otherwise the record at the Organizational
//     Domain, otherwise the psd=y record of the Public Suffix Domain; for
//     those the Author Domain is a subdomain, so sp applies if it exists and
//     np if it does not, each falling back to p (np to sp, then p).
//   - Non-existent domains (§3.2.13, Appendix A.4): NXDOMAIN for the name
//     itself (RFC 8020), not "no A, AAAA or MX". Resolvers that can tell
//     NXDOMAIN from NODATA implement ExistenceResolver; for others see
//     ExistenceResolver.
//   - pct (Appendix A.6, §9.3 "historic"): removed. A record that still has
//     pct=0 and no t tag is treated as t=y; other pct values are ignored.
//   - t=y (§4.7): the policy is applied one level below the one published
//     (reject → quarantine, quarantine → none).
//   - Invalid p, sp or np (§4.10.1): with a valid rua URI, act as p=none;
//     without one, no DMARC processing (reported as permerror, the RFC 8601
//     result for a syntactically incorrect record, §9.2).
//   - DNS errors (§4.10.1, §5.3.6): a lookup that fails temporarily makes the
//     result temperror unless the outcome no longer depends on it (an aligned
//     identifier was already found).
package dmarc

import (
	"context"
	"errors"
	"net"
)

// TXTResolver looks up DNS TXT records. Each returned string is one TXT
// record with its character-strings concatenated (as net.Resolver does).
// Errors are *net.DNSError: IsNotFound (NXDOMAIN or NODATA) means there is
// no record; any other error is temporary. *net.Resolver satisfies it.
type TXTResolver interface {
	LookupTXT(ctx context.Context, name string) ([]string, error)
}

// ExistenceResolver is implemented by resolvers that can tell whether a
// domain name exists at all: false for NXDOMAIN, true for any other final
// answer, NODATA included (RFC 9989 §3.2.13, Appendix A.4, RFC 8020). It is
// used only for the np tag.
//
// When the resolver passed to this package does not implement it but has
// LookupIPAddr and LookupMX (as *net.Resolver does), a domain is taken as
// non-existent when A, AAAA and MX all come back not found; this is RFC 9091
// §2.7's older definition, which also counts a name with only other record
// types (NODATA for these three) as non-existent. With neither, every
// domain is taken to exist, so np is never applied.
type ExistenceResolver interface {
	DomainExists(ctx context.Context, domain string) (bool, error)
}

type ipResolver interface {
	LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error)
}

type mxResolver interface {
	LookupMX(ctx context.Context, name string) ([]*net.MX, error)
}

// Mode selects how Organizational Domains and the policy record are found.
type Mode int

const (
	// TreeWalk is the RFC 9989 DNS Tree Walk (§4.10), the default.
	TreeWalk Mode = iota
	// PSL is the legacy RFC 7489 method: the Organizational Domain is the
	// public suffix (golang.org/x/net/publicsuffix) plus one label, and the
	// policy record is looked up at the Author Domain, then at the
	// Organizational Domain (RFC 7489 §6.6.3). The psd tag is ignored.
	PSL
)

// String returns "treewalk" or "psl".
func (m Mode) String() string {
	if m == PSL {
		return "psl"
	}
	return "treewalk"
}

// Errors returned by Discover and OrgDomain, checked with errors.Is.
var (
	// ErrNoRecord reports that no DMARC Policy Record applies to the
	// domain: the DMARC mechanism does not apply (RFC 9989 §4.10.1).
	ErrNoRecord = errors.New("dmarc: no DMARC policy record")
	// ErrTemporary reports a DNS lookup that failed temporarily; the
	// error also wraps the resolver's error.
	ErrTemporary = errors.New("dmarc: temporary DNS error")
	// ErrInvalidDomain reports a domain that is not a usable DNS name.
	ErrInvalidDomain = errors.New("dmarc: invalid domain")
)
