package reports

import (
	"context"
	"errors"
)

// The Store doubles of the importer's and the Generator's tests never sum
// rows for the status pages: these give them StatsReader, failing.

var errStatsDoubleUnused = errors.New("test double: statistics not implemented")

func (m *importMemStore) DomainTotals(context.Context, StatsQuery, string, int, int) ([]DomainTotals, int, error) {
	return nil, 0, errStatsDoubleUnused
}

func (m *importMemStore) DayTotals(context.Context, StatsQuery) ([]DayTotals, error) {
	return nil, errStatsDoubleUnused
}

func (m *importMemStore) Sources(context.Context, StatsQuery, int) ([]SourceTotals, error) {
	return nil, errStatsDoubleUnused
}

func (s *sendFakeStore) DomainTotals(context.Context, StatsQuery, string, int, int) ([]DomainTotals, int, error) {
	return nil, 0, errStatsDoubleUnused
}

func (s *sendFakeStore) DayTotals(context.Context, StatsQuery) ([]DayTotals, error) {
	return nil, errStatsDoubleUnused
}

func (s *sendFakeStore) Sources(context.Context, StatsQuery, int) ([]SourceTotals, error) {
	return nil, errStatsDoubleUnused
}
