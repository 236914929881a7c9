package main

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/authmilter/authmilter/policy"
)

// metrics are the daemon's Prometheus counters, on their own registry.
type metrics struct {
	reg        *prometheus.Registry
	messages   *prometheus.CounterVec
	signatures prometheus.Counter
	errors     prometheus.Counter
	reloads    *prometheus.CounterVec
	activeKeys prometheus.Gauge
	loadedAt   prometheus.Gauge
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "authmilter_messages_total", Help: "Messages processed, by action.",
		}, []string{"action"}),
		signatures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "authmilter_signatures_total", Help: "DKIM signatures added.",
		}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "authmilter_internal_errors_total", Help: "Messages that hit an internal error.",
		}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "authmilter_reloads_total", Help: "Policy reloads (SIGHUP and key rechecks), by result.",
		}, []string{"result"}),
		activeKeys: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "authmilter_active_keys", Help: "Keys currently used for signing.",
		}),
		loadedAt: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "authmilter_policy_loaded_timestamp_seconds", Help: "When the current policy was built.",
		}),
	}
	m.reg.MustRegister(m.messages, m.signatures, m.errors, m.reloads, m.activeKeys, m.loadedAt,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// MessageDone implements milter.Observer.
func (m *metrics) MessageDone(d *policy.Decision, failed bool) {
	m.messages.WithLabelValues(d.Action.String()).Inc()
	m.signatures.Add(float64(d.Signatures))
	if failed {
		m.errors.Inc()
	}
}

// ConnectionEvent implements milter.Observer.
func (m *metrics) ConnectionEvent(event string) {}

func (m *metrics) reloadFailed() { m.reloads.WithLabelValues("error").Inc() }

func (m *metrics) reloaded(p *policy.Policy) {
	m.reloads.WithLabelValues("ok").Inc()
	n := 0
	for _, d := range p.Table().Domains() {
		n += len(p.ActiveKeys(d))
	}
	m.activeKeys.Set(float64(n))
	m.loadedAt.Set(float64(p.CompiledAt.Unix()))
}
