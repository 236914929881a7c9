package dmarc

import (
	"errors"
	"reflect"
	"testing"
)

func TestParseRecord(t *testing.T) {
	def := func(mod func(r *Record)) *Record {
		r := &Record{P: "none", PSD: "u", ADKIM: "r", ASPF: "r", FO: []string{"0"}, PCT: -1}
		if mod != nil {
			mod(r)
		}
		return r
	}
	tests := []struct {
		name     string
		txt      string
		want     *Record // Warnings are compared by count only
		warnings int
		err      error
	}{
		{"minimal", "v=DMARC1", def(nil), 0, nil},
		{"minimal with p", "v=DMARC1; p=reject", def(func(r *Record) { r.P = "reject" }), 0, nil},
		{"trailing semicolon and spaces", "  v = DMARC1 ;\tp = quarantine ; ", def(func(r *Record) { r.P = "quarantine" }), 0, nil},
		{"all tags", "v=DMARC1; p=reject; sp=quarantine; np=none; psd=n; t=y; adkim=s; aspf=s; " +
			"rua=mailto:a@example.com, mailto:b@example.net!10m; ruf=mailto:f@example.com; fo=1:d:s",
			def(func(r *Record) {
				r.P, r.SP, r.NP, r.PSD, r.T, r.ADKIM, r.ASPF = "reject", "quarantine", "none", "n", "y", "s", "s"
				r.RUA = []string{"mailto:a@example.com", "mailto:b@example.net"}
				r.RUALimits = []int64{0, 10 << 20}
				r.RUF = []string{"mailto:f@example.com"}
				r.FO = []string{"1", "d", "s"}
			}), 0, nil},
		{"case-insensitive names and values", "V=DMARC1; P=Reject; SP=NONE; ADKIM=S", def(func(r *Record) {
			r.P, r.SP, r.ADKIM = "reject", "none", "s"
		}), 0, nil},
		{"tags in any order", "v=DMARC1; rua=mailto:a@example.com; p=reject", def(func(r *Record) {
			r.P, r.RUA, r.RUALimits = "reject", []string{"mailto:a@example.com"}, []int64{0}
		}), 0, nil},
		{"rua size limits", "v=DMARC1; p=none; rua=mailto:a@example.com!50K,mailto:b@example.com!2g,mailto:c@example.com!99999999999999999999t",
			def(func(r *Record) {
				r.RUA = []string{"mailto:a@example.com", "mailto:b@example.com", "mailto:c@example.com"}
				r.RUALimits = []int64{50 << 10, 2 << 30, 1 << 62}
			}), 0, nil},
		{"unknown tags ignored", "v=DMARC1; p=reject; foo=bar; x=1", def(func(r *Record) { r.P = "reject" }), 0, nil},
		{"historic rf ri ignored", "v=DMARC1; p=none; rf=afrf; ri=86400", def(nil), 0, nil},
		{"pct legacy", "v=DMARC1; p=reject; pct=0", def(func(r *Record) { r.P, r.PCT = "reject", 0 }), 0, nil},
		{"pct 50", "v=DMARC1; p=reject; pct=50", def(func(r *Record) { r.P, r.PCT = "reject", 50 }), 0, nil},
		{"pct invalid", "v=DMARC1; p=reject; pct=150", def(func(r *Record) { r.P = "reject" }), 1, nil},
		{"invalid adkim defaults", "v=DMARC1; p=reject; adkim=x", def(func(r *Record) { r.P = "reject" }), 1, nil},
		{"invalid t defaults", "v=DMARC1; p=reject; t=yes", def(func(r *Record) { r.P = "reject" }), 1, nil},
		{"invalid psd defaults", "v=DMARC1; p=reject; psd=maybe", def(func(r *Record) { r.P = "reject" }), 1, nil},
		{"invalid fo defaults", "v=DMARC1; p=none; fo=0:1", def(nil), 1, nil},
		{"tag without equals", "v=DMARC1; p=reject; garbage", def(func(r *Record) { r.P = "reject" }), 1, nil},
		{"empty value", "v=DMARC1; p=reject; sp=", def(func(r *Record) { r.P = "reject" }), 1, nil},
		{"invalid URI dropped", "v=DMARC1; p=none; rua=not a uri,mailto:ok@example.com", def(func(r *Record) {
			r.RUA, r.RUALimits = []string{"mailto:ok@example.com"}, []int64{0}
		}), 1, nil},
		{"missing p is none", "v=DMARC1; sp=reject", def(func(r *Record) { r.SP = "reject" }), 0, nil},
		{"invalid p with rua is p=none", "v=DMARC1; p=block; sp=reject; rua=mailto:a@example.com", def(func(r *Record) {
			r.RUA, r.RUALimits = []string{"mailto:a@example.com"}, []int64{0}
		}), 1, nil},
		{"invalid p without rua", "v=DMARC1; p=block", nil, 0, ErrInvalidPolicy},
		{"invalid sp without rua", "v=DMARC1; p=reject; sp=rejected", nil, 0, ErrInvalidPolicy},
		{"invalid np without valid rua", "v=DMARC1; p=reject; np=x; rua=bad", nil, 0, ErrInvalidPolicy},
		{"duplicate tag", "v=DMARC1; p=none; p=reject", nil, 0, ErrSyntax},
		{"duplicate v", "v=DMARC1; v=DMARC1; p=none", nil, 0, ErrSyntax},
		{"not first", "p=reject; v=DMARC1", nil, 0, ErrNotDMARC},
		{"wrong version", "v=DMARC2; p=reject", nil, 0, ErrNotDMARC},
		{"version is case-sensitive", "v=dmarc1; p=reject", nil, 0, ErrNotDMARC},
		{"version prefix", "v=DMARC10; p=reject", nil, 0, ErrNotDMARC},
		{"missing separator", "v=DMARC1 p=reject", nil, 0, ErrNotDMARC},
		{"spf record", "v=spf1 -all", nil, 0, ErrNotDMARC},
		{"empty", "", nil, 0, ErrNotDMARC},
		{"control character", "v=DMARC1; p=reject; rua=mailto:a@b\x00.com", def(func(r *Record) { r.P = "reject" }), 1, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseRecord(tc.txt)
			if tc.err != nil {
				if !errors.Is(err, tc.err) || got != nil {
					t.Fatalf("ParseRecord(%q) = %+v, %v; want error %v", tc.txt, got, err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseRecord(%q): %v", tc.txt, err)
			}
			if len(got.Warnings) != tc.warnings {
				t.Errorf("warnings = %q, want %d", got.Warnings, tc.warnings)
			}
			got.Warnings = nil
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("ParseRecord(%q)\n got %+v\nwant %+v", tc.txt, got, tc.want)
			}
		})
	}
}

func TestRecordTesting(t *testing.T) {
	tests := []struct {
		txt  string
		want bool
	}{
		{"v=DMARC1; p=reject", false},
		{"v=DMARC1; p=reject; t=y", true},
		{"v=DMARC1; p=reject; t=n", false},
		{"v=DMARC1; p=reject; pct=0", true},
		{"v=DMARC1; p=reject; pct=50", false},
		{"v=DMARC1; p=reject; pct=100", false},
		{"v=DMARC1; p=reject; pct=0; t=n", false},
		{"v=DMARC1; p=reject; pct=100; t=y", true},
	}
	for _, tc := range tests {
		r, err := ParseRecord(tc.txt)
		if err != nil {
			t.Fatal(err)
		}
		if r.Testing() != tc.want {
			t.Errorf("%q: Testing() = %v, want %v", tc.txt, r.Testing(), tc.want)
		}
	}
}
