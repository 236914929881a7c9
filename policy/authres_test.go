package policy

import (
	"context"
	"net/netip"
	"strings"
	"testing"
)

func TestAuthservID(t *testing.T) {
	tests := []struct{ in, want string }{
		{" mx.test.example; dkim=pass", "mx.test.example"},
		{" MX.Test.Example 1; spf=pass", "MX.Test.Example"},
		{" (comment) mx.test.example;", "mx.test.example"},
		{" mx.test.example(comment); garbage ;;; (((", "mx.test.example"},
		{" mx.test.example", "mx.test.example"},
		{"\r\n\tmx.test.example;\r\n\tdkim=none", "mx.test.example"},
		{" (unterminated mx.test.example;", ""},
		{" other.example; dkim=pass header.d=mx.test.example", "other.example"},
		{" ;", ""},
	}
	for _, tt := range tests {
		if got := AuthservID(tt.in); got != tt.want {
			t.Errorf("AuthservID(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestForgedAuthResultsDeleted(t *testing.T) {
	pol, _ := testPolicy(t, "authserv_id = \"mx.test.example\"\n")
	raw := "Authentication-Results: other.example; spf=pass\r\n" +
		"Authentication-Results: MX.TEST.EXAMPLE; dkim=pass\r\n" +
		"From: a@example.com\r\n" +
		"Authentication-Results: mx.test.example (malformed ((;\r\n" +
		"Authentication-Results: x.mx.test.example; dkim=pass\r\n\r\nbody\r\n"
	for _, ip := range []string{"198.51.100.1", "127.0.0.1"} {
		header, body, _ := SplitMessage([]byte(raw))
		m := pol.Begin(&Envelope{ClientIP: netip.MustParseAddr(ip), Helo: "h.example", MailFrom: "a@example.com"}, header)
		m.Write(body)
		d := m.Finish()
		if got := d.DeleteAuthResults; len(got) != 2 || got[0] != 2 || got[1] != 3 {
			t.Errorf("%s: deleted %v, want [2 3]", ip, got)
		}
		inbound := ip != "127.0.0.1"
		hasAR := len(d.Prepend) > 0 && d.Prepend[0].Name == "Authentication-Results"
		if hasAR != inbound {
			t.Errorf("%s: our Authentication-Results present = %v", ip, hasAR)
		}
		if hasAR && !strings.HasPrefix(d.Prepend[0].Value, " mx.test.example;\r\n\tdkim=none;\r\n\tspf=") {
			t.Errorf("%s: A-R %q", ip, d.Prepend[0].Value)
		}
	}
}

// panicDNS panics on DKIM key and SPF lookups, standing in for a bug in
// library code that runs in the verifier's goroutines. (DMARC runs in the
// session goroutine, under the milter's own panic guard.)
type panicDNS struct{ *fakeDNS }

func (p panicDNS) LookupTXT(ctx context.Context, name string) ([]string, error) {
	if strings.HasPrefix(name, "_dmarc.") {
		return p.fakeDNS.LookupTXT(ctx, name)
	}
	panic("resolver bug")
}

func TestPanicInVerifierGoroutines(t *testing.T) {
	pol, _ := testPolicy(t, "")
	pol.resolver = panicDNS{&fakeDNS{}}
	raw := "DKIM-Signature: v=1; a=rsa-sha256; d=example.org; s=s; h=From; bh=AAAA; b=AAAA\r\nFrom: a@example.org\r\n\r\nbody\r\n"
	header, body, _ := SplitMessage([]byte(raw))
	m := pol.Begin(&Envelope{ClientIP: netip.MustParseAddr("198.51.100.1"), Helo: "h.example", MailFrom: "a@example.org"}, header)
	m.Write(body)
	d := m.Finish()
	if len(d.Prepend) == 0 {
		t.Fatal("no Authentication-Results")
	}
	ar := d.Prepend[0].Value
	if !strings.Contains(ar, "dkim=temperror (internal error: resolver bug)") || !strings.Contains(ar, "spf=temperror (internal error: resolver bug)") {
		t.Errorf("A-R %q", ar)
	}
}
