package policy

import (
	"fmt"
	"math"
	"net/netip"
	"strings"
	"time"
)

// Enabled reports whether the built-in key DNS server runs.
func (k KeyDNSConfig) Enabled() bool { return len(k.Zones) > 0 }

// validate checks [keydns]; the checks that need the key table (a zone
// without keys, overlapping zones) are made where the zones are built
// (keys/dnsserver), which also reads the TSIG secret file.
func (k KeyDNSConfig) validate() []error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("keydns.%s: "+format, append([]any{key}, args...)...))
	}
	if !k.Enabled() {
		if len(k.Listen) > 0 {
			bad("zones", "at least one zone is required with keydns.listen (nothing would be served)")
		}
		return errs
	}
	if len(k.Listen) == 0 {
		bad("listen", "at least one address is required with keydns.zones")
	}
	for _, l := range k.Listen {
		if _, err := NormalizeDNSServer(l); err != nil {
			bad("listen", "%v", err)
		}
	}
	seen := map[string]bool{}
	for _, z := range k.Zones {
		n := strings.ToLower(strings.TrimSuffix(strings.TrimSpace(z), "."))
		if !validKeyDNSZone(n) {
			bad("zones", "%q is neither a zone name below a top-level domain nor a pattern whose \"*\" labels stand for one or more labels (e.g. \"myesp._domainkey.*\")", z)
			continue
		}
		if seen[n] {
			bad("zones", "%q is listed twice", z)
		}
		seen[n] = true
	}
	if len(k.Nameservers) == 0 {
		bad("nameservers", "at least one NS name is required with keydns.zones")
	}
	for _, ns := range k.Nameservers {
		if !validDomain(ns) || !strings.Contains(strings.TrimSuffix(ns, "."), ".") {
			bad("nameservers", "%q is not a host name", ns)
		}
	}
	if h := k.Hostmaster; h != "" {
		local, domain, isMail := strings.Cut(h, "@")
		if isMail && (local == "" || strings.ContainsAny(local, " \\\"@") || !validDomain(domain)) ||
			!isMail && !validDomain(h) {
			bad("hostmaster", "%q is neither a mail address nor a domain name", h)
		}
	}
	for _, d := range []struct {
		key string
		v   time.Duration
	}{{"ttl", k.TTL.Duration}, {"negative_ttl", k.NegativeTTL.Duration}} {
		if d.v < time.Second || d.v/time.Second > math.MaxInt32 {
			bad(d.key, "must be between 1s and 68 years (RFC 2181 §8), got %v", d.v)
		}
	}
	if k.RevokedFor.Duration < 0 {
		bad("revoked_for", "must not be negative")
	}
	for _, n := range k.AllowTransfer {
		if err := checkNetwork(n); err != nil {
			bad("allow_transfer", "%v", err)
		}
	}
	for _, a := range k.Notify {
		if _, err := NormalizeDNSServer(a); err != nil {
			bad("notify", "%v", err)
		}
	}
	if k.TSIGName != "" {
		if k.TSIGSecretFile == "" {
			bad("tsig_secret_file", "is required with tsig_name")
		}
		if !validDomain(k.TSIGName) {
			bad("tsig_name", "%q is not a key name (a domain name)", k.TSIGName)
		}
		switch strings.ToLower(k.TSIGAlgorithm) {
		case "", "hmac-sha256", "hmac-sha384", "hmac-sha512", "hmac-sha224", "hmac-sha1":
		default:
			bad("tsig_algorithm", "%q: want hmac-sha256, hmac-sha384, hmac-sha512, hmac-sha224 or hmac-sha1", k.TSIGAlgorithm)
		}
	} else if k.TSIGSecretFile != "" {
		bad("tsig_name", "is required with tsig_secret_file")
	}
	return errs
}

// validKeyDNSZone accepts a zone name below a top-level domain, or a
// pattern (validZonePattern).
func validKeyDNSZone(n string) bool {
	return validZonePattern(n) && (strings.Contains(n, "*") || strings.Contains(n, "."))
}

// checkNetwork accepts a network in CIDR notation without host bits, or
// a bare address.
func checkNetwork(s string) error {
	if p, err := netip.ParsePrefix(s); err == nil {
		if p != p.Masked() {
			return fmt.Errorf("%q has bits set after the prefix length (did you mean %s?)", s, p.Masked())
		}
		return nil
	}
	if _, err := netip.ParseAddr(s); err != nil {
		return fmt.Errorf("%q is neither a network (CIDR) nor an address", s)
	}
	return nil
}
