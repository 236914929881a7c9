package reports

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// Defaults of ImportLimits, for its zero fields.
const (
	DefaultMaxInputBytes = 32 << 20
	DefaultMaxXMLBytes   = 64 << 20
	DefaultMaxZipEntries = 16
	DefaultMaxRecords    = 200000
	DefaultMaxDepth      = 32
)

// ImportLimits bound what one input may cost. Zero fields take the defaults.
type ImportLimits struct {
	// MaxInputBytes bounds the bytes read from one file or stdin
	// (default 32 MiB); the whole input is held in memory.
	MaxInputBytes int64
	// MaxXMLBytes bounds the bytes of one decompressed XML document
	// (default 64 MiB): decompression stops there (gzip bombs).
	MaxXMLBytes int64
	// MaxZipEntries bounds the entries of a zip archive (default 16).
	MaxZipEntries int
	// MaxRecords bounds the records of one report (default 200000).
	MaxRecords int
	// MaxDepth bounds the nesting of XML elements (default 32; a report
	// needs 5).
	MaxDepth int
}

// withDefaults returns l with its zero (or negative) fields set to the
// defaults.
func (l ImportLimits) withDefaults() ImportLimits {
	if l.MaxInputBytes <= 0 {
		l.MaxInputBytes = DefaultMaxInputBytes
	}
	if l.MaxXMLBytes <= 0 {
		l.MaxXMLBytes = DefaultMaxXMLBytes
	}
	if l.MaxZipEntries <= 0 {
		l.MaxZipEntries = DefaultMaxZipEntries
	}
	if l.MaxRecords <= 0 {
		l.MaxRecords = DefaultMaxRecords
	}
	if l.MaxDepth <= 0 {
		l.MaxDepth = DefaultMaxDepth
	}
	return l
}

// ParseReports reads one input as receivers send reports: a bare XML
// document, gzip (.xml.gz, or gzip detected by magic bytes), zip (.zip,
// each .xml entry a report), or a whole mail message (RFC 5322, MIME; its
// attachments of those types), detected by content, not by name; name
// only labels errors. It returns every report or an error saying why the
// input is refused; a refused input yields no reports at all (nothing
// partial).
//
// Both formats are read: RFC 7489 (no namespace, pct) and RFC 9990
// (namespace urn:ietf:params:xml:ns:dmarc-2.0, discovery_method, np,
// testing). Elements are matched by local name, unknown ones (extensions,
// generator, pct) are skipped, text is trimmed, its control characters
// replaced and cut at 512 bytes. Domain names are lowercased without a
// trailing dot; rows get Domain = Policy.Domain and Day = the UTC day of
// Begin.
func ParseReports(r io.Reader, name string, lim ImportLimits) ([]*Feedback, error) {
	lim = lim.withDefaults()
	data, err := readInput(r, lim.MaxInputBytes)
	if err != nil {
		return nil, fmt.Errorf("reports: %s: %w", name, err)
	}
	out, err := parseInput(data, lim)
	if err != nil {
		return nil, fmt.Errorf("reports: %s: %w", name, err)
	}
	return out, nil
}

// readInput reads all of r, refusing more than max bytes.
func readInput(r io.Reader, max int64) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, max+1))
	if err != nil {
		return nil, fmt.Errorf("read: %w", err)
	}
	if int64(len(data)) > max {
		return nil, fmt.Errorf("input is larger than %d bytes (the import limit)", max)
	}
	return data, nil
}

// parseInput parses a whole input held in memory.
func parseInput(data []byte, lim ImportLimits) ([]*Feedback, error) {
	u := &unpacker{lim: lim}
	if err := u.input(data); err != nil {
		return nil, err
	}
	if len(u.out) == 0 {
		return nil, errors.New("no DMARC aggregate report found")
	}
	return u.out, nil
}

// ImportResult counts what an import did.
type ImportResult struct {
	// Files is the number of inputs read (stdin counts as one).
	Files int
	// Reports is the number of reports stored, Duplicates the number
	// already in the store (same org name and report_id).
	Reports, Duplicates int
	// Refused is the number of inputs refused; Errors says why, one
	// "file: reason" each.
	Refused int
	Errors  []string
}

// Import walks path (a file, a folder — regular files only, no symlinks
// followed out of it — or "-" for stdin), parses each input and stores
// each report with Store.Import; a refused file is counted and reported
// and the others continue. The error is for what stops the import: path
// cannot be read, the store fails, or ctx ends.
func Import(ctx context.Context, s Store, path string, stdin io.Reader, lim ImportLimits) (ImportResult, error) {
	lim = lim.withDefaults()
	var res ImportResult
	if path == "-" {
		err := importOne(ctx, s, "stdin", func() ([]byte, error) { return readInput(stdin, lim.MaxInputBytes) }, lim, &res)
		return res, err
	}
	st, err := os.Stat(path)
	if err != nil {
		return res, fmt.Errorf("reports: import: %w", err)
	}
	if !st.IsDir() {
		// A file named on the command line is read even through a symlink:
		// the user chose it.
		read := func() ([]byte, error) {
			return readRegular(func() (*os.File, error) {
				return os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
			}, lim.MaxInputBytes)
		}
		err = importOne(ctx, s, path, read, lim, &res)
		return res, err
	}
	return res, importDir(ctx, s, path, lim, &res)
}

// importDir imports every regular file under dir, in lexical order. Files
// are opened through an os.Root, so that a symlink swapped in after the
// walk cannot lead out of dir; symlinks themselves are refused.
func importDir(ctx context.Context, s Store, dir string, lim ImportLimits, res *ImportResult) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return fmt.Errorf("reports: import: %w", err)
	}
	defer root.Close()
	return fs.WalkDir(root.FS(), ".", func(rel string, d fs.DirEntry, err error) error {
		name := filepath.Join(dir, rel)
		if err != nil {
			if rel == "." {
				return fmt.Errorf("reports: import: %w", err)
			}
			// An unreadable subfolder is refused; the walk goes on.
			res.Files++
			res.Refused++
			res.Errors = append(res.Errors, name+": "+err.Error())
			return nil
		}
		if d.IsDir() {
			return nil
		}
		if !d.Type().IsRegular() {
			res.Files++
			res.Refused++
			res.Errors = append(res.Errors, name+": not a regular file (symlinks are not followed)")
			return nil
		}
		read := func() ([]byte, error) {
			return readRegular(func() (*os.File, error) {
				return root.OpenFile(rel, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOFOLLOW, 0)
			}, lim.MaxInputBytes)
		}
		return importOne(ctx, s, name, read, lim, res)
	})
}

// readRegular reads the file that open opens, refusing anything but a
// regular file and more than max bytes. Openers pass O_NONBLOCK, so that a
// FIFO does not block the open.
func readRegular(open func() (*os.File, error), max int64) ([]byte, error) {
	f, err := open()
	if err != nil {
		return nil, fmt.Errorf("open: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, errors.New("not a regular file")
	}
	if st.Size() > max {
		return nil, fmt.Errorf("input is larger than %d bytes (the import limit)", max)
	}
	return readInput(f, max)
}

// importOne reads one input with read, parses it and stores its reports,
// counting into res. A refused input is counted; only ctx's end and store
// failures are returned.
func importOne(ctx context.Context, s Store, name string, read func() ([]byte, error), lim ImportLimits, res *ImportResult) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("reports: import: %w", err)
	}
	res.Files++
	data, err := read()
	var out []*Feedback
	if err == nil {
		out, err = parseInput(data, lim)
	}
	if err != nil {
		res.Refused++
		res.Errors = append(res.Errors, name+": "+err.Error())
		return nil
	}
	for _, f := range out {
		added, err := s.Import(ctx, f)
		if err != nil {
			return fmt.Errorf("reports: import %s: report %q of %q: %w", name, f.ReportID, f.OrgName, err)
		}
		if added {
			res.Reports++
		} else {
			res.Duplicates++
		}
	}
	return nil
}

// sniffKind is what an input looks like, from its first bytes.
type sniffKind int

const (
	kindUnknown sniffKind = iota
	kindEmpty
	kindXML
	kindHTML
	kindGzip
	kindZip
	kindMail
	kindUTF16
)

// sniff classifies the start of an input.
func sniff(head []byte) sniffKind {
	switch {
	case bytes.HasPrefix(head, []byte{0x1f, 0x8b}):
		return kindGzip
	case bytes.HasPrefix(head, []byte("PK\x03\x04")), bytes.HasPrefix(head, []byte("PK\x05\x06")):
		return kindZip
	case bytes.HasPrefix(head, []byte{0xfe, 0xff}), bytes.HasPrefix(head, []byte{0xff, 0xfe}):
		return kindUTF16
	}
	text := bytes.TrimLeft(bytes.TrimPrefix(head, utf8BOM), " \t\r\n")
	switch {
	case len(text) == 0:
		return kindEmpty
	case hasPrefixFold(text, "<!doctype html"), hasPrefixFold(text, "<html"):
		return kindHTML
	case text[0] == '<':
		return kindXML
	case looksLikeMail(head):
		return kindMail
	}
	return kindUnknown
}

// utf8BOM is the byte order mark some receivers put before the XML.
var utf8BOM = []byte{0xef, 0xbb, 0xbf}

// hasPrefixFold reports whether b starts with the ASCII prefix, ignoring
// case.
func hasPrefixFold(b []byte, prefix string) bool {
	return len(b) >= len(prefix) && bytes.EqualFold(b[:len(prefix)], []byte(prefix))
}

// looksLikeMail reports whether head starts like an RFC 5322 message: a
// header field name and a colon (or an mbox "From " line).
func looksLikeMail(head []byte) bool {
	if bytes.HasPrefix(head, []byte("From ")) {
		return true
	}
	for i, c := range head {
		switch {
		case c == ':':
			return i > 0
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_':
		default:
			return false
		}
	}
	return false
}
