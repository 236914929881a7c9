// Package reload holds black-box tests of key rotation and hot reload: they
// build the real authmilter binary, start `authmilter run` with a config
// in a temporary directory, drive it with a Postfix-like milter client
// (internal/miltertest) while DNS is answered by internal/testdns or by a
// real authoritative server that accepts RFC 2136 updates (Knot DNS, see
// keys/publish/publishtest), and send it signals.
//
// What they show:
//
//   - TestReloadUnderLoad: thousands of messages over concurrent milter
//     connections while SIGHUP arrives every 50 ms, a new key is added
//     (unpublished: never used), the config is broken and restored (the old
//     keys keep signing, the failure is logged and counted), then the new
//     key is published: no message fails or goes unsigned, every signature
//     verifies, and every message begun after the switch was logged carries
//     the new selector.
//   - TestFailedReloads: each kind of broken reload keeps the old snapshot.
//   - TestDNSOutageKeepsKeys: a DNS failure during a reload does not
//     deactivate published keys; a removed record does.
//   - TestReloadRefusesWhatWouldStopSigning: an empty config, a missing or
//     non-folder keys.dir, a key folder emptied while keys were active are
//     refused (and fail `authmilter check`); one domain folder removed
//     takes effect.
//   - TestBadKeyFiles: a FIFO named like a key, a key owned by another
//     user, a folder writable by others: refused with the path, never a
//     hang.
//   - TestSIGTERMDuringSlowReload: SIGTERM stops the daemon within
//     shutdown_timeout while a reload waits on DNS that does not answer.
//   - TestStartWithDNSDown: the daemon listens at once with DNS down,
//     signs with the publication state it saved at its last run, retries
//     keys in temperror within seconds, and defers mail meanwhile with
//     outbound.on_unsigned = "tempfail".
//   - TestSIGHUPSettings: log.level, log.format and metrics.listen apply
//     on SIGHUP; listen and socket_mode are named as needing a restart.
//   - TestMonthlyRotation: cron-style `authmilter rotate` runs over three
//     months against Knot: new keys published by dynamic update, activated
//     by the periodic recheck, old keys retired and their records removed
//     after the grace period, with mail flowing all along.
//
// They need the Debian packages knot (knotd) and, for the rest of the
// module's tests, opendkim-tools, knot-dnsutils and openssl. A missing tool
// fails the test with the package to install; nothing is skipped.
package reload
