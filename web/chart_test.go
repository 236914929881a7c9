package web

import (
	"encoding/xml"
	"io"
	"math"
	"strconv"
	"strings"
	"testing"
)

// svgElements parses an SVG as XML and returns its elements.
func svgElements(t *testing.T, svg string) []xml.StartElement {
	t.Helper()
	dec := xml.NewDecoder(strings.NewReader(svg))
	var out []xml.StartElement
	depth := 0
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("not well-formed XML: %v\n%s", err, svg)
		}
		switch e := tok.(type) {
		case xml.StartElement:
			depth++
			out = append(out, e)
		case xml.EndElement:
			depth--
		}
	}
	if depth != 0 {
		t.Fatalf("unbalanced elements")
	}
	return out
}

func attr(e xml.StartElement, name string) string {
	for _, a := range e.Attr {
		if a.Name.Local == name {
			return a.Value
		}
	}
	return ""
}

// TestStackedBars: the chart is well-formed XML with a title it is
// labelled by, and each bar's height is proportional to its value.
func TestStackedBars(t *testing.T) {
	bars := []dayBar{{"2026-12-01", 100, 20, 5}, {"2026-12-02", 50, 0, 50}, {"2026-12-03", 0, 0, 0}, {"2026-12-04", 10, 10, 10}}
	svg := string(stackedBars("c<1>", `Messages "per" day & <more>`, bars).SVG)
	els := svgElements(t, svg)
	root := els[0]
	if root.Name.Local != "svg" || attr(root, "role") != "img" || attr(root, "aria-labelledby") != "c<1>-title" {
		t.Fatalf("root %v", root)
	}
	var title bool
	var perUnit []float64
	for _, e := range els {
		if e.Name.Local == "title" && attr(e, "id") == "c<1>-title" {
			title = true
		}
		if e.Name.Local == "rect" && strings.HasPrefix(attr(e, "class"), "bar-") {
			h, _ := strconv.ParseFloat(attr(e, "height"), 64)
			v, _ := strconv.ParseFloat(attr(e, "data-value"), 64)
			perUnit = append(perUnit, h/v)
		}
	}
	if !title {
		t.Error("no title")
	}
	if len(perUnit) != 8 {
		t.Fatalf("%d bars, want 8", len(perUnit))
	}
	for _, r := range perUnit {
		if math.Abs(r-perUnit[0]) > 0.01 {
			t.Errorf("heights not proportional: %v", perUnit)
		}
	}
	// The tallest day fills the plot.
	if got := perUnit[0] * 125; math.Abs(got-plotH) > 0.1 {
		t.Errorf("tallest bar %v units, want %d", got, plotH)
	}
	if !strings.Contains(svg, "Messages &#34;per&#34; day &amp; &lt;more&gt;") {
		t.Errorf("title not escaped: %s", svg)
	}
	// No data at all still draws a labelled chart.
	empty := string(stackedBars("e", "empty", nil).SVG)
	svgElements(t, empty)
	if !strings.Contains(empty, "no messages") {
		t.Error("empty chart says nothing")
	}
}

// TestSparkline: well-formed, titled, the largest point at the top.
func TestSparkline(t *testing.T) {
	svg := string(sparkline("s", "Messages per minute", []float64{0, 5, 10, 5}).SVG)
	els := svgElements(t, svg)
	if attr(els[0], "role") != "img" || attr(els[0], "aria-labelledby") != "s-title" {
		t.Errorf("root %v", els[0])
	}
	var points string
	for _, e := range els {
		if e.Name.Local == "polyline" {
			points = attr(e, "points")
		}
	}
	pts := strings.Fields(points)
	if len(pts) != 4 || !strings.HasSuffix(pts[2], ","+fmtUnits(sparkP)) || !strings.HasSuffix(pts[0], ","+fmtUnits(sparkH-sparkP)) {
		t.Errorf("points %q", points)
	}
}
