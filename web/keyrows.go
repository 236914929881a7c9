package web

import (
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/authmilter/authmilter/keys"
)

// keyRow is one key on the keys pages. JSON fields:
//
//	domain, selector, algorithm, bits, created (RFC 3339), age_days,
//	dns (the publication state: published, waiting, missing, mismatch,
//	revoked, temperror, partial, delegation-missing, foreign, unchecked),
//	dns_detail, active, why_inactive, record (the TXT record's name),
//	checked, published_since, active_from (the daemon's last check),
//	next_rotation (the newest key of its algorithm: created + rotate_after),
//	rotation_due (next_rotation has passed: `authmilter rotate` makes the
//	next key on its next run),
//	superseded, retire_after (a superseded key), warnings,
//	dns_check (on /keys/{domain} only: path, zone, nameservers, add).
type keyRow struct {
	Domain         string     `json:"domain"`
	Selector       string     `json:"selector"`
	Algorithm      string     `json:"algorithm"`
	Bits           int        `json:"bits"`
	Created        time.Time  `json:"created"`
	AgeDays        int        `json:"age_days"`
	DNS            string     `json:"dns"`
	DNSDetail      string     `json:"dns_detail,omitempty"`
	Active         bool       `json:"active"`
	WhyInactive    string     `json:"why_inactive,omitempty"`
	Record         string     `json:"record"`
	Checked        *time.Time `json:"checked,omitempty"`
	PublishedSince *time.Time `json:"published_since,omitempty"`
	ActiveFrom     *time.Time `json:"active_from,omitempty"`
	NextRotation   *time.Time `json:"next_rotation,omitempty"`
	RotationDue    bool       `json:"rotation_due,omitempty"`
	Superseded     *time.Time `json:"superseded,omitempty"`
	RetireAfter    *time.Time `json:"retire_after,omitempty"`
	Warnings       []string   `json:"warnings,omitempty"`
	Check          *KeyDNS    `json:"dns_check,omitempty"`
}

// domainKeys is one domain on the keys pages: its keys, and the warnings
// about the domain as a whole (no active key, a retired key still in DNS).
// JSON: domain, keys, warnings, and on /keys/{domain} retired and
// dmarc_url.
type domainKeys struct {
	Domain   string       `json:"domain"`
	Keys     []keyRow     `json:"keys"`
	Warnings []string     `json:"warnings,omitempty"`
	Retired  []RetiredKey `json:"retired,omitempty"`
	DMARCURL string       `json:"dmarc_url,omitempty"`
}

// keyView makes the rows of the keys pages from one snapshot.
type keyView struct {
	src     keySource
	details KeyDetails
	now     time.Time
	// stateErr is called with a state file that cannot be read.
	stateErr func(error)
}

// utcPtr returns t in UTC, nil when zero.
func utcPtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}

// domain makes the rows of domain d; full adds what only the domain's own
// page shows (each key's whole check, the retired keys).
func (v keyView) domain(d string, full bool) domainKeys {
	cfg := v.src.Config()
	state, err := keys.LoadState(filepath.Join(cfg.Keys.Dir, d))
	if err != nil {
		if v.stateErr != nil {
			v.stateErr(err)
		}
		state = &keys.DomainState{}
	}
	ks := v.src.Keys(d)
	newest := map[keys.Algorithm]*keys.Key{}
	for _, k := range ks {
		if n := newest[k.Algorithm]; n == nil || keys.Newer(k, n) {
			newest[k.Algorithm] = k
		}
	}
	out := domainKeys{Domain: d, Keys: make([]keyRow, 0, len(ks))}
	rot := cfg.Keys.RotatePolicy()
	for _, k := range ks {
		pub := v.src.Publication(k)
		var det KeyDNS
		var hasDet bool
		if v.details != nil {
			det, hasDet = v.details.Detail(k)
		}
		row := keyRow{Domain: k.Domain, Selector: k.Selector, Algorithm: string(k.Algorithm), Bits: k.Bits,
			Created: k.Created.UTC(), AgeDays: int(v.now.Sub(k.Created).Hours() / 24),
			DNS: string(pub.State), DNSDetail: pub.Detail, Active: v.src.Signs(k),
			Record: keys.RecordName(k.Domain, k.Selector)}
		if hasDet {
			row.Checked, row.PublishedSince, row.ActiveFrom = utcPtr(det.Checked), utcPtr(det.PublishedSince), utcPtr(det.ActiveFrom)
			if full {
				c := det
				c.Checked, c.PublishedSince, c.ActiveFrom = c.Checked.UTC(), c.PublishedSince.UTC(), c.ActiveFrom.UTC()
				row.Check = &c
			}
		}
		if !row.Active {
			row.WhyInactive = v.src.InactiveReason(k, pub, det.ActiveFrom)
			if ks := state.Keys[k.Selector]; ks != nil && !ks.Superseded.IsZero() {
				row.Superseded, row.RetireAfter = utcPtr(ks.Superseded), utcPtr(rot.RetireAt(ks.Superseded))
			}
		}
		if newest[k.Algorithm] == k {
			at := k.Created.Add(rot.RotateAfter)
			row.NextRotation, row.RotationDue = utcPtr(at), !v.now.Before(at)
		}
		row.Warnings = keyWarnings(k, row.Active, pub, det)
		out.Keys = append(out.Keys, row)
	}
	if len(ks) > 0 && v.src.ActiveCount(d) == 0 {
		out.Warnings = append(out.Warnings, d+" has keys but none is active: its mail is not signed")
	}
	var retired []RetiredKey
	if v.details != nil {
		retired = v.details.Retired(d)
	}
	for _, r := range retired {
		if w := retiredWarning(d, r); w != "" {
			out.Warnings = append(out.Warnings, w)
		}
	}
	if full {
		out.Retired = make([]RetiredKey, 0, len(retired))
		for _, r := range retired {
			r.Retired, r.Checked = r.Retired.UTC(), r.Checked.UTC()
			out.Retired = append(out.Retired, r)
		}
		out.DMARCURL = "/dmarc/" + d
	}
	return out
}

// keyWarnings are the problems of one key worth an administrator's look.
func keyWarnings(k *keys.Key, active bool, pub keys.Publication, det KeyDNS) []string {
	var w []string
	if active && !signable(pub.State) {
		w = append(w, fmt.Sprintf("%s is active but its DNS record is %s: %s", k.ID(), pub.State, pub.Detail))
	}
	switch pub.State {
	case keys.Foreign:
		w = append(w, fmt.Sprintf("the selector %s holds someone else's record (%s); choose another selector", k.Selector, pub.Detail))
	case keys.DelegationMissing:
		msg := "the public path does not lead to the record"
		if len(det.Add) > 0 {
			msg += "; the customer must add: " + strings.Join(det.Add, "; ")
		}
		w = append(w, msg)
	case keys.Partial:
		var lag []string
		for _, ns := range det.Nameservers {
			if ns.State != string(keys.Published) {
				lag = append(lag, fmt.Sprintf("%s (%s): %s", ns.Name, ns.Addr, ns.State))
			}
		}
		msg := "not on every nameserver yet"
		if len(lag) > 0 {
			msg += ": " + strings.Join(lag, ", ")
		}
		w = append(w, msg)
	}
	return w
}

// signable reports whether a key in state st is rightly signing.
func signable(st keys.State) bool {
	return st == keys.Published || st == keys.Waiting || st == keys.Unchecked
}

// retiredWarning is the warning about a retired key whose selector still
// gives a key (or may), "" when it is withdrawn or not checked yet.
func retiredWarning(d string, r RetiredKey) string {
	switch {
	case r.Checked.IsZero() || r.Withdrawn:
		return ""
	case r.State == string(keys.TempError):
		return fmt.Sprintf("cannot tell whether the retired key %s/%s is withdrawn: %s", d, r.Selector, r.Detail)
	}
	return fmt.Sprintf("the retired key %s/%s is still usable (%s): remove the record %s TXT, or revoke it with \"v=DKIM1; p=\"",
		d, r.Selector, r.Detail, keys.RecordName(d, r.Selector))
}

// hasProblem reports whether domain d would show a warning, without
// making its rows: the problem filter runs it on every domain.
func (v keyView) hasProblem(d string) bool {
	ks := v.src.Keys(d)
	if len(ks) > 0 && v.src.ActiveCount(d) == 0 {
		return true
	}
	for _, k := range ks {
		st := v.src.Publication(k).State
		if st == keys.Foreign || st == keys.DelegationMissing || st == keys.Partial {
			return true
		}
		if !signable(st) && v.src.Signs(k) {
			return true
		}
	}
	if v.details != nil {
		for _, r := range v.details.Retired(d) {
			if !r.Checked.IsZero() && !r.Withdrawn {
				return true
			}
		}
	}
	return false
}

// matches reports whether domain d passes the filters: search (lower
// case; a substring of the domain or of a selector) and state.
func (v keyView) matches(d, search, state string) bool {
	if search != "" && !strings.Contains(d, search) {
		found := false
		for _, k := range v.src.Keys(d) {
			if containsFold(k.Selector, search) {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	switch state {
	case "":
		return true
	case filterProblem:
		return v.hasProblem(d)
	case filterInactive:
		return len(v.src.Keys(d)) > 0 && v.src.ActiveCount(d) == 0
	}
	for _, k := range v.src.Keys(d) {
		if string(v.src.Publication(k).State) == state {
			return true
		}
	}
	return false
}

// containsFold reports whether s contains lower (already lower case),
// ignoring ASCII case in s, without allocating.
func containsFold(s, lower string) bool {
	n := len(lower)
	for i := 0; i+n <= len(s); i++ {
		j := 0
		for ; j < n; j++ {
			c := s[i+j]
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			if c != lower[j] {
				break
			}
		}
		if j == n {
			return true
		}
	}
	return false
}
