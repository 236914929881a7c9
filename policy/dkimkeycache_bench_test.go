package policy

import (
	"testing"

	"github.com/authmilter/authmilter/keys"
)

// BenchmarkVerifyKeyParse is what the parsed-key cache saves per verified
// RSA-2048 signature: parsing the key record BenchmarkVerify's signature
// uses (tag list, base64, SubjectPublicKeyInfo), which go-msgauth did for
// every signature it verified. BenchmarkVerifyKeyCached is the same key
// from the cache, what the verifier pays now. Compare them with
// BenchmarkVerify (one whole message):
//
//	go test -run '^$' -bench 'BenchmarkVerify(Key.*)?$' -benchmem ./policy
func BenchmarkVerifyKeyParse(b *testing.B) {
	txt := keys.FormatRecord(benchPolicy(b, "2026-11").SigningKeys("example.com")[0])
	b.ReportAllocs()
	for b.Loop() {
		if _, err := parseDKIMKey(txt); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyKeyCached: see BenchmarkVerifyKeyParse.
func BenchmarkVerifyKeyCached(b *testing.B) {
	txt := keys.FormatRecord(benchPolicy(b, "2026-11").SigningKeys("example.com")[0])
	c := newDKIMKeyCache(DKIMKeyCacheSize)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.key(txt); err != nil {
			b.Fatal(err)
		}
	}
}
