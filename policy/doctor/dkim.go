package doctor

import (
	"context"
	"crypto/ed25519"
	"crypto/rsa"
	"fmt"
	"slices"
	"strings"

	"github.com/authmilter/authmilter/keys"
	"github.com/authmilter/authmilter/policy/resolve"
)

// DKIMReport is the DKIM part of a report (RFC 6376).
type DKIMReport struct {
	// Selectors are the selectors checked: ours and those given, sorted.
	Selectors []DKIMSelector `json:"selectors"`
}

// DKIMSelector is one selector's key record.
type DKIMSelector struct {
	Selector string `json:"selector"`
	// Own is true for one of our keys; State and Active are then its
	// publication state and whether the daemon signs with it, as
	// `authmilter keys` reports them.
	Own    bool   `json:"own"`
	State  string `json:"state,omitempty"`
	Active bool   `json:"active"`
	// KeyType is k= (rsa, ed25519), Bits the key size.
	KeyType string `json:"key_type,omitempty"`
	Bits    int    `json:"bits,omitempty"`
	// Testing is true for t=y, Revoked for an empty p=.
	Testing bool `json:"testing"`
	Revoked bool `json:"revoked"`
	// HashAlgorithms is h= (empty: any).
	HashAlgorithms []string `json:"hash_algorithms,omitempty"`
	// Record is the TXT record found.
	Record string `json:"record,omitempty"`
	// Error says why the record is unusable or could not be had.
	Error string `json:"error,omitempty"`
}

// Key sizes (RFC 8301 §3.2: verifiers must accept 1024 to 4096 bits and
// signers must use at least 1024; 2048 is today's advice).
const (
	dkimMinRSABits  = 1024
	dkimGoodRSABits = 2048
)

// maxDKIMSelectors bounds the selectors checked, each a DNS lookup.
const maxDKIMSelectors = 50

// checkDKIM checks our keys and the other selectors of the domain.
func checkDKIM(ctx context.Context, e *env) (*DKIMReport, []Finding) {
	var own []OwnKey
	if e.opt.OwnKeys != nil {
		own = e.opt.OwnKeys(e.domain)
	}
	ownBy := map[string]OwnKey{}
	var names []string
	for _, k := range own {
		ownBy[k.Selector] = k
		names = append(names, k.Selector)
	}
	for _, s := range e.opt.Selectors {
		names = append(names, strings.ToLower(strings.TrimSpace(s)))
	}
	slices.Sort(names)
	names = slices.Compact(names)
	var fs []Finding
	add := func(sev Severity, code, subject, msg, fix string) {
		fs = append(fs, Finding{Check: CheckDKIM, Severity: sev, Code: code, Subject: subject, Message: msg, Fix: fix})
	}
	if len(names) == 0 {
		add(Warn, "dkim-no-selectors", "", fmt.Sprintf("no DKIM selector to check: we hold no key for %s and no selector was given", e.domain),
			"give the selectors your mail providers sign with (-selector)")
		return &DKIMReport{}, fs
	}
	if len(names) > maxDKIMSelectors {
		add(Warn, "dkim-too-many-selectors", "", fmt.Sprintf("%d selectors: doctor checks the first %d", len(names), maxDKIMSelectors), "check the others in another run")
		names = names[:maxDKIMSelectors]
	}
	rep := &DKIMReport{}
	for _, sel := range names {
		s := DKIMSelector{Selector: sel}
		if k, ok := ownBy[sel]; ok {
			s.Own, s.State, s.Active = true, k.State, k.Active
			fs = append(fs, ownKeyFindings(e.domain, k)...)
		}
		fs = append(fs, checkSelector(ctx, e, &s)...)
		rep.Selectors = append(rep.Selectors, s)
	}
	return rep, fs
}

// ownKeyFindings reports one of our keys as `authmilter keys` sees it.
func ownKeyFindings(domain string, k OwnKey) []Finding {
	f := Finding{Check: CheckDKIM, Subject: k.Selector}
	active := "not active"
	if k.Active {
		active = "active"
	}
	switch keys.State(k.State) {
	case keys.Published, keys.Waiting:
		f.Severity, f.Code = OK, "dkim-own-key-published"
		f.Message = fmt.Sprintf("our key %s (%s %d bits, %s) is %s", k.Selector, k.Algorithm, k.Bits, active, k.State)
	case keys.Unchecked, "":
		return nil // the record check below looks at DNS itself
	case keys.TempError:
		f.Severity, f.Code = Error, "dkim-dns-error"
		f.Message = fmt.Sprintf("our key %s: its record could not be looked up: %s", k.Selector, clipText(k.Detail))
		f.Fix = "make the name servers answer, then run doctor again"
	default:
		f.Severity, f.Code = Error, "dkim-own-key-unpublished"
		f.Message = fmt.Sprintf("our key %s (%s, %s) is %s", k.Selector, k.Algorithm, active, k.State)
		if k.Detail != "" {
			f.Message += ": " + clipText(k.Detail)
		}
		f.Fix = fmt.Sprintf("publish the record that `authmilter keys record -d %s -s %s` prints, then check with `authmilter keys -d %s`", domain, k.Selector, domain)
	}
	return []Finding{f}
}

// checkSelector looks up and judges the key record of one selector,
// filling s.
func checkSelector(ctx context.Context, e *env, s *DKIMSelector) []Finding {
	var fs []Finding
	add := func(sev Severity, code, msg, fix string) {
		fs = append(fs, Finding{Check: CheckDKIM, Severity: sev, Code: code, Subject: clipText(s.Selector), Message: msg, Fix: fix})
	}
	name := keys.RecordName(e.domain, s.Selector)
	if !keys.ValidSelector(s.Selector) || len(name) > 253 {
		s.Error = "not a valid selector"
		add(Error, "dkim-selector-invalid", fmt.Sprintf("%q is not a valid DKIM selector (RFC 6376 §3.1: dot-separated labels of letters, digits, hyphens)", clipText(s.Selector)),
			"give the selector as it appears in s= of the signatures")
		return fs
	}
	txts, err := e.r.LookupTXT(ctx, name)
	switch {
	case resolve.IsNotFound(err):
		s.Error = "no TXT record at " + name
		add(Error, "dkim-selector-missing", fmt.Sprintf("no DKIM key record at %s: signatures with s=%s fail", name, s.Selector),
			fmt.Sprintf("publish the key record at %s, or stop signing with selector %s", name, s.Selector))
		return fs
	case err != nil:
		s.Error = "no answer: " + dnsFailureText(err)
		fs = append(fs, dnsFailure(CheckDKIM, "dkim-dns-error", clipText(s.Selector), "TXT "+name, err))
		return fs
	case len(txts) > 1:
		s.Error = fmt.Sprintf("%d TXT records", len(txts))
		add(Error, "dkim-multiple", fmt.Sprintf("%d TXT records at %s: verifiers may pick any of them (RFC 6376 §3.6.2.2)", len(txts), name),
			"keep exactly one key record at "+name)
		return fs
	}
	s.Record = txts[0]
	rec, err := keys.ParseRecord(txts[0])
	if err != nil {
		s.Error = err.Error()
		msg := fmt.Sprintf("the record at %s is not a valid DKIM key record: %s", name, clipText(err.Error()))
		if looksForeign(txts[0]) {
			msg = fmt.Sprintf("the record at %s is not a DKIM key record but looks like a wildcard or another record (%q)", name, clipText(txts[0]))
		}
		add(Error, "dkim-syntax", msg, fmt.Sprintf("publish a DKIM key record (v=DKIM1; k=...; p=...) at %s", name))
		return fs
	}
	s.KeyType, s.HashAlgorithms = rec.KeyType, rec.Hashes
	s.Testing = slices.Contains(rec.Flags, "y")
	if rec.PublicKey == "" {
		s.Revoked = true
		sev, fix := Warn, "fine for a retired key; if anyone still signs with this selector, publish its key"
		if s.Active {
			sev, fix = Error, "we still sign with this key: publish its record (`authmilter keys record`) or retire it"
		}
		add(sev, "dkim-revoked", fmt.Sprintf("the key at %s is revoked (empty p=): signatures with s=%s fail", name, s.Selector), fix)
		return fs
	}
	if rec.KeyType != "rsa" && rec.KeyType != "ed25519" {
		s.Error = "unknown key type k=" + rec.KeyType
		add(Error, "dkim-unknown-key-type", fmt.Sprintf("the record at %s has k=%s: verifiers know rsa and ed25519 only", name, clipText(rec.KeyType)),
			"publish the key with k=rsa or k=ed25519")
		return fs
	}
	if len(rec.Hashes) > 0 && !slices.Contains(rec.Hashes, "sha256") {
		s.Error = "h= excludes sha256"
		add(Error, "dkim-hash-excludes-sha256", fmt.Sprintf("the record at %s has h=%s: signatures with rsa-sha256 or ed25519-sha256 fail", name, clipText(strings.Join(rec.Hashes, ":"))),
			"remove h= or make it h=sha256")
		return fs
	}
	pub, err := rec.ParsePublicKey()
	if err != nil {
		s.Error = err.Error()
		add(Error, "dkim-syntax", fmt.Sprintf("the key at %s is unusable: %s", name, clipText(err.Error())),
			"publish the public key again exactly as generated (base64, no missing parts)")
		return fs
	}
	desc := rec.KeyType
	switch k := pub.(type) {
	case *rsa.PublicKey:
		s.Bits = k.N.BitLen()
		desc = fmt.Sprintf("rsa %d bits", s.Bits)
		switch {
		case s.Bits < dkimMinRSABits:
			add(Error, "dkim-key-too-small", fmt.Sprintf("the key at %s is RSA %d bits: verifiers reject keys under %d bits (RFC 8301)", name, s.Bits, dkimMinRSABits),
				biggerKeyFix(e.domain, s, "and revoke this one"))
			return fs
		case s.Bits < dkimGoodRSABits:
			add(Warn, "dkim-key-weak", fmt.Sprintf("the key at %s is RSA %d bits: under %d bits is weak today", name, s.Bits, dkimGoodRSABits),
				biggerKeyFix(e.domain, s, ""))
		}
	case ed25519.PublicKey:
		s.Bits = 256
		desc = "ed25519"
	}
	if s.Testing {
		add(Warn, "dkim-testing", fmt.Sprintf("the key at %s has t=y: verifiers may treat mail that fails with it as unsigned", name),
			"remove t=y once signing works")
	}
	add(OK, "dkim-selector-ok", fmt.Sprintf("%s: %s", name, desc), "")
	return fs
}

// looksForeign reports whether a TXT record that is not a valid DKIM key
// record is some other kind of record (SPF, a site verification token, a
// DMARC record), as a wildcard TXT answers for every selector.
func looksForeign(txt string) bool {
	t := strings.ToLower(strings.TrimSpace(txt))
	if strings.HasPrefix(t, "v=") && !strings.HasPrefix(t, "v=dkim1") {
		return true
	}
	return !strings.Contains(t, "p=")
}

// biggerKeyFix says how to get a key of dkimGoodRSABits: rotate ours, ask
// the provider for theirs.
func biggerKeyFix(domain string, s *DKIMSelector, then string) string {
	fix := fmt.Sprintf("ask the provider that signs with s=%s for a %d-bit key", s.Selector, dkimGoodRSABits)
	if s.Own {
		fix = fmt.Sprintf("rotate to a %d-bit key (authmilter rotate -d %s)", dkimGoodRSABits, domain)
	}
	if then != "" {
		fix += " " + then
	}
	return fix
}
