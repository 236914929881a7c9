package web_test

// The JSON forms (?format=json) of the pages, as far as the tests read
// them (web/keyrows.go, web/dmarc.go, web/overview.go document them).

// keysJSON is /keys.
type keysJSON struct {
	Total   int              `json:"total"`
	Domains []domainKeysJSON `json:"domains"`
}

// domainKeysJSON is a domain of /keys, and /keys/{domain}.
type domainKeysJSON struct {
	Domain   string        `json:"domain"`
	Keys     []keyJSON     `json:"keys"`
	Warnings []string      `json:"warnings"`
	Retired  []retiredJSON `json:"retired"`
}

// keyJSON is one key.
type keyJSON struct {
	Domain      string   `json:"domain"`
	Selector    string   `json:"selector"`
	Algorithm   string   `json:"algorithm"`
	DNS         string   `json:"dns"`
	Active      bool     `json:"active"`
	WhyInactive string   `json:"why_inactive"`
	Warnings    []string `json:"warnings"`
}

// retiredJSON is a retired key of /keys/{domain}.
type retiredJSON struct {
	Selector  string `json:"selector"`
	Checked   string `json:"checked"`
	Withdrawn bool   `json:"withdrawn"`
	State     string `json:"state"`
}

// keyMap indexes the keys of domains by domain/selector.
func keyMap(domains []domainKeysJSON) map[string]keyJSON {
	m := map[string]keyJSON{}
	for _, d := range domains {
		for _, k := range d.Keys {
			m[k.Domain+"/"+k.Selector] = k
		}
	}
	return m
}

// totalsJSON are DMARC sums.
type totalsJSON struct {
	Messages    int64 `json:"messages"`
	DKIMAligned int64 `json:"dkim_aligned"`
	SPFAligned  int64 `json:"spf_aligned"`
	Pass        int64 `json:"dmarc_pass"`
	Neither     int64 `json:"neither"`
}

// dmarcJSON is /dmarc.
type dmarcJSON struct {
	Side    string `json:"side"`
	Total   int    `json:"total"`
	Domains []struct {
		Domain string `json:"domain"`
		totalsJSON
	} `json:"domains"`
}

// dmarcDomainJSON is /dmarc/{domain}.
type dmarcDomainJSON struct {
	Domain  string     `json:"domain"`
	Side    string     `json:"side"`
	Totals  totalsJSON `json:"totals"`
	Sources []struct {
		IP  string `json:"ip"`
		Org string `json:"org"`
		totalsJSON
	} `json:"sources"`
	Orgs []struct {
		Org    string     `json:"org"`
		Totals totalsJSON `json:"totals"`
	} `json:"organisations"`
}

// overviewJSON is /.
type overviewJSON struct {
	Version string `json:"version"`
	Reload  struct {
		At         string `json:"at"`
		OK         bool   `json:"ok"`
		Error      string `json:"error"`
		Generation int64  `json:"generation"`
	} `json:"reload"`
	KeysTotal  int `json:"keys_total"`
	KeysActive int `json:"keys_active"`
	Windows    []struct {
		Window           string  `json:"window"`
		OutboundMessages float64 `json:"outbound_messages"`
		OutboundSigned   float64 `json:"outbound_signed"`
		InboundMessages  float64 `json:"inbound_messages"`
	} `json:"windows"`
}
