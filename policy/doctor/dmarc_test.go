package doctor

import "testing"

func TestMailtoHost(t *testing.T) {
	cases := []struct {
		uri, host string
		ok        bool
	}{
		{"mailto:dmarc@Example.COM", "example.com", true},
		{"MAILTO:dmarc@example.com.", "example.com", true},
		{"mailto:dmarc@example.com?subject=x", "example.com", true},
		{"mailto:a@x.example,b@y.example", "", false},
		{"mailto:@example.com", "", false},
		{"mailto:dmarc@", "", false},
		{"mailto:dmarc", "", false},
		{"https://example.com/dmarc", "", false},
		{"dmarc@example.com", "", false},
	}
	for _, c := range cases {
		host, ok := mailtoHost(c.uri)
		if host != c.host || ok != c.ok {
			t.Errorf("mailtoHost(%q) = %q, %v; want %q, %v", c.uri, host, ok, c.host, c.ok)
		}
	}
}
