package keys

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestParseOpenDKIMLines(t *testing.T) {
	long := "k " + strings.Repeat("x", OpenDKIMMaxLine)
	tests := []struct {
		name    string
		in      string
		want    []OpenDKIMLine
		wantErr string
	}{
		{name: "comments and blanks",
			in:   "# KeyTable\n\n  mail   example.com:mail:/k/mail.private   # the main key\r\n\t\n",
			want: []OpenDKIMLine{{Line: 3, Key: "mail", Value: "example.com:mail:/k/mail.private"}}},
		{name: "comment inside a word, as OpenDKIM cuts it",
			in:   "a#b c\nd e#f\n",
			want: []OpenDKIMLine{{Line: 1, Key: "a"}, {Line: 2, Key: "d", Value: "e"}}},
		{name: "no continuation lines",
			in:   "a b\\\nc d\n",
			want: []OpenDKIMLine{{Line: 1, Key: "a", Value: "b\\"}, {Line: 2, Key: "c", Value: "d"}}},
		{name: "value keeps inner blanks",
			in:   "k  v1  v2 \n",
			want: []OpenDKIMLine{{Line: 1, Key: "k", Value: "v1  v2"}}},
		{name: "no final newline",
			in:   "k v",
			want: []OpenDKIMLine{{Line: 1, Key: "k", Value: "v"}}},
		{name: "line longer than OpenDKIM reads", in: "ok v\n" + long + "\n", wantErr: ":2: line is 1025 bytes long"},
		{name: "NUL byte", in: "a\x00b c\n", wantErr: ":1: NUL byte"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseOpenDKIMLines("T", []byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("line %d: got %+v, want %+v", i, got[i], tt.want[i])
				}
			}
		})
	}
}

func TestClassifyPattern(t *testing.T) {
	tests := []struct {
		p      string
		refile bool
		kind   MatchKind
		domain string
		approx bool
	}{
		{"*", true, MatchAny, "", false},
		{"*@*", true, MatchAny, "", false},
		{"*@example.com", true, MatchDomain, "example.com", false},
		{"*@Example.COM", true, MatchDomain, "example.com", false},
		{"*@*.example.com", true, MatchSubdomains, "example.com", false},
		{"*.example.com", true, MatchSubdomains, "example.com", false},
		{"*example.com", true, MatchTree, "example.com", true},
		{"bob@example.com", true, MatchUser, "example.com", false},
		{"bob*@example.com", true, MatchUser, "example.com", false},
		{"bob@*", true, MatchUser, "", false},
		{"*@example.*", true, MatchNone, "", false},
		{"*@ex*ample.com", true, MatchNone, "", false},
		{"example.com", true, MatchNone, "", false},
		{"*@example.com$", true, MatchNone, "", false},
		{"[a-z]*@example.com", true, MatchNone, "", false},
		{"*@../../etc", true, MatchNone, "", false},
		{"*@exämple.com", true, MatchNone, "", false},
		// file: tables are looked up, not matched.
		{"*", false, MatchAny, "", false},
		{"example.com", false, MatchDomain, "example.com", false},
		{".example.com", false, MatchSubdomains, "example.com", false},
		{"bob@example.com", false, MatchUser, "example.com", false},
		{"bob@.example.com", false, MatchUser, "example.com", false},
		{"bob@*", false, MatchUser, "", false},
		{"*@example.com", false, MatchNone, "", false},
		{"../../etc", false, MatchNone, "", false},
		{"localhost", false, MatchNone, "", false},
	}
	for _, tt := range tests {
		got := ClassifyPattern(tt.p, tt.refile)
		if got.Kind != tt.kind || got.Domain != tt.domain || got.Approximate != tt.approx {
			t.Errorf("ClassifyPattern(%q, refile=%v) = %+v, want kind %d domain %q approx %v", tt.p, tt.refile, got, tt.kind, tt.domain, tt.approx)
		}
		if (got.Kind == MatchNone || got.Kind == MatchUser || got.Approximate) && got.Note == "" {
			t.Errorf("ClassifyPattern(%q): no note for %+v", tt.p, got)
		}
	}
}

func TestParseKeyTable(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "KeyTable")
	tests := []struct {
		name    string
		in      string
		want    []KeyTableEntry
		wantErr []string
	}{
		{name: "forms",
			in: "mail._domainkey.example.com example.com:mail:/etc/opendkim/keys/example.com/mail.private\n" +
				"rel Example.ORG.:Sel:./keys/sel.private\n" +
				"up example.net:s:../k/s.private\n" +
				"colon example.net:c:/k/a:b.private\n" +
				"pct %:default:/k/%/default.private\n" +
				"inline example.net:i:MIIBOgIBAAJBAK\n",
			want: []KeyTableEntry{
				{Pos: path + ":1", Name: "mail._domainkey.example.com", Domain: "example.com", Selector: "mail", KeyFile: "/etc/opendkim/keys/example.com/mail.private"},
				{Pos: path + ":2", Name: "rel", Domain: "example.org", Selector: "sel", KeyFile: filepath.Join(dir, "keys/sel.private")},
				{Pos: path + ":3", Name: "up", Domain: "example.net", Selector: "s", KeyFile: filepath.Join(filepath.Dir(dir), "k/s.private")},
				{Pos: path + ":4", Name: "colon", Domain: "example.net", Selector: "c", KeyFile: "/k/a:b.private"},
				{Pos: path + ":5", Name: "pct", Domain: "%", Selector: "default", KeyFile: "/k/%/default.private"},
				{Pos: path + ":6", Name: "inline", Domain: "example.net", Selector: "i", KeyData: "MIIBOgIBAAJBAK"},
			}},
		{name: "every bad line is reported",
			in: "novalue\n" +
				"two example.com:mail\n" +
				"trav ../../etc:mail:/k/x.private\n" +
				"trav2 example.com:../../etc:/k/x.private\n" +
				"trav3 example.com:a/b:/k/x.private\n" +
				"empty example.com:mail:\n" +
				"dup example.com:a:/k/a.private\n" +
				"dup example.com:b:/k/b.private\n" +
				"blank example.com: mail:/k/x.private\n",
			wantErr: []string{
				path + `:1: key "novalue" has no value`,
				path + `:2: value "example.com:mail" of key "two" is not domain:selector:keyfile`,
				path + `:3: key "trav": domain "../../etc" is not a domain name`,
				path + `:4: key "trav2": selector "../../etc" is not a valid selector`,
				path + `:5: key "trav3": selector "a/b" is not a valid selector`,
				path + `:6: key "empty" has no key file`,
				path + `:8: key name "dup" is defined again (first at line 7`,
				path + `:9: key "blank": selector " mail" is not a valid selector`,
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := os.WriteFile(path, []byte(tt.in), 0o600); err != nil {
				t.Fatal(err)
			}
			tab, err := ReadOpenDKIMTable("file:" + path)
			if err != nil {
				t.Fatal(err)
			}
			got, err := ParseKeyTable(tab)
			for _, w := range tt.wantErr {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("error %v\nlacks %q", err, w)
				}
			}
			if tt.wantErr != nil {
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %d entries %+v, want %d", len(got), got, len(tt.want))
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("entry %d:\n got %+v\nwant %+v", i, got[i], tt.want[i])
				}
			}
		})
	}
}

func TestParseSigningTable(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "SigningTable")
	in := "*@example.com mail._domainkey.example.com\n" +
		"*@*.example.com mail._domainkey.example.com:bounce@%\n" +
		"bob@example.com bob\n" +
		"nokey\n"
	if err := os.WriteFile(path, []byte(in), 0o600); err != nil {
		t.Fatal(err)
	}
	tab, err := ReadOpenDKIMTable("refile:" + path)
	if err != nil {
		t.Fatal(err)
	}
	if !tab.Refile || tab.Path != path {
		t.Fatalf("table %+v", tab)
	}
	got, err := ParseSigningTable(tab)
	if err == nil || !strings.Contains(err.Error(), path+`:4: pattern "nokey" has no key name`) {
		t.Fatalf("err = %v", err)
	}
	if len(got) != 3 {
		t.Fatalf("got %+v", got)
	}
	if got[1].KeyName != "mail._domainkey.example.com" || got[1].Signer != "bounce@%" || got[1].Match.Kind != MatchSubdomains {
		t.Errorf("line 2: %+v", got[1])
	}
	if got[2].Match.Kind != MatchUser || got[2].Pos != path+":3" {
		t.Errorf("line 3: %+v", got[2])
	}
}

// TestReadOpenDKIMTableHostile: what cannot be a table is refused without
// blocking or reading without end.
func TestReadOpenDKIMTableHostile(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	huge := filepath.Join(dir, "huge")
	f, err := os.Create(huge)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(maxTableSize + 1); err != nil {
		t.Fatal(err)
	}
	f.Close()
	tests := []struct{ spec, want string }{
		{filepath.Join(dir, "missing"), "no such file"},
		{fifo, "not a regular file (a FIFO)"},
		{"refile:" + dir, "not a regular file (a folder)"},
		{huge, "larger than"},
		{"db:/etc/opendkim/signing.db", `type "db" cannot be imported`},
		{"dsn:mysql://u:p@host/db/table=x", `type "dsn" cannot be imported`},
		{"file:", "no file name"},
		{"/dev/zero", "not a regular file (a device)"},
	}
	for _, tt := range tests {
		_, err := ReadOpenDKIMTable(tt.spec)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ReadOpenDKIMTable(%q) = %v, want %q", tt.spec, err, tt.want)
		}
	}
}

// TestParseGenkeyRecord reads what opendkim-genkey writes.
func TestParseGenkeyRecord(t *testing.T) {
	genkey := tool(t, "/usr/sbin/opendkim-genkey", "opendkim-tools")
	dir := t.TempDir()
	run(t, dir, genkey, "-d", "example.com", "-s", "mail")
	run(t, dir, genkey, "-d", "Example.ORG", "-s", "s2", "--append-domain", "-t", "-r")
	tests := []struct {
		file, sel, domain, flags string
	}{
		{"mail.txt", "mail", "example.com", ""},
		{"s2.txt", "s2", "example.org", "y"},
	}
	for _, tt := range tests {
		r, err := ReadGenkeyRecord(filepath.Join(dir, tt.file))
		if err != nil {
			t.Fatal(err)
		}
		if r.Selector != tt.sel || r.Domain != tt.domain {
			t.Errorf("%s: got %+v", tt.file, r)
		}
		rec, err := ParseRecord(r.Value)
		if err != nil {
			t.Fatalf("%s: %v", tt.file, err)
		}
		if strings.Join(rec.Flags, ":") != tt.flags {
			t.Errorf("%s: flags %q, want %q", tt.file, rec.Flags, tt.flags)
		}
		sk, err := ReadSourceKey(filepath.Join(dir, strings.TrimSuffix(tt.file, ".txt")+".private"))
		if err != nil {
			t.Fatal(err)
		}
		if rec.PublicKey != PublicKeyData(sk.Signer.Public()) {
			t.Errorf("%s: p= is not the key's", tt.file)
		}
	}
	for _, bad := range []string{"", "garbage", "mail IN TXT \"v=DKIM1\"", "mail._domainkey IN TXT ( )", "mail._domainkey IN TXT ( \"p=x\" ) ; ----- DKIM key other for example.com"} {
		if _, err := ParseGenkeyRecord([]byte(bad)); err == nil {
			t.Errorf("ParseGenkeyRecord(%q) succeeded", bad)
		}
	}
}
