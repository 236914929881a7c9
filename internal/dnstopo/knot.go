package dnstopo

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/authmilter/authmilter/internal/dnsproc"
)

// Server is one authoritative server (knotd) of the world.
type Server struct {
	// Name is the server's role: root, primary, secondary, customers.
	Name string
	// IP is its address; it listens on port 53.
	IP string
	// Zones are the zones it serves, parents first.
	Zones []string

	tsig *TSIG // the key it accepts updates with; nil: none
	dir  string
	sock string // knotc control socket
	proc *dnsproc.Process
}

// Addr returns "IP:53".
func (s *Server) Addr() string { return net.JoinHostPort(s.IP, "53") }

// Logs returns what the server logged so far.
func (s *Server) Logs() string {
	if s.proc == nil {
		return ""
	}
	return s.proc.Logs()
}

// startKnot writes the configuration and zone files of s, starts knotd and
// waits until it answers for every zone (the secondary: until it has
// loaded every zone from the primary).
func (w *World) startKnot(ctx context.Context, s *Server) error {
	s.dir = filepath.Join(w.Dir, s.Name)
	s.sock = dnsproc.KnotControlSocket(s.dir)
	if err := os.MkdirAll(filepath.Join(s.dir, "db"), 0o700); err != nil {
		return fmt.Errorf("%s: %w", s.Name, err)
	}
	secondary := s == w.Secondary
	var conf strings.Builder
	conf.WriteString(dnsproc.KnotServerConf(s.dir, s.IP+"@53"))
	if s.tsig != nil {
		fmt.Fprintf(&conf, "key:\n  - id: %s\n    algorithm: %s\n    secret: %s\n", s.tsig.Name, s.tsig.Algorithm, s.tsig.Secret)
	}
	// Transfers and NOTIFYs are sent from the server's own address ("via"):
	// the kernel would pick 127.0.0.1, and the ACLs go by address.
	switch {
	case s == w.Primary:
		fmt.Fprintf(&conf, `remote:
  - id: secondary
    address: %s@53
    via: %s
acl:
  - id: update
    key: %s
    action: update
  - id: transfer
    address: %s
    action: transfer
`, SecondaryIP, PrimaryIP, s.tsig.Name, SecondaryIP)
	case secondary:
		fmt.Fprintf(&conf, `remote:
  - id: primary
    address: %s@53
    via: %s
acl:
  - id: notify
    address: %s
    action: notify
`, PrimaryIP, SecondaryIP, PrimaryIP)
	default:
		fmt.Fprintf(&conf, "acl:\n  - id: update\n    key: %s\n    action: update\n", s.tsig.Name)
	}
	// Zone files are read at start only; changes live in the journal
	// (zonefile-sync -1 never writes them back).
	fmt.Fprintf(&conf, `template:
  - id: default
    storage: "%s"
    zonefile-sync: -1
    journal-content: changes
    serial-policy: increment
`, s.dir)
	switch {
	case s == w.Primary:
		conf.WriteString("    zonefile-load: whole\n    notify: secondary\n    acl: [update, transfer]\n")
	case secondary:
		conf.WriteString("    zonefile-load: none\n    master: primary\n    acl: notify\n")
	default:
		conf.WriteString("    zonefile-load: whole\n    acl: update\n")
	}
	conf.WriteString("zone:\n")
	for i, z := range s.Zones {
		// Each zone names its own file: knot's "%s" for the root is ".".
		file := filepath.Join(s.dir, fmt.Sprintf("zone%d.zone", i))
		fmt.Fprintf(&conf, "  - domain: %s\n    file: %q\n", fqdn(z), file)
		if secondary {
			continue
		}
		if err := os.WriteFile(file, []byte(w.zoneFile(w.zones[z])), 0o600); err != nil {
			return fmt.Errorf("%s: zone file: %w", s.Name, err)
		}
	}
	confPath := filepath.Join(s.dir, "knot.conf")
	if err := os.WriteFile(confPath, []byte(conf.String()), 0o600); err != nil {
		return fmt.Errorf("%s: %w", s.Name, err)
	}
	if out, err := dnsproc.Run(ctx, KnotcBinary, "-c", confPath, "conf-check"); err != nil {
		return fmt.Errorf("%s: configuration refused: %w\n%s\n%s", s.Name, err, out, conf.String())
	}
	p, err := startProcess(w.t, confPath, KnotBinary, "-c", confPath)
	if err != nil {
		return fmt.Errorf("%s: %w", s.Name, err)
	}
	s.proc = p
	err = p.WaitReady(ctx, func(context.Context) error {
		for _, z := range s.Zones {
			if _, err := s.Serial(z); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("%s does not serve its zones on %s: %w", s.Name, s.Addr(), err)
	}
	return nil
}

// Query asks the server (no recursion) for name and type, over UDP and
// again over TCP when the answer is truncated.
func (s *Server) Query(ctx context.Context, name string, qtype uint16) (*dns.Msg, error) {
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(name), qtype)
	q.RecursionDesired = false
	return exchange(ctx, q, s.Addr())
}

// exchange sends q to addr over UDP, then TCP if truncated.
func exchange(ctx context.Context, q *dns.Msg, addr string) (*dns.Msg, error) {
	q.SetEdns0(4096, false)
	c := &dns.Client{Net: "udp", Timeout: 3 * time.Second, UDPSize: 4096}
	r, _, err := c.ExchangeContext(ctx, q, addr)
	if err == nil && r.Truncated {
		c.Net = "tcp"
		r, _, err = c.ExchangeContext(ctx, q, addr)
	}
	if err != nil {
		return nil, fmt.Errorf("query %s %s at %s: %w", q.Question[0].Name, dns.TypeToString[q.Question[0].Qtype], addr, err)
	}
	return r, nil
}

// Serial returns the SOA serial the server serves for zone; an error when
// it does not serve the zone (yet).
func (s *Server) Serial(zone string) (uint32, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := s.Query(ctx, fqdn(canon(zone)), dns.TypeSOA)
	if err != nil {
		return 0, err
	}
	if r.Rcode != dns.RcodeSuccess || !r.Authoritative {
		return 0, fmt.Errorf("%s: SOA %s: %s (aa=%v)", s.Name, zone, dns.RcodeToString[r.Rcode], r.Authoritative)
	}
	for _, rr := range r.Answer {
		if soa, ok := rr.(*dns.SOA); ok {
			return soa.Serial, nil
		}
	}
	return 0, fmt.Errorf("%s: SOA %s: no SOA in the answer", s.Name, zone)
}

// TXT returns the TXT records the server holds at name, each record's
// strings joined (nil when there are none).
func (s *Server) TXT(ctx context.Context, name string) ([]string, error) {
	r, err := s.Query(ctx, name, dns.TypeTXT)
	if err != nil {
		return nil, err
	}
	if r.Rcode != dns.RcodeSuccess && r.Rcode != dns.RcodeNameError {
		return nil, fmt.Errorf("%s: TXT %s: %s", s.Name, name, dns.RcodeToString[r.Rcode])
	}
	return txtOf(r, name), nil
}

// txtOf collects the TXT records at name (or at the end of a CNAME chain
// from it) in an answer.
func txtOf(r *dns.Msg, name string) []string {
	var out []string
	for _, rr := range r.Answer {
		if t, ok := rr.(*dns.TXT); ok {
			out = append(out, strings.Join(t.Txt, ""))
		}
	}
	return out
}

// ZoneData returns the records the server holds in zone at owner of type
// rrtype ("" for every type), from its zone contents (knotc zone-read):
// unlike a query, it never answers from a wildcard, so a test can tell a
// record of its own from a synthesized one. Each record is one line of
// knotc's output; none gives nil.
func (s *Server) ZoneData(ctx context.Context, zone, owner, rrtype string) ([]string, error) {
	recs, err := dnsproc.ZoneRead(ctx, s.sock, fqdn(canon(zone)), owner, rrtype)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.Name, err)
	}
	return recs, nil
}

// Control runs knotc on the server's control socket.
func (s *Server) Control(ctx context.Context, args ...string) (string, error) {
	return dnsproc.Run(ctx, KnotcBinary, append([]string{"-s", s.sock}, args...)...)
}

// Update sends one RFC 2136 update for zone signed with the server's TSIG
// key: first the removals (whole records; or RRsets, given as "name TYPE"
// without data), then the additions. Records are in zone file syntax with
// absolute names; additions without a TTL get the world's TTL.
func (s *Server) update(ctx context.Context, zone string, ttl uint32, add, remove []string) error {
	if s.tsig == nil {
		return fmt.Errorf("%s takes no updates", s.Name)
	}
	m := new(dns.Msg)
	m.SetUpdate(fqdn(zone))
	for _, rr := range remove {
		if f := strings.Fields(rr); len(f) == 2 {
			t, ok := dns.StringToType[strings.ToUpper(f[1])]
			if !ok {
				return fmt.Errorf("remove %q: unknown type", rr)
			}
			m.RemoveRRset([]dns.RR{&dns.ANY{Hdr: dns.RR_Header{Name: dns.Fqdn(f[0]), Rrtype: t, Class: dns.ClassINET}}})
			continue
		}
		r, err := dns.NewRR(rr)
		if err != nil || r == nil {
			return fmt.Errorf("remove %q: %v", rr, err)
		}
		m.Remove([]dns.RR{r})
	}
	for _, rr := range add {
		r, err := parseWithTTL(rr, ttl)
		if err != nil {
			return fmt.Errorf("add %q: %w", rr, err)
		}
		m.Insert([]dns.RR{r})
	}
	m.SetTsig(s.tsig.Name, dns.HmacSHA256, 300, time.Now().Unix())
	c := &dns.Client{Net: "tcp", Timeout: 5 * time.Second, TsigSecret: map[string]string{s.tsig.Name: s.tsig.Secret}}
	r, _, err := c.ExchangeContext(ctx, m, s.Addr())
	if err != nil {
		return fmt.Errorf("update %s at %s: %w", zone, s.Name, err)
	}
	if r.Rcode != dns.RcodeSuccess {
		return fmt.Errorf("update %s at %s: %s", zone, s.Name, dns.RcodeToString[r.Rcode])
	}
	return nil
}

// parseWithTTL parses a record; one written without a TTL gets ttl.
func parseWithTTL(rr string, ttl uint32) (dns.RR, error) {
	p := dns.NewZoneParser(strings.NewReader(rr), ".", "")
	p.SetDefaultTTL(ttl)
	r, ok := p.Next()
	if err := p.Err(); err != nil {
		return nil, err
	}
	if !ok || r == nil {
		return nil, errors.New("no record")
	}
	return r, nil
}
