package dmarc

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestWalkNames(t *testing.T) {
	tests := []struct {
		domain string
		want   string
	}{
		{"com", "com"},
		{"example.com", "example.com example.com"},
		{"a.mail.example.com", "a.mail.example.com mail.example.com example.com com"},
		{"a.b.c.d.e.f.example.com", "a.b.c.d.e.f.example.com b.c.d.e.f.example.com c.d.e.f.example.com d.e.f.example.com e.f.example.com f.example.com example.com com"},
		// 8 labels: the parent has 7, same as the shortcut.
		{"a.b.c.d.e.f.g.com", "a.b.c.d.e.f.g.com b.c.d.e.f.g.com c.d.e.f.g.com d.e.f.g.com e.f.g.com f.g.com g.com com"},
		// RFC 9989 §4.10: a.b.c.d.e.f.g.h.i.j.mail.example.com.
		{"a.b.c.d.e.f.g.h.i.j.mail.example.com", "a.b.c.d.e.f.g.h.i.j.mail.example.com g.h.i.j.mail.example.com h.i.j.mail.example.com i.j.mail.example.com j.mail.example.com mail.example.com example.com com"},
	}
	for _, tc := range tests {
		got := walkNames(tc.domain)
		want := strings.Fields(tc.want)
		if tc.domain == "example.com" {
			want = []string{"example.com", "com"}
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("walkNames(%s) = %v, want %v", tc.domain, got, want)
		}
		if len(got) > maxWalkQueries {
			t.Errorf("walkNames(%s) makes %d queries", tc.domain, len(got))
		}
	}
}

func TestDiscover(t *testing.T) {
	zone := []string{
		"_dmarc.example.com TXT v=DMARC1; p=reject; sp=quarantine; rua=mailto:d@example.com",
		"_dmarc.own.example.com TXT v=DMARC1; p=none",
		"_dmarc.c.example.com TXT v=DMARC1; p=quarantine",
		"_dmarc.mid.example.org TXT v=DMARC1; p=quarantine",
		"_dmarc.dept.example.net TXT v=DMARC1; p=none; psd=n",
		"_dmarc.example.net TXT v=DMARC1; p=reject",
		"_dmarc.bank.example TXT v=DMARC1; p=reject; sp=quarantine; psd=y",
		"_dmarc.giant.bank.example TXT v=DMARC1; p=none",
		"_dmarc.dup.example.com TXT v=DMARC1; p=none",
		"_dmarc.dup.example.com TXT v=DMARC1; p=reject",
		"_dmarc.mixed.example.com TXT v=spf1 -all",
		"_dmarc.mixed.example.com TXT some other text",
		"_dmarc.mixed.example.com TXT v=DMARC1; p=quarantine",
		"_dmarc.bad.example.com TXT v=DMARC1; p=block",
		"_dmarc.tld TXT v=DMARC1; p=reject; psd=y",
		"_dmarc.co.uk TXT v=DMARC1; p=reject; psd=y",
		"_dmarc.example.co.uk TXT v=DMARC1; p=quarantine",
		"_dmarc.deep.example TXT v=DMARC1; p=reject",
		"_dmarc.timeout.example TIMEOUT",
		"_dmarc.up.example TIMEOUT",
		"_dmarc.x.up.example TXT v=DMARC1; p=reject",
		"_dmarc.self.psd TXT v=DMARC1; p=reject; psd=y",
	}
	tests := []struct {
		name      string
		from      string
		mode      Mode
		domain    string // policy domain
		org       string
		p         string
		sub, psd  bool
		queries   string // space-separated _dmarc names, if checked
		err       error
		nilPolicy bool
	}{
		{name: "record at author domain", from: "example.com", domain: "example.com", org: "example.com", p: "reject",
			queries: "_dmarc.example.com _dmarc.com"},
		{name: "record at org domain", from: "news.example.com", domain: "example.com", org: "example.com", p: "reject", sub: true,
			queries: "_dmarc.news.example.com _dmarc.example.com _dmarc.com"},
		{name: "author record wins over org", from: "own.example.com", domain: "own.example.com", org: "example.com", p: "none"},
		{name: "record at intermediate only", from: "a.b.mid.example.org", domain: "mid.example.org", org: "mid.example.org", p: "quarantine", sub: true,
			queries: "_dmarc.a.b.mid.example.org _dmarc.b.mid.example.org _dmarc.mid.example.org _dmarc.example.org _dmarc.org"},
		{name: "intermediate record is not the org domain", from: "a.b.c.example.com", domain: "example.com", org: "example.com", p: "reject", sub: true},
		{name: "psd=n stops the walk", from: "a.dept.example.net", domain: "dept.example.net", org: "dept.example.net", p: "none", sub: true,
			queries: "_dmarc.a.dept.example.net _dmarc.dept.example.net"},
		{name: "psd=n at author", from: "dept.example.net", domain: "dept.example.net", org: "dept.example.net", p: "none",
			queries: "_dmarc.dept.example.net"},
		{name: "psd=y org one below (RFC 9989 B.4.3)", from: "giant.bank.example", domain: "giant.bank.example", org: "giant.bank.example", p: "none",
			queries: "_dmarc.giant.bank.example _dmarc.bank.example"},
		{name: "psd=y below an org with a record", from: "mail.giant.bank.example", domain: "giant.bank.example", org: "giant.bank.example", p: "none", sub: true},
		{name: "PSD policy when org has none", from: "mail.mega.bank.example", domain: "bank.example", org: "mega.bank.example", p: "reject", sub: true, psd: true,
			queries: "_dmarc.mail.mega.bank.example _dmarc.mega.bank.example _dmarc.bank.example"},
		{name: "PSD policy for direct child", from: "newco.tld", domain: "tld", org: "newco.tld", p: "reject", sub: true, psd: true},
		{name: "psd=y at the author itself", from: "self.psd", domain: "self.psd", org: "self.psd", p: "reject",
			queries: "_dmarc.self.psd"},
		{name: "duplicate records are none", from: "dup.example.com", domain: "example.com", org: "example.com", p: "reject", sub: true},
		{name: "non-DMARC TXT discarded", from: "mixed.example.com", domain: "mixed.example.com", org: "example.com", p: "quarantine"},
		{name: "no record", from: "nothing.example", err: ErrNoRecord, nilPolicy: true,
			queries: "_dmarc.nothing.example _dmarc.example"},
		{name: "invalid record", from: "bad.example.com", domain: "bad.example.com", p: "none", err: ErrInvalidPolicy},
		{name: "invalid domain", from: "exa mple.com", err: ErrInvalidDomain, nilPolicy: true},
		{name: "timeout at author", from: "timeout.example", err: ErrTemporary, nilPolicy: true},
		{name: "timeout above author without record", from: "a.up.example", err: ErrTemporary, nilPolicy: true},
		{name: "timeout above author with record", from: "x.up.example", domain: "x.up.example", p: "reject", err: ErrTemporary},
		{name: "deep name RFC 9989 B.4.2", from: "a.b.c.d.e.f.g.h.i.j.k.deep.example", domain: "deep.example", org: "deep.example", p: "reject", sub: true,
			queries: "_dmarc.a.b.c.d.e.f.g.h.i.j.k.deep.example _dmarc.g.h.i.j.k.deep.example _dmarc.h.i.j.k.deep.example _dmarc.i.j.k.deep.example _dmarc.j.k.deep.example _dmarc.k.deep.example _dmarc.deep.example _dmarc.example"},
		{name: "uppercase and trailing dot", from: "News.EXAMPLE.com.", domain: "example.com", org: "example.com", p: "reject", sub: true},

		// Legacy PSL mode.
		{name: "psl author record", mode: PSL, from: "example.com", domain: "example.com", org: "example.com", p: "reject",
			queries: "_dmarc.example.com"},
		{name: "psl org record", mode: PSL, from: "mail.example.co.uk", domain: "example.co.uk", org: "example.co.uk", p: "quarantine", sub: true,
			queries: "_dmarc.mail.example.co.uk _dmarc.example.co.uk"},
		{name: "psl skips intermediate", mode: PSL, from: "a.b.mid.example.org", err: ErrNoRecord, nilPolicy: true,
			queries: "_dmarc.a.b.mid.example.org _dmarc.example.org"},
		{name: "psl public suffix itself", mode: PSL, from: "co.uk", domain: "co.uk", org: "co.uk", p: "reject",
			queries: "_dmarc.co.uk"},
		// The PSL knows no "example" TLD: its default rule makes bank.example
		// the org domain, whose psd=y record then applies as an org record.
		{name: "psl ignores psd", mode: PSL, from: "mail.mega.bank.example", domain: "bank.example", org: "bank.example", p: "reject", sub: true,
			queries: "_dmarc.mail.mega.bank.example _dmarc.bank.example"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeDNS(zone...)
			p, err := Discover(context.Background(), f, tc.from, tc.mode)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("Discover(%s) error = %v, want %v", tc.from, err, tc.err)
				}
			} else if err != nil {
				t.Fatalf("Discover(%s): %v", tc.from, err)
			}
			if tc.nilPolicy {
				if p != nil {
					t.Fatalf("Discover(%s) = %+v, want nil policy", tc.from, p)
				}
			} else {
				if p == nil || p.Record == nil {
					t.Fatalf("Discover(%s) = %+v, want a policy", tc.from, p)
				}
				if p.Domain != tc.domain || p.OrgDomain != tc.org || p.Record.P != tc.p || p.Subdomain != tc.sub || p.FromPSD != tc.psd {
					t.Errorf("Discover(%s) = domain %s org %s p=%s sub=%v psd=%v; want %s %s %s %v %v",
						tc.from, p.Domain, p.OrgDomain, p.Record.P, p.Subdomain, p.FromPSD, tc.domain, tc.org, tc.p, tc.sub, tc.psd)
				}
			}
			if tc.queries != "" {
				if got := strings.Join(f.queries, " "); got != tc.queries {
					t.Errorf("queries:\n got %s\nwant %s", got, tc.queries)
				}
			}
			if len(f.queries) > maxWalkQueries+1 {
				t.Errorf("%d queries: %v", len(f.queries), f.queries)
			}
		})
	}
}

func TestOrgDomain(t *testing.T) {
	zone := []string{
		// RFC 9989 §4.10.2 examples.
		"_dmarc.mail.example.com TXT v=DMARC1; p=none",
		"_dmarc.example.com TXT v=DMARC1; p=reject",
		"_dmarc.mail.example.net TXT v=DMARC1; p=none; psd=n",
		"_dmarc.com TXT v=DMARC1; p=none; psd=y",
		"_dmarc.a.mail.example.org TXT v=DMARC1; p=none",
		"_dmarc.stop.example TXT v=DMARC1; p=none; psd=n",
		"_dmarc.tmo.example TIMEOUT",
	}
	tests := []struct {
		domain string
		mode   Mode
		want   string
		err    error
	}{
		{"a.mail.example.com", TreeWalk, "example.com", nil},
		{"mail.example.com", TreeWalk, "example.com", nil},
		{"a.mail.example.net", TreeWalk, "mail.example.net", nil},
		{"a.mail.example.biz", TreeWalk, "a.mail.example.biz", nil}, // no record anywhere: itself
		{"x.y.newco.com", TreeWalk, "newco.com", nil},               // only _dmarc.com with psd=y
		{"a.mail.example.org", TreeWalk, "a.mail.example.org", nil}, // record only at itself
		{"b.a.mail.example.org", TreeWalk, "a.mail.example.org", nil},
		{"deep.er.stop.example", TreeWalk, "stop.example", nil},
		{"a.tmo.example", TreeWalk, "", ErrTemporary},
		{"A.Mail.Example.COM", TreeWalk, "example.com", nil},
		{"bücher.example", TreeWalk, "xn--bcher-kva.example", nil},
		{"", TreeWalk, "", ErrInvalidDomain},
		{"a.mail.example.com", PSL, "example.com", nil},
		{"www.example.co.uk", PSL, "example.co.uk", nil},
		{"co.uk", PSL, "co.uk", nil},
		{"localhost", PSL, "localhost", nil},
		{"foo.blogspot.com", PSL, "foo.blogspot.com", nil},
	}
	for _, tc := range tests {
		f := newFakeDNS(zone...)
		got, err := OrgDomain(context.Background(), f, tc.domain, tc.mode)
		if tc.err != nil {
			if !errors.Is(err, tc.err) {
				t.Errorf("OrgDomain(%q, %v) error = %v, want %v", tc.domain, tc.mode, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("OrgDomain(%q, %v) = %q, %v; want %q", tc.domain, tc.mode, got, err, tc.want)
		}
		if tc.mode == PSL && len(f.queries) != 0 {
			t.Errorf("OrgDomain(%q, psl) made DNS queries %v", tc.domain, f.queries)
		}
	}
}
