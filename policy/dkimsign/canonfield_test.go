package dkimsign

import (
	"strings"
	"testing"
)

// referenceCanonicalField is the definition AppendCanonicalField replaced
// (strings.ToLower, FieldsFunc and Join, one allocation after another): the
// two must agree on every input.
func referenceCanonicalField(c Canon, name, value string, crlf bool) string {
	var s string
	if c == Simple {
		s = name + ":" + value
	} else {
		s = strings.ToLower(strings.TrimRight(name, " \t")) + ":" +
			strings.Join(strings.FieldsFunc(value, func(r rune) bool {
				return r == ' ' || r == '\t' || r == '\r' || r == '\n'
			}), " ")
	}
	if crlf {
		s += "\r\n"
	}
	return s
}

var canonFieldCases = []struct{ name, value string }{
	{"From", " a@example.com"},
	{"Subject", "  two  spaces\r\n\tfolded   here  "},
	{"SUBJECT \t", "trailing space in the name"},
	{"X-Empty", ""},
	{"X-Only-Space", " \t\r\n "},
	{"DKIM-Signature", " v=1; a=rsa-sha256;\r\n\tb=abc\r\n def"},
	{"Ünïcödé-Näme", " ÄÖ Ü  x"},
	{"X-K\u212aelvin", "Kelvin sign folds to k"},
	{"X-Bad-\xff\xfe", "invalid \xff\xfe UTF-8  \xc3"},
	{"X-Bare-CR", "a\rb\nc\r\n\r\nd"},
	{"x-nul", "a\x00 b"},
}

func TestAppendCanonicalFieldMatchesReference(t *testing.T) {
	for _, c := range []Canon{Simple, Relaxed} {
		for _, tc := range canonFieldCases {
			for _, crlf := range []bool{false, true} {
				want := referenceCanonicalField(c, tc.name, tc.value, crlf)
				if got := string(AppendCanonicalField([]byte("prefix"), c, tc.name, tc.value, crlf)); got != "prefix"+want {
					t.Errorf("%v %q %q crlf=%v:\n got %q\nwant %q", c, tc.name, tc.value, crlf, got, "prefix"+want)
				}
				if got := CanonicalizeField(c, tc.name, tc.value, crlf); got != want {
					t.Errorf("CanonicalizeField %v %q %q: %q, want %q", c, tc.name, tc.value, got, want)
				}
			}
		}
	}
}

// A reused buffer makes canonicalizing a field free of allocations.
func TestAppendCanonicalFieldAllocations(t *testing.T) {
	buf := make([]byte, 0, 256)
	n := testing.AllocsPerRun(100, func() {
		buf = AppendCanonicalField(buf[:0], Relaxed, "Subject", "  folded\r\n\tvalue  ", true)
	})
	if n != 0 {
		t.Errorf("%v allocations per field, want 0", n)
	}
}

func FuzzAppendCanonicalField(f *testing.F) {
	for _, tc := range canonFieldCases {
		f.Add(tc.name, tc.value)
	}
	f.Fuzz(func(t *testing.T, name, value string) {
		for _, c := range []Canon{Simple, Relaxed} {
			if got, want := string(AppendCanonicalField(nil, c, name, value, true)), referenceCanonicalField(c, name, value, true); got != want {
				t.Fatalf("%v %q %q: %q, want %q", c, name, value, got, want)
			}
		}
	})
}
