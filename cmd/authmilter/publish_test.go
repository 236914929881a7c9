package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/authmilter/authmilter/keys"
	"github.com/authmilter/authmilter/keys/publish"
	"github.com/authmilter/authmilter/keys/publish/publishtest"
)

// publishEnv is a provider's setup against real Knot servers: the
// provider's server (its own zone, a CNAME zone and a customer's delegated
// selector zone) as a [[keys.publish.target]], and a server hosting a
// customer's whole zone as the default [keys.publish] target, each with
// its own TSIG secret. The test resolver is the hosting server.
type publishEnv struct {
	*keyEnv
	provider, hosting *publishtest.Knot
}

func newPublishEnv(t *testing.T, extra string) *publishEnv {
	t.Helper()
	provider := publishtest.StartKnot(t, "esp.example", "myesp._domainkey.customer.com")
	hosting := publishtest.StartKnot(t, "customer.net")
	// newKeyEnv sets keys.check = "resolver": the test zones have no
	// reachable nameserver names.
	conf := fmt.Sprintf(`recheck = "1m"
%s
[keys.publish]
server = %q
tsig_name = %q
tsig_secret_file = %q
ttl = 120
timeout = "5s"
cname_zone = "dkim.esp.example"
cname_domains = ["cust.example", "cust2.example"]
[[keys.publish.target]]
server = %q
zones = ["myesp._domainkey.*", "esp.example"]
tsig_secret_file = %q
`, extra, hosting.Addr, publishtest.TSIGName, hosting.SecretFile, provider.Addr, provider.SecretFile)
	e := newKeyEnv(t, conf)
	// keys and rotate resolve through the hosting server.
	e.conf = strings.Replace(e.conf, e.dns.Addr(), hosting.Addr, 1)
	if err := os.WriteFile(e.cfg, []byte(e.conf), 0o600); err != nil {
		t.Fatal(err)
	}
	return &publishEnv{keyEnv: e, provider: provider, hosting: hosting}
}

// record returns the TXT value of a key in the key table.
func (e *publishEnv) record(t *testing.T, domain, selector string) string {
	t.Helper()
	k, err := keys.LoadKey(filepath.Join(e.dir, domain, selector+".pem"), domain, selector)
	if err != nil {
		t.Fatal(err)
	}
	return keys.FormatRecord(k)
}

// TestKeygenTargets: keygen publishes each record at the target that
// serves its zone and tells the customer what to add; without a target it
// writes the key, prints the record and says where it must go.
func TestKeygenTargets(t *testing.T) {
	e := newPublishEnv(t, "")
	tests := []struct {
		name         string
		args         []string
		at           *publishtest.Knot
		recordName   string
		wantErr      []string
		wantStderr   []string // all present
		wantCustomer []publish.CustomerRecord
	}{
		{name: "delegated selector zone", args: []string{"-d", "customer.com", "-s", "2026-11.myesp", "-format", "json"},
			at: e.provider, recordName: "2026-11.myesp._domainkey.customer.com.",
			wantStderr: []string{"published 2026-11.myesp._domainkey.customer.com. TXT by RFC 2136 update to " + e.provider.Addr +
				" (zone myesp._domainkey.customer.com"},
			wantCustomer: []publish.CustomerRecord{{Name: "myesp._domainkey.customer.com.", Type: "NS", Value: "ns1.myesp._domainkey.customer.com."}}},
		{name: "customer-hosted zone", args: []string{"-d", "customer.net", "-s", "s1"}, at: e.hosting, recordName: "s1._domainkey.customer.net.",
			wantStderr: []string{"published s1._domainkey.customer.net. TXT by RFC 2136 update to " + e.hosting.Addr + " (zone customer.net"}},
		{name: "provider's own domain", args: []string{"-d", "esp.example", "-s", "fbl", "-a", "ed25519"}, at: e.provider,
			recordName: "fbl._domainkey.esp.example."},
		{name: "CNAME mode, zone format", args: []string{"-d", "cust.example", "-s", "s1"}, at: e.provider,
			recordName: "s1.cust.example.dkim.esp.example.",
			wantStderr: []string{"the owner of cust.example must have these records in the zone of cust.example",
				"  s1._domainkey.cust.example. CNAME s1.cust.example.dkim.esp.example.\n",
				"published s1.cust.example.dkim.esp.example. TXT by RFC 2136 update to " + e.provider.Addr + " (zone esp.example"}},
		{name: "CNAME mode, json", args: []string{"-d", "cust.example", "-s", "s2", "-format", "json"}, at: e.provider,
			recordName:   "s2.cust.example.dkim.esp.example.",
			wantCustomer: []publish.CustomerRecord{{Name: "s2._domainkey.cust.example.", Type: "CNAME", Value: "s2.cust.example.dkim.esp.example."}}},
		{name: "no target", args: []string{"-d", "other.org", "-s", "s1"}, recordName: "s1._domainkey.other.org.",
			wantErr: []string{"no publication target takes s1._domainkey.other.org.", e.provider.Addr + ": not asked",
				e.hosting.Addr + ": answered REFUSED", "the key is written: publish the record by hand"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, stderr, err := run(keygenF, append([]string{"-config", e.cfg}, tt.args...)...)
			if tt.wantErr != nil {
				if err == nil {
					t.Fatalf("no error; stderr %s", stderr)
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not say %q", err, w)
					}
				}
			} else if err != nil {
				t.Fatalf("%v\n%s", err, stderr)
			}
			for _, w := range tt.wantStderr {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr does not say %q:\n%s", w, stderr)
				}
			}
			domain, sel := tt.args[1], tt.args[3]
			value := e.record(t, domain, sel)
			if slices.Contains(tt.args, "json") {
				var rec recordJSON
				if err := json.Unmarshal([]byte(out), &rec); err != nil {
					t.Fatal(err)
				}
				if rec.Name != tt.recordName || !slices.Equal(rec.CustomerRecords, tt.wantCustomer) {
					t.Errorf("json: name %s, customer_records %+v; want %s, %+v", rec.Name, rec.CustomerRecords, tt.recordName, tt.wantCustomer)
				}
			} else if !strings.HasPrefix(out, tt.recordName+"\tIN\tTXT\t") {
				t.Errorf("printed record %q is not at %s", out, tt.recordName)
			}
			if tt.at == nil {
				return
			}
			if got := tt.at.TXT(t, tt.recordName); !slices.Equal(got, []string{value}) {
				t.Errorf("%s holds %q", tt.recordName, got)
			}
			for _, other := range []*publishtest.Knot{e.provider, e.hosting} {
				if other != tt.at {
					if _, err := other.LookupTXT(t.Context(), tt.recordName); err == nil {
						t.Errorf("%s also holds %s", other.Addr, tt.recordName)
					}
				}
			}
			state, err := keys.LoadState(filepath.Join(e.dir, domain))
			if err != nil {
				t.Fatal(err)
			}
			if ks := state.Keys[sel]; ks == nil || !slices.Equal(ks.Records, []string{value}) || ks.Published.IsZero() {
				t.Errorf("state of %s/%s: %+v", domain, sel, ks)
			}
		})
	}
}

// TestKeygenNeverClobbers: keygen refuses a name that holds a record this
// installation did not publish, before it makes a key; -force replaces
// it; a record the state says we published there is replaced without.
func TestKeygenNeverClobbers(t *testing.T) {
	e := newPublishEnv(t, "")
	const foreign = "v=DKIM1; k=rsa; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDforeignprovider"
	name := "default._domainkey.customer.net."
	e.hosting.AddRR(t, "customer.net", name+` 300 IN TXT "`+foreign+`"`)

	_, stderr, err := run(keygenF, "-config", e.cfg, "-d", "customer.net", "-s", "default")
	if err == nil {
		t.Fatalf("keygen over another provider's record succeeded:\n%s", stderr)
	}
	for _, w := range []string{name + " already holds a record that this installation did not publish", foreign, "run keygen again with -force", "nothing was changed"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not say %q", err, w)
		}
	}
	if _, err := os.Stat(filepath.Join(e.dir, "customer.net", "default.pem")); err == nil {
		t.Error("a refused keygen left a key behind")
	}
	if got := e.hosting.TXT(t, name); !slices.Equal(got, []string{foreign}) {
		t.Fatalf("%s changed: %q", name, got)
	}

	_, stderr, err = run(keygenF, "-config", e.cfg, "-d", "customer.net", "-s", "default", "-force")
	if err != nil || !strings.Contains(stderr, "replaced (forced) the record(s) there that this installation had not published") {
		t.Fatalf("keygen -force: %v\n%s", err, stderr)
	}
	if got := e.hosting.TXT(t, name); !slices.Equal(got, []string{e.record(t, "customer.net", "default")}) {
		t.Errorf("after -force %s holds %q", name, got)
	}

	// Our own older record there (alternating selectors use names again):
	// replaced without -force.
	const older = "v=DKIM1; k=rsa; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDourolderkey"
	e.hosting.AddRR(t, "customer.net", `s7._domainkey.customer.net. 300 IN TXT "`+older+`"`)
	ddir := filepath.Join(e.dir, "customer.net")
	if err := noteState(ddir, func(s *keys.DomainState) { s.Key("s7").Records = []string{older} }); err != nil {
		t.Fatal(err)
	}
	if _, stderr, err := run(keygenF, "-config", e.cfg, "-d", "customer.net", "-s", "s7"); err != nil {
		t.Fatalf("keygen over our own older record: %v\n%s", err, stderr)
	}
	value := e.record(t, "customer.net", "s7")
	if got := e.hosting.TXT(t, "s7._domainkey.customer.net"); !slices.Equal(got, []string{value}) {
		t.Errorf("s7 holds %q", got)
	}
	state, _ := keys.LoadState(ddir)
	if ks := state.Keys["s7"]; ks == nil || !slices.Equal(ks.Records, []string{older, value}) {
		t.Errorf("state records of s7: %+v", ks)
	}
}

// TestRotateTargets: rotate publishes a CNAME'd customer's first keys under
// the provider's zone and prints the CNAMEs the customer must add; a
// pending key whose name holds a foreign record waits until
// -force-publish; a retired key's record that was replaced by someone
// else is left alone.
func TestRotateTargets(t *testing.T) {
	e := newPublishEnv(t, "rotate_after = \"30d\"\ngrace = \"1d\"")
	t0 := time.Date(2027, 5, 1, 3, 0, 0, 0, time.UTC)
	at := func(d time.Duration) string { return t0.Add(d).Format(time.RFC3339) }
	day := 24 * time.Hour

	out, stderr, err := run(rotateF, "-config", e.cfg, "-d", "cust2.example", "-a", "rsa-2048,ed25519", "-test-now", at(0))
	if err != nil {
		t.Fatalf("%v\n%s\n%s", err, out, stderr)
	}
	for _, sel := range []string{"2027-05", "2027-05e"} {
		target := sel + ".cust2.example.dkim.esp.example."
		for _, w := range []string{"published " + target + " TXT by RFC 2136 update to " + e.provider.Addr,
			"  " + sel + "._domainkey.cust2.example. CNAME " + target + "\n"} {
			if !strings.Contains(out, w) {
				t.Errorf("rotate output lacks %q:\n%s", w, out)
			}
		}
		if got := e.provider.TXT(t, target); !slices.Equal(got, []string{e.record(t, "cust2.example", sel)}) {
			t.Errorf("%s holds %q", target, got)
		}
	}

	// A pending key whose name was taken by someone else meanwhile.
	const foreign = "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
	if _, stderr, err := run(keygenF, "-config", e.cfg, "-d", "fp.customer.net", "-s", "fp1", "-no-publish"); err != nil {
		t.Fatalf("keygen: %v\n%s", err, stderr)
	}
	name := "fp1._domainkey.fp.customer.net."
	e.hosting.AddRR(t, "customer.net", name+` 300 IN TXT "`+foreign+`"`)
	out, stderr, err = run(rotateF, "-config", e.cfg, "-d", "fp.customer.net", "-test-now", at(day))
	if err != exitError(1) || !strings.Contains(out, "publish this record by hand") ||
		!strings.Contains(stderr, name+" already holds a record that this installation did not publish") ||
		!strings.Contains(stderr, "run authmilter rotate with -force-publish to replace it") {
		t.Fatalf("pending key over a foreign record: %v\n%s\n%s", err, out, stderr)
	}
	if got := e.hosting.TXT(t, name); !slices.Equal(got, []string{foreign}) {
		t.Fatalf("rotate without -force-publish changed %s: %q", name, got)
	}
	out, stderr, err = run(rotateF, "-config", e.cfg, "-d", "fp.customer.net", "-force-publish", "-test-now", at(day))
	if err != nil || !strings.Contains(out, "published "+name) {
		t.Fatalf("rotate -force-publish: %v\n%s\n%s", err, out, stderr)
	}
	if got := e.hosting.TXT(t, name); !slices.Equal(got, []string{e.record(t, "fp.customer.net", "fp1")}) {
		t.Errorf("after -force-publish %s holds %q", name, got)
	}

	// Rotation of fp.customer.net: a new key; once the old one is retired,
	// its record has been replaced by someone else's and stays.
	out, stderr, err = run(rotateF, "-config", e.cfg, "-d", "fp.customer.net", "-force", "-test-now", at(2*day))
	if err != nil || !strings.Contains(out, "new rsa-2048 key 2027-05 to follow fp1") {
		t.Fatalf("next key: %v\n%s\n%s", err, out, stderr)
	}
	e.hosting.RemoveRRset(t, "customer.net", name, 16)
	e.hosting.AddRR(t, "customer.net", name+` 300 IN TXT "`+foreign+`"`)
	var retired bool
	for d := 3 * day; d <= 6*day && !retired; d += day {
		out, stderr, err = run(rotateF, "-config", e.cfg, "-d", "fp.customer.net", "-test-now", at(d))
		if err != nil {
			t.Fatalf("day %d: %v\n%s\n%s", d/day, err, out, stderr)
		}
		retired = strings.Contains(out, "retired fp1")
	}
	if !retired || !strings.Contains(out, "left "+name+" alone: it holds a record that this installation did not publish") {
		t.Fatalf("retirement:\n%s", out)
	}
	if got := e.hosting.TXT(t, name); !slices.Equal(got, []string{foreign}) {
		t.Errorf("withdrawal touched the foreign record: %q", got)
	}
}

// A domain whose zone no target takes (a customer who hosts and publishes
// the record himself) is manual publication for rotate: the record to
// publish and why, exit 0, not a cron failure every day.
func TestRotateNoTargetIsManual(t *testing.T) {
	e := newPublishEnv(t, "")
	out, stderr, err := run(rotateF, "-config", e.cfg, "-d", "selfhosted.example")
	if err != nil {
		t.Fatalf("rotate: %v\n%s\n%s", err, out, stderr)
	}
	for _, want := range []string{"no publication target takes", "publish this record by hand", "._domainkey.selfhosted.example."} {
		if !strings.Contains(out, want) {
			t.Errorf("rotate output lacks %q:\n%s", want, out)
		}
	}
	if !strings.Contains(out, "REFUSED") {
		t.Errorf("rotate does not say what the server answered:\n%s", out)
	}
}
