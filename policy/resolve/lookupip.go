package resolve

import (
	"context"
	"net"
	"net/netip"

	"github.com/miekg/dns"
)

// LookupIP returns the addresses of host of one family, with the signature
// of net.Resolver.LookupIP: network "ip4" asks for A records only, "ip6"
// for AAAA only, "ip" for both (as LookupIPAddr). SPF evaluation uses it to
// ask only for the client's family (RFC 7208 §5.3, §5.4: an IPv4 client
// can only match A records). An IP address literal is returned as is when
// it is of the family. No address of the family is an IsNotFound error.
func (r *Resolver) LookupIP(ctx context.Context, network, host string) ([]net.IP, error) {
	var qtype uint16
	switch network {
	case "ip4":
		qtype = dns.TypeA
	case "ip6":
		qtype = dns.TypeAAAA
	case "ip":
		addrs, err := r.LookupIPAddr(ctx, host)
		if err != nil {
			return nil, err
		}
		out := make([]net.IP, 0, len(addrs))
		for _, a := range addrs {
			out = append(out, a.IP)
		}
		return out, nil
	default:
		return nil, &net.DNSError{Err: "unsupported network " + network, Name: host}
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		if ip.Is4() != (qtype == dns.TypeA) {
			return nil, notFound(host, "", "no suitable address")
		}
		return []net.IP{net.IP(ip.AsSlice())}, nil
	}
	rrs, err := r.lookup(ctx, host, host, qtype)
	if err != nil {
		return nil, err
	}
	var out []net.IP
	for _, rr := range rrs {
		switch rr := rr.(type) {
		case *dns.A:
			out = append(out, rr.A)
		case *dns.AAAA:
			out = append(out, rr.AAAA)
		}
	}
	return out, nil
}
