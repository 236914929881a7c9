package web

import (
	"fmt"
	"html"
	"html/template"
	"strconv"
	"strings"
)

// svgChart is an inline SVG made here: every text in it is escaped, so it
// is safe to put in a page as it is.
type svgChart struct{ SVG template.HTML }

// Chart colours: each has a contrast of at least 4.5:1 on white, and the
// series differ by pattern too (solid, diagonal hatch, cross hatch), and
// a legend names them, so that colour is never the only cue.
const (
	colourDKIM    = "#1f4e79" // dark blue, 8.9:1
	colourSPF     = "#0b6e4f" // dark green, 6.4:1
	colourNeither = "#a4262c" // dark red, 6.9:1
	colourText    = "#1a1a1a"
	colourAxis    = "#595959" // 7.0:1
)

// dayBar is one bar of a stacked bar chart: a day's messages aligned by
// DKIM, by SPF only, and by neither.
type dayBar struct {
	Label                  string
	DKIM, SPFOnly, Neither int64
}

// total is the bar's height in messages.
func (b dayBar) total() int64 { return b.DKIM + b.SPFOnly + b.Neither }

// Bar chart geometry, in SVG user units.
const (
	chartW, chartH         = 640, 240
	plotLeft, plotRight    = 56, 8
	plotTop, plotBottom    = 36, 28
	plotW                  = chartW - plotLeft - plotRight
	plotH                  = chartH - plotTop - plotBottom
	sparkW, sparkH, sparkP = 240, 40, 2
)

// fmtUnits formats an SVG length.
func fmtUnits(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) }

// stackedBars draws bars of messages per day, DKIM at the bottom, then SPF
// only, then neither; id must be unique in the page (it names the title
// and the patterns).
func stackedBars(id, title string, bars []dayBar) svgChart {
	var b strings.Builder
	esc := html.EscapeString
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 %d %d" role="img" aria-labelledby="%s-title">`, chartW, chartH, esc(id))
	fmt.Fprintf(&b, `<title id="%s-title">%s</title>`, esc(id), esc(title))
	fmt.Fprintf(&b, `<defs><pattern id="%s-hatch" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="6" height="6" fill="%s"/><line x1="0" y1="0" x2="0" y2="6" stroke="#ffffff" stroke-width="2"/></pattern>`, esc(id), colourSPF)
	fmt.Fprintf(&b, `<pattern id="%s-cross" width="6" height="6" patternUnits="userSpaceOnUse"><rect width="6" height="6" fill="%s"/><path d="M0 0L6 6M6 0L0 6" stroke="#ffffff" stroke-width="1"/></pattern></defs>`, esc(id), colourNeither)
	// Legend.
	legend := []struct{ fill, label string }{
		{colourDKIM, "DKIM aligned"}, {"url(#" + esc(id) + "-hatch)", "SPF aligned only"}, {"url(#" + esc(id) + "-cross)", "neither"}}
	for i, l := range legend {
		x := plotLeft + i*170
		fmt.Fprintf(&b, `<rect x="%d" y="8" width="14" height="14" fill="%s" stroke="%s"/><text x="%d" y="20" font-size="13" fill="%s">%s</text>`,
			x, l.fill, colourText, x+20, colourText, esc(l.label))
	}
	var top int64
	for _, bar := range bars {
		top = max(top, bar.total())
	}
	// Axes and the y labels (0 and the largest day).
	fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s"/>`, plotLeft, plotTop+plotH, plotLeft+plotW, plotTop+plotH, colourAxis)
	fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s"/>`, plotLeft, plotTop, plotLeft, plotTop+plotH, colourAxis)
	fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="12" text-anchor="end" fill="%s">0</text>`, plotLeft-6, plotTop+plotH+4, colourText)
	fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="12" text-anchor="end" fill="%s">%d</text>`, plotLeft-6, plotTop+4, colourText, top)
	if len(bars) > 0 && top > 0 {
		slot := float64(plotW) / float64(len(bars))
		width := max(slot*0.8, 1)
		scale := float64(plotH) / float64(top)
		every := max(1, (len(bars)+6)/7) // at most about 7 day labels
		for i, bar := range bars {
			x := float64(plotLeft) + float64(i)*slot + (slot-width)/2
			y := float64(plotTop + plotH)
			for _, part := range []struct {
				class, fill, name string
				v                 int64
			}{{"bar-dkim", colourDKIM, "DKIM aligned", bar.DKIM}, {"bar-spf", "url(#" + esc(id) + "-hatch)", "SPF aligned only", bar.SPFOnly},
				{"bar-neither", "url(#" + esc(id) + "-cross)", "neither", bar.Neither}} {
				if part.v <= 0 {
					continue
				}
				h := float64(part.v) * scale
				y -= h
				fmt.Fprintf(&b, `<rect class="%s" x="%s" y="%s" width="%s" height="%s" fill="%s" data-value="%d"><title>%s: %s %d</title></rect>`,
					part.class, fmtUnits(x), fmtUnits(y), fmtUnits(width), fmtUnits(h), part.fill, part.v, esc(bar.Label), part.name, part.v)
			}
			if i%every == 0 || i == len(bars)-1 {
				fmt.Fprintf(&b, `<text x="%s" y="%d" font-size="11" text-anchor="middle" fill="%s">%s</text>`,
					fmtUnits(x+width/2), chartH-10, colourText, esc(shortDay(bar.Label)))
			}
		}
	} else {
		fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="14" text-anchor="middle" fill="%s">no messages</text>`, plotLeft+plotW/2, plotTop+plotH/2, colourText)
	}
	b.WriteString(`</svg>`)
	return svgChart{template.HTML(b.String())} // #nosec: every text above is escaped
}

// shortDay shows "2026-12-06" as "12-06" under a bar.
func shortDay(s string) string {
	if len(s) == len("2006-01-02") {
		return s[5:]
	}
	return s
}

// sparkline draws points as a line, the largest at the top.
func sparkline(id, title string, points []float64) svgChart {
	var b strings.Builder
	esc := html.EscapeString
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" class="sparkline" viewBox="0 0 %d %d" role="img" aria-labelledby="%s-title">`, sparkW, sparkH, esc(id))
	var top float64
	for _, p := range points {
		top = max(top, p)
	}
	fmt.Fprintf(&b, `<title id="%s-title">%s (%d minutes, at most %s a minute)</title>`, esc(id), esc(title), len(points), strconv.FormatFloat(top, 'f', -1, 64))
	if len(points) > 1 {
		var pts []string
		for i, p := range points {
			x := sparkP + float64(i)*float64(sparkW-2*sparkP)/float64(len(points)-1)
			y := float64(sparkH - sparkP)
			if top > 0 {
				y -= p / top * float64(sparkH-2*sparkP)
			}
			pts = append(pts, fmtUnits(x)+","+fmtUnits(y))
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`, colourDKIM, strings.Join(pts, " "))
	} else {
		fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="13" fill="%s">no samples yet (one a minute)</text>`, sparkP, sparkH/2+4, colourText)
	}
	b.WriteString(`</svg>`)
	return svgChart{template.HTML(b.String())}
}
