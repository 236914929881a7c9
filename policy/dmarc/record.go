package dmarc

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
)

// Domain Owner Assessment Policy values (RFC 9989 §4.7, tags p, sp and np).
const (
	PolicyNone       = "none"
	PolicyQuarantine = "quarantine"
	PolicyReject     = "reject"
)

// Errors returned by ParseRecord, checked with errors.Is.
var (
	// ErrNotDMARC reports a TXT record that does not start with
	// "v=DMARC1": RFC 9989 §4.7 says such records MUST be ignored, and the
	// DNS Tree Walk discards them (§4.10 step 2).
	ErrNotDMARC = errors.New("dmarc: not a DMARC1 record")
	// ErrSyntax reports a DMARC record whose tag list is unusable as a whole
	// (a tag that occurs twice, RFC 6376 §3.2, whose tag-value syntax
	// RFC 9989 §4.7 adopts).
	ErrSyntax = errors.New("dmarc: record syntax error")
	// ErrInvalidPolicy reports a record with an invalid p, sp or np value
	// and no valid rua URI: RFC 9989 §4.10.1 says the receiver then applies
	// no DMARC processing to the message.
	ErrInvalidPolicy = errors.New("dmarc: invalid policy in record")
)

// Record is a parsed DMARC Policy Record (RFC 9989 §4.7, §4.8).
//
// Values that are syntactically invalid are replaced by their defaults or
// dropped, as RFC 9989 §4.8 requires of receivers; each such repair is
// described in Warnings so that tools (authmilter check) can show it.
type Record struct {
	// P is the Domain Owner Assessment Policy: none, quarantine or reject.
	// A record without p is treated as p=none (RFC 9989 §4.7).
	P string
	// SP is the policy for existing subdomains; empty when absent.
	SP string
	// NP is the policy for non-existent subdomains; empty when absent.
	NP string
	// PSD is the psd tag: "y", "n" or "u" (the default).
	PSD string
	// T is the t (testing) tag: "y", "n", or empty when absent.
	T string
	// ADKIM and ASPF are the alignment modes: "r" (the default) or "s".
	ADKIM, ASPF string
	// RUA and RUF are the valid reporting URIs, in order, without the
	// obsolete "!size" suffix.
	RUA, RUF []string
	// RUALimits holds, for each RUA URI, the report size limit in bytes
	// its "!size" suffix asked for (RFC 7489 §6.2), or 0 for none. RFC
	// 9989 made the suffix obsolete, but senders still honour it.
	RUALimits []int64
	// FO holds the failure reporting options (default ["0"]).
	FO []string
	// PCT is the legacy RFC 7489 pct tag (0 to 100), or -1 when absent or
	// invalid. RFC 9989 removed it (Appendix A.6); see Testing.
	PCT int
	// Warnings lists the syntax errors that were repaired or ignored.
	Warnings []string
}

// Testing reports whether the Domain Owner asks for its policy to be applied
// one level below what it says (RFC 9989 §4.7, tag t). An explicit t tag
// decides. Without one, a legacy pct=0 counts as t=y: RFC 9989 Appendix A.6
// introduces t=y and t=n as the analogues of pct=0 and pct=100, the two pct
// values that receivers actually honoured; any other pct value is ignored.
func (r *Record) Testing() bool {
	if r.T != "" {
		return r.T == "y"
	}
	return r.PCT == 0
}

// ParseRecord parses the text of one DMARC TXT record (its character-strings
// already concatenated, RFC 9989 §4.5). Tag names and keyword values are
// case-insensitive; the version "DMARC1" is case-sensitive (§4.8). Unknown
// tags are ignored (§4.7) and other syntax errors are repaired (§4.8, see
// Record.Warnings). It fails with an error wrapping ErrNotDMARC, ErrSyntax or
// ErrInvalidPolicy.
func ParseRecord(txt string) (*Record, error) {
	rec, err := parseRecord(txt)
	if err != nil {
		return nil, err
	}
	return rec, nil
}

func trimWSP(s string) string { return strings.Trim(s, " \t") }

func isAlpha(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i] | 0x20
		if c < 'a' || c > 'z' {
			return false
		}
	}
	return true
}

// isDMARC1 reports whether txt starts with the version tag "v=DMARC1"
// (RFC 9989 §4.7: it MUST be the first tag; §4.8: dmarc-version =
// "v" equals %s"DMARC1").
func isDMARC1(txt string) bool {
	first, _, _ := strings.Cut(txt, ";")
	name, value, ok := strings.Cut(first, "=")
	return ok && strings.EqualFold(trimWSP(name), "v") && trimWSP(value) == "DMARC1"
}

// parseRecord parses a record. For ErrSyntax and ErrInvalidPolicy it also
// returns the best-effort record (first occurrence of each tag wins), which
// the tree walk uses to read the psd tag.
func parseRecord(txt string) (*Record, error) {
	txt = trimWSP(txt)
	if !isDMARC1(txt) {
		return nil, fmt.Errorf("%w: %q", ErrNotDMARC, truncate(txt))
	}
	rec := &Record{P: PolicyNone, PSD: "u", ADKIM: "r", ASPF: "r", FO: []string{"0"}, PCT: -1}
	warn := func(format string, args ...any) {
		rec.Warnings = append(rec.Warnings, fmt.Sprintf(format, args...))
	}
	parts := strings.Split(txt, ";")
	seen := map[string]bool{"v": true}
	var dup []string
	var badPolicy []string
	var pSet string
	for _, part := range parts[1:] {
		part = trimWSP(part)
		if part == "" {
			continue
		}
		name, value, ok := strings.Cut(part, "=")
		if !ok {
			warn("ignored %q: no '='", truncate(part))
			continue
		}
		name, value = strings.ToLower(trimWSP(name)), trimWSP(value)
		if !isAlpha(name) {
			warn("ignored %q: invalid tag name", truncate(part))
			continue
		}
		if seen[name] {
			dup = append(dup, name)
			continue
		}
		seen[name] = true
		if value == "" {
			warn("ignored empty %s tag", name)
			continue
		}
		if bad := badValueByte(value); bad >= 0 {
			warn("ignored %s tag: invalid character 0x%02x", name, bad)
			continue
		}
		lv := strings.ToLower(value)
		switch name {
		case "p", "sp", "np":
			switch lv {
			case PolicyNone, PolicyQuarantine, PolicyReject:
			default:
				badPolicy = append(badPolicy, fmt.Sprintf("%s=%s", name, truncate(value)))
				continue
			}
			switch name {
			case "p":
				pSet = lv
			case "sp":
				rec.SP = lv
			case "np":
				rec.NP = lv
			}
		case "t":
			if lv != "y" && lv != "n" {
				warn("invalid t=%s, using the default n", truncate(value))
				continue
			}
			rec.T = lv
		case "psd":
			if lv != "y" && lv != "n" && lv != "u" {
				warn("invalid psd=%s, using the default u", truncate(value))
				continue
			}
			rec.PSD = lv
		case "adkim", "aspf":
			if lv != "r" && lv != "s" {
				warn("invalid %s=%s, using the default r", name, truncate(value))
				continue
			}
			if name == "adkim" {
				rec.ADKIM = lv
			} else {
				rec.ASPF = lv
			}
		case "rua", "ruf":
			uris, limits := parseURIList(value, name, warn)
			if name == "rua" {
				rec.RUA, rec.RUALimits = uris, limits
			} else {
				rec.RUF = uris
			}
		case "fo":
			fo, ok := parseFO(lv)
			if !ok {
				warn("invalid fo=%s, using the default 0", truncate(value))
				continue
			}
			rec.FO = fo
		case "pct":
			// Legacy RFC 7489 §6.3 tag, "historic" in RFC 9989 §9.3.
			n, err := strconv.Atoi(value)
			if err != nil || n < 0 || n > 100 {
				warn("invalid pct=%s ignored", truncate(value))
				continue
			}
			rec.PCT = n
		case "rf", "ri":
			// Historic RFC 7489 reporting tags (RFC 9989 §9.3): ignored.
		default:
			// RFC 9989 §4.7: unknown tags MUST be ignored.
		}
	}
	if pSet != "" {
		rec.P = pSet
	}
	var err error
	if len(badPolicy) > 0 {
		// RFC 9989 §4.10.1: with at least one valid rua URI, act as if the
		// record said p=none; otherwise apply no DMARC processing.
		if len(rec.RUA) > 0 {
			warn("invalid %s: treated as p=none because rua is valid", strings.Join(badPolicy, ", "))
			rec.P, rec.SP, rec.NP = PolicyNone, "", ""
		} else {
			err = fmt.Errorf("%w: %s", ErrInvalidPolicy, strings.Join(badPolicy, ", "))
		}
	}
	if len(dup) > 0 {
		// RFC 6376 §3.2: a tag name that occurs more than once makes the
		// whole tag-list invalid.
		err = fmt.Errorf("%w: duplicate tag %s", ErrSyntax, strings.Join(dup, ", "))
	}
	return rec, err
}

// badValueByte returns the first byte that dmarc-value does not allow
// (RFC 9989 §4.8: %x20-3A / %x3C-7E, plus the WSP that separates list
// items), or -1.
func badValueByte(v string) int {
	for i := 0; i < len(v); i++ {
		c := v[i]
		if (c < 0x20 && c != '\t') || c > 0x7e {
			return int(c)
		}
	}
	return -1
}

// parseURIList parses dmarc-urilist (RFC 9989 §4.8), keeping the valid URIs
// and splitting off the obsolete "!size" suffix (obs-dmarc-uri) as a limit
// in bytes (0: none).
func parseURIList(value, tag string, warn func(string, ...any)) ([]string, []int64) {
	var uris []string
	var limits []int64
	for _, u := range strings.Split(value, ",") {
		u = trimWSP(u)
		var limit int64
		if i := strings.LastIndexByte(u, '!'); i >= 0 && isSize(u[i+1:]) {
			limit = sizeBytes(u[i+1:])
			u = u[:i]
		}
		pu, err := url.Parse(u)
		if u == "" || err != nil || pu.Scheme == "" || (pu.Opaque == "" && pu.Host == "" && pu.Path == "") {
			warn("ignored invalid %s URI %q", tag, truncate(u))
			continue
		}
		uris = append(uris, u)
		limits = append(limits, limit)
	}
	return uris, limits
}

// sizeBytes converts an isSize string to bytes (k, m, g, t are powers of
// two, RFC 7489 §6.2), saturating instead of overflowing.
func sizeBytes(s string) int64 {
	s = strings.ToLower(s)
	mult := int64(1)
	switch s[len(s)-1] {
	case 'k':
		mult = 1 << 10
	case 'm':
		mult = 1 << 20
	case 'g':
		mult = 1 << 30
	case 't':
		mult = 1 << 40
	}
	s = strings.TrimRight(s, "kmgt")
	var n int64
	for i := 0; i < len(s); i++ {
		n = n*10 + int64(s[i]-'0')
		if n > 1<<50 {
			return 1 << 62
		}
	}
	if n > (1<<62)/mult {
		return 1 << 62
	}
	return n * mult
}

// isSize matches obs-dmarc-report-size without the "!": 1*DIGIT [k/m/g/t].
func isSize(s string) bool {
	s = strings.TrimRight(strings.ToLower(s), "kmgt")
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// parseFO parses dmarc-fo (RFC 9989 §4.8): colon-separated 0, 1, d, s, each
// at most once, 0 and 1 mutually exclusive.
func parseFO(v string) ([]string, bool) {
	seen := map[string]bool{}
	var out []string
	for _, o := range strings.Split(v, ":") {
		o = trimWSP(o)
		switch o {
		case "0", "1", "d", "s":
		default:
			return nil, false
		}
		if seen[o] {
			return nil, false
		}
		seen[o] = true
		out = append(out, o)
	}
	if seen["0"] && seen["1"] {
		return nil, false
	}
	return out, true
}

// truncate shortens hostile input before it goes into an error or a log.
func truncate(s string) string {
	const max = 64
	if len(s) > max {
		return s[:max] + "..."
	}
	return s
}
