package policy

import (
	"context"
	"errors"
	"io"
	"strings"

	"github.com/emersion/go-msgauth/dkim"
)

// DKIMResult is the outcome of one DKIM-Signature, in RFC 8601 terms.
type DKIMResult struct {
	// Result is pass, fail, neutral, policy, temperror or permerror.
	Result string
	// Domain, Selector and Algorithm are the signature's d=, s= and a=.
	Domain, Selector, Algorithm string
	// B is the signature's b= (the A-R carries its first 8 characters).
	B string
	// Reason explains a result other than pass.
	Reason string
}

// VerifyDKIM verifies up to max DKIM signatures of a message whose header
// is given field by field and whose body is read from body. Lookups go
// through r with ctx's deadline.
func VerifyDKIM(ctx context.Context, r Resolver, header []HeaderField, body io.Reader, max int) []DKIMResult {
	var sigs []DKIMResult
	for _, f := range header {
		if strings.EqualFold(f.Name, "DKIM-Signature") {
			sigs = append(sigs, parseSignatureTags(f.Value))
		}
	}
	if len(sigs) == 0 {
		return nil
	}
	var hdr strings.Builder
	for _, f := range header {
		hdr.WriteString(f.Name + ":" + f.Value + "\r\n")
	}
	hdr.WriteString("\r\n")
	opts := &dkim.VerifyOptions{
		LookupTXT:        func(name string) ([]string, error) { return r.LookupTXT(ctx, name) },
		MaxVerifications: max,
	}
	verifs, err := dkim.VerifyWithOptions(io.MultiReader(strings.NewReader(hdr.String()), body), opts)
	if err != nil && !errors.Is(err, dkim.ErrTooManySignatures) {
		for i := range sigs {
			sigs[i].Result, sigs[i].Reason = "permerror", err.Error()
		}
		return sigs
	}
	if len(sigs) > max {
		sigs = sigs[:max]
	}
	for i, v := range verifs {
		if i >= len(sigs) {
			break
		}
		switch {
		case v.Err == nil:
			sigs[i].Result = "pass"
		case dkim.IsTempFail(v.Err):
			sigs[i].Result, sigs[i].Reason = "temperror", v.Err.Error()
		case dkim.IsPermFail(v.Err):
			sigs[i].Result, sigs[i].Reason = "permerror", v.Err.Error()
		default:
			sigs[i].Result, sigs[i].Reason = "fail", v.Err.Error()
		}
	}
	return sigs
}

// parseSignatureTags reads d=, s=, a= and b= of a DKIM-Signature value for
// reporting; the verifier does the real parsing.
func parseSignatureTags(v string) DKIMResult {
	var r DKIMResult
	for _, part := range strings.Split(v, ";") {
		name, value, ok := strings.Cut(part, "=")
		if !ok {
			continue
		}
		value = strings.Join(strings.Fields(value), "")
		switch strings.TrimSpace(name) {
		case "d":
			r.Domain = value
		case "s":
			r.Selector = value
		case "a":
			r.Algorithm = value
		case "b":
			r.B = value
		}
	}
	return r
}
