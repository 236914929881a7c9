package keys

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// CNAMETarget returns the name in the provider's zone cnameZone where the
// record of domain/selector is published in CNAME mode: the customer adds
// <selector>._domainkey.<domain> CNAME <selector>.<domain>.<cnameZone>.
// The domain is kept whole in the name so that two customers never share
// a name, whatever their selectors.
func CNAMETarget(domain, selector, cnameZone string) string {
	return strings.ToLower(selector + "." + strings.TrimSuffix(domain, ".") + "." + strings.TrimSuffix(cnameZone, "."))
}

// ErrSelectorBusy is wrapped by SelectorScheme.Next when the alternating
// selector due next still holds a key: rotation waits for its retirement.
var ErrSelectorBusy = errors.New("selector still in use")

// SelectorScheme says how keygen and rotate name new keys: by a template
// (Format, or the default date scheme with Suffix), or by Alternate, two
// fixed selectors used in turn.
type SelectorScheme struct {
	// Format is keys.selector_format; empty means the date scheme,
	// YYYY-MM ("e" added for Ed25519) followed by Suffix.
	Format string
	// Suffix is keys.selector_suffix, used with the date scheme only.
	Suffix string
	// Alternate is keys.alternate: two selectors used in turn (Ed25519
	// keys use them with "e" appended).
	Alternate []string
}

// monthNames are %b's values: lower case, as selectors are compared
// without case anyway.
var monthNames = [...]string{"jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"}

// renderFormat expands a selector template for a key of algo made at t. It
// also returns where a sequence letter goes when the selector is taken:
// right after the last token (for the template "%b%Y.myesp", between
// "dec2026" and ".myesp").
func renderFormat(format string, t time.Time, algo string) (sel string, seqAt int, err error) {
	t = t.UTC()
	var b strings.Builder
	for i := 0; i < len(format); i++ {
		c := format[i]
		if c != '%' {
			b.WriteByte(c)
			continue
		}
		if i+1 == len(format) {
			return "", 0, fmt.Errorf("selector template %q ends with a lone %%", format)
		}
		i++
		switch format[i] {
		case 'Y':
			fmt.Fprintf(&b, "%04d", t.Year())
		case 'y':
			fmt.Fprintf(&b, "%02d", t.Year()%100)
		case 'm':
			fmt.Fprintf(&b, "%02d", int(t.Month()))
		case 'b':
			b.WriteString(monthNames[t.Month()-1])
		case 'd':
			fmt.Fprintf(&b, "%02d", t.Day())
		case 'a':
			if AlgorithmOf(algo) == Ed25519SHA256 || algo == string(Ed25519SHA256) {
				b.WriteString("ed")
			} else {
				b.WriteString("rsa")
			}
		case '%':
			b.WriteByte('%')
			continue // a literal, not a token: letters do not go after it
		default:
			return "", 0, fmt.Errorf("selector template %q: unknown %%%c (use %%Y %%y %%m %%b %%d %%a %%%%)", format, format[i])
		}
		seqAt = b.Len()
	}
	return strings.ToLower(b.String()), seqAt, nil
}

// ValidateSelectorFormat checks a keys.selector_format template: known
// tokens only, a year (%Y or %y) and a month (%m or %b) so that keys of
// different periods never share a selector, and a valid selector for
// every month and both algorithms.
func ValidateSelectorFormat(format string) error {
	if format == "" {
		return nil
	}
	if !strings.Contains(format, "%Y") && !strings.Contains(format, "%y") {
		return fmt.Errorf("selector template %q has no year (%%Y or %%y): selectors of different years would collide", format)
	}
	if !strings.Contains(format, "%m") && !strings.Contains(format, "%b") {
		return fmt.Errorf("selector template %q has no month (%%m or %%b): selectors of different months would collide", format)
	}
	for m := time.January; m <= time.December; m++ {
		for _, algo := range []string{"rsa-2048", "ed25519"} {
			t := time.Date(2026, m, 28, 0, 0, 0, 0, time.UTC)
			sel, seqAt, err := renderFormat(format, t, algo)
			if err != nil {
				return err
			}
			for _, s := range []string{sel, sel[:seqAt] + "zb" + sel[seqAt:]} {
				if !ValidSelector(s) {
					return fmt.Errorf("selector template %q makes %q, which is not a valid selector (letters, digits, '-', '_', dot-separated labels)", format, s)
				}
			}
		}
	}
	return nil
}

// Next returns the selector for a new key of algo ("rsa-2048", "ed25519",
// ... or an Algorithm) made at t.
//
// taken lists every selector the domain has used, retired ones included;
// present lists those of its current keys (any algorithm); newest is the
// selector of its newest key of the same algorithm ("" if none).
//
// With a template, a taken selector is never reused, because resolvers and
// verifiers may still hold its old record: a letter (b, c, ... z, zb, ...)
// goes after the date part instead. Keys are ordered by when they were made,
// not by name, so a name may sort anywhere.
//
// With Alternate, the answer is the one of the two selectors that newest is
// not; it may have been used before (that is the point: the customer's two
// CNAMEs stay), but never while a current key still holds it.
func (s SelectorScheme) Next(t time.Time, algo string, taken, present []string, newest string) (string, error) {
	if len(s.Alternate) == 2 {
		pair := s.Alternate
		if AlgorithmOf(algo) == Ed25519SHA256 || algo == string(Ed25519SHA256) {
			pair = []string{pair[0] + "e", pair[1] + "e"}
		}
		next := strings.ToLower(pair[0])
		if strings.EqualFold(newest, pair[0]) {
			next = strings.ToLower(pair[1])
		}
		for _, p := range present {
			if strings.EqualFold(p, next) {
				return "", fmt.Errorf("keys: alternating selectors %s/%s: %s still holds a key; it must be retired (keys.grace after it was superseded) before its selector is used again: %w",
					pair[0], pair[1], next, ErrSelectorBusy)
			}
		}
		return next, nil
	}
	format := s.Format
	if format == "" {
		format = "%Y-%m"
	}
	sel, seqAt, err := renderFormat(format, t, algo)
	if err != nil {
		return "", err
	}
	tail := sel[seqAt:]
	if s.Format == "" {
		if AlgorithmOf(algo) == Ed25519SHA256 || algo == string(Ed25519SHA256) {
			sel += "e"
			seqAt++
		}
		sel, tail = sel+strings.ToLower(s.Suffix), strings.ToLower(s.Suffix)
	}
	head := sel[:seqAt]
	used := map[string]bool{}
	for _, u := range append(append([]string(nil), taken...), present...) {
		used[strings.ToLower(u)] = true
	}
	tag := ""
	for range maxSequence {
		cand := head + tag + tail
		if !used[cand] {
			if !ValidSelector(cand) {
				return "", fmt.Errorf("keys: selector %q made from the template is not valid", cand)
			}
			return cand, nil
		}
		tag = nextTag(tag)
	}
	return "", fmt.Errorf("keys: every selector %s[b-z...]%s up to %d is taken; choose one with -s", head, tail, maxSequence)
}
