package main

import (
	"context"
	"encoding/json"
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
	if err := fs.Parse(args); err != nil {
		return exitError(2)
	}
	if *domain == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: authmilter keygen -d DOMAIN [-s SELECTOR] [-a ALGORITHM] [-format FORMAT] [-config FILE]")
		return exitError(2)
	}
	switch *format {
	case "zone", "value", "nsupdate", "json":
	default:
		return fmt.Errorf("-format: want %s, got %q", recordFormats, *format)
	}
	switch *algo {
	case "rsa-2048", "rsa-3072", "rsa-4096", "ed25519":
	default:
		return fmt.Errorf("-a: want %s, got %q", keys.Algorithms, *algo)
	}
	cfg, _, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	d := strings.ToLower(strings.TrimSuffix(*domain, "."))
	if !keys.ValidDomain(d) {
		return fmt.Errorf("-d: %q is not a domain name (use the A-label form for IDNs)", *domain)
	}
	var pub *publish.Updater
	if cfg.Keys.Publish.Server != "" && !*noPublish {
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
	k, err := keys.Generate(cfg.Keys.Dir, d, sel, *algo)
	if err != nil {
		return err
	}
	if err := noteState(ddir, func(s *keys.DomainState) {
		s.NewKey(k.Selector, k.Algorithm, now)
	}); err != nil {
		fmt.Fprintf(stderr, "warning: %v\n", err)
	}
	fmt.Fprintf(stderr, "wrote %s (%s, %d bits, mode 0600)\n", k.Path, k.Algorithm, k.Bits)
	if err := printRecord(stdout, k, *format, cfg); err != nil {
		return err
	}
	if pub == nil {
		fmt.Fprintf(stderr, "publish this record; authmilter signs with the key once it is in DNS (keys.recheck, or reload with SIGHUP)\n")
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), compileTimeout)
	defer cancel()
	if err := publishKey(ctx, pub, k, stderr); err != nil {
		return fmt.Errorf("%w; the key is written: publish the record by hand, or run authmilter rotate -d %s to try again", err, d)
	}
	if err := noteState(ddir, func(s *keys.DomainState) { s.Key(k.Selector).Published = time.Now() }); err != nil {
		fmt.Fprintf(stderr, "warning: %v\n", err)
	}
	return nil
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

// printRecord prints k's DNS record in one of recordFormats.
func printRecord(w io.Writer, k *keys.Key, format string, cfg *policy.Config) error {
	ttl := cfg.Keys.Publish.TTL
	switch format {
	case "zone":
		_, err := io.WriteString(w, keys.ZoneRecord(k))
		return err
	case "value":
		_, err := fmt.Fprintln(w, keys.FormatRecord(k))
		return err
	case "nsupdate":
		server := ""
		if cfg.Keys.Publish.Server != "" {
			server, _ = policy.NormalizeDNSServer(cfg.Keys.Publish.Server)
		}
		_, err := io.WriteString(w, keys.NSUpdateScript(k, ttl, server, cfg.Keys.Publish.Zone))
		return err
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(recordJSON{
			Domain: k.Domain, Selector: k.Selector, Algorithm: string(k.Algorithm), Bits: k.Bits, Path: k.Path,
			Name: keys.RecordName(k.Domain, k.Selector) + ".", Type: "TXT", TTL: ttl,
			Value: keys.FormatRecord(k), Strings: keys.RecordStrings(keys.FormatRecord(k)),
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
}

// newPublisher builds the RFC 2136 updater of [keys.publish].
func newPublisher(cfg *policy.Config) (*publish.Updater, error) {
	pc := cfg.Keys.Publish
	server, err := policy.NormalizeDNSServer(pc.Server)
	if err != nil {
		return nil, fmt.Errorf("keys.publish.server: %w", err)
	}
	c := publish.Config{Server: server, Zone: pc.Zone, TSIGName: pc.TSIGName, TSIGAlgorithm: pc.TSIGAlgorithm,
		TTL: uint32(pc.TTL), Timeout: pc.Timeout.Duration}
	if pc.TSIGName != "" {
		secret, algo, err := publish.ReadSecretFile(pc.TSIGSecretFile)
		if err != nil {
			return nil, err
		}
		c.TSIGSecret = secret
		if algo != "" {
			c.TSIGAlgorithm = algo
		}
	}
	return publish.New(c)
}

// publishKey publishes k's record and checks that the server then serves it.
func publishKey(ctx context.Context, pub *publish.Updater, k *keys.Key, w io.Writer) error {
	zone, err := pub.Publish(ctx, k)
	if err != nil {
		return err
	}
	if got := keys.CheckPublished(ctx, pub.Lookup, k); got.State != keys.Published {
		return fmt.Errorf("publish: %s: the update of zone %s was accepted but %s then answers %s: %s",
			k.ID(), zone, pub.Server(), got.State, got.Detail)
	}
	fmt.Fprintf(w, "published %s. TXT by RFC 2136 update to %s (zone %s, TTL %d); the server answers with it\n",
		keys.RecordName(k.Domain, k.Selector), pub.Server(), zone, pub.TTL())
	return nil
}
