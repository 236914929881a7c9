package web

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/authmilter/authmilter/policy"
)

// startTest starts a server on a free loopback port with at most maxConns
// connections.
func startTest(t *testing.T, maxConns int) *Server {
	t.Helper()
	o := testOptions(t, newClock())
	o.Config.Listen = "127.0.0.1:0"
	o.Config.MaxConnections = maxConns
	s, err := Start(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// fetch GETs path from s with a generous timeout.
func fetch(ctx context.Context, s *Server, path string) (int, string, error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+s.Addr().String()+path, nil)
	if err != nil {
		return 0, "", err
	}
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// TestServe: Start serves the pages over TCP, with the security headers.
func TestServe(t *testing.T) {
	s := startTest(t, 4)
	status, body, err := fetch(context.Background(), s, "/keys")
	if err != nil || status != 200 || !strings.Contains(body, `<table id="keys">`) {
		t.Fatalf("status %d, err %v", status, err)
	}
}

// TestSlowClient: clients that send half a request and never read hold
// their own connection slot; another request is still served.
func TestSlowClient(t *testing.T) {
	s := startTest(t, 4)
	for i := 0; i < 2; i++ {
		c, err := net.Dial("tcp", s.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		fmt.Fprintf(c, "GET /keys HTTP/1.1\r\nHost: x\r\n") // and nothing more
	}
	// One that asks for a page and never reads the answer.
	c, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	for i := 0; i < 50; i++ {
		fmt.Fprintf(c, "GET /keys?per=500 HTTP/1.1\r\nHost: x\r\n\r\n")
	}
	// Three of four slots are held; the fourth serves the next request
	// while they hang.
	done := make(chan error, 1)
	go func() {
		status, _, err := fetch(context.Background(), s, "/")
		if err == nil && status != 200 {
			err = fmt.Errorf("status %d", status)
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(90 * time.Second):
		t.Fatal("a request was not served while slow clients held their connections")
	}
}

// TestMaxConnections: with max_connections = 1, a second connection is
// not served while the first is held, and is once it is released.
func TestMaxConnections(t *testing.T) {
	s := startTest(t, 1)
	hold, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(hold, "GET / HTTP/1.1\r\nHost: x\r\n") // half a request
	// Make sure the server took the first connection: a full request on
	// it would be answered, so ask on a second one first.
	served := make(chan error, 1)
	go func() {
		status, _, err := fetch(context.Background(), s, "/")
		if err == nil && status != 200 {
			err = fmt.Errorf("status %d", status)
		}
		served <- err
	}()
	select {
	case err := <-served:
		t.Fatalf("a second connection was served while the only slot was held (%v)", err)
	case <-time.After(500 * time.Millisecond):
	}
	hold.Close()
	select {
	case err := <-served:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(90 * time.Second):
		t.Fatal("the waiting connection was never served")
	}
}

// TestStartErrors: a port in use and a missing policy are errors.
func TestStartErrors(t *testing.T) {
	s := startTest(t, 2)
	o := testOptions(t, newClock())
	o.Config.Listen = s.Addr().String()
	if s2, err := Start(o); err == nil {
		s2.Close()
		t.Error("Start on a port in use succeeded")
	}
	o.Config.Listen = ""
	if _, err := Start(o); err == nil {
		t.Error("Start without web.listen succeeded")
	}
	o.Config.Listen, o.Policy = "127.0.0.1:0", nil
	if _, err := Start(o); err == nil {
		t.Error("Start without a policy succeeded")
	}
}

// TestCloseStops: after Close the port is closed, the store closed, and
// Close again is harmless.
func TestCloseStops(t *testing.T) {
	o := testOptions(t, newClock())
	o.Config = policy.DefaultWebConfig()
	o.Config.Listen = "127.0.0.1:0"
	s, err := Start(o)
	if err != nil {
		t.Fatal(err)
	}
	if status, _, err := fetch(context.Background(), s, "/dmarc"); err != nil || status != 200 {
		t.Fatalf("dmarc: %d %v", status, err)
	}
	st := s.h.store.store.(*fakeStore)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if !st.closed {
		t.Error("the store is still open")
	}
	if _, err := net.DialTimeout("tcp", s.Addr().String(), 5*time.Second); err == nil {
		t.Error("still listening")
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}
