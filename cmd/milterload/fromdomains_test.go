package main

import (
	"os"
	"path/filepath"
	"testing"
)

// TestFromDomains checks that -from-domains gives each message the next
// domain in turn: the milter signs example.com only, so with two domains
// alternating, half the messages come back signed.
func TestFromDomains(t *testing.T) {
	addr := startMilter(t)
	list := filepath.Join(t.TempDir(), "domains")
	if err := os.WriteFile(list, []byte("example.com\nunsigned.example\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := parseFlags([]string{"-addr", "inet:" + addr, "-c", "1", "-n", "10", "-d", "60s", "-expect-sign", "-from-domains", list})
	if err != nil {
		t.Fatal(err)
	}
	res, err := run(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.Expected != 5 || res.ErrorKinds["expect"] != 5 || res.Errors != 5 {
		t.Fatalf("signed %d, unsigned %d, errors %d (%v), want 5/5/5; first error: %s",
			res.Expected, res.ErrorKinds["expect"], res.Errors, res.ErrorKinds, res.FirstError)
	}
}

func TestFromDomainsEmptyList(t *testing.T) {
	list := filepath.Join(t.TempDir(), "domains")
	if err := os.WriteFile(list, []byte("\n \n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := parseFlags([]string{"-addr", "inet:127.0.0.1:1", "-from-domains", list}); err == nil {
		t.Fatal("an empty -from-domains list was accepted")
	}
}
