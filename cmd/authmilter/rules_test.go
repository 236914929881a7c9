package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// A provider's per-customer keys under its own d=: keys shows the rule
// that uses each, rotate leaves them alone (and keeps their state), and the
// provider's ordinary key rotates as usual.
func TestPerRuleKeysInKeysAndRotate(t *testing.T) {
	rules := "rotate_after = \"30d\"\n" +
		"[[signing.rule]]\nfrom = \"acme.example\"\nsubdomains = true\ndomain = \"bigcomm.example\"\nselector = \"s1024_acme\"\n" +
		"[[signing.rule]]\nfrom = \"*\"\ndomain = \"bigcomm.example\"\n"
	e := newKeyEnv(t, rules)
	gen(t, e, "bigcomm.example", "fbl", "rsa-2048")
	gen(t, e, "bigcomm.example", "s1024_acme", "rsa-2048")
	e.publish(t, "bigcomm.example", "fbl")
	e.publish(t, "bigcomm.example", "s1024_acme")

	out, stderr, err := run(keysF, "-config", e.cfg, "-json")
	if err != nil {
		t.Fatalf("keys: %v\n%s", err, stderr)
	}
	var rows []keyInfo
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatal(err)
	}
	got := map[string]keyInfo{}
	for _, r := range rows {
		got[r.Selector] = r
	}
	acme, fbl := got["s1024_acme"], got["fbl"]
	if !acme.Active || len(acme.Rules) != 1 || !strings.Contains(acme.Rules[0], "selector=s1024_acme") {
		t.Errorf("s1024_acme: active %v, rules %q; want active, used by rule 0 only", acme.Active, acme.Rules)
	}
	if !fbl.Active || len(fbl.Rules) != 1 || !strings.HasPrefix(fbl.Rules[0], "signing.rule[1]") {
		t.Errorf("fbl: active %v, rules %q; want active, used by rule 1 only", fbl.Active, fbl.Rules)
	}
	text, _, err := run(keysF, "-config", e.cfg)
	if err != nil || !strings.Contains(text, "RULES") {
		t.Errorf("keys table: %v\n%s", err, text)
	}

	// 40 days on: the fbl key is rotated, the customer key is not touched.
	later := time.Now().Add(40 * 24 * time.Hour).UTC().Format(time.RFC3339)
	out, stderr, err = run(rotateF, "-config", e.cfg, "-all", "-v", "-test-now", later)
	if err != nil {
		t.Fatalf("rotate: %v\n%s\n%s", err, out, stderr)
	}
	if !strings.Contains(out, "s1024_acme is named by a signing rule") || !strings.Contains(out, "to follow fbl") {
		t.Errorf("rotate output:\n%s", out)
	}
	if strings.Contains(out, "follow s1024_acme") || strings.Contains(out, "retire s1024_acme") {
		t.Errorf("rotate touched the rule's key:\n%s", out)
	}
}
