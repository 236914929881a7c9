package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/authmilter/authmilter/internal/testdns"
	"github.com/authmilter/authmilter/keys"
	"github.com/authmilter/authmilter/policy"
)

// scrape returns what /metrics serves.
func scrape(t *testing.T, m *metrics) string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("/metrics: %d %s", rec.Code, rec.Body)
	}
	return rec.Body.String()
}

// series returns the value lines of the metric named name, sorted as the
// exposition format writes them ("name{labels} value").
func series(text, name string) []string {
	var out []string
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, name+"{") || strings.HasPrefix(line, name+" ") {
			out = append(out, line)
		}
	}
	return out
}

func checkSeries(t *testing.T, text string, want map[string][]string) {
	t.Helper()
	for name, w := range want {
		got := series(text, name)
		if strings.Join(got, "\n") != strings.Join(w, "\n") {
			t.Errorf("%s:\n got %q\nwant %q", name, got, w)
		}
	}
}

func TestMetricsOnlyOnItsPath(t *testing.T) {
	h := newMetrics().handler()
	tests := []struct {
		method, path string
		code         int
	}{
		{"GET", "/metrics", 200},
		{"HEAD", "/metrics", 200},
		{"GET", "/metrics?x=1", 200},
		{"GET", "/", 404},
		{"GET", "/metrics/", 404},
		{"GET", "/metricsx", 404},
		{"GET", "/debug/pprof/", 404},
		{"GET", "/favicon.ico", 404},
		{"POST", "/metrics", 405},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(tt.method, tt.path, nil))
			if rec.Code != tt.code {
				t.Errorf("%s %s: %d, want %d", tt.method, tt.path, rec.Code, tt.code)
			}
			if tt.code == 200 && tt.method == "GET" && !strings.Contains(rec.Body.String(), "authmilter_connections_open 0") {
				t.Errorf("GET %s does not serve the metrics", tt.path)
			}
		})
	}
}

func TestMessageDoneMetrics(t *testing.T) {
	m := newMetrics()
	decisions := []struct {
		d      policy.Decision
		failed bool
	}{
		{policy.Decision{Outbound: true, Signatures: 2}, false},
		{policy.Decision{Outbound: true, UnsignedReason: "no_active_key"}, false},
		{policy.Decision{Outbound: true, UnsignedReason: "no_active_key"}, false},
		{policy.Decision{Outbound: true, UnsignedReason: "header_too_large", Action: policy.Reject}, false},
		{policy.Decision{Outbound: true, Signatures: 1, DKIM: []string{"pass"}, SPF: "pass", DMARC: "pass"}, false}, // verify_outbound
		{policy.Decision{DKIM: []string{"fail", "pass"}, SPF: "softfail", DMARC: "pass"}, false},
		{policy.Decision{DKIM: []string{"none"}, SPF: "fail", DMARC: "fail", Action: policy.Reject}, false},
		{policy.Decision{DKIM: []string{"temperror"}, SPF: "temperror", DMARC: "temperror"}, true},
		{policy.Decision{}, false},                                // not evaluated: no results
		{policy.Decision{UnsignedReason: "no_key"}, false},        // inbound: never unsigned
		{policy.Decision{DKIM: []string{"Weird Value\n"}}, false}, // kept to a bounded label
	}
	for _, d := range decisions {
		m.MessageDone(&d.d, d.failed)
	}
	checkSeries(t, scrape(t, m), map[string][]string{
		"authmilter_messages_total": {
			`authmilter_messages_total{action="accept",direction="in"} 5`,
			`authmilter_messages_total{action="accept",direction="out"} 4`,
			`authmilter_messages_total{action="reject",direction="in"} 1`,
			`authmilter_messages_total{action="reject",direction="out"} 1`,
		},
		"authmilter_signatures_total":      {"authmilter_signatures_total 3"},
		"authmilter_internal_errors_total": {"authmilter_internal_errors_total 1"},
		"authmilter_dkim_results_total": {
			`authmilter_dkim_results_total{direction="in",result="fail"} 1`,
			`authmilter_dkim_results_total{direction="in",result="none"} 1`,
			`authmilter_dkim_results_total{direction="in",result="other"} 1`,
			`authmilter_dkim_results_total{direction="in",result="pass"} 1`,
			`authmilter_dkim_results_total{direction="in",result="temperror"} 1`,
			`authmilter_dkim_results_total{direction="out",result="pass"} 1`,
		},
		"authmilter_spf_results_total": {
			`authmilter_spf_results_total{result="fail"} 1`,
			`authmilter_spf_results_total{result="pass"} 1`,
			`authmilter_spf_results_total{result="softfail"} 1`,
			`authmilter_spf_results_total{result="temperror"} 1`,
		},
		"authmilter_dmarc_results_total": {
			`authmilter_dmarc_results_total{result="fail"} 1`,
			`authmilter_dmarc_results_total{result="pass"} 2`,
			`authmilter_dmarc_results_total{result="temperror"} 1`,
		},
		"authmilter_unsigned_total": {
			`authmilter_unsigned_total{reason="header_too_large"} 1`,
			`authmilter_unsigned_total{reason="no_active_key"} 2`,
		},
	})
}

func TestConnectionMetrics(t *testing.T) {
	tests := []struct {
		name   string
		events []string
		open   string
		counts map[string]string
	}{
		{"none", nil, "0", map[string]string{"open": "0", "bad_packet": "0"}},
		{"open and close", []string{"open", "open", "close"}, "1", map[string]string{"open": "2", "close": "1"}},
		{"problems", []string{"refused_limit", "open", "timeout", "close", "open", "bad_packet", "close", "accept_error"}, "0",
			map[string]string{"refused_limit": "1", "timeout": "1", "bad_packet": "1", "accept_error": "1", "open": "2", "close": "2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newMetrics()
			for _, e := range tt.events {
				m.ConnectionEvent(e)
			}
			text := scrape(t, m)
			checkSeries(t, text, map[string][]string{"authmilter_connections_open": {"authmilter_connections_open " + tt.open}})
			for ev, n := range tt.counts {
				want := `authmilter_connection_events_total{event="` + ev + `"} ` + n
				if !strings.Contains(text, want+"\n") {
					t.Errorf("lacks %s in\n%s", want, strings.Join(series(text, "authmilter_connection_events_total"), "\n"))
				}
			}
		})
	}
}

func TestDNSErrorMetrics(t *testing.T) {
	srv := testdns.Start(t)
	srv.Fail("servfail.example", dns.RcodeServerFailure)
	srv.Fail("refused.example", dns.RcodeRefused)
	srv.Drop("drop.example")
	m := newMetrics()
	cfg := policy.DefaultConfig()
	cfg.DNS.Servers = []string{srv.Addr()}
	cfg.DNS.Timeout.Duration = 200 * time.Millisecond
	r, err := newMeteredResolver(cfg, m.dnsError)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"servfail.example", "servfail.example", "refused.example", "drop.example", "nxdomain.example"} {
		r.LookupTXT(context.Background(), name)
	}
	text := scrape(t, m)
	for _, want := range []string{
		`authmilter_dns_errors_total{kind="servfail"} 2`,
		`authmilter_dns_errors_total{kind="refused"} 1`,
		`authmilter_dns_errors_total{kind="timeout"} 1`,
		`authmilter_dns_errors_total{kind="network"} 0`,
	} {
		if !strings.Contains(text, want+"\n") {
			t.Errorf("lacks %s in\n%s", want, strings.Join(series(text, "authmilter_dns_errors_total"), "\n"))
		}
	}
}

// compileKeys compiles a policy over a fresh key folder holding Ed25519
// keys named "domain/selector".
func compileKeys(t *testing.T, ids ...string) *policy.Policy {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "keys")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		domain, sel, _ := strings.Cut(id, "/")
		if _, err := keys.Generate(dir, domain, sel, "ed25519"); err != nil {
			t.Fatal(err)
		}
	}
	cfg, err := policy.ParseConfig("test.toml", []byte("[keys]\ndir = \""+dir+"\"\nrequire_published = false\n"))
	if err != nil {
		t.Fatal(err)
	}
	pol, err := policy.Compile(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	return pol
}

func TestKeyActiveSeries(t *testing.T) {
	m := newMetrics()
	m.keyLimit = 3
	steps := []struct {
		name  string
		keys  []string
		total string
		want  []string
	}{
		{"two domains", []string{"a.example/s1", "b.example/s1"}, "2", []string{
			`authmilter_key_active{algorithm="ed25519-sha256",domain="a.example",selector="s1"} 1`,
			`authmilter_key_active{algorithm="ed25519-sha256",domain="b.example",selector="s1"} 1`,
		}},
		{"rotated: the old key's series is gone", []string{"a.example/s1", "b.example/s1", "b.example/s2"}, "2", []string{
			`authmilter_key_active{algorithm="ed25519-sha256",domain="a.example",selector="s1"} 1`,
			`authmilter_key_active{algorithm="ed25519-sha256",domain="b.example",selector="s2"} 1`,
		}},
		{"above the limit: the total only", []string{"a.example/s1", "b.example/s1", "c.example/s1", "d.example/s1"}, "4", nil},
		{"below again", []string{"c.example/s1"}, "1", []string{
			`authmilter_key_active{algorithm="ed25519-sha256",domain="c.example",selector="s1"} 1`,
		}},
		{"no keys", nil, "0", nil},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			m.reloaded(compileKeys(t, st.keys...))
			checkSeries(t, scrape(t, m), map[string][]string{
				"authmilter_key_active":  st.want,
				"authmilter_active_keys": {"authmilter_active_keys " + st.total},
			})
		})
	}
	if !strings.Contains(scrape(t, m), `authmilter_reloads_total{result="ok"} 5`) {
		t.Error("reloads not counted")
	}
}

// TestNewLogger checks that log.format picks the handler and that the
// decision line's attributes come out of the JSON one as real fields.
func TestNewLogger(t *testing.T) {
	attrs := []slog.Attr{
		slog.String("queue", "4Xk2"), slog.Float64("ms", 1.25), slog.Int("removed_forged_ar", 2),
		slog.Group("spf", slog.String("result", "pass"), slog.String("domain", "example.org")),
	}
	tests := []struct {
		format, level string
		check         func(t *testing.T, out string)
	}{
		{"json", "info", func(t *testing.T, out string) {
			var obj map[string]any
			if err := json.Unmarshal([]byte(out), &obj); err != nil {
				t.Fatalf("not JSON: %v: %s", err, out)
			}
			spf, _ := obj["spf"].(map[string]any)
			if obj["ms"] != 1.25 || obj["removed_forged_ar"] != 2.0 || obj["queue"] != "4Xk2" || spf["result"] != "pass" {
				t.Errorf("JSON fields: %v", obj)
			}
		}},
		{"text", "info", func(t *testing.T, out string) {
			if !regexp.MustCompile(`^time=\S+ level=INFO msg=message queue=4Xk2 ms=1.25 removed_forged_ar=2 spf.result=pass spf.domain=example.org\n$`).MatchString(out) {
				t.Errorf("text line: %q", out)
			}
		}},
		{"text", "warn", func(t *testing.T, out string) {
			if out != "" {
				t.Errorf("info logged at level warn: %q", out)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.format+"/"+tt.level, func(t *testing.T) {
			cfg := policy.DefaultConfig()
			cfg.Log.Format, cfg.Log.Level = tt.format, tt.level
			var buf bytes.Buffer
			newLogger(cfg, io.Writer(&buf)).LogAttrs(context.Background(), slog.LevelInfo, "message", attrs...)
			tt.check(t, buf.String())
		})
	}
}
