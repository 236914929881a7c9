// Package e2e runs authmilter inside real MTAs: a private Postfix instance
// (its own config and queue directories, ports on 127.0.0.1, never the
// system instance) and, where it can run, a private Sendmail started from
// the extracted Debian package. DNS is answered by internal/testdns on a
// random 127.x.y.z:53, delivered mail is caught by an SMTP sink in the test
// process, and signatures are checked with dkimpy and OpenDKIM.
//
// The tests need root (port 53, Postfix's set-gid postdrop, Sendmail) and
// the Debian packages that install-deps.sh installs. A missing tool fails
// the test with the package to install; nothing is skipped.
//
// See README.md for the exact MTA configurations used.
package e2e
