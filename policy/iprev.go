package policy

// iprev (RFC 8601 §3): the client's reverse DNS name, confirmed forward.
//
// The client's address is looked up for PTR names; the first ten valid
// names (in sorted order) are looked up for addresses of the client's
// family; the check passes when one of them is the client's address. The
// results are those of RFC 8601 §2.7.3:
//
//   - pass: a PTR name resolves back to the client;
//   - fail: the PTR names have addresses, or none at all (NXDOMAIN,
//     NODATA), but none is the client's;
//   - temperror: the PTR lookup failed for a reason likely to go away (a
//     timeout, SERVFAIL), or a forward lookup did and no name passed;
//   - permerror: no PTR data are published for the client (NXDOMAIN,
//     NODATA), or none of the PTR names is a host name that can be looked
//     up.
//
// The DNS work is bounded by construction: one PTR lookup and at most
// iprevMaxNames address lookups of one family, under the message's
// context, through the daemon's caching resolver (a second message from
// the same client costs no query while the answers are cached).

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/emersion/go-msgauth/authres"

	"github.com/authmilter/authmilter/policy/resolve"
)

// iprevMaxNames is the most PTR names whose addresses are looked up. RFC
// 8601 §3 requires a limit and points to SPF's, ten (RFC 7208 §4.6.4).
const iprevMaxNames = 10

// iprevOutcome is the result of one iprev check.
type iprevOutcome struct {
	// result is pass, fail, temperror or permerror (RFC 8601 §2.7.3).
	result string
	// client is the address checked, without an IPv4-mapped prefix or a
	// zone.
	client netip.Addr
	// name is the PTR name that resolved back to the client (pass only).
	name string
	// reason explains any other result, for our Authentication-Results
	// comment.
	reason string
	// names are the PTR names checked (valid host names, sorted, at most
	// iprevMaxNames).
	names []string
	// err is the DNS error behind a temperror, and errName the name whose
	// address lookup failed ("" for the PTR lookup).
	err     error
	errName string
}

// IPRev is the outcome of an iprev check (RFC 8601 §3) as inbound
// verification computes it, for other tools (authmilter doctor).
type IPRev struct {
	// Result is pass, fail, temperror or permerror.
	Result string
	// Name is the PTR name that resolved back to the client (pass).
	Name string
	// Names are the PTR names checked: the valid host names among the
	// PTR records, sorted, at most IPRevMaxNames.
	Names []string
	// Reason explains any other result, as our Authentication-Results
	// comment does.
	Reason string
	// Err is the DNS error behind a temperror, ErrName the name whose
	// address lookup failed ("" when the PTR lookup did).
	Err     error
	ErrName string
}

// IPRevNoPTR is the Reason of a permerror for a client with no PTR
// record at all (NXDOMAIN, NODATA).
const IPRevNoPTR = "no PTR record"

// IPRevMaxNames is the most PTR names an iprev check confirms.
const IPRevMaxNames = iprevMaxNames

// CheckIPRev runs the iprev check of client with r, exactly as inbound
// verification does.
func CheckIPRev(ctx context.Context, r Resolver, client netip.Addr) IPRev {
	o := checkIPRev(ctx, r, client.Unmap().WithZone(""))
	return IPRev{Result: o.result, Name: o.name, Names: o.names, Reason: o.reason, Err: o.err, ErrName: o.errName}
}

// startIPRev starts the iprev check of the client when the message's
// inbound evaluation begins, so that its DNS work overlaps the body. A
// client without an IP address (a unix socket, an unknown peer) gets no
// check and no iprev resinfo.
func (m *Message) startIPRev() {
	if !m.env.ClientIP.IsValid() || m.p.resolver == nil {
		return
	}
	client := m.env.ClientIP.Unmap().WithZone("")
	ctx, r := m.in.ctx, m.p.resolver
	done := make(chan iprevOutcome, 1)
	m.iprev = done
	// The check runs outside the milter session's panic guard; a panic
	// becomes a temperror for this message, not the end of the daemon.
	go func() {
		out := iprevOutcome{result: "temperror", client: client}
		defer func() {
			if v := recover(); v != nil {
				out.reason = fmt.Sprintf("internal error: %v", v)
			}
			done <- out
		}()
		out = checkIPRev(ctx, r, client)
	}()
}

// iprevEntry returns the iprev resinfo of our Authentication-Results and
// adds the result to d's decision line; ok is false when there is none to
// write. It waits for the check started by startIPRev.
//
// RFC 8601 §2.7.3 and its Appendix B.4 put the client's address in
// policy.iprev; smtp.remote-ip repeats it (it is the property RFC 8617
// registered for the client's address) so that every resinfo of ours that
// concerns the client names it the same way. The name that passed goes in
// the comment.
func (m *Message) iprevEntry(d *Decision) (e arEntry, ok bool) {
	if m.iprev == nil {
		return arEntry{}, false
	}
	out := <-m.iprev
	m.iprev = nil
	d.Log = append(d.Log, iprevAttr(out))
	ip := out.client.String()
	comment := out.reason
	if out.result == "pass" {
		comment = out.name
	}
	return arEntry{
		result: &authres.GenericResult{Method: "iprev", Value: authres.ResultValue(out.result), Params: map[string]string{
			"smtp.remote-ip": ip, "policy.iprev": ip,
		}},
		comment: comment,
		order:   []string{"smtp.remote-ip", "policy.iprev"},
	}, true
}

// iprevAttr is the "iprev" group of the decision line: the result, and
// the confirmed name when it passed.
func iprevAttr(o iprevOutcome) slog.Attr {
	attrs := []any{slog.String("result", o.result)}
	if o.name != "" {
		attrs = append(attrs, slog.String("name", o.name))
	}
	return slog.Group("iprev", attrs...)
}

// checkIPRev runs the iprev check of client (an unmapped address without
// a zone) with r.
func checkIPRev(ctx context.Context, r Resolver, client netip.Addr) iprevOutcome {
	out := iprevOutcome{client: client}
	ptrs, err := r.LookupAddr(ctx, client.String())
	if err != nil {
		if resolve.IsNotFound(err) {
			out.result, out.reason = "permerror", IPRevNoPTR
		} else {
			out.result, out.reason, out.err = "temperror", "PTR lookup: "+iprevErrText(err), err
		}
		return out
	}
	names, valid := iprevNames(ptrs)
	out.names = names
	if len(names) == 0 {
		out.result, out.reason = "permerror", "no PTR name is a valid host name"
		return out
	}
	fwd := iprevConfirm(ctx, r, client, names)
	for _, f := range fwd {
		if f.match {
			out.result, out.name = "pass", f.name
			return out
		}
	}
	for _, f := range fwd {
		if f.err != nil && !resolve.IsNotFound(f.err) {
			out.result, out.reason = "temperror", "lookup "+f.name+": "+iprevErrText(f.err)
			out.err, out.errName = f.err, f.name
			return out
		}
	}
	out.result = "fail"
	switch {
	case valid > len(names):
		out.reason = fmt.Sprintf("no PTR name resolves to the client, %d of %d checked", len(names), valid)
	case len(names) > 1:
		out.reason = fmt.Sprintf("no PTR name resolves to the client, %d checked", len(names))
	default:
		out.reason = names[0] + " does not resolve to the client"
	}
	return out
}

// iprevNames returns the PTR names to confirm: the valid host names among
// ptrs, lowercased, without the trailing dot, deduplicated and sorted (so
// that which names are checked, and which one is reported, does not depend
// on the order of the DNS answer), at most iprevMaxNames of them; and how
// many valid names there were.
func iprevNames(ptrs []string) (names []string, valid int) {
	for _, p := range ptrs {
		n := strings.ToLower(strings.TrimSuffix(p, "."))
		if iprevHostName(n) {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	names = slices.Compact(names)
	valid = len(names)
	return names[:min(len(names), iprevMaxNames)], valid
}

// iprevHostName reports whether a PTR name (lowercase, without the
// trailing dot) can be looked up as a host: at most 253 bytes, labels of 1
// to 63 letters, digits, hyphens and underscores (underscores are not host
// name syntax, but real PTR records have them and they resolve), and a top
// label that is not all digits (RFC 1123 §2.1). Anything else (escaped
// bytes, spaces, a wildcard, the root) is no name of a host; a PTR answer
// made only of such names is a permerror.
//
// The top label rule matters: a PTR name such as "192.0.2.1." would
// otherwise reach the resolver as an address literal, which it returns
// without asking the DNS, and pass without any forward confirmation.
func iprevHostName(n string) bool {
	if n == "" || len(n) > 253 {
		return false
	}
	digits := false
	for label := range strings.SplitSeq(n, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		digits = true
		for i := 0; i < len(label); i++ {
			c := label[i]
			switch {
			case '0' <= c && c <= '9':
			case 'a' <= c && c <= 'z', c == '-', c == '_':
				digits = false
			default:
				return false
			}
		}
	}
	// digits now describes the last label.
	return !digits
}

// iprevForward is the forward lookup of one PTR name.
type iprevForward struct {
	name  string
	match bool  // one of its addresses is the client's
	err   error // the lookup's error, if it failed
}

// iprevConfirm looks up the addresses of names, all at once so that one
// slow name does not hold up the others, and returns what each lookup
// found, in the order of names. As soon as a name matches and every name
// before it is done, the lookups still running are canceled: the first
// matching name in order is the answer whatever they find.
func iprevConfirm(ctx context.Context, r Resolver, client netip.Addr, names []string) []iprevForward {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type arrival struct {
		i int
		f iprevForward
	}
	ch := make(chan arrival, len(names))
	for i, n := range names {
		go func() {
			f := iprevForward{name: n}
			defer func() {
				// A panic in one lookup must not leave the others waiting.
				if v := recover(); v != nil {
					f.err = fmt.Errorf("internal error: %v", v)
				}
				ch <- arrival{i, f}
			}()
			addrs, err := iprevLookup(ctx, r, client.Is4(), n)
			f.err = err
			f.match = slices.Contains(addrs, client)
		}()
	}
	out := make([]iprevForward, len(names))
	done := make([]bool, len(names))
	for range names {
		a := <-ch
		out[a.i], done[a.i] = a.f, true
		for i := range names {
			if !done[i] {
				break
			}
			if out[i].match {
				// The lookups still running end with a canceled error
				// that nobody reads.
				return out
			}
		}
	}
	return out
}

// iprevLookup returns host's addresses of one family (A records for an
// IPv4 client, AAAA for IPv6: an address of the other family can never be
// the client's), unmapped.
func iprevLookup(ctx context.Context, r Resolver, v4 bool, host string) ([]netip.Addr, error) {
	var ips []net.IP
	if l, ok := r.(ipLookuper); ok {
		network := "ip6"
		if v4 {
			network = "ip4"
		}
		var err error
		if ips, err = l.LookupIP(ctx, network, host); err != nil {
			return nil, err
		}
	} else {
		// A resolver without single-family lookups asks for both.
		addrs, err := r.LookupIPAddr(ctx, host)
		if err != nil {
			return nil, err
		}
		for _, a := range addrs {
			ips = append(ips, a.IP)
		}
	}
	out := make([]netip.Addr, 0, len(ips))
	for _, ip := range ips {
		if a, ok := netip.AddrFromSlice(ip); ok {
			out = append(out, a.Unmap())
		}
	}
	return out, nil
}

// iprevErrText is a DNS error for our Authentication-Results comment:
// without the address of our DNS server, which is none of the reader's
// business (and changes from one server to the next).
func iprevErrText(err error) string {
	var de *net.DNSError
	if errors.As(err, &de) {
		return de.Err
	}
	return err.Error()
}
