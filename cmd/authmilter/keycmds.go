package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/authmilter/authmilter/keys"
	"github.com/authmilter/authmilter/policy"
)

func cmdKeygen(args []string) error {
	fs := flag.NewFlagSet("keygen", flag.ContinueOnError)
	cfgPath := configFlag(fs)
	domain := fs.String("d", "", "domain (d=) the key signs for")
	selector := fs.String("s", "", "selector (default: YYYY-MM of today plus keys.selector_suffix)")
	algo := fs.String("a", "rsa-2048", "rsa-2048, rsa-3072, rsa-4096 or ed25519")
	format := fs.String("format", "zone", "record output: zone, value or json")
	if err := fs.Parse(args); err != nil {
		return exitError(2)
	}
	if *domain == "" {
		return fmt.Errorf("-d DOMAIN is required")
	}
	cfg, _, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	sel := *selector
	if sel == "" {
		sel = keys.DateSelector(time.Now(), *algo, cfg.Keys.SelectorSuffix)
	}
	k, err := keys.Generate(cfg.Keys.Dir, *domain, sel, *algo)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "wrote %s (mode 0600); publish this record, then reload authmilter:\n", k.Path)
	return printRecord(k, *format)
}

func printRecord(k *keys.Key, format string) error {
	switch format {
	case "zone":
		fmt.Print(keys.ZoneRecord(k))
	case "value":
		fmt.Println(keys.FormatRecord(k))
	case "json":
		return json.NewEncoder(os.Stdout).Encode(map[string]string{
			"name": keys.RecordName(k.Domain, k.Selector) + ".", "type": "TXT", "value": keys.FormatRecord(k),
		})
	default:
		return fmt.Errorf("-format: want zone, value or json, got %q", format)
	}
	return nil
}

// keyInfo is one row of `authmilter keys`.
type keyInfo struct {
	Domain    string `json:"domain"`
	Selector  string `json:"selector"`
	Algorithm string `json:"algorithm"`
	Bits      int    `json:"bits"`
	AgeDays   int    `json:"age_days"`
	DNS       string `json:"dns"`
	Detail    string `json:"detail,omitempty"`
	Active    bool   `json:"active"`
	Why       string `json:"why,omitempty"`
}

func cmdKeys(args []string) error {
	fs := flag.NewFlagSet("keys", flag.ContinueOnError)
	cfgPath := configFlag(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args); err != nil {
		return exitError(2)
	}
	cfg, _, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	// Always look keys up here, even when signing does not require it.
	c := *cfg
	c.Keys.RequirePublished = true
	r, err := newResolver(&c)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), compileTimeout)
	defer cancel()
	pol, err := policy.Compile(ctx, &c, r)
	if err != nil {
		return err
	}
	var rows []keyInfo
	bad := false
	for _, k := range pol.Table().All() {
		pub := pol.Publication(k)
		row := keyInfo{Domain: k.Domain, Selector: k.Selector, Algorithm: string(k.Algorithm), Bits: k.Bits,
			AgeDays: int(time.Since(k.ModTime).Hours() / 24), DNS: string(pub.State), Detail: pub.Detail}
		for _, a := range pol.ActiveKeys(k.Domain) {
			if a == k {
				row.Active = true
			}
		}
		if !row.Active {
			if pub.State != keys.Published {
				row.Why = "not published"
			} else {
				row.Why = "a newer selector is active"
			}
		}
		rows = append(rows, row)
	}
	// An active key is by construction published; a domain whose newest
	// key is unpublished while nothing else signs is the failure to report.
	for _, d := range pol.Table().Domains() {
		if len(pol.ActiveKeys(d)) == 0 {
			bad = true
		}
	}
	if *asJSON {
		if err := json.NewEncoder(os.Stdout).Encode(rows); err != nil {
			return err
		}
	} else {
		tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "DOMAIN\tSELECTOR\tALGORITHM\tBITS\tAGE\tDNS\tACTIVE")
		for _, r := range rows {
			act := "yes"
			if !r.Active {
				act = "no: " + r.Why
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%dd\t%s\t%s\n", r.Domain, r.Selector, r.Algorithm, r.Bits, r.AgeDays, r.DNS, act)
		}
		tw.Flush()
	}
	if bad {
		return exitError(1)
	}
	return nil
}
