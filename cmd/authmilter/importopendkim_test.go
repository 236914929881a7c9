package main

import (
	"bytes"
	"context"
	"encoding/pem"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/authmilter/authmilter/keys"
	"github.com/authmilter/authmilter/policy"
)

func importF(args []string, o, e *bytes.Buffer) error { return importOpenDKIM(args, o, e) }

// needTool fails the test when a program it needs is missing, naming the
// Debian package to install.
func needTool(t *testing.T, path, pkg string) string {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("%s not found (%v); install it with: apt-get install %s", path, err, pkg)
	}
	return path
}

func runIn(t *testing.T, dir, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// odkFixture is an OpenDKIM installation: keys made by opendkim-genkey and
// openssl as an administrator would have made them, and the KeyTable and
// SigningTables of testdata/opendkim pointing at them.
type odkFixture struct {
	keys         string // the OpenDKIM key folder (/etc/opendkim/keys)
	keyTable     string
	signingTable string // refile:
	signingFile  string // file:
	keysDir      string // our keys.dir (not created)
	cfg          string // a config with keys.dir = keysDir
}

// makeODKKeys makes the keys of an OpenDKIM installation in dir/<domain>/.
func makeODKKeys(t *testing.T, dir string) {
	t.Helper()
	genkey := needTool(t, "/usr/sbin/opendkim-genkey", "opendkim-tools")
	openssl := needTool(t, "/usr/bin/openssl", "openssl")
	for _, d := range []string{"example.com", "example.org", "esp.example", "example.net", "example.info"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o750); err != nil {
			t.Fatal(err)
		}
	}
	runIn(t, filepath.Join(dir, "example.com"), genkey, "-d", "example.com", "-s", "mail")
	runIn(t, filepath.Join(dir, "example.org"), genkey, "-d", "example.org", "-s", "default", "-t")
	runIn(t, filepath.Join(dir, "esp.example"), genkey, "-d", "esp.example", "-s", "s1024_acme", "-b", "1024")
	runIn(t, filepath.Join(dir, "esp.example"), openssl, "genrsa", "-traditional", "-out", "fbl.private", "2048")
	runIn(t, filepath.Join(dir, "example.net"), openssl, "genpkey", "-algorithm", "ed25519", "-out", "ed.pem")
	runIn(t, filepath.Join(dir, "example.info"), genkey, "-d", "example.info", "-s", "default")
	// opendkim-genkey writes 0600; openssl follows the umask.
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			os.Chmod(p, 0o600)
		}
		return nil
	})
}

// newODKFixture makes an OpenDKIM installation with fresh keys.
func newODKFixture(t *testing.T) *odkFixture {
	t.Helper()
	keysDir := filepath.Join(t.TempDir(), "keys")
	makeODKKeys(t, keysDir)
	return cloneODKFixture(t, keysDir)
}

// cloneODKFixture makes an OpenDKIM installation with copies of the keys
// in keysDir (making RSA keys takes a while; each case of a table test
// changes its own copy).
func cloneODKFixture(t *testing.T, keysDir string) *odkFixture {
	t.Helper()
	tmp := t.TempDir()
	f := &odkFixture{keys: filepath.Join(tmp, "opendkim", "keys"), keysDir: filepath.Join(tmp, "authmilter", "keys")}
	err := filepath.WalkDir(keysDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(keysDir, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(f.keys, rel), 0o750)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(f.keys, rel), data, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(tmp, "opendkim")
	for _, name := range []string{"KeyTable", "SigningTable", "SigningTable.file"} {
		data, err := os.ReadFile(filepath.Join("..", "..", "testdata", "opendkim", name))
		if err != nil {
			t.Fatal(err)
		}
		data = bytes.ReplaceAll(data, []byte("/KEYS/"), []byte(f.keys+"/"))
		if err := os.WriteFile(filepath.Join(conf, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	f.keyTable = filepath.Join(conf, "KeyTable")
	f.signingTable = "refile:" + filepath.Join(conf, "SigningTable")
	f.signingFile = "file:" + filepath.Join(conf, "SigningTable.file")
	f.cfg = filepath.Join(tmp, "authmilter.toml")
	if err := os.WriteFile(f.cfg, []byte(fmt.Sprintf("[keys]\ndir = %q\n", f.keysDir)), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *odkFixture) args(extra ...string) []string {
	return append([]string{"-config", f.cfg, "-keytable", f.keyTable, "-signingtable", f.signingTable}, extra...)
}

// pemFiles lists the .pem files under dir.
func pemFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && strings.HasSuffix(p, ".pem") {
			out = append(out, p)
		}
		return nil
	})
	return out
}

// signingKeys compiles the config made of keysDir and the printed rules
// and returns, per From domain, the keys a message gets.
func signingKeys(t *testing.T, keysDir, rules string, froms []string) map[string]string {
	t.Helper()
	conf := fmt.Sprintf("[keys]\ndir = %q\nrequire_published = false\n%s", keysDir, rules)
	cfg, err := policy.ParseConfig("rules.toml", []byte(conf))
	if err != nil {
		t.Fatalf("the printed rules are not a valid config: %v\n%s", err, rules)
	}
	pol, err := policy.Compile(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, from := range froms {
		var ids []string
		for _, k := range pol.SigningKeys(from) {
			ids = append(ids, k.ID())
		}
		out[from] = strings.Join(ids, " ")
	}
	return out
}

// TestImportOpenDKIM imports a provider's OpenDKIM tables (refile: and
// file: forms) and checks the keys, their state and what the printed
// rules sign: with MultipleSignatures, what OpenDKIM signed.
func TestImportOpenDKIM(t *testing.T) {
	f := newODKFixture(t)
	want := map[string]string{
		"example.com":     "example.com/mail esp.example/fbl",
		"sub.example.com": "example.com/mail esp.example/fbl",
		"example.org":     "example.org/default esp.example/fbl",
		"example.net":     "example.net/ed esp.example/fbl",
		"acme.example":    "esp.example/s1024_acme esp.example/fbl",
		"example.info":    "example.info/default esp.example/fbl",
		"other.test":      "esp.example/fbl",
	}
	var froms []string
	for from := range want {
		froms = append(froms, from)
	}

	// A dry run writes nothing and says what it would do.
	stdout, stderr, err := run(importF, f.args("-dry-run")...)
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	if n := strings.Count(stderr, "would copy "); n != 6 {
		t.Errorf("dry run announces %d copies, want 6:\n%s", n, stderr)
	}
	if _, err := os.Stat(f.keysDir); !os.IsNotExist(err) {
		t.Fatalf("dry run wrote %s: %v", f.keysDir, err)
	}
	dryRules := stdout

	stdout, stderr, err = run(importF, f.args()...)
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	if stdout != dryRules {
		t.Errorf("the dry run printed other rules:\n%s\nthan the import:\n%s", dryRules, stdout)
	}
	for _, w := range []string{
		"copied 6 keys into " + f.keysDir + " (0 were there already)",
		"example.org/default: " + filepath.Join(f.keys, "example.org", "default.private") + " -> " + filepath.Join(f.keysDir, "example.org", "default.pem") + " (rsa-sha256, 2048 bits, testing (t=y), mode 0600)",
		`key "acme" has 1024 bits: RFC 8301 permits it`,
	} {
		if !strings.Contains(stderr, w) {
			t.Errorf("stderr lacks %q:\n%s", w, stderr)
		}
	}
	for _, w := range []string{
		"\n# " + f.signingTable[len("refile:"):] + ":6: *@example.org default._domainkey.example.org\n",
		":7: bob@example.org default._domainkey.example.org\n#   not converted: a per-user entry",
		"[[signing.rule]]\nfrom = \"example.com\"\nsubdomains = true\ndomain = \"example.com\"\n",
		"[[signing.rule]]\nfrom = \"acme.example\"\ndomain = \"esp.example\"\nselector = \"s1024_acme\"\n",
		"[[signing.rule]]\nfrom = \"*\"\ndomain = \"esp.example\"\nselector = \"fbl\"\n",
	} {
		if !strings.Contains(stdout, w) {
			t.Errorf("rules lack %q:\n%s", w, stdout)
		}
	}
	if got := signingKeys(t, f.keysDir, stdout, froms); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("the rules sign\n%v\nwant\n%v\nrules:\n%s", got, want, stdout)
	}

	// Each key is a byte-for-byte copy of the source key's PEM block, mode
	// 0600; the source is still there.
	for _, c := range []struct{ src, dst string }{
		{"example.com/mail.private", "example.com/mail.pem"},
		{"esp.example/fbl.private", "esp.example/fbl.pem"},
		{"example.net/ed.pem", "example.net/ed.pem"},
		{"example.info/default.private", "example.info/default.pem"},
	} {
		src, err := os.ReadFile(filepath.Join(f.keys, c.src))
		if err != nil {
			t.Fatalf("source gone: %v", err)
		}
		dst, err := os.ReadFile(filepath.Join(f.keysDir, c.dst))
		if err != nil {
			t.Fatal(err)
		}
		sb, _ := pem.Decode(src)
		db, _ := pem.Decode(dst)
		if sb == nil || db == nil || sb.Type != db.Type || !bytes.Equal(sb.Bytes, db.Bytes) {
			t.Errorf("%s is not a copy of %s", c.dst, c.src)
		}
		if fi, _ := os.Stat(filepath.Join(f.keysDir, c.dst)); fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v", c.dst, fi.Mode())
		}
	}
	st, err := keys.LoadState(filepath.Join(f.keysDir, "example.org"))
	if err != nil {
		t.Fatal(err)
	}
	if ks := st.Keys["default"]; ks == nil || ks.FirstSeen.IsZero() || time.Since(ks.FirstSeen) > time.Hour || !ks.Testing {
		t.Errorf("example.org state: %+v", st.Keys["default"])
	}

	// Again: nothing to copy, the same rules.
	stdout2, stderr, err := run(importF, f.args()...)
	if err != nil || !strings.Contains(stderr, "copied 0 keys into "+f.keysDir+" (6 were there already)") || stdout2 != stdout {
		t.Errorf("second import: %v\n%s", err, stderr)
	}

	// The file: form of the same SigningTable means the same.
	other := filepath.Join(t.TempDir(), "keys")
	if err := os.WriteFile(f.cfg, []byte(fmt.Sprintf("[keys]\ndir = %q\n", other)), 0o600); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, err = run(importF, "-config", f.cfg, "-keytable", "file:"+f.keyTable, "-signingtable", f.signingFile)
	if err != nil {
		t.Fatalf("file: tables: %v\n%s", err, stderr)
	}
	if got := signingKeys(t, other, stdout, froms); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("the rules of the file: table sign\n%v\nwant\n%v\nrules:\n%s", got, want, stdout)
	}
}

// TestImportOpenDKIMRefuses: bad tables and bad keys are reported with
// their file and line, every problem at once, and nothing is written.
func TestImportOpenDKIMRefuses(t *testing.T) {
	openssl := needTool(t, "/usr/bin/openssl", "openssl")
	template := filepath.Join(t.TempDir(), "keys")
	makeODKKeys(t, template)
	tests := []struct {
		name  string
		setup func(t *testing.T, f *odkFixture) []string // returns extra args
		want  []string
		force bool // succeeds with -force
	}{
		{name: "missing KeyTable", setup: func(t *testing.T, f *odkFixture) []string {
			f.keyTable = filepath.Join(f.keys, "nonexistent")
			return nil
		}, want: []string{"KeyTable: stat " + "", "no such file"}},
		{name: "KeyTable is a FIFO", setup: func(t *testing.T, f *odkFixture) []string {
			f.keyTable = filepath.Join(f.keys, "fifo")
			if err := syscall.Mkfifo(f.keyTable, 0o600); err != nil {
				t.Fatal(err)
			}
			return nil
		}, want: []string{"not a regular file (a FIFO)"}},
		{name: "huge SigningTable", setup: func(t *testing.T, f *odkFixture) []string {
			p := filepath.Join(f.keys, "huge")
			fh, err := os.Create(p)
			if err != nil {
				t.Fatal(err)
			}
			fh.Truncate(1 << 30)
			fh.Close()
			f.signingTable = "refile:" + p
			return nil
		}, want: []string{"SigningTable: ", "larger than"}},
		{name: "database data set", setup: func(t *testing.T, f *odkFixture) []string {
			f.signingTable = "db:/etc/opendkim/signing.db"
			return nil
		}, want: []string{`type "db" cannot be imported`}},
		{name: "garbage lines, all reported", setup: func(t *testing.T, f *odkFixture) []string {
			appendTo(t, f.keyTable, "garbage\n\x00\nlong "+strings.Repeat("x", 2000)+"\nbad example.com\n")
			appendTo(t, f.signingTable, "*@nokey.example\n")
			return nil
		}, want: []string{`KeyTable:11: key "garbage" has no value`, "KeyTable:12: NUL byte", "KeyTable:13: line is 2005 bytes long",
			`KeyTable:14: value "example.com" of key "bad" is not domain:selector:keyfile`, `SigningTable:12: pattern "*@nokey.example" has no key name`}},
		{name: "duplicate key names", setup: func(t *testing.T, f *odkFixture) []string {
			appendTo(t, f.keyTable, "fbl example.com:other:"+filepath.Join(f.keys, "example.com", "mail.private")+"\n")
			return nil
		}, want: []string{`KeyTable:11: key name "fbl" is defined again (first at line 6`}},
		{name: "path traversal in domain and selector", setup: func(t *testing.T, f *odkFixture) []string {
			src := filepath.Join(f.keys, "example.com", "mail.private")
			appendTo(t, f.keyTable, "e1 ../../etc:mail:"+src+"\ne2 example.com:../../etc/x:"+src+"\ne3 example.com:..:"+src+"\ne4 ..:x:"+src+"\n")
			return nil
		}, want: []string{`KeyTable:11: key "e1": domain "../../etc" is not a domain name`, `KeyTable:12: key "e2": selector "../../etc/x" is not a valid selector`,
			`KeyTable:13: key "e3": selector ".." is not a valid selector`, `KeyTable:14: key "e4": domain ".." is not a domain name`}},
		{name: "key file missing", setup: func(t *testing.T, f *odkFixture) []string {
			os.Remove(filepath.Join(f.keys, "example.net", "ed.pem"))
			return nil
		}, want: []string{`KeyTable:7: key "ed": stat ` + "", "ed.pem: no such file"}},
		{name: "key file is a FIFO", setup: func(t *testing.T, f *odkFixture) []string {
			p := filepath.Join(f.keys, "example.net", "ed.pem")
			os.Remove(p)
			if err := syscall.Mkfifo(p, 0o600); err != nil {
				t.Fatal(err)
			}
			return nil
		}, want: []string{`KeyTable:7: key "ed": `, "not a regular file (a FIFO)"}},
		{name: "key is a device", setup: func(t *testing.T, f *odkFixture) []string {
			appendTo(t, f.keyTable, "zero example.com:zero:/dev/zero\n")
			return nil
		}, want: []string{`KeyTable:11: key "zero": /dev/zero: not a regular file (a device)`}},
		{name: "key is not a key", setup: func(t *testing.T, f *odkFixture) []string {
			appendTo(t, f.keyTable, "pw example.com:pw:/etc/passwd\n")
			return nil
		}, want: []string{`KeyTable:11: key "pw": /etc/passwd: no PEM block found`}},
		{name: "key too small", setup: func(t *testing.T, f *odkFixture) []string {
			runIn(t, filepath.Join(f.keys, "example.net"), openssl, "genrsa", "-traditional", "-out", "small.private", "512")
			appendTo(t, f.keyTable, "small example.net:small:"+filepath.Join(f.keys, "example.net", "small.private")+"\n")
			return nil
		}, want: []string{`KeyTable:11: key "small": `, "RSA key has 512 bits; at least 1024 are required"}},
		{name: "key readable by everyone", setup: func(t *testing.T, f *odkFixture) []string {
			os.Chmod(filepath.Join(f.keys, "example.com", "mail.private"), 0o644)
			return nil
		}, want: []string{`KeyTable:3: key "mail._domainkey.example.com": `, "has mode 0644: other users could read or replace it", "(-force imports it anyway)"}, force: true},
		{name: "record beside the key is another key's", setup: func(t *testing.T, f *odkFixture) []string {
			data, err := os.ReadFile(filepath.Join(f.keys, "example.info", "default.txt"))
			if err != nil {
				t.Fatal(err)
			}
			data = bytes.ReplaceAll(data, []byte("example.info"), []byte("example.org"))
			if err := os.WriteFile(filepath.Join(f.keys, "example.org", "default.txt"), data, 0o600); err != nil {
				t.Fatal(err)
			}
			return nil
		}, want: []string{`KeyTable:4: key "default._domainkey.example.org": `, "default.txt holds the record of a different key"}, force: true},
		{name: "record beside the key names another domain", setup: func(t *testing.T, f *odkFixture) []string {
			data, err := os.ReadFile(filepath.Join(f.keys, "example.com", "mail.txt"))
			if err != nil {
				t.Fatal(err)
			}
			data = bytes.ReplaceAll(data, []byte("for example.com"), []byte("for example.net"))
			if err := os.WriteFile(filepath.Join(f.keys, "example.com", "mail.txt"), data, 0o600); err != nil {
				t.Fatal(err)
			}
			return nil
		}, want: []string{`KeyTable:3: key "mail._domainkey.example.com" is example.com/mail, but `, "mail.txt was made for example.net/mail"}, force: true},
		{name: "key name names another selector", setup: func(t *testing.T, f *odkFixture) []string {
			appendTo(t, f.keyTable, "x._domainkey.example.com example.com:y:"+filepath.Join(f.keys, "example.net", "ed.pem")+"\n")
			return nil
		}, want: []string{`KeyTable:11: key name "x._domainkey.example.com" says example.com/x, the entry says example.com/y`,
			"lies in a folder named after another domain"}, force: true},
		{name: "SigningTable names an unknown key", setup: func(t *testing.T, f *odkFixture) []string {
			appendTo(t, f.signingTable, "*@example.edu nosuchkey\n")
			return nil
		}, want: []string{`SigningTable:12: key name "nosuchkey" is not in the KeyTable`}},
		{name: "key name % without an entry named after the domain", setup: func(t *testing.T, f *odkFixture) []string {
			appendTo(t, f.signingTable, "*@example.edu %\n")
			return nil
		}, want: []string{`SigningTable:12: key name % stands for the From domain, but the KeyTable has no entry named "example.edu"`}},
		{name: "another key already at the place", setup: func(t *testing.T, f *odkFixture) []string {
			if _, err := keys.Generate(f.keysDir, "example.com", "mail", "ed25519"); err != nil {
				t.Fatal(err)
			}
			return nil
		}, want: []string{`KeyTable:3: key "mail._domainkey.example.com": keys: `, "mail.pem already exists and holds a different key"}},
		{name: "two entries, one place, two keys", setup: func(t *testing.T, f *odkFixture) []string {
			appendTo(t, f.keyTable, "again example.com:mail:"+filepath.Join(f.keys, "example.info", "default.private")+"\n")
			return nil
		}, want: []string{`KeyTable:11: key "again" is example.com/mail, but `, "KeyTable:3 already gives example.com/mail a different key"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := cloneODKFixture(t, template)
			extra := tt.setup(t, f)
			before := pemFiles(t, f.keysDir)
			_, stderr, err := run(importF, f.args(extra...)...)
			if err == nil {
				t.Fatalf("import succeeded:\n%s", stderr)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
			if strings.Contains(err.Error(), "root:") {
				t.Errorf("error shows file contents: %v", err)
			}
			if got := pemFiles(t, f.keysDir); len(got) != len(before) {
				t.Errorf("keys written by a refused import: %q", got)
			}
			if tt.force {
				_, stderr, err := run(importF, f.args(append(extra, "-force")...)...)
				if err != nil {
					t.Fatalf("with -force: %v\n%s", err, stderr)
				}
				if !strings.Contains(stderr, "warning: ") || !strings.Contains(stderr, tt.want[0]) {
					t.Errorf("-force does not warn %q:\n%s", tt.want[0], stderr)
				}
			}
		})
	}
}

// appendTo appends text to a table given as a data set spec.
func appendTo(t *testing.T, spec, text string) {
	t.Helper()
	if _, p, ok := strings.Cut(spec, ":"); ok && !strings.HasPrefix(spec, "/") {
		spec = p
	}
	fh, err := os.OpenFile(spec, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	if _, err := io.WriteString(fh, text); err != nil {
		t.Fatal(err)
	}
}

// TestImportOpenDKIMPatterns: what each kind of SigningTable line becomes.
func TestImportOpenDKIMPatterns(t *testing.T) {
	f := newODKFixture(t)
	tests := []struct {
		name      string
		refile    bool
		table     string
		extraKeys string   // KeyTable lines added, %KEYS% standing for the key folder
		want      []string // in the rules
		notWant   []string
	}{
		{name: "subdomains only", refile: true, table: "*@*.example.com mail._domainkey.example.com\n",
			want: []string{"from = \"example.com\"\nsubdomains = true\ndomain = \"example.com\"\n", "also matches example.com itself"}},
		{name: "sloppy suffix", refile: true, table: "*example.com mail._domainkey.example.com\n",
			want: []string{"from = \"example.com\"\nsubdomains = true\n", `matched every address ending in "example.com", also at other domains such as xexample.com`}},
		{name: "regular expression", refile: true, table: "*@example.(com|net) mail._domainkey.example.com\n",
			want: []string{"not converted: the pattern holds regular-expression characters"}, notWant: []string{"\n[[signing.rule]]"}},
		{name: "per user, any domain", refile: true, table: "bob@* fbl\n",
			want: []string{"not converted: a per-user entry"}, notWant: []string{"\n[[signing.rule]]"}},
		{name: "wildcard in a file: table", table: "*@example.com mail._domainkey.example.com\n",
			want: []string{"run again with -signingtable refile:FILE"}, notWant: []string{"\n[[signing.rule]]"}},
		{name: "key name %", refile: true, table: "* %\n",
			want: []string{"key name %: OpenDKIM used the KeyTable entry named after each From domain", "[[signing.rule]]\nfrom = \"*\"\n"}, notWant: []string{"domain =", "selector ="}},
		{name: "key name % for one domain", refile: true, table: "*@example.com %\n",
			extraKeys: "example.com example.com:mail:%KEYS%/example.com/mail.private\n",
			want:      []string{"[[signing.rule]]\nfrom = \"example.com\"\n"}, notWant: []string{"not converted"}},
		{name: "signer dropped", refile: true, table: "*@example.net ed:bounces@example.net\n",
			want: []string{`signer (i=) "bounces@example.net" dropped`}},
		{name: "two keys of one domain: selectors named", refile: true, table: "*@esp.example fbl\n*@esp.example acme\n",
			want: []string{"from = \"esp.example\"\nselector = \"fbl\"\n", "from = \"esp.example\"\nselector = \"s1024_acme\"\n",
				"mail that also matches "}},
		{name: "comment on the last line without newline", refile: true, table: "*@example.net ed # the Ed25519 key",
			want: []string{"from = \"example.net\"\n"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "SigningTable")
			if err := os.WriteFile(p, []byte(tt.table), 0o600); err != nil {
				t.Fatal(err)
			}
			spec := "file:" + p
			if tt.refile {
				spec = "refile:" + p
			}
			keyTable := f.keyTable
			if tt.extraKeys != "" {
				data, err := os.ReadFile(f.keyTable)
				if err != nil {
					t.Fatal(err)
				}
				keyTable = filepath.Join(filepath.Dir(p), "KeyTable")
				data = append(data, strings.ReplaceAll(tt.extraKeys, "%KEYS%", f.keys)...)
				if err := os.WriteFile(keyTable, data, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			stdout, stderr, err := run(importF, "-config", f.cfg, "-keytable", keyTable, "-signingtable", spec, "-dry-run")
			if err != nil {
				t.Fatalf("%v\n%s", err, stderr)
			}
			for _, w := range tt.want {
				if !strings.Contains(stdout, w) {
					t.Errorf("rules lack %q:\n%s", w, stdout)
				}
			}
			for _, w := range tt.notWant {
				if strings.Contains(stdout, w) {
					t.Errorf("rules have %q:\n%s", w, stdout)
				}
			}
			// Whatever they say, they are a valid config.
			if _, err := policy.ParseConfig("rules.toml", []byte(stdout)); err != nil && !strings.Contains(err.Error(), "no settings") {
				t.Errorf("not a valid config: %v\n%s", err, stdout)
			}
		})
	}
}

// TestImportedKeyRecordAcceptedByOpenDKIM: the record keys record prints
// for an imported key is accepted by opendkim-testkey, as is the record
// OpenDKIM had published; a testing key's record keeps t=y.
func TestImportedKeyRecordAcceptedByOpenDKIM(t *testing.T) {
	f := newODKFixture(t)
	e := newKeyEnv(t, "")
	if err := os.WriteFile(f.cfg, []byte(e.conf), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, stderr, err := run(importF, "-config", e.cfg, "-keytable", f.keyTable, "-signingtable", f.signingTable); err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	for _, id := range []string{"example.com/mail", "example.org/default", "esp.example/s1024_acme"} {
		d, s, _ := strings.Cut(id, "/")
		zone, stderr, err := run(keyRecordF, "-config", e.cfg, "-d", d, "-s", s)
		if err != nil {
			t.Fatalf("%s: %v\n%s", id, err, stderr)
		}
		if testing := d == "example.org"; testing != strings.Contains(zone, "t=y; p=") {
			t.Errorf("%s: record %q (testing: %v)", id, zone, testing)
		}
		e.dns.AddZoneText(t, d+".", zone)
		keyFile := filepath.Join(e.dir, d, s+".pem")
		if out, err := opendkimTestkey(t, e.dns.Addr(), d, s, keyFile); err != nil || !strings.Contains(out, "key OK") {
			t.Errorf("%s: opendkim-testkey rejects the record of the imported key: %v\n%s", id, err, out)
		}
	}
}

// TestCheckWarnsIgnoredFiles: authmilter check names the files in the key
// folder that are not keys, such as OpenDKIM's mail.private.
func TestCheckWarnsIgnoredFiles(t *testing.T) {
	e := newKeyEnv(t, "require_published = false\n")
	if _, err := keys.Generate(e.dir, "example.com", "2026-11", "ed25519"); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"mail.private", "mail.txt"} {
		if err := os.WriteFile(filepath.Join(e.dir, "example.com", name), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	saved := os.Stderr
	os.Stderr = w
	cerr := cmdCheck([]string{"-config", e.cfg})
	os.Stderr = saved
	w.Close()
	out, _ := io.ReadAll(r)
	if cerr != nil {
		t.Fatalf("check: %v\n%s", cerr, out)
	}
	for _, want := range []string{
		"warning: ignored " + filepath.Join(e.dir, "example.com", "mail.private") + ": an OpenDKIM key",
		"warning: ignored " + filepath.Join(e.dir, "example.com", "mail.txt") + ": not a key",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("check output lacks %q:\n%s", want, out)
		}
	}
}
