package web

import (
	"net/http"
	"strings"
	"time"

	"github.com/authmilter/authmilter/keys"
)

// overviewPage is /. JSON fields: version, started, uptime_seconds,
// reload (see ReloadStatus), keys_total, keys_active, keys_by_state
// (state → count), connections_open, metrics_error (the registry's last
// error, if any), windows (the last hour, the last day, since start: see
// windowCounts), messages_per_minute (the last hour, oldest first).
type overviewPage struct {
	Version         string         `json:"version"`
	Started         time.Time      `json:"started"`
	UptimeSeconds   int64          `json:"uptime_seconds"`
	Reload          ReloadStatus   `json:"reload"`
	KeysTotal       int            `json:"keys_total"`
	KeysActive      int            `json:"keys_active"`
	KeysByState     map[string]int `json:"keys_by_state"`
	ConnectionsOpen float64        `json:"connections_open"`
	MetricsError    string         `json:"metrics_error,omitempty"`
	Windows         []windowCounts `json:"windows"`
	PerMinute       []float64      `json:"messages_per_minute"`

	// Uptime and Sparkline are for the HTML page.
	Uptime    time.Duration `json:"-"`
	Sparkline svgChart      `json:"-"`
	States    []stateCount  `json:"-"`
	// Metrics is false when the daemon gave no registry. Columns head the
	// count tables (one per window), Tables hold them.
	Metrics bool         `json:"-"`
	Columns []string     `json:"-"`
	Tables  []countTable `json:"-"`
}

// countTable is one table of counts on the overview: a row per series,
// a column per window.
type countTable struct {
	ID, Caption, Heading string
	Rows                 []countRow
}

// countRow is one series' counts, one per window.
type countRow struct {
	Label  string
	Values []float64
}

// countTables lays the windows out as tables.
func countTables(ws []windowCounts) []countTable {
	totals := countTable{ID: "messages", Caption: "Messages", Heading: "What"}
	for _, r := range []struct {
		label string
		get   func(windowCounts) float64
	}{
		{"Outbound messages", func(w windowCounts) float64 { return w.OutboundMessages }},
		{"Outbound signed", func(w windowCounts) float64 { return w.OutboundSigned }},
		{"Outbound unsigned", func(w windowCounts) float64 { return w.OutboundUnsigned }},
		{"Signatures added", func(w windowCounts) float64 { return w.Signatures }},
		{"Inbound messages", func(w windowCounts) float64 { return w.InboundMessages }},
	} {
		row := countRow{Label: r.label}
		for _, w := range ws {
			row.Values = append(row.Values, r.get(w))
		}
		totals.Rows = append(totals.Rows, row)
	}
	out := []countTable{totals}
	for _, t := range []struct {
		id, caption, heading string
		get                  func(windowCounts) []labelCount
	}{
		{"unsigned", "Outbound messages not signed, by reason", "Reason", func(w windowCounts) []labelCount { return w.Unsigned }},
		{"dkim", "DKIM results, by direction and result", "Direction/result", func(w windowCounts) []labelCount { return w.DKIM }},
		{"spf", "SPF results of inbound messages", "Result", func(w windowCounts) []labelCount { return w.SPF }},
		{"dmarc", "DMARC results of inbound messages", "Result", func(w windowCounts) []labelCount { return w.DMARC }},
		{"actions", "Messages by direction and action", "Direction/action", func(w windowCounts) []labelCount { return w.Actions }},
		{"dns-errors", "DNS errors, by kind", "Kind", func(w windowCounts) []labelCount { return w.DNSErrors }},
		{"connections", "MTA connection events", "Event", func(w windowCounts) []labelCount { return w.ConnEvents }},
	} {
		ct := countTable{ID: t.id, Caption: t.caption, Heading: t.heading}
		// Every window has the same series in the same order.
		for i, c := range t.get(ws[0]) {
			row := countRow{Label: c.Label}
			for _, w := range ws {
				row.Values = append(row.Values, t.get(w)[i].Count)
			}
			ct.Rows = append(ct.Rows, row)
		}
		out = append(out, ct)
	}
	return out
}

// columnsOf are the headings of the windows' columns.
func columnsOf(ws []windowCounts, now time.Time) []string {
	var out []string
	for _, w := range ws {
		var h string
		switch w.Window {
		case "hour":
			h = "Last hour"
		case "day":
			h = "Last day"
		default:
			h = "Since start"
		}
		if w.SinceStart && w.Window != "start" {
			h += " (since start, " + roughDuration(now.Sub(w.Since)) + " ago)"
		}
		out = append(out, h)
	}
	return out
}

// roughDuration is d to the second under a minute, else to the minute
// ("6s", "42m0s" reads "42m").
func roughDuration(d time.Duration) string {
	if d < time.Minute {
		return d.Round(time.Second).String()
	}
	return strings.TrimSuffix(d.Round(time.Minute).String(), "0s")
}

// stateCount is one row of the keys-by-state table.
type stateCount struct {
	State string
	Count int
}

// publicationStates are the key states, in the order shown.
var publicationStates = []keys.State{keys.Published, keys.Waiting, keys.Unchecked, keys.Missing, keys.Mismatch,
	keys.Revoked, keys.Partial, keys.DelegationMissing, keys.Foreign, keys.TempError}

// serveOverview answers /.
func (h *Handler) serveOverview(w http.ResponseWriter, r *http.Request, f format) error {
	now := h.now()
	started := h.opt.Started
	if started.IsZero() {
		started = now
	}
	page := overviewPage{Version: h.opt.Version, Started: started.UTC(), Reload: h.opt.Reload(),
		KeysByState: map[string]int{}, Metrics: h.opt.Metrics != nil}
	page.Reload.At, page.Reload.Loaded = page.Reload.At.UTC(), page.Reload.Loaded.UTC()
	page.Uptime = now.Sub(started).Round(time.Second)
	page.UptimeSeconds = int64(page.Uptime / time.Second)
	if p := h.opt.Policy(); p != nil {
		page.KeysTotal, page.KeysActive = len(p.Table().All()), p.ActiveCount()
		for _, st := range publicationStates {
			if n := p.CountState(st); n > 0 {
				page.KeysByState[string(st)] = n
				page.States = append(page.States, stateCount{string(st), n})
			}
		}
	}
	cur := h.sampler.current()
	page.ConnectionsOpen, page.MetricsError = cur.connsOpen, cur.err
	page.Windows = []windowCounts{
		h.sampler.window(cur, "hour", time.Hour, started),
		h.sampler.window(cur, "day", 24*time.Hour, started),
		h.sampler.window(cur, "start", 0, started),
	}
	page.Columns, page.Tables = columnsOf(page.Windows, now), countTables(page.Windows)
	page.PerMinute = h.sampler.perMinute(cur, 60)
	page.Sparkline = sparkline("spark", "Messages per minute, last hour", page.PerMinute)
	return h.render(w, r, f, "overview", "Overview", page)
}
