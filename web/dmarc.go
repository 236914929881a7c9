package web

import (
	"context"
	"errors"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/authmilter/authmilter/keys"
	"github.com/authmilter/authmilter/reports"
)

func itoa(n int) string { return strconv.Itoa(n) }

// The DMARC pages' sides.
const (
	// sideReceived: reports other receivers sent about our domains.
	sideReceived = "received"
	// sideRecorded: our own inbound mail, by sending domain.
	sideRecorded = "recorded"
)

// DMARC page bounds.
const (
	// maxSources is the most sending addresses listed for a domain.
	maxSources = 50
	// maxOrgs is the most reporting organisations charted for a domain.
	maxOrgs = 20
)

// shares are the parts of a domain's messages aligned by DKIM, by SPF and
// by neither (0..1). JSON: dkim_share, spf_share, neither_share.
type shares struct {
	DKIMShare    float64 `json:"dkim_share"`
	SPFShare     float64 `json:"spf_share"`
	NeitherShare float64 `json:"neither_share"`
}

func sharesOf(t reports.Totals) shares {
	if t.Messages == 0 {
		return shares{}
	}
	m := float64(t.Messages)
	return shares{float64(t.DKIMAligned) / m, float64(t.SPFAligned) / m, float64(t.Neither) / m}
}

// dmarcDomainRow is one domain of /dmarc. JSON: domain, messages,
// dkim_aligned, spf_aligned, dmarc_pass, neither and the shares.
type dmarcDomainRow struct {
	reports.DomainTotals
	shares
}

// dmarcPage is /dmarc. JSON fields: side (received or recorded), days,
// since, until (RFC 3339; until excluded), q, page, per, total, pages,
// domains (see dmarcDomainRow).
type dmarcPage struct {
	Side    string           `json:"side"`
	Days    int              `json:"days"`
	Since   time.Time        `json:"since"`
	Until   time.Time        `json:"until"`
	Q       string           `json:"q"`
	Page    int              `json:"page"`
	Per     int              `json:"per"`
	Total   int              `json:"total"`
	Pages   int              `json:"pages"`
	Domains []dmarcDomainRow `json:"domains"`
	// Prev and Next link to the neighbouring pages ("" for none), Tabs
	// to the two sides.
	Prev, Next string `json:"-"`
	Tabs       []tab  `json:"-"`
}

// tab is a link to one side of a DMARC page.
type tab struct {
	Label, URL string
	Current    bool
}

// sideTabs are the links to both sides of path, with the days kept.
func sideTabs(path, current string, days int) []tab {
	mk := func(side, label string) tab {
		return tab{label, pageURL(path, map[string]string{"side": side, "days": daysParam(days)}, 1, defaultPer, defaultPer), side == current}
	}
	return []tab{mk(sideReceived, "Received reports: how our mail fared"), mk(sideRecorded, "Our inbound mail, by sending domain")}
}

// setLinks sets the links to the previous and next pages and the tabs.
func (p *dmarcPage) setLinks() {
	link := func(page int) string {
		return pageURL("/dmarc", map[string]string{"q": p.Q, "side": p.Side, "days": daysParam(p.Days)}, page, p.Per, defaultPer)
	}
	if p.Page > 1 {
		p.Prev = link(p.Page - 1)
	}
	if p.Page < p.Pages {
		p.Next = link(p.Page + 1)
	}
	p.Tabs = sideTabs("/dmarc", p.Side, p.Days)
}

// DomainURL links to a domain's page with the same side and days.
func (p dmarcPage) DomainURL(domain string) string {
	return pageURL("/dmarc/"+domain, map[string]string{"side": p.Side, "days": daysParam(p.Days)}, 1, defaultPer, defaultPer)
}

// daysParam is the days parameter of a link ("" for the default).
func daysParam(days int) string {
	if days == defaultDays {
		return ""
	}
	return itoa(days)
}

// dmarcOrg is one reporting organisation's view of a domain. JSON: org,
// totals, days.
type dmarcOrg struct {
	Org    string              `json:"org"`
	Totals reports.Totals      `json:"totals"`
	Days   []reports.DayTotals `json:"days"`
	Chart  svgChart            `json:"-"`
	ID     string              `json:"-"`
}

// dmarcDomainPage is /dmarc/{domain}. JSON fields: domain, side, days,
// since, until, totals, shares, per_day (every day of the period, oldest
// first), sources (the failing ones first), organisations (received
// only: at most 20, most messages first), keys_url.
type dmarcDomainPage struct {
	Domain  string                 `json:"domain"`
	Side    string                 `json:"side"`
	Days    int                    `json:"days"`
	Since   time.Time              `json:"since"`
	Until   time.Time              `json:"until"`
	Totals  reports.Totals         `json:"totals"`
	Shares  shares                 `json:"shares"`
	PerDay  []reports.DayTotals    `json:"per_day"`
	Sources []reports.SourceTotals `json:"sources"`
	Orgs    []dmarcOrg             `json:"organisations,omitempty"`
	KeysURL string                 `json:"keys_url"`
	Chart   svgChart               `json:"-"`
	Tabs    []tab                  `json:"-"`
}

// period returns the days parameter and the UTC days it covers, today
// included.
func (h *Handler) period(q query) (days int, since, until time.Time, err error) {
	if days, err = q.intParam("days", minDays, maxDays, defaultDays); err != nil {
		return 0, time.Time{}, time.Time{}, err
	}
	until = reports.DayOf(h.now()).AddDate(0, 0, 1)
	return days, until.AddDate(0, 0, -days), until, nil
}

// sideParam returns the side parameter ("" when absent).
func sideParam(q query) (string, error) {
	switch s := q.text("side"); s {
	case "", sideReceived, sideRecorded:
		return s, nil
	default:
		return "", badf("side must be received or recorded, got %q", clip(s))
	}
}

// storeErr turns an error of a store query into the DMARC pages' answer.
func (h *Handler) storeErr(r *http.Request, err error) error {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return err
	}
	if errors.Is(err, reports.ErrBadStatsQuery) {
		return badRequest{err.Error()}
	}
	h.log.Error("web: reports store", "path", clip(r.URL.EscapedPath()), "err", err)
	return storeDown{err.Error()}
}

// serveDMARC answers /dmarc.
func (h *Handler) serveDMARC(w http.ResponseWriter, r *http.Request, q query, f format) error {
	side, err := sideParam(q)
	if err != nil {
		return err
	}
	search, err := q.search()
	if err != nil {
		return err
	}
	page, per, err := q.paging()
	if err != nil {
		return err
	}
	days, since, until, err := h.period(q)
	if err != nil {
		return err
	}
	ctx := r.Context()
	st, err := h.store.get(ctx)
	if err != nil {
		return err
	}
	if side == "" {
		side = sideRecorded
		_, n, err := st.DomainTotals(ctx, reports.StatsQuery{Imported: true, Since: since, Until: until}, "", 0, 1)
		if err != nil {
			return h.storeErr(r, err)
		}
		if n > 0 {
			side = sideReceived
		}
	}
	sq := reports.StatsQuery{Imported: side == sideReceived, Since: since, Until: until}
	rows, total, err := st.DomainTotals(ctx, sq, search, (page-1)*per, per)
	if err != nil {
		return h.storeErr(r, err)
	}
	out := dmarcPage{Side: side, Days: days, Since: since, Until: until, Q: search, Page: page, Per: per,
		Total: total, Pages: pageCount(total, per), Domains: make([]dmarcDomainRow, 0, len(rows))}
	if page > out.Pages {
		return badf("page %d is past the last page (%d)", page, out.Pages)
	}
	out.setLinks()
	for _, row := range rows {
		out.Domains = append(out.Domains, dmarcDomainRow{row, sharesOf(row.Totals)})
	}
	return h.render(w, r, f, "dmarc", "DMARC results", out)
}

// serveDMARCDomain answers /dmarc/{domain}.
func (h *Handler) serveDMARCDomain(w http.ResponseWriter, r *http.Request, q query, f format, domain string) error {
	domain = strings.ToLower(strings.TrimSuffix(domain, "."))
	if !keys.ValidDomain(domain) {
		return notFound{"not a domain name: " + clip(domain)}
	}
	side, err := sideParam(q)
	if err != nil {
		return err
	}
	if side == "" {
		side = sideReceived
	}
	days, since, until, err := h.period(q)
	if err != nil {
		return err
	}
	ctx := r.Context()
	st, err := h.store.get(ctx)
	if err != nil {
		return err
	}
	sq := reports.StatsQuery{Imported: side == sideReceived, Domain: domain, Since: since, Until: until}
	perDay, err := st.DayTotals(ctx, sq)
	if err != nil {
		return h.storeErr(r, err)
	}
	sources, err := st.Sources(ctx, sq, maxSources)
	if err != nil {
		return h.storeErr(r, err)
	}
	if sources == nil {
		sources = []reports.SourceTotals{}
	}
	out := dmarcDomainPage{Domain: domain, Side: side, Days: days, Since: since, Until: until, Sources: sources,
		KeysURL: "/keys/" + domain, Tabs: sideTabs("/dmarc/"+domain, side, days)}
	byOrg := map[string]*dmarcOrg{}
	var orgs []*dmarcOrg
	sums := map[time.Time]reports.Totals{}
	for _, d := range perDay {
		addTotals(&out.Totals, d.Totals)
		t := sums[d.Day.UTC()]
		addTotals(&t, d.Totals)
		sums[d.Day.UTC()] = t
		if side == sideReceived {
			o := byOrg[d.Org]
			if o == nil {
				o = &dmarcOrg{Org: d.Org}
				byOrg[d.Org] = o
				orgs = append(orgs, o)
			}
			addTotals(&o.Totals, d.Totals)
			o.Days = append(o.Days, d)
		}
	}
	out.Shares = sharesOf(out.Totals)
	out.PerDay = everyDay(since, until, sums)
	out.Chart = stackedBars("chart-all", "Messages per day for "+domain+", by alignment", barsOf(out.PerDay))
	sort.SliceStable(orgs, func(i, j int) bool { return orgs[i].Totals.Messages > orgs[j].Totals.Messages })
	for i, o := range orgs[:min(len(orgs), maxOrgs)] {
		o.ID = "chart-org-" + itoa(i+1)
		days := map[time.Time]reports.Totals{}
		for _, d := range o.Days {
			days[d.Day.UTC()] = d.Totals
		}
		o.Days = everyDay(since, until, days)
		for j := range o.Days {
			o.Days[j].Org = o.Org
		}
		o.Chart = stackedBars(o.ID, "Messages per day for "+domain+" reported by "+orgName(o.Org), barsOf(o.Days))
		out.Orgs = append(out.Orgs, *o)
	}
	return h.render(w, r, f, "dmarcdomain", "DMARC results of "+domain, out)
}

// orgName shows an organisation, "" as "(unnamed)".
func orgName(s string) string {
	if s == "" {
		return "(unnamed)"
	}
	return s
}

func addTotals(t *reports.Totals, d reports.Totals) {
	t.Messages += d.Messages
	t.DKIMAligned += d.DKIMAligned
	t.SPFAligned += d.SPFAligned
	t.Pass += d.Pass
	t.Neither += d.Neither
}

// everyDay returns one DayTotals per day of [since, until), zero where
// sums has none.
func everyDay(since, until time.Time, sums map[time.Time]reports.Totals) []reports.DayTotals {
	var out []reports.DayTotals
	for d := since; d.Before(until); d = d.AddDate(0, 0, 1) {
		out = append(out, reports.DayTotals{Day: d, Totals: sums[d]})
	}
	return out
}

// barsOf makes the chart's bars of days: DKIM aligned, SPF aligned only
// (DMARC pass without DKIM), neither.
func barsOf(days []reports.DayTotals) []dayBar {
	out := make([]dayBar, 0, len(days))
	for _, d := range days {
		out = append(out, dayBar{Label: d.Day.UTC().Format("2006-01-02"), DKIM: d.DKIMAligned,
			SPFOnly: max(0, d.Pass-d.DKIMAligned), Neither: d.Neither})
	}
	return out
}
