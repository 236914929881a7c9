package keys

import (
	"strings"
	"testing"
	"time"
)

func TestSelectorSchemeFormat(t *testing.T) {
	feb2009 := time.Date(2009, 2, 10, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name, format, algo string
		taken              []string
		want               string
	}{
		{name: "monthly provider scheme", format: "%b%Y.myesp", algo: "rsa-2048", want: "feb2009.myesp"},
		{name: "second key of the month", format: "%b%Y.myesp", algo: "rsa-2048", taken: []string{"feb2009.myesp"}, want: "feb2009b.myesp"},
		{name: "ed25519 beside rsa without %a", format: "%b%Y.myesp", algo: "ed25519", taken: []string{"feb2009.myesp"}, want: "feb2009b.myesp"},
		{name: "algorithm token", format: "%a-%Y%m", algo: "ed25519", want: "ed-200902"},
		{name: "day and short year", format: "k%y%m%d", algo: "rsa-2048", want: "k090210"},
		{name: "percent literal is not a token", format: "%Y%m_x", algo: "rsa-2048", taken: []string{"200902_x"}, want: "200902b_x"},
		{name: "default date scheme", format: "", algo: "ed25519", want: "2009-02e"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := ValidateSelectorFormat(tt.format); err != nil {
				t.Fatalf("ValidateSelectorFormat: %v", err)
			}
			got, err := SelectorScheme{Format: tt.format}.Next(feb2009, tt.algo, tt.taken, nil, "")
			if err != nil || got != tt.want {
				t.Fatalf("Next = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestValidateSelectorFormatRefuses(t *testing.T) {
	for _, f := range []string{
		"myesp",                          // constant: every key collides
		"%b.myesp",                       // no year: next year's February collides
		"%Y.myesp",                       // no month
		"%Y%m%q",                         // unknown token
		"%Y%m%",                          // lone percent
		"-%Y%m",                          // label starting with '-'
		"%Y%m..x",                        // empty label
		"%Y %m",                          // space
		"%Y%m/x",                         // slash
		strings.Repeat("x", 60) + "%Y%m", // label longer than 63
	} {
		if err := ValidateSelectorFormat(f); err == nil {
			t.Errorf("ValidateSelectorFormat(%q) = nil, want an error", f)
		}
	}
}

func TestSelectorSchemeAlternate(t *testing.T) {
	s := SelectorScheme{Alternate: []string{"s1", "s2"}}
	now := time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		name, algo, newest string
		present, taken     []string
		want               string
		wantErr            bool
	}{
		{name: "first key", algo: "rsa-2048", want: "s1"},
		{name: "after s1", algo: "rsa-2048", newest: "s1", present: []string{"s1"}, want: "s2"},
		{name: "after s2, s1 retired: reused", algo: "rsa-2048", newest: "s2", present: []string{"s2"}, taken: []string{"s1", "s2"}, want: "s1"},
		{name: "after s2, s1 still held", algo: "rsa-2048", newest: "s2", present: []string{"s1", "s2"}, wantErr: true},
		{name: "ed25519 pair", algo: "ed25519", newest: "s1e", present: []string{"s1", "s1e"}, want: "s2e"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.Next(now, tt.algo, tt.taken, tt.present, tt.newest)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("Next = %q, want an error", got)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("Next = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}
