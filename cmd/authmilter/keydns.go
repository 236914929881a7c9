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
// The zones built are kept for the update that follows.
func checkKeyDNS(cfg *policy.Config, t *keys.Table) error {
	_, err := buildKeyDNS(cfg, t)
	return err
}

// built is the last zones checkKeyDNS or update built, for the config
// and table they were built from: the compile and the update of one
// reload build them once.
var built struct {
	sync.Mutex
	cfg *policy.Config
	t   *keys.Table
	z   *dnsserver.Zones
	err error
}

// buildKeyDNS returns the zones of cfg and t, built now or a moment ago
// for the same two.
func buildKeyDNS(cfg *policy.Config, t *keys.Table) (*dnsserver.Zones, error) {
	if !cfg.KeyDNS.Enabled() {
		return nil, nil
	}
	built.Lock()
	defer built.Unlock()
	if built.cfg == cfg && built.t == t {
		return built.z, built.err
	}
	dc, err := keyDNSConfig(cfg)
	var z *dnsserver.Zones
	if err == nil {
		z, err = dnsserver.Build(dc, t, cfg.Keys.CNAMEZoneFor, time.Now())
	}
	built.cfg, built.t, built.z, built.err = cfg, t, z, err
	return z, err
}

// takeBuilt returns the zones built for cfg and t if they are the last
// built, and forgets them: a Zones value is given to the server once.
func takeBuilt(cfg *policy.Config, t *keys.Table) (z *dnsserver.Zones, ok bool, err error) {
	built.Lock()
	defer built.Unlock()
	if built.cfg != cfg || built.t != t {
		return nil, false, nil
	}
	z, err = built.z, built.err
	built.cfg, built.t, built.z, built.err = nil, nil, nil, nil
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
	z, ok, err := takeBuilt(cfg, t)
	if !ok {
		var dc dnsserver.Config
		if dc, err = keyDNSConfig(cfg); err == nil {
			z, err = dnsserver.Build(dc, t, cfg.Keys.CNAMEZoneFor, time.Now())
		}
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

// keyDNSMatcher is the zone matcher of the last config asked about.
var keyDNSMatcher struct {
	sync.Mutex
	zones string
	m     *dnsserver.Matcher
}

// keyDNSName returns the name at which the built-in server publishes k's
// record (keys.RecordName, or the CNAME target in CNAME mode) and whether
// it does: [keydns] is on and a served zone holds the name. Such a key is
// checked with keyDNSPublication, and keygen and rotate publish nothing
// for it.
func keyDNSName(cfg *policy.Config, k *keys.Key) (string, bool) {
	name, apex := keyDNSPlace(cfg, k.Domain, k.Selector)
	return name, apex != ""
}

// keyDNSPlace returns the name of the record of domain/selector and the
// served zone that holds it ("" when the built-in server does not publish
// it).
func keyDNSPlace(cfg *policy.Config, domain, selector string) (name, apex string) {
	name = keys.RecordName(domain, selector)
	if z := cfg.Keys.CNAMEZoneFor(domain); z != "" {
		name = keys.CNAMETarget(domain, selector, z)
	}
	if !cfg.KeyDNS.Enabled() {
		return name, ""
	}
	apex, err := keyDNSZoneOf(cfg, name)
	if err != nil {
		return name, ""
	}
	return name, apex
}

// keyDNSServes reports whether the built-in key DNS server publishes the
// record of domain/selector.
func keyDNSServes(cfg *policy.Config, domain, selector string) bool {
	_, apex := keyDNSPlace(cfg, domain, selector)
	return apex != ""
}

// keyDNSNote is what keygen and rotate say about a new key of
// domain/selector that the built-in key DNS server publishes ("" when it
// does not): there is nothing to publish, the daemon serves the record
// from its next reload.
func keyDNSNote(cfg *policy.Config, domain, selector string) string {
	name, apex := keyDNSPlace(cfg, domain, selector)
	if apex == "" {
		return ""
	}
	return fmt.Sprintf("%s: nothing to publish: the built-in key DNS server ([keydns], zone %s) serves the record at %s "+
		"from the daemon's next reload (SIGHUP, or within keys.recheck)", domain, strings.TrimSuffix(apex, "."), name)
}

// keyDNSCustomerRecords are the records the owner of domain must have in
// their zone for receivers to find the record of selector that the
// built-in server publishes: in CNAME mode the CNAME to it; for a zone
// below the domain (a delegated selector zone) its NS records, our
// [keydns] nameservers. None when the server does not publish it.
func keyDNSCustomerRecords(cfg *policy.Config, domain, selector string) []publish.CustomerRecord {
	_, apex := keyDNSPlace(cfg, domain, selector)
	if apex == "" {
		return nil
	}
	if z := cfg.Keys.CNAMEZoneFor(domain); z != "" {
		return []publish.CustomerRecord{publish.CNAMERecord(domain, selector, z)}
	}
	var recs []publish.CustomerRecord
	if d := dns.Fqdn(strings.ToLower(domain)); apex != d && dns.IsSubDomain(d, apex) {
		for _, ns := range cfg.KeyDNS.Nameservers {
			recs = append(recs, publish.CustomerRecord{Name: apex, Type: "NS", Value: dns.Fqdn(strings.ToLower(ns))})
		}
	}
	return recs
}

// keyDNSRetiredNote is what rotate says about the record of a retired
// key that the built-in key DNS server publishes ("" when it does not).
func keyDNSRetiredNote(cfg *policy.Config, domain, selector string) string {
	name, apex := keyDNSPlace(cfg, domain, selector)
	if apex == "" {
		return ""
	}
	return fmt.Sprintf("%s: nothing to withdraw: the built-in key DNS server serves %s revoked (p= empty) for keydns.revoked_for (%s) "+
		"from the daemon's next reload, then no record", domain, name, cfg.KeyDNS.RevokedFor.Duration)
}

// keyDNSZoneOf returns the served zone that holds name ("" for none).
func keyDNSZoneOf(cfg *policy.Config, name string) (string, error) {
	keyDNSMatcher.Lock()
	defer keyDNSMatcher.Unlock()
	if zones := strings.Join(cfg.KeyDNS.Zones, "\x00"); keyDNSMatcher.m == nil || keyDNSMatcher.zones != zones {
		m, err := dnsserver.NewMatcher(cfg.KeyDNS.Zones)
		if err != nil {
			return "", err
		}
		keyDNSMatcher.zones, keyDNSMatcher.m = zones, m
	}
	return keyDNSMatcher.m.ZoneOf(name)
}

// keyDNSPort is the port the nameservers are asked on; tests change it.
var keyDNSPort = "53"

// keyDNSPublication checks a key whose record the built-in server
// publishes at name (keyDNSName): it is published when every listed
// nameserver ([keydns] nameservers, their addresses looked up with
// lookupHost, the daemon's resolver) answers authoritatively with the
// key's record. No public lookup: the customer's delegation (or CNAME) to
// the zone is theirs, and our servers are what we publish on.
//
// A nameserver that does not serve the record yet makes the key Partial,
// not Missing, so that the daemon looks again within seconds: the record
// of a key added at a reload is served only once that reload's snapshot
// is installed, after its own check ran; and other instances reading the
// same key folder serve it at their next reload. A nameserver that does
// not answer makes it a TempError.
func keyDNSPublication(ctx context.Context, cfg *policy.Config, lookupHost func(context.Context, string) ([]net.IPAddr, error),
	k *keys.Key, name string) dnscheck.Result {
	kd := cfg.KeyDNS
	fq := strings.ToLower(dns.Fqdn(name))
	res := dnscheck.Result{Name: keys.RecordName(k.Domain, k.Selector), FinalName: strings.TrimSuffix(fq, "."),
		NegativeTTL: min(kd.TTL.Duration, kd.NegativeTTL.Duration)}
	if apex, err := keyDNSZoneOf(cfg, fq); err == nil {
		res.Zone = strings.TrimSuffix(apex, ".")
	}
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
			s, served, sttl := askKeyDNS(ctx, timeout, ns, net.JoinHostPort(a.IP.String(), keyDNSPort), fq, k)
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

// keyDNSParallel bounds the keys checked at once by keyDNSPublication.
const keyDNSParallel = 32

// checkWithKeyDNS checks the keys ks, whose dnscheck queries are qs (same
// order): those the built-in key DNS server publishes with
// keyDNSPublication, the others with check (a dnscheck.Checker's
// CheckAll). The results are in the order of ks.
func checkWithKeyDNS(ctx context.Context, cfg *policy.Config, ks []*keys.Key, qs []dnscheck.Query,
	check func(context.Context, []dnscheck.Query) []dnscheck.Result) []dnscheck.Result {
	if !cfg.KeyDNS.Enabled() {
		return check(ctx, qs)
	}
	out := make([]dnscheck.Result, len(ks))
	var rest []dnscheck.Query
	var restAt, servedAt []int
	var names []string
	for i, k := range ks {
		if name, ok := keyDNSName(cfg, k); ok {
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
	lookup := keyDNSLookup(cfg)
	sem := make(chan struct{}, keyDNSParallel)
	var wg sync.WaitGroup
	for j, i := range servedAt {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			out[i] = keyDNSPublication(ctx, cfg, lookup, ks[i], names[j])
		}()
	}
	wg.Wait()
	return out
}

// keyDNSResolver is the resolver of the last [dns] settings asked for: the
// daemon's resolver settings, with a cache of its own for the nameservers'
// addresses.
var keyDNSResolver struct {
	sync.Mutex
	key    string
	lookup func(context.Context, string) ([]net.IPAddr, error)
}

// keyDNSLookup returns the address lookup of cfg's resolver ([dns]).
func keyDNSLookup(cfg *policy.Config) func(context.Context, string) ([]net.IPAddr, error) {
	keyDNSResolver.Lock()
	defer keyDNSResolver.Unlock()
	key := fmt.Sprint(cfg.DNS.Servers, cfg.DNS.Timeout)
	if keyDNSResolver.lookup == nil || keyDNSResolver.key != key {
		r, err := newResolver(cfg)
		if err != nil {
			return func(context.Context, string) ([]net.IPAddr, error) { return nil, err }
		}
		keyDNSResolver.key, keyDNSResolver.lookup = key, r.LookupIPAddr
	}
	return keyDNSResolver.lookup
}
