package doctor

import "context"

// MXReport is the MX part of a report.
type MXReport struct{}

// MTASTSReport is the MTA-STS part of a report.
type MTASTSReport struct{}

// TLSRPTReport is the TLS reporting part of a report.
type TLSRPTReport struct{}

// checkMX checks the domain's MX records.
func checkMX(ctx context.Context, e *env) (*MXReport, []Finding) {
	return nil, nil
}

// checkMTASTS checks the _mta-sts record.
func checkMTASTS(ctx context.Context, e *env) (*MTASTSReport, []Finding) {
	return nil, nil
}

// checkTLSRPT checks the _smtp._tls record.
func checkTLSRPT(ctx context.Context, e *env) (*TLSRPTReport, []Finding) {
	return nil, nil
}
