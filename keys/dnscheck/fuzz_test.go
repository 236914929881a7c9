package dnscheck

import (
	"crypto/ed25519"
	"strings"
	"testing"

	"github.com/authmilter/authmilter/keys"
)

// FuzzClassify: whatever TXT records a (hostile) name holds, the verdict is
// one of the publication states, never Published unless one record holds
// exactly the wanted key, and nothing panics.
func FuzzClassify(f *testing.F) {
	pub := ed25519.NewKeyFromSeed(make([]byte, 32)).Public().(ed25519.PublicKey)
	own := "v=DKIM1; k=ed25519; p=" + keys.PublicKeyData(pub)
	f.Add(own, "", "")
	f.Add("v=DKIM1; k=rsa; p=", own, "v=spf1 -all")
	f.Add("v=DKIM1; p=AAAA; p=BBBB", "k=ed25519;p="+keys.PublicKeyData(pub)+";t=y", "x")
	f.Fuzz(func(t *testing.T, a, b, known string) {
		var txts []string
		for _, s := range []string{a, b} {
			if s != "" {
				txts = append(txts, s)
			}
		}
		st, detail := Classify(txts, "sel._domainkey.example.com", pub, []string{known})
		switch st {
		case keys.Published, keys.Missing, keys.Mismatch, keys.Revoked, keys.Foreign:
		default:
			t.Fatalf("Classify(%q) = %s (%s): not a state a record can have", txts, st, detail)
		}
		if st == keys.Published {
			found := false
			for _, s := range txts {
				found = found || strings.Contains(strings.ReplaceAll(s, " ", ""), keys.PublicKeyData(pub))
			}
			if !found {
				t.Fatalf("Classify(%q) = published without the key's p=", txts)
			}
		}
	})
}
