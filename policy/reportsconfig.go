package policy

import (
	"fmt"
	"net"
	"net/mail"
	"strings"
	"time"
)

// ReportsConfig is [reports]: DMARC aggregate reports (RFC 9990). The
// daemon records every inbound DMARC evaluation into a store; reports are
// generated from it per reporting domain and whole UTC day, and mailed to
// the rua addresses of the domain's DMARC record.
type ReportsConfig struct {
	// Record turns recording of inbound evaluations on. Default true.
	Record bool `toml:"record"`
	// Database is the store: a file path for the embedded SQLite store
	// (default "/var/lib/authmilter/reports.db"), or a "postgres://" or
	// "postgresql://" URL for a PostgreSQL database that several MX hosts
	// share.
	Database string `toml:"database"`
	// Keep is how long recorded rows, imported reports and the record of
	// sent reports are kept. Default "30d".
	Keep Duration `toml:"keep"`
	// SendAt, when set ("HH:MM", UTC), makes the daemon send the previous
	// UTC day's reports itself every day at that time. Default "" (off:
	// use `authmilter reports send` from cron).
	SendAt string `toml:"send_at"`
	// OrgName is the report's org_name. Default: authserv_id.
	OrgName string `toml:"org_name"`
	// Email is the report's contact address (report_metadata email) and
	// the From of report mail. Default "postmaster@<authserv_id>".
	Email string `toml:"email"`
	// ExtraContactInfo is the report's optional extra_contact_info.
	ExtraContactInfo string `toml:"extra_contact_info"`
	// SMTP is the host:port of the MTA that report mail is handed to.
	// Default "127.0.0.1:25".
	SMTP string `toml:"smtp"`
	// Sendmail, when set, is the sendmail-compatible command (e.g.
	// "/usr/sbin/sendmail") used instead of SMTP.
	Sendmail string `toml:"sendmail"`
	// QueueSize bounds the evaluations waiting to be written; beyond it
	// they are dropped and counted, so mail never waits for the store.
	// Default 10000.
	QueueSize int `toml:"queue_size"`
	// MaxReportSize bounds one report message's size in bytes when the
	// rua URI gives no limit of its own. Default 10 MiB.
	MaxReportSize int64 `toml:"max_report_size"`
}

// DefaultReportsConfig is [reports] when the file does not set it.
func DefaultReportsConfig() ReportsConfig {
	return ReportsConfig{
		Record:        true,
		Database:      "/var/lib/authmilter/reports.db",
		Keep:          Duration{30 * 24 * time.Hour},
		SMTP:          "127.0.0.1:25",
		QueueSize:     10000,
		MaxReportSize: 10 << 20,
	}
}

// IsPostgres tells whether Database names a PostgreSQL database.
func (r *ReportsConfig) IsPostgres() bool {
	return strings.HasPrefix(r.Database, "postgres://") || strings.HasPrefix(r.Database, "postgresql://")
}

// ReportsContact is reports.email, or postmaster at the authserv-id.
func (c *Config) ReportsContact() string {
	if c.Reports.Email != "" {
		return c.Reports.Email
	}
	return "postmaster@" + c.AuthservID
}

// ReportsOrgName is reports.org_name, or the authserv-id.
func (c *Config) ReportsOrgName() string {
	if c.Reports.OrgName != "" {
		return c.Reports.OrgName
	}
	return c.AuthservID
}

// SendAtTime parses SendAt into hours and minutes after midnight UTC.
func (r *ReportsConfig) SendAtTime() (time.Duration, bool, error) {
	if r.SendAt == "" {
		return 0, false, nil
	}
	var h, m int
	if n, err := fmt.Sscanf(r.SendAt, "%d:%d", &h, &m); err != nil || n != 2 || h < 0 || h > 23 || m < 0 || m > 59 ||
		fmt.Sprintf("%02d:%02d", h, m) != r.SendAt {
		return 0, false, fmt.Errorf("must be HH:MM (UTC), got %q", r.SendAt)
	}
	return time.Duration(h)*time.Hour + time.Duration(m)*time.Minute, true, nil
}

func (r *ReportsConfig) validate() []error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("reports.%s: "+format, append([]any{key}, args...)...))
	}
	if r.Database == "" {
		bad("database", "must not be empty (a file path or a postgres:// URL)")
	} else if strings.Contains(r.Database, "://") && !r.IsPostgres() {
		bad("database", "only file paths and postgres:// URLs are supported, got %q", r.Database)
	}
	if r.Keep.Duration < 24*time.Hour {
		bad("keep", "must be at least 1d")
	}
	if _, _, err := r.SendAtTime(); err != nil {
		bad("send_at", "%v", err)
	}
	if r.Email != "" {
		if a, err := mail.ParseAddress(r.Email); err != nil || a.Name != "" || a.Address != r.Email {
			bad("email", "%q is not a plain mail address", r.Email)
		}
	}
	if strings.ContainsAny(r.OrgName+r.ExtraContactInfo, "\r\n") {
		bad("org_name", "must be one line")
	}
	if r.Sendmail == "" {
		if host, port, err := net.SplitHostPort(r.SMTP); err != nil || host == "" || port == "" {
			bad("smtp", "must be host:port, got %q", r.SMTP)
		}
	}
	if r.QueueSize < 1 {
		bad("queue_size", "must be at least 1, got %d", r.QueueSize)
	}
	if r.MaxReportSize < 10000 {
		bad("max_report_size", "must be at least 10000 bytes, got %d", r.MaxReportSize)
	}
	return errs
}
