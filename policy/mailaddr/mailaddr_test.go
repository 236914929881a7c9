package mailaddr

import (
	"errors"
	"net/mail"
	"strings"
	"testing"
)

type fromCase struct {
	name   string
	values []string
	want   string // domain on success
	err    error  // sentinel expected from errors.Is; nil for success
}

var fromCases = []fromCase{
	// Plain forms.
	{"bare addr-spec", []string{"user@example.com"}, "example.com", nil},
	{"leading space", []string{" user@example.com"}, "example.com", nil},
	{"trailing space", []string{"user@example.com \t"}, "example.com", nil},
	{"angle only", []string{"<user@example.com>"}, "example.com", nil},
	{"unquoted display name", []string{"John Smith <john@example.com>"}, "example.com", nil},
	{"quoted display name", []string{`"Smith, John" <john@example.com>`}, "example.com", nil},
	{"quoted name with comma and angle", []string{`"a, <b> c" <x@example.org>`}, "example.org", nil},
	{"obs-phrase dot in name", []string{"John Q. Public <jqp@example.com>"}, "example.com", nil},
	{"uppercase domain", []string{"User@EXAMPLE.COM"}, "example.com", nil},
	{"mixed case in angle", []string{"X <u@Sub.Example.Org>"}, "sub.example.org", nil},
	{"subdomain", []string{"a@mail.news.example.co.uk"}, "mail.news.example.co.uk", nil},
	{"atext specials in local part", []string{"a!#$%&'*+-/=?^_`{|}~b@example.com"}, "example.com", nil},
	{"dot-atom local part", []string{"first.last@example.com"}, "example.com", nil},
	{"single-label domain", []string{"root@localhost"}, "localhost", nil},
	{"hyphen domain", []string{"a@my-host.example"}, "my-host.example", nil},
	{"trailing line break", []string{"a@example.com\r\n"}, "example.com", nil},

	// Folding.
	{"folded CRLF", []string{"John Smith\r\n <john@example.com>"}, "example.com", nil},
	{"folded LF tab", []string{"\"John\"\n\t<john@example.com>"}, "example.com", nil},
	{"folded inside quoted", []string{"\"John\r\n Smith\" <john@example.com>"}, "example.com", nil},
	{"folded inside comment", []string{"john@example.com (a\r\n b)"}, "example.com", nil},

	// Comments.
	{"comment after", []string{"john@example.com (John)"}, "example.com", nil},
	{"comment everywhere", []string{"(a) John (b) <(c) john (d) @ (e) example (f) . (g) com (h)> (i)"}, "example.com", nil},
	{"nested comment", []string{"john@example.com (a (b (c)) d)"}, "example.com", nil},
	{"comment with quoted pairs", []string{`john@example.com (a \) b \( c \\)`}, "example.com", nil},
	{"comment containing address", []string{"(attacker@evil.example) victim@bank.example"}, "bank.example", nil},
	{"comment containing angle", []string{"victim@bank.example (<attacker@evil.example>)"}, "bank.example", nil},

	// Quoted local parts.
	{"quoted local part", []string{`"john smith"@example.com`}, "example.com", nil},
	{"quoted local with escaped quote and @", []string{`"a@b\"c"@example.com`}, "example.com", nil},
	{"quoted local in angle", []string{`Name <"x@evil.example"@bank.example>`}, "bank.example", nil},
	{"empty quoted local part", []string{`""@example.com`}, "example.com", nil},

	// Obsolete syntax.
	{"obs whitespace around dots and @", []string{"john . smith @ example . com"}, "example.com", nil},
	{"obs-local-part mixed words", []string{`john."q".smith@example.com`}, "example.com", nil},
	{"obs empty list elements", []string{", ,john@example.com,,"}, "example.com", nil},

	// Encoded-words.
	{"encoded-word display name", []string{"=?UTF-8?B?SsO2cmc=?= <j@example.de>"}, "example.de", nil},
	{"encoded-word q", []string{"=?iso-8859-1?Q?J=F6rg_M=FCller?= <j@example.de>"}, "example.de", nil},
	{"quoted encoded-word", []string{`"=?utf-8?q?a=40evil.example?=" <v@bank.example>`}, "bank.example", nil},

	// UTF-8 (RFC 6532) and IDNA.
	{"utf8 domain", []string{"user@bücher.example"}, "xn--bcher-kva.example", nil},
	{"utf8 uppercase domain", []string{"user@BÜCHER.example"}, "xn--bcher-kva.example", nil},
	{"utf8 local part", []string{"jörg@example.de"}, "example.de", nil},
	{"utf8 display name", []string{"Jörg Müller <j@münchen.example>"}, "xn--mnchen-3ya.example", nil},
	{"a-label kept", []string{"a@xn--bcher-kva.example"}, "xn--bcher-kva.example", nil},
	{"ideographic full stop maps to dot", []string{"a@bank。example"}, "bank.example", nil},
	{"full-width letters map", []string{"a@ｂａｎｋ.example"}, "bank.example", nil},

	// Groups (RFC 6854).
	{"group with one mailbox", []string{"Team: a@example.com;"}, "example.com", nil},
	{"group with one mailbox and comma", []string{"Team: , a@example.com ,;"}, "example.com", nil},
	{"empty group", []string{"undisclosed-recipients:;"}, "", ErrNoFrom},
	{"empty group then mailbox", []string{"undisclosed:;, a@example.com"}, "example.com", nil},
	{"group with two mailboxes", []string{"Team: a@x.example, b@y.example;"}, "", ErrMultipleFrom},
	{"group plus mailbox", []string{"Team: a@x.example;, b@y.example"}, "", ErrMultipleFrom},
	{"group without semicolon", []string{"Team: a@example.com"}, "", ErrMalformed},
	{"nested group", []string{"A: B: a@example.com;;"}, "", ErrMalformed},
	{"group without name", []string{": a@example.com;"}, "", ErrMalformed},

	// No From.
	{"no fields", nil, "", ErrNoFrom},
	{"empty field", []string{""}, "", ErrNoFrom},
	{"blank field", []string{"  \r\n  "}, "", ErrNoFrom},
	{"comment only", []string{"(nobody)"}, "", ErrNoFrom},
	{"only commas", []string{" , , "}, "", ErrNoFrom},

	// Multiple From.
	{"two fields", []string{"a@x.example", "b@y.example"}, "", ErrMultipleFrom},
	{"two identical fields", []string{"a@x.example", "a@x.example"}, "", ErrMultipleFrom},
	{"two fields one empty", []string{"a@x.example", ""}, "", ErrMultipleFrom},
	{"two mailboxes", []string{"a@x.com, b@y.com"}, "", ErrMultipleFrom},
	{"two identical mailboxes", []string{"a@x.com, a@x.com"}, "", ErrMultipleFrom},
	{"two name-addrs", []string{"A <a@x.com>, \"B, C\" <b@y.com>"}, "", ErrMultipleFrom},

	// Known DMARC bypasses.
	{"quoted address as display name", []string{`"attacker@evil.com" <victim@bank.com>`}, "bank.com", nil},
	{"quoted display name mimicking angle", []string{`"victim@bank.com <victim@bank.com>" <attacker@evil.com>`}, "evil.com", nil},
	{"angle then trailing addr-spec", []string{"<attacker@evil.com>victim@bank.com"}, "", ErrMalformed},
	{"angle then trailing addr-spec spaced", []string{"<attacker@evil.com> victim@bank.com"}, "", ErrMalformed},
	{"addr-spec then angle", []string{"victim@bank.com <attacker@evil.com>"}, "", ErrMalformed},
	{"unquoted @ in display name", []string{"Victim victim@bank.com <attacker@evil.com>"}, "", ErrMalformed},
	{"two angle addrs", []string{"<victim@bank.com> <attacker@evil.com>"}, "", ErrMalformed},
	{"nested angle", []string{"<<victim@bank.com>>"}, "", ErrMalformed},
	{"nested angle inner", []string{"<victim@bank.com<attacker@evil.com>>"}, "", ErrMalformed},
	{"unbalanced <", []string{"Victim <victim@bank.com"}, "", ErrMalformed},
	{"unbalanced < only", []string{"Victim <"}, "", ErrMalformed},
	{"unbalanced >", []string{"victim@bank.com>"}, "", ErrMalformed},
	{"unbalanced > before", []string{"Victim > victim@bank.com"}, "", ErrMalformed},
	{"escaped > outside quotes", []string{`Victim \> <victim@bank.com>`}, "", ErrMalformed},
	{`escaped " outside quotes`, []string{`\"attacker@evil.com\" <victim@bank.com>`}, "", ErrMalformed},
	{"escaped < outside quotes", []string{`attacker@evil.com\<victim@bank.com>`}, "", ErrMalformed},
	{"unterminated quote swallowing", []string{`"attacker@evil.com <victim@bank.com>`}, "", ErrMalformed},
	{"escaped closing quote", []string{`"attacker\" <victim@bank.com>`}, "", ErrMalformed},
	{"unterminated comment", []string{"victim@bank.com (attacker@evil.com"}, "", ErrMalformed},
	{"unbalanced )", []string{"victim@bank.com )"}, "", ErrMalformed},
	{"double @", []string{"attacker@evil.com@bank.com"}, "", ErrMalformed},
	{"double @ in angle", []string{"<attacker@evil.com@bank.com>"}, "", ErrMalformed},
	{"source route", []string{"<@bank.com:attacker@evil.com>"}, "", ErrMalformed},
	{"source route list", []string{"<@a.example,@bank.com:attacker@evil.com>"}, "", ErrMalformed},
	{"semicolon outside group", []string{"victim@bank.com; attacker@evil.com"}, "", ErrMalformed},
	{"NUL byte", []string{"attacker@evil.com\x00victim@bank.com"}, "", ErrMalformed},
	{"NUL in display name", []string{"\"a\x00\" <victim@bank.com>"}, "", ErrMalformed},
	{"bare CR", []string{"victim@bank.com\rattacker@evil.com"}, "", ErrMalformed},
	{"header injection LF", []string{"victim@bank.com\nFrom: attacker@evil.com"}, "", ErrMalformed},
	{"invalid UTF-8", []string{"\xff\xfe <victim@bank.com>"}, "", ErrMalformed},
	{"invalid UTF-8 in domain", []string{"a@b\xffank.com"}, "", ErrMalformed},

	// Malformed addresses.
	{"missing @", []string{"John Smith"}, "", ErrMalformed},
	{"missing @ in angle", []string{"<john>"}, "", ErrMalformed},
	{"empty angle", []string{"<>"}, "", ErrMalformed},
	{"empty domain", []string{"john@"}, "", ErrMalformed},
	{"empty domain in angle", []string{"<john@>"}, "", ErrMalformed},
	{"empty local part", []string{"@example.com"}, "", ErrMalformed},
	{"empty local part in angle", []string{"x <@example.com>"}, "", ErrMalformed},
	{"domain literal", []string{"john@[1.2.3.4]"}, "", ErrMalformed},
	{"domain literal ipv6", []string{"<john@[IPv6:2001:db8::1]>"}, "", ErrMalformed},
	{"trailing dot", []string{"john@example.com."}, "", ErrMalformed},
	{"leading dot domain", []string{"john@.example.com"}, "", ErrMalformed},
	{"double dot domain", []string{"john@example..com"}, "", ErrMalformed},
	{"double dot local", []string{"jo..hn@example.com"}, "", ErrMalformed},
	{"leading dot local", []string{".john@example.com"}, "", ErrMalformed},
	{"trailing dot local", []string{"john.@example.com"}, "", ErrMalformed},
	{"space in local part", []string{"john smith@example.com"}, "", ErrMalformed},
	{"space in domain", []string{"john@exa mple.com"}, "", ErrMalformed},
	{"underscore in domain", []string{"john@ex_ample.com"}, "", ErrMalformed},
	{"domain with !", []string{"john@exa!mple.com"}, "", ErrMalformed},
	{"quoted domain", []string{`john@"example.com"`}, "", ErrMalformed},
	{"leading hyphen label", []string{"john@-example.com"}, "", ErrMalformed},
	{"trailing hyphen label", []string{"john@example-.com"}, "", ErrMalformed},
	{"numeric tld", []string{"john@192.0.2.1"}, "", ErrMalformed},
	{"label too long", []string{"john@" + strings.Repeat("a", 64) + ".example"}, "", ErrMalformed},
	{"domain too long", []string{"john@" + strings.Repeat("abcdefghi.", 26) + "example"}, "", ErrMalformed},
	{"bad punycode", []string{"john@xn--zz-.example"}, "", ErrMalformed},
	{"display name starting with dot", []string{". <john@example.com>"}, "", ErrMalformed},
	{"stray colon", []string{"john@example.com:"}, "", ErrMalformed},
	{"bracket in display name", []string{"[x] <john@example.com>"}, "", ErrMalformed},
	{"trailing backslash in quote", []string{`"abc\`}, "", ErrMalformed},
	{"unterminated domain literal", []string{"john@[1.2.3.4"}, "", ErrMalformed},
	{"ideographic trailing dot", []string{"a@bank.example。"}, "", ErrMalformed},
}

func TestFromDomain(t *testing.T) {
	for _, tc := range fromCases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := FromDomain(tc.values)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("FromDomain(%q) = %q, %v; want error %v", tc.values, got, err, tc.err)
				}
				if got != "" {
					t.Errorf("FromDomain(%q) returned domain %q with error", tc.values, got)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("FromDomain(%q) = %q, %v; want %q", tc.values, got, err, tc.want)
			}
		})
	}
}

// TestFromDomainNetMail cross-checks the successful ASCII cases against
// net/mail where it parses the same input; a disagreement on the domain would
// point to a bug in one of the two parsers.
func TestFromDomainNetMail(t *testing.T) {
	for _, tc := range fromCases {
		if tc.err != nil || len(tc.values) != 1 || tc.want != strings.ToLower(tc.want) {
			continue
		}
		addr, err := mail.ParseAddress(tc.values[0])
		if err != nil {
			continue // net/mail refuses some valid syntax; that is fine
		}
		at := strings.LastIndexByte(addr.Address, '@')
		if at < 0 {
			continue
		}
		d := strings.ToLower(addr.Address[at+1:])
		if d != tc.want && isASCII(d) {
			t.Errorf("%s: net/mail says %q, we say %q", tc.name, d, tc.want)
		}
	}
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

func TestErrorsWrapDetail(t *testing.T) {
	_, err := FromDomain([]string{"Victim <victim@bank.com"})
	if err == nil || !strings.Contains(err.Error(), "unbalanced '<'") {
		t.Fatalf("error %v does not say what is wrong", err)
	}
	_, err = FromDomain([]string{"a@[1.2.3.4]"})
	if err == nil || !strings.Contains(err.Error(), "domain literal") {
		t.Fatalf("error %v does not say what is wrong", err)
	}
}

func TestAddressDomain(t *testing.T) {
	tests := []struct {
		addr string
		want string
		err  error
	}{
		{"user@Example.COM", "example.com", nil},
		{"<user@example.com>", "example.com", nil},
		{" <user@example.com> ", "example.com", nil},
		{"bounce+abc=def@mail.example.org", "mail.example.org", nil},
		{`"john smith"@example.com`, "example.com", nil},
		{`"a@b\"c"@example.com`, "example.com", nil},
		{"@relay.example:user@example.com", "example.com", nil},
		{"<@r1.example,@r2.example:user@example.com>", "example.com", nil},
		{"jörg@bücher.example", "xn--bcher-kva.example", nil},
		{"", "", ErrNullPath},
		{"<>", "", ErrNullPath},
		{"< >", "", ErrNullPath},
		{"user", "", ErrMalformed},
		{"user@", "", ErrMalformed},
		{"@example.com", "", ErrMalformed},
		{"user@[192.0.2.1]", "", ErrMalformed},
		{"user@example.com.", "", ErrMalformed},
		{"user@exa mple.com", "", ErrMalformed},
		{"a@b@example.com", "", ErrMalformed},
		{"<user@example.com", "", ErrMalformed},
		{"user@example.com>", "", ErrMalformed},
		{"us er@example.com", "", ErrMalformed},
		{"user@example.com\x00", "", ErrMalformed},
		{"user@ex\xffample.com", "", ErrMalformed},
		{`"unterminated@example.com`, "", ErrMalformed},
		{`"q"x@example.com`, "", ErrMalformed},
		{"user@192.0.2.1", "", ErrMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.addr, func(t *testing.T) {
			got, err := AddressDomain(tc.addr)
			if tc.err != nil {
				if !errors.Is(err, tc.err) || got != "" {
					t.Fatalf("AddressDomain(%q) = %q, %v; want error %v", tc.addr, got, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("AddressDomain(%q) = %q, %v; want %q", tc.addr, got, err, tc.want)
			}
		})
	}
}
