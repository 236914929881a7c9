// Package reports holds black-box tests of DMARC aggregate reports with
// the real binary: they build authmilter, start `authmilter run` daemons
// with a config in a temporary folder, drive them with a Postfix-like
// milter client (internal/miltertest) while DNS is answered by
// internal/testdns, and run `authmilter reports ...` as cron would.
//
// What they show:
//
//   - TestFleetSharesOnePostgreSQL: two daemons record into one private
//     PostgreSQL (internal/pgtest, started once for the package): their
//     rows add up per source IP and results; two `reports send` processes
//     run at the same time against one SMTP sink, and exactly one report
//     per reporting domain arrives, valid against RFC 9990's schema
//     (xmllint) with the counts that were sent. Then PostgreSQL is stopped
//     under the running daemons: mail still gets its
//     Authentication-Results (no tempfail), the losses are counted in
//     /metrics (authmilter_reports_failed_total), and recording resumes
//     once PostgreSQL is back.
//   - TestDaemonStartsWithoutStateFolder: a store in a folder that does
//     not exist (the default /var/lib/authmilter/reports.db on a machine
//     without that folder) is logged once with the error, the daemon
//     serves, and the evaluations are counted as not recorded.
//   - TestReloadKeepsRecorder: a SIGHUP that changes [reports] is logged as
//     needing a restart, and recording goes on into the store the daemon
//     started with.
//   - TestDaemonSendsAtSendAt: with reports.send_at past today, the daemon
//     sends yesterday's reports as it starts, prunes rows older than
//     reports.keep, counts authmilter_reports_sent_total, and a restart
//     sends nothing twice.
//   - TestStopIsBoundedWhenTheDatabaseHangs: a database that accepts
//     connections and never answers holds neither mail nor SIGTERM (the
//     queue gets 10 s, then what is lost is logged).
//
// They need the Debian packages postgresql and libxml2-utils (xmllint). A
// missing tool fails the test with the package to install; nothing is
// skipped. Run them as root or as a user that may run PostgreSQL's
// binaries; as root, PostgreSQL runs as the postgres user.
package reports
