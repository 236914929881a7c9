package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
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
	selector := fs.String("s", "", "selector (default: YYYY-MM of today, \"e\" added for ed25519, then a letter b, c, ... if the month\n"+
		"already has a key, then keys.selector_suffix; it always sorts after the domain's newest key)")
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
	newest := ""
	for _, k := range existing {
		taken = append(taken, k.Selector)
		if k.Algorithm == keys.AlgorithmOf(*algo) && k.Selector > newest {
			newest = k.Selector
		}
	}
	now := time.Now()
	sel := strings.ToLower(*selector)
	if sel == "" {
		if sel, err = keys.NextSelector(now, *algo, cfg.Keys.SelectorSuffix, taken, newest); err != nil {
			return fmt.Errorf("%s: %w", d, err)
		}
	} else {
		for _, r := range retired {
			if r == sel {
				return fmt.Errorf("keys: %s/%s was used before (%s); a selector is never reused", d, sel, filepath.Join(ddir, keys.RetiredDir, sel+".pem"))
			}
		}
		if newest != "" && sel <= newest {
			fmt.Fprintf(stderr, "warning: %s sorts before the domain's newest %s key %s: it will not become active unless pinned with keys.pin\n",
				sel, keys.AlgorithmOf(*algo), newest)
		}
	}
	k, err := keys.Generate(cfg.Keys.Dir, d, sel, *algo)
	if err != nil {
		return err
	}
	if err := noteState(ddir, func(s *keys.DomainState) {
		ks := s.Key(k.Selector)
		ks.Algorithm, ks.Created = k.Algorithm, now
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

// keyView is the daemon's view of the key table (which keys it would sign
// with, under the config as it is) plus the DNS state of every key, looked
// up even when keys.require_published is off.
type keyView struct {
	cfg *policy.Config
	pol *policy.Policy
	pub map[*keys.Key]keys.Publication
}

func loadKeyView(ctx context.Context, cfg *policy.Config) (*keyView, error) {
	r, err := newResolver(cfg)
	if err != nil {
		return nil, err
	}
	pol, err := policy.Compile(ctx, cfg, r)
	if err != nil {
		return nil, err
	}
	v := &keyView{cfg: cfg, pol: pol, pub: map[*keys.Key]keys.Publication{}}
	all := pol.Table().All()
	if cfg.Keys.RequirePublished {
		for _, k := range all {
			v.pub[k] = pol.Publication(k)
		}
		return v, nil
	}
	v.pub = keys.CheckAllPublished(ctx, r.LookupTXT, all)
	return v, nil
}

func (v *keyView) publication(k *keys.Key) keys.Publication { return v.pub[k] }

func (v *keyView) isActive(k *keys.Key) bool {
	for _, a := range v.pol.ActiveKeys(k.Domain) {
		if a == k {
			return true
		}
	}
	return false
}

// whyInactive explains why k is not signing.
func (v *keyView) whyInactive(k *keys.Key) string {
	if pins := v.pins(k.Domain); len(pins) > 0 {
		pinned := false
		for _, s := range pins {
			pinned = pinned || strings.EqualFold(s, k.Selector)
		}
		if !pinned {
			return "keys.pin selects " + strings.Join(pins, ", ")
		}
	}
	pub := v.pub[k]
	if v.cfg.Keys.RequirePublished {
		switch pub.State {
		case keys.Missing:
			return "DNS record missing"
		case keys.Mismatch:
			return "DNS record does not match the key"
		case keys.Revoked:
			return "revoked in DNS (empty p=)"
		case keys.TempError:
			return "DNS lookup failed"
		}
	}
	for _, a := range v.pol.ActiveKeys(k.Domain) {
		if a.Algorithm == k.Algorithm && a.Selector > k.Selector {
			return "superseded by " + a.Selector
		}
	}
	return "not chosen"
}

func (v *keyView) pins(domain string) []string {
	for d, s := range v.cfg.Keys.Pin {
		if strings.EqualFold(strings.TrimSuffix(d, "."), domain) {
			return s
		}
	}
	return nil
}

// keyInfo is one row of `authmilter keys`.
type keyInfo struct {
	Domain    string    `json:"domain"`
	Selector  string    `json:"selector"`
	Algorithm string    `json:"algorithm"`
	Bits      int       `json:"bits"`
	Created   time.Time `json:"created"`
	AgeDays   int       `json:"age_days"`
	// DNS is published, missing, mismatch, revoked or temperror.
	DNS    string `json:"dns"`
	Detail string `json:"dns_detail,omitempty"`
	Active bool   `json:"active"`
	// Why says why an inactive key is not used.
	Why string `json:"why_inactive,omitempty"`
	// Superseded is when rotate first saw a newer key active; RetireAfter
	// is when rotate will retire this key.
	Superseded  *time.Time `json:"superseded,omitempty"`
	RetireAfter *time.Time `json:"retire_after,omitempty"`
	// Problem is set for an active key whose record is not right.
	Problem string `json:"problem,omitempty"`
}

func cmdKeys(args []string) error { return listKeys(args, os.Stdout, os.Stderr) }

// listKeys prints every key with its DNS state and whether it signs. It
// exits 1 when an active key's record is missing, does not match, is
// revoked or cannot be looked up, or when a domain has keys but none active.
func listKeys(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("keys", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := configFlag(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	only := fs.String("d", "", "list only this domain")
	if err := fs.Parse(args); err != nil {
		return exitError(2)
	}
	cfg, _, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), compileTimeout)
	defer cancel()
	v, err := loadKeyView(ctx, cfg)
	if err != nil {
		return err
	}
	now := time.Now()
	rows := []keyInfo{}
	var problems []string
	for _, d := range v.pol.Table().Domains() {
		if *only != "" && !strings.EqualFold(strings.TrimSuffix(*only, "."), d) {
			continue
		}
		state, err := keys.LoadState(filepath.Join(cfg.Keys.Dir, d))
		if err != nil {
			fmt.Fprintf(stderr, "warning: %v\n", err)
			state = &keys.DomainState{}
		}
		grace := cfg.Keys.Grace.Duration + cfg.Keys.Recheck.Duration
		for _, k := range v.pol.Table().Keys(d) {
			pub := v.pub[k]
			created := state.Created(k)
			row := keyInfo{Domain: k.Domain, Selector: k.Selector, Algorithm: string(k.Algorithm), Bits: k.Bits,
				Created: created.UTC(), AgeDays: int(now.Sub(created).Hours() / 24), DNS: string(pub.State),
				Detail: pub.Detail, Active: v.isActive(k)}
			if !row.Active {
				row.Why = v.whyInactive(k)
			} else if pub.State != keys.Published {
				row.Problem = fmt.Sprintf("%s is active but its DNS record is %s: %s", k.ID(), pub.State, pub.Detail)
				problems = append(problems, row.Problem)
			}
			if ks := state.Keys[k.Selector]; ks != nil && !ks.Superseded.IsZero() && !row.Active {
				s, r := ks.Superseded.UTC(), ks.Superseded.Add(grace).UTC()
				row.Superseded, row.RetireAfter = &s, &r
			}
			rows = append(rows, row)
		}
		if len(v.pol.ActiveKeys(d)) == 0 {
			problems = append(problems, fmt.Sprintf("%s has keys but none is active: its mail is not signed", d))
		}
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rows); err != nil {
			return err
		}
	} else {
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "DOMAIN\tSELECTOR\tALGORITHM\tBITS\tAGE\tDNS\tACTIVE")
		for _, r := range rows {
			act := "yes"
			switch {
			case r.Problem != "":
				act = "yes (PROBLEM: record " + r.DNS + ")"
			case !r.Active:
				act = "no: " + r.Why
				if r.RetireAfter != nil {
					act += "; retire after " + r.RetireAfter.Format("2006-01-02 15:04")
				}
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%dd\t%s\t%s\n", r.Domain, r.Selector, r.Algorithm, r.Bits, r.AgeDays, r.DNS, act)
		}
		tw.Flush()
	}
	if len(problems) > 0 {
		sort.Strings(problems)
		for _, p := range problems {
			fmt.Fprintln(stderr, "authmilter keys:", p)
		}
		return exitError(1)
	}
	return nil
}
