package doctor

import "context"

// SPFReport is the SPF part of a report.
type SPFReport struct{}

// checkSPF checks the domain's SPF record, its include/redirect tree and
// each sending host's result.
func checkSPF(ctx context.Context, e *env) (*SPFReport, []Finding) {
	return nil, nil
}
