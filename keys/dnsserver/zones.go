// Package dnsserver is the built-in authoritative DNS server for the zones
// that hold our own DKIM key records: selector zones that customers
// delegate to the provider ("myesp._domainkey.customer.com NS ...") and
// the provider's CNAME-target zones. It serves the key table as it is:
// adding a key file and reloading publishes the key, retiring it serves a
// revoked record for a while. Zones are built from a keys.Table by Build
// (an immutable value) and served by a Server, which swaps them atomically
// and tells secondaries by NOTIFY; AXFR lets classic secondaries mirror
// them.
//
// The package imports keys, never policy or milter: cmd/authmilter turns
// the [keydns] section into a Config.
package dnsserver

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/authmilter/authmilter/keys"
)

// Config is what the server serves and how. Build uses the zone part
// (Zones, Nameservers, Hostmaster, the TTLs, RevokedFor); New the rest.
type Config struct {
	// Listen lists "ip:port" (or "ip", port 53) served on UDP and TCP.
	Listen []string
	// Zones are exact zone names or patterns whose "*" label stands for
	// one or more labels ("myesp._domainkey.*": one zone per customer
	// domain whose selector ends in ".myesp").
	Zones []string
	// Nameservers are the NS names of every zone; the first is the SOA
	// MNAME.
	Nameservers []string
	// Hostmaster is the SOA RNAME, as a mail address or in DNS form;
	// empty: hostmaster.<zone>.
	Hostmaster string
	// TTL is the TTL of every record but the negative answers'.
	TTL time.Duration
	// NegativeTTL is the SOA minimum: how long resolvers cache "no such
	// name" and "no such record".
	NegativeTTL time.Duration
	// RevokedFor is how long a retired key's record is served revoked
	// (p= empty, RFC 6376 §3.6.1) after its retirement.
	RevokedFor time.Duration
	// AllowTransfer lists the networks that may AXFR (and IXFR) the
	// zones; empty: nobody.
	AllowTransfer []string
	// Notify lists the secondaries ("ip:port" or "ip") sent a NOTIFY when
	// a zone's serial changes.
	Notify []string
	// TSIG, when set, must sign every transfer request; NOTIFYs are
	// signed with it.
	TSIG *TSIGKey
	// Limits bound what clients can hold; zero fields take the defaults.
	Limits Limits
}

// TSIGKey is a TSIG key (RFC 8945).
type TSIGKey struct {
	// Name is the key name ("transfer-key" or "transfer-key.").
	Name string
	// Algorithm is "hmac-sha256" (default), "hmac-sha384", "hmac-sha512",
	// "hmac-sha224" or "hmac-sha1".
	Algorithm string
	// Secret is the base64 secret (keys/publish.ReadSecretFile reads it
	// from the BIND, Knot or bare formats).
	Secret string
}

// Limits bound the resources clients can hold.
type Limits struct {
	// TCPConns is the most TCP connections served at once; more are
	// closed at once. Default 256.
	TCPConns int
	// TCPQueries is the most queries answered on one TCP connection.
	// Default 65536.
	TCPQueries int
	// TCPIdle is how long a TCP connection may wait for its next query
	// (and the first one). Default 10 s.
	TCPIdle time.Duration
	// WriteTimeout bounds the writing of one response message. Default
	// 30 s.
	WriteTimeout time.Duration
	// UDPWorkers is the number of goroutines reading each UDP socket.
	// Default 4 times GOMAXPROCS.
	UDPWorkers int
}

// SOA timers of every zone. Secondaries hear of changes by NOTIFY; the
// refresh is the fallback.
const (
	soaRefresh = 3600
	soaRetry   = 600
	soaExpire  = 14 * 24 * 3600
)

// Zones is an immutable set of zones built from a key table.
type Zones struct {
	params zoneParams
	zones  map[string]int32 // apex (lower case, fully qualified) → index in list
	list   []zone
	names  map[string]int32 // owner → index in recs, or entNode for an empty non-terminal or a bare apex
	recs   []record
}

// entNode marks a name that exists without records.
const entNode = -1

// zoneParams are the parts of the config every zone shares.
type zoneParams struct {
	ttl, negTTL uint32
	mname       string
	rname       string // "" for hostmaster.<zone>
	ns          []string
}

// zone is one zone: its records are recs[first:first+n].
type zone struct {
	apex   string
	serial uint32
	stamp  uint32 // the serial the content's timestamps give
	sum    uint64 // content hash, compared within this process only
	first  int32
	n      int32
}

// record is one owner name with a TXT record: the key's, or the revoked
// record of a retired key (key nil).
type record struct {
	name string
	key  *keys.Key
	alg  keys.Algorithm
}

// hashSeed makes the content hashes comparable within this process, which
// is all that Swap compares.
var hashSeed = maphash.MakeSeed()

// Build builds the zones of cfg from the key table t at time now. A key's
// record name is keys.RecordName(domain, selector), or in CNAME mode
// (cnameZoneFor(domain) not empty, nil for never) keys.CNAMETarget. A
// record belongs to the zone whose name or pattern matches a suffix of its
// name; records in no zone are not served. A record matched by two
// suffixes (overlapping zones), two keys with one record name, and a zone
// entry that matches no record are errors.
//
// The serial of a zone is the newest timestamp of its content (key
// creation, retirement, the end of a revocation period already passed), so
// instances reading the same key folder agree; Server.Swap raises it when
// the content changed without a newer timestamp.
func Build(cfg Config, t *keys.Table, cnameZoneFor func(domain string) string, now time.Time) (*Zones, error) {
	p, err := newParams(cfg)
	if err != nil {
		return nil, err
	}
	m, err := newMatcher(cfg.Zones)
	if err != nil {
		return nil, err
	}
	all := t.All()
	b := &builder{
		z:    &Zones{params: p, zones: make(map[string]int32, m.zoneHint(len(t.Domains())))},
		m:    m,
		used: make([]bool, len(m.entries)),
		pend: make([]pending, 0, len(all)),
	}
	nameOf := func(domain, selector string) string {
		if cnameZoneFor != nil {
			if cz := cnameZoneFor(domain); cz != "" {
				return keys.CNAMETarget(domain, selector, cz) + "."
			}
		}
		// keys.RecordName, fully qualified, in one allocation; the
		// table's names are lower case already (ToLower then copies
		// nothing).
		return strings.ToLower(selector + "._domainkey." + domain + ".")
	}
	for _, k := range all {
		b.add(nameOf(k.Domain, k.Selector), record{key: k, alg: k.Algorithm}, stampOf(k.Created))
	}
	revokedFor := cfg.RevokedFor
	for _, d := range t.RetiredDomains() {
		for _, r := range t.Retired(d) {
			alg := r.Algorithm
			if alg == "" {
				alg = keys.RSASHA256
			}
			name := nameOf(d, r.Selector)
			if end := r.Retired.Add(revokedFor); end.After(now) {
				b.add(name, record{alg: alg}, stampOf(r.Retired))
			} else {
				b.expired(name, stampOf(end))
			}
		}
	}
	if err := b.finish(); err != nil {
		return nil, err
	}
	return b.z, nil
}

// builder collects the records of Build.
type builder struct {
	z     *Zones
	m     *matcher
	used  []bool // per matcher entry: some record matched it
	pend  []pending
	errs  []error
	nerrs int
	// lateStamps are the stamps of records gone (revocations ended),
	// applied to zones that exist once all records are in.
	lateStamps map[string]uint32
}

// pending is a record and the index of its zone.
type pending struct {
	zi  int32
	rec record
}

// maxErrors bounds the errors Build lists; the rest are counted.
const maxErrors = 5

func (b *builder) fail(err error) {
	b.nerrs++
	if len(b.errs) < maxErrors {
		b.errs = append(b.errs, err)
	}
}

// add puts a record in its zone, creating the zone on first use.
func (b *builder) add(name string, r record, stamp uint32) {
	apex, entry, err := b.m.zoneOf(name)
	if err != nil {
		b.fail(err)
		return
	}
	if apex == "" {
		return
	}
	b.used[entry] = true
	zi, ok := b.z.zones[apex]
	if !ok {
		zi = int32(len(b.z.list))
		b.z.zones[apex] = zi
		b.z.list = append(b.z.list, zone{apex: apex})
	}
	if stamp > b.z.list[zi].stamp {
		b.z.list[zi].stamp = stamp
	}
	r.name = name
	b.pend = append(b.pend, pending{zi: zi, rec: r})
}

// expired notes the end of a revocation period: the zone's content
// changed then.
func (b *builder) expired(name string, stamp uint32) {
	apex, _, err := b.m.zoneOf(name)
	if err != nil || apex == "" {
		return // overlaps are reported for the records served
	}
	if b.lateStamps == nil {
		b.lateStamps = map[string]uint32{}
	}
	b.lateStamps[apex] = max(b.lateStamps[apex], stamp)
}

// finish lays the records out zone by zone (in the order added, which
// is the key table's: deterministic), indexes the names and computes
// serials and hashes.
func (b *builder) finish() error {
	for i, used := range b.used {
		if !used {
			b.fail(fmt.Errorf("keydns: zone %q does not contain any key", b.m.entries[i].text))
		}
	}
	if b.nerrs > len(b.errs) {
		b.errs = append(b.errs, fmt.Errorf("keydns: and %d more errors", b.nerrs-len(b.errs)))
	}
	if len(b.errs) > 0 {
		return errors.Join(b.errs...)
	}
	z := b.z
	// A counting sort by zone.
	for _, p := range b.pend {
		z.list[p.zi].n++
	}
	next := make([]int32, len(z.list))
	off := int32(0)
	for i := range z.list {
		z.list[i].first, next[i] = off, off
		off += z.list[i].n
	}
	z.recs = make([]record, len(b.pend))
	for _, p := range b.pend {
		z.recs[next[p.zi]] = p.rec
		next[p.zi]++
	}
	b.pend = nil
	z.names = make(map[string]int32, len(z.recs)+len(z.list))
	for i := range z.recs {
		n := len(z.names)
		z.names[z.recs[i].name] = int32(i)
		if len(z.names) == n {
			return fmt.Errorf("keydns: two keys have the record name %s", z.recs[i].name)
		}
	}
	var h maphash.Hash
	h.SetSeed(hashSeed)
	for zi := range z.list {
		zn := &z.list[zi]
		if s, ok := b.lateStamps[zn.apex]; ok && s > zn.stamp {
			zn.stamp = s
		}
		// Empty non-terminals between each record and the apex, and the
		// apex itself, exist without records (NODATA, not NXDOMAIN).
		if _, ok := z.names[zn.apex]; !ok {
			z.names[zn.apex] = entNode
		}
		for _, r := range z.recs[zn.first : zn.first+zn.n] {
			for n := parentName(r.name); len(n) > len(zn.apex); n = parentName(n) {
				if _, ok := z.names[n]; ok {
					break
				}
				z.names[n] = entNode
			}
		}
		zn.serial = max(zn.stamp, 1)
		zn.sum = z.hashZone(&h, zn)
	}
	return nil
}

// parentName returns the name one label up ("" above the root).
func parentName(n string) string {
	i, end := dns.NextLabel(n, 0)
	if end {
		return ""
	}
	return n[i:]
}

// hashZone hashes what a zone serves, so that Swap sees a change that no
// timestamp shows (a key file removed by hand, a changed setting).
func (z *Zones) hashZone(h *maphash.Hash, zn *zone) uint64 {
	h.Reset()
	var num [8]byte
	put := func(s string) {
		h.WriteString(s)
		h.WriteByte(0)
	}
	put(zn.apex)
	binary.LittleEndian.PutUint32(num[:4], z.params.ttl)
	binary.LittleEndian.PutUint32(num[4:], z.params.negTTL)
	h.Write(num[:])
	put(z.params.mname)
	put(z.params.rname)
	for _, ns := range z.params.ns {
		put(ns)
	}
	for _, r := range z.recs[zn.first : zn.first+zn.n] {
		put(r.name)
		put(string(r.alg))
		if r.key == nil {
			put("revoked")
			continue
		}
		if r.key.Testing {
			put("t=y")
		}
		// The key file's hash stands for the public key: formatting
		// every key's record here would cost more than the rest of Build.
		put(r.key.Fingerprint())
	}
	return h.Sum64()
}

// stampOf turns a time into a serial candidate (0 for the zero time).
func stampOf(t time.Time) uint32 {
	if t.IsZero() {
		return 0
	}
	u := t.Unix()
	if u <= 0 {
		return 0
	}
	if u > math.MaxUint32 {
		return math.MaxUint32
	}
	return uint32(u)
}

// newParams checks the zone part of cfg.
func newParams(cfg Config) (zoneParams, error) {
	var p zoneParams
	if len(cfg.Zones) == 0 {
		return p, errors.New("keydns: no zones")
	}
	if len(cfg.Nameservers) == 0 {
		return p, errors.New("keydns: at least one nameserver is required")
	}
	for _, ns := range cfg.Nameservers {
		n := strings.ToLower(dns.Fqdn(strings.TrimSpace(ns)))
		if !validName(n) {
			return p, fmt.Errorf("keydns: nameserver %q is not a host name", ns)
		}
		p.ns = append(p.ns, n)
	}
	p.mname = p.ns[0]
	if cfg.Hostmaster != "" {
		r, err := rname(cfg.Hostmaster)
		if err != nil {
			return p, err
		}
		p.rname = r
	}
	var err error
	if p.ttl, err = ttlOf("ttl", cfg.TTL); err != nil {
		return p, err
	}
	if p.negTTL, err = ttlOf("negative_ttl", cfg.NegativeTTL); err != nil {
		return p, err
	}
	if cfg.RevokedFor < 0 {
		return p, fmt.Errorf("keydns: revoked_for %v is negative", cfg.RevokedFor)
	}
	return p, nil
}

// ttlOf checks a TTL: at least a second, at most 2^31-1 seconds (RFC 2181
// §8).
func ttlOf(what string, d time.Duration) (uint32, error) {
	s := d / time.Second
	if s < 1 || s > math.MaxInt32 {
		return 0, fmt.Errorf("keydns: %s %v: want 1s to 68 years", what, d)
	}
	return uint32(s), nil
}

// rname turns the hostmaster setting into the SOA RNAME: a mail address's
// local part becomes the first label (its dots escaped, RFC 1035 §8).
func rname(h string) (string, error) {
	h = strings.TrimSpace(h)
	if local, domain, ok := strings.Cut(h, "@"); ok {
		if local == "" || strings.ContainsAny(local, " \\\"") {
			return "", fmt.Errorf("keydns: hostmaster %q: unusable local part", h)
		}
		h = strings.ReplaceAll(local, ".", `\.`) + "." + domain
	}
	n := strings.ToLower(dns.Fqdn(h))
	if _, ok := dns.IsDomainName(n); !ok || n == "." {
		return "", fmt.Errorf("keydns: hostmaster %q is neither a mail address nor a domain name", h)
	}
	return n, nil
}

// validName reports whether n (fully qualified) is a host name.
func validName(n string) bool {
	if n == "." || len(n) > 254 {
		return false
	}
	return keys.ValidDomain(strings.TrimSuffix(n, ".")) || keys.ValidSelector(strings.TrimSuffix(n, "."))
}

// matcher finds the zone of a record name.
type matcher struct {
	entries []matchEntry
	exact   map[string]int // fully qualified lower-case zone → entry
}

// matchEntry is one configured zone or pattern.
type matchEntry struct {
	text   string   // as configured
	labels []string // lower case; "*" stands for one or more labels
}

// newMatcher checks and indexes the configured zones.
func newMatcher(zones []string) (*matcher, error) {
	m := &matcher{exact: map[string]int{}}
	for _, z := range zones {
		n := strings.ToLower(strings.TrimSuffix(strings.TrimSpace(z), "."))
		labels := strings.Split(n, ".")
		wild := false
		for _, l := range labels {
			if l == "*" {
				wild = true
				continue
			}
			if !keys.ValidSelector(l) {
				return nil, fmt.Errorf("keydns: zone %q: want a domain name, or one whose labels may be \"*\"", z)
			}
		}
		if len(labels) < 2 && !wild {
			return nil, fmt.Errorf("keydns: zone %q: a zone below a top-level domain is required", z)
		}
		if slices.ContainsFunc(m.entries, func(e matchEntry) bool { return slices.Equal(e.labels, labels) }) {
			return nil, fmt.Errorf("keydns: zone %q is listed twice", z)
		}
		if !wild {
			m.exact[n+"."] = len(m.entries)
		}
		m.entries = append(m.entries, matchEntry{text: z, labels: labels})
	}
	return m, nil
}

// zoneOf returns the apex of the zone that holds name (lower case, fully
// qualified) and the entry that matched; "" when no zone does, an error
// when two suffixes of name match (overlapping zones).
func (m *matcher) zoneOf(name string) (string, int, error) {
	apex, entry := "", -1
	for off := 0; off < len(name)-1; {
		suffix := name[off:]
		hit := -1
		if e, ok := m.exact[suffix]; ok {
			hit = e
		} else {
			bare := suffix[:len(suffix)-1]
			for e := range m.entries {
				if matchName(m.entries[e].labels, bare) {
					hit = e
					break
				}
			}
		}
		if hit >= 0 {
			if apex != "" {
				return "", 0, fmt.Errorf("keydns: zones overlap: the record %s lies in %s (zone %q) and in %s (zone %q)",
					name, apex, m.entries[entry].text, suffix, m.entries[hit].text)
			}
			apex, entry = suffix, hit
		}
		i := strings.IndexByte(suffix, '.')
		if i < 0 {
			break
		}
		off += i + 1
	}
	return apex, entry, nil
}

// zoneHint guesses the number of zones for a table of domains: one per
// domain when a pattern is configured, else one per exact zone.
func (m *matcher) zoneHint(domains int) int {
	if len(m.exact) < len(m.entries) {
		return domains
	}
	return len(m.exact)
}

// matchName matches the labels of name (no final dot; names of the key
// table hold no escaped dots) against a pattern whose "*" labels stand
// for one or more labels: policy.ZoneMatches, which keys cannot import,
// without splitting the name.
func matchName(p []string, name string) bool {
	if len(p) == 0 {
		return name == ""
	}
	if name == "" {
		return false
	}
	if p[0] == "*" {
		for {
			i := strings.IndexByte(name, '.')
			if i < 0 {
				return matchName(p[1:], "")
			}
			name = name[i+1:]
			if matchName(p[1:], name) {
				return true
			}
		}
	}
	label, rest := name, ""
	if i := strings.IndexByte(name, '.'); i >= 0 {
		label, rest = name[:i], name[i+1:]
	}
	return label == p[0] && matchName(p[1:], rest)
}

// ZoneOf returns the apex (fully qualified, lower case) of the served zone
// that holds name, or "" when no zone does.
func (z *Zones) ZoneOf(name string) string {
	if z == nil {
		return ""
	}
	_, zi := z.find(strings.ToLower(dns.Fqdn(name)))
	if zi < 0 {
		return ""
	}
	return z.list[zi].apex
}

// find returns the index of the zone holding name (lower case, fully
// qualified) and the apex's offset in name; -1 when none does. Zones
// never nest (Build refuses overlaps), so the first hit is the zone.
func (z *Zones) find(name string) (off int, zi int32) {
	for off = 0; ; {
		if i, ok := z.zones[name[off:]]; ok {
			return off, i
		}
		next, end := dns.NextLabel(name, off)
		if end {
			return 0, -1
		}
		off = next
	}
}

// Serial returns the serial of the zone with apex zone.
func (z *Zones) Serial(zone string) (uint32, bool) {
	if z == nil {
		return 0, false
	}
	i, ok := z.zones[strings.ToLower(dns.Fqdn(zone))]
	if !ok {
		return 0, false
	}
	return z.list[i].serial, true
}

// Apexes returns the apex of every zone, in the order built.
func (z *Zones) Apexes() []string {
	if z == nil {
		return nil
	}
	out := make([]string, len(z.list))
	for i := range z.list {
		out[i] = z.list[i].apex
	}
	return out
}

// Len returns the number of zones and of TXT records served.
func (z *Zones) Len() (zones, records int) {
	if z == nil {
		return 0, 0
	}
	return len(z.list), len(z.recs)
}

// TXT returns the TXT value served at name and whether there is one.
func (z *Zones) TXT(name string) (string, bool) {
	if z == nil {
		return "", false
	}
	i, ok := z.names[strings.ToLower(dns.Fqdn(name))]
	if !ok || i == entNode {
		return "", false
	}
	return z.recs[i].value(), true
}

// value returns the record's TXT value.
func (r *record) value() string {
	if r.key == nil {
		return keys.RevokedRecord(r.alg)
	}
	return recordValue(r.key)
}

// follow sets the serials of z, about to replace prev: a zone whose
// content did not change keeps its serial; one that changed without a
// newer timestamp (a key removed by hand, a changed setting) gets the old
// serial plus one. Only then may instances differ, until the next change
// with a timestamp. It returns the zones whose serial differs from prev's
// (all of them when prev is nil).
func (z *Zones) follow(prev *Zones) []string {
	var changed []string
	for i := range z.list {
		zn := &z.list[i]
		if prev != nil {
			if pi, ok := prev.zones[zn.apex]; ok {
				p := &prev.list[pi]
				switch {
				case p.sum == zn.sum:
					zn.serial = p.serial
				case !serialGreater(zn.serial, p.serial):
					zn.serial = p.serial + 1
					if zn.serial == 0 {
						zn.serial = 1
					}
				}
				if zn.serial == p.serial {
					continue
				}
			}
		}
		changed = append(changed, zn.apex)
	}
	return changed
}

// serialGreater compares serials by RFC 1982 arithmetic.
func serialGreater(a, b uint32) bool {
	return a != b && int32(a-b) > 0
}

// Matcher tells which configured zone holds a record name, as Build
// decides it, without a key table: the daemon uses it to know which keys
// the built-in server publishes before the zones that serve them exist.
type Matcher struct{ m *matcher }

// NewMatcher checks the zone names and patterns of Config.Zones.
func NewMatcher(zones []string) (*Matcher, error) {
	m, err := newMatcher(zones)
	if err != nil {
		return nil, err
	}
	return &Matcher{m: m}, nil
}

// ZoneOf returns the apex (lower case, fully qualified) of the zone that
// holds name, "" when none does, and an error when zones overlap at name.
func (m *Matcher) ZoneOf(name string) (string, error) {
	apex, _, err := m.m.zoneOf(strings.ToLower(dns.Fqdn(name)))
	return apex, err
}
