package daemontest

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestTail(t *testing.T) {
	if got := Tail("a\nb\nc\n", 2); got != "b\nc" {
		t.Errorf("Tail = %q", got)
	}
	if got := Tail("a", 5); got != "a" {
		t.Errorf("Tail short = %q", got)
	}
}

func TestWaitLog(t *testing.T) {
	logs := "one x=1\ntwo msg=listening y=2\nthree msg=listening z=3\n"
	line, _ := WaitLog(t, func() string { return logs }, nil, "msg=listening", 0, time.Second, time.Millisecond)
	if line != "two msg=listening y=2" {
		t.Errorf("from 0: %q", line)
	}
	from := strings.Index(logs, "three")
	if line, _ = WaitLog(t, func() string { return logs }, nil, "listening", from, time.Second, time.Millisecond); line != "three msg=listening z=3" {
		t.Errorf("after an offset: %q", line)
	}
}

func TestMetric(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "# HELP x\nauthmilter_reloads_total{result=\"ok\"} 3\nauthmilter_reloads_total{result=\"error\"} 1.5")
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	for series, want := range map[string]float64{`authmilter_reloads_total{result="ok"}`: 3, `authmilter_reloads_total{result="error"}`: 1.5, "absent": 0} {
		if got, err := Metric(addr, series); err != nil || got != want {
			t.Errorf("Metric(%s) = %v, %v; want %v", series, got, err, want)
		}
	}
}
