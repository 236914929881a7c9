package policy

import (
	"strings"
	"testing"
)

func TestKeyDNSValidate(t *testing.T) {
	good := func() KeyDNSConfig {
		k := DefaultConfig().KeyDNS
		k.Listen = []string{"127.0.0.1", "[::1]:5353"}
		k.Zones = []string{"myesp._domainkey.*", "dkim.myesp.example"}
		k.Nameservers = []string{"ns1.myesp.example", "ns2.myesp.example."}
		k.AllowTransfer = []string{"192.0.2.0/24", "2001:db8::1"}
		k.Notify = []string{"192.0.2.2", "192.0.2.3:5300"}
		k.TSIGName, k.TSIGSecretFile = "transfer", "/etc/authmilter/transfer.key"
		return k
	}
	cases := []struct {
		name string
		edit func(*KeyDNSConfig)
		want string // "" for valid
	}{
		{"valid", func(*KeyDNSConfig) {}, ""},
		{"off", func(k *KeyDNSConfig) { *k = DefaultConfig().KeyDNS }, ""},
		{"mail hostmaster", func(k *KeyDNSConfig) { k.Hostmaster = "dns.admin@myesp.example" }, ""},
		{"listen without zones", func(k *KeyDNSConfig) { k.Zones = nil }, "keydns.zones: at least one zone"},
		{"zones without listen", func(k *KeyDNSConfig) { k.Listen = nil }, "keydns.listen: at least one address"},
		{"bad listen", func(k *KeyDNSConfig) { k.Listen = []string{"ns1.myesp.example:53"} }, "keydns.listen:"},
		{"bad zone", func(k *KeyDNSConfig) { k.Zones = []string{"dkim myesp.example"} }, "keydns.zones:"},
		{"top-level zone", func(k *KeyDNSConfig) { k.Zones = []string{"example"} }, "keydns.zones:"},
		{"zone twice", func(k *KeyDNSConfig) { k.Zones = []string{"dkim.myesp.example", "DKIM.myesp.example."} }, "listed twice"},
		{"no nameservers", func(k *KeyDNSConfig) { k.Nameservers = nil }, "keydns.nameservers: at least one"},
		{"bad nameserver", func(k *KeyDNSConfig) { k.Nameservers = []string{"ns1"} }, "keydns.nameservers:"},
		{"bad hostmaster", func(k *KeyDNSConfig) { k.Hostmaster = "a b@c" }, "keydns.hostmaster:"},
		{"zero ttl", func(k *KeyDNSConfig) { k.TTL.Duration = 0 }, "keydns.ttl:"},
		{"zero negative ttl", func(k *KeyDNSConfig) { k.NegativeTTL.Duration = 0 }, "keydns.negative_ttl:"},
		{"negative revoked_for", func(k *KeyDNSConfig) { k.RevokedFor.Duration = -1 }, "keydns.revoked_for:"},
		{"host bits", func(k *KeyDNSConfig) { k.AllowTransfer = []string{"192.0.2.1/24"} }, "did you mean 192.0.2.0/24"},
		{"bad network", func(k *KeyDNSConfig) { k.AllowTransfer = []string{"everyone"} }, "keydns.allow_transfer:"},
		{"bad notify", func(k *KeyDNSConfig) { k.Notify = []string{"ns2.myesp.example"} }, "keydns.notify:"},
		{"tsig without file", func(k *KeyDNSConfig) { k.TSIGSecretFile = "" }, "keydns.tsig_secret_file: is required"},
		{"file without tsig", func(k *KeyDNSConfig) { k.TSIGName = "" }, "keydns.tsig_name: is required"},
		{"bad tsig algorithm", func(k *KeyDNSConfig) { k.TSIGAlgorithm = "hmac-md5" }, "keydns.tsig_algorithm:"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			k := good()
			c.edit(&k)
			errs := k.validate()
			if c.want == "" {
				if len(errs) > 0 {
					t.Fatalf("errors %v", errs)
				}
				return
			}
			for _, err := range errs {
				if strings.Contains(err.Error(), c.want) {
					return
				}
			}
			t.Fatalf("errors %v, want one containing %q", errs, c.want)
		})
	}
}
