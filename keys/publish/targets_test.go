package publish

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/authmilter/authmilter/keys"
	"github.com/authmilter/authmilter/keys/publish/publishtest"
	"github.com/authmilter/authmilter/policy"
)

// target returns an Updater for knot with zone patterns matched as the
// config does (policy.ZoneMatches).
func target(t *testing.T, k *publishtest.Knot, zones ...string) *Updater {
	t.Helper()
	u, err := New(Config{Server: k.Addr, TSIGName: publishtest.TSIGName, TSIGSecret: k.TSIGSecret, TTL: 300,
		Zones: zones, Match: policy.ZoneMatches, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// TestTargetsPerZone: the provider's server takes delegated selector zones
// and its own zone, a second server takes the customer-hosted zone; each
// record goes to the first target authoritative for its zone whose
// patterns match.
func TestTargetsPerZone(t *testing.T) {
	provider := publishtest.StartKnot(t, "esp.example", "shared.example", "myesp._domainkey.customer.com", "sub.esp.example")
	hosting := publishtest.StartKnot(t, "customer.net", "shared.example", "deleg.example")
	// deleg.example delegates its selector zone to a server that is not a target.
	hosting.AddRR(t, "deleg.example", "myesp._domainkey.deleg.example. 300 IN NS ns.elsewhere.example.")
	set := NewSet(nil, target(t, provider, "myesp._domainkey.*", "esp.example", "shared.example"), target(t, hosting))
	dir := t.TempDir()
	ctx := context.Background()

	tests := []struct {
		domain, selector string
		want             *publishtest.Knot // nil: no target
		wantZone         string
		wantCustomer     []string
		wantErr          []string
	}{
		{domain: "customer.com", selector: "2026-11.myesp", want: provider, wantZone: "myesp._domainkey.customer.com.",
			wantCustomer: []string{"myesp._domainkey.customer.com. NS ns1.myesp._domainkey.customer.com."}},
		{domain: "customer.net", selector: "s1", want: hosting, wantZone: "customer.net."},
		{domain: "esp.example", selector: "fbl", want: provider, wantZone: "esp.example."},
		// Both serve shared.example: the first target wins.
		{domain: "shared.example", selector: "s1", want: provider, wantZone: "shared.example."},
		{domain: "sub.esp.example", selector: "s1", wantErr: []string{
			provider.Addr + ": authoritative for zone sub.esp.example, which is not in its zones myesp._domainkey.*, esp.example, shared.example",
			hosting.Addr + ": answered REFUSED"}},
		{domain: "deleg.example", selector: "x.myesp", wantErr: []string{
			hosting.Addr + ": not authoritative: it refers x.myesp._domainkey.deleg.example. to the nameservers of myesp._domainkey.deleg.example (ns.elsewhere.example)"}},
		{domain: "other.org", selector: "s1", wantErr: []string{"no publication target takes s1._domainkey.other.org.",
			provider.Addr + ": not asked: no zone holding s1._domainkey.other.org. matches its zones", hosting.Addr + ": answered REFUSED"}},
	}
	for _, tt := range tests {
		t.Run(tt.domain, func(t *testing.T) {
			k := newKey(t, dir, tt.domain, tt.selector, "ed25519")
			up, err := set.Publish(ctx, k, Ownership{})
			if tt.want == nil {
				var nt *NoTargetError
				if !errors.As(err, &nt) {
					t.Fatalf("Publish error = %v, want a NoTargetError", err)
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not say %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if up.Target.Server() != tt.want.Addr || up.Zone != tt.wantZone {
				t.Errorf("published at %s zone %s, want %s zone %s", up.Target.Server(), up.Zone, tt.want.Addr, tt.wantZone)
			}
			name := keys.RecordName(tt.domain, tt.selector)
			if got := tt.want.TXT(t, name); len(got) != 1 || got[0] != keys.FormatRecord(k) {
				t.Errorf("chosen server holds %q", got)
			}
			for _, other := range []*publishtest.Knot{provider, hosting} {
				if other != tt.want {
					if _, err := other.LookupTXT(ctx, name); err == nil {
						t.Errorf("%s also got the record", other.Addr)
					}
				}
			}
			if tt.domain == "shared.example" {
				if got := hosting.TXT(t, name); len(got) != 0 {
					t.Errorf("the second target serving the zone got the record too: %q", got)
				}
			}
			cr, err := set.CustomerRecords(ctx, tt.domain, tt.selector)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, r := range cr {
				got = append(got, r.String())
			}
			if !slices.Equal(got, tt.wantCustomer) {
				t.Errorf("CustomerRecords = %q, want %q", got, tt.wantCustomer)
			}
		})
	}

	t.Run("a target that cannot be asked stops the choice", func(t *testing.T) {
		down, err := New(Config{Server: "127.0.0.1:1", Timeout: 3 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		k := newKey(t, dir, "customer.net", "s2", "ed25519")
		_, err = NewSet(nil, down, target(t, hosting)).Publish(ctx, k, Ownership{})
		var nt *NoTargetError
		if err == nil || errors.As(err, &nt) || !strings.Contains(err.Error(), "nothing was published") {
			t.Fatalf("Publish error = %v", err)
		}
		if got := hosting.TXT(t, keys.RecordName("customer.net", "s2")); len(got) != 0 {
			t.Errorf("published at the second target although the first could not be asked: %q", got)
		}
	})
	t.Run("no targets", func(t *testing.T) {
		k := newKey(t, dir, "customer.net", "s3", "ed25519")
		if _, err := NewSet(nil).Publish(ctx, k, Ownership{}); err == nil || !strings.Contains(err.Error(), "no publication target is configured") {
			t.Errorf("Publish error = %v", err)
		}
	})
}

// TestCNAMEMode: a CNAME'd customer's record goes under the provider's
// zone, at keys.CNAMETarget, and the customer is told the CNAME to add.
func TestCNAMEMode(t *testing.T) {
	provider := publishtest.StartKnot(t, "esp.example")
	cfg := &policy.KeysConfig{Publish: policy.PublishConfig{CNAMEZone: "dkim.esp.example", CNAMEDomains: []string{"cust.example"}}}
	set := NewSet(cfg.CNAMEZoneFor, target(t, provider, "esp.example"))
	ctx := context.Background()
	k := newKey(t, t.TempDir(), "cust.example", "s1", "rsa-2048")
	up, err := set.Publish(ctx, k, Ownership{})
	if err != nil {
		t.Fatal(err)
	}
	const want = "s1.cust.example.dkim.esp.example."
	if up.Name != want || up.Zone != "esp.example." || up.CNAMEZone != "dkim.esp.example" {
		t.Errorf("published at %s in zone %s (cname zone %q)", up.Name, up.Zone, up.CNAMEZone)
	}
	if got := provider.TXT(t, want); len(got) != 1 || got[0] != keys.FormatRecord(k) {
		t.Errorf("%s holds %q", want, got)
	}
	cr, err := set.CustomerRecords(ctx, "cust.example", "s1")
	if err != nil || len(cr) != 1 || cr[0].String() != "s1._domainkey.cust.example. CNAME s1.cust.example.dkim.esp.example." {
		t.Errorf("CustomerRecords = %v, %v", cr, err)
	}
	if pr, _ := up.CustomerRecords(ctx); len(pr) != 1 || pr[0] != cr[0] {
		t.Errorf("Place.CustomerRecords = %v", pr)
	}
	if got := set.RecordName("other.example", "s1"); got != "s1._domainkey.other.example" {
		t.Errorf("a domain not in CNAME mode is published at %s", got)
	}
}

// TestNeverClobber: what the name of a new record already holds decides
// whether it may be replaced.
func TestNeverClobber(t *testing.T) {
	knot := publishtest.StartKnot(t, "example.com")
	set := NewSet(nil, target(t, knot))
	dir := t.TempDir()
	ctx := context.Background()
	otherKey := newKey(t, dir, "elsewhere.example", "x", "ed25519")
	foreign := keys.FormatRecord(otherKey)
	tests := []struct {
		name     string
		existing func(name string, k *keys.Key) []string // zone file lines put there first
		own      Ownership
		// wantErr: the update is refused with this; else it goes through
		// and the name then holds exactly the key's record.
		wantErr     []string
		wantForeign bool
	}{
		{name: "empty name"},
		{name: "another provider's key", existing: txt(foreign),
			own:     Ownership{Override: "run keygen again with -force"},
			wantErr: []string{"already holds a record that this installation did not publish", foreign, "run keygen again with -force", "nothing was changed"}},
		{name: "another provider's key, forced", existing: txt(foreign), own: Ownership{Force: true}, wantForeign: true},
		{name: "not a DKIM record", existing: txt("hello world"), wantErr: []string{`"hello world"`}},
		{name: "not a DKIM record, forced", existing: txt("hello world"), own: Ownership{Force: true}, wantForeign: true},
		{name: "our older record", existing: txt(foreign), own: Ownership{Known: []string{"v=DKIM1; k=rsa; p=old", foreign}}},
		{name: "our revocation", existing: txt("v=DKIM1; k=ed25519; p="), own: Ownership{Known: []string{"v=DKIM1; k=ed25519; p="}}},
		{name: "someone's revocation", existing: txt("v=DKIM1; k=ed25519; p="), wantErr: []string{`"v=DKIM1; k=ed25519; p="`}},
		{name: "the same key published by hand", existing: func(name string, k *keys.Key) []string {
			return txt("v=DKIM1; h=sha256; k=ed25519; p="+k.PublicKeyData())(name, k)
		}},
		{name: "ours and a foreign one", existing: func(name string, k *keys.Key) []string {
			return append(txt(foreign)(name, k), txt("v=DKIM1; k=ed25519; p=mine")(name, k)...)
		}, own: Ownership{Known: []string{"v=DKIM1; k=ed25519; p=mine"}}, wantErr: []string{foreign}},
		{name: "an alias", existing: func(name string, _ *keys.Key) []string { return []string{name + " 300 IN CNAME other.example.net."} },
			own: Ownership{Force: true}, wantErr: []string{"alias (CNAME to other.example.net)"}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sel := "s" + string(rune('a'+i))
			k := newKey(t, dir, "example.com", sel, "ed25519")
			name := keys.RecordName("example.com", sel) + "."
			var before []string
			if tt.existing != nil {
				knot.AddRR(t, "example.com", tt.existing(name, k)...)
				before = knot.TXT(t, name)
			}
			if _, err := set.Check(ctx, "example.com", sel, Ownership{Known: tt.own.Known, Force: tt.own.Force, Key: k}); (err == nil) != (tt.wantErr == nil) {
				t.Errorf("Check before the key exists: %v", err)
			}
			up, err := set.Publish(ctx, k, tt.own)
			if tt.wantErr != nil {
				var fe *ForeignRecordError
				if !errors.As(err, &fe) {
					t.Fatalf("Publish error = %v, want a ForeignRecordError", err)
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not say %q", err, w)
					}
				}
				if after := knot.TXT(t, name); !slices.Equal(after, before) {
					t.Errorf("a refused update changed %s: %q -> %q", name, before, after)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := knot.TXT(t, name); len(got) != 1 || got[0] != keys.FormatRecord(k) {
				t.Errorf("%s holds %q", name, got)
			}
			if (len(up.Foreign) > 0) != tt.wantForeign {
				t.Errorf("Foreign = %q", up.Foreign)
			}
		})
	}

	t.Run("wildcard", func(t *testing.T) {
		const wild = "v=DKIM1; k=rsa; p="
		knot.AddRR(t, "example.com", `*._domainkey.example.com. 300 IN TXT "`+wild+`"`)
		k := newKey(t, dir, "example.com", "w1", "ed25519")
		if got := knot.TXT(t, "w1._domainkey.example.com"); len(got) != 1 || got[0] != wild {
			t.Fatalf("the wildcard does not answer for the name: %q", got)
		}
		up, err := set.Publish(ctx, k, Ownership{})
		if err != nil {
			t.Fatal(err)
		}
		if !up.Wildcard || len(up.Found) != 0 {
			t.Errorf("Wildcard = %v, Found = %q", up.Wildcard, up.Found)
		}
		if got := knot.TXT(t, "w1._domainkey.example.com"); len(got) != 1 || got[0] != keys.FormatRecord(k) {
			t.Errorf("name holds %q", got)
		}
		if got := knot.TXT(t, "w2._domainkey.example.com"); len(got) != 1 || got[0] != wild {
			t.Errorf("the wildcard changed: %q", got)
		}
	})
}

// txt returns an existing-records function that puts one TXT value there.
func txt(value string) func(string, *keys.Key) []string {
	return func(name string, _ *keys.Key) []string {
		var b strings.Builder
		for _, s := range keys.RecordStrings(value) {
			b.WriteString(` "` + s + `"`)
		}
		return []string{name + " 300 IN TXT" + b.String()}
	}
}

// TestRace: two installations with different state decide on the same
// name from the same lookup, then both send: the second update's
// prerequisites fail and the first one's record stays.
func TestRace(t *testing.T) {
	knot := publishtest.StartKnot(t, "example.com")
	dir := t.TempDir()
	ctx := context.Background()
	for _, tt := range []struct {
		name     string
		existing string // TXT value both know as theirs ("" for none)
	}{
		{name: "empty name"},
		{name: "a record both think theirs", existing: "v=DKIM1; k=rsa; p=shared"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			sel := strings.ReplaceAll(tt.name, " ", "-")
			name := keys.RecordName("example.com", sel)
			var own Ownership
			if tt.existing != "" {
				knot.AddRR(t, "example.com", txt(tt.existing)(name+".", nil)...)
				own.Known = []string{tt.existing}
			}
			// Two installations: their own key files, their own sets.
			k1 := newKey(t, t.TempDir(), "example.com", sel, "ed25519")
			k2 := newKey(t, t.TempDir(), "example.com", sel, "ed25519")
			u1, err := NewSet(nil, target(t, knot)).PreparePublish(ctx, k1, own)
			if err != nil {
				t.Fatal(err)
			}
			u2, err := NewSet(nil, target(t, knot)).PreparePublish(ctx, k2, own)
			if err != nil {
				t.Fatal(err)
			}
			if err := u1.Send(ctx); err != nil {
				t.Fatal(err)
			}
			err = u2.Send(ctx)
			if !errors.Is(err, ErrChanged) || !strings.Contains(err.Error(), "another installation changed "+name+". at the same moment; nothing was overwritten; run again") {
				t.Fatalf("second Send error = %v", err)
			}
			if got := knot.TXT(t, name); len(got) != 1 || got[0] != keys.FormatRecord(k1) {
				t.Errorf("%s holds %q, want the first installation's record", name, got)
			}
			// Run again: the second installation now sees a record it does
			// not know, and refuses.
			var fe *ForeignRecordError
			if _, err := NewSet(nil, target(t, knot)).Publish(ctx, k2, own); !errors.As(err, &fe) {
				t.Errorf("second installation, run again: %v", err)
			}
		})
	}
	_ = dir
}

// TestWithdraw: a retired key's record is removed or revoked only while
// the name holds what we published; a record of someone else is reported
// and left alone.
func TestWithdraw(t *testing.T) {
	knot := publishtest.StartKnot(t, "example.com")
	set := NewSet(nil, target(t, knot))
	dir := t.TempDir()
	ctx := context.Background()
	foreign := keys.FormatRecord(newKey(t, dir, "elsewhere.example", "x", "ed25519"))
	for i, tt := range []struct {
		name         string
		revoke       bool
		ours, others bool   // what the name holds
		known        bool   // ours is in Known (else matched by the key)
		want         string // what the name holds after: "none", "revocation", "foreign", "ours"
		wantNoop     bool
	}{
		{name: "ours: remove", ours: true, want: "none"},
		{name: "ours by key: revoke", ours: true, revoke: true, want: "revocation"},
		{name: "ours known: remove", ours: true, known: true, want: "none"},
		{name: "foreign only: remove", others: true, want: "foreign", wantNoop: true},
		{name: "foreign only: revoke", others: true, revoke: true, want: "foreign", wantNoop: true},
		{name: "both: remove", ours: true, others: true, want: "foreign"},
		{name: "both: revoke", ours: true, others: true, revoke: true, want: "foreign"},
		{name: "nothing", want: "none", wantNoop: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			sel := "w" + string(rune('a'+i))
			k := newKey(t, dir, "example.com", sel, "ed25519")
			name := keys.RecordName("example.com", sel) + "."
			own := Ownership{Key: k}
			if tt.known {
				own = Ownership{Known: []string{keys.FormatRecord(k)}}
			}
			if tt.ours {
				knot.AddRR(t, "example.com", txt(keys.FormatRecord(k))(name, k)...)
			}
			if tt.others {
				knot.AddRR(t, "example.com", txt(foreign)(name, k)...)
			}
			up, err := set.Withdraw(ctx, "example.com", sel, k.Algorithm, tt.revoke, own)
			if err != nil {
				t.Fatal(err)
			}
			if up.Noop != tt.wantNoop || (len(up.Foreign) > 0) != tt.others {
				t.Errorf("Noop = %v, Foreign = %q", up.Noop, up.Foreign)
			}
			want := map[string][]string{"none": nil, "revocation": {keys.RevokedRecord(k.Algorithm)}, "foreign": {foreign}}[tt.want]
			if got := knot.TXT(t, name); !slices.Equal(got, want) {
				t.Errorf("%s holds %q, want %q", name, got, want)
			}
		})
	}

	t.Run("replaced between lookup and update", func(t *testing.T) {
		k := newKey(t, dir, "example.com", "race", "ed25519")
		name := keys.RecordName("example.com", "race") + "."
		knot.AddRR(t, "example.com", txt(keys.FormatRecord(k))(name, k)...)
		up, err := set.PrepareWithdraw(ctx, "example.com", "race", k.Algorithm, false, Ownership{Key: k})
		if err != nil {
			t.Fatal(err)
		}
		knot.RemoveRRset(t, "example.com", name, 16)
		knot.AddRR(t, "example.com", txt(foreign)(name, k)...)
		if err := up.Send(ctx); !errors.Is(err, ErrChanged) {
			t.Fatalf("Send error = %v", err)
		}
		if got := knot.TXT(t, name); !slices.Equal(got, []string{foreign}) {
			t.Errorf("%s holds %q", name, got)
		}
	})
}

func TestRemember(t *testing.T) {
	var many []string
	for i := range MaxRecords + 3 {
		many = append(many, string(rune('a'+i)))
	}
	tests := []struct {
		records []string
		value   string
		want    []string
	}{
		{nil, "a", []string{"a"}},
		{[]string{"a", "b"}, "c", []string{"a", "b", "c"}},
		{[]string{"a", "b", "c"}, "a", []string{"b", "c", "a"}},
		{many, "z", append(append([]string(nil), many[4:]...), "z")},
	}
	for _, tt := range tests {
		got := Remember(tt.records, tt.value)
		if !slices.Equal(got, tt.want) || len(got) > MaxRecords {
			t.Errorf("Remember(%q, %q) = %q, want %q", tt.records, tt.value, got, tt.want)
		}
	}
}

// TestWildcard: a wildcard *._domainkey TXT answers at every selector name
// that holds nothing itself, exactly as the name's own records would: an
// answer cannot tell them apart. Withdrawals and publications must act on
// the name's own records (RFC 2136 prerequisites see only those), never
// take the wildcard's answer for them, and never touch the wildcard.
func TestWildcard(t *testing.T) {
	const zone = "wild.example"
	knot := publishtest.StartKnot(t, zone)
	set := NewSet(nil, target(t, knot))
	dir := t.TempDir()
	ctx := context.Background()
	foreign := keys.FormatRecord(newKey(t, dir, "elsewhere.example", "x", "ed25519"))
	// All names share one wildcard: each case sets it.
	wildName := "*._domainkey." + zone + "."
	for i, tt := range []struct {
		name string
		// wild is what the wildcard holds: "ours" (the key's record) or
		// "foreign"; own is what the name itself holds: "", "ours",
		// "foreign".
		wild, own string
		op        string // "remove", "revoke", "publish"
		force     bool
		// wantOwn is what the name holds itself after: "", "ours",
		// "foreign", "revocation".
		wantOwn  string
		wantNoop bool
		wantErr  string // a *ForeignRecordError saying this
	}{
		{name: "withdraw ours, wildcard the same", wild: "ours", own: "ours", op: "remove", wantOwn: ""},
		{name: "revoke ours, wildcard the same", wild: "ours", own: "ours", op: "revoke", wantOwn: "revocation"},
		{name: "withdraw, wildcard only", wild: "ours", op: "remove", wantOwn: "", wantNoop: true},
		{name: "revoke, wildcard only", wild: "ours", op: "revoke", wantOwn: "", wantNoop: true},
		{name: "withdraw, foreign wildcard and the same foreign record", wild: "foreign", own: "foreign", op: "remove", wantOwn: "foreign", wantNoop: true},
		{name: "withdraw, foreign wildcard only", wild: "foreign", op: "remove", wantOwn: "", wantNoop: true},
		{name: "publish, wildcard holds our record", wild: "ours", op: "publish", wantOwn: "ours"},
		{name: "publish, ours there and in the wildcard", wild: "ours", own: "ours", op: "publish", wantOwn: "ours", wantNoop: true},
		{name: "publish, foreign wildcard only", wild: "foreign", op: "publish", wantOwn: "ours"},
		{name: "publish, foreign wildcard and the same foreign record", wild: "foreign", own: "foreign", op: "publish", wantOwn: "foreign",
			wantErr: "already holds a record that this installation did not publish"},
		{name: "publish forced, foreign wildcard and the same foreign record", wild: "foreign", own: "foreign", op: "publish", force: true, wantOwn: "ours"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			sel := "c" + string(rune('a'+i))
			k := newKey(t, dir, zone, sel, "ed25519")
			name := keys.RecordName(zone, sel) + "."
			value := map[string]string{"ours": keys.FormatRecord(k), "foreign": foreign, "revocation": keys.RevokedRecord(k.Algorithm)}
			knot.RemoveRRset(t, zone, wildName, dns.TypeTXT)
			knot.AddRR(t, zone, txt(value[tt.wild])(wildName, k)...)
			if tt.own != "" {
				knot.AddRR(t, zone, txt(value[tt.own])(name, k)...)
			}
			if got := knot.TXT(t, name); !slices.Equal(got, []string{value[tt.wild]}) {
				t.Fatalf("test setup: the server answers %q at %s", got, name)
			}
			var up *Update
			var err error
			if tt.op == "publish" {
				// keygen's check before it makes a key refuses the same.
				if _, err := set.Check(ctx, zone, sel, Ownership{Force: tt.force, Key: k}); (err != nil) != (tt.wantErr != "") {
					t.Errorf("Check: %v", err)
				}
				up, err = set.Publish(ctx, k, Ownership{Force: tt.force})
			} else {
				up, err = set.Withdraw(ctx, zone, sel, k.Algorithm, tt.op == "revoke", Ownership{Key: k})
			}
			if tt.wantErr != "" {
				var fe *ForeignRecordError
				if !errors.As(err, &fe) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("error = %v, want a ForeignRecordError saying %q", err, tt.wantErr)
				}
			} else if err != nil {
				t.Fatal(err)
			} else if up.Noop != tt.wantNoop || !up.Wildcard || (up.Found == nil) != (tt.own == "") {
				t.Errorf("Noop = %v, Wildcard = %v, Found = %q; want Noop %v, the wildcard noticed, and found what the name holds itself (%q)",
					up.Noop, up.Wildcard, up.Found, tt.wantNoop, tt.own)
			}
			var want []string
			if tt.wantOwn != "" {
				want = []string{value[tt.wantOwn]}
			}
			if got := knot.ZoneTXT(t, zone, name); !slices.Equal(got, want) {
				t.Errorf("%s itself holds %q, want %q", name, got, want)
			}
			if got := knot.ZoneTXT(t, zone, wildName); !slices.Equal(got, []string{value[tt.wild]}) {
				t.Errorf("the wildcard changed: %q", got)
			}
		})
	}

	// Between the lookup and the update, someone removes or replaces our
	// record at the name: the prerequisites of both cases see it.
	for _, tt := range []struct {
		name     string
		then     string // what the name holds itself when the update comes: "" or "foreign"
		wantNoop bool   // else ErrChanged
	}{
		{name: "removed meanwhile", wantNoop: true},
		{name: "replaced meanwhile", then: "foreign"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			sel := strings.ReplaceAll(tt.name, " ", "-")
			k := newKey(t, dir, zone, sel, "ed25519")
			name := keys.RecordName(zone, sel) + "."
			ours := keys.FormatRecord(k)
			knot.RemoveRRset(t, zone, wildName, dns.TypeTXT)
			knot.AddRR(t, zone, txt(ours)(wildName, k)...)
			knot.AddRR(t, zone, txt(ours)(name, k)...)
			up, err := set.PrepareWithdraw(ctx, zone, sel, k.Algorithm, false, Ownership{Key: k})
			if err != nil {
				t.Fatal(err)
			}
			knot.RemoveRRset(t, zone, name, dns.TypeTXT)
			var want []string
			if tt.then != "" {
				knot.AddRR(t, zone, txt(foreign)(name, k)...)
				want = []string{foreign}
			}
			err = up.Send(ctx)
			if tt.wantNoop {
				if err != nil || !up.Noop || !up.Wildcard || up.Found != nil {
					t.Errorf("Send: %v; Noop %v, Wildcard %v, Found %q: want nothing done, only the wildcard there", err, up.Noop, up.Wildcard, up.Found)
				}
			} else if !errors.Is(err, ErrChanged) {
				t.Errorf("Send error = %v, want ErrChanged", err)
			}
			if got := knot.ZoneTXT(t, zone, name); !slices.Equal(got, want) {
				t.Errorf("%s itself holds %q, want %q", name, got, want)
			}
			if got := knot.ZoneTXT(t, zone, wildName); !slices.Equal(got, []string{ours}) {
				t.Errorf("the wildcard changed: %q", got)
			}
		})
	}
}
