package arc

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/authmilter/authmilter/internal/testdns"
	"github.com/authmilter/authmilter/policy/dkimsign"
	"github.com/authmilter/authmilter/policy/resolve"
)

// splitMessage parses a message into header fields (values exactly as
// written, folding kept) and its body.
func splitMessage(t testing.TB, msg []byte) ([]dkimsign.Field, []byte) {
	t.Helper()
	head, body, ok := bytes.Cut(msg, []byte("\r\n\r\n"))
	if !ok {
		t.Fatal("message has no end of header")
	}
	var fields []dkimsign.Field
	for _, line := range strings.SplitAfter(string(head)+"\r\n", "\r\n") {
		if line == "" {
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			fields[len(fields)-1].Value += line
			continue
		}
		name, value, ok := strings.Cut(line, ":")
		if !ok {
			t.Fatalf("bad header line %q", line)
		}
		fields = append(fields, dkimsign.Field{Name: name, Value: value})
	}
	for i := range fields {
		fields[i].Value = strings.TrimSuffix(fields[i].Value, "\r\n")
	}
	return fields, body
}

// joinMessage is the inverse of splitMessage.
func joinMessage(fields []dkimsign.Field, body []byte) []byte {
	var b bytes.Buffer
	for _, f := range fields {
		b.WriteString(f.Name + ":" + f.Value + "\r\n")
	}
	b.WriteString("\r\n")
	b.Write(body)
	return b.Bytes()
}

// keyServer serves testdata/keys.zone on a real DNS server.
func keyServer(t *testing.T) *resolve.Resolver {
	t.Helper()
	s := testdns.Start(t)
	s.AddZoneFile(t, filepath.Join("testdata", "keys.zone"))
	r, err := resolve.New(resolve.Config{Servers: []string{s.Addr()}, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// verifyMessage runs Verify as policy does: parse, hash the body with the
// chain's canonicalization, verify.
func verifyMessage(r Resolver, fields []dkimsign.Field, body []byte) Result {
	c := ParseChain(fields)
	h := dkimsign.NewBodyHasher(c.BodyCanon())
	h.Write(body)
	return Verify(context.Background(), r, fields, c, h.Sum())
}

func readCase(t *testing.T, name string) ([]dkimsign.Field, []byte) {
	t.Helper()
	msg, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return splitMessage(t, msg)
}

// edit changes the message of a case before it is verified.
type edit func(fields []dkimsign.Field, body []byte) ([]dkimsign.Field, []byte)

// findField returns the index of the field named name whose value
// contains "i=N;" for instance.
func findField(fields []dkimsign.Field, name string, instance int) int {
	for i, f := range fields {
		if strings.EqualFold(f.Name, name) && strings.Contains(f.Value, fmt.Sprintf("i=%d;", instance)) {
			return i
		}
	}
	return -1
}

func TestVerifyGolden(t *testing.T) {
	r := keyServer(t)
	cases := []struct {
		name, file string
		edit       edit
		status     Status
		instance   int
		reason     string
		sealers    string
	}{
		{name: "i=1", file: "chain1.eml", status: Pass, instance: 1, sealers: "fwd.example"},
		{name: "i=2", file: "chain2.eml", status: Pass, instance: 2, sealers: "fwd.example lists.example"},
		{name: "i=3", file: "chain3.eml", status: Pass, instance: 3, sealers: "fwd.example lists.example relay.example"},
		{name: "no ARC", file: "chain1.eml", status: None, edit: func(f []dkimsign.Field, b []byte) ([]dkimsign.Field, []byte) {
			var out []dkimsign.Field
			for _, x := range f {
				if !IsARCField(x.Name) {
					out = append(out, x)
				}
			}
			return out, b
		}},
		{name: "cv=fail propagated", file: "cvfail.eml", status: Fail, reason: "i=3 ARC-Seal has cv=fail"},
		{name: "broken middle instance", file: "brokenmiddle.eml", status: Fail, reason: "i=2 ARC-Seal: signature does not verify"},
		{name: "middle seal changed", file: "chain3.eml", status: Fail, reason: "i=3 ARC-Seal: signature does not verify",
			edit: func(f []dkimsign.Field, b []byte) ([]dkimsign.Field, []byte) {
				i := findField(f, SealField, 2)
				f[i].Value = strings.Replace(f[i].Value, "t=1764979200", "t=1764979201", 1)
				return f, b
			}},
		{name: "forged AAR", file: "chain3.eml", status: Fail, reason: "i=3 ARC-Seal: signature does not verify",
			edit: func(f []dkimsign.Field, b []byte) ([]dkimsign.Field, []byte) {
				i := findField(f, ResultsField, 1)
				f[i].Value = strings.Replace(f[i].Value, "spf=pass", "spf=fail", 1)
				return f, b
			}},
		{name: "body changed after the last seal", file: "chain2.eml", status: Fail, reason: "i=2 ARC-Message-Signature: body hash",
			edit: func(f []dkimsign.Field, b []byte) ([]dkimsign.Field, []byte) {
				return f, append(b, "-- \r\nlist footer\r\n"...)
			}},
		{name: "signed header changed", file: "chain2.eml", status: Fail, reason: "i=2 ARC-Message-Signature: signature does not verify",
			edit: func(f []dkimsign.Field, b []byte) ([]dkimsign.Field, []byte) {
				for i := range f {
					if f[i].Name == "Subject" {
						f[i].Value = " [list] ARC test"
					}
				}
				return f, b
			}},
		{name: "missing AMS of a set", file: "chain2.eml", status: Fail, reason: "i=1 has no ARC-Message-Signature",
			edit: func(f []dkimsign.Field, b []byte) ([]dkimsign.Field, []byte) {
				i := findField(f, MessageField, 1)
				return append(f[:i:i], f[i+1:]...), b
			}},
		{name: "duplicate instance", file: "chain2.eml", status: Fail, reason: "i=2 has more than one ARC-Authentication-Results",
			edit: func(f []dkimsign.Field, b []byte) ([]dkimsign.Field, []byte) {
				i := findField(f, ResultsField, 2)
				return append([]dkimsign.Field{f[i]}, f...), b
			}},
		{name: "gap", file: "chain3.eml", status: Fail, reason: "no ARC set with i=2",
			edit: func(f []dkimsign.Field, b []byte) ([]dkimsign.Field, []byte) {
				var out []dkimsign.Field
				for _, x := range f {
					if !(IsARCField(x.Name) && strings.Contains(x.Value, "i=2;")) {
						out = append(out, x)
					}
				}
				return out, b
			}},
		{name: "seal covers only part of the chain (i=3 removed)", file: "chain3.eml", status: Pass, instance: 2,
			sealers: "fwd.example lists.example",
			edit: func(f []dkimsign.Field, b []byte) ([]dkimsign.Field, []byte) {
				var out []dkimsign.Field
				for _, x := range f {
					if !(IsARCField(x.Name) && strings.Contains(x.Value, "i=3;")) {
						out = append(out, x)
					}
				}
				return out, b
			}},
		{name: "AMS signs ARC-Seal", file: "chain1.eml", status: Fail, reason: "h= names ARC-Seal",
			edit: func(f []dkimsign.Field, b []byte) ([]dkimsign.Field, []byte) {
				i := findField(f, MessageField, 1)
				f[i].Value = strings.Replace(f[i].Value, "h=from", "h=arc-seal : from", 1)
				return f, b
			}},
		{name: "cv=pass at i=1", file: "chain1.eml", status: Fail, reason: "i=1 ARC-Seal has cv=\"pass\", want none",
			edit: func(f []dkimsign.Field, b []byte) ([]dkimsign.Field, []byte) {
				i := findField(f, SealField, 1)
				f[i].Value = strings.Replace(f[i].Value, "cv=none", "cv=pass", 1)
				return f, b
			}},
		{name: "instance 0", file: "chain1.eml", status: Fail, reason: "not an instance 1..50",
			edit: func(f []dkimsign.Field, b []byte) ([]dkimsign.Field, []byte) {
				i := findField(f, SealField, 1)
				f[i].Value = strings.Replace(f[i].Value, "i=1;", "i=0;", 1)
				return f, b
			}},
		{name: "unknown key", file: "chain1.eml", status: Fail, reason: "i=1 ARC-Message-Signature: key lookup gone._domainkey.fwd.example",
			edit: func(f []dkimsign.Field, b []byte) ([]dkimsign.Field, []byte) {
				i := findField(f, MessageField, 1)
				f[i].Value = strings.Replace(f[i].Value, "s=arc1", "s=gone", 1)
				return f, b
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fields, body := readCase(t, tc.file)
			if tc.edit != nil {
				fields, body = tc.edit(fields, body)
			}
			res := verifyMessage(r, fields, body)
			if res.Status != tc.status {
				t.Fatalf("status %s (%s), want %s", res.Status, res.Reason, tc.status)
			}
			if tc.reason != "" && !strings.Contains(res.Reason, tc.reason) {
				t.Errorf("reason %q, want it to contain %q", res.Reason, tc.reason)
			}
			if tc.status == Pass {
				if res.Instance != tc.instance || strings.Join(res.Sealers, " ") != tc.sealers {
					t.Errorf("instance %d sealers %v, want %d %s", res.Instance, res.Sealers, tc.instance, tc.sealers)
				}
				if want := fmt.Sprintf("192.0.2.%d", tc.instance); res.RemoteIP != want {
					t.Errorf("remote IP %q, want %s", res.RemoteIP, want)
				}
			}
		})
	}
}

// TestFiftyOneInstances attacks the instance limit: 51 sets, and a set
// numbered 51, both fail before any DNS lookup.
func TestFiftyOneInstances(t *testing.T) {
	var many []dkimsign.Field
	for i := 51; i >= 1; i-- {
		many = append(many,
			dkimsign.Field{Name: SealField, Value: fmt.Sprintf(" i=%d; cv=pass; a=rsa-sha256; d=x.example; s=s; b=AA==", i)},
			dkimsign.Field{Name: MessageField, Value: fmt.Sprintf(" i=%d; a=rsa-sha256; d=x.example; s=s; h=from; bh=AA==; b=AA==", i)},
			dkimsign.Field{Name: ResultsField, Value: fmt.Sprintf(" i=%d; x.example; arc=pass", i)})
	}
	for _, tc := range []struct {
		name   string
		fields []dkimsign.Field
	}{
		{"51 sets", many},
		{"i=51 alone", many[:3]},
		{"i=999", []dkimsign.Field{{Name: SealField, Value: " i=999; cv=none"}}},
		{"i=+1", []dkimsign.Field{{Name: SealField, Value: " i=+1; cv=none"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := Verify(context.Background(), failingResolver{t}, tc.fields, ParseChain(tc.fields), nil)
			if res.Status != Fail || !strings.Contains(res.Reason, "1..50") {
				t.Fatalf("got %s %q, want fail naming the 1..50 limit", res.Status, res.Reason)
			}
		})
	}
}

// TestHugeField attacks the field size bound: an ARC field over 64 KiB
// fails the chain before it is parsed further or hashed.
func TestHugeField(t *testing.T) {
	fields := []dkimsign.Field{
		{Name: SealField, Value: " i=1; cv=none; a=rsa-sha256; d=x.example; s=s; b=AA=="},
		{Name: MessageField, Value: " i=1; a=rsa-sha256; d=x.example; s=s; h=from; bh=AA==; b=AA=="},
		{Name: ResultsField, Value: " i=1; x.example; arc=none"},
	}
	for _, name := range []string{SealField, MessageField, ResultsField} {
		t.Run(name, func(t *testing.T) {
			f := append([]dkimsign.Field(nil), fields...)
			for i := range f {
				if f[i].Name == name {
					f[i].Value += strings.Repeat(" ", maxFieldLen)
				}
			}
			res := Verify(context.Background(), failingResolver{t}, f, ParseChain(f), nil)
			if res.Status != Fail || !strings.Contains(res.Reason, "longer than") {
				t.Fatalf("got %s %q, want fail for the size", res.Status, res.Reason)
			}
		})
	}
}

// failingResolver fails the test if a lookup is made.
type failingResolver struct{ t *testing.T }

func (f failingResolver) LookupTXT(context.Context, string) ([]string, error) {
	f.t.Error("unexpected DNS lookup")
	return nil, fmt.Errorf("no DNS in this test")
}

// loadSigner reads a PEM private key of testdata.
func loadSigner(t *testing.T, name string) *SealParams {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", name+".pem"))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(raw)
	k, err := x509.ParsePKCS1PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return &SealParams{Domain: name, Selector: "arc1", Signer: k,
		HeaderKeys: []string{"From", "To", "Subject", "Date", "Message-ID", "From"}, Time: time.Unix(1764979300, 0)}
}

// sealMessage adds a set to a message as policy does and returns the
// new message.
func sealMessage(t *testing.T, r Resolver, p *SealParams, fields []dkimsign.Field, body []byte, ar string) ([]byte, error) {
	t.Helper()
	c := ParseChain(fields)
	res := verifyMessage(r, fields, body)
	h := dkimsign.NewBodyHasher(dkimsign.Relaxed)
	h.Write(body)
	p.AuthResults = ar
	set, err := Seal(*p, fields, c, res.Status, h.Sum())
	if err != nil {
		return nil, err
	}
	return joinMessage(append(set, fields...), body), nil
}

func TestSealVerifies(t *testing.T) {
	r := keyServer(t)
	p := loadSigner(t, "relay.example")
	for _, tc := range []struct {
		file     string
		want     Status
		instance int
	}{
		{"chain1.eml", Pass, 2},
		{"chain2.eml", Pass, 3},
	} {
		fields, body := readCase(t, tc.file)
		msg, err := sealMessage(t, r, p, fields, body, "relay.example;\r\n\tarc=pass smtp.remote-ip=192.0.2.3;\r\n\tdmarc=pass header.from=example.org")
		if err != nil {
			t.Fatal(err)
		}
		res := verifyRaw(t, r, msg)
		if res.Status != tc.want || res.Instance != tc.instance {
			t.Fatalf("%s sealed: %s i=%d (%s), want %s i=%d\n%s", tc.file, res.Status, res.Instance, res.Reason, tc.want, tc.instance, msg)
		}
	}
	// A message without a chain gets i=1, cv=none.
	fields, body := readCase(t, "chain1.eml")
	var plain []dkimsign.Field
	for _, f := range fields {
		if !IsARCField(f.Name) {
			plain = append(plain, f)
		}
	}
	msg, err := sealMessage(t, r, p, plain, body, "relay.example; dmarc=pass header.from=example.org")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(msg, []byte("cv=none")) {
		t.Errorf("first seal without cv=none:\n%s", msg)
	}
	if res := verifyRaw(t, r, msg); res.Status != Pass || res.Instance != 1 {
		t.Fatalf("own i=1 seal: %s (%s)", res.Status, res.Reason)
	}
}

// verifyRaw verifies a whole message.
func verifyRaw(t *testing.T, r Resolver, msg []byte) Result {
	t.Helper()
	fields, body := splitMessage(t, msg)
	return verifyMessage(r, fields, body)
}

// TestSealFailedChain: a chain that fails gets cv=fail; one already
// marked cv=fail, or at instance 50, or malformed, is not sealed.
func TestSealFailedChain(t *testing.T) {
	r := keyServer(t)
	p := loadSigner(t, "relay.example")
	fields, body := readCase(t, "chain2.eml")
	body = append(body, "footer\r\n"...)
	msg, err := sealMessage(t, r, p, fields, body, "relay.example; arc=fail")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(msg, []byte("cv=fail")) {
		t.Fatalf("failed chain sealed without cv=fail:\n%s", msg)
	}
	res := verifyRaw(t, r, msg)
	if res.Status != Fail || !strings.Contains(res.Reason, "i=3 ARC-Seal has cv=fail") {
		t.Fatalf("after cv=fail seal: %s %q", res.Status, res.Reason)
	}

	fields, body = readCase(t, "cvfail.eml")
	if _, err := sealMessage(t, r, p, fields, body, "relay.example; arc=fail"); err != ErrNotSealable {
		t.Errorf("sealing over cv=fail: err %v, want ErrNotSealable", err)
	}
	fields, body = readCase(t, "chain2.eml")
	i := findField(fields, SealField, 1)
	fields = append(fields[:i:i], fields[i+1:]...)
	if _, err := sealMessage(t, r, p, fields, body, "relay.example; arc=fail"); err != ErrNotSealable {
		t.Errorf("sealing a malformed chain: err %v, want ErrNotSealable", err)
	}
	full := &Chain{Sets: make([]Set, MaxInstance)}
	if _, err := Seal(*p, fields, full, Pass, make([]byte, 32)); err != ErrNotSealable {
		t.Errorf("sealing at i=51: err %v, want ErrNotSealable", err)
	}
}

func TestSealEd25519(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(nil)
	s := testdns.Start(t)
	s.SetTXT("ed._domainkey.ed.example", "v=DKIM1; k=ed25519; p="+b64(pub))
	r, err := resolve.New(resolve.Config{Servers: []string{s.Addr()}, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	fields, body := readCase(t, "chain1.eml")
	p := &SealParams{Domain: "ed.example", Selector: "ed", Signer: priv, HeaderKeys: []string{"From", "Subject"}, Time: time.Now()}
	s.AddZoneFile(t, filepath.Join("testdata", "keys.zone"))
	msg, err := sealMessage(t, r, p, fields, body, "ed.example; arc=pass")
	if err != nil {
		t.Fatal(err)
	}
	if res := verifyRaw(t, r, msg); res.Status != Pass || res.Instance != 2 {
		t.Fatalf("ed25519 seal: %s (%s)", res.Status, res.Reason)
	}
}

func TestResultsPass(t *testing.T) {
	for _, tc := range []struct {
		aar  string
		want bool
	}{
		{" i=1; lists.example; dmarc=pass header.from=example.org", true},
		{" i=1; lists.example; spf=pass;\r\n dmarc=pass (p=reject) header.from=example.org", true},
		{" i=1; lists.example; dmarc=fail header.from=example.org", false},
		{" i=1; lists.example (dmarc=pass); spf=pass", false},
		{" i=1; dmarc=pass", false}, // the authserv-id is not a result
		{" i=1; x; spf=pass (comment; dmarc=pass)", false},
		{"", false},
	} {
		if got := ResultsPass(tc.aar, "dmarc"); got != tc.want {
			t.Errorf("ResultsPass(%q) = %v, want %v", tc.aar, got, tc.want)
		}
	}
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func TestOldestPass(t *testing.T) {
	r := keyServer(t)
	for _, tc := range []struct {
		file string
		want int
	}{
		{"chain1.eml", 0},
		{"chain3.eml", 0},
		{"footer.eml", 3},
	} {
		fields, body := readCase(t, tc.file)
		c := ParseChain(fields)
		if res := verifyMessage(r, fields, body); res.Status != Pass {
			t.Fatalf("%s: %s (%s)", tc.file, res.Status, res.Reason)
		}
		hash := func(canon dkimsign.Canon) []byte {
			h := dkimsign.NewBodyHasher(canon)
			h.Write(body)
			return h.Sum()
		}
		if got := OldestPass(context.Background(), r, fields, c, hash); got != tc.want {
			t.Errorf("%s: oldest-pass %d, want %d", tc.file, got, tc.want)
		}
	}
}

// TestFiftySeals builds a real chain of 50 sets (Ed25519, fast): it
// passes, and a 51st set is refused, both by Seal and, when forced onto
// the message by hand, by Verify.
func TestFiftySeals(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(nil)
	s := testdns.Start(t)
	s.SetTXT("ed._domainkey.ed.example", "v=DKIM1; k=ed25519; p="+b64(pub))
	r, err := resolve.New(resolve.Config{Servers: []string{s.Addr()}, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	p := &SealParams{Domain: "ed.example", Selector: "ed", Signer: priv, HeaderKeys: []string{"From"}, Time: time.Unix(1764979200, 0)}
	msg := []byte("From: a@example.org\r\n\r\nbody\r\n")
	for i := 1; i <= MaxInstance; i++ {
		fields, body := splitMessage(t, msg)
		if msg, err = sealMessage(t, r, p, fields, body, "ed.example; arc=pass"); err != nil {
			t.Fatalf("seal %d: %v", i, err)
		}
	}
	if res := verifyRaw(t, r, msg); res.Status != Pass || res.Instance != MaxInstance {
		t.Fatalf("50 sets: %s i=%d (%s)", res.Status, res.Instance, res.Reason)
	}
	fields, body := splitMessage(t, msg)
	if _, err := sealMessage(t, r, p, fields, body, "ed.example; arc=pass"); err != ErrNotSealable {
		t.Fatalf("51st seal: err %v, want ErrNotSealable", err)
	}
	forged := append([]dkimsign.Field{
		{Name: SealField, Value: " i=51; cv=pass; a=ed25519-sha256; d=ed.example; s=ed; b=AA=="},
		{Name: MessageField, Value: " i=51; a=ed25519-sha256; d=ed.example; s=ed; h=from; bh=AA==; b=AA=="},
		{Name: ResultsField, Value: " i=51; ed.example; arc=pass"},
	}, fields...)
	if res := verifyMessage(r, forged, body); res.Status != Fail || !strings.Contains(res.Reason, "1..50") {
		t.Fatalf("51 sets: %s %q", res.Status, res.Reason)
	}
}
