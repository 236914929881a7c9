// Package publish publishes and withdraws DKIM key records by DNS dynamic
// update (RFC 2136) signed with TSIG (RFC 8945), sent to the primary
// (master) server of the zone that holds each record. keygen and rotate use
// it when [keys.publish] or [[keys.publish.target]] is configured.
//
// A Set holds the publication targets in the order they are tried; for a
// record it chooses the first target whose server answers authoritatively
// with the SOA of the zone that holds the record's name and whose zone
// patterns match that zone. In CNAME mode a record is published under the
// provider's zone (keys.CNAMETarget) and the customer adds a CNAME to it.
//
// Nothing is ever overwritten that is not ours: before an update the name
// is looked up at the chosen server, and a record there that is neither
// the key's own nor one this installation published before (the state's
// Records) makes the update fail unless forced. Every update carries RFC
// 2136 §2.4 prerequisites stating exactly what the server held when we
// looked, so that two installations racing for the same name cannot
// overwrite each other: the second update fails and changes nothing.
package publish

import (
	"github.com/authmilter/authmilter/internal/dnstext"

	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// Config says where and how to send updates.
type Config struct {
	// Server is the primary server, "ip:port".
	Server string
	// Zone is the zone to update; empty: found per record by asking Server
	// for the SOA of the record's name.
	Zone string
	// TSIGName, TSIGAlgorithm and TSIGSecret (base64) sign the updates;
	// empty TSIGName sends unsigned updates (for servers that allow updates
	// by address only).
	TSIGName, TSIGAlgorithm, TSIGSecret string
	// TTL is the TTL of published records, in seconds.
	TTL uint32
	// Zones limits the zones this target takes updates for: a zone is
	// taken when it matches one of these patterns (by Match). Empty: any
	// zone Server is authoritative for.
	Zones []string
	// Match reports whether zone matches pattern (policy.ZoneMatches);
	// nil compares names exactly.
	Match func(pattern, zone string) bool
	// Timeout bounds each exchange with the server. Default 10s.
	Timeout time.Duration
}

// Updater sends dynamic updates to one server.
type Updater struct {
	cfg  Config
	algo string // canonical TSIG algorithm name (fqdn)
	name string // canonical TSIG key name (fqdn)
}

// TSIG algorithms accepted in the config, by their usual names.
var tsigAlgorithms = map[string]string{
	"hmac-sha1":   dns.HmacSHA1,
	"hmac-sha224": dns.HmacSHA224,
	"hmac-sha256": dns.HmacSHA256,
	"hmac-sha384": dns.HmacSHA384,
	"hmac-sha512": dns.HmacSHA512,
}

// TSIGAlgorithmNames lists the accepted TSIG algorithm names, for messages.
const TSIGAlgorithmNames = "hmac-sha256, hmac-sha384, hmac-sha512, hmac-sha224 or hmac-sha1"

// New checks cfg and returns an Updater.
func New(cfg Config) (*Updater, error) {
	if _, _, err := net.SplitHostPort(cfg.Server); err != nil {
		return nil, fmt.Errorf("publish: server %q: want ip:port", cfg.Server)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	u := &Updater{cfg: cfg}
	if cfg.TSIGName != "" {
		a := strings.ToLower(strings.TrimSuffix(cfg.TSIGAlgorithm, "."))
		if a == "" {
			a = "hmac-sha256"
		}
		var ok bool
		if u.algo, ok = tsigAlgorithms[a]; !ok {
			return nil, fmt.Errorf("publish: TSIG algorithm %q: want %s", cfg.TSIGAlgorithm, TSIGAlgorithmNames)
		}
		if _, err := base64.StdEncoding.DecodeString(cfg.TSIGSecret); err != nil || cfg.TSIGSecret == "" {
			return nil, fmt.Errorf("publish: TSIG secret of key %s is not base64", cfg.TSIGName)
		}
		u.name = dns.CanonicalName(cfg.TSIGName)
	}
	if cfg.Zone != "" {
		u.cfg.Zone = dns.CanonicalName(cfg.Zone)
	}
	return u, nil
}

// Server returns the server updates go to.
func (u *Updater) Server() string { return u.cfg.Server }

// TTL returns the TTL of published records.
func (u *Updater) TTL() uint32 { return u.cfg.TTL }

// send sends an update and checks the answer. A failed prerequisite
// (RFC 2136 §2.4) is ErrChanged.
func (u *Updater) send(ctx context.Context, m *dns.Msg) error {
	r, err := u.exchange(ctx, m, true)
	if err != nil {
		return err
	}
	switch r.Rcode {
	case dns.RcodeYXDomain, dns.RcodeYXRrset, dns.RcodeNXRrset, dns.RcodeNameError:
		return fmt.Errorf("server %s answered %s to the prerequisites: %w", u.cfg.Server, dns.RcodeToString[r.Rcode], ErrChanged)
	}
	if r.Rcode != dns.RcodeSuccess {
		return fmt.Errorf("server %s refused the update of zone %s: %s%s", u.cfg.Server, m.Question[0].Name,
			dns.RcodeToString[r.Rcode], rcodeHint(r.Rcode))
	}
	return nil
}

func rcodeHint(rcode int) string {
	switch rcode {
	case dns.RcodeRefused:
		return " (does the server allow updates from this address with this TSIG key?)"
	case dns.RcodeNotAuth:
		return " (TSIG key name, algorithm or secret wrong, or the server is not authoritative for the zone)"
	case dns.RcodeNotZone:
		return " (the record is not in that zone)"
	}
	return ""
}

// exchange sends m over TCP, signed when a TSIG key is configured and sign
// is set, and checks the answer's signature.
func (u *Updater) exchange(ctx context.Context, m *dns.Msg, sign bool) (*dns.Msg, error) {
	c := &dns.Client{Net: "tcp", Timeout: u.cfg.Timeout}
	if sign && u.name != "" {
		c.TsigSecret = map[string]string{u.name: u.cfg.TSIGSecret}
		m.SetTsig(u.name, u.algo, 300, time.Now().Unix())
	}
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < c.Timeout {
		c.Timeout = max(time.Until(dl), time.Millisecond)
	}
	r, _, err := c.ExchangeContext(ctx, m, u.cfg.Server)
	if err != nil {
		if errors.Is(err, dns.ErrAuth) || errors.Is(err, dns.ErrSig) || errors.Is(err, dns.ErrSecret) || errors.Is(err, dns.ErrKey) {
			return nil, fmt.Errorf("server %s rejected the TSIG signature (check keys.publish.tsig_name, tsig_algorithm and the secret): %w", u.cfg.Server, err)
		}
		return nil, fmt.Errorf("server %s: %w", u.cfg.Server, err)
	}
	if sign && u.name != "" && r.IsTsig() == nil && r.Rcode == dns.RcodeSuccess {
		return nil, fmt.Errorf("server %s: answer is not signed with TSIG", u.cfg.Server)
	}
	return r, nil
}

// Lookup asks the server itself for the TXT records at name, bypassing any
// cache, as a keys.TXTLookup: used to confirm an update. A name without TXT
// records gives a *net.DNSError with IsNotFound.
func (u *Updater) Lookup(ctx context.Context, name string) ([]string, error) {
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(name), dns.TypeTXT)
	q.RecursionDesired = false
	r, err := u.exchange(ctx, q, false)
	if err != nil {
		return nil, &net.DNSError{Err: err.Error(), Name: name, Server: u.cfg.Server, IsTemporary: true}
	}
	switch r.Rcode {
	case dns.RcodeSuccess:
	case dns.RcodeNameError:
		return nil, &net.DNSError{Err: "no such host", Name: name, Server: u.cfg.Server, IsNotFound: true}
	default:
		return nil, &net.DNSError{Err: dns.RcodeToString[r.Rcode], Name: name, Server: u.cfg.Server, IsTemporary: true}
	}
	var out []string
	for _, rr := range r.Answer {
		if t, ok := rr.(*dns.TXT); ok && strings.EqualFold(t.Hdr.Name, dns.Fqdn(name)) {
			out = append(out, dnstext.Value(t))
		}
	}
	if len(out) == 0 {
		return nil, &net.DNSError{Err: "no TXT record", Name: name, Server: u.cfg.Server, IsNotFound: true}
	}
	return out, nil
}

// escape puts TXT strings into miekg/dns's presentation form.
func escape(parts []string) []string {
	out := make([]string, len(parts))
	for i, p := range parts {
		out[i] = strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(p)
	}
	return out
}

// secretPatterns find a TSIG secret in the key file formats of BIND
// (`secret "..."`), Knot (`secret: ...`) and in a bare base64 file.
var (
	secretRE = regexp.MustCompile(`(?m)secret\s*[:=]?\s*"?([A-Za-z0-9+/=]+)"?`)
	algoRE   = regexp.MustCompile(`(?m)algorithm\s*[:=]?\s*"?([A-Za-z0-9.-]+)"?`)
)

// ReadSecretFile reads a TSIG secret from path: a file holding only the
// base64 secret, a BIND key file (`key "name" { algorithm hmac-sha256;
// secret "..."; };`, as tsig-keygen writes) or a Knot key file (`secret:
// ...`, as keymgr -t writes). It returns the secret and, if the file names
// one, the algorithm. The file must not be readable by others.
func ReadSecretFile(path string) (secret, algorithm string, err error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", "", fmt.Errorf("publish: TSIG secret: %w", err)
	}
	if fi.Mode().Perm()&0o007 != 0 {
		return "", "", fmt.Errorf("publish: TSIG secret %s has mode %04o: readable by others (run chmod 600 %s)", path, fi.Mode().Perm(), path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return "", "", fmt.Errorf("publish: TSIG secret: %w", err)
	}
	text := strings.TrimSpace(string(data))
	if m := secretRE.FindStringSubmatch(text); m != nil {
		secret = m[1]
		if a := algoRE.FindStringSubmatch(text); a != nil {
			algorithm = strings.ToLower(a[1])
		}
	} else {
		secret = text
	}
	if raw, err := base64.StdEncoding.DecodeString(secret); err != nil || len(raw) == 0 {
		return "", "", fmt.Errorf("publish: TSIG secret %s: no base64 secret found", path)
	}
	return secret, algorithm, nil
}
