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
	"github.com/authmilter/authmilter/policy"
)

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

func cmdKeys(args []string) error {
	if len(args) > 0 && args[0] == "record" {
		return keyRecord(args[1:], os.Stdout, os.Stderr)
	}
	return listKeys(args, os.Stdout, os.Stderr)
}

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
