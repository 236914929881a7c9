package web

import (
	"net/http"
	"strings"
	"testing"

	"github.com/authmilter/authmilter/policy"
)

// TestPagesBeforeFirstSnapshot: the daemon listens before its first
// snapshot is built; until then the keys pages say so (503) instead of
// failing, and the overview and DMARC pages work.
func TestPagesBeforeFirstSnapshot(t *testing.T) {
	o := testOptions(t, newClock())
	o.Policy = func() *policy.Policy { return nil }
	h := newTestHandler(t, o)
	for _, c := range []struct {
		target string
		status int
		want   string
	}{
		{"/", http.StatusOK, "1.2.3-test"},
		{"/keys", http.StatusServiceUnavailable, "starting"},
		{"/keys?state=problem&q=x", http.StatusServiceUnavailable, "starting"},
		{"/keys?format=json", http.StatusServiceUnavailable, `"error"`},
		{"/keys/example.com", http.StatusServiceUnavailable, "starting"},
		{"/dmarc", http.StatusOK, "example.com"},
	} {
		rec := get(h, "GET", c.target)
		if rec.Code != c.status || !strings.Contains(rec.Body.String(), c.want) {
			t.Errorf("GET %s before the first snapshot: %d, want %d with %q:\n%.300s", c.target, rec.Code, c.status, c.want, rec.Body.String())
		}
	}
}
