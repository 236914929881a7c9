package publish

import (
	"context"
	"fmt"
	"strings"

	"github.com/miekg/dns"

	"github.com/authmilter/authmilter/keys"
)

// Set is the publication targets of a configuration in the order they are
// tried ([[keys.publish.target]] in order, then [keys.publish]), and the
// CNAME-mode rule that says where a domain's records go.
type Set struct {
	targets   []*Updater
	cnameZone func(domain string) string
}

// NewSet returns the set of targets, tried in the order given. cnameZone
// returns the provider zone of a domain in CNAME mode, "" otherwise
// (policy.KeysConfig.CNAMEZoneFor); nil: no domain is in CNAME mode.
func NewSet(cnameZone func(domain string) string, targets ...*Updater) *Set {
	if cnameZone == nil {
		cnameZone = func(string) string { return "" }
	}
	return &Set{targets: targets, cnameZone: cnameZone}
}

// Targets returns the targets in the order they are tried.
func (s *Set) Targets() []*Updater { return s.targets }

// Empty reports whether the set has no target: records are published by
// the administrator.
func (s *Set) Empty() bool { return s == nil || len(s.targets) == 0 }

// CNAMEZone returns the provider zone of domain in CNAME mode, "" when the
// domain's records are published at their own names.
func (s *Set) CNAMEZone(domain string) string {
	if s == nil {
		return ""
	}
	return s.cnameZone(domain)
}

// RecordName returns the name, without the final dot, where the TXT record
// of domain/selector is published: keys.RecordName, or in CNAME mode
// keys.CNAMETarget under the provider's zone.
func (s *Set) RecordName(domain, selector string) string {
	if z := s.CNAMEZone(domain); z != "" {
		return keys.CNAMETarget(domain, selector, z)
	}
	return keys.RecordName(domain, selector)
}

// Place is where the record of one domain/selector is published.
type Place struct {
	// Domain and Selector name the key.
	Domain, Selector string
	// Name is the owner name of the TXT record (fully qualified).
	Name string
	// Zone is the zone that holds Name (fully qualified).
	Zone string
	// Target is the server that takes updates for Zone.
	Target *Updater
	// CNAMEZone is the provider's zone in CNAME mode ("" otherwise): the
	// customer's name <selector>._domainkey.<domain>. must be a CNAME to
	// Name.
	CNAMEZone string
}

// Locate chooses the target for the record of domain/selector: the first
// target whose server is authoritative for the zone that holds the
// record's name and whose zone patterns match that zone. When none does,
// the error (a *NoTargetError) tells what each server said.
func (s *Set) Locate(ctx context.Context, domain, selector string) (*Place, error) {
	name := dns.CanonicalName(s.RecordName(domain, selector))
	p := &Place{Domain: domain, Selector: selector, Name: name, CNAMEZone: s.CNAMEZone(domain)}
	if s.Empty() {
		return nil, &NoTargetError{Name: name}
	}
	nt := &NoTargetError{Name: name}
	for _, u := range s.targets {
		zone, why, err := u.zoneFor(ctx, name)
		if err != nil {
			// A target that could not be asked might have been the right
			// one: choosing a later one on partial information could
			// publish at the wrong place.
			return nil, fmt.Errorf("choosing the server for %s: %w; nothing was published", name, err)
		}
		if zone != "" {
			p.Zone, p.Target = zone, u
			return p, nil
		}
		nt.Verdicts = append(nt.Verdicts, u.cfg.Server+": "+why)
	}
	return nil, nt
}

// NoTargetError says that no target takes the record at Name.
type NoTargetError struct {
	// Name is the record's owner name.
	Name string
	// Verdicts say, per target, why it was not chosen ("server: why").
	Verdicts []string
}

func (e *NoTargetError) Error() string {
	if len(e.Verdicts) == 0 {
		return fmt.Sprintf("%s: no publication target is configured ([keys.publish] server or [[keys.publish.target]])", e.Name)
	}
	return fmt.Sprintf("no publication target takes %s: %s; the record must go to the primary server of the zone that holds it (add a [[keys.publish.target]] for it, or publish it by hand)",
		e.Name, strings.Join(e.Verdicts, "; "))
}

// takes reports whether zone matches the target's zone patterns (any zone
// when it has none).
func (u *Updater) takes(zone string) bool {
	if len(u.cfg.Zones) == 0 {
		return true
	}
	for _, p := range u.cfg.Zones {
		if u.match(p, zone) {
			return true
		}
	}
	return false
}

func (u *Updater) match(pattern, zone string) bool {
	if u.cfg.Match != nil {
		return u.cfg.Match(pattern, strings.TrimSuffix(zone, "."))
	}
	return strings.EqualFold(strings.TrimSuffix(pattern, "."), strings.TrimSuffix(zone, "."))
}

// mayTake reports whether some zone that could hold name (name itself or
// one of its ancestors) matches the target's zone patterns: a target that
// cannot take the name is not asked at all.
func (u *Updater) mayTake(name string) bool {
	if len(u.cfg.Zones) == 0 {
		return true
	}
	labels := dns.SplitDomainName(name)
	for i := range labels {
		if u.takes(strings.Join(labels[i:], ".")) {
			return true
		}
	}
	return false
}

// zoneFor returns the zone (fully qualified) that holds name when this
// target takes updates for it; otherwise "" and why not, in words. err is
// set only when the server could not be asked (network error, SERVFAIL).
func (u *Updater) zoneFor(ctx context.Context, name string) (zone, why string, err error) {
	if u.cfg.Zone != "" {
		// keys.publish.zone: the configured zone, no question asked (the
		// server may allow updates but not queries).
		if !dns.IsSubDomain(u.cfg.Zone, name) {
			return "", fmt.Sprintf("%s is not in its zone %s (keys.publish.zone)", name, u.cfg.Zone), nil
		}
		if !u.takes(u.cfg.Zone) {
			return "", fmt.Sprintf("its zone %s is not in its zones %s", u.cfg.Zone, strings.Join(u.cfg.Zones, ", ")), nil
		}
		return u.cfg.Zone, "", nil
	}
	if !u.mayTake(name) {
		return "", fmt.Sprintf("not asked: no zone holding %s matches its zones %s", name, strings.Join(u.cfg.Zones, ", ")), nil
	}
	zone, why, err = u.soa(ctx, name)
	if err != nil || zone == "" {
		return "", why, err
	}
	if !u.takes(zone) {
		return "", fmt.Sprintf("authoritative for zone %s, which is not in its zones %s", strings.TrimSuffix(zone, "."), strings.Join(u.cfg.Zones, ", ")), nil
	}
	return zone, "", nil
}

// soa asks the server (RD=0) for the SOA of name and returns the zone that
// holds name if the server answers authoritatively for it: the answer's
// SOA for a zone apex, the authority section's otherwise.
func (u *Updater) soa(ctx context.Context, name string) (zone, why string, err error) {
	q := new(dns.Msg)
	q.SetQuestion(name, dns.TypeSOA)
	q.RecursionDesired = false
	r, err := u.exchange(ctx, q, false)
	if err != nil {
		return "", "", fmt.Errorf("find the zone of %s: %w", name, err)
	}
	switch r.Rcode {
	case dns.RcodeSuccess, dns.RcodeNameError:
	case dns.RcodeServerFailure:
		return "", "", fmt.Errorf("find the zone of %s: server %s answered SERVFAIL", name, u.cfg.Server)
	case dns.RcodeRefused:
		return "", "answered REFUSED (not authoritative for the zone that holds it)", nil
	default:
		return "", "answered " + dns.RcodeToString[r.Rcode], nil
	}
	if !r.Authoritative {
		for _, rr := range r.Ns {
			if ns, ok := rr.(*dns.NS); ok && dns.IsSubDomain(ns.Hdr.Name, name) {
				return "", fmt.Sprintf("not authoritative: it refers %s to the nameservers of %s (%s)", name,
					strings.TrimSuffix(ns.Hdr.Name, "."), strings.TrimSuffix(ns.Ns, ".")), nil
			}
		}
		return "", "not authoritative for the zone that holds it (no AA flag)", nil
	}
	for _, sec := range [][]dns.RR{r.Answer, r.Ns} {
		for _, rr := range sec {
			if soa, ok := rr.(*dns.SOA); ok && dns.IsSubDomain(soa.Hdr.Name, name) {
				return dns.CanonicalName(soa.Hdr.Name), "", nil
			}
		}
	}
	for _, rr := range r.Answer {
		// An alias: the answer follows it out of the zone. The alias is in
		// the zone of its parent (a zone apex cannot be an alias), which
		// one more question finds; a name has at most 127 labels, so this
		// ends.
		if _, ok := rr.(*dns.CNAME); ok && strings.EqualFold(rr.Header().Name, name) {
			if i, end := dns.NextLabel(name, 0); !end {
				return u.soa(ctx, name[i:])
			}
		}
	}
	return "", "sent no SOA of a zone holding it", nil
}
