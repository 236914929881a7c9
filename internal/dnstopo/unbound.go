package dnstopo

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/authmilter/authmilter/internal/dnsproc"
)

// Resolver is the world's recursive resolver (unbound), the public path
// receivers take.
type Resolver struct {
	// IP is its address; Addr is "IP:53", for [dns] servers, dkimpy and
	// OpenDKIM.
	IP, Addr string

	conf string
	proc *dnsproc.Process
}

// startUnbound writes unbound's configuration (root hints pointing at the
// root server) and starts it in the foreground.
func (w *World) startUnbound(ctx context.Context) error {
	r := w.Resolver
	dir := filepath.Join(w.Dir, "unbound")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("unbound: %w", err)
	}
	hints := fmt.Sprintf(". 3600000 NS ns.root-servers.\nns.root-servers. 3600000 A %s\n", RootIP)
	if err := os.WriteFile(filepath.Join(dir, "root.hints"), []byte(hints), 0o600); err != nil {
		return fmt.Errorf("unbound: %w", err)
	}
	// Why each setting:
	//   module-config iterator: no DNSSEC validation (the zones are not
	//     signed, and a validator without a trust anchor changes nothing
	//     but start-up time);
	//   do-not-query-localhost no: every nameserver is on 127.53.0.0/24;
	//   cache-max-ttl / cache-max-negative-ttl: caps above the zones' own
	//     TTLs, so the tests see the zones' real (short) TTLs and real
	//     negative caching, and a mistake in a zone cannot stall a test;
	//   infra-host-ttl: a server that was slow once is not avoided for
	//     the rest of the test;
	//   the control socket (no certificates) lets tests flush the cache.
	conf := fmt.Sprintf(`server:
    interface: %[1]s@53
    port: 53
    do-ip6: no
    do-udp: yes
    do-tcp: yes
    access-control: 127.0.0.0/8 allow
    username: ""
    chroot: ""
    directory: "%[2]s"
    pidfile: "%[2]s/unbound.pid"
    use-syslog: no
    logfile: ""
    log-time-ascii: yes
    verbosity: 1
    root-hints: "%[2]s/root.hints"
    do-not-query-localhost: no
    module-config: "iterator"
    cache-min-ttl: 0
    cache-max-ttl: %[3]d
    cache-max-negative-ttl: %[4]d
    infra-host-ttl: 10
    num-threads: 1
    prefetch: no
    serve-expired: no
    minimal-responses: yes
    hide-identity: yes
    hide-version: yes
remote-control:
    control-enable: yes
    control-interface: "%[2]s/control.sock"
    control-use-cert: no
`, r.IP, dir, w.opts.ResolverMaxTTL, w.opts.ResolverMaxNegativeTTL)
	r.conf = filepath.Join(dir, "unbound.conf")
	if err := os.WriteFile(r.conf, []byte(conf), 0o600); err != nil {
		return fmt.Errorf("unbound: %w", err)
	}
	if out, err := dnsproc.Run(ctx, UnboundCheckBinary, r.conf); err != nil {
		return fmt.Errorf("unbound: configuration refused: %w\n%s\n%s", err, out, conf)
	}
	p, err := startProcess(w.t, r.conf, UnboundBinary, "-d", "-c", r.conf)
	if err != nil {
		return fmt.Errorf("unbound: %w", err)
	}
	r.proc = p
	return nil
}

// waitResolvable waits until the resolver answers the SOA of every zone
// that is reachable from the root (zones a customer has not delegated yet
// are not), which proves every delegation and server works.
func (w *World) waitResolvable(ctx context.Context) error {
	r := w.Resolver
	for _, z := range sortedZones(w.zones) {
		if z.role == roleProvider {
			if p := parentOf(w.zones, z.name); p != nil && p.role == roleCustomer && !slices.Contains(w.opts.Delegated, z.name) {
				continue
			}
		}
		err := r.proc.WaitReady(ctx, func(ctx context.Context) error {
			return dnsproc.AnswersSOA(ctx, r.Addr, fqdn(z.name), true)
		})
		if err != nil {
			return fmt.Errorf("unbound does not resolve the SOA of %s: %w", fqdn(z.name), err)
		}
	}
	return nil
}

// Logs returns what unbound logged so far.
func (r *Resolver) Logs() string {
	if r.proc == nil {
		return ""
	}
	return r.proc.Logs()
}

// Query asks the resolver (recursion desired) for name and type.
func (r *Resolver) Query(ctx context.Context, name string, qtype uint16) (*dns.Msg, error) {
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(name), qtype)
	return exchange(ctx, q, r.Addr)
}

// TXT asks the resolver for the TXT records at name (following CNAMEs as
// receivers do) and returns them, each record's strings joined, with the
// response code.
func (r *Resolver) TXT(ctx context.Context, name string) ([]string, int, error) {
	m, err := r.Query(ctx, name, dns.TypeTXT)
	if err != nil {
		return nil, 0, err
	}
	return txtOf(m, name), m.Rcode, nil
}

// Control runs unbound-control with the resolver's configuration (its
// control socket) and returns the output.
func (r *Resolver) Control(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := dnsproc.Run(ctx, UnboundControlBinary, append([]string{"-c", r.conf}, args...)...)
	if err != nil {
		return out, fmt.Errorf("unbound-control: %w", err)
	}
	return out, nil
}

// Flush empties the resolver's caches: every record and answer, negative
// ones included, and what it learned about the servers.
func (r *Resolver) Flush() error {
	for _, args := range [][]string{{"flush_zone", "."}, {"flush_negative"}, {"flush_infra", "all"}, {"flush_requestlist"}} {
		if _, err := r.Control(args...); err != nil {
			return err
		}
	}
	return nil
}

// FlushName removes everything at and below name from the resolver's
// cache.
func (r *Resolver) FlushName(name string) error {
	_, err := r.Control("flush_zone", dns.Fqdn(name))
	return err
}

// Lookup returns unbound-control's "lookup" for name: the nameservers
// (delegation) the resolver would ask, for failure messages.
func (r *Resolver) Lookup(name string) string {
	out, err := r.Control("lookup", dns.Fqdn(name))
	if err != nil {
		return err.Error()
	}
	return strings.TrimSpace(out)
}
