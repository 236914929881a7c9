package doctor

import "context"

// HostReport is one sending host of a report.
type HostReport struct{}

// checkHosts checks each sending host: reverse DNS, forward confirmation,
// SPF and the DMARC verdict for its mail.
func checkHosts(ctx context.Context, e *env, spf *SPFReport, dm *DMARCReport) ([]HostReport, []Finding) {
	return nil, nil
}
