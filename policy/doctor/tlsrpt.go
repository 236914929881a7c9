package doctor

import (
	"context"
	"fmt"
	"net/url"
	"strings"
)

// TLSRPTReport is the SMTP TLS reporting part of a report (RFC 8460).
type TLSRPTReport struct {
	// Record is the _smtp._tls TXT record, RUA its report URIs.
	Record string   `json:"record,omitempty"`
	RUA    []string `json:"rua,omitempty"`
}

// checkTLSRPT checks the _smtp._tls record.
func checkTLSRPT(ctx context.Context, e *env) (*TLSRPTReport, []Finding) {
	name := "_smtp._tls." + e.domain
	recs, fs, ok := versionedTXT(ctx, e, CheckTLSRPT, "tls-rpt", name, "v=TLSRPTv1")
	if !ok {
		return nil, fs
	}
	add := func(sev Severity, code, msg, fix string) {
		fs = append(fs, Finding{Check: CheckTLSRPT, Severity: sev, Code: code, Message: msg, Fix: fix})
	}
	switch len(recs) {
	case 0:
		add(OK, "tls-rpt-absent", fmt.Sprintf("no TLS reporting (optional): no v=TLSRPTv1 record at %s", name), "")
		return &TLSRPTReport{}, fs
	case 1:
	default:
		// RFC 8460 §3: senders then assume the domain has no TLS reporting.
		add(Error, "tls-rpt-multiple", fmt.Sprintf("%d v=TLSRPTv1 records at %s: senders send no TLS reports", len(recs), name), "keep exactly one record at "+name)
		return &TLSRPTReport{}, fs
	}
	rep := &TLSRPTReport{Record: recs[0]}
	rua, err := parseTLSRPTRecord(recs[0])
	if err != nil {
		add(Error, "tls-rpt-syntax", fmt.Sprintf("the record at %s is invalid: %s; senders send no TLS reports", name, err),
			fmt.Sprintf("publish %s TXT \"v=TLSRPTv1; rua=mailto:tls-reports@%s\"", name, e.domain))
		return rep, fs
	}
	rep.RUA = rua
	add(OK, "tls-rpt-ok", fmt.Sprintf("TLS reports for %s go to %s", e.domain, clipText(strings.Join(rua, ", "))), "")
	return rep, fs
}

// maxTLSRPTURIs bounds the rua URIs kept from one record.
const maxTLSRPTURIs = 20

// parseTLSRPTRecord checks a TLS reporting TXT record (RFC 8460 §3) and
// returns its rua URIs:
//
//	tlsrpt-record = tlsrpt-version 1*(field-delim tlsrpt-field) [field-delim]
//	field-delim   = *WSP ";" *WSP
//	tlsrpt-rua    = %s"rua=" tlsrpt-uri *(*WSP "," *WSP tlsrpt-uri)
//	tlsrpt-uri    = URI, mailto: or https:
func parseTLSRPTRecord(txt string) ([]string, error) {
	fields, err := splitTXTFields(txt, "v=TLSRPTv1")
	if err != nil {
		return nil, err
	}
	var rua []string
	seen := false
	for _, f := range fields {
		name, value, _ := strings.Cut(f, "=")
		if name != "rua" {
			if !isExtName(name) || !isExtValue(value, "=;") {
				return nil, fmt.Errorf("invalid field %q", clipText(f))
			}
			continue
		}
		if seen {
			return nil, fmt.Errorf("rua= given twice")
		}
		seen = true
		for _, u := range strings.Split(value, ",") {
			u = strings.Trim(u, " \t")
			if err := checkTLSRPTURI(u); err != nil {
				return nil, err
			}
			if len(rua) < maxTLSRPTURIs {
				rua = append(rua, u)
			}
		}
	}
	if !seen {
		return nil, fmt.Errorf("no rua= field")
	}
	return rua, nil
}

// checkTLSRPTURI checks that a rua URI is mailto: with an address or
// https: with a host (RFC 8460 §3).
func checkTLSRPTURI(u string) error {
	pu, err := url.Parse(u)
	if err != nil || u == "" {
		return fmt.Errorf("rua URI %q is not a URI", clipText(u))
	}
	switch strings.ToLower(pu.Scheme) {
	case "mailto":
		if at := strings.LastIndexByte(pu.Opaque, '@'); at <= 0 || at == len(pu.Opaque)-1 {
			return fmt.Errorf("rua URI %q names no address", clipText(u))
		}
	case "https":
		if pu.Host == "" {
			return fmt.Errorf("rua URI %q names no host", clipText(u))
		}
	default:
		return fmt.Errorf("rua URI %q is neither a mailto nor an https URI", clipText(u))
	}
	return nil
}
