package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/authmilter/authmilter/keys"
	"github.com/authmilter/authmilter/keys/dnscheck"
	"github.com/authmilter/authmilter/keys/dnsserver"
	"github.com/authmilter/authmilter/keys/publish"
	"github.com/authmilter/authmilter/policy"
)

// keyDNS is the daemon's built-in key DNS server ([keydns]): started once
// the milter sockets listen, given the zones of every snapshot installed
// (update), stopped at shutdown. A snapshot whose zones cannot be built
// leaves the zones served before; the compile that made it reports the
// same error (checkKeyDNS), so such a reload is refused anyway.
//
// Its server settings (listen, allow_transfer, notify, the TSIG key) are
// those it started with: a reload that changes them is warned about and
// takes effect at restart, like the milter sockets. Zones, nameservers,
// hostmaster, TTLs and revoked_for apply at the reload.
type keyDNS struct {
	log *slog.Logger
	srv *dnsserver.Server
	// settings are the server settings it runs with (see serverSettings).
	settings string

	mu     sync.Mutex // serializes update; guards warned
	warned string     // the settings last warned about

	builtMu sync.Mutex
	built   builtZones // guarded by builtMu

	buildErrors atomic.Uint64
}

// startKeyDNS starts the key DNS server when cfg enables it (nil
// otherwise) and registers its metrics in reg (nil: none). A listen
// failure is an error: the daemon does not start without it.
func startKeyDNS(cfg *policy.Config, log *slog.Logger, reg prometheus.Registerer) (*keyDNS, error) {
	if !cfg.KeyDNS.Enabled() {
		return nil, nil
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dc, err := keyDNSConfig(cfg)
	if err != nil {
		return nil, err
	}
	srv, err := dnsserver.New(dc, log)
	if err != nil {
		return nil, err
	}
	if err := srv.Start(); err != nil {
		return nil, err
	}
	k := &keyDNS{log: log, srv: srv, settings: serverSettings(cfg)}
	if reg != nil {
		if err := reg.Register(&keyDNSCollector{k: k}); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				srv.Close()
				return nil, fmt.Errorf("keydns: metrics: %w", err)
			}
		}
	}
	return k, nil
}

// keyDNSConfig turns [keydns] into the server's config, reading the TSIG
// secret file the way [keys.publish] does (BIND, Knot or bare base64).
func keyDNSConfig(cfg *policy.Config) (dnsserver.Config, error) {
	kd := cfg.KeyDNS
	dc := dnsserver.Config{
		Listen: kd.Listen, Zones: kd.Zones, Nameservers: kd.Nameservers, Hostmaster: kd.Hostmaster,
		TTL: kd.TTL.Duration, NegativeTTL: kd.NegativeTTL.Duration, RevokedFor: kd.RevokedFor.Duration,
		AllowTransfer: kd.AllowTransfer, Notify: kd.Notify,
	}
	if kd.TSIGName != "" {
		secret, algo, err := publish.ReadSecretFile(kd.TSIGSecretFile)
		if err != nil {
			return dc, fmt.Errorf("keydns.tsig_secret_file: %w", err)
		}
		if algo == "" {
			algo = kd.TSIGAlgorithm
		}
		dc.TSIG = &dnsserver.TSIGKey{Name: kd.TSIGName, Algorithm: algo, Secret: secret}
	}
	return dc, nil
}

// serverSettings renders the settings a reload cannot change.
func serverSettings(cfg *policy.Config) string {
	kd := cfg.KeyDNS
	return fmt.Sprintf("listen=%v allow_transfer=%v notify=%v tsig=%s/%s/%s",
		kd.Listen, kd.AllowTransfer, kd.Notify, kd.TSIGName, kd.TSIGAlgorithm, kd.TSIGSecretFile)
}

// checkKeyDNS builds the zones of cfg from the key table t, as the next
// update will, and returns why they cannot be built (overlapping zones, a
// zone without keys, two keys at one name): the compile calls it so that
// such a config or key table is a reload error. Nil when [keydns] is off.
// The daemon's server (k, nil for the commands) keeps the zones built for
// the update that follows, so that one reload builds them once.
func (k *keyDNS) check(cfg *policy.Config, t *keys.Table) error {
	if !cfg.KeyDNS.Enabled() {
		return nil
	}
	if k != nil {
		k.builtMu.Lock()
		defer k.builtMu.Unlock()
		if k.built.cfg == cfg && k.built.t == t {
			return k.built.err
		}
	}
	z, err := buildKeyDNSZones(cfg, t)
	if k != nil {
		k.built = builtZones{cfg: cfg, t: t, z: z, err: err}
	}
	return err
}

// buildKeyDNSZones builds the zones of cfg from t.
func buildKeyDNSZones(cfg *policy.Config, t *keys.Table) (*dnsserver.Zones, error) {
	dc, err := keyDNSConfig(cfg)
	if err != nil {
		return nil, err
	}
	return dnsserver.Build(dc, t, cfg.Keys.CNAMEZoneFor, time.Now())
}

// builtZones are the zones check built last, for the config and table
// they were built from.
type builtZones struct {
	cfg *policy.Config
	t   *keys.Table
	z   *dnsserver.Zones
	err error
}

// takeBuilt returns the zones check built for cfg and t if they are the
// last built, and forgets them: a Zones value is given to the server once.
func (k *keyDNS) takeBuilt(cfg *policy.Config, t *keys.Table) (z *dnsserver.Zones, ok bool, err error) {
	k.builtMu.Lock()
	defer k.builtMu.Unlock()
	if k.built.cfg != cfg || k.built.t != t {
		return nil, false, nil
	}
	z, err = k.built.z, k.built.err
	k.built = builtZones{}
	return z, true, err
}

// update serves the zones of pol (called after every snapshot install). A
// build error is logged and counted, and the zones served stay.
func (k *keyDNS) update(pol *policy.Policy) {
	if k == nil || pol == nil {
		return
	}
	k.updateFrom(pol.Config(), pol.Table())
}

// updateFrom is update for the snapshot's config and key table.
func (k *keyDNS) updateFrom(cfg *policy.Config, t *keys.Table) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if s := serverSettings(cfg); !cfg.KeyDNS.Enabled() || s != k.settings {
		if k.warned != s {
			k.warned = s
			k.log.Warn("keydns: settings changed; they take effect at restart", "running", k.settings, "config", s,
				"enabled", cfg.KeyDNS.Enabled())
		}
		if !cfg.KeyDNS.Enabled() {
			return
		}
	} else {
		k.warned = ""
	}
	z, ok, err := k.takeBuilt(cfg, t)
	if !ok {
		z, err = buildKeyDNSZones(cfg, t)
	}
	if err != nil {
		k.buildErrors.Add(1)
		k.log.Error("keydns: zones not updated; serving the previous ones", "error", err)
		return
	}
	k.srv.Swap(z)
}

// stop closes the server.
func (k *keyDNS) stop() {
	if k != nil {
		k.srv.Close()
	}
}

// keyDNSCollector exports the server's counters.
type keyDNSCollector struct{ k *keyDNS }

var (
	kdQueries   = prometheus.NewDesc("authmilter_keydns_queries_total", "DNS messages received by the key DNS server (answered or dropped).", nil, nil)
	kdDropped   = prometheus.NewDesc("authmilter_keydns_dropped_total", "DNS messages dropped unanswered (no header, or a response).", nil, nil)
	kdResponses = prometheus.NewDesc("authmilter_keydns_responses_total", "Answers of the key DNS server by response code.", []string{"rcode"}, nil)
	kdTruncated = prometheus.NewDesc("authmilter_keydns_truncated_total", "UDP answers sent truncated (TC).", nil, nil)
	kdTransfers = prometheus.NewDesc("authmilter_keydns_transfers_total", "Zone transfers, by result (ok, refused).", []string{"result"}, nil)
	kdNotify    = prometheus.NewDesc("authmilter_keydns_notify_total", "NOTIFYs to secondaries, by result (acknowledged, failed).", []string{"result"}, nil)
	kdTCP       = prometheus.NewDesc("authmilter_keydns_tcp_refused_total", "TCP connections closed at once (too many open).", nil, nil)
	kdZones     = prometheus.NewDesc("authmilter_keydns_zones", "Zones served.", nil, nil)
	kdRecords   = prometheus.NewDesc("authmilter_keydns_records", "Key records served (revoked ones included).", nil, nil)
	kdBuildErrs = prometheus.NewDesc("authmilter_keydns_build_errors_total", "Reloads whose zones could not be built (the previous ones stayed).", nil, nil)
)

// Describe implements prometheus.Collector.
func (c *keyDNSCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{kdQueries, kdDropped, kdResponses, kdTruncated, kdTransfers, kdNotify, kdTCP, kdZones, kdRecords, kdBuildErrs} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *keyDNSCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.k.srv.Stats()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	counter(kdQueries, st.Queries)
	counter(kdDropped, st.Dropped)
	for rcode, n := range st.Rcodes {
		counter(kdResponses, n, rcode)
	}
	counter(kdTruncated, st.Truncated)
	counter(kdTransfers, st.Transfers, "ok")
	counter(kdTransfers, st.TransfersRefused, "refused")
	counter(kdNotify, st.NotifySent, "acknowledged")
	counter(kdNotify, st.NotifyFailed, "failed")
	counter(kdTCP, st.TCPRefused)
	counter(kdBuildErrs, c.k.buildErrors.Load())
	zones, records := c.k.srv.Zones().Len()
	ch <- prometheus.MustNewConstMetric(kdZones, prometheus.GaugeValue, float64(zones))
	ch <- prometheus.MustNewConstMetric(kdRecords, prometheus.GaugeValue, float64(records))
}

// keyDNSPlan answers, for one config, where the built-in key DNS server
// publishes records and whether they are served: its zone matcher is made
// once per config, not per key.
type keyDNSPlan struct {
	cfg *policy.Config
	// matcher finds the served zone of a name; nil when [keydns] is off
	// or its zones are invalid (the config check reports those).
	matcher *dnsserver.Matcher
	// lookupHost finds the nameservers' addresses: the daemon's resolver;
	// nil in the commands, which make one from [dns] when first needed.
	lookupHost func(context.Context, string) ([]net.IPAddr, error)
	lookupOnce sync.Once
	// port is the port the nameservers are asked on ("53"; tests change it).
	port string
}

// newKeyDNSPlan makes the plan of cfg; lookupHost may be nil (see
// keyDNSPlan).
func newKeyDNSPlan(cfg *policy.Config, lookupHost func(context.Context, string) ([]net.IPAddr, error)) *keyDNSPlan {
	p := &keyDNSPlan{cfg: cfg, lookupHost: lookupHost, port: "53"}
	if cfg.KeyDNS.Enabled() {
		if m, err := dnsserver.NewMatcher(cfg.KeyDNS.Zones); err == nil {
			p.matcher = m
		}
	}
	return p
}

// name returns the name at which the built-in server publishes k's
// record (keys.RecordName, or the CNAME target in CNAME mode) and whether
// it does: [keydns] is on and a served zone holds the name. Such a key is
// checked with publication, and keygen and rotate publish nothing for it.
func (p *keyDNSPlan) name(k *keys.Key) (string, bool) {
	name, apex := p.place(k.Domain, k.Selector)
	return name, apex != ""
}

// place returns the name of the record of domain/selector and the served
// zone that holds it ("" when the built-in server does not publish it).
func (p *keyDNSPlan) place(domain, selector string) (name, apex string) {
	name = keys.RecordName(domain, selector)
	if z := p.cfg.Keys.CNAMEZoneFor(domain); z != "" {
		name = keys.CNAMETarget(domain, selector, z)
	}
	return name, p.zoneOf(name)
}

// zoneOf returns the served zone that holds name ("" for none).
func (p *keyDNSPlan) zoneOf(name string) string {
	if p.matcher == nil {
		return ""
	}
	apex, err := p.matcher.ZoneOf(name)
	if err != nil {
		return ""
	}
	return apex
}

// serves reports whether the built-in key DNS server publishes the
// record of domain/selector.
func (p *keyDNSPlan) serves(domain, selector string) bool {
	_, apex := p.place(domain, selector)
	return apex != ""
}

// note is what keygen and rotate say about a new key of domain/selector
// that the built-in key DNS server publishes ("" when it does not): there
// is nothing to publish, the daemon serves the record from its next
// reload.
func (p *keyDNSPlan) note(domain, selector string) string {
	name, apex := p.place(domain, selector)
	if apex == "" {
		return ""
	}
	return fmt.Sprintf("%s: nothing to publish: the built-in key DNS server ([keydns], zone %s) serves the record at %s "+
		"from the daemon's next reload (SIGHUP, or within keys.recheck)", domain, strings.TrimSuffix(apex, "."), name)
}

// customerRecords are the records the owner of domain must have in their
// zone for receivers to find the record of selector that the built-in
// server publishes: in CNAME mode the CNAME to it; for a zone below the
// domain (a delegated selector zone) its NS records, our [keydns]
// nameservers. None when the server does not publish it.
func (p *keyDNSPlan) customerRecords(domain, selector string) []publish.CustomerRecord {
	_, apex := p.place(domain, selector)
	if apex == "" {
		return nil
	}
	if z := p.cfg.Keys.CNAMEZoneFor(domain); z != "" {
		return []publish.CustomerRecord{publish.CNAMERecord(domain, selector, z)}
	}
	var recs []publish.CustomerRecord
	if d := dns.Fqdn(strings.ToLower(domain)); apex != d && dns.IsSubDomain(d, apex) {
		for _, ns := range p.cfg.KeyDNS.Nameservers {
			recs = append(recs, publish.CustomerRecord{Name: apex, Type: "NS", Value: dns.Fqdn(strings.ToLower(ns))})
		}
	}
	return recs
}

// retiredNote is what rotate says about the record of a retired key that
// the built-in key DNS server publishes ("" when it does not).
func (p *keyDNSPlan) retiredNote(domain, selector string) string {
	name, apex := p.place(domain, selector)
	if apex == "" {
		return ""
	}
	return fmt.Sprintf("%s: nothing to withdraw: the built-in key DNS server serves %s revoked (p= empty) for keydns.revoked_for (%s) "+
		"from the daemon's next reload, then no record", domain, name, p.cfg.KeyDNS.RevokedFor.Duration)
}

// lookup returns the nameserver address lookup: the one given, or a
// resolver of cfg's [dns] settings made on first use.
func (p *keyDNSPlan) lookup() func(context.Context, string) ([]net.IPAddr, error) {
	p.lookupOnce.Do(func() {
		if p.lookupHost != nil {
			return
		}
		r, err := newResolver(p.cfg)
		if err != nil {
			p.lookupHost = func(context.Context, string) ([]net.IPAddr, error) { return nil, err }
			return
		}
		p.lookupHost = r.LookupIPAddr
	})
	return p.lookupHost
}

// publication checks a key whose record the built-in server publishes at
// name (see name): it is published when every listed
// nameserver ([keydns] nameservers, their addresses looked up with
// lookup) answers authoritatively with the
// key's record. No public lookup: the customer's delegation (or CNAME) to
// the zone is theirs, and our servers are what we publish on.
//
// A nameserver that does not serve the record yet makes the key Partial,
// not Missing, so that the daemon looks again within seconds: the record
// of a key added at a reload is served only once that reload's snapshot
// is installed, after its own check ran; and other instances reading the
// same key folder serve it at their next reload. A nameserver that does
// not answer makes it a TempError.
func (p *keyDNSPlan) publication(ctx context.Context, k *keys.Key, name string) dnscheck.Result {
	cfg := p.cfg
	kd := cfg.KeyDNS
	fq := strings.ToLower(dns.Fqdn(name))
	res := dnscheck.Result{Name: keys.RecordName(k.Domain, k.Selector), FinalName: strings.TrimSuffix(fq, "."),
		NegativeTTL: min(kd.TTL.Duration, kd.NegativeTTL.Duration)}
	res.Zone = strings.TrimSuffix(p.zoneOf(fq), ".")
	lookupHost := p.lookup()
	timeout := cfg.DNS.Timeout.Duration
	var ttl uint32
	var txt []string
	for _, ns := range kd.Nameservers {
		var answers []dnscheck.Server
		addrs, err := lookupHost(ctx, ns)
		if err == nil && len(addrs) == 0 {
			err = errors.New("no address")
		}
		if err != nil {
			res.Nameservers = append(res.Nameservers, dnscheck.Server{Name: ns, State: keys.TempError,
				Detail: fmt.Sprintf("cannot look up the address of %s: %v", ns, err)})
			continue
		}
		reached := false
		for _, a := range addrs {
			s, served, sttl := askKeyDNS(ctx, timeout, ns, net.JoinHostPort(a.IP.String(), p.port), fq, k)
			answers = append(answers, s)
			reached = reached || !s.Unreachable
			if s.State == keys.Published {
				txt, ttl = served, max(ttl, sttl)
			}
		}
		for _, s := range answers {
			// An address that cannot be reached from here at all (no
			// IPv6) does not count when another one of the nameserver
			// answered.
			if !s.Unreachable || !reached {
				res.Nameservers = append(res.Nameservers, s)
			}
		}
	}
	var serving, temp, other []string
	for _, s := range res.Nameservers {
		where := s.Name
		if s.Addr != "" {
			where += " (" + s.Addr + ")"
		}
		switch s.State {
		case keys.Published:
			serving = append(serving, where)
		case keys.TempError:
			temp = append(temp, where+": "+s.Detail)
		default:
			other = append(other, where+": "+s.Detail)
		}
	}
	res.PublicState = keys.Published
	switch {
	case len(temp) == 0 && len(other) == 0 && len(serving) > 0:
		res.State, res.TXT = keys.Published, txt
		res.RecordTTL = time.Duration(ttl) * time.Second
	case len(temp) > 0:
		res.State = keys.TempError
		res.Detail = "built-in key DNS server: " + strings.Join(append(temp, other...), "; ")
	default:
		res.State = keys.Partial
		res.Detail = fmt.Sprintf("built-in key DNS server: not served yet by %s (served after the reload that loads the key, on every instance)",
			strings.Join(other, "; "))
	}
	res.PublicState, res.PublicDetail = res.State, res.Detail
	return res
}

// askKeyDNS asks one nameserver address for the TXT record at name (fully
// qualified), over UDP and over TCP when truncated, and classifies what
// it serves against k. It returns the TXT values and their TTL.
func askKeyDNS(ctx context.Context, timeout time.Duration, ns, addr, name string, k *keys.Key) (dnscheck.Server, []string, uint32) {
	s := dnscheck.Server{Name: ns, Addr: addr}
	q := new(dns.Msg)
	q.SetQuestion(name, dns.TypeTXT)
	q.RecursionDesired = false
	q.SetEdns0(1232, false)
	c := &dns.Client{Net: "udp", Timeout: timeout, UDPSize: 1232}
	r, _, err := c.ExchangeContext(ctx, q, addr)
	if err == nil && r.Truncated {
		c.Net = "tcp"
		r, _, err = c.ExchangeContext(ctx, q, addr)
	}
	if err != nil {
		s.State, s.Detail = keys.TempError, err.Error()
		var op *net.OpError
		if errors.As(err, &op) && !op.Timeout() {
			e := err.Error()
			s.Unreachable = strings.Contains(e, "network is unreachable") || strings.Contains(e, "no route to host") ||
				strings.Contains(e, "cannot assign requested address") || strings.Contains(e, "address family not supported")
		}
		return s, nil, 0
	}
	switch {
	case r.Rcode == dns.RcodeNameError && r.Authoritative:
		s.State, s.Detail = keys.Missing, "no record at "+strings.TrimSuffix(name, ".")
		return s, nil, 0
	case r.Rcode != dns.RcodeSuccess:
		s.State, s.Detail = keys.Missing, fmt.Sprintf("answers %s for %s (does not serve its zone yet)", dns.RcodeToString[r.Rcode], strings.TrimSuffix(name, "."))
		return s, nil, 0
	case !r.Authoritative:
		s.State, s.Detail = keys.Missing, "not authoritative for "+strings.TrimSuffix(name, ".")
		return s, nil, 0
	}
	var txts []string
	var ttl uint32
	for _, rr := range r.Answer {
		if t, ok := rr.(*dns.TXT); ok && strings.EqualFold(t.Hdr.Name, name) {
			txts = append(txts, strings.Join(t.Txt, ""))
			ttl = t.Hdr.Ttl
		}
	}
	s.State, s.Detail = dnscheck.Classify(txts, strings.TrimSuffix(name, "."), k.Public(), nil)
	return s, txts, ttl
}

// keyDNSParallel bounds the keys checked at once by publication.
const keyDNSParallel = 32

// check checks the keys ks, whose dnscheck queries are qs (same order):
// those the built-in key DNS server publishes with publication, the others
// with check (a dnscheck.Checker's CheckAll). The results are in the order
// of ks.
func (p *keyDNSPlan) check(ctx context.Context, ks []*keys.Key, qs []dnscheck.Query,
	check func(context.Context, []dnscheck.Query) []dnscheck.Result) []dnscheck.Result {
	if p.matcher == nil {
		return check(ctx, qs)
	}
	out := make([]dnscheck.Result, len(ks))
	var rest []dnscheck.Query
	var restAt, servedAt []int
	var names []string
	for i, k := range ks {
		if name, ok := p.name(k); ok {
			servedAt, names = append(servedAt, i), append(names, name)
			continue
		}
		rest, restAt = append(rest, qs[i]), append(restAt, i)
	}
	if len(rest) > 0 {
		for j, r := range check(ctx, rest) {
			out[restAt[j]] = r
		}
	}
	sem := make(chan struct{}, keyDNSParallel)
	var wg sync.WaitGroup
	for j, i := range servedAt {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			out[i] = p.publication(ctx, ks[i], names[j])
		}()
	}
	wg.Wait()
	return out
}
