package publish

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/miekg/dns"

	"github.com/authmilter/authmilter/keys"
)

// maxNS bounds the nameservers listed for a delegation (the most a
// referral can usefully hold).
const maxNS = 13

// CustomerRecord is a record the owner of a customer domain must add to
// their own zone so that receivers find a key published by the provider:
// a CNAME to the provider's name (CNAME mode), or the NS records that
// delegate the zone holding the key records to the provider's nameservers.
type CustomerRecord struct {
	// Name is the owner name, fully qualified (with the final dot).
	Name string `json:"name"`
	// Type is "CNAME" or "NS".
	Type string `json:"type"`
	// Value is the target name, fully qualified.
	Value string `json:"value"`
}

// String formats the record as a zone file line, e.g.
// "s1._domainkey.customer.com. CNAME s1.customer.com.dkim.esp.example.".
func (r CustomerRecord) String() string { return r.Name + " " + r.Type + " " + r.Value }

// CNAMERecord returns the CNAME the customer adds in CNAME mode:
// <selector>._domainkey.<domain>. CNAME keys.CNAMETarget(...).
func CNAMERecord(domain, selector, cnameZone string) CustomerRecord {
	return CustomerRecord{Name: dns.Fqdn(strings.ToLower(keys.RecordName(domain, selector))), Type: "CNAME",
		Value: dns.Fqdn(keys.CNAMETarget(domain, selector, cnameZone))}
}

// CustomerRecords returns the records the owner of domain must have in
// their zone for the record of selector to be found: in CNAME mode the
// CNAME (no question asked); when the record's zone is a zone below the
// domain that a target serves (a delegated selector zone such as
// myesp._domainkey.customer.com), its NS records as the target serves
// them; none when the target serves the domain's own zone (or one above).
func (s *Set) CustomerRecords(ctx context.Context, domain, selector string) ([]CustomerRecord, error) {
	if z := s.CNAMEZone(domain); z != "" {
		return []CustomerRecord{CNAMERecord(domain, selector, z)}, nil
	}
	p, err := s.Locate(ctx, domain, selector)
	if err != nil {
		return nil, fmt.Errorf("publish: %s/%s: %w", domain, selector, err)
	}
	return p.CustomerRecords(ctx)
}

// CustomerRecords returns the records the customer must have for the
// record at this place to be found (see Set.CustomerRecords).
func (p *Place) CustomerRecords(ctx context.Context) ([]CustomerRecord, error) {
	if p.CNAMEZone != "" {
		return []CustomerRecord{CNAMERecord(p.Domain, p.Selector, p.CNAMEZone)}, nil
	}
	domain := dns.Fqdn(strings.ToLower(p.Domain))
	if strings.EqualFold(p.Zone, domain) || !dns.IsSubDomain(domain, p.Zone) {
		return nil, nil // the domain's own zone, or one above it: nothing to delegate
	}
	q := new(dns.Msg)
	q.SetQuestion(p.Zone, dns.TypeNS)
	q.RecursionDesired = false
	r, err := p.Target.exchange(ctx, q, false)
	if err != nil {
		return nil, fmt.Errorf("publish: NS records of %s: %w", p.Zone, err)
	}
	if r.Rcode != dns.RcodeSuccess || !r.Authoritative {
		return nil, fmt.Errorf("publish: NS records of %s: server %s answered %s (authoritative: %v)", p.Zone, p.Target.cfg.Server,
			dns.RcodeToString[r.Rcode], r.Authoritative)
	}
	var out []CustomerRecord
	for _, rr := range r.Answer {
		if ns, ok := rr.(*dns.NS); ok && strings.EqualFold(ns.Hdr.Name, p.Zone) && len(out) < maxNS {
			out = append(out, CustomerRecord{Name: strings.ToLower(p.Zone), Type: "NS", Value: strings.ToLower(dns.Fqdn(ns.Ns))})
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("publish: server %s has no NS records for zone %s", p.Target.cfg.Server, p.Zone)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Value < out[j].Value })
	return out, nil
}
