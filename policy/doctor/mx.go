package doctor

import (
	"context"
	"fmt"
	"net/netip"
	"strings"

	"github.com/miekg/dns"

	"github.com/authmilter/authmilter/policy/resolve"
)

// MXReport is the MX part of a report.
type MXReport struct {
	// Hosts are the MX records, by preference.
	Hosts []MXHost `json:"hosts,omitempty"`
	// Null is true for a null MX (RFC 7505): the domain receives no mail.
	Null bool `json:"null"`
}

// MXHost is one MX record.
type MXHost struct {
	Host string `json:"host"`
	Pref uint16 `json:"pref"`
	// Addresses are the host's A and AAAA addresses.
	Addresses []string `json:"addresses,omitempty"`
	// Error says why the host cannot receive mail, or could not be checked.
	Error string `json:"error,omitempty"`
}

// maxMXHosts bounds the MX hosts resolved: each costs three lookups.
const maxMXHosts = 20

// checkMX checks the domain's MX records.
func checkMX(ctx context.Context, e *env) (*MXReport, []Finding) {
	var fs []Finding
	add := func(sev Severity, code, subject, msg, fix string) {
		fs = append(fs, Finding{Check: CheckMX, Severity: sev, Code: code, Subject: subject, Message: msg, Fix: fix})
	}
	mxs, err := e.r.LookupMX(ctx, e.domain)
	switch {
	case resolve.IsNotFound(err):
		add(Warn, "mx-missing", "", fmt.Sprintf("%s has no MX record: senders deliver to its A/AAAA address (RFC 5321 §5.1)", e.domain),
			fmt.Sprintf("publish MX records, or a null MX (%s MX 0 .) if the domain receives no mail", e.domain))
		return &MXReport{}, fs
	case err != nil:
		return nil, []Finding{dnsFailure(CheckMX, "mx-dns-error", "", "MX "+e.domain, err)}
	}
	rep := &MXReport{}
	nulls := 0
	for _, mx := range mxs {
		if mx.Host == "." {
			nulls++
		}
	}
	if nulls > 0 {
		if nulls == 1 && len(mxs) == 1 && mxs[0].Pref == 0 {
			rep.Null = true
			rep.Hosts = []MXHost{{Host: ".", Pref: 0}}
			add(OK, "mx-null", "", fmt.Sprintf("%s has a null MX (RFC 7505): it receives no mail", e.domain), "")
			return rep, fs
		}
		add(Error, "mx-null-mixed", "", fmt.Sprintf("%s has a null MX (\".\") among %d MX records: RFC 7505 §3 allows it only alone, with preference 0", e.domain, len(mxs)),
			"publish either the single record \"MX 0 .\" or real mail hosts, not both")
	}
	if len(mxs) > maxMXHosts {
		add(Warn, "mx-too-many", "", fmt.Sprintf("%d MX records: doctor checks the first %d", len(mxs), maxMXHosts),
			"a few MX hosts are enough; remove the ones you do not run")
		mxs = mxs[:maxMXHosts]
	}
	for _, mx := range mxs {
		if mx.Host == "." {
			continue
		}
		h := MXHost{Host: mx.Host, Pref: mx.Pref}
		fs = append(fs, checkMXHost(ctx, e, &h)...)
		rep.Hosts = append(rep.Hosts, h)
	}
	return rep, fs
}

// checkMXHost checks that one MX host is a name with addresses, filling h.
func checkMXHost(ctx context.Context, e *env, h *MXHost) []Finding {
	host := strings.TrimSuffix(h.Host, ".")
	subject := clipText(host)
	f := func(sev Severity, code, msg, fix string) Finding {
		return Finding{Check: CheckMX, Severity: sev, Code: code, Subject: subject, Message: msg, Fix: fix}
	}
	if _, err := netip.ParseAddr(host); err == nil {
		h.Error = "an IP address, not a host name"
		return []Finding{f(Error, "mx-host-ip-literal", fmt.Sprintf("MX %d %s is an IP address: an MX must name a host (RFC 5321 §5.1)", h.Pref, subject),
			fmt.Sprintf("publish an A record such as mx.%s for the address and name it in the MX", e.domain))}
	}
	var fs []Finding
	cnames, err := e.r.LookupRR(ctx, host, dns.TypeCNAME)
	switch {
	case err == nil && len(cnames) > 0:
		target := cnames[0].(*dns.CNAME).Target
		fs = append(fs, f(Warn, "mx-host-cname", fmt.Sprintf("MX %s is an alias (CNAME to %s): RFC 2181 §10.3 forbids it and some senders refuse it", subject, clipText(target)),
			fmt.Sprintf("name the host %s in the MX instead", clipText(strings.TrimSuffix(target, ".")))))
	case err != nil && !resolve.IsNotFound(err):
		h.Error = "no answer: " + dnsFailureText(err)
		return append(fs, dnsFailure(CheckMX, "mx-dns-error", subject, "CNAME "+host, err))
	}
	addrs, err := e.r.LookupIPAddr(ctx, host)
	switch {
	case resolve.IsNotFound(err):
		h.Error = "no A or AAAA record"
		return append(fs, f(Error, "mx-host-unresolvable", fmt.Sprintf("MX %d %s has no A or AAAA record: mail to it cannot be delivered", h.Pref, subject),
			"publish the host's addresses or remove the MX record"))
	case err != nil:
		h.Error = "no answer: " + dnsFailureText(err)
		return append(fs, dnsFailure(CheckMX, "mx-dns-error", subject, "A/AAAA "+host, err))
	}
	for _, a := range addrs {
		h.Addresses = append(h.Addresses, a.IP.String())
	}
	return append(fs, f(OK, "mx-host-ok", fmt.Sprintf("MX %d %s: %s", h.Pref, subject, strings.Join(h.Addresses, ", ")), ""))
}
