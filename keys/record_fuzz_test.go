package keys

import "testing"

// FuzzParseRecord: DKIM key records come from DNS, i.e. from anyone.
func FuzzParseRecord(f *testing.F) {
	for _, s := range []string{"v=DKIM1; k=rsa; p=AAAA", "p=", "v=DKIM1; k=ed25519; t=y:s; p=AA AA", ";;;=", "p=%%%"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRecord(s)
		if err != nil {
			return
		}
		_, _ = r.ParsePublicKey()
	})
}
