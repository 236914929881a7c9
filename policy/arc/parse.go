// Package arc verifies and seals Authenticated Received Chains (RFC 8617).
//
// It knows nothing of milters or of authmilter's policy: it takes header
// fields, a body hash, a TXT resolver and, to seal, a crypto.Signer. The
// body is hashed by the caller as it streams (dkimsign.NewBodyHasher with
// the canonicalization Chain.BodyCanon names), so no body is ever kept.
package arc

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/authmilter/authmilter/policy/dkimsign"
)

// The three header fields of an ARC set (RFC 8617 §4.1).
const (
	SealField    = "ARC-Seal"
	MessageField = "ARC-Message-Signature"
	ResultsField = "ARC-Authentication-Results"
)

// MaxInstance is the highest instance an ARC set may have (RFC 8617
// §4.2.1): a chain with more sets fails.
const MaxInstance = 50

// maxFieldLen bounds one ARC field value: a 16 KiB RSA signature is far
// below it, and a hostile field cannot make parsing or hashing costly.
const maxFieldLen = 64 << 10

// Set is one ARC set: the three fields that share an instance number, with
// their values exactly as received (leading space and folding kept).
type Set struct {
	Instance int
	// Results, Message and Seal are the values of the
	// ARC-Authentication-Results, ARC-Message-Signature and ARC-Seal fields.
	Results, Message, Seal string
}

// Chain is the ARC chain of a message, ordered by instance (Sets[0] is
// i=1). A Chain with Err set is malformed: its verification is fail with
// Err as the reason.
type Chain struct {
	Sets []Set
	// Err says why the chain is structurally invalid (RFC 8617 §5.2 steps
	// 1-3); nil when every instance 1..N has exactly one field of each kind.
	Err error
}

// IsARCField reports whether name is one of the three ARC header fields.
func IsARCField(name string) bool {
	return strings.EqualFold(name, SealField) || strings.EqualFold(name, MessageField) ||
		strings.EqualFold(name, ResultsField)
}

// ParseChain collects the ARC sets of a header (RFC 8617 §5.2 steps 1-3).
// It returns nil when the header has no ARC field at all (arc=none). A
// chain with a field whose instance cannot be read, an instance outside
// 1..50, a missing or repeated field in an instance, or a gap has Err set.
func ParseChain(header []dkimsign.Field) *Chain {
	byInstance := map[int]*Set{}
	c := &Chain{}
	seen := false
	for _, f := range header {
		if !IsARCField(f.Name) {
			continue
		}
		seen = true
		if c.Err != nil {
			continue
		}
		i, err := fieldInstance(f)
		if err != nil {
			c.Err = err
			continue
		}
		s := byInstance[i]
		if s == nil {
			if len(byInstance) == MaxInstance {
				c.Err = fmt.Errorf("more than %d ARC sets", MaxInstance)
				continue
			}
			s = &Set{Instance: i}
			byInstance[i] = s
		}
		slot := &s.Seal
		switch {
		case strings.EqualFold(f.Name, MessageField):
			slot = &s.Message
		case strings.EqualFold(f.Name, ResultsField):
			slot = &s.Results
		}
		if *slot != "" {
			c.Err = fmt.Errorf("i=%d has more than one %s", i, canonicalName(f.Name))
			continue
		}
		*slot = f.Value
	}
	if !seen {
		return nil
	}
	if c.Err != nil {
		return c
	}
	// RFC 8617 §5.2 step 3: instances 1..N, each complete, no gaps.
	for i := 1; i <= len(byInstance); i++ {
		s := byInstance[i]
		if s == nil {
			c.Err = fmt.Errorf("no ARC set with i=%d (instances must run from 1 without gaps)", i)
			return c
		}
		for _, part := range []struct{ name, v string }{
			{ResultsField, s.Results}, {MessageField, s.Message}, {SealField, s.Seal},
		} {
			if part.v == "" {
				c.Err = fmt.Errorf("i=%d has no %s", i, part.name)
				return c
			}
		}
		c.Sets = append(c.Sets, *s)
	}
	return c
}

// canonicalName spells an ARC field name as the RFC does.
func canonicalName(name string) string {
	for _, n := range []string{SealField, MessageField, ResultsField} {
		if strings.EqualFold(n, name) {
			return n
		}
	}
	return name
}

// fieldInstance reads i= of an ARC field: a tag of ARC-Seal and
// ARC-Message-Signature, the leading "i=N;" of ARC-Authentication-Results
// (RFC 8617 §4.1.1).
func fieldInstance(f dkimsign.Field) (int, error) {
	name := canonicalName(f.Name)
	if len(f.Value) > maxFieldLen {
		return 0, fmt.Errorf("%s longer than %d bytes", name, maxFieldLen)
	}
	var v string
	if name == ResultsField {
		first, _, _ := strings.Cut(f.Value, ";")
		k, val, ok := strings.Cut(first, "=")
		if !ok || unfoldTrim(k) != "i" {
			return 0, fmt.Errorf("%s does not start with i=", name)
		}
		v = val
	} else {
		tags, err := ParseTags(f.Value)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", name, err)
		}
		var ok bool
		if v, ok = tags["i"]; !ok {
			return 0, fmt.Errorf("%s has no i= tag", name)
		}
	}
	v = unfoldTrim(v)
	i, err := strconv.Atoi(v)
	// RFC 8617 §4.2.1: 1..50, written in at most two digits.
	if err != nil || len(v) > 2 || v[0] == '+' || v[0] == '-' || i < 1 || i > MaxInstance {
		return 0, fmt.Errorf("%s has i=%.10q, not an instance 1..%d", name, v, MaxInstance)
	}
	return i, nil
}

// unfoldTrim removes all folding whitespace from a tag name or value.
func unfoldTrim(s string) string {
	return strings.Map(func(r rune) rune {
		if r == ' ' || r == '\t' || r == '\r' || r == '\n' {
			return -1
		}
		return r
	}, s)
}

// ParseTags parses a DKIM-style tag list (RFC 6376 §3.2) as ARC-Seal and
// ARC-Message-Signature use it. Values keep inner whitespace except that
// folding is removed at both ends; a duplicate tag is an error.
func ParseTags(v string) (map[string]string, error) {
	tags := map[string]string{}
	for _, part := range strings.Split(v, ";") {
		if strings.TrimSpace(part) == "" {
			continue
		}
		k, val, ok := strings.Cut(part, "=")
		if !ok {
			return nil, fmt.Errorf("malformed tag %.20q", strings.TrimSpace(part))
		}
		k = unfoldTrim(k)
		if k == "" {
			return nil, fmt.Errorf("empty tag name")
		}
		if _, dup := tags[k]; dup {
			return nil, fmt.Errorf("duplicate tag %.10q", k)
		}
		tags[k] = strings.Trim(val, " \t\r\n")
	}
	return tags, nil
}

// stripSignature returns v with the value of its b= tag removed, keeping
// every other byte, as the signing input needs it (RFC 6376 §3.7).
func stripSignature(v string) string {
	var b strings.Builder
	rest := v
	for {
		part, after, more := strings.Cut(rest, ";")
		k, _, ok := strings.Cut(part, "=")
		if ok && unfoldTrim(k) == "b" {
			b.WriteString(part[:strings.IndexByte(part, '=')+1])
		} else {
			b.WriteString(part)
		}
		if !more {
			return b.String()
		}
		b.WriteByte(';')
		rest = after
	}
}
