package keys

import "strings"

// CNAMETarget returns the name in the provider's zone cnameZone where the
// record of domain/selector is published in CNAME mode: the customer adds
// <selector>._domainkey.<domain> CNAME <selector>.<domain>.<cnameZone>.
// The domain is kept whole in the name so that two customers never share
// a name, whatever their selectors.
func CNAMETarget(domain, selector, cnameZone string) string {
	return strings.ToLower(selector + "." + strings.TrimSuffix(domain, ".") + "." + strings.TrimSuffix(cnameZone, "."))
}
