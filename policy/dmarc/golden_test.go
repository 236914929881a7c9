package dmarc

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var updateGolden = flag.Bool("test.update-golden", false, "rewrite testdata/dmarc/*.result from the current output")

// goldenDir holds named DMARC scenarios: NAME.dmarc is the input (DNS zone
// and message), NAME.result the expected result. A new case is a new pair of
// files. Lines of a .dmarc file:
//
//	# comment
//	dns NAME TXT text | NAME TIMEOUT | NAME NXDOMAIN | NAME A | NAME EXISTS-TIMEOUT
//	from DOMAIN
//	spf RESULT DOMAIN
//	dkim pass|fail DOMAIN
//	mode treewalk|psl
//	resolver txt|exists|host
const goldenDir = "../../testdata/dmarc"

func TestGolden(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(goldenDir, "*.dmarc"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatalf("no golden cases in %s", goldenDir)
	}
	for _, file := range files {
		name := strings.TrimSuffix(filepath.Base(file), ".dmarc")
		t.Run(name, func(t *testing.T) {
			got, err := runGolden(file)
			if err != nil {
				t.Fatal(err)
			}
			resultFile := strings.TrimSuffix(file, ".dmarc") + ".result"
			if *updateGolden {
				if err := os.WriteFile(resultFile, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(resultFile)
			if err != nil {
				t.Fatalf("%v (run with -test.update-golden to create it)", err)
			}
			if got != string(want) {
				t.Errorf("%s differs:\n--- want\n%s--- got\n%s", resultFile, want, got)
			}
		})
	}
}

// runGolden evaluates one .dmarc file and renders the result.
func runGolden(file string) (string, error) {
	fh, err := os.Open(file)
	if err != nil {
		return "", err
	}
	defer fh.Close()
	f := newFakeDNS()
	var in Input
	mode := TreeWalk
	resolver := "exists"
	sc := bufio.NewScanner(fh)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		key, rest, _ := strings.Cut(line, " ")
		fields := strings.Fields(rest)
		bad := fmt.Errorf("%s:%d: bad line %q", file, n, line)
		switch key {
		case "dns":
			if err := f.add(rest); err != nil {
				return "", fmt.Errorf("%s:%d: %w", file, n, err)
			}
		case "from":
			in.FromDomain = rest
		case "spf":
			if len(fields) != 2 {
				return "", bad
			}
			in.SPFResult, in.SPFDomain = fields[0], fields[1]
		case "dkim":
			if len(fields) != 2 || (fields[0] != "pass" && fields[0] != "fail") {
				return "", bad
			}
			in.DKIM = append(in.DKIM, DKIMResult{Domain: fields[1], Pass: fields[0] == "pass"})
		case "mode":
			switch rest {
			case "treewalk":
				mode = TreeWalk
			case "psl":
				mode = PSL
			default:
				return "", bad
			}
		case "resolver":
			resolver = rest
		default:
			return "", bad
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	var r TXTResolver
	switch resolver {
	case "txt":
		r = f
	case "exists":
		r = existsFake{f}
	case "host":
		r = hostFake{f}
	default:
		return "", fmt.Errorf("%s: unknown resolver %q", file, resolver)
	}
	res := Evaluate(context.Background(), r, in, mode)
	var b strings.Builder
	fmt.Fprintf(&b, "outcome: %s\n", res.Outcome)
	fmt.Fprintf(&b, "policy: %s\n", res.Policy)
	fmt.Fprintf(&b, "disposition: %s\n", res.Disposition)
	fmt.Fprintf(&b, "testing: %v\n", res.Testing)
	fmt.Fprintf(&b, "policy-domain: %s\n", res.PolicyDomain)
	fmt.Fprintf(&b, "org-domain: %s\n", res.OrgDomain)
	fmt.Fprintf(&b, "aligned-dkim: %s\n", strings.TrimSpace(fmt.Sprint(res.AlignedDKIM, " ", res.AlignedDKIMDomain)))
	fmt.Fprintf(&b, "aligned-spf: %v\n", res.AlignedSPF)
	fmt.Fprintf(&b, "reason: %s\n", res.Reason)
	fmt.Fprintf(&b, "queries:\n")
	for _, q := range f.queries {
		fmt.Fprintf(&b, "  %s\n", q)
	}
	return b.String(), nil
}
