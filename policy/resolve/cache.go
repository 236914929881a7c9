package resolve

import (
	"container/list"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// cacheKey identifies a question: the canonical (lowercase, fully qualified)
// name and the type.
type cacheKey struct {
	name  string
	qtype uint16
}

// answer is the outcome of resolving a question, after CNAMEs: records, or a
// negative answer. Temporary failures are never answers.
type answer struct {
	rrs      []dns.RR // records of the asked type at the end of the CNAME chain; read-only
	nxdomain bool     // negative answer: the (last) name does not exist; else NODATA
	server   string   // the server that gave the (last) answer
}

// cacheEntry is one cached answer.
type cacheEntry struct {
	key     cacheKey
	ans     answer
	expires time.Time
}

// cache is a bounded least-recently-used cache of answers. A nil *cache
// caches nothing.
type cache struct {
	mu    sync.Mutex
	max   int
	order *list.List // of *cacheEntry, most recently used first
	items map[cacheKey]*list.Element
}

func newCache(size int) *cache {
	if size <= 0 {
		return nil
	}
	return &cache{max: size, order: list.New(), items: make(map[cacheKey]*list.Element)}
}

// get returns the answer for k if it is cached and has not expired at now.
func (c *cache) get(k cacheKey, now time.Time) (answer, bool) {
	if c == nil {
		return answer{}, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[k]
	if !ok {
		return answer{}, false
	}
	e := el.Value.(*cacheEntry)
	if !now.Before(e.expires) {
		c.order.Remove(el)
		delete(c.items, k)
		return answer{}, false
	}
	c.order.MoveToFront(el)
	return e.ans, true
}

// put caches ans for k until expires, evicting the least recently used
// entry when the cache is full.
func (c *cache) put(k cacheKey, ans answer, expires time.Time) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[k]; ok {
		e := el.Value.(*cacheEntry)
		e.ans, e.expires = ans, expires
		c.order.MoveToFront(el)
		return
	}
	for c.order.Len() >= c.max {
		oldest := c.order.Back()
		c.order.Remove(oldest)
		delete(c.items, oldest.Value.(*cacheEntry).key)
	}
	c.items[k] = c.order.PushFront(&cacheEntry{key: k, ans: ans, expires: expires})
}

// len returns the number of entries, expired ones included.
func (c *cache) len() int {
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}
