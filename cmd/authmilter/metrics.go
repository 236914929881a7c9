package main

import (
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/authmilter/authmilter/policy"
)

// maxKeySeries is the most active keys given a series of their own in
// authmilter_key_active; with more (an ESP with thousands of customer
// domains), only the total authmilter_active_keys is exported, so that a
// large key table cannot blow up the monitoring system.
const maxKeySeries = 1000

// Label values known in advance, exported at 0 from the start so that
// rate() and alerts work before the first occurrence.
var (
	connectionEvents = []string{"open", "close", "refused_limit", "timeout", "accept_error", "bad_packet"}
	dnsErrorKinds    = []string{"timeout", "servfail", "refused", "rcode", "truncated", "bad_answer", "cname_chain", "network"}
)

// metrics are the daemon's Prometheus metrics, on their own registry.
type metrics struct {
	reg        *prometheus.Registry
	messages   *prometheus.CounterVec
	signatures prometheus.Counter
	errors     prometheus.Counter
	dkim       *prometheus.CounterVec
	spf        *prometheus.CounterVec
	dmarc      *prometheus.CounterVec
	unsigned   *prometheus.CounterVec
	connsOpen  prometheus.Gauge
	connEvents *prometheus.CounterVec
	dnsErrors  *prometheus.CounterVec
	reloads    *prometheus.CounterVec
	activeKeys prometheus.Gauge
	keyActive  *prometheus.GaugeVec
	loadedAt   prometheus.Gauge
	reverifies prometheus.Counter
	// done counts messages, for the idle memory return (see idleMemory).
	done atomic.Int64

	// keyLimit is maxKeySeries; tests lower it.
	keyLimit int
	// keyMu guards keySeries, the keys that have a keyActive series.
	keyMu     sync.Mutex
	keySeries map[keyLabels]bool
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "authmilter_messages_total", Help: "Messages processed, by direction (in, out) and action (accept, reject, tempfail, quarantine).",
		}, []string{"direction", "action"}),
		signatures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "authmilter_signatures_total", Help: "DKIM signatures added.",
		}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "authmilter_internal_errors_total", Help: "Messages that hit an internal error.",
		}),
		dkim: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "authmilter_dkim_results_total", Help: "DKIM verification results, one per signature (none: a message without any), by direction.",
		}, []string{"direction", "result"}),
		spf: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "authmilter_spf_results_total", Help: "SPF results of verified messages.",
		}, []string{"result"}),
		dmarc: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "authmilter_dmarc_results_total", Help: "DMARC results of verified messages.",
		}, []string{"result"}),
		unsigned: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "authmilter_unsigned_total", Help: "Outbound messages that got no DKIM signature, by reason.",
		}, []string{"reason"}),
		connsOpen: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "authmilter_connections_open", Help: "MTA connections open now.",
		}),
		connEvents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "authmilter_connection_events_total", Help: "MTA connection events: open, close, refused_limit, timeout, accept_error, bad_packet.",
		}, []string{"event"}),
		dnsErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "authmilter_dns_errors_total", Help: "Failed attempts to get a DNS answer from a server, by kind (NXDOMAIN and NODATA are answers, not errors).",
		}, []string{"kind"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "authmilter_reloads_total", Help: "Policy reloads (SIGHUP and key rechecks), by result.",
		}, []string{"result"}),
		activeKeys: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "authmilter_active_keys", Help: "Keys currently used for signing.",
		}),
		keyActive: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "authmilter_key_active",
			Help: "1 for each key currently used for signing; not exported when there are more than 1000 (see authmilter_active_keys).",
		}, []string{"domain", "selector", "algorithm"}),
		loadedAt: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "authmilter_policy_loaded_timestamp_seconds", Help: "When the current policy was built.",
		}),
		reverifies: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "authmilter_key_reverifications_total", Help: "Lookups of published keys' records on the keys.reverify cycle.",
		}),
		keyLimit: maxKeySeries,
	}
	for _, e := range connectionEvents {
		m.connEvents.WithLabelValues(e)
	}
	for _, k := range dnsErrorKinds {
		m.dnsErrors.WithLabelValues(k)
	}
	m.reg.MustRegister(m.messages, m.signatures, m.errors, m.dkim, m.spf, m.dmarc, m.unsigned,
		m.connsOpen, m.connEvents, m.dnsErrors, m.reloads, m.activeKeys, m.keyActive, m.loadedAt, m.reverifies,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// handler serves the metrics on /metrics and nothing else.
func (m *metrics) handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	return mux
}

// label keeps a label value from the policy to a short token, so that an
// unexpected value can never create unbounded series.
func label(v string) string {
	if v == "" || len(v) > 32 {
		return "other"
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; !('a' <= c && c <= 'z' || c == '_' || c == '-') {
			return "other"
		}
	}
	return v
}

// MessageDone implements milter.Observer.
func (m *metrics) MessageDone(d *policy.Decision, failed bool) {
	m.done.Add(1)
	dir := "in"
	if d.Outbound {
		dir = "out"
	}
	m.messages.WithLabelValues(dir, d.Action.String()).Inc()
	m.signatures.Add(float64(d.Signatures))
	if failed {
		m.errors.Inc()
	}
	for _, r := range d.DKIM {
		m.dkim.WithLabelValues(dir, label(r)).Inc()
	}
	if d.SPF != "" {
		m.spf.WithLabelValues(label(d.SPF)).Inc()
	}
	if d.DMARC != "" {
		m.dmarc.WithLabelValues(label(d.DMARC)).Inc()
	}
	if d.Outbound && d.UnsignedReason != "" {
		m.unsigned.WithLabelValues(label(d.UnsignedReason)).Inc()
	}
}

// ConnectionEvent implements milter.Observer.
func (m *metrics) ConnectionEvent(event string) {
	switch event {
	case "open":
		m.connsOpen.Inc()
	case "close":
		m.connsOpen.Dec()
	}
	m.connEvents.WithLabelValues(label(event)).Inc()
}

// dnsError is the resolvers' resolve.Config.OnError.
func (m *metrics) dnsError(kind string) {
	m.dnsErrors.WithLabelValues(label(kind)).Inc()
}

func (m *metrics) reloadFailed() { m.reloads.WithLabelValues("error").Inc() }

// reloadKept counts a reload that kept the running snapshot (nothing
// changed): a successful reload, with nothing else to update.
func (m *metrics) reloadKept() { m.reloads.WithLabelValues("ok").Inc() }

// reverified counts n keys looked up by the reverifier.
func (m *metrics) reverified(n int) { m.reverifies.Add(float64(n)) }

func (m *metrics) reloaded(p *policy.Policy) {
	m.reloads.WithLabelValues("ok").Inc()
	m.activeKeys.Set(float64(p.ActiveCount()))
	var active []keyLabels
	if p.ActiveCount() <= m.keyLimit {
		for _, d := range p.Table().Domains() {
			for _, k := range p.ActiveKeys(d) {
				active = append(active, keyLabels{k.Domain, k.Selector, string(k.Algorithm)})
			}
		}
	}
	m.loadedAt.Set(float64(p.CompiledAt.Unix()))

	// Keys still active keep their series (a scrape during a reload never
	// sees them vanish); keys no longer active lose theirs.
	m.keyMu.Lock()
	defer m.keyMu.Unlock()
	now := map[keyLabels]bool{}
	for _, k := range active { // none when over the limit
		now[k] = true
		m.keyActive.WithLabelValues(k.domain, k.selector, k.algorithm).Set(1)
	}
	for k := range m.keySeries {
		if !now[k] {
			m.keyActive.DeleteLabelValues(k.domain, k.selector, k.algorithm)
		}
	}
	m.keySeries = now
}

// keyLabels are the labels of one authmilter_key_active series.
type keyLabels struct{ domain, selector, algorithm string }
