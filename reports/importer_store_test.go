package reports

import (
	"encoding/json"
	"testing"
	"time"
)

// TestImportIntoRealStores imports the corpus into SQLite and PostgreSQL:
// twice (the second time all duplicates), then the malformed set (nothing
// stored), and the summary of what the store gives back is the one of the
// reports as parsed.
func TestImportIntoRealStores(t *testing.T) {
	want := Summarize(t.Context(), "example.com", corpusRows(t), nil, may1, time.Time{})
	wantJSON, err := json.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	storeTestEach(t, func(t *testing.T, database string) {
		ctx := storeTestContext(t)
		s := storeTestOpen(t, database)
		first, err := Import(ctx, s, receivedGood, nil, ImportLimits{})
		if err != nil {
			t.Fatal(err)
		}
		second, err := Import(ctx, s, receivedGood, nil, ImportLimits{})
		if err != nil {
			t.Fatal(err)
		}
		if first.Reports != 10 || first.Duplicates != 0 || second.Reports != 0 || second.Duplicates != 10 {
			t.Fatalf("first import %+v, second %+v", first, second)
		}
		rows, err := s.Received(ctx, "example.com", may1)
		if err != nil {
			t.Fatal(err)
		}
		bad, err := Import(ctx, s, receivedMalformed, nil, ImportLimits{})
		if err != nil || bad.Reports != 0 || bad.Refused != bad.Files {
			t.Fatalf("malformed import %+v, %v", bad, err)
		}
		after, err := s.Received(ctx, "example.com", may1)
		if err != nil {
			t.Fatal(err)
		}
		if len(after) != len(rows) {
			t.Errorf("the malformed set changed the store: %d rows, then %d", len(rows), len(after))
		}
		got := Summarize(ctx, "example.com", rows, nil, may1, time.Time{})
		gotJSON, err := json.Marshal(got)
		if err != nil {
			t.Fatal(err)
		}
		if string(gotJSON) != string(wantJSON) {
			t.Errorf("summary from the store:\n%s\nwant (from the parsed reports):\n%s", gotJSON, wantJSON)
		}
	})
}
