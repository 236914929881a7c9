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
//   - TestA11yCheck: the accessibility checker finds each violation of a
//     page that breaks its rules, and none in a page that follows them.
//
// They need Debian's chromium and fonts-dejavu-core
// (scripts/install-deps.sh); $CHROMIUM names another Chromium binary. A
// missing browser fails the tests with the package to install.
package web
