package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/authmilter/authmilter/keys"
)

func cmdImportOpenDKIM(args []string) error { return importOpenDKIM(args, os.Stdout, os.Stderr) }

// importOpenDKIM turns an OpenDKIM KeyTable and SigningTable into keys in
// our key table and [[signing.rule]] entries. Everything is read and checked
// before anything is written, and the keys are written all or none. The
// rules go to stdout for the administrator to paste into the config; what
// is done, and every warning, goes to stderr.
func importOpenDKIM(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("import-opendkim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := configFlag(fs)
	keyTable := fs.String("keytable", "", "OpenDKIM KeyTable, as in opendkim.conf (file:PATH, refile:PATH or PATH)")
	signingTable := fs.String("signingtable", "", "OpenDKIM SigningTable, as in opendkim.conf (refile:PATH for wildcard patterns, file:PATH or PATH)")
	dryRun := fs.Bool("dry-run", false, "check everything and print what would be done, write nothing")
	force := fs.Bool("force", false, "import keys whose files other users could read or write, or whose KeyTable name,\n"+
		"folder or opendkim-genkey .txt record name another domain or selector (reported as warnings)")
	if err := fs.Parse(args); err != nil {
		return exitError(2)
	}
	if *keyTable == "" || *signingTable == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: authmilter import-opendkim -keytable FILE -signingtable FILE [-config FILE] [-dry-run] [-force]")
		return exitError(2)
	}
	cfg, _, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	plan, err := planOpenDKIMImport(cfg.Keys.Dir, *keyTable, *signingTable, *force)
	for _, w := range plan.warnings {
		fmt.Fprintf(stderr, "warning: %s\n", w)
	}
	if err != nil {
		return err
	}
	if *dryRun {
		for _, it := range plan.items {
			fmt.Fprintf(stderr, "would %s\n", plan.describe(it))
		}
		fmt.Fprintf(stderr, "dry run: nothing written; the signing rules it would print follow\n")
		_, err := io.WriteString(stdout, plan.rules)
		return err
	}
	var items []keys.ImportItem
	for _, it := range plan.items {
		items = append(items, it.ImportItem)
	}
	imported, err := keys.Import(cfg.Keys.Dir, items, time.Now())
	if err != nil {
		if imported == nil {
			return fmt.Errorf("%w; nothing imported", err)
		}
		return fmt.Errorf("%w; the keys are in place, run the import again to record them", err)
	}
	if os.Geteuid() == 0 {
		if fi, err := os.Stat(cfg.Keys.Dir); err == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Uid == 0 {
				fmt.Fprintf(stderr, "warning: %s belongs to root, and so do the copies: if the daemon runs as another user, give it the folder (chown -R USER: %s)\n", cfg.Keys.Dir, cfg.Keys.Dir)
			}
		}
	}
	copied := 0
	for _, it := range plan.items {
		fmt.Fprintf(stderr, "%s\n", plan.describe(it))
		if !it.present {
			copied++
		}
	}
	fmt.Fprintf(stderr, "copied %d keys into %s (%d were there already); the OpenDKIM files are left as they are.\n"+
		"The records OpenDKIM published stay in DNS: authmilter keys shows whether each matches its key.\n"+
		"Paste the signing rules printed on stdout into the config, then authmilter check.\n",
		copied, cfg.Keys.Dir, len(imported)-copied)
	_, err = io.WriteString(stdout, plan.rules)
	return err
}

// importItem is one key to copy, with where it comes from.
type importItem struct {
	keys.ImportItem
	// pos is the KeyTable line that names it.
	pos string
	// present: the same key is already in the table.
	present bool
}

// importPlan is everything import-opendkim will do.
type importPlan struct {
	dir      string
	items    []*importItem
	rules    string
	warnings []string
}

func (p *importPlan) describe(it *importItem) string {
	src := it.Key.Path
	if src == "" {
		src = "the key written in " + it.pos
	}
	target := filepath.Join(p.dir, it.Domain, it.Selector+".pem")
	kind := fmt.Sprintf("%s, %d bits", it.Key.Algorithm, it.Key.Bits)
	if it.Testing {
		kind += ", testing (t=y)"
	}
	if it.present {
		return fmt.Sprintf("keep %s/%s: %s already holds the key of %s (%s)", it.Domain, it.Selector, target, src, kind)
	}
	return fmt.Sprintf("copy %s/%s: %s -> %s (%s, mode 0600)", it.Domain, it.Selector, src, target, kind)
}

// planOpenDKIMImport reads and checks both tables and every key they name,
// and builds the rules. All problems are collected and returned together,
// each naming its file and line, so that one run shows everything to fix.
func planOpenDKIMImport(dir, keyTableSpec, signingTableSpec string, force bool) (*importPlan, error) {
	p := &importPlan{dir: dir}
	var problems []error
	problem := func(format string, a ...any) { problems = append(problems, fmt.Errorf(format, a...)) }
	// Problems that -force turns into warnings.
	forcible := func(format string, a ...any) {
		if force {
			p.warnings = append(p.warnings, fmt.Sprintf(format, a...))
		} else {
			problem(format+" (-force imports it anyway)", a...)
		}
	}

	kt, err := keys.ReadOpenDKIMTable(keyTableSpec)
	if kt == nil {
		return p, fmt.Errorf("KeyTable: %w", err)
	} else if err != nil {
		problems = append(problems, err)
	}
	st, err := keys.ReadOpenDKIMTable(signingTableSpec)
	if st == nil {
		return p, fmt.Errorf("SigningTable: %w", err)
	} else if err != nil {
		problems = append(problems, err)
	}
	if kt.Refile {
		p.warnings = append(p.warnings, fmt.Sprintf("%s: a refile: KeyTable is unusual; its key names are read literally", kt.Path))
	}
	entries, err := keys.ParseKeyTable(kt)
	if err != nil {
		problems = append(problems, err)
	}
	signing, err := keys.ParseSigningTable(st)
	if err != nil {
		problems = append(problems, err)
	}
	byName := map[string]*keys.KeyTableEntry{}
	for i := range entries {
		byName[entries[i].Name] = &entries[i]
	}

	// The keys to import: every entry with a literal domain, and entries
	// with the domain "%" once for each From domain that the SigningTable
	// names exactly for them.
	type want struct {
		e      *keys.KeyTableEntry
		domain string
	}
	var wants []want
	for i := range entries {
		if entries[i].Domain != "%" {
			wants = append(wants, want{&entries[i], entries[i].Domain})
		}
	}
	pctUsed := map[string]bool{}
	for _, s := range signing {
		e := byName[s.KeyName]
		if s.KeyName == "%" && s.Match.Kind == keys.MatchDomain {
			e = byName[s.Match.Domain]
			if e == nil {
				problem("%s: key name %% stands for the From domain, but the KeyTable has no entry named %q", s.Pos, s.Match.Domain)
				continue
			}
		}
		if s.KeyName != "%" && e == nil {
			problem("%s: key name %q is not in the KeyTable %s", s.Pos, s.KeyName, kt.Path)
			continue
		}
		if e != nil && e.Domain == "%" && s.Match.Kind == keys.MatchDomain {
			wants = append(wants, want{e, s.Match.Domain})
			pctUsed[e.Name] = true
		}
	}
	for i := range entries {
		if e := &entries[i]; e.Domain == "%" && !pctUsed[e.Name] {
			p.warnings = append(p.warnings, fmt.Sprintf("%s: key %q has the domain %%, the From domain of each message; it is imported only for the From domains that SigningTable lines name exactly (*@domain), and none does here", e.Pos, e.Name))
		}
	}

	// Read every key once, check it, and check its place in our table.
	sources := map[string]*keys.SourceKey{}
	seen := map[string]*importItem{}
	for _, w := range wants {
		sk, src, err := readImportSource(w.e, w.domain, sources)
		if err != nil {
			problem("%s: key %q: %v", w.e.Pos, w.e.Name, err)
			continue
		}
		if sk.Insecure != "" {
			forcible("%s: key %q: %s; the key may have been copied (consider a new key with authmilter keygen)", w.e.Pos, w.e.Name, sk.Insecure)
		}
		id := w.domain + "/" + w.e.Selector
		if prev := seen[id]; prev != nil {
			if !samePublic(prev.Key, sk) {
				problem("%s: key %q is %s, but %s already gives %s a different key", w.e.Pos, w.e.Name, id, prev.pos, id)
			}
			continue
		}
		if sk.Algorithm == keys.RSASHA256 && sk.Bits < 2048 {
			p.warnings = append(p.warnings, fmt.Sprintf("%s: key %q has %d bits: RFC 8301 permits it, 2048 are recommended; authmilter rotate replaces it by a 2048-bit key",
				w.e.Pos, w.e.Name, sk.Bits))
		}
		it := &importItem{ImportItem: keys.ImportItem{Domain: w.domain, Selector: w.e.Selector, Key: sk}, pos: w.e.Pos}
		checkNames(w.e, w.domain, src, forcible)
		if rec, txt := genkeyRecord(src); rec != nil {
			checkGenkeyRecord(w.e, w.domain, sk, rec, txt, forcible)
			if r, err := keys.ParseRecord(rec.Value); err == nil {
				for _, f := range r.Flags {
					it.Testing = it.Testing || f == "y"
				}
			}
		}
		status, err := keys.CheckImport(dir, it.ImportItem)
		if err != nil {
			problem("%s: key %q: %v", w.e.Pos, w.e.Name, err)
			continue
		}
		it.present = status == keys.ImportPresent
		seen[id] = it
		p.items = append(p.items, it)
	}
	p.warnings = append(p.warnings, newerThanExisting(dir, p.items)...)
	used := map[string]bool{}
	byDomainName := false // a "%" key name with a pattern: every entry named after its domain
	for _, s := range signing {
		used[s.KeyName] = true
		if s.KeyName == "%" && s.Match.Kind == keys.MatchDomain {
			used[s.Match.Domain] = true
		}
		byDomainName = byDomainName || s.KeyName == "%" && s.Match.Kind != keys.MatchDomain
	}
	for _, e := range entries {
		if !used[e.Name] && e.Domain != "%" && !(byDomainName && strings.EqualFold(e.Name, e.Domain)) {
			p.warnings = append(p.warnings, fmt.Sprintf("%s: key %q is used by no SigningTable line; it is imported, and signs only where a rule names its domain %s (or from = \"*\")", e.Pos, e.Name, e.Domain))
		}
	}

	p.rules = signingRules(st, signing, byName, p.items, dir)
	if len(problems) > 0 {
		return p, fmt.Errorf("nothing imported:\n%w", errors.Join(problems...))
	}
	return p, nil
}

// samePublic reports whether two source keys hold the same public key.
func samePublic(a, b *keys.SourceKey) bool {
	return keys.PublicKeyData(a.Signer.Public()) == keys.PublicKeyData(b.Signer.Public())
}

// readImportSource reads the key of a KeyTable entry for domain, from its
// file ("%" in the path replaced by the domain, as OpenDKIM does) or from
// the table itself. Each file is read once.
func readImportSource(e *keys.KeyTableEntry, domain string, cache map[string]*keys.SourceKey) (*keys.SourceKey, string, error) {
	if e.KeyFile == "" {
		sk, err := keys.DecodeInlineKey(e.KeyData)
		return sk, "", err
	}
	path := e.KeyFileFor(domain)
	if sk := cache[path]; sk != nil {
		return sk, path, nil
	}
	sk, err := keys.ReadSourceKey(path)
	if err != nil {
		return nil, path, err
	}
	cache[path] = sk
	return sk, path, nil
}

// checkNames reports an entry whose names contradict its domain and
// selector: a key name of the form selector._domainkey.domain (the usual
// convention) naming others, or a key file in a folder named after another
// domain (the usual layout is keys/<domain>/<selector>.private).
func checkNames(e *keys.KeyTableEntry, domain, src string, forcible func(string, ...any)) {
	if i := strings.Index(strings.ToLower(e.Name), "._domainkey."); i > 0 {
		ns, nd := strings.ToLower(e.Name[:i]), strings.ToLower(strings.TrimSuffix(e.Name[i+len("._domainkey."):], "."))
		if e.Domain != "%" && (ns != e.Selector || nd != domain) {
			forcible("%s: key name %q says %s/%s, the entry says %s/%s", e.Pos, e.Name, nd, ns, domain, e.Selector)
		}
	}
	if src == "" {
		return
	}
	if folder := strings.ToLower(filepath.Base(filepath.Dir(src))); strings.Contains(folder, ".") && keys.ValidDomain(folder) && folder != domain {
		forcible("%s: key %q for %s lies in a folder named after another domain (%s)", e.Pos, e.Name, domain, src)
	}
}

// genkeyRecord reads the record opendkim-genkey wrote beside a key
// (mail.txt beside mail.private), if there is one.
func genkeyRecord(src string) (*keys.GenkeyRecord, string) {
	base, ok := strings.CutSuffix(src, ".private")
	if !ok {
		return nil, ""
	}
	txt := base + ".txt"
	rec, err := keys.ReadGenkeyRecord(txt)
	if err != nil {
		return nil, txt
	}
	return rec, txt
}

// checkGenkeyRecord compares the key with the record opendkim-genkey wrote
// for it: another public key there means the .private file was replaced
// (or the .txt belongs to another key), and what is in DNS may be either.
func checkGenkeyRecord(e *keys.KeyTableEntry, domain string, sk *keys.SourceKey, rec *keys.GenkeyRecord, txt string,
	forcible func(string, ...any)) {
	if r, err := keys.ParseRecord(rec.Value); err == nil && r.PublicKey != keys.PublicKeyData(sk.Signer.Public()) {
		forcible("%s: key %q: %s holds the record of a different key; check which one is in DNS at %s._domainkey.%s", e.Pos, e.Name, txt, e.Selector, domain)
	}
	if rec.Selector != e.Selector || rec.Domain != "" && rec.Domain != domain {
		d := rec.Domain
		if d == "" {
			d = "?"
		}
		forcible("%s: key %q is %s/%s, but %s was made for %s/%s", e.Pos, e.Name, domain, e.Selector, txt, d, rec.Selector)
	}
}

// newerThanExisting warns about domains that already have other keys: an
// imported key counts as created now, so once its record is published it
// signs instead of them.
func newerThanExisting(dir string, items []*importItem) []string {
	var out []string
	done := map[string]bool{}
	for _, it := range items {
		if it.present || done[it.Domain] {
			continue
		}
		done[it.Domain] = true
		existing, err := keys.LoadDomain(dir, it.Domain)
		if err != nil || len(existing) == 0 {
			continue
		}
		var sels []string
		for _, k := range existing {
			sels = append(sels, k.Selector)
		}
		out = append(out, fmt.Sprintf("%s already has keys (%s); an imported key counts as created now, so it signs instead of the existing key of its algorithm as soon as its record is published (pin selectors with keys.pin to choose otherwise)",
			it.Domain, strings.Join(sels, ", ")))
	}
	return out
}

// rule is one [[signing.rule]] to print.
type rule struct {
	from       string
	subdomains bool
	domain     string
	selector   string
	pos        []string // file:line of the SigningTable lines it comes from
	lines      []string // those lines, with their position
	notes      []string
	match      keys.FromMatch
	keyID      string // domain/selector, "" when it follows the From domain
}

// signingRules converts the SigningTable into [[signing.rule]] TOML, with a
// comment for every line that cannot be converted and every place where the
// rule's meaning differs from OpenDKIM's.
func signingRules(st *keys.OpenDKIMTable, signing []keys.SigningTableEntry, byName map[string]*keys.KeyTableEntry, items []*importItem, dir string) string {
	var b strings.Builder
	kind := "file:"
	if st.Refile {
		kind = "refile:"
	}
	fmt.Fprintf(&b, "# [[signing.rule]] entries converted from the OpenDKIM SigningTable %s%s\n", kind, commentSafe(st.Path))
	b.WriteString("# by authmilter import-opendkim. Paste them into the config: they replace the\n" +
		"# built-in rule (from = \"*\": every From domain that has a key folder).\n" +
		"# authmilter adds one signature for every rule that matches a message;\n" +
		"# OpenDKIM signed with the first matching line only, unless MultipleSignatures was on.\n")

	// How many keys each d= domain will have: when it has only one, the
	// rule leaves the selector out, so that keys made later by rotate
	// take over; with several, the rule names the one OpenDKIM used.
	perDomain := map[string]map[string]bool{}
	add := func(d, s string) {
		if perDomain[d] == nil {
			perDomain[d] = map[string]bool{}
		}
		perDomain[d][s] = true
	}
	for _, it := range items {
		add(it.Domain, it.Selector)
	}
	for d := range perDomain {
		if ks, err := keys.LoadDomain(dir, d); err == nil {
			for _, k := range ks {
				add(d, k.Selector)
			}
		}
	}

	var rules []*rule
	for _, s := range signing {
		line := fmt.Sprintf("%s: %s %s", s.Pos, s.Pattern, s.KeyName)
		if s.Signer != "" {
			line += ":" + s.Signer
		}
		m := s.Match
		if m.Kind == keys.MatchNone || m.Kind == keys.MatchUser {
			rules = append(rules, &rule{pos: []string{s.Pos}, lines: []string{line}, notes: []string{"not converted: " + m.Note}, match: m})
			continue
		}
		r := &rule{pos: []string{s.Pos}, lines: []string{line}, match: m}
		if m.Approximate {
			r.notes = append(r.notes, m.Note)
		}
		switch m.Kind {
		case keys.MatchAny:
			r.from = "*"
		case keys.MatchDomain:
			r.from = m.Domain
		case keys.MatchSubdomains:
			r.from, r.subdomains = m.Domain, true
			r.notes = append(r.notes, fmt.Sprintf("also matches %s itself, which the OpenDKIM pattern did not", m.Domain))
		case keys.MatchTree:
			r.from, r.subdomains = m.Domain, true
		}
		e := byName[s.KeyName]
		if s.KeyName == "%" {
			if m.Kind == keys.MatchDomain {
				e = byName[m.Domain]
			} else {
				// The key named after each From domain: each domain's own keys.
				r.notes = append(r.notes, "key name %: OpenDKIM used the KeyTable entry named after each From domain; this rule signs each From domain with the keys in its own folder")
				rules = append(rules, r)
				continue
			}
		}
		if e == nil {
			rules = append(rules, &rule{pos: r.pos, lines: r.lines, notes: []string{"not converted: the key name is not in the KeyTable"}, match: m})
			continue
		}
		if s.Signer != "" {
			r.notes = append(r.notes, fmt.Sprintf("signer (i=) %q dropped: authmilter signs without i=", commentSafe(s.Signer)))
		}
		d := e.Domain
		if d == "%" {
			if m.Kind != keys.MatchDomain {
				rules = append(rules, &rule{pos: r.pos, lines: r.lines, match: m, notes: []string{fmt.Sprintf(
					"not converted: key %q (%s) has the domain %%, a key for each From domain, which cannot be imported for a pattern that names no single domain; "+
						"import each domain's key (authmilter keygen, or a KeyTable line per domain), then from = \"*\" signs every domain with its own keys", e.Name, e.Pos)}})
				continue
			}
			d = m.Domain
		}
		if d != r.from || r.subdomains || r.from == "*" {
			r.domain = d
		}
		r.keyID = d + "/" + e.Selector
		if len(perDomain[d]) > 1 {
			r.selector = e.Selector
		} else {
			r.notes = append(r.notes, fmt.Sprintf("selector %q left out: it is the only key of %s, so keys made later by rotate take over", e.Selector, d))
		}
		rules = append(rules, r)
	}
	rules = mergeRules(rules)
	noteOverlaps(rules)

	for _, r := range rules {
		b.WriteByte('\n')
		for _, l := range r.lines {
			fmt.Fprintf(&b, "# %s\n", commentSafe(l))
		}
		for _, n := range r.notes {
			fmt.Fprintf(&b, "#   %s\n", commentSafe(n))
		}
		if r.from == "" {
			continue
		}
		b.WriteString("[[signing.rule]]\n")
		fmt.Fprintf(&b, "from = %q\n", r.from)
		if r.subdomains {
			b.WriteString("subdomains = true\n")
		}
		if r.domain != "" {
			fmt.Fprintf(&b, "domain = %q\n", r.domain)
		}
		if r.selector != "" {
			fmt.Fprintf(&b, "selector = %q\n", r.selector)
		}
	}
	return b.String()
}

// mergeRules joins "*@example.com" and "*@*.example.com" lines that use the
// same key into one rule with subdomains = true: together they mean exactly
// that, and the note that the subdomain rule also matches the domain itself
// no longer applies.
func mergeRules(rules []*rule) []*rule {
	var out []*rule
	for _, r := range rules {
		merged := false
		if r.from != "" && r.from != "*" && r.keyID != "" {
			for _, o := range out {
				if o.from != r.from || o.keyID != r.keyID || o.selector != r.selector {
					continue
				}
				pair := o.match.Kind == keys.MatchDomain && r.match.Kind == keys.MatchSubdomains ||
					o.match.Kind == keys.MatchSubdomains && r.match.Kind == keys.MatchDomain
				if !pair {
					continue
				}
				o.pos = append(o.pos, r.pos...)
				o.lines = append(o.lines, r.lines...)
				o.subdomains = true
				o.match.Kind = keys.MatchTree
				o.notes = dropItself(append(o.notes, r.notes...), r.from)
				if o.domain == "" {
					o.domain = r.from
				}
				merged = true
				break
			}
		}
		if !merged {
			out = append(out, r)
		}
	}
	return out
}

// dropItself removes the "also matches D itself" note and duplicates.
func dropItself(notes []string, d string) []string {
	var out []string
	seen := map[string]bool{}
	for _, n := range notes {
		if seen[n] || strings.HasPrefix(n, "also matches "+d+" itself") {
			continue
		}
		seen[n] = true
		out = append(out, n)
	}
	return out
}

// overlap reports whether rule r matches some From domain that o matches.
func overlap(r, o *rule) bool {
	if r.from == "" || o.from == "" {
		return false
	}
	if r.from == "*" || o.from == "*" || r.from == o.from {
		return true
	}
	under := func(a, b *rule) bool { return b.subdomains && strings.HasSuffix(a.from, "."+b.from) }
	return under(r, o) || under(o, r)
}

// noteOverlaps marks rules that match mail an earlier rule matches too:
// such mail gets both signatures here.
func noteOverlaps(rules []*rule) {
	for i, r := range rules {
		var with []string
		for _, o := range rules[:i] {
			if overlap(r, o) && (r.keyID == "" || r.keyID != o.keyID) {
				for _, pos := range o.pos {
					// All lines are of one file: the line numbers say it.
					with = append(with, pos[strings.LastIndexByte(pos, ':')+1:])
				}
			}
		}
		switch len(with) {
		case 0:
		case 1:
			r.notes = append(r.notes, fmt.Sprintf("mail that also matches line %s gets a signature from each", with[0]))
		default:
			r.notes = append(r.notes, fmt.Sprintf("mail that also matches lines %s gets a signature from each", strings.Join(with, ", ")))
		}
	}
}

// commentSafe keeps text from the tables on one comment line.
func commentSafe(s string) string {
	return strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return '?'
		}
		return r
	}, s)
}
