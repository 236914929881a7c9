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
	rec, fs, st := stsRecord.lookup(ctx, e, name)
	switch st {
	case recordDNSError:
		return nil, fs
	case recordNotOne:
		return &MTASTSReport{}, fs
	}
	rep := &MTASTSReport{Record: rec}
	id, err := parseSTSRecord(rec)
	if err != nil {
		fs = append(fs, stsRecord.invalid(name, err,
			fmt.Sprintf("publish %s TXT \"v=STSv1; id=20260101000000\" (id: 1 to 32 letters and digits, changed with each policy)", name)))
		return rep, fs
	}
	rep.ID = id
	fs = append(fs, Finding{Check: CheckMTASTS, Severity: OK, Code: "mta-sts-ok",
		Message: fmt.Sprintf("MTA-STS record at %s, id=%s (the policy at https://mta-sts.%s/.well-known/mta-sts.txt is not fetched)", name, id, e.domain)})
	return rep, fs
}

// stsRecord is the _mta-sts record: RFC 8461 §3.1 has senders assume
// there is no policy unless exactly one valid record is published.
var stsRecord = versionedRecord{check: CheckMTASTS, prefix: "mta-sts", version: "v=STSv1",
	absent: "no MTA-STS policy (optional)", ignored: "senders ignore MTA-STS"}

// versionedRecord is a TXT record that counts only when it is the one
// record of its version at its name (MTA-STS, TLS reporting).
type versionedRecord struct {
	check, prefix, version string
	// absent says what no record means; ignored what senders do when
	// there are several or the one is invalid.
	absent, ignored string
}

// recordState is what versionedRecord.lookup found.
type recordState int

const (
	recordOne      recordState = iota // exactly one record
	recordNotOne                      // none or several, reported
	recordDNSError                    // no answer, reported
)

// lookup returns the one record of v's version at name. Other TXT records
// there are discarded (RFC 8461 §3.1, RFC 8460 §3). Without exactly one,
// fs says why: none is ok (both are optional), several is an error.
func (v versionedRecord) lookup(ctx context.Context, e *env, name string) (rec string, fs []Finding, st recordState) {
	txts, err := e.r.LookupTXT(ctx, name)
	if err != nil && !resolve.IsNotFound(err) {
		return "", []Finding{dnsFailure(v.check, v.prefix+"-dns-error", "", "TXT "+name, err)}, recordDNSError
	}
	var recs []string
	for _, t := range txts {
		if t == v.version || strings.HasPrefix(t, v.version+";") || strings.HasPrefix(t, v.version+" ") || strings.HasPrefix(t, v.version+"\t") {
			recs = append(recs, t)
		}
	}
	switch len(recs) {
	case 1:
		return recs[0], nil, recordOne
	case 0:
		return "", []Finding{{Check: v.check, Severity: OK, Code: v.prefix + "-absent",
			Message: fmt.Sprintf("%s: no %s record at %s", v.absent, v.version, name)}}, recordNotOne
	}
	return "", []Finding{{Check: v.check, Severity: Error, Code: v.prefix + "-multiple",
		Message: fmt.Sprintf("%d %s records at %s: %s", len(recs), v.version, name, v.ignored),
		Fix:     "keep exactly one record at " + name}}, recordNotOne
}

// invalid is the finding for the one record at name when it does not
// parse.
func (v versionedRecord) invalid(name string, err error, fix string) Finding {
	return Finding{Check: v.check, Severity: Error, Code: v.prefix + "-syntax",
		Message: fmt.Sprintf("the record at %s is invalid: %s; %s", name, err, v.ignored), Fix: fix}
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
