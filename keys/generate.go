package keys

import (
	"bufio"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Algorithms lists the algo values Generate accepts, for usage texts.
// rsa-1024 is allowed (RFC 8301 §3.2 permits 1024 bits) for DNS hosting
// forms that cannot hold a longer TXT value, but not recommended: such keys
// can be factored at a cost within reach of a determined attacker.
const Algorithms = "rsa-2048, rsa-3072, rsa-4096, ed25519 or rsa-1024 (not recommended)"

// maxSequence bounds the letters SelectorScheme.Next tries after a date.
const maxSequence = 100

// NextSelector returns the selector of the default date scheme for a new
// key of algo made at t: SelectorScheme{Suffix: suffix}.Next. newest is
// accepted for callers that still pass it; keys are ordered by creation
// time, not by name, so it does not constrain the answer.
func NextSelector(t time.Time, algo, suffix string, taken []string, newest string) (string, error) {
	return SelectorScheme{Suffix: suffix}.Next(t, algo, taken, nil, newest)
}

// nextTag returns the letter sequence after tag: "" → "b" → ... → "z" →
// "zb" → ... → "zz" → "zzb". Each value sorts after the one before.
func nextTag(tag string) string {
	if tag == "" {
		return "b"
	}
	if last := tag[len(tag)-1]; last < 'z' {
		return tag[:len(tag)-1] + string(last+1)
	}
	return tag + "b"
}

// Generate makes a new key and writes it as <dir>/<domain>/<selector>.pem
// (PKCS#8, mode 0600). It refuses to overwrite an existing key. The file
// appears atomically (written under a temporary name that the key table
// ignores, then linked into place), so a daemon reloading at the same moment
// never reads half a key.
func Generate(dir, domain, selector, algo string) (*Key, error) {
	domain = strings.ToLower(strings.TrimSuffix(domain, "."))
	if !ValidDomain(domain) {
		return nil, fmt.Errorf("keys: %q is not a domain name (use the A-label form for IDNs)", domain)
	}
	if !ValidSelector(selector) {
		return nil, fmt.Errorf("keys: %q is not a valid selector", selector)
	}
	selector = strings.ToLower(selector)
	var signer crypto.Signer
	var err error
	switch algo {
	case "rsa-1024":
		signer, err = rsa.GenerateKey(rand.Reader, 1024)
	case "rsa-2048", "rsa":
		signer, err = rsa.GenerateKey(rand.Reader, 2048)
	case "rsa-3072":
		signer, err = rsa.GenerateKey(rand.Reader, 3072)
	case "rsa-4096":
		signer, err = rsa.GenerateKey(rand.Reader, 4096)
	case "ed25519":
		_, signer, err = ed25519.GenerateKey(rand.Reader)
	default:
		return nil, fmt.Errorf("keys: unknown algorithm %q (%s)", algo, Algorithms)
	}
	if err != nil {
		return nil, fmt.Errorf("keys: %s/%s: generate %s: %w", domain, selector, algo, err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(signer)
	if err != nil {
		return nil, fmt.Errorf("keys: %s/%s: encode: %w", domain, selector, err)
	}
	ddir := filepath.Join(dir, domain)
	if err := os.MkdirAll(ddir, 0o700); err != nil {
		return nil, fmt.Errorf("keys: %s/%s: %w", domain, selector, err)
	}
	path := filepath.Join(ddir, selector+".pem")
	if _, err := os.Lstat(path); err == nil {
		return nil, fmt.Errorf("keys: %s already exists; choose another selector", path)
	}
	data := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	if err := writeNew(path, data, 0o600); err != nil {
		return nil, fmt.Errorf("keys: %s/%s: %w", domain, selector, err)
	}
	return LoadKey(path, domain, selector)
}

// errExists is returned by writeNew when path exists.
var errExists = errors.New("already exists; choose another selector")

// writeNew creates path with data and mode, atomically and never replacing
// an existing file: the data goes to a temporary file in the same folder
// whose name starts with a dot (the key table skips it), is synced, and is
// hard-linked to path.
func writeNew(path string, data []byte, mode os.FileMode) error {
	tmp, err := tempFile(filepath.Dir(path), "."+filepath.Base(path), mode)
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", tmp.Name(), err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", tmp.Name(), err)
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("%s %w", path, errExists)
		}
		return fmt.Errorf("create %s: %w", path, err)
	}
	syncDir(filepath.Dir(path))
	return nil
}

// writeReplace writes path atomically, replacing it if it exists.
func writeReplace(path string, data []byte, mode os.FileMode) error {
	return writeReplaceWith(path, mode, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// writeReplaceWith is writeReplace with the content written by write,
// through a buffer (a large file is never held in memory whole).
func writeReplaceWith(path string, mode os.FileMode, write func(w io.Writer) error) error {
	tmp, err := tempFile(filepath.Dir(path), "."+filepath.Base(path), mode)
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	bw := bufio.NewWriterSize(tmp, 64<<10)
	werr := write(bw)
	if werr == nil {
		werr = bw.Flush()
	}
	if werr == nil {
		werr = tmp.Sync()
	}
	if cerr := tmp.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return fmt.Errorf("write %s: %w", tmp.Name(), werr)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	syncDir(filepath.Dir(path))
	return nil
}

// tempFile creates dir/prefix.tmp-RANDOM with mode.
func tempFile(dir, prefix string, mode os.FileMode) (*os.File, error) {
	var rnd [6]byte
	for range 10 {
		if _, err := rand.Read(rnd[:]); err != nil {
			return nil, err
		}
		name := filepath.Join(dir, prefix+".tmp-"+hex.EncodeToString(rnd[:]))
		f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
		if errors.Is(err, os.ErrExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		return f, nil
	}
	return nil, fmt.Errorf("create temporary file in %s: too many collisions", dir)
}

// syncDir makes a rename or link in dir durable; errors are ignored (not
// every file system supports syncing a directory).
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}

// GenAlgorithm returns the Generate algorithm that makes a key like k: the
// same type, and for RSA the same size rounded up to 2048, 3072 or 4096 bits
// (keys under 2048 bits are replaced by 2048-bit ones, RFC 8301 §3.2).
func GenAlgorithm(k *Key) string {
	if k.Algorithm == Ed25519SHA256 {
		return "ed25519"
	}
	switch {
	case k.Bits > 3072:
		return "rsa-4096"
	case k.Bits > 2048:
		return "rsa-3072"
	}
	return "rsa-2048"
}

// AlgorithmOf returns the DKIM algorithm of a Generate algorithm name.
func AlgorithmOf(genAlgo string) Algorithm {
	if genAlgo == "ed25519" {
		return Ed25519SHA256
	}
	return RSASHA256
}

// RecordStrings splits a TXT value into character-strings of at most 255
// bytes (RFC 1035 §3.3.14), in order.
func RecordStrings(value string) []string {
	var out []string
	for len(value) > 0 {
		n := min(len(value), 255)
		out = append(out, value[:n])
		value = value[n:]
	}
	return out
}

// quoteStrings formats character-strings for zone files and nsupdate. The
// values we make hold only base64 and "v=DKIM1; k=...; p=", but quotes
// and backslashes are escaped anyway (RFC 1035 §5.1).
func quoteStrings(parts []string) string {
	var b strings.Builder
	for i, p := range parts {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteByte('"')
		for _, c := range []byte(p) {
			switch {
			case c == '"' || c == '\\':
				b.WriteByte('\\')
				b.WriteByte(c)
			case c < ' ' || c > '~':
				fmt.Fprintf(&b, "\\%03d", c)
			default:
				b.WriteByte(c)
			}
		}
		b.WriteByte('"')
	}
	return b.String()
}

// ZoneRecord formats k's record for a zone file, the TXT data split into
// quoted strings of at most 255 bytes (RFC 1035 §3.3.14), e.g.
//
//	2026-11._domainkey.example.com. IN TXT ( "v=DKIM1; k=rsa; p=MIIB..." "..." )
func ZoneRecord(k *Key) string {
	return fmt.Sprintf("%s.\tIN\tTXT\t( %s )\n", RecordName(k.Domain, k.Selector), quoteStrings(RecordStrings(FormatRecord(k))))
}

// NSUpdateScript returns an nsupdate(1) script that replaces the TXT
// records at k's record name with k's record, e.g.
//
//	server 192.0.2.53 53          (when server is not empty)
//	zone example.com.             (when zone is not empty)
//	update delete 2026-11._domainkey.example.com. TXT
//	update add 2026-11._domainkey.example.com. 3600 IN TXT "v=DKIM1; k=rsa; p=..." "..."
//	send
//
// Without a zone line, nsupdate finds the zone itself. Run it with
// `nsupdate -y hmac-sha256:NAME:SECRET script` or `nsupdate -k keyfile`.
func NSUpdateScript(k *Key, ttl int, server, zone string) string {
	var b strings.Builder
	if server != "" {
		host, port := server, ""
		if i := strings.LastIndexByte(server, ':'); i > 0 && !strings.HasSuffix(server, "]") {
			host, port = strings.Trim(server[:i], "[]"), server[i+1:]
		}
		fmt.Fprintf(&b, "server %s", host)
		if port != "" {
			fmt.Fprintf(&b, " %s", port)
		}
		b.WriteByte('\n')
	}
	if zone != "" {
		fmt.Fprintf(&b, "zone %s.\n", strings.TrimSuffix(zone, "."))
	}
	name := RecordName(k.Domain, k.Selector) + "."
	fmt.Fprintf(&b, "update delete %s TXT\n", name)
	fmt.Fprintf(&b, "update add %s %d IN TXT %s\n", name, ttl, quoteStrings(RecordStrings(FormatRecord(k))))
	b.WriteString("send\n")
	return b.String()
}
