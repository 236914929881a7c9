// Package policy is authmilter's brain: an immutable snapshot compiled from
// the configuration and the key table that decides, for one transaction,
// whether it is outbound, which DKIM signatures it gets, and how inbound mail
// is authenticated. It never touches sockets: the milter package feeds it a
// transaction and applies the Decision it returns.
package policy

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"
	"weak"

	"github.com/authmilter/authmilter/keys"
	"github.com/authmilter/authmilter/policy/dkimsign"
)

// Policy is one compiled snapshot. It is never modified after Compile; a
// reload compiles a new one and the daemon swaps an atomic pointer, so a
// transaction that took a snapshot finishes with the keys it started with.
type Policy struct {
	cfg         *Config
	networks    []netip.Prefix
	daemonNames map[string]bool
	table       *keys.Table
	// publication holds the DNS state of every key (Unchecked when
	// require_published is off).
	publication map[*keys.Key]keys.Publication
	// active holds the keys to sign with, per d= domain; activeCount
	// counts them.
	active      map[string][]*keys.Key
	activeCount int
	// states counts the keys in each publication state.
	states map[keys.State]int
	// ruleNamed holds the keys that a rule's selector names: they sign for
	// that rule only, never as their domain's active key. namedKeys finds
	// every key whose selector a rule names by "domain/selector", for the
	// signing path.
	ruleNamed   map[*keys.Key]bool
	namedKeys   map[string]*keys.Key
	rules       []RuleConfig
	headerCanon dkimsign.Canon
	bodyCanon   dkimsign.Canon
	headerSet   map[string]bool
	oversign    map[string]bool
	resolver    Resolver
	// dkimKeys caches parsed DKIM public keys for the verifier; each
	// snapshot has its own, so a reload starts empty.
	dkimKeys *dkimKeyCache
	// CompiledAt is when the snapshot was built.
	CompiledAt time.Time
	// base is the snapshot CompileFrom started from, and redone the
	// domains it compiled again (see changedDomains). Weak: a chain of
	// reloads must not keep every old snapshot alive.
	base   weak.Pointer[Policy]
	redone []string
}

// Resolver is the DNS interface the policy needs for DKIM keys, SPF and
// DMARC. *resolve.Resolver implements it; errors are *net.DNSError so that
// "no record" and "try later" stay distinguishable.
type Resolver interface {
	LookupTXT(ctx context.Context, name string) ([]string, error)
	LookupMX(ctx context.Context, name string) ([]*net.MX, error)
	LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error)
	LookupAddr(ctx context.Context, addr string) (names []string, err error)
}

// Compile builds a snapshot: it loads the key table and, when
// keys.require_published is set, checks every key against DNS. Any error
// (unreadable or insecure key, bad config) fails the whole compile so that a
// reload keeps the previous snapshot. A key that is merely not yet published
// is not an error: it is inactive until a later compile finds it.
func Compile(ctx context.Context, cfg *Config, r Resolver) (*Policy, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	table, err := keys.LoadDir(cfg.Keys.Dir)
	if err != nil {
		return nil, err
	}
	return CompileTable(ctx, cfg, table, r)
}

// CompileTable is Compile with the key table of cfg.Keys.Dir already
// loaded: the daemon checks one table twice at start, against what it
// saved and against DNS, and parses the keys only once. Snapshots may
// share a table (it is immutable).
func CompileTable(ctx context.Context, cfg *Config, table *keys.Table, r Resolver) (*Policy, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	p := newPolicy(cfg, table, r)
	p.checkPublication(ctx, table.All())
	pins := map[string][]string{}
	for d, s := range cfg.Keys.Pin {
		pins[strings.ToLower(d)] = s
	}
	named := map[string]bool{}        // "domain/selector" named by a rule
	ruleSelector := map[string]bool{} // selectors some rule names
	for _, r := range cfg.Signing.Rules {
		if r.Selector == "" {
			continue
		}
		ruleSelector[strings.ToLower(r.Selector)] = true
		d := strings.ToLower(strings.TrimSuffix(r.Domain, "."))
		if d == "" {
			d = strings.ToLower(strings.TrimSuffix(r.From, "."))
		}
		named[d+"/"+strings.ToLower(r.Selector)] = true
	}
	for _, d := range table.Domains() {
		if len(named) == 0 && len(ruleSelector) == 0 {
			// The common case, without a string per key.
			if act := keys.Active(table.Keys(d), pins[d], p.usable); len(act) > 0 {
				p.active[d] = act
				p.activeCount += len(act)
			}
			continue
		}
		var candidates []*keys.Key
		for _, k := range table.Keys(d) {
			if ruleSelector[k.Selector] {
				// Also under a subdomain's own folder, where a rule
				// without domain may sign (see ruleDomain).
				p.namedKeys[k.ID()] = k
			}
			if named[k.ID()] {
				p.ruleNamed[k] = true
				continue
			}
			candidates = append(candidates, k)
		}
		if act := keys.Active(candidates, pins[d], p.usable); len(act) > 0 {
			p.active[d] = act
			p.activeCount += len(act)
		}
	}
	for _, pub := range p.publication {
		p.states[pub.State]++
	}
	return p, nil
}

// newPolicy is a snapshot of cfg and table without keys checked or chosen.
func newPolicy(cfg *Config, table *keys.Table, r Resolver) *Policy {
	p := &Policy{
		cfg:         cfg,
		daemonNames: map[string]bool{},
		publication: make(map[*keys.Key]keys.Publication, len(table.All())),
		active:      make(map[string][]*keys.Key, len(table.Domains())),
		states:      map[keys.State]int{},
		ruleNamed:   map[*keys.Key]bool{},
		namedKeys:   map[string]*keys.Key{},
		rules:       cfg.Signing.Rules,
		headerSet:   map[string]bool{},
		oversign:    map[string]bool{},
		resolver:    r,
		dkimKeys:    newDKIMKeyCache(DKIMKeyCacheSize),
		CompiledAt:  time.Now(),
	}
	for _, n := range cfg.Outbound.Networks {
		p.networks = append(p.networks, netip.MustParsePrefix(n).Masked())
	}
	for _, d := range cfg.Outbound.DaemonNames {
		p.daemonNames[d] = true
	}
	p.headerCanon, p.bodyCanon, _ = parseCanonicalization(cfg.Signing.Canonicalization)
	for _, h := range cfg.Signing.Headers {
		p.headerSet[strings.ToLower(h)] = true
	}
	for _, h := range cfg.Signing.Oversign {
		p.oversign[strings.ToLower(h)] = true
	}
	p.table = table
	return p
}

// usable reports whether the snapshot may sign with k: its record is
// published (or publication is not checked).
func (p *Policy) usable(k *keys.Key) bool {
	st := p.publication[k].State
	return st == keys.Published || st == keys.Unchecked
}

// checkPublication looks up the records of ks: through the resolver's
// PublicationChecker when it has one (the daemon's: every nameserver, and
// the activation wait), else by one TXT lookup per key.
func (p *Policy) checkPublication(ctx context.Context, ks []*keys.Key) {
	if !p.cfg.Keys.RequirePublished || p.resolver == nil {
		for _, k := range ks {
			p.publication[k] = keys.Publication{State: keys.Unchecked}
		}
		return
	}
	if pc, ok := p.resolver.(PublicationChecker); ok {
		p.applyChecks(pc.CheckPublication(ctx, ks), ks)
		return
	}
	for k, pub := range keys.CheckAllPublished(ctx, p.resolver.LookupTXT, ks) {
		p.publication[k] = pub
	}
}

// ReasonDNSTempError is the Decision.UnsignedReason for outbound mail from a
// domain whose keys are all inactive because their DNS records could not be
// looked up (temperror, with no last good answer): a refinement of
// ReasonNoActiveKey.
const ReasonDNSTempError = "dns_temperror"

// keysInTempError reports whether a d= domain that the signing rules give
// fromDomain has keys whose DNS lookup failed temporarily: why none is
// active, when no key is.
func (p *Policy) keysInTempError(fromDomain string) bool {
	fromDomain = strings.ToLower(strings.TrimSuffix(fromDomain, "."))
	for _, r := range p.rules {
		d, ok := p.ruleDomain(r, fromDomain)
		if !ok {
			continue
		}
		for _, k := range p.table.Keys(d) {
			if p.publication[k].State == keys.TempError {
				return true
			}
		}
	}
	return false
}

// Config returns the configuration the snapshot was compiled from. Callers
// must not modify it.
func (p *Policy) Config() *Config { return p.cfg }

// Table returns the key table of the snapshot.
func (p *Policy) Table() *keys.Table { return p.table }

// Publication returns the DNS state of a key as seen by this snapshot.
func (p *Policy) Publication(k *keys.Key) keys.Publication { return p.publication[k] }

// ActiveKeys returns the keys used to sign for d=domain.
func (p *Policy) ActiveKeys(domain string) []*keys.Key { return p.active[strings.ToLower(domain)] }

// ActiveCount is the number of keys the snapshot signs with.
func (p *Policy) ActiveCount() int { return p.activeCount }

// CountState is the number of keys in publication state st.
func (p *Policy) CountState(st keys.State) int { return p.states[st] }

// KeyDeactivations lists, for logging after a reload, the keys that old
// signed with and cur replaces with no key of the same algorithm, e.g.
// "key deactivated d=example.com s=2026-10 a=rsa-sha256; nothing replaces it".
func KeyDeactivations(old, cur *Policy) []string {
	if old == nil {
		return nil
	}
	var out []string
	for d, olds := range activeOf(old, cur, old) {
		now := cur.active[d]
		if slices.Equal(olds, now) {
			continue
		}
		for _, o := range olds {
			if !slices.ContainsFunc(now, func(k *keys.Key) bool { return k.Algorithm == o.Algorithm }) {
				out = append(out, fmt.Sprintf("key deactivated d=%s s=%s a=%s; nothing replaces it", d, o.Selector, o.Algorithm))
			}
		}
	}
	sort.Strings(out)
	return out
}

// activeOf returns the active keys of from (old or cur) in the domains
// where old and cur may differ: all of them, unless cur was compiled from
// old by CompileFrom.
func activeOf(old, cur, from *Policy) map[string][]*keys.Key {
	ds, ok := changedDomains(old, cur)
	if !ok {
		return from.active
	}
	out := make(map[string][]*keys.Key, len(ds))
	for _, d := range ds {
		if ks, ok := from.active[d]; ok {
			out[d] = ks
		}
	}
	return out
}

// KeyChanges lists, for logging after a reload, the keys that became active
// and the ones they replaced, e.g. "key activated d=example.com s=2026-12
// a=rsa-sha256 (replaces 2026-11)".
func KeyChanges(old, cur *Policy) []string {
	var out []string
	for d, now := range activeOf(old, cur, cur) {
		var prev []*keys.Key
		if old != nil {
			prev = old.active[d]
			if slices.Equal(prev, now) {
				continue
			}
		}
		for _, k := range now {
			replaced := ""
			same := false
			for _, o := range prev {
				if o.Algorithm == k.Algorithm {
					if o.Selector == k.Selector {
						same = true
					} else {
						replaced = o.Selector
					}
				}
			}
			if same {
				continue
			}
			msg := fmt.Sprintf("key activated d=%s s=%s a=%s", d, k.Selector, k.Algorithm)
			if replaced != "" {
				msg += " (replaces " + replaced + ")"
			}
			out = append(out, msg)
		}
	}
	sort.Strings(out)
	return out
}

// Envelope is what the MTA told us about a transaction before its header.
type Envelope struct {
	// ClientIP is the SMTP client's address; invalid for local submission
	// without one.
	ClientIP netip.Addr
	// ClientHost is the client's host name as the MTA reports it.
	ClientHost string
	// Helo is the HELO/EHLO argument.
	Helo string
	// MailFrom is the envelope sender without angle brackets; empty for <>.
	MailFrom string
	// Rcpts are the envelope recipients.
	Rcpts []string
	// AuthUser is {auth_authen}: set when the client used SMTP AUTH.
	AuthUser string
	// DaemonName is {daemon_name}.
	DaemonName string
	// QueueID is the MTA queue ID (macro i), for logs.
	QueueID string
}

// Direction tells whether a transaction is our own outbound mail, and why.
// Inbound mail is never signed, whatever its From domain.
func (p *Policy) Direction(env *Envelope) (outbound bool, reason string) {
	if p.cfg.Outbound.Authenticated && env.AuthUser != "" {
		return true, "auth"
	}
	if env.DaemonName != "" && p.daemonNames[env.DaemonName] {
		return true, "daemon=" + env.DaemonName
	}
	if env.ClientIP.IsValid() {
		ip := env.ClientIP.Unmap()
		for _, n := range p.networks {
			if n.Contains(ip) {
				return true, "network=" + n.String()
			}
		}
	}
	return false, ""
}

func parseCanonicalization(s string) (header, body dkimsign.Canon, err error) {
	h, b, ok := strings.Cut(s, "/")
	if !ok {
		b = "simple" // RFC 6376 §3.5: c=relaxed means relaxed/simple
	}
	header, okh := dkimsign.ParseCanon(h)
	body, okb := dkimsign.ParseCanon(b)
	if !okh || !okb {
		return 0, 0, fmt.Errorf("%q: want relaxed/relaxed, relaxed/simple, simple/relaxed or simple/simple", s)
	}
	return header, body, nil
}
