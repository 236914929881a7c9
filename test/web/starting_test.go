package web_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/authmilter/authmilter/internal/daemontest"
	"github.com/authmilter/authmilter/keys"
)

// TestPagesWhileStarting: while the daemon's first snapshot waits for
// DNS (the key records do not answer), every page gets an answer: 200,
// or 503 while there is nothing to show; never a dropped connection or a
// panic.
func TestPagesWhileStarting(t *testing.T) {
	w := newWorld(t)
	names := []string{keys.RecordName(goodDomain, goodRSA), keys.RecordName(goodDomain, goodEd),
		keys.RecordName(missingDomain, otherSelector), keys.RecordName(mismatchDomain, otherSelector)}
	for _, n := range names {
		w.dns.Drop(n)
	}
	defer func() {
		for _, n := range names {
			w.dns.Clear(n)
		}
	}()
	// A long DNS timeout keeps the daemon starting while the pages are
	// asked, however busy the machine.
	d := w.start(t, "starting", daemonOptions{dnsTimeout: "20s"})
	starting := 0
	for _, path := range []string{"/", "/keys", "/keys/" + goodDomain, "/dmarc", "/dmarc/" + goodDomain, "/?format=json", "/keys?format=json"} {
		status, body, err := d.fetch(path, nil)
		if err != nil || (status != http.StatusOK && status != http.StatusServiceUnavailable) {
			t.Errorf("GET %s while starting: status %d, %v: %.300s", path, status, err, body)
		}
		if status == http.StatusServiceUnavailable && strings.HasPrefix(path, "/keys") {
			starting++
		}
	}
	// The key records do not answer, so the first snapshot waits for
	// dns.timeout: the keys pages were asked before it.
	if starting == 0 {
		t.Errorf("no keys page answered 503 while the daemon was starting: the test missed its moment")
	}
	if strings.Contains(d.Logs.String(), "panic") {
		t.Errorf("the daemon panicked while starting:\n%s", daemontest.Tail(d.Logs.String(), 40))
	}
}
