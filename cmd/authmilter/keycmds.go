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
	"github.com/authmilter/authmilter/keys/dnscheck"
	"github.com/authmilter/authmilter/policy"
)

// keyView is the daemon's view of the key table (which keys it would sign
// with, under the config as it is) plus the DNS state of every key, looked
// up even when keys.require_published is off, with the publication checker
// the daemon uses (keys.check) and the times the daemon saved.
type keyView struct {
	cfg *policy.Config
	pol *policy.Policy
	pub map[*keys.Key]keys.Publication
	// check is the publication checker, with the whole result of each
	// key's check; last what the daemon saved (PublicationFile), read
	// only: since when each record has been published everywhere.
	check *pubChecker
	last  *keys.LastGood
	// warnings are notes for stderr (an unreadable saved file).
	warnings []string
}

func loadKeyView(ctx context.Context, cfg *policy.Config) (*keyView, error) {
	r, err := newResolver(cfg)
	if err != nil {
		return nil, err
	}
	checker, err := newChecker(cfg, r.Servers())
	if err != nil {
		return nil, err
	}
	v := &keyView{cfg: cfg, pub: map[*keys.Key]keys.Publication{}, last: &keys.LastGood{}}
	// The daemon's file says since when records have been published
	// everywhere; this command reads it and never writes it.
	if err := v.last.Load(keys.PublicationPath(cfg.Keys.Dir)); err != nil {
		v.warnings = append(v.warnings, err.Error())
	}
	states := map[string][]string{}
	v.check = &pubChecker{checker: checker, last: v.last, cfg: cfg, keepResults: true, known: func(domain string) []string {
		if recs, ok := states[domain]; ok {
			return recs
		}
		var recs []string
		if st, err := keys.LoadState(filepath.Join(cfg.Keys.Dir, domain)); err == nil {
			for _, sel := range st.Selectors() {
				recs = append(recs, st.Keys[sel].Records...)
			}
		}
		states[domain] = recs
		return recs
	}}
	pol, err := policy.Compile(ctx, cfg, &checkResolver{Resolver: r, check: v.check})
	if err != nil {
		return nil, err
	}
	v.pol = pol
	all := pol.Table().All()
	if cfg.Keys.RequirePublished {
		for _, k := range all {
			v.pub[k] = pol.Publication(k)
		}
		return v, nil
	}
	// Not required for signing, but shown: as the daemon would decide.
	now := time.Now()
	for k, c := range v.check.CheckPublication(ctx, all) {
		pub := c.Publication
		if pub.State == keys.Published {
			if at := policy.ActivationTime(cfg, c.Since, c.Hold); now.Before(at) {
				pub = keys.Publication{State: keys.Waiting, Detail: policy.WaitingDetail(c.Since, at, c.Hold, cfg.Keys.ActivateAfter.Duration)}
			}
		}
		v.pub[k] = pub
	}
	return v, nil
}

func (v *keyView) publication(k *keys.Key) keys.Publication { return v.pub[k] }

func (v *keyView) isActive(k *keys.Key) bool { return v.pol.Signs(k) }

// whyInactive explains why k is not signing.
func (v *keyView) whyInactive(k *keys.Key) string {
	return v.pol.InactiveReason(k, v.pub[k], activeFrom(v.cfg, v.last, k))
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
	// DNS is published, partial, delegation-missing, mismatch, foreign,
	// revoked, temperror, missing or waiting; for a retired key what its
	// selector serves (published: still a usable key).
	DNS    string `json:"dns"`
	Detail string `json:"dns_detail,omitempty"`
	Active bool   `json:"active"`
	// Record is the key record's name.
	Record string `json:"record"`
	// Check is the whole publication check: the public path (CNAMEs,
	// final name), the zone and what each of its nameservers serves, and
	// for delegation-missing the records the customer must add (add) and
	// what the public path found instead (found).
	Check *dnscheck.Result `json:"dns_check,omitempty"`
	// NegativeTTL and RecordTTL are the DNS caching times the activation
	// waits for, in seconds.
	NegativeTTL int64 `json:"negative_ttl_seconds,omitempty"`
	RecordTTL   int64 `json:"record_ttl_seconds,omitempty"`
	// PublishedSince is when the daemon first saw the record published
	// everywhere; ActiveFrom when a waiting key becomes usable.
	PublishedSince *time.Time `json:"published_since,omitempty"`
	ActiveFrom     *time.Time `json:"active_from,omitempty"`
	// Retired is set for keys in retired/ (or retired per the state):
	// Retirement says whether their selector still gives a key.
	Retired    bool                    `json:"retired,omitempty"`
	Retirement *dnscheck.RetiredResult `json:"retirement,omitempty"`
	// Why says why an inactive key is not used.
	Why string `json:"why_inactive,omitempty"`
	// Superseded is when rotate first saw a newer key active; RetireAfter
	// is when rotate will retire this key.
	Superseded  *time.Time `json:"superseded,omitempty"`
	RetireAfter *time.Time `json:"retire_after,omitempty"`
	// Problem is set for an active key whose record is not right.
	Problem string `json:"problem,omitempty"`
	// Rules are the signing rules that sign with the key (when it is
	// active), e.g. "signing.rule[0] from=acme.com domain=bigcommunications.com selector=s1024_acme".
	Rules []string `json:"rules,omitempty"`
}

func cmdKeys(args []string) error {
	if len(args) > 0 && args[0] == "record" {
		return keyRecord(args[1:], os.Stdout, os.Stderr)
	}
	return listKeys(args, os.Stdout, os.Stderr)
}

// listKeys prints every key with its DNS state (as the daemon checks it,
// keys.check) and whether it signs, and the retired keys with whether their
// selector still gives a key. It exits 1 when an active key's record is
// not right (missing, mismatch, revoked, partial, not looked up...), when
// a domain has keys but none active, or when a retired key's selector
// still gives a usable key (or cannot be checked).
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
	for _, w := range v.warnings {
		fmt.Fprintf(stderr, "warning: %s\n", w)
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
		rot := cfg.Keys.RotatePolicy()
		for _, k := range v.pol.Table().Keys(d) {
			pub := v.pub[k]
			created := k.Created // from the state, as the table read it
			row := keyInfo{Domain: k.Domain, Selector: k.Selector, Algorithm: string(k.Algorithm), Bits: k.Bits,
				Created: created.UTC(), AgeDays: int(now.Sub(created).Hours() / 24), DNS: string(pub.State),
				Detail: pub.Detail, Active: v.isActive(k), Record: keys.RecordName(k.Domain, k.Selector),
				Rules: v.pol.RulesUsing(k)}
			v.addCheck(&row, k, pub)
			if !row.Active {
				row.Why = v.whyInactive(k)
			} else if pub.State != keys.Published && pub.State != keys.Waiting {
				row.Problem = fmt.Sprintf("%s is active but its DNS record is %s: %s", k.ID(), pub.State, pub.Detail)
				problems = append(problems, row.Problem)
			}
			if ks := state.Keys[k.Selector]; ks != nil && !ks.Superseded.IsZero() && !row.Active {
				s, r := ks.Superseded.UTC(), rot.RetireAt(ks.Superseded).UTC()
				row.Superseded, row.RetireAfter = &s, &r
			}
			rows = append(rows, row)
		}
		if len(v.pol.ActiveKeys(d)) == 0 {
			problems = append(problems, fmt.Sprintf("%s has keys but none is active: its mail is not signed", d))
		}
		retired, warn := v.retiredRows(ctx, d, state, now)
		rows = append(rows, retired...)
		problems = append(problems, warn...)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rows); err != nil {
			return err
		}
	} else {
		printKeyTable(stdout, rows)
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

// addCheck adds to row what the publication check found about k.
func (v *keyView) addCheck(row *keyInfo, k *keys.Key, pub keys.Publication) {
	if r, ok := v.check.result(k); ok {
		row.Check = &r
		row.NegativeTTL, row.RecordTTL = int64(r.NegativeTTL/time.Second), int64(r.RecordTTL/time.Second)
	}
	if pub.State != keys.Published && pub.State != keys.Waiting {
		return
	}
	if since := publishedSince(v.last, k); !since.IsZero() {
		since = since.UTC()
		row.PublishedSince = &since
	}
	if pub.State == keys.Waiting {
		if at := activeFrom(v.cfg, v.last, k); !at.IsZero() {
			at = at.UTC()
			row.ActiveFrom = &at
		}
	}
}

// retiredQuery asks whether the retired key domain/selector (p= p, if
// known) is withdrawn; the keys of table that use the selector now (an
// alternating selector given a new key) are not the retired one's.
func retiredQuery(table *keys.Table, domain, selector, p string) dnscheck.RetiredQuery {
	q := dnscheck.RetiredQuery{Domain: domain, Selector: selector, P: p}
	for _, k := range table.Keys(domain) {
		if strings.EqualFold(k.Selector, selector) {
			q.Current = append(q.Current, k.PublicKeyData())
		}
	}
	return q
}

// retiredKey is a key that rotation (or the administrator) retired.
type retiredKey struct {
	selector  string
	algorithm string
	bits      int
	p         string // its p= value, "" if unknown
	retiredAt time.Time
}

// retiredKeys lists the retired keys of domain d: the files in its
// retired/ folder, and the keys its state says were retired whose file is
// gone (their p= from the records the state says were published).
func (v *keyView) retiredKeys(d string, state *keys.DomainState) []retiredKey {
	ddir := filepath.Join(v.cfg.Keys.Dir, d)
	var out []retiredKey
	seen := map[string]bool{}
	sels, _ := keys.RetiredSelectors(ddir)
	for _, sel := range sels {
		rk := retiredKey{selector: sel}
		if k, err := keys.LoadKey(filepath.Join(ddir, keys.RetiredDir, sel+".pem"), d, sel); err == nil {
			rk.algorithm, rk.bits, rk.p = string(k.Algorithm), k.Bits, k.PublicKeyData()
		}
		if ks := state.Keys[sel]; ks != nil {
			rk.retiredAt = ks.Retired
			if rk.p == "" {
				rk.algorithm, rk.p = string(ks.Algorithm), lastKeyRecord(ks.Records)
			}
		}
		seen[sel] = true
		out = append(out, rk)
	}
	for _, sel := range state.Selectors() {
		ks := state.Keys[sel]
		if seen[sel] || ks.Retired.IsZero() || v.hasKey(d, sel) {
			continue
		}
		out = append(out, retiredKey{selector: sel, algorithm: string(ks.Algorithm), p: lastKeyRecord(ks.Records), retiredAt: ks.Retired})
	}
	return out
}

// hasKey reports whether domain d has a key with selector sel in the
// table.
func (v *keyView) hasKey(d, sel string) bool {
	for _, k := range v.pol.Table().Keys(d) {
		if strings.EqualFold(k.Selector, sel) {
			return true
		}
	}
	return false
}

// lastKeyRecord returns the p= of the newest record among recs that holds
// a key.
func lastKeyRecord(recs []string) string {
	for i := len(recs) - 1; i >= 0; i-- {
		if r, err := keys.ParseRecord(recs[i]); err == nil && r.PublicKey != "" {
			return r.PublicKey
		}
	}
	return ""
}

// retiredRows checks the retired keys of domain d: their selector must no
// longer give a usable key (a verifier would still accept mail signed with
// it, and a stolen retired key would still sign for the domain). Each one
// that does, or cannot be checked, is a problem.
func (v *keyView) retiredRows(ctx context.Context, d string, state *keys.DomainState, now time.Time) ([]keyInfo, []string) {
	var rows []keyInfo
	var problems []string
	for _, rk := range v.retiredKeys(d, state) {
		res := v.check.checker.CheckRetired(ctx, retiredQuery(v.pol.Table(), d, rk.selector, rk.p))
		row := keyInfo{Domain: d, Selector: rk.selector, Algorithm: rk.algorithm, Bits: rk.bits, DNS: string(res.State),
			Detail: res.Detail, Record: keys.RecordName(d, rk.selector), Retired: true, Retirement: &res}
		if ks := state.Keys[rk.selector]; ks != nil {
			created := ks.Created
			if created.IsZero() {
				created = ks.FirstSeen
			}
			if !created.IsZero() {
				row.Created, row.AgeDays = created.UTC(), int(now.Sub(created).Hours()/24)
			}
		}
		switch {
		case res.State == keys.TempError:
			row.Problem = fmt.Sprintf("warning: cannot tell whether retired key %s/%s is withdrawn: %s", d, rk.selector, res.Detail)
		case !res.Retired:
			row.Problem = fmt.Sprintf("warning: retired key %s/%s is still usable: %s; remove the record %s. TXT (or revoke it: \"v=DKIM1; p=\")",
				d, rk.selector, res.Detail, row.Record)
			if res.Wildcard {
				row.Problem += ", and the wildcard record"
			}
		}
		if row.Problem != "" {
			problems = append(problems, row.Problem)
		}
		rows = append(rows, row)
	}
	return rows, problems
}

// ruleNumbers shortens RulesUsing's descriptions to the rules' numbers
// for the table ("0,2"; "-" for none); -json has them whole.
func ruleNumbers(rules []string) string {
	if len(rules) == 0 {
		return "-"
	}
	var out []string
	for _, r := range rules {
		n, _, _ := strings.Cut(strings.TrimPrefix(r, "signing.rule["), "]")
		out = append(out, n)
	}
	return strings.Join(out, ",")
}

// printKeyTable prints the rows as a table (retired keys only when their
// selector still gives a key, or may), then what the administrator needs
// beyond a state: per-nameserver answers of keys that are not
// published everywhere, the records a customer must add, when a waiting
// key becomes active.
func printKeyTable(w io.Writer, rows []keyInfo) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DOMAIN\tSELECTOR\tALGORITHM\tBITS\tAGE\tDNS\tRULES\tACTIVE")
	for _, r := range rows {
		if r.Retired && r.Problem == "" {
			continue // withdrawn as it should be: only -json lists it
		}
		act := "yes"
		switch {
		case r.Retired:
			act = "retired (PROBLEM: its selector still gives a key)"
			if r.DNS == string(keys.TempError) {
				act = "retired (not known whether withdrawn)"
			}
		case r.Problem != "":
			act = "yes (PROBLEM: record " + r.DNS + ")"
		case !r.Active:
			act = "no: " + r.Why
			if r.RetireAfter != nil {
				act += "; retire after " + r.RetireAfter.Format("2006-01-02 15:04")
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%dd\t%s\t%s\t%s\n", r.Domain, r.Selector, r.Algorithm, r.Bits, r.AgeDays, r.DNS, ruleNumbers(r.Rules), act)
	}
	tw.Flush()
	for _, r := range rows {
		c := r.Check
		if r.Retired || c == nil || r.DNS == string(keys.Published) || r.DNS == string(keys.Unchecked) ||
			(len(c.Nameservers) == 0 && len(c.Add) == 0 && r.DNS != string(keys.Waiting)) {
			continue
		}
		fmt.Fprintf(w, "\n%s/%s: %s: %s\n", r.Domain, r.Selector, r.DNS, r.Detail)
		if len(c.CNAMEs) > 0 {
			fmt.Fprintf(w, "  public path: %s -> %s\n", c.Name, strings.Join(c.CNAMEs, " -> "))
		}
		for _, s := range c.Nameservers {
			line := fmt.Sprintf("  nameserver %s %s: %s", s.Name, s.Addr, s.State)
			if s.Detail != "" && s.State != keys.Published {
				line += ": " + s.Detail
			}
			fmt.Fprintln(w, line)
		}
		if len(c.Add) > 0 {
			fmt.Fprintf(w, "  the public path found: %s\n  the customer must add:\n", c.Found)
			for _, a := range c.Add {
				fmt.Fprintf(w, "    %s\n", a)
			}
		}
	}
}
