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
	"github.com/authmilter/authmilter/keys/publish"
	"github.com/authmilter/authmilter/policy"
)

func cmdRotate(args []string) error { return rotate(args, os.Stdout, os.Stderr) }

// rotateLockFile, in keys.dir, keeps two rotate runs (say, cron and an
// administrator) from working at the same time.
const rotateLockFile = ".rotate.lock"

// rotateRun is one run of `authmilter rotate`.
type rotateRun struct {
	cfg     *policy.Config
	view    *keyView
	pub     *publish.Updater
	pol     keys.RotatePolicy
	dryRun  bool
	verbose bool
	out     io.Writer
	changed bool
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
	verbose := fs.Bool("v", false, "also report keys waiting out their grace period, and domains with nothing to do")
	testNow := fs.String("test-now", "", "TEST ONLY: pretend the time is this RFC 3339 time")
	if err := fs.Parse(args); err != nil {
		return exitError(2)
	}
	if (*domain == "") == !*all || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: authmilter rotate [-config FILE] (-d DOMAIN | --all) [--grace 7d] [--dry-run] [--force] [-v]")
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
	run := &rotateRun{cfg: cfg, dryRun: *dryRun, verbose: *verbose || *dryRun, out: stdout,
		pol: keys.RotatePolicy{Now: now, RotateAfter: cfg.Keys.RotateAfter.Duration, Grace: grace,
			Recheck: cfg.Keys.Recheck.Duration, Force: *force, Suffix: cfg.Keys.SelectorSuffix,
			Scheme: cfg.Keys.Scheme()}}
	if cfg.Keys.Publish.Server != "" {
		if run.pub, err = newPublisher(cfg); err != nil {
			return err
		}
		run.pol.CanWithdraw = true
	}
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
	domainKeys := r.view.pol.Table().Keys(d)
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
			Publication: r.view.publication, Retired: retired, State: state}, r.pol)
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
	name := keys.RecordName(a.Domain, a.Selector) + "."
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
		k, err := keys.Generate(r.cfg.Keys.Dir, a.Domain, a.Selector, a.GenAlgo)
		if err != nil {
			return err
		}
		r.changed = true
		state.NewKey(k.Selector, k.Algorithm, r.pol.Now)
		r.say("%s: %s", what, k.Path)
		return r.publishNew(ctx, k, state)
	case keys.ActPending:
		k := a.Key
		if a.Publication.State == keys.Missing && r.pub != nil {
			if r.dryRun {
				r.say("%s: %s has no DNS record yet; would publish it again by RFC 2136 update to %s", a.Domain, a.Selector, r.pub.Server())
				return nil
			}
			r.say("%s: %s has no DNS record yet; publishing it again", a.Domain, a.Selector)
			return r.publishNew(ctx, k, state)
		}
		how := "publish"
		if a.Publication.State != keys.Missing {
			how = "replace it with"
		}
		r.say("%s: the newest %s key %s waits for its DNS record (%s: %s); %s:\n%s", a.Domain, a.Algorithm, a.Selector,
			a.Publication.State, a.Publication.Detail, how, strings.TrimRight(keys.ZoneRecord(k), "\n"))
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

// publishNew publishes a new key's record, or prints it for the
// administrator.
func (r *rotateRun) publishNew(ctx context.Context, k *keys.Key, state *keys.DomainState) error {
	if r.pub == nil {
		r.say("%s: publish this record:\n%s", k.Domain, strings.TrimRight(keys.ZoneRecord(k), "\n"))
		if !r.cfg.Keys.RequirePublished {
			r.say("%s: WARNING: keys.require_published is off: authmilter signs with %s from its next reload (keys.recheck %s or SIGHUP) whether or not this record is in DNS; publish it now",
				k.Domain, k.Selector, r.cfg.Keys.Recheck.Duration)
		}
		return nil
	}
	if err := publishKey(ctx, r.pub, k, r.out); err != nil {
		r.say("%s: publishing failed; publish this record by hand or run rotate again:\n%s", k.Domain, strings.TrimRight(keys.ZoneRecord(k), "\n"))
		return err
	}
	state.Key(k.Selector).Published = r.pol.Now
	return nil
}

// sayWithdraw tells what would be or is to be done with a retired key's
// record.
func (r *rotateRun) sayWithdraw(a keys.Action, name string) {
	if r.pub != nil {
		how := "remove"
		if r.cfg.Keys.Publish.Retire == "revoke" {
			how = "revoke"
		}
		r.say("%s: would %s %s TXT by RFC 2136 update to %s", a.Domain, how, name, r.pub.Server())
		return
	}
	r.say("%s: remove the record %s TXT (or revoke it: %s\tIN\tTXT\t%q)", a.Domain, name, name, keys.RevokedRecord(a.Algorithm))
}

// withdraw removes or revokes a retired key's record, or tells the
// administrator to.
func (r *rotateRun) withdraw(ctx context.Context, a keys.Action, name string, state *keys.DomainState) error {
	if r.pub == nil {
		r.sayWithdraw(a, name)
		return nil
	}
	var zone string
	var err error
	how := "removed"
	if r.cfg.Keys.Publish.Retire == "revoke" {
		how = "revoked"
		zone, err = r.pub.Revoke(ctx, a.Domain, a.Selector, a.Algorithm)
	} else {
		zone, err = r.pub.Remove(ctx, a.Domain, a.Selector)
	}
	if err != nil {
		r.say("%s: could not withdraw the record of retired key %s; rotate tries again at its next run", a.Domain, a.Selector)
		return err
	}
	r.changed = true
	state.Key(a.Selector).Withdrawn = r.pol.Now
	r.say("%s: %s %s TXT by RFC 2136 update to %s (zone %s)", a.Domain, how, name, r.pub.Server(), zone)
	return nil
}
