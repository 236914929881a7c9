package keys

import (
	"testing"
	"time"
)

// FuzzSelectorScheme: a template the config accepts never makes an invalid
// selector, nor one already taken, at any date, for either algorithm.
func FuzzSelectorScheme(f *testing.F) {
	f.Add("%b%Y.myesp", int64(1234567890), true, "feb2009.myesp")
	f.Add("", int64(1798761600), false, "2027-01")
	f.Add("%a-%y%m%d", int64(0), true, "")
	f.Add("s%Y%m_x%%", int64(4102444800), false, "s210001_x%")
	f.Fuzz(func(t *testing.T, format string, unix int64, ed bool, taken string) {
		if len(format) > 300 {
			return
		}
		if ValidateSelectorFormat(format) != nil {
			return
		}
		when := time.Unix(unix%(1<<40), 0) // years 1..36812: %Y stays 4 digits for the ones that matter
		if y := when.UTC().Year(); y < 1000 || y > 9999 {
			return
		}
		algo := "rsa-2048"
		if ed {
			algo = "ed25519"
		}
		s := SelectorScheme{Format: format}
		sel, err := s.Next(when, algo, []string{taken}, nil, "")
		if err != nil {
			t.Fatalf("Next(%q) after validation: %v", format, err)
		}
		if !ValidSelector(sel) {
			t.Fatalf("Next(%q) = %q: not a valid selector", format, sel)
		}
		if sel == taken {
			t.Fatalf("Next(%q) = %q: taken", format, sel)
		}
	})
}

// FuzzOpenDKIMTables: hostile KeyTable and SigningTable text never
// panics, and every entry parsed names a valid domain and selector.
func FuzzOpenDKIMTables(f *testing.F) {
	f.Add([]byte("mail._domainkey.example.com example.com:mail:/etc/opendkim/keys/example.com/mail.private\n"),
		[]byte("*@example.com mail._domainkey.example.com\n"))
	f.Add([]byte("# c\nk %:sel:/k/%/sel.private # trailing\n"), []byte("*@*.example.org k\n* k\n"))
	f.Add([]byte("k ../..:x:/etc/passwd\n"), []byte("\x00\xff k\n"))
	f.Fuzz(func(t *testing.T, keyTable, signingTable []byte) {
		kl, err := parseOpenDKIMLines("KeyTable", keyTable)
		if err == nil {
			entries, _ := ParseKeyTable(&OpenDKIMTable{Path: "KeyTable", Lines: kl})
			for _, e := range entries {
				if e.Domain != "%" && !ValidDomain(e.Domain) {
					t.Fatalf("KeyTable entry with domain %q", e.Domain)
				}
				if !ValidSelector(e.Selector) {
					t.Fatalf("KeyTable entry with selector %q", e.Selector)
				}
			}
		}
		for _, refile := range []bool{false, true} {
			sl, err := parseOpenDKIMLines("SigningTable", signingTable)
			if err == nil {
				ParseSigningTable(&OpenDKIMTable{Path: "SigningTable", Refile: refile, Lines: sl})
			}
		}
	})
}
