package reports

import (
	"context"
	"strings"
	"testing"
	"time"
)

func TestRedactDatabase(t *testing.T) {
	for in, want := range map[string]string{
		"/var/lib/authmilter/reports.db":                      "/var/lib/authmilter/reports.db",
		"postgres://am:s3cret@db.example/reports":             "postgres://am:xxxxx@db.example/reports",
		"postgresql://db.example/reports?password=s3cret&x=1": "postgresql://db.example/reports?password=xxxxx&x=1",
		"postgres://am:s3cret@db.example:5432/reports%zz":     "(unparsable URL)",
	} {
		if got := RedactDatabase(in); got != want {
			t.Errorf("RedactDatabase(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestOpenErrorHidesPassword: a PostgreSQL that cannot be reached makes an
// error that names the database without its password, whether the
// password is in the URL's user part or in a password= parameter.
func TestOpenErrorHidesPassword(t *testing.T) {
	for _, dsn := range []string{
		"postgres://am:s3cret@127.0.0.1:1/reports?connect_timeout=2",
		"postgres://am@127.0.0.1:1/reports?password=s3cret&connect_timeout=2",
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		st, err := Open(ctx, dsn)
		cancel()
		if err == nil {
			st.Close()
			t.Fatalf("Open(%q): no error from a port nobody listens on", dsn)
		}
		if strings.Contains(err.Error(), "s3cret") {
			t.Errorf("Open(%q) error shows the password: %v", dsn, err)
		}
	}
}
