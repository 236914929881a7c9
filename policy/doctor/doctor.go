// Package doctor checks a domain's whole sending setup the way receivers
// will see it: SPF (the include tree and its lookup limits), DMARC, DKIM
// selectors (ours and other providers'), the sending hosts' reverse DNS,
// MX, MTA-STS and TLS reporting. Verdicts come from the code that verifies
// inbound mail (policy.CheckSPF, policy/dmarc), so doctor concludes what
// our own verifier would. It only reads DNS: it never changes anything.
package doctor

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/authmilter/authmilter/policy"
	"github.com/authmilter/authmilter/policy/dmarc"
)

// Severity grades a finding. The worst one of a report gives the exit
// code of authmilter doctor: 0 for ok, 1 for warnings, 2 for errors.
type Severity int

// Severities, from best to worst.
const (
	OK Severity = iota
	Warn
	Error
)

// String returns "ok", "warn" or "error".
func (s Severity) String() string {
	switch s {
	case OK:
		return "ok"
	case Warn:
		return "warn"
	case Error:
		return "error"
	}
	return fmt.Sprintf("severity(%d)", int(s))
}

// MarshalText writes the severity as String does, for JSON.
func (s Severity) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText reads what MarshalText writes.
func (s *Severity) UnmarshalText(b []byte) error {
	switch string(b) {
	case "ok":
		*s = OK
	case "warn":
		*s = Warn
	case "error":
		*s = Error
	default:
		return fmt.Errorf("doctor: unknown severity %q", b)
	}
	return nil
}

// Checks, the groups of a report (Finding.Check).
const (
	CheckDomain = "domain"
	CheckSPF    = "spf"
	CheckDMARC  = "dmarc"
	CheckDKIM   = "dkim"
	CheckHosts  = "hosts"
	CheckMX     = "mx"
	CheckMTASTS = "mta-sts"
	CheckTLSRPT = "tls-rpt"
)

// Finding is one thing doctor found. Code is stable across versions (the
// README lists them): monitoring may match on it; Message and Fix are for
// people and may be reworded.
type Finding struct {
	// Check is the group: one of the Check constants.
	Check string `json:"check"`
	// Severity is ok, warn or error.
	Severity Severity `json:"severity"`
	// Code identifies the kind of finding, e.g. "spf-too-many-lookups".
	Code string `json:"code"`
	// Subject is what the finding is about when a group has several: a
	// selector, an IP address, an include, a report address.
	Subject string `json:"subject,omitempty"`
	// Message says what was found, in one line.
	Message string `json:"message"`
	// Fix says what to do about it, in one line (empty for ok).
	Fix string `json:"fix,omitempty"`
}

// Resolver is what doctor asks DNS with: the daemon's *resolve.Resolver.
// Errors must tell a missing record (resolve.IsNotFound) from a failure
// to get an answer (resolve.IsTemporary): a timeout is never reported as
// a missing record.
type Resolver interface {
	policy.Resolver
	LookupIP(ctx context.Context, network, host string) ([]net.IP, error)
	LookupRR(ctx context.Context, name string, qtype uint16) ([]dns.RR, error)
}

// OwnKey is one of our own keys for a domain, as `authmilter keys`
// reports it.
type OwnKey struct {
	Selector  string `json:"selector"`
	Algorithm string `json:"algorithm"`
	Bits      int    `json:"bits"`
	// State is the publication state (keys.State: published, missing,
	// mismatch, ...), Active whether the daemon signs with it.
	State  string `json:"state"`
	Active bool   `json:"active"`
	// Detail explains a state other than published.
	Detail string `json:"detail,omitempty"`
}

// Options configure a run. The zero value checks with no sending hosts,
// no extra selectors and no own keys.
type Options struct {
	// Resolver is required.
	Resolver Resolver
	// IPs are sending hosts to check (-ip and outbound.ips).
	IPs []netip.Addr
	// Selectors are DKIM selectors to check besides OwnKeys' (-selector,
	// the key table's).
	Selectors []string
	// OwnKeys returns our keys for a domain (nil: none).
	OwnKeys func(domain string) []OwnKey
	// DMARCMode is the policy discovery method (the daemon's dmarc.mode).
	DMARCMode dmarc.Mode
	// Timeout bounds the checks of one domain (default 60 s).
	Timeout time.Duration
}

// Report is doctor's result for one domain. Its JSON form is the stable
// schema of `authmilter doctor -json` (documented in the README): fields
// may be added, never renamed or removed.
type Report struct {
	Domain string `json:"domain"`
	// Status is the worst severity of Findings.
	Status Severity `json:"status"`
	// Findings, grouped by check in the order of the Check constants.
	Findings []Finding `json:"findings"`

	SPF    *SPFReport    `json:"spf,omitempty"`
	DMARC  *DMARCReport  `json:"dmarc,omitempty"`
	DKIM   *DKIMReport   `json:"dkim,omitempty"`
	Hosts  []HostReport  `json:"hosts,omitempty"`
	MX     *MXReport     `json:"mx,omitempty"`
	MTASTS *MTASTSReport `json:"mta_sts,omitempty"`
	TLSRPT *TLSRPTReport `json:"tls_rpt,omitempty"`
}

// env is what the checks of one domain share.
type env struct {
	r      Resolver
	opt    *Options
	domain string
}

// DefaultTimeout bounds the checks of one domain when Options.Timeout is 0.
const DefaultTimeout = 60 * time.Second

// Run checks one domain. It never fails: a name that is not a domain, a
// domain that does not exist and DNS failures are findings.
func Run(ctx context.Context, opt *Options, domain string) *Report {
	timeout := opt.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	domain = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(domain), "."))
	rep := &Report{Domain: domain}
	e := &env{r: opt.Resolver, opt: opt, domain: domain}
	fs, ok := checkDomain(ctx, e)
	rep.add(fs)
	if !ok {
		return rep
	}
	spf, fs := checkSPF(ctx, e)
	rep.SPF = spf
	rep.add(fs)
	dm, fs := checkDMARC(ctx, e)
	rep.DMARC = dm
	rep.add(fs)
	dk, fs := checkDKIM(ctx, e)
	rep.DKIM = dk
	rep.add(fs)
	hosts, fs := checkHosts(ctx, e, spf, dm)
	rep.Hosts = hosts
	rep.add(fs)
	mx, fs := checkMX(ctx, e)
	rep.MX = mx
	rep.add(fs)
	sts, fs := checkMTASTS(ctx, e)
	rep.MTASTS = sts
	rep.add(fs)
	rpt, fs := checkTLSRPT(ctx, e)
	rep.TLSRPT = rpt
	rep.add(fs)
	return rep
}

// add appends findings and raises Status.
func (r *Report) add(fs []Finding) {
	for _, f := range fs {
		r.Findings = append(r.Findings, f)
		r.Status = max(r.Status, f.Severity)
	}
}
