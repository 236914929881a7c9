package policy

import (
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"github.com/authmilter/authmilter/internal/testdns"
)

// TestInboundAuthResultsDKIM checks our whole Authentication-Results field,
// byte for byte, for a few DKIM fixtures (testdata/dkim) through the policy
// path, with SPF and DMARC records published so that every method has a
// result worth reading.
func TestInboundAuthResultsDKIM(t *testing.T) {
	const dnsAuth = "$TTL 300\n" +
		"example.com. IN TXT \"v=spf1 ip4:192.0.2.0/24 -all\"\n" +
		"_dmarc.example.com. IN TXT \"v=DMARC1; p=reject\"\n" +
		"25.2.0.192.in-addr.arpa. IN PTR mail.example.com.\n" +
		"mail.example.com. IN A 192.0.2.25\n"
	// DMARC's and iprev's resinfos are the same in every case.
	const dmarcIPRevPass = "\tdmarc=pass (p=reject dis=none) header.from=example.com;\r\n" +
		"\tiprev=pass (mail.example.com) smtp.remote-ip=192.0.2.25 policy.iprev=192.0.2.25"
	tests := []struct{ fixture, want string }{
		{"01-pass-rsa2048", " mx.test;\r\n" +
			"\tdkim=pass header.d=example.com header.s=sel header.a=rsa-sha256 header.b=eRGF+6dt;\r\n" +
			"\tspf=pass smtp.mailfrom=alice@example.com;\r\n" +
			dmarcIPRevPass},
		{"04-two-signatures-one-bad", " mx.test;\r\n" +
			"\tdkim=fail (signature did not verify) header.d=esp.example header.s=esp1 header.a=rsa-sha256 header.b=Pjp5d68K;\r\n" +
			"\tdkim=pass header.d=example.com header.s=sel header.a=rsa-sha256 header.b=CgwS8NKD;\r\n" +
			"\tspf=pass smtp.mailfrom=alice@example.com;\r\n" +
			dmarcIPRevPass},
		{"17-key-timeout", " mx.test;\r\n" +
			"\tdkim=temperror (key unavailable: i/o timeout) header.d=example.com header.s=sel header.a=rsa-sha256 header.b=OnIP/VgM;\r\n" +
			"\tspf=pass smtp.mailfrom=alice@example.com;\r\n" +
			dmarcIPRevPass},
		{"22-key-t-y-pass", " mx.test;\r\n" +
			"\tdkim=pass (testing mode) header.d=example.com header.s=sel header.a=rsa-sha256 header.b=hooLxZnC;\r\n" +
			"\tspf=pass smtp.mailfrom=alice@example.com;\r\n" +
			dmarcIPRevPass},
		{"31-body-length-l", " mx.test;\r\n" +
			"\tdkim=policy (body length limit l= not accepted, RFC 6376 section 8.2) header.d=example.com header.s=sel header.a=rsa-sha256 header.b=LLF3G4Wa;\r\n" +
			"\tspf=pass smtp.mailfrom=alice@example.com;\r\n" +
			dmarcIPRevPass},
	}
	for _, tt := range tests {
		t.Run(tt.fixture, func(t *testing.T) {
			base := filepath.Join(dkimDir, tt.fixture)
			srv := testdns.Start(t)
			srv.AddZoneText(t, "", readTestFile(t, base+".zone"))
			srv.AddZoneText(t, "", dnsAuth)
			for _, line := range strings.Split(readTestFile(t, base+".zone"), "\n") {
				if name, ok := strings.CutPrefix(line, "; testdns: drop "); ok {
					srv.Drop(name)
				}
			}
			pol := testPolicyWithDNS(t, srv.Addr(), "")
			got := runInbound(t, pol, inboundEnv(), []byte(readTestFile(t, base+".eml")))
			if got != tt.want {
				t.Errorf("Authentication-Results\n got: %q\nwant: %q", got, tt.want)
			}
		})
	}
}

// TestInboundSPF checks SPF cases the OpenSPF suite does not reach through
// our envelope: the HELO identity for a null MAIL FROM, a client without an
// IP address, the lookup limits of RFC 7208 §4.6.4, and addresses our
// strict parser refuses.
func TestInboundSPF(t *testing.T) {
	srv := testdns.Start(t)
	var tenA, elevenA []string
	for i := 1; i <= 11; i++ {
		name := "a" + string(rune('a'+i)) + ".example.org"
		srv.AddRR(t, name+". 300 IN A 198.51.100.1")
		if i <= 10 {
			tenA = append(tenA, "a:"+name)
		}
		elevenA = append(elevenA, "a:"+name)
	}
	srv.AddZoneText(t, "", "$TTL 300\n"+
		"mail.example.org. IN A 192.0.2.25\n"+
		"mail.example.org. IN TXT \"v=spf1 a -all\"\n"+
		"example.org. IN TXT \"v=spf1 ip4:192.0.2.0/24 -all\"\n"+
		"ten.example.org. IN TXT \"v=spf1 "+strings.Join(tenA, " ")+" -all\"\n"+
		"eleven.example.org. IN TXT \"v=spf1 "+strings.Join(elevenA, " ")+" -all\"\n"+
		// Includes count as lookups too, wherever they are.
		"inc.example.org. IN TXT \"v=spf1 include:ten.example.org -all\"\n"+
		// RFC 7208 §4.6.4: more than two void lookups is a permerror.
		"void.example.org. IN TXT \"v=spf1 a:v1.example.org a:v2.example.org a:v3.example.org -all\"\n"+
		"twovoid.example.org. IN TXT \"v=spf1 a:v1.example.org a:v2.example.org ip4:192.0.2.25 -all\"\n")
	srv.Drop("slow.example.org")
	pol := testPolicyWithDNS(t, srv.Addr(), "")
	ip := netip.MustParseAddr("192.0.2.25")
	tests := []struct {
		name string
		env  Envelope
		want string // the spf resinfo
	}{
		{"mail from", Envelope{ClientIP: ip, Helo: "mail.example.org", MailFrom: "bob@example.org"},
			"spf=pass smtp.mailfrom=bob@example.org"},
		// RFC 7208 §2.4: with MAIL FROM:<>, the HELO identity, as
		// postmaster@HELO.
		{"null mail from", Envelope{ClientIP: ip, Helo: "mail.example.org"},
			"spf=pass smtp.helo=mail.example.org"},
		{"null mail from, HELO fails", Envelope{ClientIP: netip.MustParseAddr("203.0.113.9"), Helo: "mail.example.org"},
			"spf=fail (matched all) smtp.helo=mail.example.org"},
		// RFC 7208 §4.3: a HELO that is not a domain name gives none.
		{"null mail from, HELO literal", Envelope{ClientIP: ip, Helo: "[192.0.2.25]"},
			"spf=none (no DNS record found) smtp.helo=[192.0.2.25]"},
		{"null mail from, no HELO", Envelope{ClientIP: ip},
			"spf=none (no HELO name)"},
		{"no client IP", Envelope{Helo: "mail.example.org", MailFrom: "bob@example.org"},
			"spf=none (no client IP address) smtp.mailfrom=bob@example.org"},
		{"ten lookups", Envelope{ClientIP: ip, Helo: "h.example", MailFrom: "bob@ten.example.org"},
			"spf=fail (matched all) smtp.mailfrom=bob@ten.example.org"},
		{"eleven lookups", Envelope{ClientIP: ip, Helo: "h.example", MailFrom: "bob@eleven.example.org"},
			"spf=permerror (lookup limit reached) smtp.mailfrom=bob@eleven.example.org"},
		{"include plus ten lookups", Envelope{ClientIP: ip, Helo: "h.example", MailFrom: "bob@inc.example.org"},
			"spf=permerror (lookup limit reached) smtp.mailfrom=bob@inc.example.org"},
		{"three void lookups", Envelope{ClientIP: ip, Helo: "h.example", MailFrom: "bob@void.example.org"},
			"spf=permerror (void lookup limit reached) smtp.mailfrom=bob@void.example.org"},
		{"two void lookups", Envelope{ClientIP: ip, Helo: "h.example", MailFrom: "bob@twovoid.example.org"},
			"spf=pass smtp.mailfrom=bob@twovoid.example.org"},
		{"timeout", Envelope{ClientIP: ip, Helo: "h.example", MailFrom: "bob@slow.example.org"},
			"spf=temperror (lookup slow.example.org: i/o timeout) smtp.mailfrom=bob@slow.example.org"},
		// RFC 7208 §4.3: an empty local part is "postmaster".
		{"no local part", Envelope{ClientIP: ip, Helo: "h.example", MailFrom: "@example.org"},
			"spf=pass smtp.mailfrom=@example.org"},
		// A local part our address parser refuses still has a domain to
		// check.
		{"space in local part", Envelope{ClientIP: ip, Helo: "h.example", MailFrom: "Bob Smith@example.org"},
			"spf=pass smtp.mailfrom=\"bob smith@example.org\""},
		{"no domain", Envelope{ClientIP: ip, Helo: "h.example", MailFrom: "bob"},
			"spf=none (MAIL FROM has no usable domain) smtp.mailfrom=bob"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ar := runInbound(t, pol, &tt.env, []byte("From: bob@example.org\r\n\r\nhi\r\n"))
			var got string
			for _, e := range arResinfos(ar) {
				if strings.HasPrefix(e, "spf=") {
					got = e
				}
			}
			if got != tt.want {
				t.Errorf("got  %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestSPFSender(t *testing.T) {
	tests := []struct {
		in, sender, domain string
		ok                 bool
	}{
		{"bob@example.org", "bob@example.org", "example.org", true},
		{"<Bob@Example.ORG>", "Bob@example.org", "example.org", true},
		{"@example.org", "postmaster@example.org", "example.org", true},
		{"@relay.example:bob@example.org", "bob@example.org", "example.org", true},
		{"Macro Error@example.org", "Macro Error@example.org", "example.org", true},
		// The SPF library splits at the first "@": never give it one in
		// the local part.
		{`"a@evil.example"@example.org`, "postmaster@example.org", "example.org", true},
		{"bob@evil.example@example.org", "postmaster@example.org", "example.org", true},
		{"bob", "", "", false},
		{"bob@", "", "", false},
		{"bob@[192.0.2.1]", "", "", false},
		{"bob@exa mple.org", "", "", false},
	}
	for _, tt := range tests {
		sender, domain, ok := spfSender(tt.in)
		if sender != tt.sender || domain != tt.domain || ok != tt.ok {
			t.Errorf("spfSender(%q) = %q, %q, %v; want %q, %q, %v", tt.in, sender, domain, ok, tt.sender, tt.domain, tt.ok)
		}
	}
}

func TestSanitizeComment(t *testing.T) {
	tests := []struct{ in, want string }{
		{"plain text", "plain text"},
		{"a (nested) comment", "a nested comment"},
		{"semi; colon", "semi, colon"},
		{"caf\u00e9 \\ x", "caf? / x"},
		{"line\r\nbreak", "line  break"},
		{strings.Repeat("x", 130), strings.Repeat("x", 120) + "..."},
	}
	for _, tt := range tests {
		if got := sanitizeComment(tt.in); got != tt.want {
			t.Errorf("sanitizeComment(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
