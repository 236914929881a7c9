package keys

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
)

// This file reads OpenDKIM's KeyTable and SigningTable the way OpenDKIM
// 2.11 reads them (opendkim/opendkim-db.c, "file" and "refile" data sets;
// opendkim.conf(5)), so that import-opendkim sees what OpenDKIM saw:
//
//   - a line is read with fgets into a 1024-byte buffer: longer lines would
//     be split by OpenDKIM into several lines, so we refuse them;
//   - '#' starts a comment anywhere on the line, also inside a word;
//   - there are no continuation lines: a line ending in '\' is taken as is;
//   - leading and trailing white space is dropped, blank lines are skipped;
//   - the key (pattern) is the first word, the value the rest of the line,
//     white space at its ends dropped;
//   - a value with several fields separates them with ':' and the last
//     field takes the rest (so a key path may contain ':').

// OpenDKIMMaxLine is the longest line OpenDKIM reads from a flat-file data
// set (its BUFRSZ, 1024, less the terminating NUL); a longer line is cut
// into pieces that OpenDKIM reads as separate lines.
const OpenDKIMMaxLine = 1023

// maxTableSize bounds what is read of a KeyTable or SigningTable: a
// provider's table of 100 000 domains is about 15 MB.
const maxTableSize = 64 << 20

// OpenDKIMLine is one entry of a flat-file data set.
type OpenDKIMLine struct {
	// Line is the line number, from 1.
	Line int
	// Key is the first word (a key name, a pattern).
	Key string
	// Value is the rest of the line ("" when there is none).
	Value string
}

// OpenDKIMTable is a flat-file OpenDKIM data set as read from disk.
type OpenDKIMTable struct {
	// Path is the file that was read.
	Path string
	// Refile is set for "refile:" data sets, whose keys are wildcard
	// patterns matched in file order.
	Refile bool
	// Lines are the entries, in file order.
	Lines []OpenDKIMLine
}

// Pos names line n of the table as "file:line" for messages.
func (t *OpenDKIMTable) Pos(n int) string { return fmt.Sprintf("%s:%d", t.Path, n) }

// ReadOpenDKIMTable reads a data set named as in opendkim.conf:
// "file:/path", "refile:/path" or a plain absolute or relative path (a
// file: data set). Other OpenDKIM data set types (db:, dsn:, ldap:, lua:,
// csl:, ...) are refused with a hint: export them to a flat file first.
// The file must be a regular file of at most 64 MiB. Bad lines are
// reported in the error, each with its file and line, and the table of the
// good lines is returned with it, so that a caller can report the problems
// of both tables at once; a file that cannot be read gives a nil table.
func ReadOpenDKIMTable(spec string) (*OpenDKIMTable, error) {
	t := &OpenDKIMTable{Path: spec}
	if typ, rest, ok := strings.Cut(spec, ":"); ok && !strings.ContainsAny(typ, "/.") {
		switch strings.ToLower(typ) {
		case "file":
			t.Path = rest
		case "refile":
			t.Path, t.Refile = rest, true
		default:
			return nil, fmt.Errorf("%s: OpenDKIM data sets of type %q cannot be imported; write the table to a flat file (file: or refile:) first", spec, typ)
		}
	}
	if t.Path == "" {
		return nil, fmt.Errorf("%q: no file name", spec)
	}
	data, _, err := readRegular(t.Path, maxTableSize)
	if err != nil {
		return nil, err
	}
	lines, err := parseOpenDKIMLines(t.Path, data)
	t.Lines = lines
	return t, err
}

// isSpace is C's isspace for ASCII, as OpenDKIM uses it.
func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'
}

// parseOpenDKIMLines splits a flat-file data set into entries; name is the
// file name for errors. Every bad line is reported, not only the first.
func parseOpenDKIMLines(name string, data []byte) ([]OpenDKIMLine, error) {
	var out []OpenDKIMLine
	var errs []error
	for n, line := range bytes.Split(data, []byte("\n")) {
		pos := fmt.Sprintf("%s:%d", name, n+1)
		if len(line) > OpenDKIMMaxLine {
			errs = append(errs, fmt.Errorf("%s: line is %d bytes long; OpenDKIM reads at most %d bytes at a time and would take the rest for another line", pos, len(line), OpenDKIMMaxLine))
			continue
		}
		if i := bytes.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		if i := bytes.IndexByte(line, 0); i >= 0 {
			errs = append(errs, fmt.Errorf("%s: NUL byte in line: not a text file", pos))
			continue
		}
		s := strings.TrimFunc(string(line), func(r rune) bool { return r < 0x80 && isSpace(byte(r)) })
		if s == "" {
			continue
		}
		i := strings.IndexFunc(s, func(r rune) bool { return r < 0x80 && isSpace(byte(r)) })
		if i < 0 {
			out = append(out, OpenDKIMLine{Line: n + 1, Key: s})
			continue
		}
		value := strings.TrimLeftFunc(s[i:], func(r rune) bool { return r < 0x80 && isSpace(byte(r)) })
		out = append(out, OpenDKIMLine{Line: n + 1, Key: s[:i], Value: value})
	}
	return out, errors.Join(errs...)
}

// KeyTableEntry is one line of an OpenDKIM KeyTable:
// "name domain:selector:keyfile".
type KeyTableEntry struct {
	// Pos is "file:line".
	Pos string
	// Name is the key name the SigningTable refers to.
	Name string
	// Domain is the d= (lower case), or "%": the From domain of each message.
	Domain string
	// Selector is the s= (lower case).
	Selector string
	// KeyFile is the private key's file, made absolute (a relative path is
	// taken relative to the KeyTable's folder). A "%" in it stands for the
	// domain, as in OpenDKIM. Empty when the key is written inline.
	KeyFile string
	// KeyData is a key written in the table itself (base64 DER or PEM),
	// when KeyFile is empty.
	KeyData string
}

// KeyFileFor returns the entry's key file for domain d ("%" replaced by d).
func (e *KeyTableEntry) KeyFileFor(d string) string {
	return strings.ReplaceAll(e.KeyFile, "%", d)
}

// ParseKeyTable reads the entries of a KeyTable. Every line is checked and
// every problem is reported, each naming its file and line: a value that is
// not domain:selector:key, a domain or selector that is not a DNS name (a
// path such as "../../etc" never becomes a file name), and key names
// defined twice (OpenDKIM silently uses the first).
func ParseKeyTable(t *OpenDKIMTable) ([]KeyTableEntry, error) {
	var out []KeyTableEntry
	var errs []error
	first := map[string]int{}
	for _, l := range t.Lines {
		pos := t.Pos(l.Line)
		if l.Value == "" {
			errs = append(errs, fmt.Errorf("%s: key %q has no value (want: name domain:selector:/path/to/key.private)", pos, l.Key))
			continue
		}
		if prev, dup := first[l.Key]; dup {
			errs = append(errs, fmt.Errorf("%s: key name %q is defined again (first at line %d; OpenDKIM uses only the first); remove one", pos, l.Key, prev))
			continue
		}
		first[l.Key] = l.Line
		parts := strings.SplitN(l.Value, ":", 3)
		if len(parts) != 3 {
			errs = append(errs, fmt.Errorf("%s: value %q of key %q is not domain:selector:keyfile", pos, l.Value, l.Key))
			continue
		}
		e := KeyTableEntry{Pos: pos, Name: l.Key}
		e.Domain = strings.ToLower(strings.TrimSuffix(parts[0], "."))
		e.Selector = strings.ToLower(parts[1])
		if e.Domain != "%" && !ValidDomain(e.Domain) {
			errs = append(errs, fmt.Errorf("%s: key %q: domain %q is not a domain name (use the A-label form for IDNs)", pos, l.Key, parts[0]))
			continue
		}
		if !ValidSelector(e.Selector) {
			errs = append(errs, fmt.Errorf("%s: key %q: selector %q is not a valid selector (letters, digits, '-', '_', dot-separated labels)", pos, l.Key, parts[1]))
			continue
		}
		key := parts[2]
		switch {
		case key == "":
			errs = append(errs, fmt.Errorf("%s: key %q has no key file", pos, l.Key))
			continue
		case strings.HasPrefix(key, "/"):
			e.KeyFile = filepath.Clean(key)
		case strings.HasPrefix(key, "./"), strings.HasPrefix(key, "../"):
			// OpenDKIM opens it relative to its working folder, which is
			// not known here; the KeyTable's folder is the likely meaning,
			// and the plan printed before anything is copied shows it.
			e.KeyFile = filepath.Join(filepath.Dir(t.Path), key)
			if abs, err := filepath.Abs(e.KeyFile); err == nil {
				e.KeyFile = abs
			}
		default:
			e.KeyData = key
		}
		out = append(out, e)
	}
	return out, errors.Join(errs...)
}

// SigningTableEntry is one line of an OpenDKIM SigningTable:
// "pattern keyname[:signer]".
type SigningTableEntry struct {
	// Pos is "file:line".
	Pos string
	// Pattern is the line's key as written.
	Pattern string
	// KeyName names a KeyTable entry; "%" means the entry named after the
	// From domain.
	KeyName string
	// Signer is the optional i= value (not supported by authmilter).
	Signer string
	// Match is what the pattern matches, in authmilter's terms.
	Match FromMatch
}

// MatchKind says which From addresses a SigningTable pattern matches.
type MatchKind int

// The kinds of SigningTable patterns.
const (
	// MatchNone: the pattern cannot be expressed as a From-domain rule
	// (see FromMatch.Note).
	MatchNone MatchKind = iota
	// MatchAny: every From address ("*").
	MatchAny
	// MatchDomain: every address at exactly Domain.
	MatchDomain
	// MatchSubdomains: every address at a subdomain of Domain, not at
	// Domain itself ("*@*.example.com", ".example.com").
	MatchSubdomains
	// MatchTree: every address at Domain or at a subdomain of it (a rule
	// with subdomains = true).
	MatchTree
	// MatchUser: one user, or some users, of Domain ("user@example.com");
	// Domain is "" for a user at any domain ("user@*").
	MatchUser
)

// FromMatch is a SigningTable pattern in authmilter's terms: rules select
// by From domain (and its subdomains), never by user.
type FromMatch struct {
	Kind MatchKind
	// Domain is the From domain (lower case) for MatchDomain,
	// MatchSubdomains, MatchTree and MatchUser.
	Domain string
	// Approximate is set when the rule matches a little more or less than
	// the pattern did; Note then says how.
	Approximate bool
	// Note explains a MatchNone, MatchUser or approximate match.
	Note string
}

// reMeta are the characters of a refile pattern that OpenDKIM leaves to
// regcomp(3) as regular-expression syntax (it escapes only '.' and '+'
// and turns '*' into ".*").
const reMeta = `?[](){}|^$\`

// ParseSigningTable reads the entries of a SigningTable and classifies
// each pattern (see ClassifyPattern). Lines without a key name are errors;
// patterns that cannot be expressed are not: they come back as MatchNone
// or MatchUser with a note, for the caller to report.
func ParseSigningTable(t *OpenDKIMTable) ([]SigningTableEntry, error) {
	var out []SigningTableEntry
	var errs []error
	for _, l := range t.Lines {
		pos := t.Pos(l.Line)
		if l.Value == "" {
			errs = append(errs, fmt.Errorf("%s: pattern %q has no key name (want: pattern keyname)", pos, l.Key))
			continue
		}
		name, signer, _ := strings.Cut(l.Value, ":")
		if name == "" {
			errs = append(errs, fmt.Errorf("%s: pattern %q has an empty key name", pos, l.Key))
			continue
		}
		out = append(out, SigningTableEntry{Pos: pos, Pattern: l.Key, KeyName: name, Signer: signer,
			Match: ClassifyPattern(l.Key, t.Refile)})
	}
	return out, errors.Join(errs...)
}

// ClassifyPattern says what a SigningTable key matches. In a refile table
// it is a wildcard pattern matched against the whole address
// ("*@example.com", "*@*.example.com", "*"); in a file table it is looked
// up as "user@host", "host", "user@.domain", ".domain", "user@*" and "*"
// (opendkim.conf(5), SigningTable).
func ClassifyPattern(p string, refile bool) FromMatch {
	p = strings.ToLower(p)
	for _, c := range []byte(p) {
		if c >= 0x80 || c < ' ' {
			return FromMatch{Note: "non-ASCII or control characters (OpenDKIM matches ASCII only; use A-labels)"}
		}
	}
	if refile {
		return classifyRefile(p)
	}
	return classifyFile(p)
}

func classifyFile(p string) FromMatch {
	const wildcard = "a wildcard pattern in a file: table matches no address (OpenDKIM looks keys up literally there); if OpenDKIM read this table as refile:, run again with -signingtable refile:FILE"
	if p == "*" {
		return FromMatch{Kind: MatchAny}
	}
	user, host, hasAt := strings.Cut(p, "@")
	if !hasAt {
		if d, ok := strings.CutPrefix(p, "."); ok && ValidDomain(d) {
			return FromMatch{Kind: MatchSubdomains, Domain: d}
		}
		if ValidDomain(p) {
			return FromMatch{Kind: MatchDomain, Domain: p}
		}
		if strings.Contains(p, "*") {
			return FromMatch{Note: wildcard}
		}
		return FromMatch{Note: "not a domain, .domain, user@domain, user@.domain, user@* or *"}
	}
	if user == "*" || host != "*" && strings.Contains(host, "*") {
		return FromMatch{Note: wildcard}
	}
	if user != "" {
		if host == "*" {
			return FromMatch{Kind: MatchUser, Note: perUser}
		}
		if d := strings.TrimPrefix(host, "."); ValidDomain(d) {
			return FromMatch{Kind: MatchUser, Domain: d, Note: perUser}
		}
	}
	return FromMatch{Note: "not a domain, .domain, user@domain, user@.domain, user@* or *"}
}

// perUser explains why per-user SigningTable entries are not converted.
const perUser = "a per-user entry: authmilter chooses keys by the From domain only, never by user"

func classifyRefile(p string) FromMatch {
	if strings.ContainsAny(p, reMeta) {
		return FromMatch{Note: "the pattern holds regular-expression characters (" + reMeta + "), which OpenDKIM passes to regcomp(3); only *, @ and domain names can be converted"}
	}
	if p == "*" || p == "*@*" {
		return FromMatch{Kind: MatchAny}
	}
	user, host, hasAt := strings.Cut(p, "@")
	if !hasAt {
		// The pattern is matched against the whole address, so its end
		// must reach across the '@'.
		switch {
		case strings.HasPrefix(p, "*.") && ValidDomain(p[2:]):
			// ^.*\.example\.com$: addresses at subdomains only.
			return FromMatch{Kind: MatchSubdomains, Domain: p[2:]}
		case strings.HasPrefix(p, "*") && ValidDomain(p[1:]):
			d := p[1:]
			return FromMatch{Kind: MatchTree, Domain: d, Approximate: true,
				Note: fmt.Sprintf("OpenDKIM's pattern matched every address ending in %q, also at other domains such as x%s; the rule matches %s and its subdomains only", d, d, d)}
		}
		return FromMatch{Note: "a refile pattern without '@' is matched against the whole address; only *, *@domain, *@*.domain and *.domain can be converted"}
	}
	if host == "*" && user != "*" {
		return FromMatch{Kind: MatchUser, Note: perUser}
	}
	sub := strings.HasPrefix(host, "*.")
	d := strings.TrimPrefix(host, "*.")
	if !ValidDomain(d) {
		if strings.Contains(d, "*") {
			return FromMatch{Note: "a wildcard inside the domain part; only *@domain and *@*.domain can be converted"}
		}
		return FromMatch{Note: fmt.Sprintf("%q is not a domain name", host)}
	}
	if user != "*" {
		return FromMatch{Kind: MatchUser, Domain: d, Note: perUser}
	}
	if sub {
		return FromMatch{Kind: MatchSubdomains, Domain: d}
	}
	return FromMatch{Kind: MatchDomain, Domain: d}
}

// GenkeyRecord is what opendkim-genkey wrote into a <selector>.txt file
// beside a key: the record and the names in its comment.
type GenkeyRecord struct {
	// Selector is the owner name's first label(s), before "._domainkey".
	Selector string
	// Domain is from the trailing comment "DKIM key S for D" ("" when absent).
	Domain string
	// Value is the TXT value, its quoted strings joined.
	Value string
}

var (
	genkeyStringRE  = regexp.MustCompile(`"((?:[^"\\]|\\.)*)"`)
	genkeyCommentRE = regexp.MustCompile(`DKIM key (\S+) for (\S+)`)
)

// ParseGenkeyRecord reads the zone file stub opendkim-genkey writes, e.g.
//
//	mail._domainkey	IN	TXT	( "v=DKIM1; h=sha256; k=rsa; "
//		  "p=MIIB..." )  ; ----- DKIM key mail for example.com
func ParseGenkeyRecord(data []byte) (*GenkeyRecord, error) {
	s := string(data)
	owner, _, _ := strings.Cut(strings.TrimSpace(s), "\t")
	owner, _, _ = strings.Cut(owner, " ")
	sel, ok := strings.CutSuffix(strings.ToLower(owner), "._domainkey")
	if !ok {
		// --append-domain writes mail._domainkey.example.com.
		if i := strings.Index(strings.ToLower(owner), "._domainkey."); i > 0 {
			sel = strings.ToLower(owner[:i])
		} else {
			return nil, fmt.Errorf("not an opendkim-genkey record: owner %q has no ._domainkey", owner)
		}
	}
	body, comment, _ := strings.Cut(s, ";  -----")
	if comment == "" {
		body, comment, _ = strings.Cut(s, "; -----")
	}
	var b strings.Builder
	for _, m := range genkeyStringRE.FindAllStringSubmatch(body, -1) {
		b.WriteString(strings.ReplaceAll(strings.ReplaceAll(m[1], `\"`, `"`), `\\`, `\`))
	}
	r := &GenkeyRecord{Selector: sel, Value: b.String()}
	if m := genkeyCommentRE.FindStringSubmatch(comment); m != nil {
		r.Domain = strings.ToLower(strings.TrimSuffix(m[2], "."))
		if strings.ToLower(m[1]) != sel {
			return nil, fmt.Errorf("owner says selector %q, comment says %q", sel, m[1])
		}
	}
	if r.Value == "" {
		return nil, errors.New("no quoted TXT data")
	}
	return r, nil
}

// ReadGenkeyRecord reads and parses an opendkim-genkey .txt file (see
// ParseGenkeyRecord); it is small, so at most 64 KiB are read.
func ReadGenkeyRecord(path string) (*GenkeyRecord, error) {
	data, _, err := readRegular(path, maxKeyFileSize)
	if err != nil {
		return nil, err
	}
	r, err := ParseGenkeyRecord(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return r, nil
}
