package doctor

import (
	"context"
	"fmt"
	"strings"

	"github.com/authmilter/authmilter/policy/resolve"
)

// MTASTSReport is the MTA-STS part of a report (RFC 8461). Only the TXT
// record is checked: the policy file is served over HTTPS, which doctor
// does not fetch.
type MTASTSReport struct {
	// Record is the _mta-sts TXT record, ID its id= value.
	Record string `json:"record,omitempty"`
	ID     string `json:"id,omitempty"`
}

// checkMTASTS checks the _mta-sts record.
func checkMTASTS(ctx context.Context, e *env) (*MTASTSReport, []Finding) {
	name := "_mta-sts." + e.domain
	recs, fs, ok := versionedTXT(ctx, e, CheckMTASTS, "mta-sts", name, "v=STSv1")
	if !ok {
		return nil, fs
	}
	add := func(sev Severity, code, msg, fix string) {
		fs = append(fs, Finding{Check: CheckMTASTS, Severity: sev, Code: code, Message: msg, Fix: fix})
	}
	switch len(recs) {
	case 0:
		add(OK, "mta-sts-absent", fmt.Sprintf("no MTA-STS policy (optional): no v=STSv1 record at %s", name), "")
		return &MTASTSReport{}, fs
	case 1:
	default:
		// RFC 8461 §3.1: senders then assume there is no policy.
		add(Error, "mta-sts-multiple", fmt.Sprintf("%d v=STSv1 records at %s: senders ignore MTA-STS", len(recs), name), "keep exactly one record at "+name)
		return &MTASTSReport{}, fs
	}
	rep := &MTASTSReport{Record: recs[0]}
	id, err := parseSTSRecord(recs[0])
	if err != nil {
		add(Error, "mta-sts-syntax", fmt.Sprintf("the record at %s is invalid: %s; senders ignore MTA-STS", name, err),
			fmt.Sprintf("publish %s TXT \"v=STSv1; id=20260101000000\" (id: 1 to 32 letters and digits, changed with each policy)", name))
		return rep, fs
	}
	rep.ID = id
	add(OK, "mta-sts-ok", fmt.Sprintf("MTA-STS record at %s, id=%s (the policy at https://mta-sts.%s/.well-known/mta-sts.txt is not fetched)", name, id, e.domain), "")
	return rep, fs
}

// versionedTXT returns the TXT records at name that begin with version
// (others are discarded, RFC 8461 §3.1, RFC 8460 §3); ok is false after a
// DNS failure, reported in fs.
func versionedTXT(ctx context.Context, e *env, check, prefix, name, version string) (recs []string, fs []Finding, ok bool) {
	txts, err := e.r.LookupTXT(ctx, name)
	if err != nil {
		if resolve.IsNotFound(err) {
			return nil, nil, true
		}
		return nil, []Finding{dnsFailure(check, prefix+"-dns-error", "", "TXT "+name, err)}, false
	}
	for _, t := range txts {
		if t == version || strings.HasPrefix(t, version+";") || strings.HasPrefix(t, version+" ") || strings.HasPrefix(t, version+"\t") {
			recs = append(recs, t)
		}
	}
	return recs, nil, true
}

// parseSTSRecord checks an MTA-STS TXT record (RFC 8461 §3.1) and returns
// its id:
//
//	sts-text-record = sts-version 1*(sts-field-delim sts-field) [sts-field-delim]
//	sts-field-delim = *WSP ";" *WSP
//	sts-id          = %s"id=" 1*32(ALPHA / DIGIT)
//	sts-ext-name    = (ALPHA / DIGIT) *31(ALPHA / DIGIT / "_" / "-" / ".")
//	sts-ext-value   = 1*(%x21-3A / %x3C / %x3E-7E)
func parseSTSRecord(txt string) (id string, err error) {
	fields, err := splitTXTFields(txt, "v=STSv1")
	if err != nil {
		return "", err
	}
	for _, f := range fields {
		name, value, _ := strings.Cut(f, "=")
		if name == "id" {
			if id != "" {
				return "", fmt.Errorf("id= given twice")
			}
			if len(value) < 1 || len(value) > 32 || !isAlnum(value) {
				return "", fmt.Errorf("id=%q must be 1 to 32 letters and digits", clipText(value))
			}
			id = value
			continue
		}
		if !isExtName(name) || !isExtValue(value, "=;") {
			return "", fmt.Errorf("invalid field %q", clipText(f))
		}
	}
	if id == "" {
		return "", fmt.Errorf("no id= field")
	}
	return id, nil
}

// splitTXTFields checks that txt begins with version and returns the
// name=value fields after it, split at ";" with white space trimmed.
func splitTXTFields(txt, version string) ([]string, error) {
	parts := strings.Split(txt, ";")
	if parts[0] != version && strings.TrimRight(parts[0], " \t") != version {
		return nil, fmt.Errorf("it must begin with %q", version)
	}
	var fields []string
	for i, p := range parts[1:] {
		p = strings.Trim(p, " \t")
		if p == "" {
			if i == len(parts)-2 {
				break // an optional final delimiter
			}
			return nil, fmt.Errorf("empty field")
		}
		if !strings.Contains(p, "=") {
			return nil, fmt.Errorf("field %q has no '='", clipText(p))
		}
		fields = append(fields, p)
	}
	if len(fields) == 0 {
		return nil, fmt.Errorf("no field after %s", version)
	}
	return fields, nil
}

func isAlnum(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// isExtName matches (ALPHA / DIGIT) *31(ALPHA / DIGIT / "_" / "-" / "."),
// the extension names of RFC 8461 §3.1 and RFC 8460 §3.
func isExtName(s string) bool {
	if s == "" || len(s) > 32 || !isAlnum(s[:1]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		if c := s[i]; !isAlnum(string(c)) && c != '_' && c != '-' && c != '.' {
			return false
		}
	}
	return true
}

// isExtValue matches 1*(%x21-7E) without the bytes of forbidden.
func isExtValue(s, forbidden string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x21 || c > 0x7e || strings.IndexByte(forbidden, c) >= 0 {
			return false
		}
	}
	return true
}
