package dnstopo

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// syncTimeout bounds the waits for the secondary.
const syncTimeout = 20 * time.Second

// Add publishes records (zone file syntax, absolute names; without a TTL
// they get Options.TTL) by RFC 2136 at the server that takes updates for
// their zone (the most specific zone of the world that contains the owner
// name): the provider's primary, the customers' server or the root. NS
// records of a delegation go to the parent: use Delegate.
// It fails the test when the update is refused.
func (w *World) Add(t testTB, rrs ...string) {
	t.Helper()
	if err := w.change(rrs, nil); err != nil {
		t.Fatalf("dnstopo: add: %v", err)
	}
}

// Remove deletes records by RFC 2136: each is a whole record (that record
// alone goes) or "name TYPE" (the whole RRset goes).
func (w *World) Remove(t testTB, rrs ...string) {
	t.Helper()
	if err := w.change(nil, rrs); err != nil {
		t.Fatalf("dnstopo: remove: %v", err)
	}
}

// Replace removes and adds in one RFC 2136 update per zone (e.g. "name
// TXT" removed and a new TXT record added).
func (w *World) Replace(t testTB, remove []string, add []string) {
	t.Helper()
	if err := w.change(add, remove); err != nil {
		t.Fatalf("dnstopo: replace: %v", err)
	}
}

// testTB is the part of testing.TB the helpers use.
type testTB interface {
	Helper()
	Fatalf(format string, args ...any)
}

// change groups records by zone and sends one update per zone.
func (w *World) change(add, remove []string) error {
	type batch struct{ add, remove []string }
	batches := map[*zoneInfo]*batch{}
	var order []*zoneInfo
	get := func(rr string) (*batch, error) {
		f := strings.Fields(rr)
		if len(f) == 0 {
			return nil, fmt.Errorf("empty record")
		}
		z := zoneOf(w.zones, f[0])
		if z == nil {
			return nil, fmt.Errorf("%q is in no zone of the world", rr)
		}
		b, ok := batches[z]
		if !ok {
			b = &batch{}
			batches[z] = b
			order = append(order, z)
		}
		return b, nil
	}
	for _, rr := range add {
		b, err := get(rr)
		if err != nil {
			return err
		}
		b.add = append(b.add, rr)
	}
	for _, rr := range remove {
		b, err := get(rr)
		if err != nil {
			return err
		}
		b.remove = append(b.remove, rr)
	}
	for _, z := range order {
		if err := w.updateZone(z, batches[z].add, batches[z].remove); err != nil {
			return err
		}
	}
	return nil
}

// Delegate plays the customer who delegates the provider zone zone (e.g.
// "myesp._domainkey.customer.example"): its NS records, ns1 and
// ns2.<Provider>, are added to the parent zone on the customers' server.
func (w *World) Delegate(t testTB, zone string) {
	t.Helper()
	z, p := w.delegation(t, zone)
	var rrs []string
	for _, ns := range nsNames(w.opts, z) {
		rrs = append(rrs, fmt.Sprintf("%s NS %s", fqdn(z.name), ns))
	}
	if err := w.updateZone(p, rrs, nil); err != nil {
		t.Fatalf("dnstopo: delegate %s: %v", z.name, err)
	}
}

// Undelegate removes the NS records of zone from its parent zone.
func (w *World) Undelegate(t testTB, zone string) {
	t.Helper()
	z, p := w.delegation(t, zone)
	if err := w.updateZone(p, nil, []string{fqdn(z.name) + " NS"}); err != nil {
		t.Fatalf("dnstopo: undelegate %s: %v", z.name, err)
	}
}

// delegation returns a zone of the world and its parent.
func (w *World) delegation(t testTB, zone string) (z, parent *zoneInfo) {
	t.Helper()
	z, ok := w.zones[canon(zone)]
	if !ok || z.name == "." {
		t.Fatalf("dnstopo: %s is not a zone of the world", zone)
	}
	return z, parentOf(w.zones, z.name)
}

// updateZone sends one RFC 2136 update to the server of zone z.
func (w *World) updateZone(z *zoneInfo, add, remove []string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return w.serverFor(z).update(ctx, z.name, w.opts.TTL, add, remove)
}

// HoldTransfers makes the secondary stop following the primary: it keeps
// serving what it has (old serials) while the primary takes updates, as a
// lagging secondary does. knotc zone-freeze holds up every zone-changing
// event, so the NOTIFYs of the primary wait too.
func (w *World) HoldTransfers(t testTB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := w.Secondary.Control(ctx, append([]string{"-b", "zone-freeze"}, fqdnAll(w.Secondary.Zones)...)...); err != nil {
		t.Fatalf("dnstopo: hold transfers: %v", err)
	}
}

// ReleaseTransfers lets the secondary follow the primary again, makes it
// check every zone now and waits until it serves the primary's serials.
func (w *World) ReleaseTransfers(t testTB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), syncTimeout)
	defer cancel()
	zones := fqdnAll(w.Secondary.Zones)
	if _, err := w.Secondary.Control(ctx, append([]string{"-b", "zone-thaw"}, zones...)...); err != nil {
		t.Fatalf("dnstopo: release transfers: %v", err)
	}
	if _, err := w.Secondary.Control(ctx, append([]string{"zone-refresh"}, zones...)...); err != nil {
		t.Fatalf("dnstopo: release transfers: %v", err)
	}
	if err := w.waitSynced(ctx); err != nil {
		t.Fatalf("dnstopo: release transfers: %v", err)
	}
}

// WaitSynced waits until the secondary serves the primary's serial of every
// provider zone (updates reach it by NOTIFY within moments unless
// transfers are held).
func (w *World) WaitSynced(t testTB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), syncTimeout)
	defer cancel()
	if err := w.waitSynced(ctx); err != nil {
		t.Fatalf("dnstopo: %v", err)
	}
}

// waitSynced polls the serials of the primary and the secondary.
func (w *World) waitSynced(ctx context.Context) error {
	for {
		lag, err := w.lagging()
		if err == nil && lag == "" {
			return nil
		}
		if err != nil {
			lag = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("secondary not in sync with the primary: %s; secondary log:\n%s", lag, w.Secondary.Logs())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// lagging describes the zones whose secondary serial differs from the
// primary's ("" when none does).
func (w *World) lagging() (string, error) {
	var out []string
	for _, z := range w.Primary.Zones {
		p, err := w.Primary.Serial(z)
		if err != nil {
			return "", err
		}
		s, err := w.Secondary.Serial(z)
		if err != nil {
			return "", err
		}
		if p != s {
			out = append(out, fmt.Sprintf("%s primary %d secondary %d", z, p, s))
		}
	}
	return strings.Join(out, ", "), nil
}

// fqdnAll returns the zones fully qualified.
func fqdnAll(zones []string) []string {
	out := make([]string, len(zones))
	for i, z := range zones {
		out[i] = fqdn(z)
	}
	return out
}

// WaitTXT polls the resolver until the TXT records at name satisfy ok
// (called with the records and the response code), and fails the test
// after timeout with the last answer and the resolver's delegation for
// name. It never asserts how long that took.
func (w *World) WaitTXT(t testTB, name string, timeout time.Duration, what string, ok func(txt []string, rcode int) bool) []string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		txt, rcode, err := w.Resolver.TXT(ctx, name)
		cancel()
		if err == nil && ok(txt, rcode) {
			return txt
		}
		if time.Now().After(deadline) {
			t.Fatalf("dnstopo: %s: TXT %s through the resolver after %v: %q %s (err %v); resolver's delegation:\n%s",
				what, name, timeout, txt, dns.RcodeToString[rcode], err, w.Resolver.Lookup(name))
		}
		time.Sleep(100 * time.Millisecond)
	}
}
