package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestREADMEShowsConfigs keeps README.md's "exact configurations" section
// in step with the files the tests really use.
func TestREADMEShowsConfigs(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{
		"postfix/main.cf", "postfix/master.cf", "dovecot/dovecot.conf",
		"sendmail/authmilter.mc", "sendmail/Sendmail.conf", "authmilter.toml", "dns.zone",
	} {
		b, err := os.ReadFile(filepath.Join("../../testdata/e2e", f))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(readme), "\n"+string(b)+"````\n") {
			t.Errorf("README.md does not show testdata/e2e/%s as it is; copy the file into its fenced block", f)
		}
	}
}
