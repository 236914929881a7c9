// Package web holds the browser tests of the daemon's status pages
// ([web] listen): they build the real authmilter binary, give it a key
// table published (or not) in a real DNS server on 127.0.0.1
// (internal/testdns) and a reports store with imported and recorded
// DMARC results, start `authmilter run`, and load every page in headless
// Chromium (internal/browsertest): the content an admin reads, no console
// error (a Content-Security-Policy violation is one), an accessibility
// check in the browser (testdata/a11y.js), and full-page screenshots at
// 1280 and 390 pixels into test/web/screenshots/ (kept when a test fails;
// ignored by git).
//
// What they show:
//
//   - TestStatusPages: issue 15's "done when". The key table has
//     good.example (RSA and Ed25519 keys, published and active, and a
//     retired key whose record is still in DNS), missing.example (no
//     record: inactive, with a warning) and mismatch.example (the record
//     of another key); the store has two organisations' reports about
//     good.example (testdata/reports, dated yesterday; a failing source,
//     203.0.113.7, with the biggest volume) and the daemon records the
//     inbound mail the test sends through its milter. The overview shows
//     the version, the last reload (ok, after a SIGHUP) and the messages
//     as /metrics counts them; /keys, /keys?q=missing and
//     /keys/good.example each key's state, "active" or why not, and the
//     warnings; /dmarc, /dmarc/good.example (both sides) the domains, the
//     failing source first with its volume per organisation, the
//     organisations' charts. The JSON forms agree with what the browser
//     showed. With [web] password_file every page is 401 without (or with
//     a wrong) login and loads with it, and with token_file a bearer
//     token opens them too; with the store in a folder that
//     does not exist the DMARC pages show p.store-error (503) while the
//     overview and the keys work. A script put into a page does not run
//     (the Content-Security-Policy holds) and the browser reports it. An
//     unknown page (404) and malformed parameters (400) give a readable,
//     accessible error page with the reason, and the same as JSON. At 390
//     pixels no page is wider than the window.
//   - TestPagesWhileStarting: while the first snapshot waits for DNS (the
//     key records do not answer), every page answers (the keys pages 503,
//     "starting"); no dropped connection, no panic.
//   - TestA11yCheck: the accessibility checker finds each violation of a
//     page that breaks its rules, and none in a page that follows them.
//
// They need Debian's chromium and fonts-dejavu-core
// (scripts/install-deps.sh); $CHROMIUM names another Chromium binary. A
// missing browser fails the tests with the package to install.
package web
