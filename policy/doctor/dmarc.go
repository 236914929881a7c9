package doctor

import "context"

// DMARCReport is the DMARC part of a report.
type DMARCReport struct{}

// checkDMARC checks the DMARC policy of the domain and its subdomains.
func checkDMARC(ctx context.Context, e *env) (*DMARCReport, []Finding) {
	return nil, nil
}
