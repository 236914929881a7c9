package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/authmilter/authmilter/internal/loadmsg"
	"github.com/authmilter/authmilter/internal/miltertest"
	"github.com/authmilter/authmilter/milter"
	"github.com/authmilter/authmilter/policy"
)

// startMilter runs authmilter's milter server on 127.0.0.1:0 signing
// example.com with the RSA-2048 test key (no DNS needed: keys are not
// required to be published).
func startMilter(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "example.com"), 0o700); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join("..", "..", "testdata", "keys", "rsa2048-pkcs8.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "example.com", "sel.pem"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := policy.ParseConfig("test.toml", []byte("authserv_id = \"mx.test\"\n[keys]\ndir = \""+dir+
		"\"\nrequire_published = false\n[dns]\nservers = [\"127.0.0.1:1\"]\ntimeout = \"100ms\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	pol, err := policy.Compile(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	var cur atomic.Pointer[policy.Policy]
	cur.Store(pol)
	srv := &milter.Server{Policy: cur.Load, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if err := srv.Listen([]string{"inet:127.0.0.1:0"}, 0o660, ""); err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return srv.Addrs()[0].String()
}

func TestRunCountsEveryMessage(t *testing.T) {
	addr := startMilter(t)
	cfg, err := parseFlags([]string{"-addr", "inet:" + addr, "-c", "2", "-per-conn", "3", "-n", "20", "-d", "60s", "-size", "4KiB", "-expect-sign"})
	if err != nil {
		t.Fatal(err)
	}
	res, err := run(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.Messages != 20 || res.Total != 20 || res.Errors != 0 || res.Expected != 20 {
		t.Fatalf("messages %d total %d errors %d signed %d, want 20/20/0/20; first error: %s",
			res.Messages, res.Total, res.Errors, res.Expected, res.FirstError)
	}
	// 20 messages, 3 per connection, on 2 workers: at least 7 connections.
	if res.Connections < 7 {
		t.Errorf("%d connections, want at least 7", res.Connections)
	}
	if res.Latency.P50 <= 0 || res.Latency.P99 < res.Latency.P50 || res.Latency.Max < res.Latency.P99 {
		t.Errorf("inconsistent percentiles: %+v", res.Latency)
	}
	if !strings.Contains(res.Negotiated, "version=6") {
		t.Errorf("negotiated %q, want version 6", res.Negotiated)
	}
}

func TestRunReportsMissingField(t *testing.T) {
	addr := startMilter(t)
	// Mail from a domain without a key is accepted unsigned.
	cfg, err := parseFlags([]string{"-addr", addr, "-c", "1", "-n", "4", "-d", "60s", "-mail-from", "a@nokey.example", "-expect-sign"})
	if err != nil {
		t.Fatal(err)
	}
	res, err := run(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.Errors != 4 || res.ErrorKinds["expect"] != 4 || res.Messages != 0 {
		t.Fatalf("errors %d kinds %v messages %d, want 4 expect errors", res.Errors, res.ErrorKinds, res.Messages)
	}
	if !strings.Contains(res.FirstError, "DKIM-Signature") {
		t.Errorf("first error %q does not name the field", res.FirstError)
	}
}

func TestExpectValue(t *testing.T) {
	addr := startMilter(t)
	for _, tc := range []struct {
		value  string
		errors int
	}{{"a=rsa-sha256", 0}, {"a=ed25519-sha256", 3}} {
		cfg, err := parseFlags([]string{"-addr", addr, "-n", "3", "-expect-header", "dkim-signature", "-expect-value", tc.value})
		if err != nil {
			t.Fatal(err)
		}
		res, err := run(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if res.Errors != tc.errors {
			t.Errorf("-expect-value %s: %d errors, want %d (%s)", tc.value, res.Errors, tc.errors, res.FirstError)
		}
	}
}

func TestParseFlagsBounds(t *testing.T) {
	for _, args := range [][]string{
		{},                                 // no -addr
		{"-addr", "x:1", "-d", "0"},        // unbounded
		{"-addr", "x:1", "-c", "0"},        // no workers
		{"-addr", "x:1", "-warmup", "20s"}, // warm-up longer than the run
		{"-addr", "x:1", "-expect-value", "pass"},
		{"-addr", "nonsense"},
	} {
		if _, err := parseFlags(args); err == nil {
			t.Errorf("parseFlags(%q) succeeded", args)
		}
	}
}

func TestParseAddr(t *testing.T) {
	for in, want := range map[string]string{
		"inet:127.0.0.1:8891": "tcp 127.0.0.1:8891",
		"inet:8891@127.0.0.1": "tcp 127.0.0.1:8891",
		"inet6:8891@[::1]":    "tcp [::1]:8891",
		"127.0.0.1:8891":      "tcp 127.0.0.1:8891",
		"unix:/run/m.sock":    "unix /run/m.sock",
		"local:/run/m.sock":   "unix /run/m.sock",
		"/run/m.sock":         "unix /run/m.sock",
	} {
		n, a, err := parseAddr(in)
		if err != nil || n+" "+a != want {
			t.Errorf("parseAddr(%q) = %q %q %v, want %q", in, n, a, err, want)
		}
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int{"4096": 4096, "4k": 4096, "4KiB": 4096, "1MiB": 1 << 20, "2m": 2 << 20, "100B": 100} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "x", "-1", "0", "1.5k"} {
		if _, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) succeeded", in)
		}
	}
}

func TestGenerateMessage(t *testing.T) {
	for _, size := range []int{400, 4 << 10, 1 << 20} {
		msg := loadmsg.Generate(size, "milterload", "example.com", "example.org")
		if len(msg) != size {
			t.Errorf("size %d: got %d bytes", size, len(msg))
		}
		m := miltertest.SplitMessage(msg, false)
		if len(m.Fields) != 8 || !m.Separator || len(m.Body) == 0 {
			t.Errorf("size %d: %d fields, separator %v, body %d bytes", size, len(m.Fields), m.Separator, len(m.Body))
		}
		if !strings.HasSuffix(string(msg), "\r\n") || strings.Contains(strings.ReplaceAll(string(msg), "\r\n", ""), "\n") {
			t.Errorf("size %d: line ends are not all CRLF", size)
		}
	}
}
