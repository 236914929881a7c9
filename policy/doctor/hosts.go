package doctor

import (
	"context"
	"fmt"
	"net/netip"
	"strings"

	"github.com/authmilter/authmilter/policy"
	"github.com/authmilter/authmilter/policy/dmarc"
)

// HostReport is one sending host of a report.
type HostReport struct {
	IP string `json:"ip"`
	// PTR are the host's reverse DNS names; FCrDNS is true when one of
	// them resolves back to IP (forward-confirmed reverse DNS).
	PTR    []string `json:"ptr,omitempty"`
	FCrDNS bool     `json:"fcrdns"`
	// SPFResult and SPFTerm are the SPF verdict for mail from this host
	// with MAIL FROM postmaster@<domain>, and the term that decided it.
	SPFResult string `json:"spf_result,omitempty"`
	SPFTerm   string `json:"spf_term,omitempty"`
	// DMARCResult, DMARCPolicy and DMARCDisposition are the DMARC verdict
	// for that mail without a DKIM signature, as our inbound verifier
	// reaches it: outcome (pass, fail, none, ...), requested policy and
	// what a receiver does with the mail.
	DMARCResult      string `json:"dmarc_result,omitempty"`
	DMARCPolicy      string `json:"dmarc_policy,omitempty"`
	DMARCDisposition string `json:"dmarc_disposition,omitempty"`
}

// checkHosts checks each sending host: reverse DNS, forward confirmation,
// SPF and the DMARC verdict for its mail.
func checkHosts(ctx context.Context, e *env, spf *SPFReport, dm *DMARCReport) ([]HostReport, []Finding) {
	var reps []HostReport
	var fs []Finding
	for _, ip := range e.opt.IPs {
		ip = ip.Unmap()
		h := HostReport{IP: ip.String()}
		fs = append(fs, checkReverseDNS(ctx, e, ip, &h)...)
		fs = append(fs, checkHostDMARC(ctx, e, ip, spf, &h)...)
		reps = append(reps, h)
	}
	return reps, fs
}

// checkReverseDNS runs the iprev check of inbound verification
// (policy.CheckIPRev: PTR names confirmed by forward lookups) for ip,
// filling h, so that doctor says what our own verifier concludes.
func checkReverseDNS(ctx context.Context, e *env, ip netip.Addr, h *HostReport) []Finding {
	subject := ip.String()
	f := func(sev Severity, code, msg, fix string) Finding {
		return Finding{Check: CheckHosts, Severity: sev, Code: code, Subject: subject, Message: msg, Fix: fix}
	}
	rev := policy.CheckIPRev(ctx, e.r, ip)
	h.PTR = rev.Names
	switch {
	case rev.Result == "pass":
		h.FCrDNS = true
		return []Finding{f(OK, "hosts-fcrdns", fmt.Sprintf("%s is %s, which resolves back to it", subject, clipText(rev.Name)), "")}
	case rev.Result == "temperror" && rev.ErrName == "":
		return []Finding{dnsFailure(CheckHosts, "hosts-dns-error", subject, "PTR "+subject, rev.Err)}
	case rev.Result == "temperror":
		// A name could not be checked: no verdict.
		return []Finding{dnsFailure(CheckHosts, "hosts-dns-error", subject, "address of "+clipText(rev.ErrName), rev.Err)}
	case rev.Result == "permerror" && rev.Reason == policy.IPRevNoPTR:
		return []Finding{f(Error, "hosts-no-ptr", fmt.Sprintf("%s has no reverse DNS (PTR): many receivers refuse mail from hosts without it", subject),
			fmt.Sprintf("ask whoever holds %s (your provider) for a PTR record naming the host, e.g. mail.%s, with an A/AAAA record back to %s", subject, e.domain, subject))}
	case rev.Result == "permerror":
		return []Finding{f(Error, "hosts-not-fcrdns", fmt.Sprintf("%s has PTR records, but none names a host that can be looked up (%s): receivers treat it as no reverse DNS", subject, rev.Reason),
			fmt.Sprintf("have the PTR of %s changed to a host name, e.g. mail.%s, with an A/AAAA record back to %s", subject, e.domain, subject))}
	}
	return []Finding{f(Error, "hosts-not-fcrdns", fmt.Sprintf("%s has reverse DNS %s, but no such name resolves back to %s: receivers treat it as no reverse DNS", subject, clipText(strings.Join(h.PTR, ", ")), subject),
		fmt.Sprintf("publish an A/AAAA record for %s pointing to %s, or have the PTR changed to a name that does", clipText(h.PTR[0]), subject))}
}

// checkHostDMARC fills in h the SPF verdict (from the SPF check) and the
// DMARC verdict for mail from ip with MAIL FROM postmaster@<domain> and
// no DKIM signature, as our inbound verifier computes it.
func checkHostDMARC(ctx context.Context, e *env, ip netip.Addr, spf *SPFReport, h *HostReport) []Finding {
	if hr := spf.HostResult(ip); hr != nil {
		h.SPFResult, h.SPFTerm = hr.Result, hr.Term
	} else {
		// No SPF check ran for this host: compute the result the same way
		// (its findings belong to the SPF check, so none here).
		r := policy.CheckSPF(ctx, e.r, ip, "", "postmaster@"+e.domain)
		h.SPFResult = r.Result
	}
	res := dmarc.Evaluate(ctx, e.r, dmarc.Input{FromDomain: e.domain, SPFResult: h.SPFResult, SPFDomain: e.domain}, e.opt.DMARCMode)
	h.DMARCResult, h.DMARCPolicy, h.DMARCDisposition = res.Outcome, res.Policy, res.Disposition
	if res.Outcome != dmarc.OutcomeFail || (res.Policy != dmarc.PolicyQuarantine && res.Policy != dmarc.PolicyReject) {
		return nil
	}
	return []Finding{{Check: CheckHosts, Severity: Warn, Code: "hosts-dmarc-needs-dkim", Subject: h.IP,
		Message: fmt.Sprintf("mail from %s passes DMARC only with a DKIM signature: SPF is %s (DMARC p=%s, disposition %s)", h.IP, cmpOrNone(h.SPFResult), res.Policy, res.Disposition),
		Fix:     fmt.Sprintf("make %s sign with a key of %s (or authorize it in SPF)", h.IP, e.domain)}}
}

// cmpOrNone returns s, or "none" when it is empty.
func cmpOrNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
