package e2e

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/authmilter/authmilter/internal/interop"
)

// sigID is a signature's d=, s= and a=, as "d/s/a".
type sigID string

// wantOurSigs are the signatures authmilter makes for example.com.
var wantOurSigs = []sigID{
	sigID(ourDomain + "/" + rsaSel + "/rsa-sha256"),
	sigID(ourDomain + "/" + edSel + "/ed25519-sha256"),
}

// checkSignedByUs asserts that msg carries exactly our two signatures, on
// top of the header, and that both dkimpy and OpenDKIM verify them.
func (e *env) checkSignedByUs(t *testing.T, msg []byte) {
	t.Helper()
	fs := headerFields(msg)
	sigs := fieldsNamed(fs, "DKIM-Signature")
	if len(sigs) != len(wantOurSigs) {
		t.Fatalf("delivered message has %d DKIM-Signature fields, want %d; header: %s", len(sigs), len(wantOurSigs), names(fs))
	}
	for i := range sigs {
		if !strings.EqualFold(fs[i].Name, "DKIM-Signature") {
			t.Errorf("header field %d is %s, want the DKIM-Signatures on top; header: %s", i, fs[i].Name, names(fs))
		}
	}
	if t.Failed() {
		return
	}
	var got []sigID
	for _, s := range sigs {
		tags := dkimTags(s.unfolded())
		got = append(got, sigID(tags["d"]+"/"+tags["s"]+"/"+tags["a"]))
		if _, ok := tags["l"]; ok {
			t.Errorf("signature has l=: %s", s.unfolded())
		}
	}
	if !sameSigs(got, wantOurSigs) {
		t.Errorf("signatures %v, want %v", got, wantOurSigs)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := interop.VerifyDkimpyAll(ctx, msg, e.dnsAddr)
	if err != nil {
		t.Errorf("dkimpy: %v\nmessage:\n%s", err, msg)
	} else {
		var ok []sigID
		for _, r := range res {
			ok = append(ok, sigID(r.Domain+"/"+r.Selector+"/"+r.Algorithm))
		}
		if !sameSigs(ok, wantOurSigs) {
			t.Errorf("dkimpy verified %v, want %v", ok, wantOurSigs)
		}
	}
	ores, err := interop.VerifyOpenDKIMEach(ctx, msg, e.dnsAddr)
	if err != nil {
		t.Errorf("opendkim: %v", err)
		return
	}
	var opass []sigID
	for _, r := range ores {
		id := sigID(r.Domain + "/" + r.Selector + "/" + r.Algorithm)
		if r.Result != "pass" {
			t.Errorf("opendkim: %s", r)
			continue
		}
		opass = append(opass, id)
	}
	if !sameSigs(opass, wantOurSigs) {
		t.Errorf("opendkim passed %v, want %v; message:\n%s", opass, wantOurSigs, msg)
	}
}

func sameSigs(a, b []sigID) bool {
	x := append([]sigID(nil), a...)
	y := append([]sigID(nil), b...)
	sort.Slice(x, func(i, j int) bool { return x[i] < x[j] })
	sort.Slice(y, func(i, j int) bool { return y[i] < y[j] })
	return fmt.Sprint(x) == fmt.Sprint(y)
}

// dkimTags parses "k=v; k=v" with whitespace removed from values.
func dkimTags(v string) map[string]string {
	tags := map[string]string{}
	for _, part := range strings.Split(v, ";") {
		k, val, ok := strings.Cut(part, "=")
		if !ok {
			continue
		}
		val = strings.Join(strings.Fields(val), "")
		tags[strings.TrimSpace(k)] = val
	}
	return tags
}

// arResult is one resinfo of an Authentication-Results field.
type arResult struct {
	Method, Result string
	Comment        string            // the first comment after the result, without parentheses
	Props          map[string]string // ptype.property = value
}

// authResults is a parsed Authentication-Results field.
type authResults struct {
	AuthservID string
	Results    []arResult
}

// parseAR parses an Authentication-Results value as authmilter and the
// usual implementations write it (no quoted strings with ';' in them).
func parseAR(v string) (authResults, error) {
	parts := strings.Split(v, ";")
	ar := authResults{AuthservID: strings.Fields(strings.TrimSpace(parts[0]) + " ")[0]}
	for _, p := range parts[1:] {
		p = strings.TrimSpace(p)
		if p == "" || p == "none" {
			continue
		}
		r := arResult{Props: map[string]string{}}
		// Pull out comments.
		var rest strings.Builder
		depth := 0
		var comment strings.Builder
		for _, c := range p {
			switch {
			case c == '(':
				if depth > 0 {
					comment.WriteRune(c)
				}
				depth++
			case c == ')' && depth > 0:
				depth--
				if depth == 0 {
					if r.Comment == "" {
						r.Comment = comment.String()
					}
					comment.Reset()
					rest.WriteRune(' ')
				} else {
					comment.WriteRune(c)
				}
			case depth > 0:
				comment.WriteRune(c)
			default:
				rest.WriteRune(c)
			}
		}
		toks := strings.Fields(rest.String())
		if len(toks) == 0 {
			continue
		}
		m, res, ok := strings.Cut(toks[0], "=")
		if !ok {
			return ar, fmt.Errorf("resinfo %q has no method=result", p)
		}
		r.Method, r.Result = strings.ToLower(m), strings.ToLower(res)
		for _, tk := range toks[1:] {
			k, val, ok := strings.Cut(tk, "=")
			if !ok {
				continue // a word of a quoted reason="..."
			}
			r.Props[strings.ToLower(k)] = val
		}
		ar.Results = append(ar.Results, r)
	}
	return ar, nil
}

// byMethod returns the results for one method.
func (ar authResults) byMethod(m string) []arResult {
	var out []arResult
	for _, r := range ar.Results {
		if r.Method == m {
			out = append(out, r)
		}
	}
	return out
}

// ourAR returns the delivered message's Authentication-Results fields that
// carry our authserv-id, and all of them.
func ourAR(fs []field) (ours, all []field) {
	for _, f := range fieldsNamed(fs, "Authentication-Results") {
		all = append(all, f)
		toks := strings.Fields(strings.ReplaceAll(f.unfolded(), ";", " ; "))
		if len(toks) > 0 && strings.EqualFold(toks[0], authservID) {
			ours = append(ours, f)
		}
	}
	return ours, all
}
