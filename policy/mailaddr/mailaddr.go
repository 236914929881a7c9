// Package mailaddr extracts the author domain from RFC 5322 From header
// fields and the domain from SMTP envelope addresses, for DMARC.
//
// The From parser is written for DMARC (RFC 9989), where a wrong answer is a
// security hole: an attacker who can make the evaluator look at a domain
// other than the one the recipient's mail client shows can pass DMARC with a
// domain they control while displaying someone else's. So the parser follows
// the RFC 5322 grammar (with the RFC 6532 UTF-8 extension and the obsolete
// syntax of RFC 5322 §4 that real mail still uses) and refuses to guess: input
// that does not match the grammar is ErrMalformed, not "the most plausible
// address". It never uses net/mail, whose documented divergences from RFC
// 5322 are exactly the kind of ambiguity DMARC cannot afford.
//
// Decisions, with their reasons:
//
//   - Several From fields, even identical ones, are ErrMultipleFrom: RFC 5322
//     §3.6 allows exactly one. RFC 9989 §5.3.1 stops DMARC when zero or
//     several author domains are found (a receiver MAY go on with each), and
//     §11.5 warns that such messages are a known way around DMARC; we leave
//     the choice to the caller by reporting it.
//   - A field with several mailboxes is ErrMultipleFrom. Groups (RFC 6854
//     permits them in From) count the mailboxes they contain; a field that
//     holds only empty groups, such as "undisclosed-recipients:;", holds no
//     author address and is ErrNoFrom.
//   - Empty list elements ("a@example.com,") are accepted as obs-mbox-list
//     (RFC 5322 §4.4); they hold no address.
//   - Domain literals ("user@[192.0.2.1]") are ErrMalformed: DMARC needs a
//     domain name (the Author Domain, RFC 9989 §3.2.2), not an address.
//   - A trailing dot ("user@example.com.") is ErrMalformed: neither dot-atom
//     nor obs-domain (RFC 5322 §3.4.1, §4.4) allows it. Stripping it would
//     accept input that other parsers (and mail clients) read differently.
//   - Source routes ("<@relay:user@example.com>", obs-route, RFC 5322 §4.4)
//     are ErrMalformed: they have not been generated for decades and only
//     widen the gap between what a mail client shows and what we evaluate.
//   - A top-level domain made of digits only ("user@192.0.2.1") is
//     ErrMalformed: it is an IP address written as a domain, not a name.
//   - Control characters (other than folding white space) and invalid UTF-8
//     are ErrMalformed anywhere in the field, including display names and
//     comments, even though obs-qtext would allow some controls there.
//   - Display names may be quoted or unquoted, may contain RFC 2047
//     encoded-words (skipped as ordinary phrase text, never decoded) and
//     obs-phrase dots ("John Q. Public"). An unquoted "@" in a display name is
//     not phrase text, so "victim@bank.example <a@evil.example>" is
//     ErrMalformed.
//   - Domains are converted with the IDNA Lookup profile (UTS #46 mapping, so
//     upper case, full-width letters and ideographic full stops map to their
//     canonical form) and returned as lower-case A-labels: RFC 9989 §5.3.1
//     requires U-labels to be converted to A-labels (RFC 5890 §2.3).
package mailaddr

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"golang.org/x/net/idna"
)

// ErrNoFrom reports that a message has no From field, an empty one, or one
// that holds no mailbox (only empty groups).
var ErrNoFrom = errors.New("mailaddr: no From address")

// ErrMultipleFrom reports several From fields, or one From field that holds
// more than one mailbox (groups count the mailboxes they contain).
var ErrMultipleFrom = errors.New("mailaddr: multiple From addresses")

// ErrMalformed reports input that does not follow the address grammar.
// Errors returned by this package wrap it with a description and a byte
// offset where one is useful.
var ErrMalformed = errors.New("mailaddr: malformed address")

// ErrNullPath reports the null reverse-path ("" or "<>", RFC 5321 §4.5.5),
// which has no domain; SPF then uses the HELO identity (RFC 7208 §2.4).
var ErrNullPath = errors.New("mailaddr: null reverse-path")

// FromDomain returns the domain of the single author address in the From
// header fields of a message, lower-cased and as an IDNA A-label.
//
// values holds the raw value of every From field of the message, one string
// per field, as the MTA passed it: with or without a leading space, and
// possibly folded ("\r\n " or "\n\t"). The result is one of:
//
//   - the domain, and a nil error;
//   - ErrNoFrom when values is empty, the field is empty, or it holds no
//     mailbox;
//   - ErrMultipleFrom when there are several fields or several mailboxes;
//   - an error wrapping ErrMalformed when the field does not parse or the
//     domain is not a valid domain name.
//
// Check the result with errors.Is.
func FromDomain(values []string) (string, error) {
	switch len(values) {
	case 0:
		return "", ErrNoFrom
	case 1:
	default:
		// RFC 5322 §3.6: the From field occurs exactly once.
		return "", fmt.Errorf("%w: %d From fields", ErrMultipleFrom, len(values))
	}
	domains, err := parseFrom(values[0])
	if err != nil {
		return "", err
	}
	switch len(domains) {
	case 0:
		return "", ErrNoFrom
	case 1:
	default:
		return "", fmt.Errorf("%w: %d mailboxes in From", ErrMultipleFrom, len(domains))
	}
	return normalizeDomain(domains[0])
}

// AddressDomain returns the domain of an SMTP envelope address (such as the
// MAIL FROM reverse-path, "user@Example.COM" or "<user@example.com>"),
// lower-cased and as an IDNA A-label. The null reverse-path ("" or "<>")
// gives ErrNullPath; anything that is not local-part@domain gives an error
// wrapping ErrMalformed. A source route ("@relay:user@example.com") is
// ignored, as RFC 5321 §4.1.2 requires of receivers.
func AddressDomain(addr string) (string, error) {
	s := strings.TrimSpace(addr)
	if strings.HasPrefix(s, "<") {
		if !strings.HasSuffix(s, ">") {
			return "", fmt.Errorf("%w: unbalanced '<' in %q", ErrMalformed, addr)
		}
		s = strings.TrimSpace(s[1 : len(s)-1])
	} else if strings.HasSuffix(s, ">") {
		return "", fmt.Errorf("%w: unbalanced '>' in %q", ErrMalformed, addr)
	}
	if s == "" {
		return "", ErrNullPath
	}
	if !utf8.ValidString(s) {
		return "", fmt.Errorf("%w: invalid UTF-8 in %q", ErrMalformed, addr)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f {
			return "", fmt.Errorf("%w: control character at offset %d in %q", ErrMalformed, i, addr)
		}
	}
	// RFC 5321 §4.1.2 and Appendix C: accept and ignore a source route.
	if s[0] == '@' {
		colon := strings.IndexByte(s, ':')
		if colon < 0 {
			return "", fmt.Errorf("%w: missing local part in %q", ErrMalformed, addr)
		}
		s = s[colon+1:]
	}
	var rest string
	if s != "" && s[0] == '"' {
		// Quoted-string local part (RFC 5321 §4.1.2): find its end,
		// honouring quoted-pairs.
		end := -1
		for i := 1; i < len(s); i++ {
			if s[i] == '\\' {
				i++
				continue
			}
			if s[i] == '"' {
				end = i
				break
			}
		}
		if end < 0 {
			return "", fmt.Errorf("%w: unterminated quoted string in %q", ErrMalformed, addr)
		}
		rest = s[end+1:]
	} else {
		at := strings.IndexByte(s, '@')
		if at < 0 {
			return "", fmt.Errorf("%w: missing @ in %q", ErrMalformed, addr)
		}
		local := s[:at]
		if local == "" {
			return "", fmt.Errorf("%w: empty local part in %q", ErrMalformed, addr)
		}
		if strings.ContainsAny(local, " \t\"<>()[]\\,;:") {
			return "", fmt.Errorf("%w: invalid local part in %q", ErrMalformed, addr)
		}
		rest = s[at:]
	}
	if !strings.HasPrefix(rest, "@") {
		return "", fmt.Errorf("%w: missing @ in %q", ErrMalformed, addr)
	}
	domain := rest[1:]
	if strings.HasPrefix(domain, "[") {
		return "", fmt.Errorf("%w: address literal %q is not a domain", ErrMalformed, domain)
	}
	if strings.ContainsAny(domain, "@ \t\"<>()[]\\,;:") {
		return "", fmt.Errorf("%w: invalid domain %q", ErrMalformed, domain)
	}
	return normalizeDomain(domain)
}

// normalizeDomain converts a domain (U-labels, A-labels or a mix, any case)
// to its lower-case A-label form and checks that the result is a valid host
// name: LDH labels of 1 to 63 octets, at most 253 octets in all (RFC 1035
// §2.3.4, RFC 5890 §2.3.2.1), and a top-level label that is not all digits
// (RFC 3696 §2).
func normalizeDomain(d string) (string, error) {
	if d == "" {
		return "", fmt.Errorf("%w: empty domain", ErrMalformed)
	}
	if strings.HasSuffix(d, ".") {
		// Not part of the mail domain grammar (RFC 5322 §3.4.1, RFC 5321
		// §4.1.2); see the package documentation.
		return "", fmt.Errorf("%w: trailing dot in domain %q", ErrMalformed, d)
	}
	a, err := idna.Lookup.ToASCII(d)
	if err != nil {
		return "", fmt.Errorf("%w: domain %q: %w", ErrMalformed, d, err)
	}
	a = strings.ToLower(a)
	if len(a) > 253 {
		return "", fmt.Errorf("%w: domain %q longer than 253 octets", ErrMalformed, d)
	}
	labels := strings.Split(a, ".")
	for _, l := range labels {
		if l == "" {
			return "", fmt.Errorf("%w: empty label in domain %q", ErrMalformed, d)
		}
		if len(l) > 63 {
			return "", fmt.Errorf("%w: label longer than 63 octets in domain %q", ErrMalformed, d)
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return "", fmt.Errorf("%w: invalid character %q in domain %q", ErrMalformed, c, d)
			}
		}
	}
	tld := labels[len(labels)-1]
	if strings.Trim(tld, "0123456789") == "" {
		return "", fmt.Errorf("%w: numeric top-level label in domain %q", ErrMalformed, d)
	}
	return a, nil
}
