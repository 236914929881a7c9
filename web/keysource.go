package web

import (
	"time"

	"github.com/authmilter/authmilter/keys"
	"github.com/authmilter/authmilter/policy"
)

// keySource is what the keys pages read of a snapshot. *policy.Policy
// provides it through policySource; the benchmarks at 100,000 domains use
// a table made in memory, since writing 100,000 key folders to disk would
// measure the file system, not the page.
type keySource interface {
	// Domains are the key table's domains in the table's order.
	Domains() []string
	// Keys are a domain's keys in the table's order.
	Keys(domain string) []*keys.Key
	// KeyCount is the number of keys in the table.
	KeyCount() int
	// Publication is a key's DNS state as the snapshot saw it.
	Publication(k *keys.Key) keys.Publication
	// Signs reports whether the snapshot signs with k.
	Signs(k *keys.Key) bool
	// ActiveCount is the number of active keys of domain.
	ActiveCount(domain string) int
	// InactiveReason says why k does not sign.
	InactiveReason(k *keys.Key, pub keys.Publication, activeFrom time.Time) string
	// Config is the snapshot's configuration.
	Config() *policy.Config
}

// policySource is a keySource over a compiled snapshot.
type policySource struct{ p *policy.Policy }

func (s policySource) Domains() []string                        { return s.p.Table().Domains() }
func (s policySource) Keys(d string) []*keys.Key                { return s.p.Table().Keys(d) }
func (s policySource) KeyCount() int                            { return len(s.p.Table().All()) }
func (s policySource) Publication(k *keys.Key) keys.Publication { return s.p.Publication(k) }
func (s policySource) Signs(k *keys.Key) bool                   { return s.p.Signs(k) }
func (s policySource) ActiveCount(d string) int                 { return len(s.p.ActiveKeys(d)) }
func (s policySource) Config() *policy.Config                   { return s.p.Config() }
func (s policySource) InactiveReason(k *keys.Key, pub keys.Publication, at time.Time) string {
	return s.p.InactiveReason(k, pub, at)
}
