package reports

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/authmilter/authmilter/internal/smtpsink"
	"github.com/authmilter/authmilter/internal/testdns"
	"github.com/authmilter/authmilter/policy/resolve"
)

// sendFakeStore is an in-memory Store for the Generator's unit tests: it
// holds policies and rows per domain, claims, and the recorded outcomes.
type sendFakeStore struct {
	mu       sync.Mutex
	policies map[string]Policy
	rows     map[string][]Row
	claims   map[string]string // domain → owner
	done     map[string]bool   // sent or skipped
	finished []Sent
	rowsErr  error
}

func newSendFakeStore() *sendFakeStore {
	return &sendFakeStore{policies: map[string]Policy{}, rows: map[string][]Row{}, claims: map[string]string{}, done: map[string]bool{}}
}

func (s *sendFakeStore) put(p Policy, rows []Row) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.policies[p.Domain] = p
	s.rows[p.Domain] = rows
}

func (s *sendFakeStore) Add(context.Context, []Entry) error { return errors.New("not in this fake") }

func (s *sendFakeStore) Domains(_ context.Context, day time.Time) ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for d := range s.rows {
		out = append(out, d)
	}
	slices.Sort(out)
	return out, nil
}

func (s *sendFakeStore) Rows(_ context.Context, domain string, day time.Time) (Policy, []Row, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.policies[domain], slices.Clone(s.rows[domain]), s.rowsErr
}

func (s *sendFakeStore) Claim(_ context.Context, domain string, day time.Time, owner string, lease time.Duration) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done[domain] || (s.claims[domain] != "" && s.claims[domain] != owner) {
		return false, nil
	}
	s.claims[domain] = owner
	return true, nil
}

func (s *sendFakeStore) Finish(_ context.Context, sent Sent) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.finished = append(s.finished, sent)
	delete(s.claims, sent.Domain)
	if sent.Status == StatusSent || sent.Status == StatusSkipped {
		s.done[sent.Domain] = true
	}
	return nil
}

func (s *sendFakeStore) Finished() []Sent {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.finished)
}

func (s *sendFakeStore) SentSince(context.Context, time.Time) ([]Sent, error) { return nil, nil }
func (s *sendFakeStore) Import(context.Context, *Feedback) (bool, error)      { return false, nil }
func (s *sendFakeStore) Received(context.Context, string, time.Time) ([]ReceivedRow, error) {
	return nil, nil
}
func (s *sendFakeStore) Prune(context.Context, time.Time) (int64, error) { return 0, nil }
func (s *sendFakeStore) Close() error                                    { return nil }

// sendFixture is a Generator wired to a fake store, a real DNS server
// and an SMTP sink.
type sendFixture struct {
	store *sendFakeStore
	dns   *testdns.Server
	sink  *smtpsink.Server
	gen   *Generator
	logs  *bytes.Buffer
}

func newSendFixture(t *testing.T) *sendFixture {
	t.Helper()
	srv := testdns.Start(t)
	res, err := resolve.New(resolve.Config{Servers: []string{srv.Addr()}, Timeout: 2 * time.Second, CacheSize: -1})
	if err != nil {
		t.Fatal(err)
	}
	sink := smtpsink.Start(t)
	logs := &bytes.Buffer{}
	f := &sendFixture{store: newSendFakeStore(), dns: srv, sink: sink, logs: logs}
	f.gen = &Generator{
		Store: f.store, Resolver: res, Mailer: NewSMTPMailer(sink.Addr(), "mx.receiver.example"), Meta: genTestMeta,
		Logger: slog.New(slog.NewTextHandler(logs, nil)),
	}
	return f
}

// sendOptions are the options of the tests: the test day, fast retries, a
// fixed clock.
func sendOptions() SendOptions {
	return SendOptions{
		Day: genTestDay, Owner: "mx1.test", RetryWait: time.Millisecond, Retries: 2,
		Now: func() time.Time { return genTestDay.Add(25 * time.Hour) },
	}
}

// policyFor is genTestPolicy for domain with the given rua URIs (with
// "!size" limits split off as the DMARC parser does).
func policyFor(domain string, rua ...string) Policy {
	p := genTestPolicy()
	p.Domain, p.RUA, p.RUALimits = domain, nil, nil
	for _, u := range rua {
		var limit int64
		if i := strings.LastIndexByte(u, '!'); i > 0 {
			var n int64
			for _, c := range u[i+1:] {
				n = n*10 + int64(c-'0')
			}
			u, limit = u[:i], n
		}
		p.RUA, p.RUALimits = append(p.RUA, u), append(p.RUALimits, limit)
	}
	return p
}

func rowsFor(domain string) []Row {
	rows := genTestRows()
	for i := range rows {
		rows[i].Domain = domain
	}
	return rows
}

// sentByDomain indexes Send's result.
func sentByDomain(t *testing.T, sent []Sent) map[string]Sent {
	t.Helper()
	m := map[string]Sent{}
	for _, s := range sent {
		if _, dup := m[s.Domain]; dup {
			t.Errorf("two outcomes for %s", s.Domain)
		}
		m[s.Domain] = s
	}
	return m
}

// TestSendDelivers: in-domain and authorized external destinations get
// the report; unauthorized, non-mailto and missing ones are skipped with
// a reason; every outcome is recorded.
func TestSendDelivers(t *testing.T) {
	f := newSendFixture(t)
	f.dns.SetTXT("example.com._report._dmarc.reports.example.net", "v=DMARC1")
	f.store.put(policyFor("example.com", "mailto:dmarc@example.com", "mailto:agg@reports.example.net", "https://example.com/r"), rowsFor("example.com"))
	f.store.put(policyFor("unauthorized.example", "mailto:agg@reports.example.net"), rowsFor("unauthorized.example"))
	f.store.put(policyFor("norua.example"), rowsFor("norua.example"))

	sent, err := f.gen.Send(context.Background(), sendOptions())
	if err != nil {
		t.Fatal(err)
	}
	by := sentByDomain(t, sent)
	ok := by["example.com"]
	if ok.Status != StatusSent || strings.Join(ok.Destinations, ",") != "mailto:dmarc@example.com,mailto:agg@reports.example.net" {
		t.Errorf("example.com: %+v", ok)
	}
	if !strings.Contains(ok.Detail, `skipped "https://example.com/r"`) || ok.Bytes <= 0 || ok.ReportID == "" || ok.Owner != "mx1.test" {
		t.Errorf("example.com outcome lacks detail, size, ID or owner: %+v", ok)
	}
	if s := by["unauthorized.example"]; s.Status != StatusSkipped || !strings.Contains(s.Detail, "no TXT record at unauthorized.example._report._dmarc.reports.example.net") {
		t.Errorf("unauthorized.example: %+v", s)
	}
	if s := by["norua.example"]; s.Status != StatusSkipped || !strings.Contains(s.Detail, "no rua") {
		t.Errorf("norua.example: %+v", s)
	}
	if got := len(f.store.Finished()); got != 3 {
		t.Errorf("%d outcomes recorded, want 3", got)
	}

	msgs := f.sink.Messages()
	if len(msgs) != 2 {
		t.Fatalf("%d messages sent, want 2", len(msgs))
	}
	var docs [][]byte
	for _, m := range msgs {
		if m.From != genTestMeta.Email {
			t.Errorf("envelope sender %q", m.From)
		}
		h, name, doc := sendOpenMessage(t, m.Data)
		if !subjectRE.MatchString(h.Get("Subject")) {
			t.Errorf("Subject %q", h.Get("Subject"))
		}
		wantEq(t, name, FileName("mx.receiver.example", "example.com", genTestBegin, genTestEnd, ok.ReportID))
		wantEq(t, genParse(t, doc).Metadata.ReportID, ok.ReportID)
		docs = append(docs, doc)
	}
	genValidate(t, docs...)
	if !strings.Contains(f.logs.String(), "destination skipped") {
		t.Errorf("skipped destinations were not logged:\n%s", f.logs)
	}

	// A second run finds everything done.
	again, err := f.gen.Send(context.Background(), sendOptions())
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range again {
		if s.Status != StatusNotClaimed {
			t.Errorf("second run: %s is %q, want %q", s.Domain, s.Status, StatusNotClaimed)
		}
	}
	if len(f.sink.Messages()) != 2 {
		t.Error("the second run sent again")
	}
}

// TestSendClaimedElsewhere: a domain claimed by another host is left to it.
func TestSendClaimedElsewhere(t *testing.T) {
	f := newSendFixture(t)
	f.store.put(policyFor("example.com", "mailto:dmarc@example.com"), rowsFor("example.com"))
	f.store.claims["example.com"] = "mx2.test"
	sent, err := f.gen.Send(context.Background(), sendOptions())
	if err != nil {
		t.Fatal(err)
	}
	if len(sent) != 1 || sent[0].Status != StatusNotClaimed {
		t.Fatalf("got %+v", sent)
	}
	if len(f.sink.Messages()) != 0 || len(f.store.Finished()) != 0 {
		t.Error("a report claimed by another host was sent or recorded")
	}
}

// TestSendRetries: temporary failures are retried; a permanent one, or
// retries exhausted, make the report "failed" so that a later run tries
// again.
func TestSendRetries(t *testing.T) {
	// Every attempt is a connection of its own: the sink's transactions
	// count them.
	const everyAttempt = 1000
	tests := []struct {
		name        string
		failN       int            // how many transactions the sink fails
		failAt      smtpsink.Stage // where, with failWith
		failWith    string
		wantStatus  string
		wantConns   int
		wantDelived int
	}{
		{"4xx then accepted", 1, smtpsink.AtRcpt, "451 4.3.0 busy", StatusSent, 2, 1},
		{"4xx every time", everyAttempt, smtpsink.AtEndOfData, "452 4.3.1 full", StatusFailed, 3, 0},
		{"5xx", everyAttempt, smtpsink.AtRcpt, "550 5.1.1 unknown", StatusFailed, 1, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newSendFixture(t)
			f.sink.FailNext(tt.failN, tt.failAt, tt.failWith)
			f.store.put(policyFor("example.com", "mailto:dmarc@example.com"), rowsFor("example.com"))
			sent, err := f.gen.Send(context.Background(), sendOptions())
			if err != nil {
				t.Fatal(err)
			}
			if sent[0].Status != tt.wantStatus {
				t.Errorf("status %q (%s), want %q", sent[0].Status, sent[0].Detail, tt.wantStatus)
			}
			if got := f.sink.Connections(); got != tt.wantConns {
				t.Errorf("%d connections, want %d", got, tt.wantConns)
			}
			if got := len(f.sink.Messages()); got != tt.wantDelived {
				t.Errorf("%d messages delivered, want %d", got, tt.wantDelived)
			}
			fin := f.store.Finished()
			if len(fin) != 1 || fin[0].Status != tt.wantStatus {
				t.Errorf("recorded %+v", fin)
			}
		})
	}
}

// TestSendFailedIsRetriedLater: a report that failed is sent by the next
// run, with the same report ID (and so the same file name).
func TestSendFailedIsRetriedLater(t *testing.T) {
	f := newSendFixture(t)
	f.sink.FailNext(1000, smtpsink.AtRcpt, "421 4.3.2 shutting down") // every attempt of the first run
	f.store.put(policyFor("example.com", "mailto:dmarc@example.com"), rowsFor("example.com"))
	first, _ := f.gen.Send(context.Background(), sendOptions())
	f.sink.FailNext(0, "", "")
	second, _ := f.gen.Send(context.Background(), sendOptions())
	if first[0].Status != StatusFailed || second[0].Status != StatusSent {
		t.Fatalf("first %q, second %q; want failed then sent", first[0].Status, second[0].Status)
	}
	if first[0].ReportID != second[0].ReportID {
		t.Errorf("the resent report changed its ID from %s to %s", first[0].ReportID, second[0].ReportID)
	}
}

// TestSendDNSTemporaryFailure: a verification lookup that times out makes
// the report "failed" (retried by a later run), not "skipped".
func TestSendDNSTemporaryFailure(t *testing.T) {
	f := newSendFixture(t)
	f.dns.Drop("example.com._report._dmarc.reports.example.net")
	f.store.put(policyFor("example.com", "mailto:agg@reports.example.net"), rowsFor("example.com"))
	opts := sendOptions()
	opts.Retries = -1
	sent, err := f.gen.Send(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if sent[0].Status != StatusFailed || !strings.Contains(sent[0].Detail, "TXT lookup") {
		t.Errorf("got %+v, want failed with the lookup error", sent[0])
	}
	if len(f.sink.Messages()) != 0 {
		t.Error("sent to an unverified destination")
	}
}

// TestSendSizeLimits: a small "!size" limit splits the report; a limit
// too small for one record skips that destination with a reason, and the
// others get reports split for their own limits.
func TestSendSizeLimits(t *testing.T) {
	f := newSendFixture(t)
	rows := sendManyRows(600)
	f.store.put(policyFor("example.com", "mailto:tiny@example.com!900", "mailto:small@example.com!15000", "mailto:big@example.com"), rows)
	sent, err := f.gen.Send(context.Background(), sendOptions())
	if err != nil {
		t.Fatal(err)
	}
	s := sent[0]
	if s.Status != StatusSent || !strings.Contains(s.Detail, `skipped "mailto:tiny@example.com": size limit of 900 bytes`) {
		t.Fatalf("got %+v", s)
	}
	ids := strings.Split(s.ReportID, ",")
	if len(ids) < 2 {
		t.Fatalf("report IDs %q: the 15000-byte limit should have split the report", s.ReportID)
	}
	msgs := f.sink.Messages()
	if len(msgs) != 2*len(ids) {
		t.Fatalf("%d messages, want %d parts to each of 2 destinations", len(msgs), len(ids))
	}
	var docs [][]byte
	records := map[string]int{}
	for _, m := range msgs {
		if len(m.Data) > 15000 {
			t.Errorf("a message of %d bytes went out under a 15000-byte limit", len(m.Data))
		}
		_, _, doc := sendOpenMessage(t, m.Data)
		docs = append(docs, doc)
		records[m.Rcpts[0]] += len(genParse(t, doc).Records)
	}
	if records["small@example.com"] != len(rows) || records["big@example.com"] != len(rows) {
		t.Errorf("records per destination %v, want %d each", records, len(rows))
	}
	genValidate(t, docs...)
}

// TestSendDryRun: everything is built and verified, nothing sent, claimed
// or recorded.
func TestSendDryRun(t *testing.T) {
	f := newSendFixture(t)
	f.store.put(policyFor("example.com", "mailto:dmarc@example.com", "mailto:agg@unverified.example.net"), rowsFor("example.com"))
	opts := sendOptions()
	opts.DryRun = true
	sent, err := f.gen.Send(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if s := sent[0]; s.Status != StatusDryRun || strings.Join(s.Destinations, ",") != "mailto:dmarc@example.com" || !strings.Contains(s.Detail, "unverified.example.net") {
		t.Errorf("got %+v", s)
	}
	if len(f.sink.Messages()) != 0 || len(f.store.Finished()) != 0 || len(f.store.claims) != 0 {
		t.Error("a dry run sent, claimed or recorded something")
	}
}

// TestSendOutDir: reports are written as files under their RFC names,
// inside the directory even for a hostile domain, and nothing is recorded.
func TestSendOutDir(t *testing.T) {
	f := newSendFixture(t)
	f.store.put(policyFor("example.com", "mailto:dmarc@example.com"), rowsFor("example.com"))
	f.store.put(policyFor("../../evil\r\nX: y", "mailto:dmarc@example.com"), rowsFor("../../evil\r\nX: y"))
	f.store.put(policyFor("norua.example"), rowsFor("norua.example"))
	dir := filepath.Join(t.TempDir(), "out")
	opts := sendOptions()
	opts.OutDir = dir
	sent, err := f.gen.Send(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	var docs [][]byte
	for _, s := range sent {
		if s.Status != StatusWritten || len(s.Destinations) != 1 {
			t.Fatalf("%q: %+v", s.Domain, s)
		}
		path := s.Destinations[0]
		if filepath.Dir(path) != dir {
			t.Errorf("%q written outside the directory: %s", s.Domain, path)
		}
		wantEq(t, filepath.Base(path), FileName("mx.receiver.example", s.Domain, genTestBegin, genTestEnd, s.ReportID))
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		docs = append(docs, gunzipForTest(t, data))
	}
	genValidate(t, docs...)
	entries, _ := os.ReadDir(dir)
	if len(entries) != 3 {
		t.Errorf("%d files in the directory, want 3", len(entries))
	}
	if len(f.sink.Messages()) != 0 || len(f.store.Finished()) != 0 {
		t.Error("an -out run sent or recorded something")
	}
}

// TestSendDomainFilter: only the listed domains are reported.
func TestSendDomainFilter(t *testing.T) {
	f := newSendFixture(t)
	f.store.put(policyFor("example.com", "mailto:dmarc@example.com"), rowsFor("example.com"))
	f.store.put(policyFor("example.org", "mailto:dmarc@example.org"), rowsFor("example.org"))
	opts := sendOptions()
	opts.Domains = []string{"EXAMPLE.org."}
	sent, err := f.gen.Send(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(sent) != 1 || sent[0].Domain != "example.org" || sent[0].Status != StatusSent {
		t.Errorf("got %+v", sent)
	}
}

// TestSendStoreFailure: a domain whose rows cannot be read fails alone.
func TestSendStoreFailure(t *testing.T) {
	f := newSendFixture(t)
	f.store.put(policyFor("example.com", "mailto:dmarc@example.com"), rowsFor("example.com"))
	f.store.rowsErr = errors.New("disk on fire")
	sent, err := f.gen.Send(context.Background(), sendOptions())
	if err != nil {
		t.Fatal(err)
	}
	if sent[0].Status != StatusFailed || !strings.Contains(sent[0].Detail, "disk on fire") {
		t.Errorf("got %+v", sent[0])
	}
}

// TestSendHostileDomain: a domain from the store with CR/LF reaches
// neither the message header nor the SMTP envelope as such.
func TestSendHostileDomain(t *testing.T) {
	f := newSendFixture(t)
	evil := "example.com\r\nBcc: victim@example.net"
	f.store.put(policyFor(evil, "mailto:dmarc@example.com"), rowsFor(evil))
	sent, err := f.gen.Send(context.Background(), sendOptions())
	if err != nil {
		t.Fatal(err)
	}
	// The policy domain is not a valid host, so example.com's mailbox is
	// "external" to it and unverifiable: nothing goes out.
	if sent[0].Status != StatusSkipped {
		t.Errorf("got %+v", sent[0])
	}
	for _, m := range f.sink.Messages() {
		if bytes.Contains(m.Data, []byte("\nBcc:")) || slices.Contains(m.Rcpts, "victim@example.net") {
			t.Error("header injection through the domain")
		}
	}
}

func TestSendRefusesBadSetup(t *testing.T) {
	f := newSendFixture(t)
	f.gen.Meta.Email = "not an address"
	if _, err := f.gen.Send(context.Background(), sendOptions()); err == nil {
		t.Error("Send ran with an invalid generator email")
	}
	g := &Generator{Store: newSendFakeStore(), Meta: genTestMeta}
	if _, err := g.Send(context.Background(), sendOptions()); err == nil {
		t.Error("Send ran without a mailer and resolver")
	}
}

func gunzipForTest(t *testing.T, data []byte) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("not gzip: %v", err)
	}
	doc, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("gunzip: %v", err)
	}
	return doc
}

// TestSendWithSQLiteStore: the Generator against the real embedded store:
// rows added as the recorder adds them are reported once, the outcome is
// recorded, and a second run (another host) finds it done.
func TestSendWithSQLiteStore(t *testing.T) {
	ctx := context.Background()
	store, err := Open(ctx, filepath.Join(t.TempDir(), "reports.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	p := policyFor("example.com", "mailto:dmarc@example.com")
	var entries []Entry
	for _, r := range rowsFor("example.com") {
		entries = append(entries, Entry{Row: r, Policy: p, Seen: genTestDay.Add(time.Hour)})
	}
	if err := store.Add(ctx, entries); err != nil {
		t.Fatal(err)
	}
	f := newSendFixture(t)
	f.gen.Store = store
	sent, err := f.gen.Send(ctx, sendOptions())
	if err != nil {
		t.Fatal(err)
	}
	if len(sent) != 1 || sent[0].Status != StatusSent {
		t.Fatalf("got %+v", sent)
	}
	msgs := f.sink.Messages()
	if len(msgs) != 1 {
		t.Fatalf("%d messages, want 1", len(msgs))
	}
	_, _, doc := sendOpenMessage(t, msgs[0].Data)
	genValidate(t, doc)
	if n := len(genParse(t, doc).Records); n != len(entries) {
		t.Errorf("%d records, want %d", n, len(entries))
	}
	recorded, err := store.SentSince(ctx, genTestDay)
	if err != nil {
		t.Fatal(err)
	}
	if len(recorded) != 1 || recorded[0].Status != StatusSent || recorded[0].ReportID != sent[0].ReportID {
		t.Errorf("recorded %+v", recorded)
	}
	opts := sendOptions()
	opts.Owner = "mx2.test"
	again, err := f.gen.Send(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(again) != 1 || again[0].Status != StatusNotClaimed || len(f.sink.Messages()) != 1 {
		t.Errorf("second host: %+v, %d messages", again, len(f.sink.Messages()))
	}
}
