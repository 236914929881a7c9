package policy

import "fmt"

// Enabled reports whether the built-in key DNS server runs.
func (k KeyDNSConfig) Enabled() bool { return len(k.Zones) > 0 }

// validate checks [keydns]; the checks that need the key table (a zone
// without keys, overlapping instances of a pattern) are made where the
// zones are built (keys/dnsserver).
func (k KeyDNSConfig) validate() []error {
	var errs []error
	if !k.Enabled() {
		return nil
	}
	if len(k.Listen) == 0 {
		errs = append(errs, fmt.Errorf("keydns.listen: at least one address is required with keydns.zones"))
	}
	if len(k.Nameservers) == 0 {
		errs = append(errs, fmt.Errorf("keydns.nameservers: at least one NS name is required with keydns.zones"))
	}
	return errs
}
