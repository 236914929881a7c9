package keys

import (
	"context"
	"errors"
	"net"
	"sync"
)

// LastGood remembers the last successful answer to each TXT lookup made
// through it and gives it again when a later lookup of the same name fails
// temporarily. The daemon checks its keys' records at every reload and
// recheck; without this, a DNS outage at that moment would make every
// published key "temperror", hence unusable, and mail would go out
// unsigned. With it, a key stays usable until DNS answers otherwise: a
// definitive "no such record" (the record was removed) or a different
// record. A name never answered before still gives the temporary error.
//
// The zero value is ready to use; it is safe for concurrent use.
type LastGood struct {
	// Stale, if set, is called (without locks held) each time the last good
	// answer stands in for a failed lookup, for logging.
	Stale func(name string, err error)

	mu sync.Mutex
	m  map[string][]string
}

// Wrap returns a lookup that asks next and falls back to the last good
// answer on temporary failures.
func (l *LastGood) Wrap(next TXTLookup) TXTLookup {
	return func(ctx context.Context, name string) ([]string, error) {
		txts, err := next(ctx, name)
		l.mu.Lock()
		if err == nil {
			if l.m == nil {
				l.m = map[string][]string{}
			}
			l.m[name] = append([]string(nil), txts...)
			l.mu.Unlock()
			return txts, nil
		}
		var dnsErr *net.DNSError
		if errors.As(err, &dnsErr) && dnsErr.IsNotFound {
			delete(l.m, name)
			l.mu.Unlock()
			return nil, err
		}
		prev, ok := l.m[name]
		prev = append([]string(nil), prev...)
		l.mu.Unlock()
		if !ok {
			return nil, err
		}
		if l.Stale != nil {
			l.Stale(name, err)
		}
		return prev, nil
	}
}
