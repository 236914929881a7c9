package dkimsign

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"math/rand"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"
)

func hashOf(s string) string {
	h := sha256.Sum256([]byte(s))
	return base64.StdEncoding.EncodeToString(h[:])
}

// RFC 6376 §3.4.5's example, plus the edge cases of §3.4.3 and §3.4.4.
func TestBodyCanonicalization(t *testing.T) {
	tests := []struct {
		name, body, simple, relaxed string
	}{
		{"rfc 6376 3.4.5", " C \r\nD \t E\r\n\r\n\r\n", " C \r\nD \t E\r\n", " C\r\nD E\r\n"},
		{"empty", "", "\r\n", ""},
		{"only empty lines", "\r\n\r\n\r\n", "\r\n", ""},
		{"no final CRLF", "abc", "abc\r\n", "abc\r\n"},
		{"trailing spaces on last line without CRLF", "abc  \t", "abc  \t\r\n", "abc\r\n"},
		{"whitespace-only lines are kept inside", "a\r\n \r\nb\r\n", "a\r\n \r\nb\r\n", "a\r\n\r\nb\r\n"},
		{"whitespace-only trailing line", "a\r\n \t \r\n", "a\r\n \t \r\n", "a\r\n"},
		{"bare LF is a line end", "a\nb\n\n", "a\r\nb\r\n", "a\r\nb\r\n"},
		{"lone CR is data", "a\rb\r\n", "a\rb\r\n", "a\rb\r\n"},
		{"CR at the very end", "a\r", "a\r\r\n", "a\r\r\n"},
		{"leading WSP kept as one SP", "\t\t x\r\n", "\t\t x\r\n", " x\r\n"},
	}
	for _, tt := range tests {
		for _, c := range []struct {
			canon Canon
			want  string
		}{{Simple, tt.simple}, {Relaxed, tt.relaxed}} {
			// Every split into two chunks gives the same hash.
			for cut := 0; cut <= len(tt.body); cut++ {
				b := NewBodyHasher(c.canon)
				b.Write([]byte(tt.body[:cut]))
				b.Write([]byte(tt.body[cut:]))
				if got := base64.StdEncoding.EncodeToString(b.Sum()); got != hashOf(c.want) {
					t.Errorf("%s/%s (cut %d): hash of %q is not that of %q", tt.name, c.canon, cut, tt.body, c.want)
					break
				}
			}
		}
	}
}

func loadKey(t testing.TB, file string) crypto.Signer {
	t.Helper()
	data, err := os.ReadFile("../../testdata/keys/" + file)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	var key any
	if block.Type == "RSA PRIVATE KEY" {
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	} else {
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	}
	if err != nil {
		t.Fatal(err)
	}
	return key.(crypto.Signer)
}

func splitHeader(t testing.TB, raw string) ([]Field, string) {
	t.Helper()
	head, body, _ := strings.Cut(raw, "\r\n\r\n")
	var fields []Field
	// Split at CRLF not followed by WSP.
	start := 0
	for i := 0; i+1 < len(head); i++ {
		if head[i] == '\r' && head[i+1] == '\n' && (i+2 >= len(head) || (head[i+2] != ' ' && head[i+2] != '\t')) {
			fields = append(fields, parseField(head[start:i]))
			start = i + 2
		}
	}
	fields = append(fields, parseField(head[start:]))
	return fields, body
}

func parseField(s string) Field {
	name, value, _ := strings.Cut(s, ":")
	return Field{Name: name, Value: value}
}

var messages = []string{
	"From: Alice <alice@example.com>\r\nTo: bob@example.org\r\nSubject: hi\r\n\r\nHello.\r\n",
	"From:alice@example.com\r\nSubject:\tfolded\r\n  twice\r\n\tthrice \r\nTo:  b@x\r\nTo: c@x\r\n\r\nbody  \r\n\r\n\r\n",
	"From: alice@example.com\r\nSubject: nothing\r\n\r\n",
	"FROM: alice@example.com\r\nsubject: " + strings.Repeat("long ", 80) + "\r\n\r\n" + strings.Repeat("x \t y\r\n", 5000),
}

// Every signature we make verifies with go-msgauth, for every combination
// of canonicalizations and key types, with oversigned and absent fields.
func TestSignVerifiesWithGoMsgauth(t *testing.T) {
	keys := map[string]crypto.Signer{"rsa": loadKey(t, "rsa2048-pkcs8.pem"), "ed25519": loadKey(t, "ed25519-pkcs8.pem")}
	records := map[string]string{}
	for name, k := range keys {
		var p string
		switch pub := k.Public().(type) {
		case *rsa.PublicKey:
			der, _ := x509.MarshalPKIXPublicKey(pub)
			p = "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(der)
		case ed25519.PublicKey:
			p = "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(pub)
		}
		records[name+"._domainkey.example.com"] = p
	}
	lookup := func(name string) ([]string, error) { return []string{records[name]}, nil }
	for i, raw := range messages {
		header, body := splitHeader(t, raw)
		for _, hc := range []Canon{Simple, Relaxed} {
			for _, bc := range []Canon{Simple, Relaxed} {
				bh := NewBodyHasher(bc)
				for c := range chunks([]byte(body), int64(i)) {
					bh.Write(c)
				}
				sum := bh.Sum()
				for name, k := range keys {
					v, err := Sign(Params{Domain: "example.com", Selector: name, Signer: k, HeaderCanon: hc, BodyCanon: bc,
						HeaderKeys: []string{"From", "From", "To", "To", "Subject", "Subject", "Date"},
						Time:       time.Now(), Expire: time.Now().Add(time.Hour)}, header, sum)
					if err != nil {
						t.Fatal(err)
					}
					signed := "DKIM-Signature:" + v + "\r\n" + raw
					for _, line := range strings.Split(v, "\r\n") {
						if len(line) > 78 {
							t.Errorf("line of %d characters: %q", len(line), line)
						}
					}
					verifs, err := dkim.VerifyWithOptions(strings.NewReader(signed), &dkim.VerifyOptions{LookupTXT: lookup})
					if err != nil || len(verifs) != 1 || verifs[0].Err != nil {
						t.Errorf("message %d %s/%s %s: %v %+v\n%s", i, hc, bc, name, err, verifs, v)
					}
					// Changing the body or an oversigned field breaks it.
					for _, bad := range []string{
						strings.Replace(signed, "\r\n\r\n", "\r\n\r\nX", 1),
						strings.Replace(signed, "\r\n\r\n", "\r\nSubject: added\r\n\r\n", 1),
					} {
						verifs, _ := dkim.VerifyWithOptions(strings.NewReader(bad), &dkim.VerifyOptions{LookupTXT: lookup})
						if len(verifs) == 1 && verifs[0].Err == nil {
							t.Errorf("message %d %s/%s %s: tampered copy verifies", i, hc, bc, name)
						}
					}
				}
			}
		}
	}
}

// chunks cuts b into random pieces (seeded, so failures reproduce).
func chunks(b []byte, seed int64) func(func([]byte) bool) {
	r := rand.New(rand.NewSource(seed))
	return func(yield func([]byte) bool) {
		for len(b) > 0 {
			n := min(1+r.Intn(300), len(b))
			if !yield(b[:n]) {
				return
			}
			b = b[n:]
		}
	}
}

// FuzzBodyHash checks our body hash against go-msgauth's for any body and
// any chunking: bh= of a go-msgauth signature over the same body.
func FuzzBodyHash(f *testing.F) {
	for _, s := range []string{"", "\r\n", " C \r\nD \t E\r\n\r\n\r\n", "a\rb", "x\n\n", "\t\r\n \r\n"} {
		f.Add([]byte(s), int64(1))
	}
	key := loadKey(f, "ed25519-pkcs8.pem")
	bhRe := regexp.MustCompile(`bh=([^;]+);`)
	f.Fuzz(func(t *testing.T, body []byte, seed int64) {
		// go-msgauth turns bare LF into CRLF as we do, but handles a CR
		// that ends a chunk differently from one inside; keep to bodies
		// an MTA sends (CRLF line ends, no NUL).
		if bytes.ContainsAny(body, "\x00") || bytes.Contains(bytes.ReplaceAll(body, []byte("\r\n"), nil), []byte("\r")) {
			return
		}
		for _, c := range []Canon{Simple, Relaxed} {
			bh := NewBodyHasher(c)
			for ch := range chunks(body, seed) {
				bh.Write(ch)
			}
			ours := base64.StdEncoding.EncodeToString(bh.Sum())
			var out bytes.Buffer
			msg := append([]byte("From: a@example.com\r\n\r\n"), body...)
			err := dkim.Sign(&out, bytes.NewReader(msg), &dkim.SignOptions{Domain: "example.com", Selector: "s", Signer: key,
				HeaderCanonicalization: dkim.CanonicalizationRelaxed, BodyCanonicalization: dkim.Canonicalization(c.String())})
			if err != nil {
				t.Fatal(err)
			}
			m := bhRe.FindSubmatch(out.Bytes())
			if m == nil {
				t.Fatalf("no bh= in %q", out.Bytes())
			}
			if theirs := strings.Join(strings.Fields(string(m[1])), ""); theirs != ours {
				t.Fatalf("%s body %q: bh %s, go-msgauth %s", c, body, ours, theirs)
			}
		}
	})
}
