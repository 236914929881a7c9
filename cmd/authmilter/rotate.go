package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/authmilter/authmilter/keys"
	"github.com/authmilter/authmilter/keys/dnscheck"
	"github.com/authmilter/authmilter/keys/publish"
	"github.com/authmilter/authmilter/policy"
)

func cmdRotate(args []string) error { return rotate(args, os.Stdout, os.Stderr) }

// rotateLockFile, in keys.dir, keeps two rotate runs (say, cron and an
// administrator) from working at the same time.
const rotateLockFile = ".rotate.lock"

// rotateRun is one run of `authmilter rotate`.
type rotateRun struct {
	cfg  *policy.Config
	kd   *keyDNSPlan // where the built-in key DNS server publishes
	view *keyView
	// pub holds the publication targets; empty: records are printed for
	// the administrator.
	pub          *publish.Set
	pol          keys.RotatePolicy
	dryRun       bool
	forcePublish bool
	verbose      bool
	out          io.Writer
	changed      bool
}

// rotate makes the next key of each domain and algorithm when the newest is
// old enough, and retires superseded keys after the grace period. See
// keys.PlanRotation for the rules and the usage text for the flags.
func rotate(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("rotate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := configFlag(fs)
	domain := fs.String("d", "", "rotate this domain (with no keys yet: make its first keys, see -a)")
	all := fs.Bool("all", false, "rotate every domain of the key table")
	graceFlag := fs.String("grace", "", "how long a superseded key is kept before it is retired (default: keys.grace, 7d)")
	dryRun := fs.Bool("dry-run", false, "print what would be done and change nothing (files, state, DNS)")
	force := fs.Bool("force", false, "make the next key even if the newest one is younger than keys.rotate_after")
	firstAlgos := fs.String("a", "rsa-2048", "with -d, the algorithms of a domain's first keys, comma-separated ("+keys.Algorithms+")")
	forcePublish := fs.Bool("force-publish", false, "publish new keys even where their name holds a record that this installation did not\n"+
		"publish (another provider's or another installation's key): that record is replaced")
	verbose := fs.Bool("v", false, "also report keys waiting out their grace period, and domains with nothing to do")
	testNow := fs.String("test-now", "", "TEST ONLY: pretend the time is this RFC 3339 time")
	if err := fs.Parse(args); err != nil {
		return exitError(2)
	}
	if (*domain == "") == !*all || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: authmilter rotate [-config FILE] (-d DOMAIN | --all) [--grace 7d] [--dry-run] [--force] [--force-publish] [-v]")
		return exitError(2)
	}
	cfg, _, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	grace := cfg.Keys.Grace.Duration
	if *graceFlag != "" {
		if grace, err = policy.ParseDuration(*graceFlag); err != nil {
			return fmt.Errorf("-grace: %w", err)
		}
	}
	now := time.Now()
	if *testNow != "" {
		if now, err = time.Parse(time.RFC3339, *testNow); err != nil {
			return fmt.Errorf("-test-now: %w", err)
		}
	}
	var algos []string
	for _, a := range strings.Split(*firstAlgos, ",") {
		switch a = strings.TrimSpace(a); a {
		case "rsa-2048", "rsa-3072", "rsa-4096", "ed25519":
			algos = append(algos, a)
		default:
			return fmt.Errorf("-a: want a comma-separated list of %s, got %q", keys.Algorithms, a)
		}
	}
	pol := cfg.Keys.RotatePolicy()
	pol.Now, pol.Grace, pol.Force = now, grace, *force
	run := &rotateRun{cfg: cfg, kd: newKeyDNSPlan(cfg, nil), dryRun: *dryRun, forcePublish: *forcePublish, verbose: *verbose || *dryRun, out: stdout,
		pol: pol}
	if run.pub, err = newPublisher(cfg); err != nil {
		return err
	}
	run.pol.CanWithdraw = !run.pub.Empty()
	if _, err := os.Stat(cfg.Keys.Dir); errors.Is(err, os.ErrNotExist) && *all {
		return nil // no key table yet: nothing to rotate
	}
	if !*dryRun {
		unlock, err := lockKeyDir(cfg.Keys.Dir)
		if err != nil {
			return err
		}
		defer unlock()
	}
	ctx, cancel := context.WithTimeout(context.Background(), compileTimeout)
	defer cancel()
	if run.view, err = loadKeyView(ctx, cfg); err != nil {
		return err
	}
	domains := run.view.pol.Table().Domains()
	if *domain != "" {
		d := strings.ToLower(strings.TrimSuffix(*domain, "."))
		if !keys.ValidDomain(d) {
			return fmt.Errorf("-d: %q is not a domain name (use the A-label form for IDNs)", *domain)
		}
		domains = []string{d}
	}
	var errs []error
	for _, d := range domains {
		if err := run.domain(ctx, d, algos); err != nil {
			errs = append(errs, err)
			fmt.Fprintf(stderr, "authmilter rotate: %v\n", err)
		}
	}
	if run.changed && !*dryRun {
		fmt.Fprintf(stdout, "authmilter signs with new keys once their records are in DNS, within keys.recheck (%s) or at the next reload (SIGHUP)\n",
			cfg.Keys.Recheck.Duration)
	}
	if len(errs) > 0 {
		return exitError(1)
	}
	return nil
}

// lockKeyDir takes an exclusive lock on keys.dir's rotateLockFile.
func lockKeyDir(dir string) (unlock func(), err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("keys: %w", err)
	}
	path := filepath.Join(dir, rotateLockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("keys: lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("keys: another authmilter rotate is running (%s is locked)", path)
		}
		return nil, fmt.Errorf("keys: lock %s: %w", path, err)
	}
	return func() { f.Close() }, nil
}

// say prints one line of the report, marked "(dry run)" in a dry run.
func (r *rotateRun) say(format string, args ...any) {
	line := fmt.Sprintf(format, args...)
	if r.dryRun {
		line = "(dry run) " + line
	}
	fmt.Fprintln(r.out, line)
}

// domain rotates one domain.
func (r *rotateRun) domain(ctx context.Context, d string, firstAlgos []string) error {
	if pins := r.view.pins(d); len(pins) > 0 {
		if r.verbose {
			r.say("%s: keys.pin selects %s; rotate leaves pinned domains alone", d, strings.Join(pins, ", "))
		}
		return nil
	}
	ddir := filepath.Join(r.cfg.Keys.Dir, d)
	state, err := keys.LoadState(ddir)
	if err != nil {
		return err
	}
	retired, err := keys.RetiredSelectors(ddir)
	if err != nil {
		return err
	}
	saved, _ := json.Marshal(state)
	// Keys a signing rule names by selector are the administrator's to
	// replace (they sign for that rule alone): rotation leaves them be.
	var domainKeys []*keys.Key
	var unmanaged []string
	for _, k := range r.view.pol.Table().Keys(d) {
		if r.view.pol.RuleNamed(k) {
			if r.verbose {
				r.say("%s: %s is named by a signing rule (%s); rotate leaves it alone", d, k.Selector, strings.Join(r.view.pol.RulesUsing(k), "; "))
			}
			unmanaged = append(unmanaged, k.Selector)
			continue
		}
		domainKeys = append(domainKeys, k)
	}
	if len(domainKeys) == 0 && len(unmanaged) > 0 {
		return nil // only rule-named keys: no rotation of its own
	}
	var plan []keys.Action
	if len(domainKeys) == 0 {
		// A new domain: its first keys.
		taken := append([]string(nil), retired...)
		for _, a := range firstAlgos {
			sel, err := r.pol.Scheme.Next(r.pol.Now, a, taken, nil, "")
			if err != nil {
				return fmt.Errorf("%s: %w", d, err)
			}
			taken = append(taken, sel)
			plan = append(plan, keys.Action{Kind: keys.ActCreate, Domain: d, Selector: sel, Algorithm: keys.AlgorithmOf(a),
				GenAlgo: a, Reason: "first key of the domain"})
		}
	} else {
		plan, err = keys.PlanRotation(keys.DomainView{Domain: d, Keys: domainKeys, Active: r.view.pol.ActiveKeys(d),
			Publication: r.view.publication, Retired: retired, Unmanaged: unmanaged, State: state}, r.pol)
		if errors.Is(err, keys.ErrDNSUnavailable) {
			return err // nothing may change, not even the state
		}
	}
	var errs []error
	if err != nil {
		errs = append(errs, err)
	}
	for _, a := range plan {
		if err := r.do(ctx, a, ddir, state); err != nil {
			errs = append(errs, err)
		}
	}
	if len(plan) == 0 && r.verbose {
		r.say("%s: nothing to do", d)
	}
	if now, _ := json.Marshal(state); !r.dryRun && !bytes.Equal(now, saved) {
		if _, err := os.Stat(ddir); err == nil {
			if err := state.Save(ddir); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// do carries out (or, in a dry run, describes) one action.
func (r *rotateRun) do(ctx context.Context, a keys.Action, ddir string, state *keys.DomainState) error {
	name := r.pub.RecordName(a.Domain, a.Selector) + "."
	switch a.Kind {
	case keys.ActCreate:
		what := fmt.Sprintf("%s: new %s key %s (%s)", a.Domain, a.GenAlgo, a.Selector, a.Reason)
		if a.Previous != "" {
			what = fmt.Sprintf("%s: new %s key %s to follow %s (%s)", a.Domain, a.GenAlgo, a.Selector, a.Previous, a.Reason)
		}
		if r.dryRun {
			r.say("%s", what)
			return nil
		}
		if !r.pub.Empty() && !r.kd.serves(a.Domain, a.Selector) {
			// A name that holds someone else's record gets no key: a key
			// that cannot be published would only wait forever.
			_, err := r.pub.Check(ctx, a.Domain, a.Selector, r.ownership(state, a.Selector, nil))
			var foreign *publish.ForeignRecordError
			if errors.As(err, &foreign) {
				return fmt.Errorf("%s: no new key %s: %w", a.Domain, a.Selector, err)
			}
		}
		k, err := keys.Generate(r.cfg.Keys.Dir, a.Domain, a.Selector, a.GenAlgo)
		if err != nil {
			return err
		}
		r.changed = true
		// A domain in testing mode (keygen -t y) stays in it: the new key
		// follows the one it replaces.
		testing := false
		for _, old := range r.view.pol.Table().Keys(a.Domain) {
			if old.Selector == a.Previous && old.Testing {
				testing = true
			}
		}
		state.NewKey(k.Selector, k.Algorithm, r.pol.Now).Testing = testing
		k.Testing = testing
		r.say("%s: %s", what, k.Path)
		return r.publishNew(ctx, k, state)
	case keys.ActPending:
		k := a.Key
		// Publish again where the record is absent or wrong; the
		// ownership check decides whether what is there may be replaced
		// (ours, or -force-publish) or is someone else's (an error that
		// says so). Partial and waiting records are already ours
		// everywhere that matters: they only need time.
		switch a.Publication.State {
		case keys.Missing, keys.DelegationMissing, keys.Mismatch, keys.Foreign, keys.Revoked:
			if r.pub.Empty() || r.kd.serves(a.Domain, a.Selector) {
				break
			}
			if r.dryRun {
				r.say("%s: %s has no usable DNS record yet (%s); would publish it again by RFC 2136 update", a.Domain, a.Selector, a.Publication.State)
				return nil
			}
			switch a.Publication.State {
			case keys.Missing:
				r.say("%s: %s has no DNS record yet; publishing it again", a.Domain, a.Selector)
			case keys.DelegationMissing:
				r.say("%s: %s is not found through the customer's zone (%s); checking its record and what the customer must add",
					a.Domain, a.Selector, a.Publication.Detail)
			default:
				r.say("%s: %s: %s: %s; publishing it again", a.Domain, a.Selector, a.Publication.State, a.Publication.Detail)
			}
			return r.publishNew(ctx, k, state)
		}
		switch a.Publication.State {
		case keys.Waiting:
			r.say("%s: the newest %s key %s is published; %s", a.Domain, a.Algorithm, a.Selector, a.Reason)
			return nil
		case keys.Partial:
			r.say("%s: the newest %s key %s is not on every nameserver yet (%s); it becomes active once they all serve it",
				a.Domain, a.Algorithm, a.Selector, a.Publication.Detail)
			return nil
		}
		if note := r.kd.note(a.Domain, a.Selector); note != "" {
			r.say("%s: the newest %s key %s is not served yet (%s: %s)\n%s", a.Domain, a.Algorithm, a.Selector,
				a.Publication.State, a.Publication.Detail, note)
			return nil
		}
		how := "publish"
		if a.Publication.State != keys.Missing {
			how = "replace it with"
		}
		r.say("%s: the newest %s key %s waits for its DNS record (%s: %s); %s:\n%s", a.Domain, a.Algorithm, a.Selector,
			a.Publication.State, a.Publication.Detail, how, zoneRecord(r.cfg, k))
		if r.pub.Empty() || a.Publication.State == keys.DelegationMissing {
			r.sayCustomer(ctx, nil, a.Domain, a.Selector)
		}
		return nil
	case keys.ActHold:
		if r.verbose {
			r.say("%s: no new %s key yet: %s", a.Domain, a.Algorithm, a.Reason)
		}
		return nil
	case keys.ActWait:
		if r.verbose {
			r.say("%s: %s (%s) %s; it is retired after %s", a.Domain, a.Selector, a.Algorithm, a.Reason,
				a.RetireAt.UTC().Format(time.RFC3339))
		}
		return nil
	case keys.ActRetire:
		if r.dryRun {
			r.say("%s: would retire %s (%s): %s", a.Domain, a.Selector, a.Algorithm, a.Reason)
			r.sayWithdraw(a, name)
			return nil
		}
		dst, err := keys.Retire(a.Key)
		if err != nil {
			return err
		}
		r.changed = true
		state.Key(a.Selector).Retired = r.pol.Now
		r.say("%s: retired %s (%s): %s; moved to %s", a.Domain, a.Selector, a.Algorithm, a.Reason, dst)
		return r.withdraw(ctx, a, name, state)
	case keys.ActWithdraw:
		if r.dryRun {
			r.sayWithdraw(a, name)
			return nil
		}
		return r.withdraw(ctx, a, name, state)
	}
	return fmt.Errorf("keys: %s/%s: unknown action %q", a.Domain, a.Selector, a.Kind)
}

// ownership says which records at the name of domain/selector are ours:
// the values the state recorded there, and any record of key (may be nil).
func (r *rotateRun) ownership(state *keys.DomainState, selector string, key *keys.Key) publish.Ownership {
	own := publish.Ownership{Key: key, Force: r.forcePublish, Override: "run authmilter rotate with -force-publish"}
	if ks := state.Keys[selector]; ks != nil {
		own.Known = ks.Records
	}
	return own
}

// publishNew publishes a new key's record, or prints it for the
// administrator; either way it tells what the customer must add (CNAME
// mode, delegated selector zones).
func (r *rotateRun) publishNew(ctx context.Context, k *keys.Key, state *keys.DomainState) error {
	if note := r.kd.note(k.Domain, k.Selector); note != "" {
		r.say("%s", note)
		r.sayCustomer(ctx, nil, k.Domain, k.Selector) // a new CNAME in CNAME mode
		return nil
	}
	if r.pub.Empty() {
		r.say("%s: publish this record:\n%s", k.Domain, zoneRecord(r.cfg, k))
		r.sayCustomer(ctx, nil, k.Domain, k.Selector)
		if !r.cfg.Keys.RequirePublished {
			r.say("%s: WARNING: keys.require_published is off: authmilter signs with %s from its next reload (keys.recheck %s or SIGHUP) whether or not this record is in DNS; publish it now",
				k.Domain, k.Selector, r.cfg.Keys.Recheck.Duration)
		}
		return nil
	}
	up, err := r.pub.Publish(ctx, k, r.ownership(state, k.Selector, k))
	var noTarget *publish.NoTargetError
	if errors.As(err, &noTarget) {
		// A zone none of our servers takes (a customer who hosts the
		// record himself): the same as manual publication, not a failure
		// of every cron run.
		r.say("%s: %v\n%s: publish this record by hand:\n%s", k.Domain, err, k.Domain, zoneRecord(r.cfg, k))
		return nil
	}
	if err != nil {
		r.say("%s: publishing failed; publish this record by hand or run rotate again:\n%s", k.Domain, zoneRecord(r.cfg, k))
		r.sayCustomer(ctx, nil, k.Domain, k.Selector)
		return err
	}
	ks := state.Key(k.Selector)
	ks.Records = publish.Remember(ks.Records, up.Value)
	ks.Published = r.pol.Now
	sayPublished(r.out, up)
	// The customer's NS or CNAME records are repeated only when the public
	// path does not already lead to the record (a new date selector in
	// CNAME mode needs a new CNAME; a delegated zone needs nothing new, and
	// a lagging secondary is not a missing delegation).
	if r.view != nil && r.view.check != nil && r.view.check.checker != nil {
		q := r.view.check.query(k, nil)
		switch res := r.view.check.checker.Check(ctx, q); res.State {
		case keys.Published, keys.Waiting, keys.Partial:
			return nil
		}
	}
	r.sayCustomer(ctx, &up.Place, k.Domain, k.Selector)
	return nil
}

// sayCustomer prints the records the owner of domain must add for
// selector's record to be found, if any (place: where it is published,
// when known).
func (r *rotateRun) sayCustomer(ctx context.Context, place *publish.Place, domain, selector string) {
	recs := customerRecords(ctx, r.pub, place, domain, selector)
	if len(recs) == 0 {
		return
	}
	var b strings.Builder
	sayCustomerRecords(&b, domain, recs)
	r.say("%s: %s", domain, strings.TrimRight(b.String(), "\n"))
}

// sayWithdraw tells what would be or is to be done with a retired key's
// record.
func (r *rotateRun) sayWithdraw(a keys.Action, name string) {
	if note := r.kd.retiredNote(a.Domain, a.Selector); note != "" {
		r.say("%s", note)
		return
	}
	if !r.pub.Empty() {
		how := "remove"
		if r.cfg.Keys.Publish.Retire == "revoke" {
			how = "revoke"
		}
		r.say("%s: would %s %s TXT by RFC 2136 update (if it is still the record this installation published)", a.Domain, how, name)
		return
	}
	r.say("%s: remove the record %s TXT (or revoke it: %s\tIN\tTXT\t%q)", a.Domain, name, name, keys.RevokedRecord(a.Algorithm))
}

// withdraw removes or revokes a retired key's record, or tells the
// administrator to. Only our record is withdrawn: a record there that this
// installation did not publish is reported and left alone.
func (r *rotateRun) withdraw(ctx context.Context, a keys.Action, name string, state *keys.DomainState) error {
	if note := r.kd.retiredNote(a.Domain, a.Selector); note != "" {
		r.say("%s", note)
		state.Key(a.Selector).Withdrawn = r.pol.Now // the server revokes it: nothing to retry
		return nil
	}
	if r.pub.Empty() {
		r.sayWithdraw(a, name)
		return nil
	}
	key := a.Key
	if key == nil {
		// Retired earlier: its file is in retired/; its public key still
		// identifies its record.
		ddir := filepath.Join(r.cfg.Keys.Dir, a.Domain)
		key, _ = keys.LoadKey(filepath.Join(ddir, keys.RetiredDir, a.Selector+".pem"), a.Domain, a.Selector)
	}
	revoke := r.cfg.Keys.Publish.Retire == "revoke"
	own := r.ownership(state, a.Selector, key)
	up, err := r.pub.Withdraw(ctx, a.Domain, a.Selector, a.Algorithm, revoke, own)
	if err != nil {
		r.say("%s: could not withdraw the record of retired key %s; rotate tries again at its next run", a.Domain, a.Selector)
		return err
	}
	ks := state.Key(a.Selector)
	ks.Withdrawn = r.pol.Now
	where := fmt.Sprintf("%s (zone %s)", up.Target.Server(), strings.TrimSuffix(up.Zone, "."))
	switch {
	case up.Noop && len(up.Foreign) > 0:
		r.say("%s: left %s alone: it holds a record that this installation did not publish (%s at %s); nothing of ours to withdraw",
			a.Domain, up.Name, strings.Join(quoted(up.Foreign), ", "), where)
		return nil
	case up.Noop && up.Value != "":
		r.say("%s: %s TXT is already revoked at %s", a.Domain, up.Name, where)
		return nil
	case up.Noop && up.Wildcard:
		// The name holds nothing itself; the wildcard answering there is
		// not ours to remove, but may still give the retired key.
		_, parent, _ := strings.Cut(strings.TrimSuffix(up.Name, "."), ".")
		r.say("%s: nothing of ours at %s (%s); a wildcard record (*.%s) answers for it and is left alone", a.Domain, up.Name, where, parent)
		return r.verifyRetired(ctx, a, key)
	case up.Noop:
		r.say("%s: %s has no TXT record at %s; nothing to withdraw", a.Domain, up.Name, where)
		return nil
	}
	r.changed = true
	if up.Value != "" {
		ks.Records = publish.Remember(ks.Records, up.Value)
	}
	how := "removed"
	if up.Action == "revoke" {
		how = "revoked"
	}
	r.say("%s: %s %s TXT by RFC 2136 update to %s", a.Domain, how, up.Name, where)
	if len(up.Foreign) > 0 {
		r.say("%s: left the record(s) at %s that this installation did not publish: %s", a.Domain, up.Name, strings.Join(quoted(up.Foreign), ", "))
	}
	return r.verifyRetired(ctx, a, key)
}

// verifyRetired looks, through the public path and (keys.check =
// "nameservers") every authoritative nameserver, whether the selector of a
// key whose record was just withdrawn still gives a usable key: a wildcard
// TXT or a synthesizing server keeps old signatures verifying whatever was
// removed. That is an error. A record still cached or on a lagging
// secondary goes away by itself: a warning, and authmilter keys keeps
// warning (and exits 1) until it has.
func (r *rotateRun) verifyRetired(ctx context.Context, a keys.Action, key *keys.Key) error {
	if r.view == nil || r.view.check == nil {
		return nil
	}
	q := dnscheck.RetiredQuery{Domain: a.Domain, Selector: a.Selector}
	if key != nil {
		q.P = key.PublicKeyData()
	}
	for _, k := range r.view.pol.Table().Keys(a.Domain) {
		if strings.EqualFold(k.Selector, a.Selector) && k != key {
			q.Current = append(q.Current, k.PublicKeyData())
		}
	}
	res := r.view.check.checker.CheckRetired(ctx, q)
	switch {
	case res.Retired:
		r.say("%s: checked: %s no longer gives a usable key (%s)", a.Domain, keys.RecordName(a.Domain, a.Selector), res.State)
		return nil
	case res.Wildcard:
		return fmt.Errorf("%s: retired key %s still verifies: %s; a wildcard record (*._domainkey.%s) or a synthesizing server answers for every selector: remove it, or signatures of retired keys keep verifying",
			a.Domain, a.Selector, res.Detail, a.Domain)
	case res.State == keys.TempError:
		r.say("%s: warning: could not check that %s is gone: %s; authmilter keys checks it again", a.Domain, a.Selector, res.Detail)
	default:
		r.say("%s: warning: %s still gives a usable key: %s (a cached copy or a lagging nameserver goes away within the record's TTL; authmilter keys warns until it has)",
			a.Domain, a.Selector, res.Detail)
	}
	return nil
}

// quoted quotes values for a report line.
func quoted(vs []string) []string {
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = fmt.Sprintf("%q", v)
	}
	return out
}
