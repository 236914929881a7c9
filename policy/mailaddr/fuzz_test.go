package mailaddr

import (
	"errors"
	"strings"
	"testing"
)

// FuzzFromDomain checks that FromDomain never panics, that every error is one
// of the package's sentinels, and that a returned domain is a lower-case
// A-label that AddressDomain accepts unchanged.
func FuzzFromDomain(f *testing.F) {
	for _, tc := range fromCases {
		if len(tc.values) == 1 {
			f.Add(tc.values[0])
		}
	}
	f.Fuzz(func(t *testing.T, value string) {
		got, err := FromDomain([]string{value})
		if err != nil {
			if got != "" {
				t.Fatalf("domain %q returned with error %v", got, err)
			}
			if !errors.Is(err, ErrNoFrom) && !errors.Is(err, ErrMultipleFrom) && !errors.Is(err, ErrMalformed) {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		if got == "" || got != strings.ToLower(got) {
			t.Fatalf("bad domain %q for %q", got, value)
		}
		for i := 0; i < len(got); i++ {
			if got[i] >= 0x80 {
				t.Fatalf("non-ASCII domain %q for %q", got, value)
			}
		}
		again, err := AddressDomain("x@" + got)
		if err != nil || again != got {
			t.Fatalf("AddressDomain(x@%s) = %q, %v", got, again, err)
		}
	})
}

// FuzzAddressDomain checks that AddressDomain never panics and returns only
// the package's sentinel errors.
func FuzzAddressDomain(f *testing.F) {
	for _, s := range []string{"", "<>", "user@example.com", "<@r:u@example.com>", `"a@b"@example.com`, "u@bücher.example", "u@[1.2.3.4]"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, addr string) {
		got, err := AddressDomain(addr)
		if err != nil {
			if got != "" || (!errors.Is(err, ErrNullPath) && !errors.Is(err, ErrMalformed)) {
				t.Fatalf("AddressDomain(%q) = %q, %v", addr, got, err)
			}
			return
		}
		if got == "" || got != strings.ToLower(got) {
			t.Fatalf("bad domain %q for %q", got, addr)
		}
	})
}
