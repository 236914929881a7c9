package arc

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/authmilter/authmilter/policy/dkimsign"
)

// noDNS answers every key lookup with no record, so fuzzing stays offline.
type noDNS struct{}

func (noDNS) LookupTXT(context.Context, string) ([]string, error) { return nil, nil }

// FuzzParseARC feeds hostile ARC headers to ParseChain and Verify: they
// must never panic, and never pass without a key.
func FuzzParseARC(f *testing.F) {
	for _, name := range []string{"chain1.eml", "chain2.eml", "cvfail.eml"} {
		raw, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(string(raw))
	}
	f.Add("ARC-Seal: i=1; cv=none\r\nARC-Message-Signature: i=1;;=\r\nARC-Authentication-Results: i=1\r\n\r\n")
	f.Fuzz(func(t *testing.T, raw string) {
		head, _, _ := strings.Cut(raw, "\r\n\r\n")
		var fields []dkimsign.Field
		for _, line := range strings.Split(head, "\r\n") {
			if line != "" && (line[0] == ' ' || line[0] == '\t') && len(fields) > 0 {
				fields[len(fields)-1].Value += "\r\n" + line
				continue
			}
			name, value, _ := strings.Cut(line, ":")
			fields = append(fields, dkimsign.Field{Name: name, Value: value})
		}
		c := ParseChain(fields)
		if c != nil && c.Err == nil && (len(c.Sets) == 0 || len(c.Sets) > MaxInstance) {
			t.Fatalf("chain of %d sets without an error", len(c.Sets))
		}
		res := Verify(context.Background(), noDNS{}, fields, c, make([]byte, 32))
		if res.Status == Pass {
			t.Fatalf("pass without any key: %+v", res)
		}
		ResultsPass(raw, "dmarc")
		stripSignature(raw)
	})
}
