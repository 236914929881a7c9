package doctor

import (
	"bufio"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// JSONVersion is the version of the -json document; it changes only when
// a field is renamed or removed, never when one is added.
const JSONVersion = 1

// checkOrder lists the checks in the order reports show them.
var checkOrder = []string{CheckDomain, CheckSPF, CheckDMARC, CheckDKIM, CheckHosts, CheckMX, CheckMTASTS, CheckTLSRPT}

// checkRank is the position of check in checkOrder; unknown checks go last.
func checkRank(check string) int {
	if i := slices.Index(checkOrder, check); i >= 0 {
		return i
	}
	return len(checkOrder)
}

// groupedFindings returns r's findings grouped by check in the order of
// the Check constants, keeping their order within a check.
func groupedFindings(r *Report) []Finding {
	fs := slices.Clone(r.Findings)
	slices.SortStableFunc(fs, func(a, b Finding) int { return checkRank(a.Check) - checkRank(b.Check) })
	return fs
}

// WriteText writes the readable report: per domain a heading with its
// status and counts, then each finding on a line ("  warn  dmarc   ..."),
// its fix on the next for those that are not ok, and the SPF include
// tree after the SPF findings. Text from DNS is printed with control
// characters escaped, so a hostile record cannot rewrite the terminal.
func WriteText(w io.Writer, reports []*Report) error {
	bw := bufio.NewWriter(w)
	for i, r := range reports {
		if i > 0 {
			bw.WriteString("\n")
		}
		writeTextReport(bw, r)
	}
	return bw.Flush()
}

// writeTextReport writes one domain's part of WriteText.
func writeTextReport(w *bufio.Writer, r *Report) {
	counts := map[Severity]int{}
	for _, f := range r.Findings {
		counts[f.Severity]++
	}
	fmt.Fprintf(w, "%s: %s (%d error%s, %d warning%s, %d ok)\n", textSafe(r.Domain), r.Status,
		counts[Error], plural(counts[Error]), counts[Warn], plural(counts[Warn]), counts[OK])
	fs := groupedFindings(r)
	for i, f := range fs {
		text := textSafe(f.Message)
		if f.Subject != "" {
			text = textSafe(f.Subject) + ": " + text
		}
		fmt.Fprintf(w, "  %-5s %-7s %s [%s]\n", f.Severity, f.Check, text, textSafe(f.Code))
		if f.Severity != OK && f.Fix != "" {
			fmt.Fprintf(w, "        fix: %s\n", textSafe(f.Fix))
		}
		lastSPF := f.Check == CheckSPF && (i+1 == len(fs) || fs[i+1].Check != CheckSPF)
		if lastSPF {
			writeSPFTree(w, r.SPF)
		}
	}
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// textSafe escapes what must not reach a terminal as it is: control
// characters (escape sequences, line breaks that would forge report
// lines) and invalid UTF-8, in Go's \x.. / \u.... notation.
func textSafe(s string) string {
	clean := true
	for _, c := range s {
		if c == utf8.RuneError || unicode.IsControl(c) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		c, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case c == utf8.RuneError && n <= 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case unicode.IsControl(c):
			q := strconv.QuoteRune(c)
			b.WriteString(q[1 : len(q)-1])
		default:
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

// jsonDocument is the whole -json output.
type jsonDocument struct {
	// Version is JSONVersion.
	Version int `json:"version"`
	// Domains are the reports in the order the domains were given.
	Domains []*Report `json:"domains"`
}

// WriteJSON writes {"version": 1, "domains": [Report...]}, indented, the
// fields in the order of the structs (the schema the README documents).
func WriteJSON(w io.Writer, reports []*Report) error {
	doc := jsonDocument{Version: JSONVersion, Domains: reports}
	if doc.Domains == nil {
		doc.Domains = []*Report{}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	// DNS text is shown as it is ("a->b", "<...>"), not as \u003e: the
	// document is for people and programs, never embedded in HTML.
	enc.SetEscapeHTML(false)
	if err := enc.Encode(doc); err != nil {
		return fmt.Errorf("doctor: write JSON: %w", err)
	}
	return nil
}

// csvHeader is the first row of WriteCSV.
var csvHeader = []string{"domain", "check", "severity", "code", "subject", "message", "fix"}

// WriteCSV writes one row per finding (domain, check, severity, code,
// subject, message, fix), after a header row, grouped as WriteText does.
// A field that a spreadsheet would take for a formula (it starts with =,
// +, -, @, tab or carriage return, and DNS text can) gets a leading
// apostrophe, as OWASP recommends against CSV injection.
func WriteCSV(w io.Writer, reports []*Report) error {
	cw := csv.NewWriter(w)
	if err := cw.Write(csvHeader); err != nil {
		return fmt.Errorf("doctor: write CSV: %w", err)
	}
	for _, r := range reports {
		for _, f := range groupedFindings(r) {
			row := []string{r.Domain, f.Check, f.Severity.String(), f.Code, f.Subject, f.Message, f.Fix}
			for i := range row {
				row[i] = csvSafe(row[i])
			}
			if err := cw.Write(row); err != nil {
				return fmt.Errorf("doctor: write CSV: %w", err)
			}
		}
	}
	cw.Flush()
	if err := cw.Error(); err != nil {
		return fmt.Errorf("doctor: write CSV: %w", err)
	}
	return nil
}

// csvSafe defuses a field a spreadsheet would evaluate as a formula.
func csvSafe(s string) string {
	if s != "" && strings.ContainsRune("=+-@\t\r", rune(s[0])) {
		return "'" + s
	}
	return s
}

// writeSPFTree writes the SPF include tree under the SPF findings: each
// include or redirect with the DNS lookups it adds (its own term and all
// below it), so an administrator sees which provider costs what.
func writeSPFTree(w *bufio.Writer, spf *SPFReport) {
	if spf == nil || spf.Tree == nil {
		return
	}
	fmt.Fprintf(w, "        spf tree: %d DNS lookup%s (limit %d), %d void (limit %d)\n",
		spf.Lookups, plural(spf.Lookups), spfLookupLimit, spf.VoidLookups, spfVoidLimit)
	writeSPFNode(w, spf.Tree, 0)
}

// spfTreeMaxDepth bounds the tree printed; the walk stops before it.
const spfTreeMaxDepth = 16

// writeSPFNode writes one record of the tree and its children.
func writeSPFNode(w *bufio.Writer, n *SPFNode, depth int) {
	if n == nil {
		return
	}
	indent := strings.Repeat("  ", depth+5)
	var line string
	if depth == 0 || n.Term == "" {
		line = fmt.Sprintf("%s: %d lookup%s in all", textSafe(n.Domain), n.Total, plural(n.Total))
	} else {
		adds := 1 + n.Total // the include or redirect itself, and what is under it
		line = fmt.Sprintf("%s: adds %d", textSafe(n.Term), adds)
	}
	if n.Void > 0 {
		line += fmt.Sprintf(", %d void", n.Void)
	}
	if n.Error != "" {
		line += ": " + textSafe(n.Error)
	}
	fmt.Fprintf(w, "%s%s\n", indent, line)
	if depth+1 >= spfTreeMaxDepth {
		if len(n.Children) > 0 {
			fmt.Fprintf(w, "%s  ...\n", indent)
		}
		return
	}
	for _, c := range n.Children {
		writeSPFNode(w, c, depth+1)
	}
}
