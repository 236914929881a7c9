// Package dnstopo starts, for one test, a real DNS world on 127.53.0.0/24,
// every server on port 53, the way receivers see an email service
// provider's key records on the Internet:
//
//   - a root server (knotd, RootIP) serving "." and the top-level zones of
//     the test (e.g. "example."), with delegations and glue;
//   - the provider's primary (knotd, PrimaryIP, name ns1.<Provider>), which
//     accepts RFC 2136 updates signed with World.ProviderTSIG and increments
//     the serial itself, and its secondary (knotd, SecondaryIP, name
//     ns2.<Provider>), which follows the primary by NOTIFY and IXFR/AXFR and
//     whose transfers a test can hold back (HoldTransfers) and release
//     (ReleaseTransfers);
//   - the customers' server (knotd, CustomersIP, name ns.<zone> for each
//     of its zones), authoritative for the customer zones, accepting RFC
//     2136 updates signed with World.CustomersTSIG so that a test plays the
//     customer who adds (or forgets) an NS delegation or a CNAME;
//   - a recursive resolver (unbound, ResolverIP:53) that starts at the root
//     and follows the delegations without DNSSEC validation, with real
//     negative caching, and a control socket to flush its cache.
//
// Receivers (dkimpy and OpenDKIM, from internal/interop) verify messages
// through the resolver: World.Verify.
//
// Only one world runs on a machine at a time (the addresses are fixed): Start
// takes an exclusive lock on LockFile for the world's life, so test packages
// that run in parallel wait for each other. Every process is started from a
// private temporary directory with its own configuration, its output is
// kept and shown when the test fails, and it is killed by PID when the test
// ends. A missing binary fails the test with the package to install.
package dnstopo

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/authmilter/authmilter/internal/dnsproc"
)

// The fixed addresses of the world; everything listens on port 53 (UDP and
// TCP), because recursive resolvers only ever ask nameservers on port 53
// and OpenDKIM's resolver can only be given an address, not a port.
const (
	// RootIP is the root (and top-level domain) server.
	RootIP = "127.53.0.1"
	// PrimaryIP is the provider's primary, ns1.<Provider>.
	PrimaryIP = "127.53.0.2"
	// SecondaryIP is the provider's secondary, ns2.<Provider>.
	SecondaryIP = "127.53.0.3"
	// CustomersIP is the customers' DNS host, ns.<zone> for each customer
	// zone.
	CustomersIP = "127.53.0.4"
	// KeyDNSIP is free for a test's own authoritative server (authmilter's
	// [keydns]): the world starts nothing there, and a test delegates to
	// it with records of its own (Options.Records, World.Add).
	KeyDNSIP = "127.53.0.5"
	// ResolverIP is the recursive resolver (unbound).
	ResolverIP = "127.53.0.53"
)

// Binaries run by the world, and what to install when one is missing.
const (
	KnotBinary           = dnsproc.KnotBinary
	KnotcBinary          = dnsproc.KnotcBinary
	UnboundBinary        = dnsproc.UnboundBinary
	UnboundControlBinary = dnsproc.UnboundControlBinary
	UnboundCheckBinary   = dnsproc.UnboundCheckBinary
	InstallHint          = "apt-get install knot unbound"
)

// requiredBinaries are checked before anything starts; a test points one
// elsewhere to check the failure.
var requiredBinaries = []string{KnotBinary, KnotcBinary, UnboundBinary, UnboundControlBinary, UnboundCheckBinary}

// Default names of the world.
const (
	// DefaultProvider is the provider's own zone when Options.Provider is
	// empty.
	DefaultProvider = "myesp.example"
	// ProviderTSIGName and CustomersTSIGName are the TSIG key names that
	// the provider's primary and the customers' server accept updates
	// signed with.
	ProviderTSIGName  = "provider-update."
	CustomersTSIGName = "customers-update."
	// RootTSIGName is the key of the root server (for tests that change a
	// top-level delegation).
	RootTSIGName = "root-update."
)

// Options describe the zones of a world. The zero value gives the provider
// zone DefaultProvider alone.
type Options struct {
	// Provider is the provider's own zone; its nameservers are
	// ns1.<Provider> (the primary) and ns2.<Provider> (the secondary).
	// Default DefaultProvider.
	Provider string
	// ProviderZones are further zones served by the provider's primary and
	// secondary, such as the CNAME target zone "dkim.myesp.example" or a
	// delegated selector zone "myesp._domainkey.customer.example". A zone
	// under Provider or directly under a top-level domain is delegated
	// from its parent automatically; a zone under a customer zone only when
	// it is listed in Delegated (adding the NS records is the customer's
	// part).
	ProviderZones []string
	// CustomerZones are the zones of the customers' server, e.g.
	// "customer.example"; each is delegated from its parent.
	CustomerZones []string
	// Delegated lists provider zones under customer zones whose NS
	// records (ns1 and ns2.<Provider>) the customer zone holds from the
	// start. World.Delegate adds them later.
	Delegated []string
	// Records are more records in zone file syntax with absolute names
	// (e.g. `*._domainkey.wild.example. TXT "v=DKIM1; p=..."`), each put
	// in the zone file of the most specific zone that contains it.
	Records []string
	// TTL is the TTL of every record of the zone files (default 2 s).
	TTL uint32
	// NegativeTTL is every zone's SOA minimum and SOA TTL, so its
	// negative-caching TTL (default 2 s).
	NegativeTTL uint32
	// NegativeTTLs overrides NegativeTTL for some zones.
	NegativeTTLs map[string]uint32
	// ResolverMaxTTL caps how long the resolver caches positive answers
	// (default 30 s); ResolverMaxNegativeTTL caps negative answers
	// (default 60 s). Both are above the defaults of the zones so that
	// the zones' own TTLs are what the tests observe.
	ResolverMaxTTL, ResolverMaxNegativeTTL uint32
	// StartTimeout bounds the start-up of all servers (default 20 s).
	StartTimeout time.Duration
	// LockTimeout bounds the wait for another world on this machine to end
	// (default 8 min).
	LockTimeout time.Duration
}

// TSIG is a TSIG key that a server accepts updates signed with.
type TSIG struct {
	// Name is the key name, fully qualified ("provider-update.").
	Name string
	// Algorithm is the Knot/BIND algorithm name, "hmac-sha256".
	Algorithm string
	// Secret is the base64 secret.
	Secret string
	// SecretFile holds Secret alone (mode 0600), for
	// keys.publish.tsig_secret_file.
	SecretFile string
}

// zoneRole says which server is authoritative for a zone.
type zoneRole int

const (
	roleRoot zoneRole = iota
	roleProvider
	roleCustomer
)

// zoneInfo is one zone of the world.
type zoneInfo struct {
	name    string // without the final dot; "." for the root
	role    zoneRole
	negTTL  uint32
	records []string // zone file lines after SOA and NS
}

// World is a running DNS world. Its servers are killed and its lock is
// released when the test that started it ends.
type World struct {
	// Root, Primary, Secondary and Customers are the authoritative
	// servers.
	Root, Primary, Secondary, Customers *Server
	// Resolver is the recursive resolver receivers use.
	Resolver *Resolver
	// Provider is the provider's own zone (Options.Provider).
	Provider string
	// ProviderTSIG is the key the primary accepts updates with;
	// CustomersTSIG the customers' server's.
	ProviderTSIG, CustomersTSIG TSIG
	// Dir is the world's temporary directory.
	Dir string

	opts  Options
	zones map[string]*zoneInfo
	t     testing.TB
}

// Start starts a world for the test t and stops it when t ends. It fails t
// when a binary is missing, when another world holds the machine for longer
// than Options.LockTimeout, or when a server does not answer within
// Options.StartTimeout; the servers' output is then in the failure.
func Start(t testing.TB, opts Options) *World {
	t.Helper()
	dnsproc.Require(t, "dnstopo", InstallHint, requiredBinaries...)
	if err := opts.fill(); err != nil {
		t.Fatalf("dnstopo: %v", err)
	}
	zones, err := buildZones(opts)
	if err != nil {
		t.Fatalf("dnstopo: %v", err)
	}
	release, err := acquireLock(t, opts.LockTimeout)
	if err != nil {
		t.Fatalf("dnstopo: %v", err)
	}
	t.Cleanup(release)
	for _, ip := range []string{RootIP, PrimaryIP, SecondaryIP, CustomersIP, ResolverIP} {
		if err := dnsproc.CanBind(net.JoinHostPort(ip, "53")); err != nil {
			t.Fatalf("dnstopo: %s:53 cannot be bound (%v): another DNS server uses it; dnstopo needs 127.53.0.0/24 port 53 for itself (and root)", ip, err)
		}
	}
	dir, err := os.MkdirTemp("", "dnstopo-")
	if err != nil {
		t.Fatalf("dnstopo: temp dir: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	w := &World{Provider: opts.Provider, Dir: dir, opts: opts, zones: zones, t: t}
	if w.ProviderTSIG, err = newTSIG(dir, ProviderTSIGName, "provider"); err != nil {
		t.Fatalf("dnstopo: %v", err)
	}
	if w.CustomersTSIG, err = newTSIG(dir, CustomersTSIGName, "customers"); err != nil {
		t.Fatalf("dnstopo: %v", err)
	}
	rootTSIG, err := newTSIG(dir, RootTSIGName, "root")
	if err != nil {
		t.Fatalf("dnstopo: %v", err)
	}
	w.Root = &Server{Name: "root", IP: RootIP, tsig: &rootTSIG}
	w.Primary = &Server{Name: "primary", IP: PrimaryIP, tsig: &w.ProviderTSIG}
	w.Secondary = &Server{Name: "secondary", IP: SecondaryIP}
	w.Customers = &Server{Name: "customers", IP: CustomersIP, tsig: &w.CustomersTSIG}
	for _, z := range sortedZones(zones) {
		switch z.role {
		case roleRoot:
			w.Root.Zones = append(w.Root.Zones, z.name)
		case roleProvider:
			w.Primary.Zones = append(w.Primary.Zones, z.name)
			w.Secondary.Zones = append(w.Secondary.Zones, z.name)
		case roleCustomer:
			w.Customers.Zones = append(w.Customers.Zones, z.name)
		}
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("dnstopo: server output (world in %s):\n%s", dir, w.Logs())
		}
	})

	ctx, cancel := context.WithTimeout(context.Background(), opts.StartTimeout)
	defer cancel()
	// The primary, the root and the customers' server are independent;
	// the secondary needs the primary; unbound needs them all.
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i, s := range []*Server{w.Root, w.Primary, w.Customers} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = w.startKnot(ctx, s)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("dnstopo: start: %v", err)
	}
	if err := w.startKnot(ctx, w.Secondary); err != nil {
		t.Fatalf("dnstopo: start: %v", err)
	}
	if err := w.waitSynced(ctx); err != nil {
		t.Fatalf("dnstopo: start: %v", err)
	}
	w.Resolver = &Resolver{IP: ResolverIP, Addr: net.JoinHostPort(ResolverIP, "53")}
	if err := w.startUnbound(ctx); err != nil {
		t.Fatalf("dnstopo: start: %v", err)
	}
	if err := w.waitResolvable(ctx); err != nil {
		t.Fatalf("dnstopo: start: %v", err)
	}
	// Tests start from a cold cache: what start-up looked up must not
	// hide a test's first negative answer or delegation change.
	if err := w.Resolver.Flush(); err != nil {
		t.Fatalf("dnstopo: start: %v", err)
	}
	return w
}

// fill sets the defaults and checks the names.
func (o *Options) fill() error {
	if o.Provider == "" {
		o.Provider = DefaultProvider
	}
	if o.TTL == 0 {
		o.TTL = 2
	}
	if o.NegativeTTL == 0 {
		o.NegativeTTL = 2
	}
	if o.ResolverMaxTTL == 0 {
		o.ResolverMaxTTL = 30
	}
	if o.ResolverMaxNegativeTTL == 0 {
		o.ResolverMaxNegativeTTL = 60
	}
	if o.StartTimeout == 0 {
		o.StartTimeout = 20 * time.Second
	}
	if o.LockTimeout == 0 {
		o.LockTimeout = 8 * time.Minute
	}
	check := func(z string) error {
		if _, ok := dns.IsDomainName(z); !ok || dns.CountLabel(z) < 2 {
			return fmt.Errorf("zone %q: want a domain name below a top-level domain", z)
		}
		return nil
	}
	o.Provider = canon(o.Provider)
	if err := check(o.Provider); err != nil {
		return err
	}
	for _, list := range [][]string{o.ProviderZones, o.CustomerZones, o.Delegated} {
		for i, z := range list {
			list[i] = canon(z)
			if err := check(list[i]); err != nil {
				return err
			}
		}
	}
	for _, d := range o.Delegated {
		if !slices.Contains(o.ProviderZones, d) {
			return fmt.Errorf("delegated zone %q is not one of the provider zones", d)
		}
	}
	return nil
}

// canon lower-cases a name and drops its final dot.
func canon(name string) string {
	name = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(name), "."))
	if name == "" {
		return "."
	}
	return name
}

// fqdn turns a canonical zone name into a fully qualified one.
func fqdn(zone string) string {
	if zone == "." {
		return "."
	}
	return zone + "."
}

// isBelow reports whether name is zone or below it (canonical names).
func isBelow(name, zone string) bool {
	return zone == "." || name == zone || strings.HasSuffix(name, "."+zone)
}

// sortedZones returns the zones parents first, then by name.
func sortedZones(zones map[string]*zoneInfo) []*zoneInfo {
	out := make([]*zoneInfo, 0, len(zones))
	for _, z := range zones {
		out = append(out, z)
	}
	sort.Slice(out, func(i, j int) bool {
		li, lj := labels(out[i].name), labels(out[j].name)
		if li != lj {
			return li < lj
		}
		return out[i].name < out[j].name
	})
	return out
}

// labels counts the labels of a canonical name.
func labels(name string) int {
	if name == "." {
		return 0
	}
	return dns.CountLabel(name + ".")
}

// zoneOf returns the most specific zone of the world that contains name.
func zoneOf(zones map[string]*zoneInfo, name string) *zoneInfo {
	name = canon(name)
	var best *zoneInfo
	for _, z := range zones {
		if isBelow(name, z.name) && (best == nil || labels(z.name) > labels(best.name)) {
			best = z
		}
	}
	return best
}

// parentOf returns the zone that delegates z.
func parentOf(zones map[string]*zoneInfo, z string) *zoneInfo {
	if z == "." {
		return nil
	}
	i := strings.IndexByte(z, '.')
	if i < 0 {
		return zones["."]
	}
	return zoneOf(zones, z[i+1:])
}

// buildZones lays out the zones of the world and the records of each zone
// file: SOA, NS and glue, delegations, and the extra records.
func buildZones(o Options) (map[string]*zoneInfo, error) {
	zones := map[string]*zoneInfo{}
	add := func(name string, role zoneRole) error {
		if z, ok := zones[name]; ok && z.role != role {
			return fmt.Errorf("zone %q is listed for two servers", name)
		}
		neg := o.NegativeTTL
		if v, ok := o.NegativeTTLs[name]; ok {
			neg = v
		} else if v, ok := o.NegativeTTLs[name+"."]; ok {
			neg = v
		}
		zones[name] = &zoneInfo{name: name, role: role, negTTL: neg}
		return nil
	}
	if err := add(".", roleRoot); err != nil {
		return nil, err
	}
	for _, z := range append([]string{o.Provider}, o.ProviderZones...) {
		if err := add(z, roleProvider); err != nil {
			return nil, err
		}
	}
	for _, z := range o.CustomerZones {
		if err := add(z, roleCustomer); err != nil {
			return nil, err
		}
	}
	for name := range zones {
		if name == "." {
			continue
		}
		tld := name[strings.LastIndexByte(name, '.')+1:]
		if _, ok := zones[tld]; !ok {
			zones[tld] = &zoneInfo{name: tld, role: roleRoot, negTTL: o.NegativeTTL}
			if v, ok := o.NegativeTTLs[tld]; ok {
				zones[tld].negTTL = v
			}
		}
	}
	for k := range o.NegativeTTLs {
		if _, ok := zones[canon(k)]; !ok {
			return nil, fmt.Errorf("negative TTL for %q, which is not a zone of the world", k)
		}
	}
	// Apex records: NS and the addresses of in-zone nameservers.
	for _, z := range zones {
		for _, ns := range nsNames(o, z) {
			z.records = append(z.records, fmt.Sprintf("%s NS %s", fqdn(z.name), ns))
		}
		z.records = append(z.records, glue(o, z, z.name)...)
	}
	// Delegations, in the parent zone.
	for _, z := range sortedZones(zones) {
		p := parentOf(zones, z.name)
		if p == nil {
			continue
		}
		if z.role == roleProvider && p.role == roleCustomer && !slices.Contains(o.Delegated, z.name) {
			continue // the customer's part: World.Delegate
		}
		for _, ns := range nsNames(o, z) {
			p.records = append(p.records, fmt.Sprintf("%s NS %s", fqdn(z.name), ns))
		}
		p.records = append(p.records, glue(o, z, p.name)...)
	}
	for _, rr := range o.Records {
		r, err := dns.NewRR(rr)
		if err != nil || r == nil {
			return nil, fmt.Errorf("record %q: %v", rr, err)
		}
		z := zoneOf(zones, r.Header().Name)
		z.records = append(z.records, rr)
	}
	return zones, nil
}

// nsNames returns the NS names of a zone, fully qualified.
func nsNames(o Options, z *zoneInfo) []string {
	switch z.role {
	case roleRoot:
		if z.name == "." {
			return []string{"ns.root-servers."}
		}
		return []string{"ns.nic." + z.name + "."}
	case roleProvider:
		return []string{"ns1." + o.Provider + ".", "ns2." + o.Provider + "."}
	default:
		return []string{"ns." + z.name + "."}
	}
}

// glue returns the address records of z's nameservers that belong in the
// zone file of in (z itself, or the parent holding z's delegation): those
// whose names are below z (in-bailiwick). Names in other zones are found by
// resolvers the ordinary way.
func glue(o Options, z *zoneInfo, in string) []string {
	ip := map[zoneRole]string{roleRoot: RootIP, roleCustomer: CustomersIP}
	var out []string
	for i, ns := range nsNames(o, z) {
		name := canon(ns)
		if z.name != "." && !isBelow(name, z.name) {
			continue
		}
		if z.name == "." && in != "." {
			continue
		}
		addr := ip[z.role]
		if z.role == roleProvider {
			addr = []string{PrimaryIP, SecondaryIP}[i]
		}
		out = append(out, fmt.Sprintf("%s A %s", ns, addr))
	}
	return out
}

// zoneFile renders a zone file.
func (w *World) zoneFile(z *zoneInfo) string {
	var b strings.Builder
	var mname, rname string
	ns := nsNames(w.opts, z)
	mname = ns[0]
	if z.name == "." {
		rname = "hostmaster.root-servers."
	} else {
		rname = "hostmaster." + z.name + "."
	}
	fmt.Fprintf(&b, "$TTL %d\n", w.opts.TTL)
	// Refresh is an hour: the secondary transfers on NOTIFY (or when a test
	// releases it), never on its own during a test.
	fmt.Fprintf(&b, "%s %d IN SOA %s %s 1 3600 600 86400 %d\n", fqdn(z.name), z.negTTL, mname, rname, z.negTTL)
	for _, r := range z.records {
		b.WriteString(r)
		b.WriteByte('\n')
	}
	return b.String()
}

// newTSIG makes a random HMAC-SHA256 key and writes its secret file.
func newTSIG(dir, name, file string) (TSIG, error) {
	k := TSIG{Name: name, Algorithm: "hmac-sha256", SecretFile: filepath.Join(dir, file+".tsig")}
	secret, err := dnsproc.NewSecret(k.SecretFile)
	if err != nil {
		return TSIG{}, err
	}
	k.Secret = secret
	return k, nil
}

// Logs returns the output of every server so far.
func (w *World) Logs() string {
	var b strings.Builder
	for _, s := range []*Server{w.Root, w.Primary, w.Secondary, w.Customers} {
		if s != nil && s.proc != nil {
			fmt.Fprintf(&b, "--- knotd %s (%s)\n%s\n", s.Name, s.IP, s.proc.Logs())
		}
	}
	if w.Resolver != nil && w.Resolver.proc != nil {
		fmt.Fprintf(&b, "--- unbound (%s)\n%s\n", w.Resolver.IP, w.Resolver.proc.Logs())
	}
	return b.String()
}

// ZoneOf returns the zone of the world that holds name (the most specific
// one that contains it), without the final dot.
func (w *World) ZoneOf(name string) string {
	return zoneOf(w.zones, name).name
}

// serverFor returns the server that takes updates for zone.
func (w *World) serverFor(z *zoneInfo) *Server {
	switch z.role {
	case roleRoot:
		return w.Root
	case roleProvider:
		return w.Primary
	default:
		return w.Customers
	}
}
