package web_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/authmilter/authmilter/internal/daemontest"
	"github.com/authmilter/authmilter/internal/miltertest"
)

// freePort returns a free "127.0.0.1:port".
func freePort(t *testing.T) string { return daemontest.FreePort(t) }

// daemon is a running `authmilter run` with its status pages.
type daemon struct {
	*daemontest.Process
	cfg daemonConfig
	// base is the status pages' URL, "http://127.0.0.1:port".
	base string
}

// start starts a daemon on the world with o and waits until it listens
// (the status pages included). It is stopped (SIGTERM, by PID) when t
// ends.
func (w *world) start(t *testing.T, name string, o daemonOptions) *daemon {
	t.Helper()
	cfg := w.writeConfig(t, name, o)
	p := daemontest.StartRun(t, name, binary, cfg.path)
	d := &daemon{Process: p, cfg: cfg, base: "http://" + cfg.web}
	daemontest.WaitLog(t, p.Logs.String, p.Done, "msg=listening", 0, 60*time.Second, 20*time.Millisecond)
	return d
}

// mail is one message through the daemon's milter.
type mail struct {
	// ip is the SMTP client; 127.0.0.1 is outbound (signed).
	ip   string
	from string // the From and envelope domain
}

// send drives msgs through the milter, each on its own connection, and
// fails the test unless each is accepted.
func (d *daemon) send(t *testing.T, msgs ...mail) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for i, m := range msgs {
		id := fmt.Sprintf("WEB%d%d", time.Now().UnixNano()%1e9, i)
		raw := fmt.Sprintf("From: Someone <someone@%s>\r\nTo: rcpt@%s\r\nSubject: status page test %s\r\n"+
			"Date: Tue, 24 Nov 2026 12:00:00 +0000\r\nMessage-ID: <%s@%s>\r\n\r\nHello.\r\n", m.from, authservID, id, id, m.from)
		tx := miltertest.Transaction{ClientIP: m.ip, Helo: "mail." + m.from, MailFrom: "bounce@" + m.from,
			RcptTo: []string{"rcpt@" + authservID}, QueueID: id, Hostname: authservID, LeadingSpace: true}
		res, err := miltertest.Run(ctx, "unix", d.cfg.sock, tx, []byte(raw))
		if err != nil {
			t.Fatalf("message %s from %s: %v", id, m.ip, err)
		}
		if !res.Accepted() {
			t.Fatalf("message %s from %s not accepted: stage %s, action %v", id, m.ip, res.Stage, res.Action)
		}
	}
}

// get fetches path from the status pages with net/http (header, if not
// nil, added) and returns the status and the body.
func (d *daemon) get(t *testing.T, path string, header http.Header) (int, []byte) {
	t.Helper()
	status, body, err := d.fetch(path, header)
	if err != nil {
		t.Fatal(err)
	}
	return status, body
}

// fetch is get that returns the failure.
func (d *daemon) fetch(path string, header http.Header) (int, []byte, error) {
	req, err := http.NewRequest(http.MethodGet, d.base+path, nil)
	if err != nil {
		return 0, nil, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	c := &http.Client{Timeout: 60 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("GET %s: %w", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return 0, nil, fmt.Errorf("GET %s: %w", path, err)
	}
	return resp.StatusCode, body, nil
}

// getJSON fetches path (with ?format=json added) into v; any status but
// 200 fails the test.
func (d *daemon) getJSON(t *testing.T, path string, header http.Header, v any) {
	t.Helper()
	if err := d.tryJSON(t, path, header, v); err != nil {
		t.Fatal(err)
	}
}

// tryJSON is getJSON that returns the failure, to wait for a page.
func (d *daemon) tryJSON(t *testing.T, path string, header http.Header, v any) error {
	t.Helper()
	sep := "?"
	if strings.Contains(path, "?") {
		sep = "&"
	}
	status, body, err := d.fetch(path+sep+"format=json", header)
	if err != nil {
		return err
	}
	if status != http.StatusOK {
		return fmt.Errorf("GET %s as JSON: status %d: %s", path, status, body)
	}
	if err := json.NewDecoder(bytes.NewReader(body)).Decode(v); err != nil {
		return fmt.Errorf("GET %s as JSON: %w\n%s", path, err, body)
	}
	return nil
}

// waitFor polls cond every 100 ms until it returns nil, and fails the
// test with what and cond's last error after timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
