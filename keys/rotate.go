package keys

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Rotation in brief (what `authmilter rotate` does for one domain, per
// algorithm; see PlanRotation):
//
//  1. The newest key (the last created) has no valid record yet: wait for
//     it (print the record again, or publish it again by RFC 2136). Never
//     make a second key while one is pending.
//  2. The newest key is published and older than rotate_after (or --force):
//     make the next key, named by the SelectorScheme, and publish it. The daemon starts
//     signing with it once its record is visible (keys.recheck or SIGHUP).
//  3. A key that is not active while a newer key of its algorithm is active
//     is "superseded" from the first run that sees it so (recorded in the
//     state file). After grace + keys.recheck it is retired: its file moves
//     to retired/ and its record is removed (or revoked with an empty p=).
//
// Every decision depends only on the key files, DNS and the state file, so
// a run that changes nothing can be repeated any number of times.

// RotatePolicy holds the rules and the clock of a rotation run.
type RotatePolicy struct {
	// Now is the time of the run.
	Now time.Time
	// RotateAfter is the age of the newest key (see DomainState.Created) at
	// which the next key is made.
	RotateAfter time.Duration
	// Grace is how long a superseded key is kept, so that mail signed with it
	// can still be verified while in transit.
	Grace time.Duration
	// Recheck is the daemon's keys.recheck: it may sign with the old key
	// that long after the new one's record appears, so it is added to Grace.
	Recheck time.Duration
	// Force makes the next key even if the newest is younger than
	// RotateAfter (never while a newer key is still waiting for DNS).
	Force bool
	// Suffix is keys.selector_suffix (used when Scheme is the zero value).
	Suffix string
	// Scheme names new keys: keys.selector_format, keys.selector_suffix
	// or keys.alternate.
	Scheme SelectorScheme
	// CanWithdraw says that records can be removed by RFC 2136 updates, so
	// retired keys whose record is still there get another attempt.
	CanWithdraw bool
}

// RetireAt is when a key superseded at superseded is retired: Grace after
// it, plus Recheck, during which the daemon may still sign with it.
// `authmilter keys` and the status pages show the same date.
func (p RotatePolicy) RetireAt(superseded time.Time) time.Time {
	return superseded.Add(p.Grace + p.Recheck)
}

// ActionKind says what a rotation action does.
type ActionKind string

// The rotation actions.
const (
	// ActCreate makes a new key (Selector, GenAlgo) and publishes it.
	ActCreate ActionKind = "create"
	// ActPending reports that the newest key (Key) waits for its record; it
	// is published again when automatic publication is configured and the
	// record is missing.
	ActPending ActionKind = "pending"
	// ActRetire moves Key to retired/ and withdraws its record.
	ActRetire ActionKind = "retire"
	// ActWithdraw retries withdrawing the record of an already retired key.
	ActWithdraw ActionKind = "withdraw"
	// ActWait is informational: Key is superseded and is retired at RetireAt.
	ActWait ActionKind = "wait"
	// ActHold is informational: Key (the newest) is due for rotation, but
	// the alternating selector that comes next still holds a key.
	ActHold ActionKind = "hold"
)

// Action is one step of a rotation plan.
type Action struct {
	// Kind is what to do.
	Kind ActionKind
	// Domain and Selector name the key concerned (the new one for ActCreate).
	Domain, Selector string
	// Algorithm is the key's a=.
	Algorithm Algorithm
	// GenAlgo is the Generate algorithm of a new key (ActCreate).
	GenAlgo string
	// Key is the existing key concerned (nil for ActCreate, ActWithdraw).
	Key *Key
	// Previous is the selector the new key follows (ActCreate), or the
	// active key that supersedes Key (ActRetire, ActWait).
	Previous string
	// Publication is the DNS state of Key (ActPending).
	Publication Publication
	// RetireAt is when Key may be retired (ActWait, ActRetire).
	RetireAt time.Time
	// Reason explains the action in words.
	Reason string
}

// DomainView is what PlanRotation needs to know about one domain.
type DomainView struct {
	// Domain is the d= (the folder name).
	Domain string
	// Keys are the domain's loaded keys (not retired), sorted by selector.
	Keys []*Key
	// Active are the keys the daemon signs with (policy snapshot's view).
	Active []*Key
	// Publication returns the key's DNS state, looked up whatever
	// keys.require_published says.
	Publication func(*Key) Publication
	// Retired lists the selectors in the domain's retired/ folder.
	Retired []string
	// Unmanaged lists selectors of keys in the folder that rotation does
	// not touch (named by a signing rule): their state is kept as is.
	Unmanaged []string
	// State is the domain's state file; PlanRotation records its
	// observations in it (the caller saves it unless it is a dry run).
	State *DomainState
}

// ErrDNSUnavailable is returned by PlanRotation when a key's record could
// not be looked up: nothing is changed for that domain until DNS answers.
var ErrDNSUnavailable = errors.New("DNS lookup failed; nothing changed for this domain")

// PlanRotation decides what rotation does for one domain, and records in
// v.State what it observed (first activity, supersession, forgotten keys).
// It changes no file: the caller carries out the actions.
func PlanRotation(v DomainView, p RotatePolicy) ([]Action, error) {
	for _, k := range v.Keys {
		if pub := v.Publication(k); pub.State == TempError {
			return nil, fmt.Errorf("keys: %s: %s: %s: %w", k.ID(), pub.State, pub.Detail, ErrDNSUnavailable)
		}
	}
	scheme := p.Scheme
	if scheme.Format == "" && len(scheme.Alternate) == 0 && scheme.Suffix == "" {
		scheme.Suffix = p.Suffix
	}
	active := map[*Key]bool{}
	activeByAlgo := map[Algorithm]*Key{}
	for _, k := range v.Active {
		active[k] = true
		if a := activeByAlgo[k.Algorithm]; a == nil || Newer(k, a) {
			activeByAlgo[k.Algorithm] = k
		}
	}
	// Observations.
	present := map[string]bool{}
	for _, k := range v.Keys {
		present[k.Selector] = true
		ks := v.State.Key(k.Selector)
		ks.Algorithm = k.Algorithm
		ks.Retired = time.Time{}
		if ks.Created.IsZero() && ks.FirstSeen.IsZero() {
			// A key we did not make (imported, or put there by hand): it
			// keeps its place in the order of creation from now on, even if
			// its file is touched.
			ks.FirstSeen = k.Created
		}
		if active[k] {
			if ks.FirstActive.IsZero() {
				ks.FirstActive = p.Now
			}
			ks.Superseded = time.Time{}
			continue
		}
		if a := activeByAlgo[k.Algorithm]; a != nil && Newer(a, k) {
			if ks.Superseded.IsZero() {
				ks.Superseded = p.Now
			}
		} else {
			ks.Superseded = time.Time{}
		}
	}
	retired := map[string]bool{}
	for _, s := range v.Retired {
		retired[s] = true
	}
	for _, sel := range v.Unmanaged {
		present[sel] = true
	}
	// Forget keys that are neither in the folder nor in retired/.
	for sel, ks := range v.State.Keys {
		if !present[sel] && !retired[sel] {
			delete(v.State.Keys, sel)
			continue
		}
		if retired[sel] && !present[sel] && ks.Retired.IsZero() {
			ks.Retired = p.Now // retired by hand: still withdraw its record
		}
	}

	// Superseded keys: wait, then retire. Retirements come first in the
	// plan: with alternating selectors the key made in the same run takes
	// the selector a retired key frees.
	var plan []Action
	retiring := map[string]bool{}
	for _, k := range v.Keys {
		ks := v.State.Keys[k.Selector]
		if active[k] || ks.Superseded.IsZero() {
			continue
		}
		by := activeByAlgo[k.Algorithm]
		at := p.RetireAt(ks.Superseded)
		act := Action{Kind: ActWait, Domain: v.Domain, Selector: k.Selector, Algorithm: k.Algorithm, Key: k,
			Previous: by.Selector, RetireAt: at,
			Reason: fmt.Sprintf("superseded by %s since %s", by.Selector, ks.Superseded.UTC().Format(time.RFC3339))}
		if !p.Now.Before(at) {
			act.Kind = ActRetire
			retiring[k.Selector] = true
			act.Reason += fmt.Sprintf("; grace %s + recheck %s passed", days(p.Grace), p.Recheck)
		}
		plan = append(plan, act)
	}
	taken := append([]string(nil), v.Retired...)
	var holding []string // selectors that hold a key after this run's retirements
	for _, k := range v.Keys {
		taken = append(taken, k.Selector)
		if !retiring[k.Selector] {
			holding = append(holding, k.Selector)
		}
	}
	// Per algorithm: the newest key decides whether a new one is made.
	newest := map[Algorithm]*Key{}
	var algos []Algorithm
	for _, k := range v.Keys {
		if newest[k.Algorithm] == nil {
			algos = append(algos, k.Algorithm)
		}
		if n := newest[k.Algorithm]; n == nil || Newer(k, n) {
			newest[k.Algorithm] = k
		}
	}
	sort.Slice(algos, func(i, j int) bool { return algos[i] > algos[j] }) // rsa first
	var errs []error
	var creates []Action
	for _, a := range algos {
		n := newest[a]
		pub := v.Publication(n)
		if pub.State != Published {
			reason := fmt.Sprintf("newest key has no valid record (%s)", pub.State)
			if pub.State == Waiting {
				reason = "newest key is published; the daemon waits for DNS caches to expire before signing with it"
			}
			creates = append(creates, Action{Kind: ActPending, Domain: v.Domain, Selector: n.Selector, Algorithm: a, Key: n,
				Publication: pub, Reason: reason})
			continue
		}
		if !active[n] {
			// Published but not chosen: keys.pin or an unusual config.
			continue
		}
		age := p.Now.Sub(n.Created)
		if age < p.RotateAfter && !p.Force {
			continue
		}
		gen := GenAlgorithm(n)
		sel, err := scheme.Next(p.Now, gen, taken, holding, n.Selector)
		if errors.Is(err, ErrSelectorBusy) {
			// Alternating selectors: the other one's key is still in its
			// grace period. Not an error: a later run makes the key.
			creates = append(creates, Action{Kind: ActHold, Domain: v.Domain, Selector: n.Selector, Algorithm: a, Key: n,
				Reason: fmt.Sprintf("%s is %s old, but %v", n.Selector, days(age), err)})
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("keys: %s: %w", n.ID(), err))
			continue
		}
		taken, holding = append(taken, sel), append(holding, sel)
		reason := fmt.Sprintf("%s is %s old (rotate_after %s)", n.Selector, days(age), days(p.RotateAfter))
		if age < p.RotateAfter {
			reason = fmt.Sprintf("forced; %s is %s old", n.Selector, days(age))
		}
		creates = append(creates, Action{Kind: ActCreate, Domain: v.Domain, Selector: sel, Algorithm: a, GenAlgo: gen,
			Previous: n.Selector, Reason: reason})
	}
	plan = append(plan, creates...)
	if p.CanWithdraw {
		for _, sel := range v.State.Selectors() {
			ks := v.State.Keys[sel]
			// A selector used again (alternating selectors) holds a new key:
			// its record is no longer the retired key's to withdraw.
			if retired[sel] && !present[sel] && !ks.Retired.IsZero() && ks.Withdrawn.IsZero() {
				plan = append(plan, Action{Kind: ActWithdraw, Domain: v.Domain, Selector: sel, Algorithm: ks.Algorithm,
					Reason: "retired; its record is still to be withdrawn"})
			}
		}
	}
	return plan, errors.Join(errs...)
}

// days formats d in days when it is a whole number of them or more than two.
func days(d time.Duration) string {
	if d >= 48*time.Hour || (d >= 24*time.Hour && d%(24*time.Hour) == 0) {
		return fmt.Sprintf("%dd", int(d/(24*time.Hour)))
	}
	return d.Round(time.Second).String()
}

// RetiredSelectors lists the selectors of the keys in domainDir/retired/.
func RetiredSelectors(domainDir string) ([]string, error) {
	entries, err := os.ReadDir(filepath.Join(domainDir, RetiredDir))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("keys: %w", err)
	}
	var out []string
	for _, e := range entries {
		if name := e.Name(); !e.IsDir() && strings.HasSuffix(name, ".pem") && !strings.HasPrefix(name, ".") {
			out = append(out, strings.ToLower(strings.TrimSuffix(name, ".pem")))
		}
	}
	sort.Strings(out)
	return out, nil
}

// Retire moves k's file to <domain folder>/retired/ (mode 0700), where the
// key table no longer sees it, and returns the new path. The key is kept,
// not deleted, so that it can be inspected or restored by hand.
func Retire(k *Key) (string, error) {
	dir := filepath.Join(filepath.Dir(k.Path), RetiredDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("keys: %s: retire: %w", k.ID(), err)
	}
	dst := filepath.Join(dir, filepath.Base(k.Path))
	if _, err := os.Lstat(dst); err == nil {
		// An earlier key with this selector (alternating selectors reuse
		// names): keep it under a name that records when it was set aside.
		old := dst + "." + time.Now().UTC().Format("20060102T150405.000000000Z")
		if err := os.Rename(dst, old); err != nil {
			return "", fmt.Errorf("keys: %s: retire: keep the earlier %s: %w", k.ID(), dst, err)
		}
	}
	if err := os.Rename(k.Path, dst); err != nil {
		return "", fmt.Errorf("keys: %s: retire: %w", k.ID(), err)
	}
	syncDir(dir)
	syncDir(filepath.Dir(k.Path))
	return dst, nil
}

// RevokedRecord returns the TXT value that revokes a key of algorithm a:
// an empty p= (RFC 6376 §3.6.1).
func RevokedRecord(a Algorithm) string {
	return fmt.Sprintf("v=DKIM1; k=%s; p=", a.KeyType())
}
