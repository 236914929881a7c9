package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/authmilter/authmilter/keys"
	"github.com/authmilter/authmilter/keys/publish"
	"github.com/authmilter/authmilter/policy"
)

func cmdKeygen(args []string) error { return keygen(args, os.Stdout, os.Stderr) }

// rsa1024Warning is what keygen -a rsa-1024 says before making the key.
const rsa1024Warning = "warning: a 1024-bit RSA key: RFC 8301 permits it, but it is weak. Factoring 1024-bit RSA is " +
	"thought to be within reach of well-funded attackers (NIST stopped allowing such signatures after 2013), and " +
	"whoever factors it can sign mail as the domain until the record is removed. Use it only where the DNS host " +
	"cannot hold a longer TXT value (its record is about 220 bytes, one string; a 2048-bit record is about 400, in " +
	"two strings), and replace it soon: authmilter rotate makes 2048-bit successors."

// recordFormats are the -format values of keygen.
const recordFormats = "zone, value, nsupdate or json"

// keygen makes one key. The record goes to stdout (so that it can be piped
// into a zone file or nsupdate); what was done goes to stderr.
func keygen(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("keygen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := configFlag(fs)
	domain := fs.String("d", "", "domain (d=) the key signs for")
	selector := fs.String("s", "", "selector (default: from keys.selector_format or keys.alternate; else YYYY-MM of today, \"e\" added\n"+
		"for ed25519, then a letter b, c, ... if the month already has a key, then keys.selector_suffix)")
	algo := fs.String("a", "rsa-2048", keys.Algorithms)
	format := fs.String("format", "zone", "record output: "+recordFormats)
	noPublish := fs.Bool("no-publish", false, "do not publish the record even if [keys.publish] is configured")
	testFlag := fs.String("t", "", "y: a testing key, its record carries t=y (RFC 6376 §3.6.1: verifiers treat mail that fails\n"+
		"to verify like unsigned mail); for trying DKIM on a domain before relying on it")
	force := fs.Bool("force", false, "publish even where the key's name holds a record that this installation did not publish\n"+
		"(another provider's or another installation's key): that record is replaced")
	if err := fs.Parse(args); err != nil {
		return exitError(2)
	}
	if *domain == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: authmilter keygen -d DOMAIN [-s SELECTOR] [-a ALGORITHM] [-t y] [-format FORMAT] [-no-publish] [-force] [-config FILE]")
		return exitError(2)
	}
	switch *format {
	case "zone", "value", "nsupdate", "json":
	default:
		return fmt.Errorf("-format: want %s, got %q", recordFormats, *format)
	}
	switch *algo {
	case "rsa-2048", "rsa-3072", "rsa-4096", "ed25519":
	case "rsa-1024":
		fmt.Fprintln(stderr, rsa1024Warning)
	default:
		return fmt.Errorf("-a: want %s, got %q", keys.Algorithms, *algo)
	}
	if *testFlag != "" && *testFlag != "y" {
		return fmt.Errorf("-t: want y (a testing key), got %q", *testFlag)
	}
	cfg, _, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	d := strings.ToLower(strings.TrimSuffix(*domain, "."))
	if !keys.ValidDomain(d) {
		return fmt.Errorf("-d: %q is not a domain name (use the A-label form for IDNs)", *domain)
	}
	pub := publish.NewSet(cfg.Keys.CNAMEZoneFor) // no targets: the record is printed only
	if !*noPublish {
		if pub, err = newPublisher(cfg); err != nil {
			return err
		}
	}
	ddir := filepath.Join(cfg.Keys.Dir, d)
	existing, err := keys.LoadDomain(cfg.Keys.Dir, d)
	if err != nil {
		return err
	}
	retired, err := keys.RetiredSelectors(ddir)
	if err != nil {
		return err
	}
	taken := append([]string(nil), retired...)
	var present []string
	var newest *keys.Key
	for _, k := range existing {
		taken, present = append(taken, k.Selector), append(present, k.Selector)
		if k.Algorithm == keys.AlgorithmOf(*algo) && (newest == nil || keys.Newer(k, newest)) {
			newest = k
		}
	}
	newestSel := ""
	if newest != nil {
		newestSel = newest.Selector
	}
	now := time.Now()
	sel := strings.ToLower(*selector)
	if sel == "" {
		if sel, err = cfg.Keys.Scheme().Next(now, *algo, taken, present, newestSel); err != nil {
			return fmt.Errorf("%s: %w", d, err)
		}
	} else if len(cfg.Keys.Alternate) == 0 {
		// Alternating selectors are made to be used again; any other
		// selector never is, since resolvers may still hold its old record.
		for _, r := range retired {
			if r == sel {
				return fmt.Errorf("keys: %s/%s was used before (%s); a selector is never reused", d, sel, filepath.Join(ddir, keys.RetiredDir, sel+".pem"))
			}
		}
	}
	// A record the built-in key DNS server publishes needs no update.
	kd := newKeyDNSPlan(cfg, nil)
	note := kd.note(d, sel)
	if note != "" {
		pub = publish.NewSet(cfg.Keys.CNAMEZoneFor)
	}
	ctx, cancel := context.WithTimeout(context.Background(), compileTimeout)
	defer cancel()
	state, err := keys.LoadState(ddir)
	if err != nil {
		return err
	}
	own := publish.Ownership{Force: *force, Override: "run keygen again with -force"}
	if ks := state.Keys[sel]; ks != nil {
		own.Known = ks.Records
	}
	// Where the record goes and what is there now, before any key is
	// made: a refusal leaves nothing behind. Other failures (no target,
	// DNS) come again when publishing, after the record is printed for
	// publication by hand.
	var place *publish.Place
	var placeErr error
	if !pub.Empty() {
		place, placeErr = pub.Check(ctx, d, sel, own)
		var foreign *publish.ForeignRecordError
		if errors.As(placeErr, &foreign) {
			return placeErr
		}
	}
	k, err := keys.Generate(cfg.Keys.Dir, d, sel, *algo)
	if err != nil {
		return err
	}
	k.Testing = *testFlag == "y"
	if err := noteState(ddir, func(s *keys.DomainState) {
		s.NewKey(k.Selector, k.Algorithm, now).Testing = k.Testing
	}); err != nil {
		fmt.Fprintf(stderr, "warning: %v\n", err)
	}
	fmt.Fprintf(stderr, "wrote %s (%s, %d bits, mode 0600)\n", k.Path, k.Algorithm, k.Bits)
	customer := customerRecords(ctx, pub, place, d, sel)
	if note != "" {
		customer = kd.customerRecords(d, sel)
	}
	if err := printRecordWith(stdout, k, *format, cfg, customer); err != nil {
		return err
	}
	if *format != "json" {
		sayCustomerRecords(stderr, d, customer)
	}
	if note != "" {
		fmt.Fprintln(stderr, note)
		return nil
	}
	if pub.Empty() {
		fmt.Fprintf(stderr, "publish this record; authmilter signs with the key once it is in DNS (keys.recheck, or reload with SIGHUP)\n")
		return nil
	}
	if placeErr == nil {
		placeErr = publishKey(ctx, place, k, own, ddir, stderr)
	}
	if placeErr != nil {
		return fmt.Errorf("%w; the key is written: publish the record by hand, or run authmilter rotate -d %s to try again", placeErr, d)
	}
	return nil
}

// customerRecords returns the records the owner of domain must add for the
// record of selector to be found (see publish.Set.CustomerRecords): in
// CNAME mode the CNAME; for a delegated selector zone its NS records, when
// place (the located target) is known. Nothing when they cannot be told.
func customerRecords(ctx context.Context, pub *publish.Set, place *publish.Place, domain, selector string) []publish.CustomerRecord {
	if z := pub.CNAMEZone(domain); z != "" {
		return []publish.CustomerRecord{publish.CNAMERecord(domain, selector, z)}
	}
	if place == nil {
		return nil
	}
	recs, err := place.CustomerRecords(ctx)
	if err != nil {
		return nil
	}
	return recs
}

// sayCustomerRecords tells what the owner of domain must add to their zone.
func sayCustomerRecords(w io.Writer, domain string, recs []publish.CustomerRecord) {
	if len(recs) == 0 {
		return
	}
	what := "delegate the selector zone"
	if recs[0].Type == "CNAME" {
		what = "point the selector at the provider's record"
	}
	fmt.Fprintf(w, "the owner of %s must have these records in the zone of %s (%s):\n", domain, domain, what)
	for _, r := range recs {
		fmt.Fprintf(w, "  %s\n", r)
	}
}

// noteState applies change to a domain's rotation state file.
func noteState(ddir string, change func(*keys.DomainState)) error {
	s, err := keys.LoadState(ddir)
	if err != nil {
		return err
	}
	change(s)
	return s.Save(ddir)
}

// printRecord prints k's DNS record in one of recordFormats, at the name
// where it is published (in CNAME mode, under the provider's zone).
func printRecord(w io.Writer, k *keys.Key, format string, cfg *policy.Config) error {
	var customer []publish.CustomerRecord
	if z := cfg.Keys.CNAMEZoneFor(k.Domain); z != "" {
		customer = []publish.CustomerRecord{publish.CNAMERecord(k.Domain, k.Selector, z)}
	}
	return printRecordWith(w, k, format, cfg, customer)
}

// zoneRecord returns k's record in zone file form at the name where it is
// published, without the final newline.
func zoneRecord(cfg *policy.Config, k *keys.Key) string {
	var b strings.Builder
	printRecordWith(&b, k, "zone", cfg, nil)
	return strings.TrimRight(b.String(), "\n")
}

// nsupdateServer is the server (and zone, if configured) an nsupdate
// script for the record at name should go to, decided without asking DNS:
// the first [[keys.publish.target]] whose zone patterns cover name, else
// [keys.publish]'s server (nsupdate finds the zone itself when none is set).
func nsupdateServer(cfg *policy.Config, name string) (server, zone string) {
	for _, t := range cfg.Keys.Publish.Targets {
		for _, z := range t.Zones {
			if policy.ZoneCovers(z, name) {
				server, _ = policy.NormalizeDNSServer(t.Server)
				return server, ""
			}
		}
	}
	if cfg.Keys.Publish.Server != "" {
		server, _ = policy.NormalizeDNSServer(cfg.Keys.Publish.Server)
	}
	return server, cfg.Keys.Publish.Zone
}

// printRecordWith is printRecord with the records the customer must add
// (json: "customer_records"; the other formats leave them to the caller,
// since their output goes into the provider's zone or nsupdate).
func printRecordWith(w io.Writer, k *keys.Key, format string, cfg *policy.Config, customer []publish.CustomerRecord) error {
	ttl := cfg.Keys.Publish.TTL
	name := publish.NewSet(cfg.Keys.CNAMEZoneFor).RecordName(k.Domain, k.Selector)
	// keys formats records at their own name; CNAME mode moves the owner.
	own := keys.RecordName(k.Domain, k.Selector) + "."
	at := func(s string) string { return strings.ReplaceAll(s, own, name+".") }
	switch format {
	case "zone":
		_, err := io.WriteString(w, at(keys.ZoneRecord(k)))
		return err
	case "value":
		_, err := fmt.Fprintln(w, keys.FormatRecord(k))
		return err
	case "nsupdate":
		server, zone := nsupdateServer(cfg, name)
		_, err := io.WriteString(w, at(keys.NSUpdateScript(k, ttl, server, zone)))
		return err
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(recordJSON{
			Domain: k.Domain, Selector: k.Selector, Algorithm: string(k.Algorithm), Bits: k.Bits, Path: k.Path,
			Name: name + ".", Type: "TXT", TTL: ttl,
			Value: keys.FormatRecord(k), Strings: keys.RecordStrings(keys.FormatRecord(k)), CustomerRecords: customer,
		})
	}
	return fmt.Errorf("-format: want %s, got %q", recordFormats, format)
}

// recordJSON is keygen's -format json output.
type recordJSON struct {
	Domain    string   `json:"domain"`
	Selector  string   `json:"selector"`
	Algorithm string   `json:"algorithm"`
	Bits      int      `json:"bits"`
	Path      string   `json:"path"`
	Name      string   `json:"name"`
	Type      string   `json:"type"`
	TTL       int      `json:"ttl"`
	Value     string   `json:"value"`
	Strings   []string `json:"strings"`
	// CustomerRecords are the records the owner of the domain must add:
	// the CNAME to Name (CNAME mode), or the NS records that delegate the
	// selector zone.
	CustomerRecords []publish.CustomerRecord `json:"customer_records,omitempty"`
}

// newPublisher builds the publication targets: each [[keys.publish.target]]
// in order (TSIG settings and TTL taken from [keys.publish] when not set),
// then [keys.publish] itself when its server is set. Without any, the set
// is empty: records are printed for the administrator.
func newPublisher(cfg *policy.Config) (*publish.Set, error) {
	pc := cfg.Keys.Publish
	var targets []*publish.Updater
	for i, t := range pc.Targets {
		key := fmt.Sprintf("keys.publish.target[%d]", i)
		tc := targetConfig{server: t.Server, zones: t.Zones, tsigName: t.TSIGName, tsigAlgorithm: t.TSIGAlgorithm,
			tsigSecretFile: t.TSIGSecretFile, ttl: t.TTL}
		if tc.tsigName == "" {
			tc.tsigName = pc.TSIGName
		}
		if tc.tsigAlgorithm == "" {
			tc.tsigAlgorithm = pc.TSIGAlgorithm
		}
		if tc.tsigSecretFile == "" {
			tc.tsigSecretFile = pc.TSIGSecretFile
		}
		if tc.ttl == 0 {
			tc.ttl = pc.TTL
		}
		u, err := tc.updater(key, pc.Timeout.Duration)
		if err != nil {
			return nil, err
		}
		targets = append(targets, u)
	}
	if pc.Server != "" {
		tc := targetConfig{server: pc.Server, zone: pc.Zone, zones: pc.Zones, tsigName: pc.TSIGName, tsigAlgorithm: pc.TSIGAlgorithm,
			tsigSecretFile: pc.TSIGSecretFile, ttl: pc.TTL}
		u, err := tc.updater("keys.publish", pc.Timeout.Duration)
		if err != nil {
			return nil, err
		}
		targets = append(targets, u)
	}
	return publish.NewSet(cfg.Keys.CNAMEZoneFor, targets...), nil
}

// targetConfig is one publication target's settings after defaults.
type targetConfig struct {
	server, zone                            string
	zones                                   []string
	tsigName, tsigAlgorithm, tsigSecretFile string
	ttl                                     int
}

// updater reads the TSIG secret and returns the target's Updater; key
// names the config section in errors.
func (tc targetConfig) updater(key string, timeout time.Duration) (*publish.Updater, error) {
	server, err := policy.NormalizeDNSServer(tc.server)
	if err != nil {
		return nil, fmt.Errorf("%s.server: %w", key, err)
	}
	c := publish.Config{Server: server, Zone: tc.zone, Zones: tc.zones, Match: policy.ZoneMatches,
		TSIGName: tc.tsigName, TSIGAlgorithm: tc.tsigAlgorithm, TTL: uint32(tc.ttl), Timeout: timeout}
	if tc.tsigName != "" {
		secret, algo, err := publish.ReadSecretFile(tc.tsigSecretFile)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", key, err)
		}
		c.TSIGSecret = secret
		if algo != "" {
			c.TSIGAlgorithm = algo
		}
	}
	u, err := publish.New(c)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	return u, nil
}

// publishKey publishes k's record at place (never over a record that own
// does not cover), checks that the server then serves it, and records the
// value and the time in the domain's state (ddir).
func publishKey(ctx context.Context, place *publish.Place, k *keys.Key, own publish.Ownership, ddir string, w io.Writer) error {
	up, err := place.Publish(ctx, k, own)
	if err != nil {
		return err
	}
	// keygen's own state write; rotate keeps its state in memory and
	// records the same itself.
	if err := noteState(ddir, func(s *keys.DomainState) {
		ks := s.Key(k.Selector)
		ks.Records = publish.Remember(ks.Records, up.Value)
		ks.Published = time.Now()
	}); err != nil {
		fmt.Fprintf(w, "warning: %v\n", err)
	}
	sayPublished(w, up)
	return nil
}

// sayPublished reports a publication.
func sayPublished(w io.Writer, up *publish.Update) {
	if up.Noop {
		fmt.Fprintf(w, "%s TXT is already published at %s (zone %s); the server answers with it\n",
			up.Name, up.Target.Server(), strings.TrimSuffix(up.Zone, "."))
	} else {
		fmt.Fprintf(w, "published %s TXT by RFC 2136 update to %s (zone %s, TTL %d); the server answers with it\n",
			up.Name, up.Target.Server(), strings.TrimSuffix(up.Zone, "."), up.Target.TTL())
	}
	if len(up.Foreign) > 0 {
		fmt.Fprintf(w, "replaced (forced) the record(s) there that this installation had not published: %q\n", up.Foreign)
	}
	if up.Wildcard {
		fmt.Fprintf(w, "note: a wildcard TXT record answered for %s before; it stays, and still answers for other names\n", up.Name)
	}
}
