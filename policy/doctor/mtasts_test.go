package doctor

import (
	"strings"
	"testing"
)

func TestParseSTSRecord(t *testing.T) {
	cases := []struct {
		txt, id string
		ok      bool
	}{
		{"v=STSv1; id=20160831085700Z", "20160831085700Z", true},
		{"v=STSv1;id=abc;", "abc", true},
		{"v=STSv1 ; id=abc ; ext_1=val", "abc", true},
		{"v=STSv1; id=" + strings.Repeat("a", 32), strings.Repeat("a", 32), true},
		{"v=STSv1; id=" + strings.Repeat("a", 33), "", false},
		{"v=STSv1; id=", "", false},
		{"v=STSv1; id=a-b", "", false},
		{"v=STSv1; id=a; id=b", "", false},
		{"v=STSv1;", "", false},
		{"v=STSv1", "", false},
		{"v=STSv1;; id=a", "", false},
		{"v=stsv1; id=a", "", false},
		{"id=a; v=STSv1", "", false},
		{"v=STSv1; id=a; bad ext=1", "", false},
		{"v=STSv1; id=a; ext=a=b", "", false},
		{"v=STSv1; id=a; noequals", "", false},
	}
	for _, c := range cases {
		id, err := parseSTSRecord(c.txt)
		if (err == nil) != c.ok || id != c.id {
			t.Errorf("parseSTSRecord(%q) = %q, %v; want %q, ok %v", c.txt, id, err, c.id, c.ok)
		}
	}
}

func TestParseTLSRPTRecord(t *testing.T) {
	cases := []struct {
		txt string
		rua []string
		ok  bool
	}{
		{"v=TLSRPTv1; rua=mailto:tls@example.com", []string{"mailto:tls@example.com"}, true},
		{"v=TLSRPTv1;rua=mailto:a@example.com , https://r.example.com/v1;", []string{"mailto:a@example.com", "https://r.example.com/v1"}, true},
		{"v=TLSRPTv1; rua=https://r.example.com; ext=1", []string{"https://r.example.com"}, true},
		{"v=TLSRPTv1", nil, false},
		{"v=TLSRPTv1;", nil, false},
		{"v=TLSRPTv1; ext=1", nil, false},
		{"v=TLSRPTv1; rua=", nil, false},
		{"v=TLSRPTv1; rua=mailto:", nil, false},
		{"v=TLSRPTv1; rua=mailto:@example.com", nil, false},
		{"v=TLSRPTv1; rua=https:///path", nil, false},
		{"v=TLSRPTv1; rua=http://r.example.com", nil, false},
		{"v=TLSRPTv1; rua=mailto:a@example.com,", nil, false},
		{"v=TLSRPTv1; rua=mailto:a@example.com; rua=mailto:b@example.com", nil, false},
		{"v=TLSRPTv2; rua=mailto:a@example.com", nil, false},
	}
	for _, c := range cases {
		rua, err := parseTLSRPTRecord(c.txt)
		if (err == nil) != c.ok || strings.Join(rua, " ") != strings.Join(c.rua, " ") {
			t.Errorf("parseTLSRPTRecord(%q) = %q, %v; want %q, ok %v", c.txt, rua, err, c.rua, c.ok)
		}
	}
}

// TestParseTLSRPTRecordURILimit attacks the number of rua URIs kept.
func TestParseTLSRPTRecordURILimit(t *testing.T) {
	txt := "v=TLSRPTv1; rua=" + strings.TrimSuffix(strings.Repeat("mailto:a@example.com,", 1000), ",")
	rua, err := parseTLSRPTRecord(txt)
	if err != nil || len(rua) != maxTLSRPTURIs {
		t.Errorf("%d URIs kept (err %v), want %d", len(rua), err, maxTLSRPTURIs)
	}
}

// FuzzParseSTSRecord checks that hostile records neither panic nor give
// an id that the grammar forbids.
func FuzzParseSTSRecord(f *testing.F) {
	for _, s := range []string{"v=STSv1; id=abc", "v=STSv1;", "v=STSv1; id=a; x=y;", "v=STSv1;;;"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, txt string) {
		id, err := parseSTSRecord(txt)
		if err == nil && (id == "" || len(id) > 32 || !isAlnum(id)) {
			t.Errorf("parseSTSRecord(%q) accepted id %q", txt, id)
		}
	})
}

// FuzzParseTLSRPTRecord checks that hostile records neither panic nor
// give more URIs than the limit or an empty one.
func FuzzParseTLSRPTRecord(f *testing.F) {
	for _, s := range []string{"v=TLSRPTv1; rua=mailto:a@b.c", "v=TLSRPTv1; rua=https://x,mailto:y@z", "v=TLSRPTv1;"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, txt string) {
		rua, err := parseTLSRPTRecord(txt)
		if err == nil && (len(rua) == 0 || len(rua) > maxTLSRPTURIs) {
			t.Errorf("parseTLSRPTRecord(%q) = %q", txt, rua)
		}
		for _, u := range rua {
			if u == "" {
				t.Errorf("parseTLSRPTRecord(%q) gave an empty URI", txt)
			}
		}
	})
}
