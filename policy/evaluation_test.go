package policy

import (
	"net/netip"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/authmilter/authmilter/internal/testdns"
)

// TestEvaluationRecord checks what an inbound message contributes to
// aggregate reports: the identifiers, auth results, the published policy
// with its rua size limits, and the disposition actually applied with the
// reason it differs from the policy (enforcement off, t=y).
func TestEvaluationRecord(t *testing.T) {
	base := filepath.Join(dkimDir, "01-pass-rsa2048")
	tests := []struct {
		name    string
		dmarc   string
		extra   string
		env     Envelope
		want    func(e *Evaluation)
		wantNil bool
		tamper  bool // break the DKIM signature
	}{
		{name: "pass", dmarc: `v=DMARC1; p=reject; rua=mailto:d@example.com!10m,mailto:x@rep.example.net`,
			env: Envelope{ClientIP: netip.MustParseAddr("::ffff:192.0.2.25"), Helo: "Mail.Example.com.", MailFrom: "alice@example.com",
				Rcpts: []string{"<bob@Example.ORG>"}, QueueID: "Q1"},
			want: func(e *Evaluation) {}},
		{name: "fail, not enforced", dmarc: `v=DMARC1; p=reject; adkim=s; aspf=s; rua=mailto:d@example.com`, tamper: true,
			env: Envelope{ClientIP: netip.MustParseAddr("203.0.113.9"), Helo: "evil.example.net", MailFrom: "",
				Rcpts: []string{"bob@example.org"}, QueueID: "Q2"},
			want: func(e *Evaluation) {
				e.SourceIP = netip.MustParseAddr("203.0.113.9")
				e.Helo, e.EnvelopeFrom, e.QueueID = "evil.example.net", "", "Q2"
				e.SPF = SPFEvaluation{Domain: "evil.example.net", Scope: "helo", Result: "none"}
				e.DKIM[0].Result, e.DKIM[0].HumanResult = "fail", "body hash did not verify"
				e.Published.ADKIM, e.Published.ASPF = "s", "s"
				e.Published.RUA, e.Published.RUALimits = []string{"mailto:d@example.com"}, []int64{0}
				e.Result, e.DKIMAligned, e.SPFAligned = "fail", "fail", "fail"
				e.Overrides = []Override{{Type: OverrideLocalPolicy, Comment: "DMARC enforcement is off (dmarc.enforce = false)"}}
			}},
		{name: "fail, enforced in test mode", dmarc: `v=DMARC1; p=reject; t=y; rua=mailto:d@example.com`, tamper: true,
			extra: "[dmarc]\nenforce = true\n",
			env:   Envelope{ClientIP: netip.MustParseAddr("203.0.113.9"), Helo: "evil.example.net", MailFrom: "x@evil.example.net", QueueID: "Q3"},
			want: func(e *Evaluation) {
				e.SourceIP = netip.MustParseAddr("203.0.113.9")
				e.Helo, e.EnvelopeFrom, e.EnvelopeTo, e.QueueID = "evil.example.net", "evil.example.net", "", "Q3"
				e.SPF = SPFEvaluation{Domain: "evil.example.net", Scope: "mfrom", Result: "none"}
				e.DKIM[0].Result, e.DKIM[0].HumanResult = "fail", "body hash did not verify"
				e.Published.Testing = "y"
				e.Published.RUA, e.Published.RUALimits = []string{"mailto:d@example.com"}, []int64{0}
				e.Result, e.DKIMAligned, e.SPFAligned, e.Disposition = "fail", "fail", "fail", "quarantine"
				e.Overrides = []Override{{Type: OverridePolicyTestMode, Comment: "t=y: policy applied one level lower"}}
			}},
		{name: "no record: nothing to report", dmarc: "", wantNil: true,
			env: Envelope{ClientIP: netip.MustParseAddr("192.0.2.25"), Helo: "mail.example.com", MailFrom: "alice@example.com"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := testdns.Start(t)
			srv.AddZoneText(t, "", readTestFile(t, base+".zone"))
			zone := "$TTL 300\nexample.com. IN TXT \"v=spf1 ip4:192.0.2.0/24 -all\"\n"
			if tt.dmarc != "" {
				zone += "_dmarc.example.com. IN TXT \"" + tt.dmarc + "\"\n"
			}
			srv.AddZoneText(t, "", zone)
			pol := testPolicyWithDNS(t, srv.Addr(), tt.extra)
			header, body, err := SplitMessage([]byte(readTestFile(t, base+".eml")))
			if err != nil {
				t.Fatal(err)
			}
			env := tt.env
			m := pol.Begin(&env, header)
			if tt.tamper {
				body = append(append([]byte(nil), body...), "tampered\r\n"...)
			}
			m.Write(body)
			d := m.Finish()
			if tt.wantNil {
				if d.Evaluation != nil {
					t.Fatalf("Evaluation = %+v, want nil", d.Evaluation)
				}
				return
			}
			got := d.Evaluation
			if got == nil {
				t.Fatal("no Evaluation")
			}
			if got.Time.IsZero() {
				t.Error("Time not set")
			}
			got.Time = got.Time.Truncate(0)
			want := &Evaluation{
				Time: got.Time, QueueID: "Q1", PolicyDomain: "example.com", HeaderFrom: "example.com",
				SourceIP: netip.MustParseAddr("192.0.2.25"), EnvelopeFrom: "example.com", EnvelopeTo: "example.org",
				Helo: "mail.example.com", SPF: SPFEvaluation{Domain: "example.com", Scope: "mfrom", Result: "pass"},
				DKIM:            []DKIMEvaluation{{Domain: "example.com", Selector: "sel", Result: "pass"}},
				Published:       PublishedPolicy{P: "reject", PSD: "u", Testing: "n", ADKIM: "r", ASPF: "r", FO: "0", RUA: []string{"mailto:d@example.com", "mailto:x@rep.example.net"}, RUALimits: []int64{10 << 20, 0}},
				DiscoveryMethod: "treewalk", Result: "pass", DKIMAligned: "pass", SPFAligned: "pass", Disposition: "none",
			}
			tt.want(want)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("Evaluation\n got %+v\nwant %+v", got, want)
			}
		})
	}
}

func TestIsReportMail(t *testing.T) {
	tests := []struct {
		fields []HeaderField
		want   bool
	}{
		{[]HeaderField{{Name: "Subject", Value: " Report Domain: example.com Submitter: google.com Report-ID: 1"}}, true},
		{[]HeaderField{{Name: "subject", Value: "report domain:x"}}, true},
		{[]HeaderField{{Name: "Content-Type", Value: " Multipart/Report; report-type=feedback-report"}}, true},
		{[]HeaderField{{Name: "Subject", Value: "Re: Report Domain: example.com"}}, false},
		{[]HeaderField{{Name: "Subject", Value: "Report"}}, false},
		{[]HeaderField{{Name: "Content-Type", Value: "text/plain"}}, false},
		{nil, false},
	}
	for _, tt := range tests {
		if got := isReportMail(tt.fields); got != tt.want {
			t.Errorf("isReportMail(%+v) = %v, want %v", tt.fields, got, tt.want)
		}
	}
}
