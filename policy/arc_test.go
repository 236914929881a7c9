package policy

import (
	"bytes"
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/authmilter/authmilter/internal/testdns"
	"github.com/authmilter/authmilter/policy/arc"
	"github.com/authmilter/authmilter/policy/dkimsign"
	"github.com/authmilter/authmilter/policy/resolve"
)

// arcTestdata is the folder of policy/arc's golden chains (sealed by
// dkimpy: fwd.example, then lists.example, then relay.example).
var arcTestdata = filepath.Join("arc", "testdata")

// arcWorld is a real DNS server with the sealers' keys and example.org's
// p=reject DMARC record, and a policy that uses it.
func arcWorld(t *testing.T, extra string) (*Policy, *resolve.Resolver) {
	t.Helper()
	s := testdns.Start(t)
	s.AddZoneFile(t, filepath.Join(arcTestdata, "keys.zone"))
	s.SetTXT("_dmarc.example.org", "v=DMARC1; p=reject")
	s.SetTXT("example.org", "v=spf1 ip4:192.0.2.3 -all")
	res, err := resolve.New(resolve.Config{Servers: []string{s.Addr()}, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	// relay.example's key seals when [arc] seal is on.
	pemData, err := os.ReadFile(filepath.Join(arcTestdata, "relay.example.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "relay.example"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "relay.example", "arc1.pem"), pemData, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := ParseConfig("test.toml", []byte("authserv_id = \"mx.test\"\n[keys]\ndir = \""+dir+
		"\"\nrequire_published = false\n"+extra))
	if err != nil {
		t.Fatal(err)
	}
	pol, err := Compile(context.Background(), cfg, res)
	if err != nil {
		t.Fatal(err)
	}
	return pol, res
}

// listEnv is the mailing list's server delivering to us: its own
// envelope sender, so SPF does not align with example.org.
func listEnv() *Envelope {
	return &Envelope{ClientIP: netip.MustParseAddr("192.0.2.3"), Helo: "mail.lists.example", MailFrom: "bounce@lists.example"}
}

// arcMessage reads a golden chain; edit, if set, changes its text.
func arcMessage(t *testing.T, name string, edit func(string) string) []byte {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(arcTestdata, name))
	if err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		return []byte(edit(string(raw)))
	}
	return raw
}

// runARC feeds a message through the policy as a milter would.
func runARC(t *testing.T, pol *Policy, raw []byte) (*Decision, []HeaderField, []byte) {
	t.Helper()
	header, body, err := SplitMessage(raw)
	if err != nil {
		t.Fatal(err)
	}
	m := pol.Begin(listEnv(), header)
	for b := body; len(b) > 0; {
		n := min(len(b), 61)
		m.Write(b[:n])
		b = b[n:]
	}
	return m.Finish(), header, body
}

// authResults returns our Authentication-Results value in d.
func authResults(t *testing.T, d *Decision) string {
	t.Helper()
	for _, f := range d.Prepend {
		if f.Name == "Authentication-Results" {
			return f.Value
		}
	}
	t.Fatalf("no Authentication-Results in %+v", d.Prepend)
	return ""
}

func TestARCAuthResults(t *testing.T) {
	pol, _ := arcWorld(t, "")
	for _, tc := range []struct {
		name, file string
		edit       func(string) string
		want       string
	}{
		{"pass i=2", "chain2.eml", nil, "arc=pass (i=2, sealers fwd.example lists.example) header.oldest-pass=0 smtp.remote-ip=192.0.2.2"},
		{"pass i=3", "chain3.eml", nil, "arc=pass (i=3, sealers fwd.example lists.example relay.example) header.oldest-pass=0 smtp.remote-ip=192.0.2.3"},
		// relay.example added a footer before sealing: only its AMS verifies.
		{"oldest-pass", "footer.eml", nil, "arc=pass (i=3, sealers fwd.example lists.example relay.example) header.oldest-pass=3 smtp.remote-ip=192.0.2.3"},
		{"broken middle", "brokenmiddle.eml", nil, "arc=fail (i=2 ARC-Seal: signature does not verify with wrong._domainkey.lists.example)"},
		{"cv=fail", "cvfail.eml", nil, "arc=fail (i=3 ARC-Seal has cv=fail)"},
		{"malformed", "chain2.eml", func(s string) string { return strings.Replace(s, "ARC-Seal: i=1;", "ARC-Seal: i=x;", 1) },
			"arc=fail (ARC-Seal has i=\"x\", not an instance 1..50)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, _, _ := runARC(t, pol, arcMessage(t, tc.file, tc.edit))
			logged := false
			for _, a := range d.Log {
				logged = logged || (a.Key == "arc" && strings.Contains(a.Value.String(), "result="))
			}
			if !logged {
				t.Errorf("no arc group in the decision line: %v", d.Log)
			}
			ar := authResults(t, d)
			if !strings.Contains(ar, tc.want) {
				t.Errorf("A-R %q, want it to contain %q", ar, tc.want)
			}
		})
	}
	// No ARC field: no arc resinfo at all.
	d, _, _ := runARC(t, pol, []byte("From: a@example.org\r\nSubject: x\r\n\r\nhi\r\n"))
	if ar := authResults(t, d); strings.Contains(ar, "\tarc=") {
		t.Errorf("arc resinfo for a message without ARC: %q", ar)
	}
}

// TestARCTrustedSealerOverride is the mailing-list forward: example.org
// publishes p=reject, the list changed the message (no aligned DKIM or
// SPF is left) and sealed it with dmarc=pass in its AAR.
func TestARCTrustedSealerOverride(t *testing.T) {
	for _, tc := range []struct {
		name, trusted, file string
		overridden          bool
	}{
		{"trusted list", `"lists.example"`, "chain2.eml", true},
		{"trusted list under a later sealer", `"lists.example."`, "chain3.eml", true},
		{"untrusted sealer", `"other.example"`, "chain2.eml", false},
		{"trusted sealer but the chain fails", `"lists.example"`, "brokenmiddle.eml", false},
		{"trusted sealer but cv=fail", `"lists.example"`, "cvfail.eml", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pol, _ := arcWorld(t, "[dmarc]\nenforce = true\ntrusted_arc_sealers = ["+tc.trusted+"]\n")
			d, _, _ := runARC(t, pol, arcMessage(t, tc.file, nil))
			if d.DMARC != "fail" {
				t.Fatalf("DMARC %q, want fail (the forward breaks alignment)", d.DMARC)
			}
			if !tc.overridden {
				if d.Action != Reject {
					t.Fatalf("action %s, want reject", d.Action)
				}
				return
			}
			if d.Action != Accept {
				t.Fatalf("action %s (%s), want accept by the override", d.Action, d.SMTPText)
			}
			if d.Evaluation == nil || len(d.Evaluation.Overrides) != 1 {
				t.Fatalf("evaluation overrides: %+v", d.Evaluation)
			}
			if ar := authResults(t, d); !strings.Contains(ar, "dmarc=fail (p=reject dis=reject, override trusted_forwarder: arc=pass, sealed by lists.example with dmarc=pass) header.from=example.org") {
				t.Errorf("A-R does not report the override: %q", ar)
			}
			o := d.Evaluation.Overrides[0]
			if o.Type != OverrideTrustedForwarder || o.Comment != "arc=pass, sealed by lists.example with dmarc=pass" {
				t.Errorf("override %+v", o)
			}
		})
	}
	// A DMARC pass is never "overridden".
	pol, _ := arcWorld(t, "[dmarc]\nenforce = true\ntrusted_arc_sealers = [\"lists.example\"]\n")
	env := listEnv()
	env.MailFrom = "alice@example.org"
	header, body, err := SplitMessage(arcMessage(t, "chain2.eml", nil))
	if err != nil {
		t.Fatal(err)
	}
	m := pol.Begin(env, header)
	m.Write(body)
	if d := m.Finish(); d.Evaluation != nil && len(d.Evaluation.Overrides) > 0 {
		t.Errorf("override recorded for DMARC %s: %+v", d.DMARC, d.Evaluation.Overrides)
	}
}

// TestARCSeal: with [arc] seal on, our set goes above our A-R, at the
// next instance, and verifies; a chain marked cv=fail is not sealed.
func TestARCSeal(t *testing.T) {
	pol, res := arcWorld(t, "[arc]\nseal = true\ndomain = \"relay.example\"\n")
	for _, tc := range []struct {
		file     string
		instance int
		want     arc.Status
		cv       string
	}{
		{"chain1.eml", 2, arc.Pass, "cv=pass"},
		{"chain2.eml", 3, arc.Pass, "cv=pass"},
		{"brokenmiddle.eml", 4, arc.Fail, "cv=fail"},
	} {
		t.Run(tc.file, func(t *testing.T) {
			d, header, body := runARC(t, pol, arcMessage(t, tc.file, nil))
			names := []string{}
			for _, f := range d.Prepend {
				names = append(names, f.Name)
			}
			if got := strings.Join(names, " "); got != "ARC-Seal ARC-Message-Signature ARC-Authentication-Results Authentication-Results" {
				t.Fatalf("prepended %s", got)
			}
			if !strings.Contains(d.Prepend[0].Value, tc.cv) {
				t.Errorf("seal %q, want %s", d.Prepend[0].Value, tc.cv)
			}
			if aar := d.Prepend[2].Value; !strings.HasPrefix(aar, " i=") || !strings.Contains(aar, "; mx.test;") {
				t.Errorf("AAR %q is not \"i=N; \" and our A-R", aar)
			}
			all := append(append([]HeaderField(nil), d.Prepend...), header...)
			fields := make([]dkimsign.Field, len(all))
			for i, f := range all {
				fields[i] = dkimsign.Field{Name: f.Name, Value: f.Value}
			}
			c := arc.ParseChain(fields)
			h := dkimsign.NewBodyHasher(c.BodyCanon())
			h.Write(body)
			r := arc.Verify(context.Background(), res, fields, c, h.Sum())
			if r.Status != tc.want || (tc.want == arc.Pass && r.Instance != tc.instance) {
				t.Errorf("our seal: %s i=%d (%s), want %s i=%d", r.Status, r.Instance, r.Reason, tc.want, tc.instance)
			}
		})
	}
	d, _, _ := runARC(t, pol, arcMessage(t, "cvfail.eml", nil))
	for _, f := range d.Prepend {
		if arc.IsARCField(f.Name) {
			t.Fatalf("sealed over cv=fail: %+v", d.Prepend)
		}
	}
	// A message without a chain gets i=1 cv=none.
	d, _, _ = runARC(t, pol, []byte("From: a@example.org\r\nSubject: x\r\n\r\nhi\r\n"))
	if len(d.Prepend) != 4 || !bytes.Contains([]byte(d.Prepend[0].Value), []byte("i=1; a=rsa-sha256; cv=none")) {
		t.Errorf("first seal: %+v", d.Prepend)
	}
}
