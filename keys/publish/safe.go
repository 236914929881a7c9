package publish

import (
	"github.com/authmilter/authmilter/internal/dnstext"

	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/miekg/dns"

	"github.com/authmilter/authmilter/keys"
)

// ErrChanged is wrapped by errors of updates whose prerequisites failed:
// the records at the name changed between our lookup and our update
// (another installation, or an administrator, at the same moment). Nothing
// was changed by the update.
var ErrChanged = errors.New("the records changed after they were looked up")

// MaxRecords bounds keys.KeyState.Records: the values this installation
// published at one name, newest last.
const MaxRecords = 8

// maxTXT bounds the TXT records at one name that are looked at: a name
// holding more is not a key record anyone could mean.
const maxTXT = 32

// Ownership says which records at a name are this installation's.
type Ownership struct {
	// Known are the TXT values this installation published at the name
	// (keys.KeyState.Records).
	Known []string
	// Key, when set, also makes ours any DKIM record of its public key
	// (say, published by hand from keygen's output, or by an older
	// version that kept no Records). Publish sets it to the key published.
	Key *keys.Key
	// Force replaces records that are not ours (the -force flags).
	Force bool
	// Override tells how to force, for the refusal message, e.g. "run
	// keygen again with -force".
	Override string
}

// owns reports whether the TXT value v at the name is ours.
func (o Ownership) owns(v string) bool {
	if slices.Contains(o.Known, v) {
		return true
	}
	if o.Key == nil {
		return false
	}
	if v == keys.FormatRecord(o.Key) {
		return true
	}
	rec, err := keys.ParseRecord(v)
	return err == nil && rec.PublicKey != "" && rec.KeyType == o.Key.Algorithm.KeyType() &&
		rec.PublicKey == o.Key.PublicKeyData()
}

// Remember returns records with value added as the newest (moved to the
// end if it is there already), keeping the last MaxRecords: what a
// caller stores in keys.KeyState.Records after a successful update.
func Remember(records []string, value string) []string {
	out := make([]string, 0, len(records)+1)
	for _, r := range records {
		if r != value {
			out = append(out, r)
		}
	}
	out = append(out, value)
	if len(out) > MaxRecords {
		out = out[len(out)-MaxRecords:]
	}
	return out
}

// ForeignRecordError refuses an update because the name holds a record
// that this installation did not publish.
type ForeignRecordError struct {
	// Name is the record's owner name; Server the server asked.
	Name, Server string
	// Records are the TXT values found that are not ours.
	Records []string
	// CNAME is set when the name is an alias: no TXT record can go there,
	// forced or not.
	CNAME string
	// Override tells how to force the update (Ownership.Override).
	Override string
}

func (e *ForeignRecordError) Error() string {
	if e.CNAME != "" {
		return fmt.Sprintf("%s is an alias (CNAME to %s) at %s: a TXT record cannot be added there; nothing was changed (remove the CNAME if it is stale)",
			e.Name, strings.TrimSuffix(e.CNAME, "."), e.Server)
	}
	override := e.Override
	if override == "" {
		override = "force the publication"
	}
	return fmt.Sprintf("%s already holds a record that this installation did not publish (another provider's or another installation's?): %s (at %s); nothing was changed: if that record is stale, remove it, or %s to replace it",
		e.Name, quoteValues(e.Records), e.Server, override)
}

// quoteValues formats TXT values for a message, bounded: DNS answers are
// not ours to print whole.
func quoteValues(vs []string) string {
	const maxShown, maxLen = 3, 600
	var parts []string
	for i, v := range vs {
		if i == maxShown {
			parts = append(parts, fmt.Sprintf("and %d more", len(vs)-maxShown))
			break
		}
		if len(v) > maxLen {
			v = v[:maxLen] + "..."
		}
		parts = append(parts, fmt.Sprintf("%q", v))
	}
	return strings.Join(parts, ", ")
}

// Update is a prepared update of one name: what the server held when it
// was looked up, and the message that changes it only if it still holds
// exactly that (RFC 2136 §2.4 prerequisites).
type Update struct {
	Place
	// Action is "publish", "revoke" or "remove".
	Action string
	// Value is the TXT value the update leaves at the name ("" for remove).
	Value string
	// Found are the TXT values the name itself held (nil when it held
	// none). For a Wildcard update they are known only after Send.
	Found []string
	// Foreign are the values of Found that are not ours: replaced by a
	// forced publication, left alone by a withdrawal.
	Foreign []string
	// Wildcard is set when a wildcard answers at the name with the very
	// records the server answered there (a random sibling name got the
	// same answer): an answer cannot tell whether the name holds them
	// itself or only the wildcard does. The update's prerequisites decide,
	// as they see only the name's own records, never a wildcard's (RFC
	// 2136 §3.2): Send tries the update for one case, then for the other,
	// and sets the fields to the case that held. After Send, Found is nil
	// when only the wildcard answered. The wildcard is never touched.
	Wildcard bool
	// Noop is set when there is nothing to change: the record is already
	// there (publish, revoke), or nothing of ours is there (withdrawal).
	// For a Wildcard update it is known only after Send.
	Noop bool

	// msg is the update with its prerequisites; for a Noop, the
	// prerequisites alone (a check that changes nothing).
	msg     *dns.Msg
	removed []string // values the update takes away
	// cases are, for a Wildcard update before Send, the updates for "the
	// name holds the answered records itself" and "the name holds no TXT
	// record", in the order Send tries them.
	cases []wildcardCase
}

// wildcardCase is the update for one case a wildcard's answer leaves
// open, or why it is refused in that case (a record not ours at the name).
type wildcardCase struct {
	u   *Update
	err error
}

// undecided returns the update of a name where a wildcard answers: the
// cases' updates, tried by Send in the order given. Until then its fields
// are the first case's.
func undecided(cases ...wildcardCase) *Update {
	for _, c := range cases {
		c.u.Wildcard = true
	}
	u := *cases[0].u
	u.Noop, u.cases = false, cases
	return &u
}

// Check locates the record of domain/selector and looks at what its name
// holds now, without changing anything: a *ForeignRecordError when it
// holds records that own does not cover (keygen asks before it makes a
// key, so that a refusal leaves no key behind).
func (s *Set) Check(ctx context.Context, domain, selector string, own Ownership) (*Place, error) {
	p, err := s.Locate(ctx, domain, selector)
	if err == nil {
		err = p.check(ctx, own)
	}
	if err != nil {
		return p, fmt.Errorf("publish: %s/%s: %w", domain, selector, err)
	}
	return p, nil
}

// check looks at what the name holds now: a *ForeignRecordError when it
// holds records that own does not cover.
func (p *Place) check(ctx context.Context, own Ownership) error {
	found, err := p.lookup(ctx)
	if err != nil {
		return err
	}
	refused := found.refuse(p, own)
	if refused == nil || !found.wildcard {
		return refused
	}
	// The records refused may be only a wildcard's, which is left alone:
	// they are the name's when it holds a TXT RRset itself. The
	// prerequisite "RRset does not exist" alone asks the server that,
	// changing nothing.
	err = p.Target.send(ctx, p.newUpdate(&rrset{}))
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrChanged):
		return refused
	}
	return fmt.Errorf("asking whether %s holds a TXT record itself or a wildcard answers for it: %w", p.Name, err)
}

// PreparePublish locates k's record, looks up what its name holds and
// prepares the update that replaces it with k's record. It fails with a
// *ForeignRecordError when the name holds a record that is not ours and
// own.Force is not set.
func (s *Set) PreparePublish(ctx context.Context, k *keys.Key, own Ownership) (*Update, error) {
	p, err := s.Locate(ctx, k.Domain, k.Selector)
	if err != nil {
		return nil, err
	}
	return p.PreparePublish(ctx, k, own)
}

// PreparePublish is Set.PreparePublish at a place already located (the
// place of k's domain and selector).
func (p *Place) PreparePublish(ctx context.Context, k *keys.Key, own Ownership) (*Update, error) {
	own.Key = k
	return p.preparePut(ctx, "publish", keys.FormatRecord(k), own)
}

// Publish publishes k's record by an update to the chosen target and
// checks that the server then answers with it: PreparePublish, Send and a
// lookup.
func (s *Set) Publish(ctx context.Context, k *keys.Key, own Ownership) (*Update, error) {
	p, err := s.Locate(ctx, k.Domain, k.Selector)
	if err != nil {
		return nil, fmt.Errorf("publish: %s: %w", k.ID(), err)
	}
	return p.Publish(ctx, k, own)
}

// Publish is Set.Publish at a place already located.
func (p *Place) Publish(ctx context.Context, k *keys.Key, own Ownership) (*Update, error) {
	u, err := p.PreparePublish(ctx, k, own)
	if err == nil {
		err = u.Send(ctx)
	}
	if err == nil {
		err = u.verify(ctx)
	}
	if err != nil {
		return u, fmt.Errorf("publish: %s: %w", k.ID(), err)
	}
	return u, nil
}

// PrepareWithdraw prepares the withdrawal of the record of a retired key:
// revoke replaces it with an empty p= (RFC 6376 §3.6.1), otherwise it is
// deleted. Only our records are touched: when the name holds a record
// that is not ours, a revocation is not added and only our records are
// deleted, and Foreign lists what is left alone. Ownership.Force is
// ignored: a withdrawal never touches records of others.
func (s *Set) PrepareWithdraw(ctx context.Context, domain, selector string, a keys.Algorithm, revoke bool, own Ownership) (*Update, error) {
	p, err := s.Locate(ctx, domain, selector)
	if err != nil {
		return nil, err
	}
	own.Force = false
	found, err := p.lookup(ctx)
	if err != nil {
		return nil, err
	}
	if found.cname != "" {
		return nil, &ForeignRecordError{Name: p.Name, Server: p.Target.cfg.Server, CNAME: found.cname}
	}
	held := p.planWithdraw(found, a, revoke, own)
	if !found.wildcard {
		return held, nil
	}
	// Tried first: the name holds the answered records itself (then the
	// update takes ours away); else only the wildcard answers and nothing
	// of ours is at the name.
	return undecided(wildcardCase{u: held}, wildcardCase{u: p.planWithdraw(&rrset{}, a, revoke, own)}), nil
}

// planWithdraw is the withdrawal when the name holds found itself.
func (p *Place) planWithdraw(found *rrset, a keys.Algorithm, revoke bool, own Ownership) *Update {
	u := &Update{Place: *p, Action: "remove", Found: found.values(), msg: p.newUpdate(found)}
	if revoke {
		u.Action, u.Value = "revoke", keys.RevokedRecord(a)
	}
	var ours []dns.RR
	for _, rr := range found.txt {
		if v := txtValue(rr); own.owns(v) {
			ours = append(ours, rr)
			u.removed = append(u.removed, v)
		} else {
			u.Foreign = append(u.Foreign, v)
		}
	}
	switch {
	case len(ours) == 0:
		// Nothing of ours: nothing to do (a revocation is added only in
		// place of our own record, never next to someone else's).
		u.Noop, u.Value = true, ""
		return u
	case revoke && len(u.Foreign) == 0 && len(found.txt) == 1 && txtValue(found.txt[0]) == u.Value:
		u.Noop = true
		return u
	}
	if len(u.Foreign) > 0 {
		// Delete only our records; the others stay, and so no revocation
		// goes next to them (two DKIM records at one name break both).
		u.Action, u.Value = "remove", ""
		rrs := make([]dns.RR, len(ours))
		for i, rr := range ours {
			rrs[i] = dns.Copy(rr)
		}
		u.msg.Remove(rrs)
	} else {
		u.msg.RemoveRRset([]dns.RR{&dns.ANY{Hdr: dns.RR_Header{Name: p.Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET}}})
		if revoke {
			u.msg.Insert([]dns.RR{p.txt(u.Value)})
		}
	}
	return u
}

// Withdraw withdraws the record of a retired key (PrepareWithdraw), sends
// the update and checks that the server then answers without our record.
func (s *Set) Withdraw(ctx context.Context, domain, selector string, a keys.Algorithm, revoke bool, own Ownership) (*Update, error) {
	u, err := s.PrepareWithdraw(ctx, domain, selector, a, revoke, own)
	if err == nil {
		err = u.Send(ctx)
	}
	if err == nil {
		err = u.verify(ctx)
	}
	if err != nil {
		return u, fmt.Errorf("publish: %s/%s: withdraw: %w", domain, selector, err)
	}
	return u, nil
}

// Send sends the prepared update (nothing for a Noop; for a Wildcard
// update, see Update.Wildcard). When its prerequisites fail, nothing was
// changed and the error wraps ErrChanged.
func (u *Update) Send(ctx context.Context) error {
	if len(u.cases) > 0 {
		return u.sendCases(ctx)
	}
	if u.Noop {
		return nil
	}
	return u.changed(u.Target.send(ctx, u.msg))
}

// sendCases sends the update of each case a wildcard's answer left open
// until the server accepts one's prerequisites: they exclude each other,
// so exactly one case holds unless the records change meanwhile. A case
// with nothing to change, or refused, sends its prerequisites alone: the
// server checks them and changes nothing. u becomes the case that held.
func (u *Update) sendCases(ctx context.Context) error {
	var err error
	for _, c := range u.cases {
		if err = u.Target.send(ctx, c.u.msg); errors.Is(err, ErrChanged) {
			continue
		}
		if err != nil {
			return err
		}
		*u = *c.u
		return c.err
	}
	return u.changed(err)
}

// changed explains a failed prerequisite.
func (u *Update) changed(err error) error {
	if errors.Is(err, ErrChanged) {
		return fmt.Errorf("another installation changed %s at the same moment; nothing was overwritten; run again to see what is there now (%w)",
			u.Name, err)
	}
	return err
}

// verify looks the name up again after the update: the value left there
// must be served, and what was removed must be gone, unless a wildcard
// answers with it (the update's prerequisites made sure that the name's
// own records were what it took away).
func (u *Update) verify(ctx context.Context) error {
	found, err := u.lookup(ctx)
	if err != nil {
		return fmt.Errorf("checking the update: %w", err)
	}
	now := found.values()
	bad := u.Value != "" && !slices.Contains(now, u.Value)
	for _, v := range u.removed {
		bad = bad || (v != u.Value && slices.Contains(now, v) && !found.wildcard)
	}
	if bad {
		return fmt.Errorf("the update of zone %s was accepted but %s then answers %s at %s", strings.TrimSuffix(u.Zone, "."),
			u.Target.cfg.Server, quoteValues(now), u.Name)
	}
	return nil
}

// preparePut prepares an update that leaves exactly value at the name.
func (p *Place) preparePut(ctx context.Context, action, value string, own Ownership) (*Update, error) {
	found, err := p.lookup(ctx)
	if err != nil {
		return nil, err
	}
	held, refused := p.planPut(action, value, found, own)
	if !found.wildcard {
		if refused != nil {
			return nil, refused
		}
		return held, nil
	}
	// Tried first: the name holds no TXT record, only the wildcard
	// answers (a wildcard's record is no record at the name, and stays);
	// else the name holds the answered records itself, and they decide as
	// anywhere else.
	none, _ := p.planPut(action, value, &rrset{}, own)
	return undecided(wildcardCase{u: none}, wildcardCase{u: held, err: refused}), nil
}

// planPut is the update that leaves exactly value at the name when it
// holds found itself, and the refusal of it if found is not ours.
func (p *Place) planPut(action, value string, found *rrset, own Ownership) (*Update, error) {
	u := &Update{Place: *p, Action: action, Value: value, Found: found.values(), msg: p.newUpdate(found)}
	if err := found.refuse(p, own); err != nil {
		return u, err
	}
	for _, rr := range found.txt {
		v := txtValue(rr)
		u.removed = append(u.removed, v)
		if !own.owns(v) && v != value {
			u.Foreign = append(u.Foreign, v)
		}
	}
	if len(found.txt) == 1 && u.removed[0] == value {
		u.Noop = true // already there
		return u, nil
	}
	u.msg.RemoveRRset([]dns.RR{&dns.ANY{Hdr: dns.RR_Header{Name: p.Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET}}})
	u.msg.Insert([]dns.RR{p.txt(value)})
	return u, nil
}

// newUpdate starts an update of the place's zone whose prerequisites say
// that the TXT RRset at the name is still exactly found: "RRset does not
// exist" when there was none, "RRset exists (value dependent)" with every
// record otherwise (RFC 2136 §2.4.3, §2.4.2).
func (p *Place) newUpdate(found *rrset) *dns.Msg {
	m := new(dns.Msg)
	m.SetUpdate(p.Zone)
	if len(found.txt) == 0 {
		m.RRsetNotUsed([]dns.RR{&dns.TXT{Hdr: dns.RR_Header{Name: p.Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET}}})
		return m
	}
	rrs := make([]dns.RR, len(found.txt))
	for i, rr := range found.txt {
		rrs[i] = dns.Copy(rr) // Used changes the header
	}
	m.Used(rrs)
	return m
}

// txt returns the TXT record of value at the place's name.
func (p *Place) txt(value string) *dns.TXT {
	return &dns.TXT{Hdr: dns.RR_Header{Name: p.Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: p.Target.cfg.TTL},
		Txt: escape(keys.RecordStrings(value))}
}

// rrset is what a name holds, as the chosen server answered.
type rrset struct {
	txt   []*dns.TXT
	cname string
	// wildcard: a random sibling name got the same TXT records, so a
	// wildcard answers at the name with them, and the name may hold them
	// itself or hold none.
	wildcard bool
}

func (r *rrset) values() []string {
	var out []string
	for _, rr := range r.txt {
		out = append(out, txtValue(rr))
	}
	return out
}

// refuse returns a *ForeignRecordError when the name is an alias, or holds
// records own does not cover and own.Force is not set.
func (r *rrset) refuse(p *Place, own Ownership) error {
	if r.cname != "" {
		return &ForeignRecordError{Name: p.Name, Server: p.Target.cfg.Server, CNAME: r.cname}
	}
	if own.Force {
		return nil
	}
	var foreign []string
	for _, rr := range r.txt {
		if v := txtValue(rr); !own.owns(v) {
			foreign = append(foreign, v)
		}
	}
	if len(foreign) > 0 {
		return &ForeignRecordError{Name: p.Name, Server: p.Target.cfg.Server, Records: foreign, Override: own.Override}
	}
	return nil
}

// txtValue returns a TXT record's strings joined, unescaped.
func txtValue(t *dns.TXT) string { return dnstext.Value(t) }

// lookup asks the place's server (RD=0) for the TXT records at the name.
// The server must answer authoritatively. A wildcard answering with the
// same records is recognised by asking for a random sibling name too: then
// the answer cannot tell whether the name holds them itself (an answer
// from a name's own RRset and one synthesized from a wildcard look the
// same, RFC 4592), and the result says so (wildcard) for the update's
// prerequisites to decide.
func (p *Place) lookup(ctx context.Context) (*rrset, error) {
	r, err := p.Target.queryAuth(ctx, p.Name, dns.TypeTXT)
	if err != nil {
		return nil, err
	}
	if r.cname != "" || len(r.txt) == 0 || strings.EqualFold(p.Name, p.Zone) {
		return r, nil
	}
	var rnd [8]byte
	rand.Read(rnd[:])
	labels := dns.SplitDomainName(p.Name)
	probe := dns.Fqdn("_authmilter-probe-" + hex.EncodeToString(rnd[:]) + "." + strings.Join(labels[1:], "."))
	pr, err := p.Target.queryAuth(ctx, probe, dns.TypeTXT)
	if err != nil {
		return nil, err
	}
	a, b := r.values(), pr.values()
	slices.Sort(a)
	slices.Sort(b)
	r.wildcard = slices.Equal(a, b)
	return r, nil
}

// queryAuth asks the server (RD=0) for the records of qtype at name and
// requires an authoritative answer.
func (u *Updater) queryAuth(ctx context.Context, name string, qtype uint16) (*rrset, error) {
	q := new(dns.Msg)
	q.SetQuestion(name, qtype)
	q.RecursionDesired = false
	r, err := u.exchange(ctx, q, false)
	if err != nil {
		return nil, fmt.Errorf("look up %s: %w", name, err)
	}
	if r.Rcode != dns.RcodeSuccess && r.Rcode != dns.RcodeNameError {
		return nil, fmt.Errorf("look up %s: server %s answered %s", name, u.cfg.Server, dns.RcodeToString[r.Rcode])
	}
	if !r.Authoritative {
		return nil, fmt.Errorf("look up %s: server %s is not authoritative for it (no AA flag)", name, u.cfg.Server)
	}
	out := &rrset{}
	for _, rr := range r.Answer {
		if !strings.EqualFold(rr.Header().Name, name) {
			continue
		}
		switch rr := rr.(type) {
		case *dns.TXT:
			out.txt = append(out.txt, rr)
		case *dns.CNAME:
			out.cname = rr.Target
		}
	}
	if len(out.txt) > maxTXT {
		return nil, fmt.Errorf("look up %s: server %s answered %d TXT records (more than %d): not a key record's name", name, u.cfg.Server, len(out.txt), maxTXT)
	}
	return out, nil
}
