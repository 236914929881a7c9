package interop

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// newKey generates a key (RSA 2048 or Ed25519), writes it as PKCS#8 PEM
// with mode 0600 under t.TempDir() and returns the PEM.
func newKey(t *testing.T, kind string) []byte {
	t.Helper()
	var priv any
	switch kind {
	case "rsa":
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		priv = k
	case "ed25519":
		_, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		priv = k
	default:
		t.Fatalf("unknown key kind %q", kind)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	p := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	path := filepath.Join(t.TempDir(), kind+".pem")
	if err := os.WriteFile(path, p, 0o600); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// publish puts the key's DKIM record at selector._domainkey.domain.
func publish(t *testing.T, d *miniDNS, selector, domain string, keyPEM []byte) {
	t.Helper()
	rec, err := DNSRecord(keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	d.SetTXT(selector+"._domainkey."+domain, rec)
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	t.Cleanup(cancel)
	return ctx
}

const plainMsg = "From: Alice <alice@example.com>\r\n" +
	"To: Bob <bob@example.org>\r\n" +
	"Subject: interop test\r\n" +
	"Date: Mon, 24 Nov 2025 10:00:00 +0000\r\n" +
	"Message-ID: <interop-1@example.com>\r\n" +
	"\r\n" +
	"Hello Bob,\r\n" +
	"this is a test.\r\n"

// tamperBody changes the last byte before the final CRLF.
func tamperBody(t *testing.T, msg []byte) []byte {
	t.Helper()
	out := append([]byte(nil), msg...)
	i := len(out) - 3
	if i < 0 || out[i] == '\n' {
		t.Fatalf("cannot tamper %q", msg)
	}
	out[i] ^= 0x01
	return out
}

// checkBoth verifies with both peers and wants pass (or fail) for every
// signature; want is the expected number of signatures.
func checkBoth(t *testing.T, ctx context.Context, d *miniDNS, msg []byte, pass bool, want int) {
	t.Helper()
	py, err := VerifyDkimpy(ctx, msg, d.Addr())
	if err != nil {
		t.Fatalf("dkimpy: %v", err)
	}
	if len(py) != want {
		t.Errorf("dkimpy returned %d results, want %d: %v", len(py), want, py)
	}
	for _, r := range py {
		if r.OK != pass {
			t.Errorf("dkimpy: %v, want ok=%v", r, pass)
		}
	}
	od, err := VerifyOpenDKIMEach(ctx, msg, d.IP())
	if err != nil {
		t.Fatalf("opendkim: %v", err)
	}
	if len(od) != want {
		t.Errorf("opendkim returned %d results, want %d: %v", len(od), want, od)
	}
	for _, r := range od {
		if (r.Result == "pass") != pass {
			t.Errorf("opendkim: %v, want pass=%v", r, pass)
		}
	}
	err = VerifyOpenDKIM(ctx, msg, d.IP())
	if (err == nil) != pass {
		t.Errorf("VerifyOpenDKIM = %v, want pass=%v", err, pass)
	}
	_, err = VerifyDkimpyAll(ctx, msg, d.Addr())
	if (err == nil) != pass {
		t.Errorf("VerifyDkimpyAll = %v, want pass=%v", err, pass)
	}
}

func TestDkimpySignedVerifiesWithBoth(t *testing.T) {
	ctx := testCtx(t)
	d := startDNS(t)
	for _, tc := range []struct {
		kind, algo, hc, bc string
	}{
		{"rsa", "rsa-sha256", "relaxed", "relaxed"},
		{"rsa", "rsa-sha256", "simple", "simple"},
		{"ed25519", "ed25519-sha256", "relaxed", "simple"},
	} {
		t.Run(tc.algo+"/"+tc.hc+"/"+tc.bc, func(t *testing.T) {
			key := newKey(t, tc.kind)
			sel := "s" + tc.kind + tc.hc + tc.bc
			publish(t, d, sel, "example.com", key)
			signed, err := SignDkimpy(ctx, []byte(plainMsg), sel, "example.com", key, tc.hc, tc.bc, tc.algo)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(signed, []byte("DKIM-Signature: ")) || !bytes.HasSuffix(signed, []byte(plainMsg)) {
				t.Fatalf("unexpected signed message:\n%s", signed)
			}
			checkBoth(t, ctx, d, signed, true, 1)
			checkBoth(t, ctx, d, tamperBody(t, signed), false, 1)
			d.SetTXT(sel + "._domainkey.example.com") // revoke
			checkBoth(t, ctx, d, signed, false, 1)
		})
	}
}

func TestOpenDKIMSignedVerifiesWithBoth(t *testing.T) {
	ctx := testCtx(t)
	d := startDNS(t)
	for _, tc := range []struct{ kind, canon string }{
		{"rsa", "relaxed/relaxed"},
		{"rsa", "simple/simple"},
		{"ed25519", "relaxed/simple"},
	} {
		t.Run(tc.kind+"/"+tc.canon, func(t *testing.T) {
			key := newKey(t, tc.kind)
			sel := "od" + tc.kind + strings.ReplaceAll(tc.canon, "/", "")
			publish(t, d, sel, "example.com", key)
			signed, err := SignOpenDKIM(ctx, []byte(plainMsg), "example.com", sel, key, tc.canon)
			if err != nil {
				t.Fatal(err)
			}
			sig := string(signed[:bytes.Index(signed, []byte("\r\nFrom:"))])
			for _, want := range []string{"d=example.com", "s=" + sel, "c=" + tc.canon} {
				if !strings.Contains(sig, want) {
					t.Errorf("signature lacks %q:\n%s", want, sig)
				}
			}
			if tc.kind == "ed25519" && !strings.Contains(sig, "a=ed25519-sha256") {
				t.Errorf("not an Ed25519 signature:\n%s", sig)
			}
			checkBoth(t, ctx, d, signed, true, 1)
			checkBoth(t, ctx, d, tamperBody(t, signed), false, 1)
		})
	}
}

// Two signatures (RSA and Ed25519): each is reported on its own, and a
// failure of one does not hide behind the other.
func TestPerSignatureResults(t *testing.T) {
	ctx := testCtx(t)
	d := startDNS(t)
	rsaKey, edKey := newKey(t, "rsa"), newKey(t, "ed25519")
	publish(t, d, "r1", "example.com", rsaKey)
	publish(t, d, "e1", "example.com", edKey)
	one, err := SignDkimpy(ctx, []byte(plainMsg), "e1", "example.com", edKey, "relaxed", "relaxed", "ed25519-sha256")
	if err != nil {
		t.Fatal(err)
	}
	two, err := SignDkimpy(ctx, one, "r1", "example.com", rsaKey, "relaxed", "relaxed", "rsa-sha256")
	if err != nil {
		t.Fatal(err)
	}
	checkBoth(t, ctx, d, two, true, 2)

	od, err := VerifyOpenDKIMEach(ctx, two, d.IP())
	if err != nil {
		t.Fatal(err)
	}
	algos := map[string]bool{}
	for _, r := range od {
		algos[r.Algorithm] = true
		if r.Domain != "example.com" || r.BPrefix == "" {
			t.Errorf("incomplete result %v", r)
		}
	}
	if !algos["rsa-sha256"] || !algos["ed25519-sha256"] {
		t.Errorf("OpenDKIM results %v, want one rsa-sha256 and one ed25519-sha256", od)
	}

	// Break the RSA signature's b= only. (opendkim-testmsg exits 0 for this
	// message: it reports only whether some signature verified.)
	i := bytes.Index(two, []byte("\r\n b="))
	if i < 0 || bytes.Index(two, []byte("a=rsa-sha256")) > i {
		t.Fatalf("cannot find the RSA signature's b= in\n%s", two)
	}
	broken := append([]byte(nil), two...)
	broken[i+8] ^= 0x01
	od, err = VerifyOpenDKIMEach(ctx, broken, d.IP())
	if err != nil {
		t.Fatal(err)
	}
	py, err := VerifyDkimpy(ctx, broken, d.Addr())
	if err != nil {
		t.Fatal(err)
	}
	if len(od) != 2 || len(py) != 2 {
		t.Fatalf("want 2 results each, got %v and %v", od, py)
	}
	for _, r := range od {
		if (r.Result == "pass") != (r.Algorithm == "ed25519-sha256") {
			t.Errorf("OpenDKIM with broken RSA b=: %v", r)
		}
	}
	for _, r := range py {
		if r.OK != (r.Algorithm == "ed25519-sha256") {
			t.Errorf("dkimpy with broken RSA b=: %v", r)
		}
	}
	if err := VerifyOpenDKIM(ctx, broken, d.IP()); err == nil {
		t.Error("VerifyOpenDKIM passed with one broken signature")
	}

	// Revoke the Ed25519 key only: one pass, one failure, from each peer.
	d.SetTXT("e1._domainkey.example.com")
	py, err = VerifyDkimpy(ctx, two, d.Addr())
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range py {
		if r.OK != (r.Algorithm == "rsa-sha256") {
			t.Errorf("dkimpy after revoking e1: %v", r)
		}
	}
	od, err = VerifyOpenDKIMEach(ctx, two, d.IP())
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range od {
		if (r.Result == "pass") != (r.Algorithm == "rsa-sha256") {
			t.Errorf("OpenDKIM after revoking e1: %v", r)
		}
	}
	if err := VerifyOpenDKIM(ctx, two, d.IP()); err == nil {
		t.Error("VerifyOpenDKIM passed with one revoked key")
	}
	if _, err := VerifyDkimpyAll(ctx, two, d.Addr()); err == nil {
		t.Error("VerifyDkimpyAll passed with one revoked key")
	}
}

// Simple header canonicalization over fields whose white space after the
// colon is unusual: this only passes when the header values reach OpenDKIM
// with their leading white space (SMFIP_HDR_LEADSPC), as with Postfix.
func TestSimpleHeaderWhitespace(t *testing.T) {
	ctx := testCtx(t)
	d := startDNS(t)
	key := newKey(t, "rsa")
	publish(t, d, "ws", "example.com", key)
	msg := "From: Alice <alice@example.com>\r\n" +
		"To:bob@example.org\r\n" +
		"Subject:\ttab and  two  spaces \r\n" +
		"Cc:  carol@example.org\r\n" +
		"Date: Mon, 24 Nov 2025 10:00:00 +0000\r\n" +
		"\r\n" +
		"body\r\n"
	signed, err := SignDkimpy(ctx, []byte(msg), "ws", "example.com", key, "simple", "simple", "rsa-sha256")
	if err != nil {
		t.Fatal(err)
	}
	checkBoth(t, ctx, d, signed, true, 1)
}

func TestUnsigned(t *testing.T) {
	ctx := testCtx(t)
	d := startDNS(t)
	py, err := VerifyDkimpy(ctx, []byte(plainMsg), d.Addr())
	if err != nil || len(py) != 0 {
		t.Errorf("dkimpy: %v %v", py, err)
	}
	od, err := VerifyOpenDKIMEach(ctx, []byte(plainMsg), d.IP())
	if err != nil || len(od) != 0 {
		t.Errorf("opendkim: %v %v", od, err)
	}
	if err := VerifyOpenDKIM(ctx, []byte(plainMsg), d.IP()); err == nil {
		t.Error("VerifyOpenDKIM passed an unsigned message")
	}
	if _, err := VerifyDkimpyAll(ctx, []byte(plainMsg), d.Addr()); err == nil {
		t.Error("VerifyDkimpyAll passed an unsigned message")
	}
}

func TestMissingTools(t *testing.T) {
	ctx := testCtx(t)
	savedPy, savedOD := pythonBin, opendkimBin
	t.Cleanup(func() {
		pythonBin, opendkimBin = savedPy, savedOD
		dkimpyMu.Lock()
		dkimpyOK = false
		dkimpyMu.Unlock()
	})
	dkimpyMu.Lock()
	dkimpyOK = false
	dkimpyMu.Unlock()
	pythonBin = "/nonexistent/python3"
	opendkimBin = "/nonexistent/opendkim"
	_, err := VerifyDkimpy(ctx, []byte(plainMsg), "127.0.0.1:53")
	var mt *MissingToolError
	if !errors.Is(err, ErrToolMissing) || !errors.As(err, &mt) || !strings.Contains(err.Error(), "apt-get install python3") {
		t.Errorf("dkimpy: %v", err)
	}
	err = VerifyOpenDKIM(ctx, []byte(plainMsg), "127.0.0.1")
	if !errors.Is(err, ErrToolMissing) || !strings.Contains(err.Error(), "apt-get install opendkim") {
		t.Errorf("opendkim: %v", err)
	}
	// A python3 without the dkim module.
	pythonBin = savedPy
	t.Setenv("PYTHONPATH", "")
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "dkim.py"), []byte("raise ImportError('no dkim here')\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PYTHONPATH", dir)
	_, err = VerifyDkimpy(ctx, []byte(plainMsg), "127.0.0.1:53")
	if !errors.Is(err, ErrToolMissing) || !strings.Contains(err.Error(), "apt-get install python3-dkim") {
		t.Errorf("dkimpy without module: %v", err)
	}
}

func TestToolErrorsCarryOutput(t *testing.T) {
	ctx := testCtx(t)
	key := newKey(t, "rsa")
	// dkimpy refuses a header field with a space before the colon.
	_, err := SignDkimpy(ctx, []byte("From: a@example.com\r\nCc : b@example.com\r\n\r\nx\r\n"), "s", "example.com", key, "relaxed", "relaxed", "rsa-sha256")
	var te *ToolError
	if !errors.As(err, &te) || !strings.Contains(te.Stderr, "Unexpected characters in RFC822 header") || !strings.Contains(te.Cmd, "dkimpy_sign.py") {
		t.Errorf("err = %v", err)
	}
	if _, err := SignDkimpy(ctx, []byte(plainMsg), "s", "example.com", key, "relaxed", "relaxed", "ed25519-sha256"); err == nil {
		t.Error("algorithm/key mismatch accepted")
	}
	if _, err := DNSIP("127.0.0.1:5353"); err == nil {
		t.Error("DNSIP accepted port 5353")
	}
}

func TestParseOpenDKIMAR(t *testing.T) {
	v := openDKIMAuthservID + ";\n\tdkim=pass (2048-bit key; unprotected) header.d=example.com header.i=@example.com header.a=rsa-sha256 header.s=r1 header.b=GaJn2O67;\n\tdkim=fail reason=\"signature verification failed\" header.d=example.com header.i=@example.com header.a=ed25519-sha256 header.s=e1 header.b=+bkbw8WJ;\n\tdkim-atps=neutral"
	got, err := parseOpenDKIMAR(v)
	if err != nil {
		t.Fatal(err)
	}
	want := []OpenDKIMResult{
		{Result: "pass", Comment: "2048-bit key; unprotected", Domain: "example.com", Identity: "@example.com", Algorithm: "rsa-sha256", Selector: "r1", BPrefix: "GaJn2O67"},
		{Result: "fail", Reason: "signature verification failed", Domain: "example.com", Identity: "@example.com", Algorithm: "ed25519-sha256", Selector: "e1", BPrefix: "+bkbw8WJ"},
	}
	if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("got %#v\nwant %#v", got, want)
	}
}
