package spf

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strings"
	"testing"

	libspf "blitiri.com.ar/go/spf"
)

// maxLookups is the most DNS lookups one evaluation can make: the
// record, then per DNS-querying term one lookup plus, for mx, one address
// lookup per MX host; the PTR validation of ptr and the p macro is done
// once (a PTR lookup and one address lookup per name).
const maxLookups = 1 + MaxTerms*(1+MaxMXHosts) + 1 + MaxPTRNames

// wildDNS is a hostile Resolver that answers every name: its SPF record
// is the fuzzed one (so that include and redirect loop back into it), it
// has addresses of both families (but names starting with "void" have
// none), n MX hosts, and the client has n PTR names.
type wildDNS struct {
	record  string
	n       int
	lookups int
}

func (w *wildDNS) LookupTXT(_ context.Context, name string) ([]string, error) {
	w.lookups++
	return []string{w.record}, nil
}

func (w *wildDNS) LookupMX(_ context.Context, name string) ([]*net.MX, error) {
	w.lookups++
	out := make([]*net.MX, w.n)
	for i := range out {
		out[i] = &net.MX{Host: fmt.Sprintf("mx%d.%s", i, name), Pref: uint16(i)}
	}
	return out, nil
}

func (w *wildDNS) LookupIP(_ context.Context, network, host string) ([]net.IP, error) {
	w.lookups++
	if strings.HasPrefix(host, "void") {
		return nil, memNotFound(host)
	}
	if network == "ip4" {
		return []net.IP{net.ParseIP("192.0.2.1")}, nil
	}
	return []net.IP{net.ParseIP("2001:db8::1")}, nil
}

func (w *wildDNS) LookupAddr(_ context.Context, addr string) ([]string, error) {
	w.lookups++
	out := make([]string, w.n)
	for i := range out {
		out[i] = fmt.Sprintf("p%d.x.example.", i)
	}
	return out, nil
}

// FuzzCheckHost evaluates hostile records: every name has the fuzzed
// record, so includes and redirects recurse into it, and answers with up
// to 15 MX hosts and PTR names. The evaluation must not panic, must give
// a result of RFC 7208 §2.6 and must stay within maxLookups.
func FuzzCheckHost(f *testing.F) {
	for _, s := range []string{
		"v=spf1 -all",
		"v=spf1 include:x.example -all",
		"v=spf1 redirect=%{d}",
		"v=spf1 mx mx mx mx mx mx mx mx mx mx mx -all",
		"v=spf1 ptr ptr exists:%{p}.x %{p}",
		"v=spf1 exists:%{p}.a exists:%{p}.b mx:%{p} mx mx mx mx mx mx mx mx -all",
		"v=spf1 a:void1.x.example a:void2.x.example a:void3.x.example +all",
		"v=spf1 exists:" + strings.Repeat("%{s}", 200) + " -all",
		"v=spf1 a:%{d99999999999}.%{ir}.%{L-}.x.example/24//64 ?all",
	} {
		f.Add(s, uint8(10), true)
	}
	f.Fuzz(func(t *testing.T, record string, n uint8, v4 bool) {
		w := &wildDNS{record: record, n: int(n % 16)}
		ip := netip.MustParseAddr("2001:db8::1")
		if v4 {
			ip = netip.MustParseAddr("192.0.2.1")
		}
		res, err := CheckHost(context.Background(), w, ip, "x.example", "user@x.example", "helo.example")
		switch res {
		case None, Neutral, Pass, Fail, SoftFail, TempError, PermError:
		default:
			t.Fatalf("result %q (%v)", res, err)
		}
		if w.lookups > maxLookups {
			t.Fatalf("%d lookups, at most %d allowed", w.lookups, maxLookups)
		}
	})
}

// libResolver gives a memDNS to blitiri.com.ar/go/spf, which asks for
// both address families at once.
type libResolver struct{ *memDNS }

func (l libResolver) LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error) {
	var out []net.IPAddr
	for _, network := range []string{"ip4", "ip6"} {
		ips, err := l.LookupIP(ctx, network, host)
		if err != nil && !isNotFound(err) {
			return nil, err
		}
		for _, ip := range ips {
			out = append(out, net.IPAddr{IP: ip})
		}
	}
	if len(out) == 0 {
		return nil, memNotFound(host)
	}
	return out, nil
}

// differentialZone is the DNS of FuzzSPFDifferential: x.example and
// i.example have the fuzzed records; a few hosts have addresses of both
// families (so that asking one family or both finds the same, and the
// library's double-family lookups and ours count the same void lookups),
// x.example has two MX hosts, and 192.0.2.1 has a validated PTR name.
func differentialZone(rec, inc string) *memDNS {
	m := newMemDNS()
	spfTXT(m, "x.example", rec)
	spfTXT(m, "i.example", inc)
	for _, h := range []string{"x.example", "i.example", "h.x.example", "mx1.x.example", "mx.i.example", "mail.x.example"} {
		m.addA(h, "192.0.2.1", "2001:db8::1")
	}
	m.addA("o.x.example", "198.51.100.7", "2001:db8::7")
	m.mx["x.example"] = []*net.MX{{Host: "mx1.x.example.", Pref: 10}, {Host: "o.x.example.", Pref: 20}}
	m.mx["i.example"] = []*net.MX{{Host: "mx.i.example.", Pref: 10}}
	m.ptr["192.0.2.1"] = []string{"mail.x.example."}
	m.temp["t.x.example"] = true
	return m
}

// libraryWrong reports whether a record is in one of the classes where
// blitiri.com.ar/go/spf v1.6.0 departs from RFC 7208, so that its result
// is no oracle for ours:
//
//   - a syntax error anywhere in a record the evaluation reaches is a
//     permerror (§4.6: the record is parsed before it is evaluated), and
//     domain-specs must match §7.1's ABNF (no single label, valid
//     toplabel, no bytes outside %x21-7E); the library checks each term
//     only when it reaches it, never checks exp= (§6.2), and looks odd
//     names up instead;
//   - a domain-spec may contain "/" (§7.1): the library takes what
//     follows the first "/" for a CIDR length;
//   - the p macro (§7.3) is not implemented by the library;
//   - a CIDR length with a leading zero ("/032") is invalid (§5.6's
//     ABNF), the library parses it;
//   - a macro's DIGIT transformer has no upper bound (§7.3: any nonzero
//     number, all parts kept beyond their count); the library refuses a
//     number that overflows an int as an invalid macro.
func libraryWrong(records ...string) bool {
	for _, rec := range records {
		if !IsRecord(rec) {
			continue
		}
		r, err := ParseRecord(rec)
		if err != nil {
			return true
		}
		if strings.Contains(strings.ToLower(rec), "%{p") || hugeMacroDigits.MatchString(rec) {
			return true
		}
		for _, t := range r.Terms {
			if strings.Contains(t.Domain, "/") {
				return true
			}
		}
	}
	return false
}

// hugeMacroDigits matches a macro whose DIGIT transformer may overflow
// an int.
var hugeMacroDigits = regexp.MustCompile(`%\{[a-zA-Z][0-9]{10,}`)

// FuzzSPFDifferential compares CheckHost with blitiri.com.ar/go/spf, the
// library we used before, on fuzzed records over the same in-memory DNS:
// the results must agree, except in the classes libraryWrong lists, where
// the RFC decides (and the OpenSPF suite tests it).
func FuzzSPFDifferential(f *testing.F) {
	for _, s := range [][2]string{
		{"v=spf1 -all", "v=spf1 +all"},
		{"v=spf1 include:i.example -all", "v=spf1 ip4:192.0.2.0/24 -all"},
		{"v=spf1 mx ~all", "v=spf1"},
		{"v=spf1 a:h.x.example/24 -all", ""},
		{"v=spf1 ptr -all", ""},
		{"v=spf1 exists:%{ir}.%{v}.x.example redirect=i.example", "v=spf1 mx:i.example -all"},
		{"v=spf1 a:t.x.example -all", ""},
		{"v=spf1 a:void1.x.example a:void2.x.example a:void3.x.example +all", ""},
		{"v=spf1 include:i.example", "v=spf1 include:x.example"},
	} {
		f.Add(s[0], s[1], true)
	}
	f.Fuzz(func(t *testing.T, rec, inc string, v4 bool) {
		if libraryWrong(rec, inc) {
			return
		}
		ip := netip.MustParseAddr("2001:db8::1")
		if v4 {
			ip = netip.MustParseAddr("192.0.2.1")
		}
		ours, ourErr := CheckHost(context.Background(), differentialZone(rec, inc), ip, "x.example", "user@x.example", "helo.example")
		lib, libErr := libspf.CheckHostWithSender(net.IP(ip.AsSlice()), "helo.example", "user@x.example",
			libspf.WithResolver(libResolver{differentialZone(rec, inc)}), libspf.WithContext(context.Background()))
		if string(lib) != string(ours) {
			var se *SyntaxError
			t.Fatalf("records %q, %q, client %s: ours %s (%v), library %s (%v); syntax error: %v",
				rec, inc, ip, ours, ourErr, lib, libErr, errors.As(ourErr, &se))
		}
	})
}
