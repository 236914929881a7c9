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
	rec, fs, st := tlsrptRecord.lookup(ctx, e, name)
	switch st {
	case recordDNSError:
		return nil, fs
	case recordNotOne:
		return &TLSRPTReport{}, fs
	}
	rep := &TLSRPTReport{Record: rec}
	rua, err := parseTLSRPTRecord(rec)
	if err != nil {
		fs = append(fs, tlsrptRecord.invalid(name, err,
			fmt.Sprintf("publish %s TXT \"v=TLSRPTv1; rua=mailto:tls-reports@%s\"", name, e.domain)))
		return rep, fs
	}
	rep.RUA = rua
	fs = append(fs, Finding{Check: CheckTLSRPT, Severity: OK, Code: "tls-rpt-ok",
		Message: fmt.Sprintf("TLS reports for %s go to %s", e.domain, clipText(strings.Join(rua, ", ")))})
	return rep, fs
}

// tlsrptRecord is the _smtp._tls record: RFC 8460 §3 has senders assume
// the domain has no TLS reporting unless exactly one valid record is
// published.
var tlsrptRecord = versionedRecord{check: CheckTLSRPT, prefix: "tls-rpt", version: "v=TLSRPTv1",
	absent: "no TLS reporting (optional)", ignored: "senders send no TLS reports"}

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
