package main

import (
	"fmt"
	"strings"
	"time"
)

// report is everything one run measured; it is printed as Markdown and
// as JSON.
type report struct {
	Started  time.Time     `json:"started"`
	Seconds  float64       `json:"seconds"`
	Binary   string        `json:"binary"`
	Version  string        `json:"version"`
	Machine  machineInfo   `json:"machine"`
	Settings settings      `json:"settings"`
	Sizes    []*sizeResult `json:"sizes"`
}

// machineInfo describes the machine and the checkout.
type machineInfo struct {
	CPU       string  `json:"cpu"`
	CPUs      int     `json:"cpus"`
	MemoryGiB float64 `json:"memory_gib"`
	Go        string  `json:"go"`
	Checkout  string  `json:"checkout"`
	LoadStart string  `json:"load_start"`
	LoadEnd   string  `json:"load_end"`
}

// settings are the benchmark's own settings.
type settings struct {
	Concurrency   int     `json:"concurrency"`
	Reps          int     `json:"reps"`
	RunSeconds    float64 `json:"run_seconds"`
	WarmupSeconds float64 `json:"warmup_seconds"`
	IdleSeconds   float64 `json:"idle_seconds"`
	SettleSeconds float64 `json:"settle_seconds"`
	Pool          int     `json:"pool"`
	QuietWait     float64 `json:"quiet_wait_seconds"`
}

// sizeResult is what was measured on one table.
type sizeResult struct {
	Domains      int     `json:"domains"`
	Keys         int     `json:"keys"`
	TableReused  bool    `json:"table_reused"`
	TableSeconds float64 `json:"table_seconds"`
	// Start is phases 1 and 2 of a cold start (no saved publication state).
	Start startResult `json:"start"`
	// RestRSSMiB is VmRSS -settle after every key was active; RestHeapMiB
	// the Go heap in use then (go_memstats_heap_inuse_bytes).
	RestRSSMiB  float64            `json:"rest_rss_mib"`
	RestHeapMiB float64            `json:"rest_heap_mib"`
	Reload      reloadResult       `json:"reload_unchanged"`
	AddKey      addResult          `json:"reload_added_key"`
	Idle        idleResult         `json:"idle"`
	Reverify    *reverifyResult    `json:"reverify_cycle,omitempty"`
	Throughput  []throughputResult `json:"throughput"`
	// Restart is phases 1 and 2 again, with the publication state the
	// first daemon saved.
	Restart *startResult `json:"restart,omitempty"`
}

// startResult times a start from the exec of the daemon.
type startResult struct {
	ListeningSeconds float64 `json:"listening_s"`
	ServingSeconds   float64 `json:"first_signed_s"`
	AllActiveSeconds float64 `json:"all_active_s"`
	// Queries is the DNS queries from exec until every key was active.
	Queries int64 `json:"dns_queries"`
	// PeakRSSMiB is VmHWM when every key was active.
	PeakRSSMiB float64 `json:"peak_rss_mib"`
	// ActivatedLogLines counts "key activated" log lines.
	ActivatedLogLines int `json:"activated_log_lines"`
	// SavedStateBytes is, for a restart, the size of the publication
	// state the daemon found (-1: none).
	SavedStateBytes *int64 `json:"saved_state_bytes,omitempty"`
}

// reloadResult is phase 4.
type reloadResult struct {
	Seconds     float64 `json:"seconds"`
	PeakRSSMiB  float64 `json:"peak_rss_mib"`
	RSSAfterMiB float64 `json:"rss_after_mib"`
	Queries     int64   `json:"dns_queries"`
}

// addResult is phase 5.
type addResult struct {
	// ReloadSeconds is from SIGHUP to the "reloaded" log line,
	// SignsSeconds to the first message signed with the new key.
	ReloadSeconds float64 `json:"reload_s"`
	SignsSeconds  float64 `json:"signs_s"`
	Queries       int64   `json:"dns_queries"`
}

// idleResult is phase 6.
type idleResult struct {
	WindowSeconds float64 `json:"window_s"`
	Queries       int64   `json:"dns_queries"`
	// PerHourIdle is Queries scaled to an hour; PerHourDefault adds six
	// rechecks an hour (keys.recheck's default 10m), each counted as the
	// queries of a reload with nothing changed, and the re-verification
	// cycle's queries scaled to keys.reverify's default (phase 6b).
	PerHourIdle    float64 `json:"per_hour_idle"`
	PerHourDefault float64 `json:"per_hour_default"`
}

// reverifyResult is phase 6b: one re-verification cycle, shortened.
type reverifyResult struct {
	CycleSeconds float64 `json:"cycle_s"`
	// Queries is the DNS queries during one cycle; Reverified the
	// daemon's count of keys looked up then.
	Queries    int64 `json:"dns_queries"`
	Reverified int64 `json:"reverified"`
	// PerHourDefault scales Queries to keys.reverify's default cycle.
	PerHourDefault float64 `json:"per_hour_default"`
}

// throughputResult is one case of phase 7.
type throughputResult struct {
	Name        string    `json:"name"`
	FromDomains int       `json:"from_domains"`
	Reference   bool      `json:"reference,omitempty"`
	Runs        []float64 `json:"runs_msgs_per_s"`
	Best        float64   `json:"best_msgs_per_s"`
	P50Ms       float64   `json:"best_p50_ms"`
	P99Ms       float64   `json:"best_p99_ms"`
	Errors      int       `json:"errors"`
	FirstError  string    `json:"first_error,omitempty"`
	// CPUPerMsgMs is the daemon's least CPU time per message of the runs.
	CPUPerMsgMs float64 `json:"cpu_per_msg_ms"`
	// OtherLoad is the CPU (cores) others used during the best run.
	OtherLoad float64 `json:"other_load"`
	// Ratio is Best over the reference's Best; CPURatio the reference's
	// CPU per message over this one's (what Ratio tends to when the
	// daemon alone is CPU-bound: less disturbed by other load).
	Ratio    float64 `json:"ratio"`
	CPURatio float64 `json:"cpu_ratio"`
}

func mib(v float64) string { return fmt.Sprintf("%.0f MiB", v) }
func secs(v float64) string {
	if v < 10 {
		return fmt.Sprintf("%.2f s", v)
	}
	return fmt.Sprintf("%.1f s", v)
}

// thousands formats n with comma separators.
func thousands(n int64) string {
	s := fmt.Sprint(n)
	if n < 0 {
		return "-" + thousands(-n)
	}
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// markdown renders the report.
func (r *report) markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "# authmilter at scale\n\nGenerated by `bench/scale` on %s; the run took %.0f s.\n\n",
		r.Started.Format("2006-01-02 15:04 UTC"), r.Seconds)
	fmt.Fprintf(&b, "| | |\n| --- | --- |\n")
	fmt.Fprintf(&b, "| binary | `%s`: %s |\n", r.Binary, r.Version)
	fmt.Fprintf(&b, "| checkout | %s |\n", r.Machine.Checkout)
	fmt.Fprintf(&b, "| CPU | %s, %d CPUs, %.1f GiB |\n", r.Machine.CPU, r.Machine.CPUs, r.Machine.MemoryGiB)
	fmt.Fprintf(&b, "| Go (benchmark) | %s |\n", r.Machine.Go)
	fmt.Fprintf(&b, "| load average at start / end | %s / %s |\n", r.Machine.LoadStart, r.Machine.LoadEnd)
	fmt.Fprintf(&b, "| throughput runs | %d connections, %.0f s each (%.0f s warm-up), best of %d, each after waiting up to %.0f s for a quiet machine |\n\n",
		r.Settings.Concurrency, r.Settings.RunSeconds, r.Settings.WarmupSeconds, r.Settings.Reps, r.Settings.QuietWait)
	b.WriteString("Tables: domain i is d%06d.example with one RSA-2048 key; every fourth domain also has an Ed25519 key " +
		"(n domains, n + n/4 keys), made from a pool of " + fmt.Sprint(r.Settings.Pool) + " keys of each algorithm, one file per key. " +
		"Each size starts cold (no saved publication state); DNS answers come from the benchmark's own server with TTL 0.\n\n")
	for _, s := range r.Sizes {
		s.markdown(&b, r.Settings)
	}
	return b.String()
}

func (s *sizeResult) markdown(b *strings.Builder, set settings) {
	fmt.Fprintf(b, "## %s domains (%s keys)\n\n", thousands(int64(s.Domains)), thousands(int64(s.Keys)))
	b.WriteString("| measure | value |\n| --- | ---: |\n")
	row := func(name, value string) { fmt.Fprintf(b, "| %s | %s |\n", name, value) }
	st := s.Start
	row("start: exec to the \"listening\" log line", secs(st.ListeningSeconds))
	row("start: exec to the first signed message", secs(st.ServingSeconds))
	row("start: exec to all keys active (authmilter_active_keys)", secs(st.AllActiveSeconds))
	row("start: DNS queries until all keys active", thousands(st.Queries))
	row("start: peak RSS (VmHWM)", mib(st.PeakRSSMiB))
	if s.RestRSSMiB > 0 {
		row(fmt.Sprintf("RSS at rest (%.0f s after all keys active); Go heap in use", set.SettleSeconds),
			fmt.Sprintf("%s; %s", mib(s.RestRSSMiB), mib(s.RestHeapMiB)))
	}
	if r := s.Reload; r.Seconds > 0 {
		row("reload, nothing changed: SIGHUP to \"reloaded\"", secs(r.Seconds))
		row("reload, nothing changed: peak RSS (VmHWM reset before)", fmt.Sprintf("%s (%+.0f%% over rest)", mib(r.PeakRSSMiB), 100*(r.PeakRSSMiB/s.RestRSSMiB-1)))
		row("reload, nothing changed: RSS after", mib(r.RSSAfterMiB))
		row("reload, nothing changed: DNS queries", thousands(r.Queries))
	}
	if a := s.AddKey; a.SignsSeconds > 0 {
		row("reload after adding one key: SIGHUP to \"reloaded\"", secs(a.ReloadSeconds))
		row("reload after adding one key: SIGHUP to the first message signed with it", secs(a.SignsSeconds))
		row("reload after adding one key: DNS queries", thousands(a.Queries))
	}
	if i := s.Idle; i.WindowSeconds > 0 {
		row(fmt.Sprintf("DNS queries at rest over %.0f s (per hour)", i.WindowSeconds), fmt.Sprintf("%s (%s/h)", thousands(i.Queries), thousands(int64(i.PerHourIdle))))
		if r := s.Reverify; r != nil {
			row(fmt.Sprintf("DNS queries of one re-verification cycle (keys.reverify = %.0fs, no cap); keys re-verified", r.CycleSeconds),
				fmt.Sprintf("%s; %s", thousands(r.Queries), thousands(r.Reverified)))
			row("DNS queries per hour with the defaults (6 × reload + at rest + one 24h cycle's share)", thousands(int64(i.PerHourDefault)))
		} else {
			row("DNS queries per hour with keys.recheck = 10m (6 × reload + at rest)", thousands(int64(i.PerHourDefault)))
		}
	}
	for _, t := range s.Throughput {
		v := fmt.Sprintf("%.0f msgs/s (%.3f×), p99 %.1f ms; CPU/msg %.3f ms (%.3f×); other load %.2f",
			t.Best, t.Ratio, t.P99Ms, t.CPUPerMsgMs, t.CPURatio, t.OtherLoad)
		if t.Errors > 0 {
			v += fmt.Sprintf(", %d errors: %s", t.Errors, t.FirstError)
		}
		row("signing: "+t.Name, v)
	}
	if r := s.Restart; r != nil {
		if r.SavedStateBytes != nil && *r.SavedStateBytes < 0 {
			row("restart: saved publication state", "**none found** (the daemon did not save it)")
		} else if r.SavedStateBytes != nil {
			row("restart: saved publication state", fmt.Sprintf("%.1f MiB", float64(*r.SavedStateBytes)/(1<<20)))
		}
		row("restart with the saved publication state: first signed message", secs(r.ServingSeconds))
		row("restart: all keys active; DNS queries", fmt.Sprintf("%s; %s", secs(r.AllActiveSeconds), thousands(r.Queries)))
	}
	if s.TableReused {
		row("key table", "reused from the cache")
	} else {
		row("key table", "built in "+secs(s.TableSeconds))
	}
	b.WriteString("\n")
}
