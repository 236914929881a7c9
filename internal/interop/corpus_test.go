package interop

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

const corpusDir = "../../testdata/messages"

// corpus returns the test messages by file name.
func corpus(t *testing.T) map[string][]byte {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(corpusDir, "*.eml"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out[filepath.Base(f)] = data
	}
	return out
}

// fromDomain returns the domain of the first From field's address (the
// text after the last "@" before ">" or the end of the field).
func fromDomain(msg []byte) string {
	for _, line := range strings.Split(string(msg), "\r\n") {
		if line == "" {
			break
		}
		if !strings.HasPrefix(strings.ToLower(line), "from:") {
			continue
		}
		v := line[len("from:"):]
		if i := strings.LastIndex(v, "<"); i >= 0 {
			v = v[i+1:]
			v = v[:strings.IndexByte(v, '>')]
		}
		v = strings.TrimSpace(v)
		return strings.ToLower(v[strings.LastIndexByte(v, '@')+1:])
	}
	return ""
}

func TestCorpusRules(t *testing.T) {
	msgs := corpus(t)
	if len(msgs) < 18 {
		t.Errorf("corpus has %d messages, want at least 18", len(msgs))
	}
	readme, err := os.ReadFile(filepath.Join(corpusDir, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	name := regexp.MustCompile(`^[0-9]{2}-[a-z0-9-]+\.eml$`)
	for file, msg := range msgs {
		if !name.MatchString(file) {
			t.Errorf("%s: name is not NN-description.eml", file)
		}
		if !bytes.Contains(readme, []byte("`"+file+"`")) {
			t.Errorf("%s: not described in README.md", file)
		}
		for i, c := range msg {
			if c == '\n' && (i == 0 || msg[i-1] != '\r') {
				t.Errorf("%s: bare LF at byte %d", file, i)
				break
			}
			if c == '\r' && (i+1 == len(msg) || msg[i+1] != '\n') {
				t.Errorf("%s: bare CR at byte %d", file, i)
				break
			}
		}
		if d := fromDomain(msg); d != "example.com" && !strings.HasSuffix(d, ".example.com") {
			t.Errorf("%s: From domain %q is not example.com or a subdomain", file, d)
		}
		if file != "11-no-final-crlf.eml" && !bytes.HasSuffix(msg, []byte("\r\n")) {
			t.Errorf("%s: does not end in CRLF", file)
		}
	}
}

// signingCase picks a key type and canonicalization per message so that
// the corpus covers all of them without signing every message every way.
func signingCase(i int) (kind, algo, hc, bc string) {
	switch i % 3 {
	case 0:
		return "rsa", "rsa-sha256", "relaxed", "relaxed"
	case 1:
		return "rsa", "rsa-sha256", "simple", "simple"
	default:
		return "ed25519", "ed25519-sha256", "relaxed", "simple"
	}
}

// Every corpus message, signed by one peer, verifies with both; the
// foreign signature of message 20 verifies too once its key is published.
func TestCorpusInterop(t *testing.T) {
	ctx := testCtx(t)
	d := startDNS(t)
	foreign, err := os.ReadFile("../../testdata/interop/sel2025._domainkey.example.net.txt")
	if err != nil {
		t.Fatal(err)
	}
	d.SetTXT("sel2025._domainkey.example.net", strings.TrimSpace(string(foreign)))
	keys := map[string][]byte{"rsa": newKey(t, "rsa"), "ed25519": newKey(t, "ed25519")}
	publish(t, d, "crsa", "example.com", keys["rsa"])
	publish(t, d, "ced", "example.com", keys["ed25519"])
	msgs := corpus(t)
	i := 0
	for file, msg := range msgs {
		kind, algo, hc, bc := signingCase(i)
		i++
		t.Run(file, func(t *testing.T) {
			t.Parallel()
			sel := map[string]string{"rsa": "crsa", "ed25519": "ced"}[kind]
			want := 1
			if bytes.HasPrefix(msg, []byte("DKIM-Signature:")) {
				want = 2
			}
			signed, err := SignDkimpy(ctx, msg, sel, "example.com", keys[kind], hc, bc, algo)
			if err != nil {
				t.Fatal(err)
			}
			checkBoth(t, ctx, d, signed, true, want)

			odSigned, err := SignOpenDKIM(ctx, msg, "example.com", sel, keys[kind], hc+"/"+bc)
			if err != nil {
				t.Fatal(err)
			}
			checkBoth(t, ctx, d, odSigned, true, want)
		})
	}
}
