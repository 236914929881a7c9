package esp_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/authmilter/authmilter/internal/dnstopo"
)

// signed is a message and the key that signed it.
type signed struct {
	msg      []byte
	domain   string
	selector string
	created  time.Time // the key's creation, which tells reused selectors apart
	month    int
}

// customer is one onboarded customer of the year test.
type customer struct {
	name   string
	p      *provider
	domain string
	// keys are the (selector, created) of every key seen, in order.
	seen map[string]bool
	// made counts the keys made by rotate.
	made int
	// active is the selector signing now.
	active string
	msgs   []signed
}

// TestYear is issue 9's "done when": onboard a delegated customer
// (selectors %b%Y.myesp in a delegated zone) and a CNAME'd customer
// (alternating s1/s2 behind the customer's two CNAMEs), rotate both from
// "cron" once a month for a simulated year, and after every run sign with
// the active key: every signature verifies at dkimpy and OpenDKIM through
// the resolver, and so do the earlier signatures of every key not yet
// retired.
func TestYear(t *testing.T) {
	w := world(t, dnstopo.Options{
		ProviderZones: []string{"myesp._domainkey.customer.example"},
		CustomerZones: []string{"customer.example", "cnamecust.example"},
		Delegated:     []string{"myesp._domainkey.customer.example"},
	})
	del := &customer{name: "delegated", domain: "customer.example", seen: map[string]bool{},
		p: newProvider(t, w, cfgOpts{selectorFormat: "%b%Y.myesp"})}
	cn := &customer{name: "cname", domain: "cnamecust.example", seen: map[string]bool{},
		p: newProvider(t, w, cfgOpts{alternate: []string{"s1", "s2"}, cnameDomains: []string{"cnamecust.example"}})}

	// Onboarding.
	del.p.keygen(t, "-d", del.domain)
	cn.p.keygen(t, "-d", cn.domain)
	w.Add(t, "s1._domainkey.cnamecust.example. CNAME s1.cnamecust.example.dkim.myesp.example.",
		"s2._domainkey.cnamecust.example. CNAME s2.cnamecust.example.dkim.myesp.example.")
	for _, c := range []*customer{del, cn} {
		newKeys := c.observe(t)
		if len(newKeys) != 1 {
			t.Fatalf("%s: keygen made %v", c.name, newKeys)
		}
		c.activate(t, newKeys[0], 0)
	}
	if cn.active != "s1" {
		t.Fatalf("cname customer: first alternating selector %q, want s1", cn.active)
	}

	for i, at := range monthly(12) {
		month := i + 1
		for _, c := range []*customer{del, cn} {
			r := c.p.rotate(t, at)
			if r.code != 0 {
				// Reported, and the year goes on: cron would run again
				// next month, and mail must still verify meanwhile.
				t.Errorf("month %d (%s), %s: rotate from cron failed:\n%s", month, at.Format("2006-01-02"), c.name, r)
			}
			newKeys := c.observe(t)
			switch {
			case len(newKeys) > 1:
				t.Fatalf("month %d, %s: rotate made %d keys: %v\n%s", month, c.name, len(newKeys), newKeys, r)
			case len(newKeys) == 1:
				c.made++
				sel := newKeys[0].Selector
				if c == del && sel != monthSelector(at) {
					t.Errorf("month %d: new selector %q, want %q (%%b%%Y.myesp of %s)", month, sel, monthSelector(at), at.Format("2006-01-02"))
				}
				if c == cn && (sel == c.active || (sel != "s1" && sel != "s2")) {
					t.Errorf("month %d: alternating rotation from %s made %q", month, c.active, sel)
				}
				c.activate(t, newKeys[0], month)
			default:
				if c == del {
					t.Errorf("month %d: rotate made no key for %s although the newest is 31 days old (rotate_after 30d):\n%s", month, c.domain, r)
				}
				msg, sigs := c.p.sign(t, c.domain)
				c.record(t, msg, sigs, month)
			}
			c.reverify(t, month)
		}
	}
	if del.made != 12 {
		t.Errorf("delegated customer: %d monthly keys in a year, want 12", del.made)
	}
	// Alternating selectors: a selector is free again only once its key
	// is retired (superseded, then grace), so at least every other month.
	if cn.made < 6 {
		t.Errorf("cname customer: %d new keys in a year, want at least 6", cn.made)
	}
	t.Logf("a year: %d signatures of the delegated customer, %d of the CNAME'd one, all verified", len(del.msgs), len(cn.msgs))
}

// observe returns the keys of `keys -json` not seen before.
func (c *customer) observe(t *testing.T) []keyRow {
	t.Helper()
	rows, _ := c.p.keys(t)
	var out []keyRow
	for _, k := range rows {
		id := k.Selector + "@" + k.Created.UTC().Format(time.RFC3339Nano)
		if !c.seen[id] {
			c.seen[id] = true
			out = append(out, k)
		}
	}
	return out
}

// activate waits until the new key is published and active, signs with
// it and verifies the signature.
func (c *customer) activate(t *testing.T, k keyRow, month int) {
	t.Helper()
	c.p.waitActive(t, c.domain, k.Selector)
	msg, sigs := c.p.sign(t, c.domain)
	if len(sigs) != 1 || sigs[0] != (signature{c.domain, k.Selector}) {
		t.Fatalf("month %d, %s: signatures %v, want d=%s s=%s (the new key)", month, c.name, sigs, c.domain, k.Selector)
	}
	c.active = k.Selector
	c.record(t, msg, sigs, month)
}

// record verifies a new signature and keeps it for later checks.
func (c *customer) record(t *testing.T, msg []byte, sigs []signature, month int) {
	t.Helper()
	rows, _ := c.p.keys(t)
	k, ok := row(rows, c.domain, sigs[0].s)
	if !ok {
		t.Fatalf("month %d, %s: signed with %s, which keys does not list", month, c.name, sigs[0].s)
	}
	c.p.verify(t, msg, fmt.Sprintf("month %d, %s, new signature s=%s", month, c.name, sigs[0].s))
	c.msgs = append(c.msgs, signed{msg: msg, domain: c.domain, selector: k.Selector, created: k.Created, month: month})
}

// reverify verifies again every earlier signature whose key is still in
// the key table (not retired): mail in transit must keep verifying.
func (c *customer) reverify(t *testing.T, month int) {
	t.Helper()
	rows, _ := c.p.keys(t)
	var live []string
	for _, m := range c.msgs {
		k, ok := row(rows, m.domain, m.selector)
		if !ok || !k.Created.Equal(m.created) {
			continue // retired (or its alternating selector holds a new key)
		}
		if m.month == month {
			continue // verified a moment ago
		}
		live = append(live, m.selector)
		c.p.verify(t, m.msg, fmt.Sprintf("month %d, %s: signature of month %d (s=%s, key not retired)", month, c.name, m.month, m.selector))
	}
	t.Logf("month %d, %s: active %s; re-verified %d earlier signatures (%s)", month, c.name, c.active, len(live), strings.Join(live, " "))
}
