package policy

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/netip"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/authmilter/authmilter/internal/testdns"
)

func TestLogText(t *testing.T) {
	long := strings.Repeat("a", 300)
	tests := []struct{ name, in, want string }{
		{"plain", "<id@example.com>", "<id@example.com>"},
		{"trimmed", " <id@example.com>\r\n", "<id@example.com>"},
		{"folded", "\r\n\t<id@example.com>", "<id@example.com>"},
		{"newline forging a line", "<x>\nlevel=ERROR msg=forged", "<x>level=ERROR msg=forged"},
		{"escape sequence", "<\x1b[31mred@x>", "<[31mred@x>"},
		{"NUL and DEL", "<a\x00b\x7fc>", "<abc>"},
		{"bidi override", "<\u202egnp.exe@x>", "<gnp.exe@x>"},
		{"invalid UTF-8", "<\xff\xfe@x>", "<??@x>"},
		{"UTF-8 kept", "<ünïcödé@x>", "<ünïcödé@x>"},
		{"exactly the limit", long[:200], long[:200]},
		{"cut", long, long[:197] + "..."},
		{"cut at a rune boundary", strings.Repeat("é", 150), strings.Repeat("é", 98) + "..."},
		{"control characters over the limit", strings.Repeat("a\x01", 150), long[:150]},
		{"empty", " \r\n ", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := logText(tt.in, maxLogField)
			if got != tt.want {
				t.Errorf("logText(%q) = %q, want %q", tt.in, got, tt.want)
			}
			if len(got) > maxLogField || !utf8.ValidString(got) {
				t.Errorf("logText(%q) = %q: %d bytes, valid UTF-8 %v", tt.in, got, len(got), utf8.ValidString(got))
			}
		})
	}
}

// logBoth renders attrs with the text and the JSON handler, as the daemon
// does, and returns the text line and the JSON object parsed back.
func logBoth(t *testing.T, attrs []slog.Attr) (string, map[string]any) {
	t.Helper()
	var text, js bytes.Buffer
	slog.New(slog.NewTextHandler(&text, nil)).LogAttrs(context.Background(), slog.LevelInfo, "message", attrs...)
	slog.New(slog.NewJSONHandler(&js, nil)).LogAttrs(context.Background(), slog.LevelInfo, "message", attrs...)
	if n := strings.Count(text.String(), "\n"); n != 1 {
		t.Errorf("text log is %d lines, want one: %q", n, text.String())
	}
	var obj map[string]any
	if err := json.Unmarshal(js.Bytes(), &obj); err != nil {
		t.Fatalf("JSON log does not parse: %v\n%s", err, js.String())
	}
	return text.String(), obj
}

// checkFields compares the JSON fields named in want (numbers are float64,
// lists []any, groups map[string]any) and checks that ms is a number.
func checkFields(t *testing.T, obj map[string]any, want map[string]any) {
	t.Helper()
	for k, w := range want {
		if w == nil {
			if v, ok := obj[k]; ok {
				t.Errorf("JSON field %s = %#v, want it absent", k, v)
			}
			continue
		}
		if got := obj[k]; !reflect.DeepEqual(got, w) {
			t.Errorf("JSON field %s = %#v, want %#v", k, got, w)
		}
	}
	if ms, ok := obj["ms"].(float64); !ok || ms < 0 {
		t.Errorf("JSON field ms = %#v, want a non-negative number", obj["ms"])
	}
}

func TestDecisionLogInbound(t *testing.T) {
	const dnsAuth = "$TTL 300\n" +
		"example.com. IN TXT \"v=spf1 ip4:192.0.2.0/24 -all\"\n" +
		"_dmarc.example.com. IN TXT \"v=DMARC1; p=reject\"\n" +
		"helo.example. IN TXT \"v=spf1 -all\"\n" +
		// iprev: 192.0.2.25 is mail.example.com, confirmed.
		"25.2.0.192.in-addr.arpa. IN PTR mail.example.com.\n" +
		"mail.example.com. IN A 192.0.2.25\n"
	base := filepath.Join(dkimDir, "04-two-signatures-one-bad")
	raw := []byte(readTestFile(t, base+".eml"))
	srv := testdns.Start(t)
	srv.AddZoneText(t, "", readTestFile(t, base+".zone"))
	srv.AddZoneText(t, "", dnsAuth)
	pol := testPolicyWithDNS(t, srv.Addr(), "")

	tests := []struct {
		name      string
		env       *Envelope
		raw       []byte
		decision  Decision // DKIM, SPF, DMARC
		text      []string // substrings of the text line
		fields    map[string]any
		textAbsnt []string
	}{
		{
			name:     "two signatures, one bad",
			env:      &Envelope{ClientIP: mustAddr("192.0.2.25"), Helo: "mail.example.com", MailFrom: "alice@example.com", QueueID: "4Xk2"},
			raw:      raw,
			decision: Decision{DKIM: []string{"fail", "pass"}, SPF: "pass", DMARC: "pass"},
			text: []string{
				"msg=message queue=4Xk2 dir=in client=192.0.2.25 mail_from=alice@example.com msgid=<04-two-signatures-one-bad@example.com> iprev.result=pass iprev.name=mail.example.com from=example.com ",
				" dkim=fail(esp.example/esp1),pass(example.com/sel) spf.result=pass spf.domain=example.com dmarc.result=pass dmarc.policy=reject dmarc.disposition=none ms=",
			},
			fields: map[string]any{
				"queue": "4Xk2", "dir": "in", "client": "192.0.2.25", "mail_from": "alice@example.com",
				"msgid": "<04-two-signatures-one-bad@example.com>", "from": "example.com",
				"iprev": map[string]any{"result": "pass", "name": "mail.example.com"},
				"dkim": []any{
					map[string]any{"result": "fail", "d": "esp.example", "s": "esp1", "a": "rsa-sha256", "reason": "signature did not verify"},
					map[string]any{"result": "pass", "d": "example.com", "s": "sel", "a": "rsa-sha256"},
				},
				"spf":   map[string]any{"result": "pass", "domain": "example.com"},
				"dmarc": map[string]any{"result": "pass", "policy": "reject", "disposition": "none"},
				"why":   nil,
			},
		},
		{
			name:     "no signature, null sender, HELO identity, v4-mapped client",
			env:      &Envelope{ClientIP: mustAddr("::ffff:198.51.100.7"), Helo: "helo.example", QueueID: "7Fq1"},
			raw:      []byte("From: bob@example.com\r\nMessage-ID: <x\r\n\ty@z>\r\n\r\nbody\r\n"),
			decision: Decision{DKIM: []string{"none"}, SPF: "fail", DMARC: "fail"},
			text: []string{
				" client=198.51.100.7 mail_from=<> msgid=<xy@z> iprev.result=permerror ",
				" dkim=none spf.result=fail spf.domain=helo.example spf.identity=helo dmarc.result=fail dmarc.policy=reject dmarc.disposition=reject ",
			},
			fields: map[string]any{
				"client": "198.51.100.7", "mail_from": "<>", "msgid": "<xy@z>",
				"iprev": map[string]any{"result": "permerror"},
				"dkim":  []any{},
				"spf":   map[string]any{"result": "fail", "domain": "helo.example", "identity": "helo"},
				"dmarc": map[string]any{"result": "fail", "policy": "reject", "disposition": "reject"},
			},
		},
		{
			name:     "no From: DMARC permerror, no Message-ID, no client address",
			env:      &Envelope{Helo: "helo.example", MailFrom: "bob@example.com"},
			raw:      []byte("Subject: x\r\n\r\nbody\r\n"),
			decision: Decision{DKIM: []string{"none"}, SPF: "none", DMARC: "permerror"},
			text:     []string{" dmarc.result=permerror ms="},
			fields: map[string]any{
				"dmarc": map[string]any{"result": "permerror"}, "client": nil, "msgid": nil, "from": nil, "iprev": nil,
			},
			textAbsnt: []string{"queue=", "client=", "msgid=", "iprev."},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			header, body, err := SplitMessage(tt.raw)
			if err != nil {
				t.Fatal(err)
			}
			m := pol.Begin(tt.env, header)
			m.Write(body)
			d := m.Finish()
			if !slices.Equal(d.DKIM, tt.decision.DKIM) || d.SPF != tt.decision.SPF || d.DMARC != tt.decision.DMARC {
				t.Errorf("Decision DKIM=%q SPF=%q DMARC=%q, want %q %q %q",
					d.DKIM, d.SPF, d.DMARC, tt.decision.DKIM, tt.decision.SPF, tt.decision.DMARC)
			}
			text, obj := logBoth(t, d.Log)
			for _, s := range tt.text {
				if !strings.Contains(text, s) {
					t.Errorf("text log lacks %q:\n%s", s, text)
				}
			}
			for _, s := range tt.textAbsnt {
				if strings.Contains(text, s) {
					t.Errorf("text log has %q:\n%s", s, text)
				}
			}
			checkFields(t, obj, tt.fields)
		})
	}
}

func TestDecisionLogOutbound(t *testing.T) {
	pol, _ := testPolicy(t, "")
	hostileID := "<" + strings.Repeat("x", 300) + "\x1b[2J@example.com>"
	tests := []struct {
		name   string
		raw    string
		text   []string
		fields map[string]any
	}{
		{
			name: "signed twice",
			raw:  "From: alice@example.com\r\nMessage-ID: <1@example.com>\r\nSubject: hi\r\n\r\nbody\r\n",
			text: []string{
				`msg=message queue=Q1 dir=out why="network=127.0.0.0/8" client=127.0.0.1 mail_from=<> msgid=<1@example.com> from=example.com signed=example.com/2026-11/rsa-sha256,example.com/2026-11e/ed25519-sha256 ms=`,
			},
			fields: map[string]any{
				"queue": "Q1", "dir": "out", "why": "network=127.0.0.0/8", "client": "127.0.0.1", "mail_from": "<>",
				"from": "example.com",
				"signed": []any{
					map[string]any{"d": "example.com", "s": "2026-11", "a": "rsa-sha256"},
					map[string]any{"d": "example.com", "s": "2026-11e", "a": "ed25519-sha256"},
				},
				"dkim": nil, "spf": nil, "dmarc": nil, "not_signed": nil,
			},
		},
		{
			name: "hostile Message-ID",
			raw:  "From: alice@example.com\r\nMessage-ID: " + hostileID + "\r\n\r\nbody\r\n",
			text: []string{" msgid=<" + strings.Repeat("x", 196) + "... from=example.com "},
			fields: map[string]any{
				"msgid": "<" + strings.Repeat("x", 196) + "...",
			},
		},
		{
			name: "not signed",
			raw:  "From: a@other.example\r\n\r\nbody\r\n",
			text: []string{` from=other.example not_signed="no active key for other.example"`},
			fields: map[string]any{
				"from": "other.example", "not_signed": "no active key for other.example", "signed": nil, "msgid": nil,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, d := signMessage(t, pol, tt.raw)
			if d.DKIM != nil || d.SPF != "" || d.DMARC != "" {
				t.Errorf("outbound Decision has inbound results DKIM=%q SPF=%q DMARC=%q", d.DKIM, d.SPF, d.DMARC)
			}
			text, obj := logBoth(t, d.Log)
			for _, s := range tt.text {
				if !strings.Contains(text, s) {
					t.Errorf("text log lacks %q:\n%s", s, text)
				}
			}
			checkFields(t, obj, tt.fields)
		})
	}
}

// TestDecisionLogVerifyOutbound: with inbound.verify_outbound the From
// domain is logged once, not by both halves.
func TestDecisionLogVerifyOutbound(t *testing.T) {
	pol, _ := testPolicy(t, "[inbound]\nverify_outbound = true\n")
	_, d := signMessage(t, pol, "From: alice@example.com\r\n\r\nbody\r\n")
	n := 0
	for _, a := range d.Log {
		if a.Key == "from" {
			n++
		}
	}
	if n != 1 || d.SPF == "" || len(d.DKIM) == 0 {
		t.Errorf("from logged %d times (want 1), SPF=%q DKIM=%q: %v", n, d.SPF, d.DKIM, d.Log)
	}
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

func TestUnsignedReason(t *testing.T) {
	pol, _ := testPolicy(t, "")
	// unpub has a key folder whose keys are not published.
	dir := t.TempDir()
	copyKey(t, dir, "unpub.example", "s1", "rsa2048-pkcs8.pem")
	cfg, err := ParseConfig("t.toml", []byte("[keys]\ndir = \""+dir+"\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	unpub, err := Compile(context.Background(), cfg, &fakeDNS{})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		pol  *Policy
		raw  string
		want string
	}{
		{"signed", pol, "From: a@example.com\r\n\r\nbody\r\n", ""},
		{"no From", pol, "Subject: x\r\n\r\nbody\r\n", ReasonFromMissing},
		{"empty group", pol, "From: undisclosed:;\r\n\r\nbody\r\n", ReasonFromMissing},
		{"two From fields", pol, "From: a@example.com\r\nFrom: b@example.com\r\n\r\nbody\r\n", ReasonFromMultiple},
		{"two mailboxes", pol, "From: a@example.com, b@example.com\r\n\r\nbody\r\n", ReasonFromMultiple},
		{"unparsable", pol, "From: <a@example.com\r\n\r\nbody\r\n", ReasonFromUnparsable},
		{"no key folder", pol, "From: a@other.example\r\n\r\nbody\r\n", ReasonNoKey},
		{"keys not published", unpub, "From: a@unpub.example\r\n\r\nbody\r\n", ReasonNoActiveKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, d := signMessage(t, tt.pol, tt.raw)
			if d.UnsignedReason != tt.want {
				t.Errorf("UnsignedReason = %q, want %q", d.UnsignedReason, tt.want)
			}
			_, obj := logBoth(t, d.Log)
			if got, _ := obj["unsigned"].(string); got != tt.want {
				t.Errorf("log unsigned = %q, want %q", got, tt.want)
			}
		})
	}
	// Inbound mail is never "unsigned".
	header, body, _ := SplitMessage([]byte("From: a@other.example\r\n\r\nbody\r\n"))
	m := pol.Begin(&Envelope{ClientIP: mustAddr("198.51.100.1")}, header)
	m.Write(body)
	if d := m.Finish(); d.UnsignedReason != "" {
		t.Errorf("inbound UnsignedReason = %q", d.UnsignedReason)
	}
}

// FuzzLogText: whatever a header holds, what reaches the log is valid
// UTF-8, within the limit, without control or format characters.
func FuzzLogText(f *testing.F) {
	for _, s := range []string{"<id@example.com>", "\r\n\t<x>", "<\u202eabc>", "\xff\xfe", strings.Repeat("é", 150), "a\x00b"} {
		f.Add(s, 200)
	}
	f.Fuzz(func(t *testing.T, s string, limit int) {
		limit = 4 + int(uint(limit)%300)
		got := logText(s, limit)
		if len(got) > limit || !utf8.ValidString(got) {
			t.Fatalf("logText(%q, %d) = %q: %d bytes, valid %v", s, limit, got, len(got), utf8.ValidString(got))
		}
		for _, r := range got {
			if unicode.IsControl(r) || unicode.Is(unicode.Cf, r) {
				t.Fatalf("logText(%q) = %q keeps %U", s, got, r)
			}
		}
	})
}
