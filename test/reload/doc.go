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
//   - TestMonthlyRotation: cron-style `authmilter rotate` runs over three
//     months against Knot: new keys published by dynamic update, activated
//     by the periodic recheck, old keys retired and their records removed
//     after the grace period, with mail flowing all along.
//
// They need the Debian packages knot (knotd) and, for the rest of the
// module's tests, opendkim-tools, knot-dnsutils and openssl. A missing tool
// fails the test with the package to install; nothing is skipped.
package reload
