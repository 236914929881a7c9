package web

import (
	"net/http"
	"strings"

	"github.com/authmilter/authmilter/keys"
)

// keysPage is /keys: one page of domains with their keys. JSON fields:
// page, per, total (domains matching the filters), pages, q, state,
// keys_total (keys in the table), domains (see domainKeys).
type keysPage struct {
	Page      int          `json:"page"`
	Per       int          `json:"per"`
	Total     int          `json:"total"`
	Pages     int          `json:"pages"`
	Q         string       `json:"q"`
	State     string       `json:"state"`
	KeysTotal int          `json:"keys_total"`
	Domains   []domainKeys `json:"domains"`
	// States lists the state filter's values, for the form; Prev and
	// Next link to the neighbouring pages ("" for none).
	States     []string `json:"-"`
	Prev, Next string   `json:"-"`
}

// setLinks sets the links to the previous and next pages.
func (p *keysPage) setLinks() {
	link := func(page int) string {
		return pageURL("/keys", map[string]string{"q": p.Q, "state": p.State}, page, p.Per, defaultPer)
	}
	if p.Page > 1 {
		p.Prev = link(p.Page - 1)
	}
	if p.Page < p.Pages {
		p.Next = link(p.Page + 1)
	}
}

// listKeys makes one page of /keys. Without filters the page is a slice of
// the table's domains; with filters every domain is matched (a substring
// test, and the state of its keys: no allocation) but only the page's
// domains get rows.
func (v keyView) listKeys(search, state string, page, per int) (keysPage, error) {
	all := v.src.Domains()
	out := keysPage{Page: page, Per: per, Q: search, State: state, KeysTotal: v.src.KeyCount(), States: keyStates}
	first := (page - 1) * per
	var names []string
	if search == "" && state == "" {
		out.Total = len(all)
		if first < len(all) {
			names = all[first:min(first+per, len(all))]
		}
	} else {
		for _, d := range all {
			if !v.matches(d, search, state) {
				continue
			}
			if out.Total >= first && out.Total < first+per {
				names = append(names, d)
			}
			out.Total++
		}
	}
	out.Pages = pageCount(out.Total, per)
	if page > out.Pages {
		return out, badf("page %d is past the last page (%d)", page, out.Pages)
	}
	out.setLinks()
	out.Domains = make([]domainKeys, 0, len(names))
	for _, d := range names {
		out.Domains = append(out.Domains, v.domain(d, false))
	}
	return out, nil
}

// serveKeys answers /keys.
func (h *Handler) serveKeys(w http.ResponseWriter, r *http.Request, q query, f format) error {
	search, err := q.search()
	if err != nil {
		return err
	}
	state, err := q.stateFilter()
	if err != nil {
		return err
	}
	page, per, err := q.paging()
	if err != nil {
		return err
	}
	v, err := h.keyView(r)
	if err != nil {
		return err
	}
	data, err := v.listKeys(search, state, page, per)
	if err != nil {
		return err
	}
	return h.render(w, r, f, "keys", "Keys", data)
}

// serveDomainKeys answers /keys/{domain}.
func (h *Handler) serveDomainKeys(w http.ResponseWriter, r *http.Request, f format, domain string) error {
	domain = strings.ToLower(strings.TrimSuffix(domain, "."))
	v, err := h.keyView(r)
	if err != nil {
		return err
	}
	if !keys.ValidDomain(domain) || (len(v.src.Keys(domain)) == 0 && (h.opt.Keys == nil || len(h.opt.Keys.Retired(domain)) == 0)) {
		return notFound{"the key table has no domain " + clip(domain)}
	}
	data := v.domain(domain, true)
	return h.render(w, r, f, "domainkeys", "Keys of "+domain, data)
}

// errStarting answers the keys pages while the daemon has no snapshot
// yet (it listens before its first one is built).
var errStarting = httpError{http.StatusServiceUnavailable, "The daemon is starting: its key table is not loaded yet; try again in a few seconds"}

// keyView returns the keys pages' view of the current snapshot
// (errStarting before the first).
func (h *Handler) keyView(r *http.Request) (keyView, error) {
	src := h.source()
	if src == nil {
		return keyView{}, errStarting
	}
	return keyView{src: src, details: h.opt.Keys, now: h.now(), stateErr: func(err error) {
		h.log.Warn("web: keys page", "path", r.URL.EscapedPath(), "err", err)
	}}, nil
}
