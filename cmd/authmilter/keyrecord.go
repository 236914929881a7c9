package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/authmilter/authmilter/keys"
	"github.com/authmilter/authmilter/keys/publish"
)

// keyRecord prints the DNS record of any key in the table again, active or
// not, retired ones included (`authmilter keys record`): for an
// administrator who lost keygen's output, moves a zone, or has to publish a
// record again. The record goes to stdout in keygen's formats; notes go to
// stderr.
func keyRecord(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("keys record", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := configFlag(fs)
	domain := fs.String("d", "", "domain (d=) of the key")
	selector := fs.String("s", "", "selector (s=) of the key")
	format := fs.String("format", "zone", "record output: "+recordFormats)
	if err := fs.Parse(args); err != nil {
		return exitError(2)
	}
	if *domain == "" || *selector == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: authmilter keys record -d DOMAIN -s SELECTOR [-format zone|value|nsupdate|json] [-config FILE]")
		return exitError(2)
	}
	switch *format {
	case "zone", "value", "nsupdate", "json":
	default:
		return fmt.Errorf("-format: want %s, got %q", recordFormats, *format)
	}
	d := strings.ToLower(strings.TrimSuffix(*domain, "."))
	if !keys.ValidDomain(d) {
		return fmt.Errorf("-d: %q is not a domain name (use the A-label form for IDNs)", *domain)
	}
	s := strings.ToLower(*selector)
	if !keys.ValidSelector(s) {
		return fmt.Errorf("-s: %q is not a valid selector", *selector)
	}
	cfg, _, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	ddir := filepath.Join(cfg.Keys.Dir, d)
	path := filepath.Join(ddir, s+".pem")
	retired := false
	if _, err := os.Lstat(path); errors.Is(err, os.ErrNotExist) {
		rpath := filepath.Join(ddir, keys.RetiredDir, s+".pem")
		if _, rerr := os.Lstat(rpath); rerr != nil {
			return fmt.Errorf("no key %s/%s: neither %s nor %s exists%s", d, s, path, rpath, otherSelectors(ddir))
		}
		path, retired = rpath, true
	}
	k, err := keys.LoadKey(path, d, s)
	if err != nil {
		return err
	}
	state, err := keys.LoadState(ddir)
	if err != nil {
		fmt.Fprintf(stderr, "warning: %v\n", err)
		state = &keys.DomainState{}
	}
	state.Apply(k)
	ks := state.Keys[s]
	if retired {
		when := ""
		if ks != nil && !ks.Retired.IsZero() {
			when = " on " + ks.Retired.UTC().Format("2006-01-02")
		}
		fmt.Fprintf(stderr, "note: %s is retired (moved to %s%s); authmilter no longer signs with it. "+
			"Publish its record only to let old mail verify: its selector is never reused, and the record is removed for good once that mail is delivered\n",
			k.ID(), path, when)
	}
	if k.Testing {
		fmt.Fprintf(stderr, "note: %s is a testing key: its record carries t=y (RFC 6376 §3.6.1)\n", k.ID())
	}
	if err := printRecord(stdout, k, *format, cfg); err != nil {
		return err
	}
	// In CNAME mode the record lives in the provider's zone; the customer
	// needs the CNAME that leads there (in -format json it is in the output).
	if z := cfg.Keys.CNAMEZoneFor(d); z != "" && *format != "json" {
		sayCustomerRecords(stderr, d, []publish.CustomerRecord{publish.CNAMERecord(d, s, z)})
	}
	return nil
}

// otherSelectors lists the keys a domain folder does have, for an error
// about one it does not.
func otherSelectors(ddir string) string {
	var sels []string
	for _, sub := range []string{"", keys.RetiredDir} {
		entries, err := os.ReadDir(filepath.Join(ddir, sub))
		if err != nil {
			continue
		}
		for _, e := range entries {
			if name, ok := strings.CutSuffix(e.Name(), ".pem"); ok && !strings.HasPrefix(name, ".") && !e.IsDir() {
				if sub != "" {
					name += " (retired)"
				}
				sels = append(sels, name)
			}
		}
	}
	if len(sels) == 0 {
		return " (the domain has no keys)"
	}
	const most = 20
	if len(sels) > most {
		sels = append(sels[:most], fmt.Sprintf("... (%d in all)", len(sels)))
	}
	return "; the domain's keys: " + strings.Join(sels, ", ")
}
