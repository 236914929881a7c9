// Package web serves the daemon's read-only status pages: the overview
// (version, uptime, last reload, message counts from the daemon's metrics),
// the keys (every key with its DNS state as the daemon last saw it) and
// DMARC results (from the reports store). Pages are made on the server
// with html/template, charts are inline SVG, every page is also JSON
// (?format=json); no JavaScript and no external assets.
//
// It reads what the daemon gives it (Options) and changes nothing.
package web

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/authmilter/authmilter/keys"
	"github.com/authmilter/authmilter/policy"
	"github.com/authmilter/authmilter/reports"
)

// Options are what the pages are made of; the daemon fills them in.
type Options struct {
	// Version is the daemon's version; Started when it started.
	Version string
	Started time.Time
	// Policy returns the snapshot the daemon signs and verifies with now.
	Policy func() *policy.Policy
	// Keys is what the daemon last saw of each key beyond the snapshot;
	// nil when it keeps nothing more.
	Keys KeyDetails
	// Reload returns how the last reload went.
	Reload func() ReloadStatus
	// Metrics is the registry /metrics exports: the overview's numbers are
	// read from it, so a browser and Prometheus see the same counts.
	Metrics prometheus.Gatherer
	// OpenReports opens the reports store (nil: DMARC results are not
	// kept). The pages open it when first needed and again after it fails,
	// at most every ReportsRetry.
	OpenReports func(ctx context.Context) (reports.Store, error)
	// ReportsRetry is how long after a failure to open the store the next
	// page tries again. Default 30s.
	ReportsRetry time.Duration
	// Config is [web].
	Config policy.WebConfig
	// Logger gets one line per refused request and per error.
	Logger *slog.Logger
	// Now is the clock (tests set it); nil means time.Now.
	Now func() time.Time
}

// ReloadStatus is how the last reload (SIGHUP, key recheck) went.
type ReloadStatus struct {
	// At is when it finished; zero before the first.
	At time.Time `json:"at"`
	// OK is false when it was refused; Error then says why (the daemon
	// kept the snapshot it had).
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
	// Generation counts the snapshots installed since start.
	Generation int64 `json:"generation"`
	// Loaded is when the snapshot in use was built.
	Loaded time.Time `json:"loaded"`
}

// KeyDetails is what the daemon knows of keys beyond its snapshot: the
// answers of each nameserver at its last check, and the retired keys'
// selectors. Both are read while a page is made and must not block.
type KeyDetails interface {
	// Detail returns the daemon's last check of k; ok is false when it
	// kept none (a key published everywhere at the last check keeps only
	// its state and since when).
	Detail(k *keys.Key) (KeyDNS, bool)
	// Retired returns the retired keys of domain with the last check of
	// whether their selector still gives a key.
	Retired(domain string) []RetiredKey
}

// KeyDNS is the daemon's last publication check of one key.
type KeyDNS struct {
	// Checked is when it ran.
	Checked time.Time `json:"checked"`
	// PublishedSince is when the record was first seen published
	// everywhere; ActiveFrom when a waiting key becomes usable (zero:
	// unknown).
	PublishedSince time.Time `json:"published_since,omitzero"`
	ActiveFrom     time.Time `json:"active_from,omitzero"`
	// Path is the public path (the record's name, then CNAME targets).
	Path []string `json:"path,omitempty"`
	// Zone is the zone that holds the record, and Nameservers what each
	// of its nameservers answered.
	Zone        string       `json:"zone,omitempty"`
	Nameservers []Nameserver `json:"nameservers,omitempty"`
	// Add are the records a customer must add (delegation missing), in
	// zone-file form.
	Add []string `json:"add,omitempty"`
}

// Nameserver is one authoritative nameserver's answer for a key record.
type Nameserver struct {
	Name   string `json:"name"`
	Addr   string `json:"addr"`
	State  string `json:"state"`
	Detail string `json:"detail,omitempty"`
}

// RetiredKey is a key that rotation (or the administrator) retired, and
// whether its selector still gives a key: a lingering record lets a
// stolen retired key keep signing for the domain.
type RetiredKey struct {
	Selector  string    `json:"selector"`
	Algorithm string    `json:"algorithm,omitempty"`
	Retired   time.Time `json:"retired,omitzero"`
	// Checked is when the daemon last looked (zero: not yet).
	Checked time.Time `json:"checked,omitzero"`
	// Withdrawn is true when the selector no longer gives a usable key.
	Withdrawn bool `json:"withdrawn"`
	// State and Detail are the check's verdict (e.g. "published" and why,
	// or "temperror").
	State  string `json:"state,omitempty"`
	Detail string `json:"detail,omitempty"`
}
