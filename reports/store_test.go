package reports

import (
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

var storeTestDay = time.Date(2026, 3, 14, 0, 0, 0, 0, time.UTC)

// storeTestEntry is a fully populated entry of example.com on
// storeTestDay from ip.
func storeTestEntry(ip string) Entry {
	return Entry{
		Row: Row{
			Domain: "example.com", Day: storeTestDay, SourceIP: netip.MustParseAddr(ip), Count: 1,
			HeaderFrom: "news.example.com", EnvelopeFrom: "bounce.example.com", EnvelopeTo: "example.net",
			Helo: "mail.example.com", Disposition: "none", DKIMAligned: "pass", SPFAligned: "fail",
			Overrides: []Override{{Type: "local_policy", Comment: "enforcement off"}},
			DKIM: []DKIMAuth{
				{Domain: "example.com", Selector: "2026-03", Result: "pass"},
				{Domain: "esp.example", Selector: "s1", Result: "fail", HumanResult: "body hash did not verify"},
			},
			SPF: []SPFAuth{{Domain: "bounce.example.com", Scope: "mfrom", Result: "softfail"}},
		},
		Policy: Policy{
			Domain: "example.com", DiscoveryMethod: "treewalk", P: "reject", SP: "quarantine", NP: "reject",
			PSD: "n", Testing: "n", ADKIM: "r", ASPF: "s", FO: "1:d",
			RUA: []string{"mailto:dmarc@example.com", "mailto:agg@reports.example"}, RUALimits: []int64{0, 10 << 20},
		},
		Seen: storeTestDay.Add(10 * time.Hour),
	}
}

func TestStoreRoundTrip(t *testing.T) {
	storeTestEach(t, func(t *testing.T, database string) {
		ctx := storeTestContext(t)
		s := storeTestOpen(t, database)
		v6 := storeTestEntry("2001:db8::25")
		v6.Row.Overrides, v6.Row.DKIM, v6.Row.SPF = nil, nil, nil
		v4 := storeTestEntry("192.0.2.7")
		other := storeTestEntry("192.0.2.8")
		other.Row.Domain, other.Policy.Domain = "example.org", "example.org"
		nextDay := storeTestEntry("192.0.2.7")
		nextDay.Row.Day = storeTestDay.AddDate(0, 0, 1)
		if err := s.Add(ctx, []Entry{v6, v4, other, nextDay}); err != nil {
			t.Fatal(err)
		}
		domains, err := s.Domains(ctx, storeTestDay)
		if err != nil {
			t.Fatal(err)
		}
		if want := []string{"example.com", "example.org"}; !reflect.DeepEqual(domains, want) {
			t.Errorf("Domains = %q, want %q", domains, want)
		}
		p, rows, err := s.Rows(ctx, "example.com", storeTestDay)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(p, v4.Policy) {
			t.Errorf("policy:\n got %+v\nwant %+v", p, v4.Policy)
		}
		// Ordered by source IP: IPv4 before IPv6.
		if want := []Row{v4.Row, v6.Row}; !reflect.DeepEqual(rows, want) {
			t.Errorf("rows:\n got %+v\nwant %+v", rows, want)
		}
		if _, rows, _ := s.Rows(ctx, "example.com", nextDay.Row.Day); len(rows) != 1 {
			t.Errorf("next day: %d rows, want 1", len(rows))
		}
		if p, rows, err := s.Rows(ctx, "nothing.example", storeTestDay); err != nil || len(rows) != 0 || p.Domain != "nothing.example" {
			t.Errorf("Rows of an unknown domain = %+v, %v, %v", p, rows, err)
		}
	})
}

func TestStoreAggregatesIdenticalResults(t *testing.T) {
	change := func(f func(*Entry)) Entry {
		e := storeTestEntry("192.0.2.7")
		f(&e)
		return e
	}
	tests := []struct {
		name     string
		second   Entry
		wantRows int
	}{
		{"identical", storeTestEntry("192.0.2.7"), 1},
		{"identical, later policy", change(func(e *Entry) { e.Seen = e.Seen.Add(time.Hour); e.Policy.P = "none" }), 1},
		{"domain in another case", change(func(e *Entry) { e.Row.Domain = "EXAMPLE.com"; e.Policy.Domain = "Example.COM" }), 1},
		{"IPv4-mapped address", change(func(e *Entry) { e.Row.SourceIP = netip.MustParseAddr("::ffff:192.0.2.7") }), 1},
		{"same day, other hour", change(func(e *Entry) { e.Row.Day = storeTestDay.Add(23 * time.Hour) }), 1},
		{"source IP", change(func(e *Entry) { e.Row.SourceIP = netip.MustParseAddr("192.0.2.9") }), 2},
		{"header from", change(func(e *Entry) { e.Row.HeaderFrom = "example.com" }), 2},
		{"envelope from", change(func(e *Entry) { e.Row.EnvelopeFrom = "" }), 2},
		{"envelope to", change(func(e *Entry) { e.Row.EnvelopeTo = "example.org" }), 2},
		{"helo", change(func(e *Entry) { e.Row.Helo = "other.example.com" }), 2},
		{"disposition", change(func(e *Entry) { e.Row.Disposition = "reject" }), 2},
		{"dkim alignment", change(func(e *Entry) { e.Row.DKIMAligned = "fail" }), 2},
		{"spf alignment", change(func(e *Entry) { e.Row.SPFAligned = "pass" }), 2},
		{"override comment", change(func(e *Entry) { e.Row.Overrides[0].Comment = "other" }), 2},
		{"no override", change(func(e *Entry) { e.Row.Overrides = nil }), 2},
		{"dkim result", change(func(e *Entry) { e.Row.DKIM[1].Result = "pass" }), 2},
		{"dkim human result", change(func(e *Entry) { e.Row.DKIM[1].HumanResult = "" }), 2},
		{"dkim order", change(func(e *Entry) { e.Row.DKIM[0], e.Row.DKIM[1] = e.Row.DKIM[1], e.Row.DKIM[0] }), 2},
		{"one dkim less", change(func(e *Entry) { e.Row.DKIM = e.Row.DKIM[:1] }), 2},
		{"spf scope", change(func(e *Entry) { e.Row.SPF[0].Scope = "helo" }), 2},
		// Fields whose concatenation is the same must not collide.
		{"shifted text", change(func(e *Entry) { e.Row.HeaderFrom, e.Row.EnvelopeFrom = "news.example.combounce", ".example.com" }), 2},
	}
	storeTestEach(t, func(t *testing.T, database string) {
		ctx := storeTestContext(t)
		s := storeTestOpen(t, database)
		for i, tc := range tests {
			day := storeTestDay.AddDate(0, 0, i)
			first := storeTestEntry("192.0.2.7")
			second := tc.second
			first.Row.Day, first.Seen = day, day
			second.Row.Day = day.Add(second.Row.Day.Sub(storeTestDay))
			second.Seen = day.Add(second.Seen.Sub(storeTestDay) + time.Minute)
			// Twice in one Add, and once more in another.
			if err := s.Add(ctx, []Entry{first, second}); err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			if err := s.Add(ctx, []Entry{second}); err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			p, rows, err := s.Rows(ctx, "example.com", day)
			if err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			var total int64
			for _, r := range rows {
				total += r.Count
			}
			if len(rows) != tc.wantRows || total != 3 {
				t.Errorf("%s: %d rows with %d messages, want %d rows with 3", tc.name, len(rows), total, tc.wantRows)
			}
			if want := strings.ToLower(second.Policy.P); p.P != want {
				t.Errorf("%s: policy p=%s, want the newest one's %s", tc.name, p.P, want)
			}
		}
	})
}

func TestStorePolicyNewestSeenWins(t *testing.T) {
	storeTestEach(t, func(t *testing.T, database string) {
		ctx := storeTestContext(t)
		s := storeTestOpen(t, database)
		at := func(hour int, p string) Entry {
			e := storeTestEntry("192.0.2.7")
			e.Seen, e.Policy.P = storeTestDay.Add(time.Duration(hour)*time.Hour), p
			return e
		}
		steps := []struct {
			add  []Entry
			want string
		}{
			{[]Entry{at(10, "quarantine")}, "quarantine"},
			{[]Entry{at(9, "none")}, "quarantine"},
			{[]Entry{at(12, "reject"), at(11, "none")}, "reject"},
			{[]Entry{at(11, "none"), at(13, "quarantine"), at(12, "none")}, "quarantine"},
		}
		for i, step := range steps {
			if err := s.Add(ctx, step.add); err != nil {
				t.Fatal(err)
			}
			p, _, err := s.Rows(ctx, "example.com", storeTestDay)
			if err != nil {
				t.Fatal(err)
			}
			if p.P != step.want {
				t.Errorf("step %d: p=%s, want %s", i, p.P, step.want)
			}
		}
	})
}

func TestStoreRefusesIncompleteEntries(t *testing.T) {
	tests := []struct {
		name   string
		change func(*Entry)
		want   string
	}{
		{"no domain", func(e *Entry) { e.Row.Domain = "" }, "without a domain"},
		{"no day", func(e *Entry) { e.Row.Day = time.Time{} }, "without a day"},
		{"no source IP", func(e *Entry) { e.Row.SourceIP = netip.Addr{} }, "source IP"},
		{"no count", func(e *Entry) { e.Row.Count = 0 }, "count 0"},
		{"negative count", func(e *Entry) { e.Row.Count = -5 }, "count -5"},
		{"policy of another domain", func(e *Entry) { e.Policy.Domain = "example.org" }, "policy of"},
	}
	storeTestEach(t, func(t *testing.T, database string) {
		ctx := storeTestContext(t)
		s := storeTestOpen(t, database)
		for _, tc := range tests {
			bad := storeTestEntry("192.0.2.1")
			tc.change(&bad)
			err := s.Add(ctx, []Entry{storeTestEntry("192.0.2.2"), bad})
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "entry 1") {
				t.Errorf("%s: err = %v, want one naming entry 1 and %q", tc.name, err, tc.want)
			}
		}
		// Nothing of the refused batches was written.
		if domains, err := s.Domains(ctx, storeTestDay); err != nil || len(domains) != 0 {
			t.Errorf("after refused batches: domains %q, %v", domains, err)
		}
	})
}

func TestStoreBoundsHostileValues(t *testing.T) {
	long := strings.Repeat("a", 5000)
	hostile := storeTestEntry("192.0.2.66")
	hostile.Row.Domain, hostile.Policy.Domain = long+".example", ""
	hostile.Row.Helo = "evil\x00helo\xff\xfe" + long
	hostile.Row.HeaderFrom = strings.Repeat("é", 300)
	hostile.Row.DKIM = nil
	for i := 0; i < 1000; i++ {
		hostile.Row.DKIM = append(hostile.Row.DKIM, DKIMAuth{Domain: long, Selector: long, Result: long, HumanResult: long})
	}
	hostile.Row.Overrides = make([]Override, 100)
	hostile.Policy.RUA = make([]string, 100)
	for i := range hostile.Policy.RUA {
		hostile.Policy.RUA[i] = "mailto:" + long
	}
	hostile.Policy.RUALimits = make([]int64, 200)
	storeTestEach(t, func(t *testing.T, database string) {
		ctx := storeTestContext(t)
		s := storeTestOpen(t, database)
		if err := s.Add(ctx, []Entry{hostile}); err != nil {
			t.Fatalf("a hostile entry must be cut, not refused: %v", err)
		}
		domains, err := s.Domains(ctx, storeTestDay)
		if err != nil || len(domains) != 1 {
			t.Fatalf("domains %q, %v", domains, err)
		}
		if len(domains[0]) > maxNameBytes {
			t.Errorf("domain of %d bytes stored", len(domains[0]))
		}
		p, rows, err := s.Rows(ctx, domains[0], storeTestDay)
		if err != nil || len(rows) != 1 {
			t.Fatalf("rows %v, %v", rows, err)
		}
		r := rows[0]
		if len(r.Helo) > maxNameBytes || strings.ContainsRune(r.Helo, 0) || !strings.HasPrefix(r.Helo, "evilhelo\uFFFD") {
			t.Errorf("helo stored as %.40q (%d bytes)", r.Helo, len(r.Helo))
		}
		if len(r.HeaderFrom) > maxNameBytes || !strings.HasSuffix(r.HeaderFrom, "é") {
			t.Errorf("header from cut inside a character: %d bytes, ends %q", len(r.HeaderFrom), r.HeaderFrom[len(r.HeaderFrom)-2:])
		}
		if len(r.DKIM) != maxDKIMResults || len(r.Overrides) != maxOverrides {
			t.Errorf("%d DKIM results and %d overrides kept, want %d and %d", len(r.DKIM), len(r.Overrides), maxDKIMResults, maxOverrides)
		}
		for _, d := range r.DKIM {
			if len(d.Domain) > maxNameBytes || len(d.Result) > maxTokenBytes || len(d.HumanResult) > maxHumanBytes {
				t.Fatalf("DKIM result not cut: %d, %d, %d bytes", len(d.Domain), len(d.Result), len(d.HumanResult))
			}
		}
		if len(p.RUA) != maxRUA || len(p.RUALimits) != maxRUA || len(p.RUA[0]) > maxURIBytes {
			t.Errorf("policy kept %d rua (%d bytes) and %d limits, want %d", len(p.RUA), len(p.RUA[0]), len(p.RUALimits), maxRUA)
		}
	})
}

func TestStoreConcurrentAddsCountExactly(t *testing.T) {
	const (
		writers = 16
		batches = 20
		perAdd  = 25
	)
	storeTestEach(t, func(t *testing.T, database string) {
		ctx := storeTestContext(t)
		// Two Store values: two processes (or hosts) sharing the database.
		stores := []Store{storeTestOpen(t, database), storeTestOpen(t, database)}
		var wg sync.WaitGroup
		errs := make(chan error, writers)
		for w := 0; w < writers; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				for b := 0; b < batches; b++ {
					entries := make([]Entry, perAdd)
					for i := range entries {
						// Five sources, the same for every writer, in an
						// order of the writer's own.
						entries[i] = storeTestEntry(fmt.Sprintf("192.0.2.%d", (i+w)%5+1))
					}
					if err := stores[w%2].Add(ctx, entries); err != nil {
						errs <- err
						return
					}
				}
			}(w)
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		_, rows, err := stores[0].Rows(ctx, "example.com", storeTestDay)
		if err != nil {
			t.Fatal(err)
		}
		if len(rows) != 5 {
			t.Fatalf("%d rows, want 5", len(rows))
		}
		for _, r := range rows {
			if want := int64(writers * batches * perAdd / 5); r.Count != want {
				t.Errorf("%s: count %d, want %d", r.SourceIP, r.Count, want)
			}
		}
	})
}

func TestStoreClaimRaceHasOneWinner(t *testing.T) {
	const racers = 24
	storeTestEach(t, func(t *testing.T, database string) {
		ctx := storeTestContext(t)
		stores := []Store{storeTestOpen(t, database), storeTestOpen(t, database)}
		for round := 0; round < 5; round++ {
			day := storeTestDay.AddDate(0, 0, round)
			var wg sync.WaitGroup
			start := make(chan struct{})
			wins := make(chan string, racers)
			errs := make(chan error, racers)
			for i := 0; i < racers; i++ {
				wg.Add(1)
				go func(i int) {
					defer wg.Done()
					owner := fmt.Sprintf("host%d:%d", i%2, i)
					<-start
					won, err := stores[i%2].Claim(ctx, "example.com", day, owner, time.Hour)
					if err != nil {
						errs <- err
					} else if won {
						wins <- owner
					}
				}(i)
			}
			close(start)
			wg.Wait()
			close(wins)
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			var winners []string
			for w := range wins {
				winners = append(winners, w)
			}
			if len(winners) != 1 {
				t.Errorf("round %d: winners %q, want exactly one", round, winners)
			}
		}
	})
}

func TestStoreClaimLifecycle(t *testing.T) {
	type step struct {
		do    string // claim or finish
		owner string
		lease time.Duration
		state string // finish: the outcome
		want  bool   // claim: the answer
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"first claim wins, another owner waits", []step{
			{do: "claim", owner: "a", lease: time.Hour, want: true},
			{do: "claim", owner: "b", lease: time.Hour, want: false},
		}},
		{"an owner retakes its own claim", []step{
			{do: "claim", owner: "a", lease: time.Hour, want: true},
			{do: "claim", owner: "a", lease: time.Hour, want: true},
		}},
		{"a stale claim is taken over", []step{
			{do: "claim", owner: "a", lease: time.Hour, want: true},
			{do: "sleep"},
			{do: "claim", owner: "b", lease: time.Nanosecond, want: true},
			{do: "claim", owner: "a", lease: time.Hour, want: false},
		}},
		{"failed is retried", []step{
			{do: "claim", owner: "a", lease: time.Hour, want: true},
			{do: "finish", owner: "a", state: "failed"},
			{do: "claim", owner: "b", lease: time.Hour, want: true},
			{do: "claim", owner: "c", lease: time.Hour, want: false},
		}},
		{"sent is final, even for a stale lease or the same owner", []step{
			{do: "claim", owner: "a", lease: time.Hour, want: true},
			{do: "finish", owner: "a", state: "sent"},
			{do: "sleep"},
			{do: "claim", owner: "b", lease: time.Nanosecond, want: false},
			{do: "claim", owner: "a", lease: time.Nanosecond, want: false},
		}},
		{"skipped is final", []step{
			{do: "claim", owner: "a", lease: time.Hour, want: true},
			{do: "finish", owner: "a", state: "skipped"},
			{do: "claim", owner: "b", lease: time.Hour, want: false},
		}},
		{"a late failure does not undo a report sent by another host", []step{
			{do: "claim", owner: "a", lease: time.Hour, want: true},
			{do: "sleep"},
			{do: "claim", owner: "b", lease: time.Nanosecond, want: true},
			{do: "finish", owner: "b", state: "sent"},
			{do: "finish", owner: "a", state: "failed"},
			{do: "claim", owner: "c", lease: time.Hour, want: false},
		}},
		{"finish without a claim (a dry run's record) is kept", []step{
			{do: "finish", owner: "a", state: "skipped"},
			{do: "claim", owner: "b", lease: time.Hour, want: false},
		}},
	}
	storeTestEach(t, func(t *testing.T, database string) {
		ctx := storeTestContext(t)
		s := storeTestOpen(t, database)
		for i, tc := range tests {
			day := storeTestDay.AddDate(0, 0, i)
			for j, st := range tc.steps {
				switch st.do {
				case "sleep":
					time.Sleep(5 * time.Millisecond)
				case "claim":
					got, err := s.Claim(ctx, "example.com", day, st.owner, st.lease)
					if err != nil {
						t.Fatal(err)
					}
					if got != st.want {
						t.Errorf("%s: step %d: claim by %s = %v, want %v", tc.name, j, st.owner, got, st.want)
					}
				case "finish":
					if err := s.Finish(ctx, Sent{Domain: "example.com", Day: day, Owner: st.owner, Status: st.state, ReportID: "r"}); err != nil {
						t.Fatal(err)
					}
				}
			}
		}
	})
}

func TestStoreFinishAndSentSince(t *testing.T) {
	storeTestEach(t, func(t *testing.T, database string) {
		ctx := storeTestContext(t)
		s := storeTestOpen(t, database)
		at := storeTestDay.Add(25 * time.Hour).Truncate(time.Microsecond)
		outcomes := []Sent{
			{Domain: "example.com", Day: storeTestDay.AddDate(0, 0, -1), ReportID: "old", Owner: "h1", Status: "sent", Time: at},
			{Domain: "example.org", Day: storeTestDay, ReportID: "r1", Owner: "h1:12", Status: "failed",
				Destinations: []string{"mailto:a@example.org"}, Detail: "451 try later", Bytes: 812, Time: at},
			{Domain: "example.org", Day: storeTestDay, ReportID: "r1", Owner: "h2:7", Status: "sent",
				Destinations: []string{"mailto:a@example.org", "mailto:b@example.net"}, Bytes: 812, Time: at.Add(time.Minute)},
			{Domain: "example.com", Day: storeTestDay, ReportID: "r2", Owner: "h1:12", Status: "skipped",
				Detail: "mailto:x@elsewhere.example: not verified", Time: at},
		}
		for _, o := range outcomes {
			if err := s.Finish(ctx, o); err != nil {
				t.Fatal(err)
			}
		}
		got, err := s.SentSince(ctx, storeTestDay.Add(13*time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		want := []Sent{outcomes[3], outcomes[1], outcomes[2]}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("SentSince:\n got %+v\nwant %+v", got, want)
		}
		for _, status := range []string{"", "claimed", "SENT", "delivered"} {
			err := s.Finish(ctx, Sent{Domain: "example.com", Day: storeTestDay, Status: status})
			if err == nil || !strings.Contains(err.Error(), "status") {
				t.Errorf("Finish with status %q: err = %v, want a refusal", status, err)
			}
		}
	})
}

// storeTestFeedback is a received report of example.com with n records.
func storeTestFeedback(id string, n int) *Feedback {
	begin := storeTestDay
	f := &Feedback{
		OrgName: "Mailbox Provider", Email: "noreply-dmarc@provider.example", ReportID: id,
		Begin: begin, End: begin.Add(24*time.Hour - time.Second), Errors: []string{"one record was unparseable"},
		Policy: Policy{Domain: "example.com", P: "reject", SP: "none", ADKIM: "r", ASPF: "r", FO: "0", Testing: "n"},
	}
	for i := 0; i < n; i++ {
		e := storeTestEntry(fmt.Sprintf("198.51.100.%d", i%250+1))
		e.Row.Count = int64(i + 1)
		if i%2 == 1 {
			e.Row.HeaderFrom = "example.com"
		}
		f.Rows = append(f.Rows, e.Row)
	}
	return f
}

func TestStoreImport(t *testing.T) {
	storeTestEach(t, func(t *testing.T, database string) {
		ctx := storeTestContext(t)
		s := storeTestOpen(t, database)
		f := storeTestFeedback("report-1", 3)
		ok, err := s.Import(ctx, f)
		if err != nil || !ok {
			t.Fatalf("Import = %v, %v", ok, err)
		}
		got, err := s.Received(ctx, "example.com", storeTestDay)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 3 {
			t.Fatalf("%d rows received, want 3", len(got))
		}
		for i, rr := range got {
			want := ReceivedRow{Row: f.Rows[i], OrgName: f.OrgName, ReportID: f.ReportID, Begin: f.Begin, End: f.End}
			if !reflect.DeepEqual(rr, want) {
				t.Errorf("row %d:\n got %+v\nwant %+v", i, rr, want)
			}
		}
		// The same report again: nothing changes.
		if ok, err := s.Import(ctx, storeTestFeedback("report-1", 5)); err != nil || ok {
			t.Errorf("duplicate Import = %v, %v, want false, nil", ok, err)
		}
		if got, _ := s.Received(ctx, "example.com", storeTestDay); len(got) != 3 {
			t.Errorf("after a duplicate: %d rows, want 3", len(got))
		}
		// Another organisation may use the same report_id.
		other := storeTestFeedback("report-1", 1)
		other.OrgName = "Another Provider"
		if ok, err := s.Import(ctx, other); err != nil || !ok {
			t.Errorf("same id, other org: Import = %v, %v", ok, err)
		}
	})
}

func TestStoreReceivedMatchesDomainAndSubdomains(t *testing.T) {
	report := func(id, policyDomain, headerFrom string, begin time.Time) *Feedback {
		f := storeTestFeedback(id, 1)
		f.Policy.Domain, f.Rows[0].HeaderFrom = policyDomain, headerFrom
		f.Begin, f.End = begin, begin.Add(24*time.Hour)
		return f
	}
	reports := []*Feedback{
		report("policy-match", "example.com", "unrelated.example", storeTestDay),
		report("subdomain", "sub.example.com", "deep.sub.example.com", storeTestDay),
		report("header-case", "example.net", "News.EXAMPLE.com", storeTestDay),
		report("lookalike", "badexample.com", "badexample.com", storeTestDay),
		report("wildcard-bait", "example_com.test", "x.example_com", storeTestDay),
		report("too-old", "example.com", "example.com", storeTestDay.AddDate(0, 0, -3)),
	}
	tests := []struct {
		domain string
		want   []string
	}{
		{"example.com", []string{"header-case", "policy-match", "subdomain"}},
		{"EXAMPLE.COM.", []string{"header-case", "policy-match", "subdomain"}},
		{"sub.example.com", []string{"subdomain"}},
		{"badexample.com", []string{"lookalike"}},
		{"example%com", nil},
		{"example_com", []string{"wildcard-bait"}},
		{"com", []string{"header-case", "lookalike", "subdomain"}},
	}
	storeTestEach(t, func(t *testing.T, database string) {
		ctx := storeTestContext(t)
		s := storeTestOpen(t, database)
		for _, f := range reports {
			if _, err := s.Import(ctx, f); err != nil {
				t.Fatal(err)
			}
		}
		for _, tc := range tests {
			rows, err := s.Received(ctx, tc.domain, storeTestDay)
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, r := range rows {
				ids = append(ids, r.ReportID)
			}
			if !reflect.DeepEqual(ids, tc.want) {
				t.Errorf("Received(%q) = %q, want %q", tc.domain, ids, tc.want)
			}
		}
	})
}

func TestStoreImportIsAllOrNothing(t *testing.T) {
	tests := []struct {
		name  string
		spoil func(*Feedback)
		want  string
	}{
		// Refused by the store's own check, after 150 records were written.
		{"invalid source IP in record 151", func(f *Feedback) { f.Rows[150].SourceIP = netip.Addr{} }, "record 151"},
		// Refused by the database (CHECK count >= 0), in the third chunk.
		{"negative count in record 240", func(f *Feedback) { f.Rows[239].Count = -1 }, "records 201 to 250"},
		{"no report_id", func(f *Feedback) { f.ReportID = "" }, "report_id"},
		{"no org_name", func(f *Feedback) { f.OrgName = "" }, "org_name"},
		{"no policy domain", func(f *Feedback) { f.Policy.Domain = "" }, "domain"},
	}
	storeTestEach(t, func(t *testing.T, database string) {
		ctx := storeTestContext(t)
		s := storeTestOpen(t, database)
		for _, tc := range tests {
			f := storeTestFeedback("spoilt", 250)
			tc.spoil(f)
			ok, err := s.Import(ctx, f)
			if err == nil || ok || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%s: Import = %v, %v, want an error naming %q", tc.name, ok, err, tc.want)
			}
			if rows, err := s.Received(ctx, "example.com", time.Time{}); err != nil || len(rows) != 0 {
				t.Fatalf("%s: %d rows left behind (%v)", tc.name, len(rows), err)
			}
		}
		// Nothing of the failed attempts stands in the way of the sound
		// report.
		if ok, err := s.Import(ctx, storeTestFeedback("spoilt", 250)); err != nil || !ok {
			t.Fatalf("sound report after failed attempts: %v, %v", ok, err)
		}
		if rows, _ := s.Received(ctx, "example.com", time.Time{}); len(rows) != 250 {
			t.Errorf("%d rows, want 250", len(rows))
		}
		if _, err := s.Import(ctx, nil); err == nil {
			t.Error("Import(nil) succeeded")
		}
	})
}

func TestStorePrune(t *testing.T) {
	storeTestEach(t, func(t *testing.T, database string) {
		ctx := storeTestContext(t)
		s := storeTestOpen(t, database)
		days := []time.Time{storeTestDay.AddDate(0, 0, -2), storeTestDay.AddDate(0, 0, -1), storeTestDay}
		for i, day := range days {
			a, b := storeTestEntry("192.0.2.1"), storeTestEntry("192.0.2.2")
			a.Row.Day, b.Row.Day = day, day
			if err := s.Add(ctx, []Entry{a, b}); err != nil {
				t.Fatal(err)
			}
			if err := s.Finish(ctx, Sent{Domain: "example.com", Day: day, Owner: "h", Status: "sent"}); err != nil {
				t.Fatal(err)
			}
			f := storeTestFeedback(fmt.Sprintf("day-%d", i), 2)
			f.Begin, f.End = day, day.Add(24*time.Hour)
			if _, err := s.Import(ctx, f); err != nil {
				t.Fatal(err)
			}
		}
		// Before midday of the second day: only the first day goes.
		n, err := s.Prune(ctx, days[1].Add(12*time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		if n != 2 {
			t.Errorf("Prune removed %d rows, want 2", n)
		}
		for i, day := range days {
			_, rows, err := s.Rows(ctx, "example.com", day)
			if err != nil {
				t.Fatal(err)
			}
			if want := map[bool]int{true: 0, false: 2}[i == 0]; len(rows) != want {
				t.Errorf("day %d: %d rows, want %d", i, len(rows), want)
			}
		}
		if sent, _ := s.SentSince(ctx, time.Time{}); len(sent) != 2 {
			t.Errorf("%d outcomes left, want 2", len(sent))
		}
		if rows, _ := s.Received(ctx, "example.com", time.Time{}); len(rows) != 4 {
			t.Errorf("%d imported rows left, want 4", len(rows))
		}
		// The pruned day's claim went too: it can be claimed again.
		if ok, err := s.Claim(ctx, "example.com", days[0], "h2", time.Hour); err != nil || !ok {
			t.Errorf("claim of a pruned day = %v, %v", ok, err)
		}
	})
}
