package policy

import (
	"os"
	"strings"
	"testing"
	"time"
)

func TestParseConfigDefaults(t *testing.T) {
	cfg, err := ParseConfig("empty.toml", nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Signing.Canonicalization != "relaxed/relaxed" || !cfg.Keys.RequirePublished ||
		cfg.Keys.Recheck.Duration != 10*time.Minute || len(cfg.Signing.Rules) != 1 || cfg.Signing.Rules[0].From != "*" {
		t.Errorf("defaults not applied: %+v", cfg)
	}
}

func TestParseConfig(t *testing.T) {
	good := `
listen = ["unix:/tmp/a.sock", "inet:127.0.0.1:8891", "inet:[::1]:8892", "inet:8893@127.0.0.1"]
authserv_id = "mx.example.com"
[dns]
servers = ["127.0.0.1:5353", "::1"]
timeout = "2s"
[outbound]
networks = ["10.0.0.0/8", "2001:db8::/32"]
[keys]
dir = "/tmp/keys"
recheck = "1d"
[keys.pin]
"example.com" = ["legacy"]
[signing]
canonicalization = "simple/relaxed"
[[signing.rule]]
from = "example.com"
subdomains = true
[[signing.rule]]
from = "*"
domain = "fbl.esp.example"
`
	cfg, err := ParseConfig("good.toml", []byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Signing.Rules) != 2 || cfg.Keys.Recheck.Duration != 24*time.Hour || cfg.Keys.Pin["example.com"][0] != "legacy" {
		t.Errorf("parsed %+v", cfg)
	}

	bad := []struct {
		name, text string
		want       []string // substrings of the error
	}{
		{"unknown key", "authserv_id = \"a\"\n[signing]\nheadres = [\"From\"]\n", []string{"bad.toml:3", "unknown key signing.headres"}},
		{"unknown table", "[dkim]\nx = 1\n", []string{"bad.toml:", "unknown key dkim"}},
		{"wrong type", "listen = 5\n", []string{"bad.toml", "listen"}},
		{"syntax", "listen = [\n", []string{"bad.toml:"}},
		{"bad duration", "[dns]\ntimeout = \"soon\"\n", []string{"bad.toml", "soon"}},
		{"bad network", "[outbound]\nnetworks = [\"10.0.0.0/33\"]\n", []string{"outbound.networks", "10.0.0.0/33"}},
		{"bad outbound ip", "[outbound]\nips = [\"192.0.2.0/24\"]\n", []string{"outbound.ips", "192.0.2.0/24"}},
		{"zoned outbound ip", "[outbound]\nips = [\"fe80::1%eth0\"]\n", []string{"outbound.ips", "fe80::1%eth0"}},
		{"bad trusted sealer", "[dmarc]\ntrusted_arc_sealers = [\"not a domain\"]\n", []string{"dmarc.trusted_arc_sealers", "not a domain"}},
		{"seal without domain", "[arc]\nseal = true\n", []string{"arc.domain"}},
		{"bad listen", "listen = [\"tcp6\"]\n", []string{"listen"}},
		{"relative unix", "listen = [\"unix:run/x.sock\"]\n", []string{"absolute"}},
		{"bad canon", "[signing]\ncanonicalization = \"loose\"\n", []string{"signing.canonicalization"}},
		{"no From signed", "[signing]\nheaders = [\"Subject\"]\n", []string{"must include From"}},
		{"rule without from", "[[signing.rule]]\ndomain = \"x.example\"\n", []string{"signing.rule[0].from"}},
		{"bad rule domain", "[[signing.rule]]\nfrom = \"*\"\ndomain = \"not a domain\"\n", []string{"signing.rule[0].domain"}},
		{"bad socket mode", "socket_mode = \"rw\"\n", []string{"socket_mode"}},
		{"bad internal error", "on_internal_error = \"reject\"\n", []string{"on_internal_error"}},
		{"bad dns server", "[dns]\nservers = [\"dns.example\"]\n", []string{"dns.servers"}},
		{"bad log level", "[log]\nlevel = \"loud\"\n", []string{"log.level"}},
		{"bad max sigs", "[inbound]\nmax_signatures = 0\n", []string{"inbound.max_signatures"}},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfig("bad.toml", []byte(tt.text))
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestParseListen(t *testing.T) {
	tests := []struct{ in, network, addr string }{
		{"unix:/run/a.sock", "unix", "/run/a.sock"},
		{"local:/run/a.sock", "unix", "/run/a.sock"},
		{"inet:127.0.0.1:8891", "tcp", "127.0.0.1:8891"},
		{"inet:[::1]:8891", "tcp", "[::1]:8891"},
		{"inet6:[::1]:8891", "tcp", "[::1]:8891"},
		{"inet:8891@localhost", "tcp", "localhost:8891"},
		{"inet:8891@::1", "tcp", "[::1]:8891"},
	}
	for _, tt := range tests {
		n, a, err := ParseListen(tt.in)
		if err != nil || n != tt.network || a != tt.addr {
			t.Errorf("ParseListen(%q) = %q, %q, %v", tt.in, n, a, err)
		}
	}
}

// The example config shipped in contrib/ must stay valid.
func TestContribConfigParses(t *testing.T) {
	cfg, err := LoadConfig("../contrib/authmilter.toml")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.SocketGroup != "postfix" || len(cfg.Listen) != 1 || len(cfg.Signing.Rules) != 1 {
		t.Errorf("unexpected contrib config: %+v", cfg)
	}
}

// TestLoadConfigEmpty: a config file without a single setting (empty,
// whitespace, only comments: what a reader sees while an editor or a
// non-atomic write has truncated the file) is an error naming the file.
// Taken as "all defaults" it would move keys.dir and stop all signing.
func TestLoadConfigEmpty(t *testing.T) {
	dir := t.TempDir()
	for name, text := range map[string]string{
		"empty":       "",
		"whitespace":  " \n\t\r\n  \n",
		"comments":    "# authmilter configuration\n\n# listen = [\"unix:/run/x.sock\"]\n",
		"empty table": "[keys]\n",
	} {
		t.Run(name, func(t *testing.T) {
			path := dir + "/" + strings.ReplaceAll(name, " ", "-") + ".toml"
			if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := LoadConfig(path)
			if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "no settings") {
				t.Fatalf("LoadConfig(%q) = %v, want an error naming the file and saying it has no settings", text, err)
			}
		})
	}
	// One setting is enough; the rest are defaults.
	path := dir + "/one.toml"
	os.WriteFile(path, []byte("# just one\nauthserv_id = \"mx.example\"\n"), 0o600)
	if cfg, err := LoadConfig(path); err != nil || cfg.AuthservID != "mx.example" || cfg.Keys.Dir != "/var/lib/authmilter/keys" {
		t.Fatalf("LoadConfig(one setting) = %+v, %v", cfg, err)
	}
}

func TestZonePatterns(t *testing.T) {
	for _, c := range []struct {
		pattern, zone string
		match         bool
	}{
		{"myesp._domainkey.*", "myesp._domainkey.customer.example", true},
		{"myesp._domainkey.*", "myesp._domainkey.a.b.example", true},
		{"myesp._domainkey.*", "other._domainkey.customer.example", false},
		{"myesp._domainkey.*", "myesp._domainkey", false},
		{"dkim.myesp.example", "dkim.myesp.example", true},
		{"dkim.myesp.example", "x.dkim.myesp.example", false},
		{"*.myesp.example", "dkim.myesp.example", true},
	} {
		if got := ZoneMatches(c.pattern, c.zone); got != c.match {
			t.Errorf("ZoneMatches(%q, %q) = %v, want %v", c.pattern, c.zone, got, c.match)
		}
	}
	if !ZoneCovers("dkim.myesp.example", "s1.customer.example.dkim.myesp.example") {
		t.Error("ZoneCovers: a name below the zone is covered")
	}
	if ZoneCovers("dkim.myesp.example", "s1._domainkey.customer.example") {
		t.Error("ZoneCovers: a name outside the zone is not covered")
	}
}

func TestCNAMEZoneFor(t *testing.T) {
	var kc KeysConfig
	kc.Publish.CNAMEZone = "dkim.myesp.example"
	kc.Publish.CNAMEDomains = []string{"cust.example"}
	if got := kc.CNAMEZoneFor("Cust.example."); got != "dkim.myesp.example" {
		t.Errorf("listed domain: %q", got)
	}
	if got := kc.CNAMEZoneFor("other.example"); got != "" {
		t.Errorf("unlisted domain: %q", got)
	}
	kc.Publish.CNAMEDomains = []string{"*"}
	kc.Publish.Targets = []PublishTarget{{Server: "127.0.0.1", Zones: []string{"myesp._domainkey.*"}}}
	if got := kc.CNAMEZoneFor("delegated.example"); got != "" {
		t.Errorf("a domain a target's zones cover is not in CNAME mode: %q", got)
	}
	if got := kc.CNAMEZoneFor("other.example"); got != "" && got != "dkim.myesp.example" {
		t.Errorf("star: %q", got)
	}
}

func TestPublishTargetsValidated(t *testing.T) {
	for _, c := range []struct{ toml, want string }{
		{"[keys.publish]\nretire = \"drop\"\n[[keys.publish.target]]\nserver = \"127.0.0.1\"\n", "keys.publish.retire"},
		{"[[keys.publish.target]]\nserver = \"127.0.0.1\"\ntsig_algorithm = \"md5\"\n", "keys.publish.target[0].tsig_algorithm"},
		{"[[keys.publish.target]]\nserver = \"\"\n", "keys.publish.target[0].server"},
		{"[[keys.publish.target]]\nserver = \"127.0.0.1\"\nzones = [\"a..b\"]\n", "keys.publish.target[0].zones"},
		{"[keys.publish]\ncname_domains = [\"x.example\"]\n", "keys.publish.cname_domains"},
		{"[keys]\nalternate = [\"s1\"]\n", "keys.alternate"},
		{"[keys]\nalternate = [\"s1\", \"S1\"]\n", "keys.alternate"},
		{"[keys]\nselector_format = \"%b.myesp\"\n", "keys.selector_format"},
		{"[keys]\nselector_format = \"%b%Y\"\nselector_suffix = \".x\"\n", "keys.selector_suffix"},
		{"[keys]\ncheck = \"maybe\"\n", "keys.check"},
	} {
		_, err := ParseConfig("t.toml", []byte(c.toml))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: err = %v, want one naming %s", c.toml, err, c.want)
		}
	}
}
