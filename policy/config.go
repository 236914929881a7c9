package policy

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/authmilter/authmilter/keys"
)

// Config is the daemon's configuration as read from the TOML file. Every field
// has a default (see DefaultConfig); the file only needs what differs.
type Config struct {
	// Listen lists the milter sockets: "unix:/path" or "inet:host:port"
	// ("inet:[::1]:port" for IPv6; Sendmail's "inet:port@host" is accepted
	// too). Default ["inet:127.0.0.1:8891"], which works without root and
	// without a runtime directory; contrib/authmilter.toml adds the unix
	// socket that Postfix's chroot setups prefer.
	Listen []string `toml:"listen"`
	// SocketMode is the permission of unix sockets, as an octal string.
	// Default "0660" so that the MTA's group can connect.
	SocketMode string `toml:"socket_mode"`
	// SocketGroup, if set, is the group given to unix sockets (e.g. "postfix").
	SocketGroup string `toml:"socket_group"`
	// AuthservID is the authserv-id of our Authentication-Results header.
	// Default: the host name.
	AuthservID string `toml:"authserv_id"`
	// OnInternalError is what the MTA is told when the daemon itself fails on a
	// message (a bug, not a bad message): "accept" or "tempfail" (default).
	OnInternalError string `toml:"on_internal_error"`
	// ShutdownTimeout bounds how long SIGTERM waits for in-flight
	// transactions. Default "30s".
	ShutdownTimeout Duration `toml:"shutdown_timeout"`

	DNS      DNSConfig      `toml:"dns"`
	Outbound OutboundConfig `toml:"outbound"`
	Keys     KeysConfig     `toml:"keys"`
	Signing  SigningConfig  `toml:"signing"`
	Inbound  InboundConfig  `toml:"inbound"`
	DMARC    DMARCConfig    `toml:"dmarc"`
	Limits   LimitsConfig   `toml:"limits"`
	Metrics  MetricsConfig  `toml:"metrics"`
	Log      LogConfig      `toml:"log"`
	KeyDNS   KeyDNSConfig   `toml:"keydns"`
	Reports  ReportsConfig  `toml:"reports"`
	ARC      ARCConfig      `toml:"arc"`
	Web      WebConfig      `toml:"web"`
}

// KeyDNSConfig is [keydns]: the built-in authoritative DNS server that
// serves the DKIM records of the key table for the zones listed, so that
// a delegated customer's key is published by adding the key file. Off
// unless Zones is set.
type KeyDNSConfig struct {
	// Listen lists the addresses served, "ip:port" or "ip" (port 53), on
	// UDP and TCP. Required with Zones.
	Listen []string `toml:"listen"`
	// Zones are the zones served: a zone name ("dkimhack.myesp.com", the
	// CNAME-target zone) or a pattern whose "*" stands for a key-table
	// domain ("myesp._domainkey.*": one zone per domain with keys whose
	// selector ends in ".myesp"). Overlapping zones, and a zone that holds
	// no key, are config errors.
	Zones []string `toml:"zones"`
	// Nameservers are the NS names of every zone, the first one also the
	// SOA MNAME. A key in a served zone counts as published when every
	// one of them serves its record.
	Nameservers []string `toml:"nameservers"`
	// Hostmaster is the SOA RNAME as a mail address or in DNS form.
	// Default "hostmaster@<zone>".
	Hostmaster string `toml:"hostmaster"`
	// TTL of the key records. Default "1h".
	TTL Duration `toml:"ttl"`
	// NegativeTTL is the SOA minimum (how long resolvers cache "no such
	// record"). Default "5m".
	NegativeTTL Duration `toml:"negative_ttl"`
	// RevokedFor is how long the record of a retired key is served revoked
	// (an empty p=, RFC 6376 §3.6.1) after its retirement. Default "7d".
	RevokedFor Duration `toml:"revoked_for"`
	// AllowTransfer lists the networks (CIDR) allowed to AXFR the zones;
	// empty: no transfers.
	AllowTransfer []string `toml:"allow_transfer"`
	// Notify lists the secondaries ("ip:port" or "ip") sent a NOTIFY when
	// a zone's serial changes.
	Notify []string `toml:"notify"`
	// TSIGName, TSIGAlgorithm, TSIGSecretFile: the TSIG key that transfers
	// and NOTIFYs must be signed with (formats as in [keys.publish]).
	TSIGName       string `toml:"tsig_name"`
	TSIGAlgorithm  string `toml:"tsig_algorithm"`
	TSIGSecretFile string `toml:"tsig_secret_file"`
}

// DNSConfig configures the resolver shared by DKIM, SPF, DMARC and key checks.
type DNSConfig struct {
	// Servers are "ip:port" (or "ip", port 53). Empty: /etc/resolv.conf.
	Servers []string `toml:"servers"`
	// Timeout is the per-query timeout. Default "5s".
	Timeout Duration `toml:"timeout"`
}

// OutboundConfig says which transactions are our own mail, to be signed.
type OutboundConfig struct {
	// Networks are client address prefixes whose mail is outbound.
	// Default ["127.0.0.0/8", "::1/128"].
	Networks []string `toml:"networks"`
	// Authenticated makes SMTP AUTH ({auth_authen} set) outbound. Default true.
	Authenticated bool `toml:"authenticated"`
	// DaemonNames are {daemon_name} values that mark outbound mail, as set with
	// Postfix's milter_macro_daemon_name. Default ["ORIGINATING"].
	DaemonNames []string `toml:"daemon_names"`
	// OnUnsigned is what happens to outbound mail from a domain that has
	// keys in the key table but no active key (none published yet, DNS
	// failing): "accept" (default) lets it through unsigned, logged and
	// counted with the reason; "tempfail" asks the MTA to retry later
	// (451 4.7.0), so nothing leaves unsigned.
	OnUnsigned string `toml:"on_unsigned"`
	// IPs are the addresses our own MTAs send from. Only authmilter doctor
	// uses them: it checks each one's reverse DNS and whether the SPF
	// records of the domains we sign for authorize it. Default none.
	IPs []string `toml:"ips"`
}

// LimitsConfig bounds what one MTA connection or one message may cost, and
// says what happens to a message beyond the bounds.
type LimitsConfig struct {
	// MaxHeaderBytes bounds the header bytes kept per message (names and
	// values). A larger header is not evaluated: forged
	// Authentication-Results fields are still deleted and the message is
	// handled as Oversized says. Default 1 MiB (ten times Postfix's
	// header_size_limit for one field).
	MaxHeaderBytes int `toml:"max_header_bytes"`
	// Oversized is what happens to an inbound message whose header exceeds
	// MaxHeaderBytes: "reject" (default, 552 5.3.4), "tempfail"
	// (451 4.3.4) or "accept-with-ar" (accepted with our
	// Authentication-Results saying dkim, spf and dmarc could not be
	// evaluated). Outbound mail beyond the limit is accepted unsigned and
	// logged with the reason.
	Oversized string `toml:"oversized"`
	// MaxConnections caps concurrent MTA connections; beyond it new
	// connections wait in the listen backlog until one closes. Default 1000.
	MaxConnections int `toml:"max_connections"`
	// NegotiateTimeout bounds the time a new connection has to negotiate
	// and the time any one packet may take to arrive once its first byte
	// has: an MTA never stalls there. Default "10s".
	NegotiateTimeout Duration `toml:"negotiate_timeout"`
	// IdleTimeout closes a connection that sends no command for this long.
	// It must stay above the MTAs' own idle limits: Postfix keeps the milter
	// connection through an SMTP session that may idle for smtpd_timeout
	// (300s), Sendmail for Timeout.command (1h). Default "65m".
	IdleTimeout Duration `toml:"idle_timeout"`
	// WriteTimeout bounds a reply to an MTA that stops reading. Default "30s".
	WriteTimeout Duration `toml:"write_timeout"`
}

// KeysConfig locates the key table.
type KeysConfig struct {
	// Dir holds <domain>/<selector>.pem. Default "/var/lib/authmilter/keys".
	Dir string `toml:"dir"`
	// RequirePublished refuses to sign with a key whose DNS record is missing
	// or does not match. Default true.
	RequirePublished bool `toml:"require_published"`
	// Recheck is how often keys are looked up again in DNS. Default "10m".
	Recheck Duration `toml:"recheck"`
	// Pin maps a domain to the selectors to use for it, overriding the
	// "newest created published key wins" rule.
	Pin map[string][]string `toml:"pin"`
	// SelectorSuffix is appended by keygen to date-based selectors, e.g.
	// ".myesp" gives "2026-11.myesp".
	SelectorSuffix string `toml:"selector_suffix"`
	// SelectorFormat is the template of the selectors keygen and rotate
	// make: %Y (2026), %y (26), %m (01-12), %b (jan-dec), %d (01-31), %a
	// (rsa or ed), %% (a percent sign), everything else literal, e.g.
	// "%b%Y.myesp" for feb2009.myesp. Empty (the default): the date scheme
	// YYYY-MM ("e" added for Ed25519) plus SelectorSuffix.
	SelectorFormat string `toml:"selector_format"`
	// Alternate, when set, is exactly two fixed selectors that rotation
	// uses in turn (e.g. ["s1", "s2"]): the scheme for customers who CNAME
	// both selectors into the provider's zone once. Ed25519 keys use the
	// same names with "e" appended. It replaces SelectorFormat.
	Alternate []string `toml:"alternate"`
	// ActivateAfter is the least time between a key's record first being
	// seen published everywhere and the daemon signing with it; the
	// daemon also waits for the zone's negative-caching TTL (SOA minimum)
	// and the record's TTL, whichever is longest. Default 0.
	ActivateAfter Duration `toml:"activate_after"`
	// Check says how publication is checked: "nameservers" (default) asks
	// every authoritative nameserver of the zone that holds the record
	// (found through the resolver) and the resolver itself (the public
	// path receivers use); "resolver" asks only the resolver, for hosts
	// that cannot reach the authoritative servers directly.
	Check string `toml:"check"`
	// RotateAfter is the age of a domain's newest key (its file's
	// modification time) at which `authmilter rotate` makes the next one.
	// Default "30d".
	RotateAfter Duration `toml:"rotate_after"`
	// Grace is how long `authmilter rotate` keeps a key after it first sees
	// a newer key of the same algorithm active, plus keys.recheck, before it
	// moves the old key to retired/ and withdraws its record, so that mail
	// signed with it can still be verified while in transit. The --grace
	// flag overrides it. Default "7d".
	Grace Duration `toml:"grace"`
	// Reverify is the cycle on which keys whose record was already seen
	// published are looked up again, spread evenly over the cycle (each key
	// at its own moment of it): a reload or keys.recheck checks only new,
	// changed and not yet published keys. Default "24h".
	Reverify Duration `toml:"reverify"`
	// DNSQPS caps the DNS queries per second of the reverify cycle (a
	// provider with 100,000 domains must not flood its own nameservers).
	// Default 20.
	DNSQPS int `toml:"dns_qps"`
	// KeyCache is how many parsed private keys are kept in memory. Key
	// files are read and checked at every reload but parsed for signing
	// only when first used; a key parsed again costs about 0.2 ms (RSA-2048).
	// Default 10000.
	KeyCache int `toml:"key_cache"`
	// Publish enables automatic publication of key records by RFC 2136
	// dynamic update; without publish.server, keygen and rotate print the
	// records for the administrator to publish.
	Publish PublishConfig `toml:"publish"`
}

// PublishConfig is [keys.publish]: where keygen and rotate send RFC 2136
// dynamic updates (signed with TSIG) to publish new key records and
// withdraw retired ones.
type PublishConfig struct {
	// Server is the primary server of the zone(s), "ip:port" or "ip" (port
	// 53). Empty (the default) disables automatic publication.
	Server string `toml:"server"`
	// Zone is the zone to update, e.g. "example.com". Empty: each record's
	// zone is found by asking Server for the SOA of the record's name.
	Zone string `toml:"zone"`
	// TSIGName is the TSIG key name, as configured on the server. Empty
	// sends unsigned updates (only for servers that allow updates by address).
	TSIGName string `toml:"tsig_name"`
	// TSIGAlgorithm is hmac-sha256 (default), hmac-sha384, hmac-sha512,
	// hmac-sha224 or hmac-sha1. A key file that names its algorithm wins.
	TSIGAlgorithm string `toml:"tsig_algorithm"`
	// TSIGSecretFile holds the base64 TSIG secret alone, or a BIND
	// (tsig-keygen) or Knot (keymgr -t) key file. It must not be readable by
	// others. Required with TSIGName.
	TSIGSecretFile string `toml:"tsig_secret_file"`
	// TTL of the published records, in seconds. Default 3600.
	TTL int `toml:"ttl"`
	// Retire says what happens to the record of a retired key: "remove"
	// (default) deletes it; "revoke" replaces it with an empty p= (RFC 6376
	// §3.6.1), which tells verifiers the key is revoked.
	Retire string `toml:"retire"`
	// Timeout bounds each exchange with the server. Default "10s".
	Timeout Duration `toml:"timeout"`
	// Zones limits this (the default) target to the zones that match one
	// of these patterns: a zone name, or a pattern whose "*" stands for
	// one or more labels ("myesp._domainkey.*"). Empty: any zone Server is
	// authoritative for.
	Zones []string `toml:"zones"`
	// CNAMEZone is the provider's zone under which the records of CNAME'd
	// customer domains are published, at <selector>.<domain>.<CNAMEZone>;
	// the customer adds <selector>._domainkey.<domain> CNAME that name.
	CNAMEZone string `toml:"cname_zone"`
	// CNAMEDomains lists the domains published in CNAME mode ("*" for
	// every domain that has no target of its own).
	CNAMEDomains []string `toml:"cname_domains"`
	// Targets are further publication targets, tried before this one: the
	// first whose server is authoritative for the record's zone (and whose
	// Zones match it) receives the update.
	Targets []PublishTarget `toml:"target"`
}

// PublishTarget is one [[keys.publish.target]]: a primary server and the
// zones it takes updates for.
type PublishTarget struct {
	// Server is the primary server, "ip:port" or "ip" (port 53).
	Server string `toml:"server"`
	// Zones are the zone patterns it serves, as PublishConfig.Zones.
	Zones []string `toml:"zones"`
	// TSIGName, TSIGAlgorithm, TSIGSecretFile: as in [keys.publish]; empty
	// values are taken from [keys.publish].
	TSIGName       string `toml:"tsig_name"`
	TSIGAlgorithm  string `toml:"tsig_algorithm"`
	TSIGSecretFile string `toml:"tsig_secret_file"`
	// TTL of the records; 0: [keys.publish]'s.
	TTL int `toml:"ttl"`
}

// SigningConfig says what the signatures look like and who gets them.
type SigningConfig struct {
	// Headers are the header fields to sign (each occurrence present).
	Headers []string `toml:"headers"`
	// Oversign lists fields signed once more than they occur, so that none
	// can be added after signing.
	Oversign []string `toml:"oversign"`
	// Canonicalization is "header/body", each "relaxed" or "simple".
	// Default "relaxed/relaxed".
	Canonicalization string `toml:"canonicalization"`
	// Expire, if set, adds x= that many seconds after t=.
	Expire Duration `toml:"expire"`
	// Rules are tried in order; every matching rule adds signatures.
	Rules []RuleConfig `toml:"rule"`
}

// RuleConfig is one [[signing.rule]].
type RuleConfig struct {
	// From is an exact From domain or "*" for any.
	From string `toml:"from"`
	// Subdomains also matches subdomains of From.
	Subdomains bool `toml:"subdomains"`
	// Domain is the d= to sign with; default the From domain.
	Domain string `toml:"domain"`
	// Selector, when set, is the one key the rule signs with:
	// <keys.dir>/<domain>/<selector>.pem (for example a provider's d= with a
	// selector per customer, "s1024_acme"). Keys named by a rule are not
	// chosen for the domain's other rules.
	Selector string `toml:"selector"`
}

// InboundConfig configures verification of mail that is not ours.
type InboundConfig struct {
	// MaxSignatures bounds the DKIM signatures verified per message. Default 5.
	MaxSignatures int `toml:"max_signatures"`
	// VerifyOutbound also verifies (and adds Authentication-Results to)
	// outbound mail. Default false.
	VerifyOutbound bool `toml:"verify_outbound"`
	// MessageTimeout bounds all DNS work for one message. Default "20s".
	MessageTimeout Duration `toml:"message_timeout"`
}

// DMARCConfig configures DMARC evaluation.
type DMARCConfig struct {
	// Enforce rejects p=reject failures and quarantines p=quarantine ones.
	Enforce bool `toml:"enforce"`
	// Mode is "treewalk" (RFC 9989, default) or "psl" (RFC 7489 public suffix list).
	Mode string `toml:"mode"`
	// RejectText is the SMTP text of a DMARC rejection.
	RejectText string `toml:"reject_text"`
	// TrustedARCSealers are ARC sealing domains (d= of an ARC-Seal) whose
	// word we take: a DMARC failure of a message whose ARC chain passes
	// and that such a sealer saw with dmarc=pass is not enforced, and the
	// override is reported. Default none.
	TrustedARCSealers []string `toml:"trusted_arc_sealers"`
}

// ARCConfig is [arc]: sealing the mail we relay (RFC 8617). Inbound ARC
// chains are always verified.
type ARCConfig struct {
	// Seal adds an ARC set (ARC-Seal, ARC-Message-Signature,
	// ARC-Authentication-Results) to inbound mail, with our
	// Authentication-Results as its content. Default false.
	Seal bool `toml:"seal"`
	// Domain is the sealing domain (d=); its newest active key in the key
	// table seals. Required when Seal is set.
	Domain string `toml:"domain"`
}

// MetricsConfig configures the Prometheus endpoint.
type MetricsConfig struct {
	// Listen is host:port for /metrics; empty disables it.
	Listen string `toml:"listen"`
}

// LogConfig configures logging.
type LogConfig struct {
	// Level is debug, info, warn or error. Default info.
	Level string `toml:"level"`
	// Format is text or json. Default text.
	Format string `toml:"format"`
}

// Duration is a time.Duration written as "10s", "5m" or "7d" in TOML.
type Duration struct{ time.Duration }

// UnmarshalText implements encoding.TextUnmarshaler; it accepts Go durations
// plus a "d" suffix for days, which rotation schedules need.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := ParseDuration(string(b))
	if err != nil {
		return err
	}
	d.Duration = v
	return nil
}

// MarshalText implements encoding.TextMarshaler; whole days are written
// as "7d".
func (d Duration) MarshalText() ([]byte, error) {
	const day = 24 * time.Hour
	if d.Duration >= day && d.Duration%day == 0 {
		return []byte(fmt.Sprintf("%dd", d.Duration/day)), nil
	}
	return []byte(d.String()), nil
}

// ParseDuration parses a Go duration, or a whole number of days ("7d").
func ParseDuration(s string) (time.Duration, error) {
	if n, ok := strings.CutSuffix(s, "d"); ok {
		var days int
		if _, err := fmt.Sscanf(n, "%d", &days); err != nil || days < 0 || fmt.Sprint(days) != n {
			return 0, fmt.Errorf("invalid duration %q", s)
		}
		return time.Duration(days) * 24 * time.Hour, nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q", s)
	}
	if v < 0 {
		return 0, fmt.Errorf("negative duration %q", s)
	}
	return v, nil
}

// DefaultSignedHeaders is the default signing.headers list.
var DefaultSignedHeaders = []string{"From", "To", "Cc", "Subject", "Date", "Message-ID", "Reply-To",
	"In-Reply-To", "References", "MIME-Version", "Content-Type", "Content-Transfer-Encoding",
	"List-Unsubscribe", "List-Unsubscribe-Post"}

// DefaultConfig returns the configuration used when no file is given, and the
// base on which a file's settings are laid.
func DefaultConfig() *Config {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "localhost"
	}
	return &Config{
		Listen:          []string{"inet:127.0.0.1:8891"},
		SocketMode:      "0660",
		AuthservID:      host,
		OnInternalError: "tempfail",
		ShutdownTimeout: Duration{30 * time.Second},
		DNS:             DNSConfig{Timeout: Duration{5 * time.Second}},
		Outbound: OutboundConfig{
			Networks:      []string{"127.0.0.0/8", "::1/128"},
			Authenticated: true,
			DaemonNames:   []string{"ORIGINATING"},
			OnUnsigned:    "accept",
		},
		Keys: KeysConfig{
			Dir:              "/var/lib/authmilter/keys",
			RequirePublished: true,
			Recheck:          Duration{10 * time.Minute},
			RotateAfter:      Duration{30 * 24 * time.Hour},
			Grace:            Duration{7 * 24 * time.Hour},
			Check:            "nameservers",
			Reverify:         Duration{24 * time.Hour},
			DNSQPS:           20,
			KeyCache:         10000,
			Publish:          PublishConfig{TSIGAlgorithm: "hmac-sha256", TTL: 3600, Retire: "remove", Timeout: Duration{10 * time.Second}},
		},
		KeyDNS: KeyDNSConfig{TTL: Duration{time.Hour}, NegativeTTL: Duration{5 * time.Minute},
			RevokedFor: Duration{7 * 24 * time.Hour}, TSIGAlgorithm: "hmac-sha256"},
		Signing: SigningConfig{
			Headers:          append([]string(nil), DefaultSignedHeaders...),
			Oversign:         []string{"From", "To", "Cc", "Subject", "Date", "Reply-To"},
			Canonicalization: "relaxed/relaxed",
			Rules:            []RuleConfig{{From: "*"}},
		},
		Inbound: InboundConfig{MaxSignatures: 5, MessageTimeout: Duration{20 * time.Second}},
		DMARC: DMARCConfig{
			Mode:       "treewalk",
			RejectText: "Message rejected by DMARC policy of the From domain",
		},
		Limits: LimitsConfig{
			MaxHeaderBytes:   1 << 20,
			Oversized:        "reject",
			MaxConnections:   1000,
			NegotiateTimeout: Duration{10 * time.Second},
			IdleTimeout:      Duration{65 * time.Minute},
			WriteTimeout:     Duration{30 * time.Second},
		},
		Metrics: MetricsConfig{Listen: "127.0.0.1:9891"},
		Reports: DefaultReportsConfig(),
		Web:     DefaultWebConfig(),
		Log:     LogConfig{Level: "info", Format: "text"},
	}
}

// LoadConfig reads path over the defaults and validates the result. Errors
// name the file, and the line and key where the TOML decoder knows them.
//
// A file without a single setting (empty, blanks, only comments or empty
// tables) is an error: that is what a reader sees while an editor or a
// non-atomic write has truncated the file, and read as "all defaults" it
// would move keys.dir and stop all signing at the next SIGHUP. Running
// without -config (and without /etc/authmilter/authmilter.toml) is the way
// to get the built-in defaults.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if noSettings(data) {
		return nil, fmt.Errorf("config %s is empty (no settings, only blanks or comments): refused, "+
			"since a file being rewritten in place looks like this; write at least one setting", path)
	}
	return ParseConfig(path, data)
}

// noSettings reports whether data is valid TOML that sets no value. Syntax
// errors are left to ParseConfig, which reports them with their line.
func noSettings(data []byte) bool {
	var m map[string]any
	md, err := toml.Decode(string(data), &m)
	if err != nil {
		return false
	}
	for _, k := range md.Keys() {
		if md.Type(k...) != "Hash" {
			return false
		}
	}
	return true
}

// ParseConfig is LoadConfig on bytes already read; name is used in errors.
func ParseConfig(name string, data []byte) (*Config, error) {
	cfg := DefaultConfig()
	// A file that lists rules replaces the default catch-all rule rather than
	// appending to it.
	cfg.Signing.Rules = nil
	md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(cfg)
	if err != nil {
		var perr toml.ParseError
		if errors.As(err, &perr) {
			key := ""
			if perr.LastKey != "" {
				key = " key " + perr.LastKey + ":"
			}
			return nil, fmt.Errorf("config %s:%d:%s %s", name, perr.Position.Line, key, perr.Message)
		}
		return nil, fmt.Errorf("config %s: %w", name, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		var msgs []string
		for _, k := range und {
			msgs = append(msgs, fmt.Sprintf("config %s:%d: unknown key %s", name, lineOfKey(data, k), k.String()))
		}
		return nil, errors.New(strings.Join(msgs, "\n"))
	}
	if !md.IsDefined("signing", "rule") {
		cfg.Signing.Rules = []RuleConfig{{From: "*"}}
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("config %s: %w", name, err)
	}
	return cfg, nil
}

// validZonePattern reports whether z is a zone name, or a pattern in which
// "*" labels stand for one or more labels ("myesp._domainkey.*").
func validZonePattern(z string) bool {
	z = strings.TrimSuffix(z, ".")
	if z == "" || z == "*" {
		return false
	}
	for _, l := range strings.Split(z, ".") {
		if l != "*" && !keys.ValidSelector(l) {
			return false
		}
	}
	return true
}

// lineOfKey finds the line where the last part of key is set, for error
// messages about keys the decoder does not report positions for.
func lineOfKey(data []byte, key toml.Key) int {
	last := key[len(key)-1]
	for i, line := range strings.Split(string(data), "\n") {
		t := strings.TrimSpace(line)
		if strings.HasPrefix(t, last) {
			rest := strings.TrimSpace(strings.TrimPrefix(t, last))
			if strings.HasPrefix(rest, "=") {
				return i + 1
			}
		}
		if strings.HasPrefix(t, "[") && strings.Contains(t, last) {
			return i + 1
		}
	}
	return 0
}

// Validate checks values that TOML types cannot express. Each error names
// the offending key.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{key}, args...)...))
	}
	if len(c.Listen) == 0 {
		bad("listen", "at least one socket is required")
	}
	for _, l := range c.Listen {
		if _, _, err := ParseListen(l); err != nil {
			bad("listen", "%v", err)
		}
	}
	if _, err := c.SocketPerm(); err != nil {
		bad("socket_mode", "%v", err)
	}
	if c.AuthservID == "" || strings.ContainsAny(c.AuthservID, " \t;\r\n") {
		bad("authserv_id", "must be a non-empty token without spaces or ';', got %q", c.AuthservID)
	}
	switch c.OnInternalError {
	case "accept", "tempfail":
	default:
		bad("on_internal_error", "must be accept or tempfail, got %q", c.OnInternalError)
	}
	for _, s := range c.DNS.Servers {
		if _, err := NormalizeDNSServer(s); err != nil {
			bad("dns.servers", "%v", err)
		}
	}
	if c.DNS.Timeout.Duration <= 0 {
		bad("dns.timeout", "must be positive")
	}
	for _, ip := range c.Outbound.IPs {
		if a, err := netip.ParseAddr(ip); err != nil || a.Zone() != "" {
			bad("outbound.ips", "%q is not an IP address (e.g. 192.0.2.25 or 2001:db8::25)", ip)
		}
	}
	for _, n := range c.Outbound.Networks {
		if _, err := netip.ParsePrefix(n); err != nil {
			bad("outbound.networks", "%q is not a CIDR prefix (e.g. 192.0.2.0/24 or 2001:db8::/32)", n)
		}
	}
	if c.Keys.Dir == "" {
		bad("keys.dir", "must not be empty")
	}
	if c.Keys.Recheck.Duration < time.Second {
		bad("keys.recheck", "must be at least 1s")
	}
	errs = append(errs, c.KeyDNS.validate()...)
	errs = append(errs, c.Reports.validate()...)
	errs = append(errs, c.Web.validate()...)
	if c.Keys.Reverify.Duration < 10*time.Second {
		bad("keys.reverify", "must be at least 10s")
	}
	if c.Keys.DNSQPS < 1 {
		bad("keys.dns_qps", "must be at least 1, got %d", c.Keys.DNSQPS)
	}
	if c.Keys.KeyCache < 1 {
		bad("keys.key_cache", "must be at least 1, got %d", c.Keys.KeyCache)
	}
	if c.Keys.RotateAfter.Duration < time.Hour {
		bad("keys.rotate_after", "must be at least 1h")
	}
	// The [keys.publish] settings are the defaults of every target, so they
	// are checked whenever anything is published.
	if pc := c.Keys.Publish; pc.Server != "" || len(pc.Targets) > 0 {
		if pc.Server != "" {
			if _, err := NormalizeDNSServer(pc.Server); err != nil {
				bad("keys.publish.server", "%v", err)
			}
		}
		if pc.Zone != "" && !validDomain(pc.Zone) {
			bad("keys.publish.zone", "%q is not a domain name", pc.Zone)
		}
		if pc.TSIGName != "" && pc.TSIGSecretFile == "" {
			bad("keys.publish.tsig_secret_file", "is required with tsig_name")
		}
		switch pc.TSIGAlgorithm {
		case "hmac-sha256", "hmac-sha384", "hmac-sha512", "hmac-sha224", "hmac-sha1":
		default:
			bad("keys.publish.tsig_algorithm", "must be hmac-sha256, hmac-sha384, hmac-sha512, hmac-sha224 or hmac-sha1, got %q", pc.TSIGAlgorithm)
		}
		if pc.TTL < 1 || pc.TTL > 86400*7 {
			bad("keys.publish.ttl", "must be between 1 and 604800 seconds, got %d", pc.TTL)
		}
		switch pc.Retire {
		case "remove", "revoke":
		default:
			bad("keys.publish.retire", "must be remove or revoke, got %q", pc.Retire)
		}
		if pc.Timeout.Duration <= 0 {
			bad("keys.publish.timeout", "must be positive")
		}
	}
	if _, _, err := parseCanonicalization(c.Signing.Canonicalization); err != nil {
		bad("signing.canonicalization", "%v", err)
	}
	hasFrom := false
	for _, h := range c.Signing.Headers {
		if !validFieldName(h) {
			bad("signing.headers", "%q is not a header field name", h)
		}
		if strings.EqualFold(h, "From") {
			hasFrom = true
		}
	}
	if !hasFrom {
		bad("signing.headers", "must include From (RFC 6376 §5.4)")
	}
	for _, h := range c.Signing.Oversign {
		if !validFieldName(h) {
			bad("signing.oversign", "%q is not a header field name", h)
		}
	}
	for i, r := range c.Signing.Rules {
		key := fmt.Sprintf("signing.rule[%d]", i)
		if r.From == "" {
			bad(key+".from", "is required (a domain or \"*\")")
		} else if r.From != "*" && !validDomain(r.From) {
			bad(key+".from", "%q is not a domain name", r.From)
		}
		if r.From == "*" && r.Subdomains {
			bad(key+".subdomains", "makes no sense with from = \"*\"")
		}
		if r.Domain != "" && !validDomain(r.Domain) {
			bad(key+".domain", "%q is not a domain name", r.Domain)
		}
		if r.Selector != "" && !keys.ValidSelector(r.Selector) {
			bad(key+".selector", "%q is not a valid selector", r.Selector)
		}
		if r.Selector != "" && r.From == "*" && r.Domain == "" {
			bad(key+".selector", "needs domain (the d= whose folder holds the key) when from = \"*\"")
		}
	}
	switch c.Keys.Check {
	case "nameservers", "resolver":
	default:
		bad("keys.check", "must be nameservers or resolver, got %q", c.Keys.Check)
	}
	if c.Keys.ActivateAfter.Duration < 0 {
		bad("keys.activate_after", "must not be negative")
	}
	if n := len(c.Keys.Alternate); n != 0 {
		if n != 2 {
			bad("keys.alternate", "needs exactly two selectors, got %d", n)
		} else if strings.EqualFold(c.Keys.Alternate[0], c.Keys.Alternate[1]) {
			bad("keys.alternate", "the two selectors are the same (%q)", c.Keys.Alternate[0])
		}
		for _, s := range c.Keys.Alternate {
			if !keys.ValidSelector(s) || !keys.ValidSelector(s+"e") {
				bad("keys.alternate", "%q is not a valid selector", s)
			}
		}
		if c.Keys.SelectorFormat != "" {
			bad("keys.selector_format", "cannot be used with keys.alternate (choose one scheme)")
		}
	}
	if err := keys.ValidateSelectorFormat(c.Keys.SelectorFormat); err != nil {
		bad("keys.selector_format", "%v", err)
	}
	if c.Keys.SelectorFormat != "" && c.Keys.SelectorSuffix != "" {
		bad("keys.selector_suffix", "is for the default date scheme; with keys.selector_format put the suffix in the template (e.g. \"%%b%%Y%s\")", c.Keys.SelectorSuffix)
	}
	pc := c.Keys.Publish
	for _, z := range pc.Zones {
		if !validZonePattern(z) {
			bad("keys.publish.zones", "%q is not a zone name or pattern (labels, \"*\" for one or more labels)", z)
		}
	}
	if pc.CNAMEZone != "" && !validDomain(pc.CNAMEZone) {
		bad("keys.publish.cname_zone", "%q is not a domain name", pc.CNAMEZone)
	}
	if len(pc.CNAMEDomains) > 0 && pc.CNAMEZone == "" {
		bad("keys.publish.cname_domains", "needs keys.publish.cname_zone")
	}
	for _, d := range pc.CNAMEDomains {
		if d != "*" && !validDomain(d) {
			bad("keys.publish.cname_domains", "%q is not a domain name or \"*\"", d)
		}
	}
	for i, t := range pc.Targets {
		key := fmt.Sprintf("keys.publish.target[%d]", i)
		if _, err := NormalizeDNSServer(t.Server); err != nil || t.Server == "" {
			bad(key+".server", "is required as ip:port or ip, got %q", t.Server)
		}
		for _, z := range t.Zones {
			if !validZonePattern(z) {
				bad(key+".zones", "%q is not a zone name or pattern", z)
			}
		}
		if t.TSIGName != "" && t.TSIGSecretFile == "" && pc.TSIGSecretFile == "" {
			bad(key+".tsig_secret_file", "is required with tsig_name")
		}
		if t.TTL < 0 || t.TTL > 86400*7 {
			bad(key+".ttl", "must be between 1 and 604800 seconds, got %d", t.TTL)
		}
		switch t.TSIGAlgorithm {
		case "", "hmac-sha256", "hmac-sha384", "hmac-sha512", "hmac-sha224", "hmac-sha1":
		default:
			bad(key+".tsig_algorithm", "must be hmac-sha256, hmac-sha384, hmac-sha512, hmac-sha224 or hmac-sha1, got %q", t.TSIGAlgorithm)
		}
	}
	for d, sels := range c.Keys.Pin {
		if !validDomain(d) {
			bad("keys.pin", "%q is not a domain name", d)
		}
		if len(sels) == 0 {
			bad("keys.pin."+d, "needs at least one selector")
		}
	}
	if c.Inbound.MaxSignatures < 1 || c.Inbound.MaxSignatures > 50 {
		bad("inbound.max_signatures", "must be between 1 and 50, got %d", c.Inbound.MaxSignatures)
	}
	if c.Inbound.MessageTimeout.Duration <= 0 {
		bad("inbound.message_timeout", "must be positive")
	}
	switch c.Outbound.OnUnsigned {
	case "accept", "tempfail":
	default:
		bad("outbound.on_unsigned", "must be accept or tempfail, got %q", c.Outbound.OnUnsigned)
	}
	if c.Limits.MaxHeaderBytes < 64<<10 || c.Limits.MaxHeaderBytes > 64<<20 {
		bad("limits.max_header_bytes", "must be between 65536 and 67108864, got %d", c.Limits.MaxHeaderBytes)
	}
	switch c.Limits.Oversized {
	case "reject", "tempfail", "accept-with-ar":
	default:
		bad("limits.oversized", "must be reject, tempfail or accept-with-ar, got %q", c.Limits.Oversized)
	}
	if c.Limits.MaxConnections < 1 || c.Limits.MaxConnections > 1_000_000 {
		bad("limits.max_connections", "must be between 1 and 1000000, got %d", c.Limits.MaxConnections)
	}
	if c.Limits.NegotiateTimeout.Duration < 100*time.Millisecond {
		bad("limits.negotiate_timeout", "must be at least 100ms")
	}
	if c.Limits.IdleTimeout.Duration < time.Second {
		bad("limits.idle_timeout", "must be at least 1s")
	}
	if c.Limits.WriteTimeout.Duration < 100*time.Millisecond {
		bad("limits.write_timeout", "must be at least 100ms")
	}
	for _, d := range c.DMARC.TrustedARCSealers {
		if !keys.ValidDomain(strings.ToLower(strings.TrimSuffix(d, "."))) {
			bad("dmarc.trusted_arc_sealers", "%q is not a domain name", d)
		}
	}
	if c.ARC.Seal && !keys.ValidDomain(strings.ToLower(strings.TrimSuffix(c.ARC.Domain, "."))) {
		bad("arc.domain", "must be the sealing domain (one with a key in the key table) when arc.seal is on, got %q", c.ARC.Domain)
	}
	switch c.DMARC.Mode {
	case "treewalk", "psl":
	default:
		bad("dmarc.mode", "must be treewalk or psl, got %q", c.DMARC.Mode)
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "must be debug, info, warn or error, got %q", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		bad("log.format", "must be text or json, got %q", c.Log.Format)
	}
	return errors.Join(errs...)
}

// SocketPerm returns socket_mode as a file mode.
func (c *Config) SocketPerm() (os.FileMode, error) {
	var m uint32
	if _, err := fmt.Sscanf(c.SocketMode, "%o", &m); err != nil || m > 0o777 {
		return 0, fmt.Errorf("%q is not an octal permission such as \"0660\"", c.SocketMode)
	}
	return os.FileMode(m), nil
}

// ParseListen splits "unix:/path" or "inet:host:port" into a Go network and
// address.
func ParseListen(s string) (network, addr string, err error) {
	kind, rest, ok := strings.Cut(s, ":")
	if !ok || rest == "" {
		return "", "", fmt.Errorf("%q: want unix:/path or inet:host:port", s)
	}
	switch kind {
	case "unix", "local":
		if !strings.HasPrefix(rest, "/") {
			return "", "", fmt.Errorf("%q: unix socket path must be absolute", s)
		}
		return "unix", rest, nil
	case "inet", "inet6", "tcp":
		// Sendmail writes inet:port@host; accept it too.
		if port, host, ok := strings.Cut(rest, "@"); ok {
			rest = joinHostPort(host, port)
		}
		if _, err := netip.ParseAddrPort(rest); err != nil {
			if h, p, ok := strings.Cut(rest, ":"); !ok || h == "" || p == "" || strings.Contains(p, ":") {
				return "", "", fmt.Errorf("%q: want inet:host:port (IPv6: inet:[::1]:port)", s)
			}
		}
		return "tcp", rest, nil
	}
	return "", "", fmt.Errorf("%q: unknown socket type %q (unix or inet)", s, kind)
}

func joinHostPort(host, port string) string {
	if strings.Contains(host, ":") {
		return "[" + host + "]:" + port
	}
	return host + ":" + port
}

// NormalizeDNSServer adds port 53 to a bare IP address.
func NormalizeDNSServer(s string) (string, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.String(), nil
	}
	if a, err := netip.ParseAddr(strings.Trim(s, "[]")); err == nil {
		return netip.AddrPortFrom(a, 53).String(), nil
	}
	return "", fmt.Errorf("%q is not an IP address or ip:port", s)
}

func validFieldName(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range []byte(s) {
		if c <= ' ' || c >= 127 || c == ':' {
			return false
		}
	}
	return true
}

// validDomain accepts ASCII (A-label) domain names as used for d= and key
// folders; a UTF-8 domain in the config is an error so that the key folder
// and the d= tag cannot disagree.
func validDomain(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range []byte(label) {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// CNAMEZoneFor returns the zone under which domain's key records are
// published in CNAME mode ([keys.publish] cname_zone), or "" when domain
// is not in CNAME mode: it is listed in cname_domains, or "*" is listed
// and no [[keys.publish.target]] has a zone pattern matching the domain's
// key names.
func (c *KeysConfig) CNAMEZoneFor(domain string) string {
	pc := c.Publish
	if pc.CNAMEZone == "" {
		return ""
	}
	domain = strings.ToLower(strings.TrimSuffix(domain, "."))
	star := false
	for _, d := range pc.CNAMEDomains {
		if strings.EqualFold(strings.TrimSuffix(d, "."), domain) {
			return pc.CNAMEZone
		}
		star = star || d == "*"
	}
	if !star {
		return ""
	}
	for _, t := range pc.Targets {
		for _, z := range t.Zones {
			// A delegated selector zone ("myesp._domainkey.*") names its
			// selector label; any label stands in for the others.
			label, _, _ := strings.Cut(z, ".")
			if label == "*" {
				label = "x"
			}
			if ZoneCovers(z, label+"._domainkey."+domain) {
				return ""
			}
		}
	}
	return pc.CNAMEZone
}

// ZoneCovers reports whether the zone pattern (a zone name, or a pattern in
// which a "*" label stands for one or more labels, see
// PublishConfig.Zones) names a zone that contains name: name is the zone
// itself or below it.
func ZoneCovers(pattern, name string) bool {
	p := strings.Split(strings.ToLower(strings.TrimSuffix(pattern, ".")), ".")
	n := strings.Split(strings.ToLower(strings.TrimSuffix(name, ".")), ".")
	// Try every suffix of name as the zone.
	for start := 0; start < len(n); start++ {
		if matchLabels(p, n[start:]) {
			return true
		}
	}
	return false
}

// ZoneMatches reports whether zone is exactly a zone that pattern names.
func ZoneMatches(pattern, zone string) bool {
	p := strings.Split(strings.ToLower(strings.TrimSuffix(pattern, ".")), ".")
	n := strings.Split(strings.ToLower(strings.TrimSuffix(zone, ".")), ".")
	return matchLabels(p, n)
}

// matchLabels matches labels against a pattern whose "*" labels stand for
// one or more labels.
func matchLabels(p, n []string) bool {
	if len(p) == 0 {
		return len(n) == 0
	}
	if p[0] == "*" {
		for i := 1; i <= len(n); i++ {
			if matchLabels(p[1:], n[i:]) {
				return true
			}
		}
		return false
	}
	return len(n) > 0 && p[0] == n[0] && matchLabels(p[1:], n[1:])
}

// Scheme is how keygen and rotate name new keys under this config.
// RotatePolicy is the rotation rules of these settings (rotate_after,
// grace, recheck, the selector scheme), without a clock.
func (c *KeysConfig) RotatePolicy() keys.RotatePolicy {
	return keys.RotatePolicy{RotateAfter: c.RotateAfter.Duration, Grace: c.Grace.Duration, Recheck: c.Recheck.Duration,
		Suffix: c.SelectorSuffix, Scheme: c.Scheme()}
}

func (c *KeysConfig) Scheme() keys.SelectorScheme {
	return keys.SelectorScheme{Format: c.SelectorFormat, Suffix: c.SelectorSuffix, Alternate: c.Alternate}
}
