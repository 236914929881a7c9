package reports

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/authmilter/authmilter/policy"
)

// entryTestEvaluation is a complete evaluation, as policy makes them.
func entryTestEvaluation() *policy.Evaluation {
	return &policy.Evaluation{
		Time:         time.Date(2026, 3, 14, 23, 59, 59, 0, time.FixedZone("CET", 3600)),
		QueueID:      "4Xk2",
		PolicyDomain: "example.com",
		HeaderFrom:   "news.example.com",
		SourceIP:     netip.MustParseAddr("::ffff:192.0.2.7"),
		EnvelopeFrom: "bounce.example.com",
		EnvelopeTo:   "example.net",
		Helo:         "mail.example.com",
		SPF:          policy.SPFEvaluation{Domain: "bounce.example.com", Scope: "mfrom", Result: "pass"},
		DKIM: []policy.DKIMEvaluation{
			{Domain: "example.com", Selector: "2026-03", Result: "pass"},
			{Domain: "esp.example", Selector: "s1", Result: "fail", HumanResult: "bad signature"},
		},
		Published: policy.PublishedPolicy{
			P: "reject", SP: "quarantine", NP: "reject", PSD: "u", Testing: "n", ADKIM: "r", ASPF: "s", FO: "1",
			RUA: []string{"mailto:dmarc@example.com"}, RUALimits: []int64{1 << 20},
		},
		DiscoveryMethod: "treewalk",
		Result:          "pass",
		DKIMAligned:     "pass",
		SPFAligned:      "pass",
		Disposition:     "none",
		Overrides:       []policy.Override{{Type: policy.OverrideLocalPolicy, Comment: "enforcement off"}},
	}
}

func TestEntryFromEvaluation(t *testing.T) {
	e := entryTestEvaluation()
	got, ok := EntryFromEvaluation(e)
	if !ok {
		t.Fatal("a complete evaluation was not recordable")
	}
	want := Entry{
		Row: Row{
			Domain: "example.com", Day: time.Date(2026, 3, 14, 0, 0, 0, 0, time.UTC),
			SourceIP: netip.MustParseAddr("192.0.2.7"), Count: 1,
			HeaderFrom: "news.example.com", EnvelopeFrom: "bounce.example.com", EnvelopeTo: "example.net",
			Helo: "mail.example.com", Disposition: "none", DKIMAligned: "pass", SPFAligned: "pass",
			Overrides: []Override{{Type: "local_policy", Comment: "enforcement off"}},
			DKIM: []DKIMAuth{
				{Domain: "example.com", Selector: "2026-03", Result: "pass"},
				{Domain: "esp.example", Selector: "s1", Result: "fail", HumanResult: "bad signature"},
			},
			SPF: []SPFAuth{{Domain: "bounce.example.com", Scope: "mfrom", Result: "pass"}},
		},
		Policy: Policy{
			Domain: "example.com", DiscoveryMethod: "treewalk",
			P: "reject", SP: "quarantine", NP: "reject", PSD: "u", Testing: "n", ADKIM: "r", ASPF: "s", FO: "1",
			RUA: []string{"mailto:dmarc@example.com"}, RUALimits: []int64{1 << 20},
		},
		Seen: e.Time.UTC(),
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("entry:\n got %+v\nwant %+v", got, want)
	}
	// The entry does not share the evaluation's lists.
	e.Published.RUA[0] = "changed"
	if got.Policy.RUA[0] == "changed" {
		t.Error("the entry shares the evaluation's rua list")
	}
}

func TestEntryFromEvaluationSkips(t *testing.T) {
	tests := []struct {
		name   string
		change func(*policy.Evaluation)
	}{
		{"report mail", func(e *policy.Evaluation) { e.IsReport = true }},
		{"no policy domain", func(e *policy.Evaluation) { e.PolicyDomain = "" }},
		{"no source IP", func(e *policy.Evaluation) { e.SourceIP = netip.Addr{} }},
	}
	if _, ok := EntryFromEvaluation(nil); ok {
		t.Error("nil was recordable")
	}
	for _, tc := range tests {
		e := entryTestEvaluation()
		tc.change(e)
		if _, ok := EntryFromEvaluation(e); ok {
			t.Errorf("%s: recordable", tc.name)
		}
	}
}

func TestEntryFromEvaluationEdges(t *testing.T) {
	e := entryTestEvaluation()
	e.Time = time.Time{}
	e.SPF = policy.SPFEvaluation{}
	e.DKIM, e.Overrides = nil, nil
	before := time.Now().UTC()
	got, ok := EntryFromEvaluation(e)
	if !ok {
		t.Fatal("not recordable")
	}
	if got.Seen.Before(before) || got.Row.Day != DayOf(got.Seen) {
		t.Errorf("an evaluation without a time: seen %v, day %v, want now", got.Seen, got.Row.Day)
	}
	if got.Row.SPF != nil || got.Row.DKIM != nil || got.Row.Overrides != nil {
		t.Errorf("empty results became %+v %+v %+v, want nil lists", got.Row.SPF, got.Row.DKIM, got.Row.Overrides)
	}
}

func TestEntryFromEvaluationBoundsHostileInput(t *testing.T) {
	e := entryTestEvaluation()
	e.Helo = strings.Repeat("h", 100000)
	e.HeaderFrom = "\xff" + strings.Repeat("x", 300)
	for i := 0; i < 10000; i++ {
		e.DKIM = append(e.DKIM, policy.DKIMEvaluation{Domain: "d", Selector: "s", Result: "fail", HumanResult: strings.Repeat("y", 5000)})
	}
	got, ok := EntryFromEvaluation(e)
	if !ok {
		t.Fatal("not recordable")
	}
	if len(got.Row.Helo) != maxNameBytes || len(got.Row.HeaderFrom) > maxNameBytes || !strings.HasPrefix(got.Row.HeaderFrom, "\uFFFD") {
		t.Errorf("helo %d bytes, header from %d bytes %.8q", len(got.Row.Helo), len(got.Row.HeaderFrom), got.Row.HeaderFrom)
	}
	if len(got.Row.DKIM) != maxDKIMResults || len(got.Row.DKIM[5].HumanResult) != maxHumanBytes {
		t.Errorf("%d DKIM results, human result of %d bytes", len(got.Row.DKIM), len(got.Row.DKIM[5].HumanResult))
	}
}

func TestBoundText(t *testing.T) {
	tests := []struct {
		in    string
		limit int
		want  string
	}{
		{"example.com", 255, "example.com"},
		{"abcdef", 3, "abc"},
		{"aé", 2, "a"}, // é is two bytes: not cut in half
		{"日本", 5, "日"},
		{"a\x00b", 10, "ab"},
		{"a\xffb", 10, "a\uFFFDb"},
		{"", 10, ""},
	}
	for _, tc := range tests {
		if got := boundText(tc.in, tc.limit); got != tc.want {
			t.Errorf("boundText(%q, %d) = %q, want %q", tc.in, tc.limit, got, tc.want)
		}
	}
}
