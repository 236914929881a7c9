package reports

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"

	"golang.org/x/net/idna"

	"github.com/authmilter/authmilter/policy/dmarc"
)

// TXTResolver is what destination verification needs from DNS. Both
// *net.Resolver and policy/resolve's *Resolver have this method. A
// *net.DNSError with IsNotFound is "no such record"; any other error is
// taken as temporary.
type TXTResolver interface {
	LookupTXT(ctx context.Context, name string) ([]string, error)
}

// destination is one mailto: rua address that reports may go to.
type destination struct {
	// URI is the rua URI as published (without its "!size" suffix).
	URI string
	// Address is the mailbox, Host its domain (lowercase A-labels).
	Address, Host string
	// Limit is the report size limit in bytes from the URI (0: none).
	Limit int64
}

// parseDestination turns a rua URI into a destination. Only mailto: is
// supported (RFC 9990 "Other Methods": other schemes may be added later);
// a mailto: must name exactly one plain address (RFC 9989 makes a comma
// in a URI percent-encoded, so one that decodes to several addresses is
// refused rather than guessed at), and its header fields ("?subject=") are
// ignored.
func parseDestination(uri string, limit int64) (destination, error) {
	scheme, rest, ok := strings.Cut(uri, ":")
	if !ok || !strings.EqualFold(scheme, "mailto") {
		return destination{}, fmt.Errorf("%s: only mailto: URIs are supported", quoteURI(uri))
	}
	rest, _, _ = strings.Cut(rest, "?")
	addr, err := url.PathUnescape(rest)
	if err != nil {
		return destination{}, fmt.Errorf("%s: %w", quoteURI(uri), err)
	}
	if strings.Contains(addr, ",") {
		return destination{}, fmt.Errorf("%s: names more than one address", quoteURI(uri))
	}
	at := strings.LastIndexByte(addr, '@')
	if at <= 0 {
		return destination{}, fmt.Errorf("%s: no address", quoteURI(uri))
	}
	host, err := asciiHost(addr[at+1:])
	if err != nil {
		return destination{}, fmt.Errorf("%s: %w", quoteURI(uri), err)
	}
	addr = addr[:at+1] + host
	if _, err := plainAddress(addr); err != nil {
		return destination{}, fmt.Errorf("%s: %w", quoteURI(uri), err)
	}
	return destination{URI: uri, Address: addr, Host: host, Limit: limit}, nil
}

// quoteURI quotes a URI for a log line or a Detail, cut short.
func quoteURI(uri string) string {
	return fmt.Sprintf("%q", genClip(uri, 200))
}

// asciiHost returns a host name as lowercase A-labels, checking that it
// is a valid DNS host name (RFC 5890 lookup rules, at most 253 octets).
func asciiHost(h string) (string, error) {
	h = strings.TrimSuffix(h, ".")
	a, err := idna.Lookup.ToASCII(h)
	if err != nil || !dnsNameFits(a) || !strings.Contains(a, ".") {
		return "", fmt.Errorf("invalid host %q", genClip(h, 64))
	}
	return strings.ToLower(a), nil
}

// errUnverified marks a destination that RFC 9990's external destination
// check did not authorize: it is skipped, not retried.
var errUnverified = errors.New("external destination not authorized")

// verifyDestination applies RFC 9990 "Verifying External Destinations" to
// one destination of policyDomain's reports. It returns the destinations
// to use: d itself when it is inside the policy domain's organization or
// authorized, or the URIs of the authorizing record's own rua tag, which
// replace it (step 9). An unauthorized destination fails with an error
// wrapping errUnverified; a DNS failure that may pass wraps ErrTemporary.
//
// The organizational domains are compared by the public suffix list (see
// genOrgDomain), an approximation of RFC 9989's tree walk that needs no
// DNS.
func verifyDestination(ctx context.Context, r TXTResolver, policyDomain string, d destination) ([]destination, error) {
	pd, err := asciiHost(policyDomain)
	if err != nil {
		// A single-label or malformed policy domain cannot share an
		// organization with anyone, nor be put in a DNS name.
		return nil, fmt.Errorf("%w: policy domain: %w", errUnverified, err)
	}
	if genOrgDomain(pd) == genOrgDomain(d.Host) {
		return []destination{d}, nil
	}
	// Steps 1-3: <policy domain>._report._dmarc.<destination host>.
	name := pd + "._report._dmarc." + d.Host
	// Step 4: a name over the DNS limits cannot be checked.
	if !dnsNameFits(name) {
		return nil, fmt.Errorf("%w: %s is longer than DNS allows", errUnverified, name)
	}
	// Step 5.
	txts, err := r.LookupTXT(ctx, name)
	if err != nil {
		var de *net.DNSError
		if errors.As(err, &de) && de.IsNotFound {
			return nil, fmt.Errorf("%w: no TXT record at %s", errUnverified, name)
		}
		return nil, fmt.Errorf("%w: TXT lookup of %s: %w", ErrTemporary, name, err)
	}
	// Steps 6-8: at least one record must start with v=DMARC1 and parse.
	var authorizing *dmarc.Record
	for _, txt := range txts {
		rec, err := dmarc.ParseRecord(txt)
		if errors.Is(err, dmarc.ErrInvalidPolicy) {
			// Policy tags do not matter here, only v=DMARC1 and rua.
			rec, err = &dmarc.Record{}, nil
		}
		if err == nil {
			authorizing = rec
			break
		}
	}
	if authorizing == nil {
		return nil, fmt.Errorf("%w: no v=DMARC1 record at %s", errUnverified, name)
	}
	if len(authorizing.RUA) == 0 {
		return []destination{d}, nil
	}
	// Step 9: the Report Consumer's rua replaces ours, but only on the same
	// destination host; any other host voids both the original and the
	// override.
	var out []destination
	for i, uri := range authorizing.RUA {
		o, err := parseDestination(uri, authorizing.RUALimits[i])
		if err != nil {
			continue // a non-mailto override is not one we can use
		}
		if o.Host != d.Host {
			return nil, fmt.Errorf("%w: the record at %s redirects reports to another host (%s)", errUnverified, name, o.Host)
		}
		out = append(out, o)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: the record at %s names no usable mailto: rua", errUnverified, name)
	}
	return out, nil
}

// dnsNameFits reports whether name is within DNS limits: at most 253
// octets in text form and labels of 1 to 63 octets.
func dnsNameFits(name string) bool {
	if len(name) > 253 {
		return false
	}
	for _, label := range strings.Split(name, ".") {
		if len(label) == 0 || len(label) > 63 {
			return false
		}
	}
	return true
}
