package policy

import (
	"crypto/x509"
	"encoding/base64"
	"testing"

	"github.com/authmilter/authmilter/keys"
)

// BenchmarkVerifyKeyParse is what a cache of parsed DKIM public keys
// would save per verified RSA-2048 signature: the base64 decoding and
// SubjectPublicKeyInfo parse go-msgauth does for every signature it
// verifies (dkim.parsePublicKey), on the record BenchmarkVerify's
// signature uses. Compare it with BenchmarkVerify (one whole message):
//
//	go test -run '^$' -bench 'BenchmarkVerify(KeyParse)?$' -benchmem ./policy
//
// go-msgauth v0.7.0 takes key records only as TXT text
// (dkim.VerifyOptions.LookupTXT) and parses them itself, so no cache can
// hand it a parsed key; this benchmark is the evidence for leaving that
// out (see issue 14).
func BenchmarkVerifyKeyParse(b *testing.B) {
	pol := benchPolicy(b, "2026-11")
	rec, err := keys.ParseRecord(keys.FormatRecord(pol.SigningKeys("example.com")[0]))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		der, err := base64.StdEncoding.DecodeString(rec.PublicKey)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := x509.ParsePKIXPublicKey(der); err != nil {
			b.Fatal(err)
		}
	}
}
