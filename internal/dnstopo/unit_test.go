package dnstopo

import (
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestBuildZones checks the layout of the zone files: who delegates what,
// with which glue, and where extra records go.
func TestBuildZones(t *testing.T) {
	o := Options{
		ProviderZones: []string{"dkim.myesp.example", "myesp._domainkey.customer.example", "myesp._domainkey.late.example"},
		CustomerZones: []string{"customer.example", "late.example", "news.customer.example"},
		Delegated:     []string{"myesp._domainkey.customer.example"},
		Records:       []string{`*._domainkey.wild.customer.example. TXT "v=DKIM1; p=x"`, `s1.late.example.dkim.myesp.example. TXT "y"`},
		NegativeTTLs:  map[string]uint32{"late.example": 9},
	}
	if err := o.fill(); err != nil {
		t.Fatal(err)
	}
	zones, err := buildZones(o)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		zone   string
		role   zoneRole
		negTTL uint32
		has    []string
		hasNot []string
	}{
		{".", roleRoot, 2, []string{". NS ns.root-servers.", "ns.root-servers. A 127.53.0.1", "example. NS ns.nic.example.", "ns.nic.example. A 127.53.0.1"}, nil},
		{"example", roleRoot, 2, []string{
			"myesp.example. NS ns1.myesp.example.", "myesp.example. NS ns2.myesp.example.",
			"ns1.myesp.example. A 127.53.0.2", "ns2.myesp.example. A 127.53.0.3",
			"customer.example. NS ns.customer.example.", "ns.customer.example. A 127.53.0.4",
			"late.example. NS ns.late.example.",
		}, []string{"dkim.myesp.example. NS ns1.myesp.example."}},
		{"myesp.example", roleProvider, 2, []string{
			"myesp.example. NS ns1.myesp.example.", "ns1.myesp.example. A 127.53.0.2", "ns2.myesp.example. A 127.53.0.3",
			"dkim.myesp.example. NS ns1.myesp.example.", "dkim.myesp.example. NS ns2.myesp.example.",
		}, nil},
		{"dkim.myesp.example", roleProvider, 2, []string{"dkim.myesp.example. NS ns1.myesp.example.", `s1.late.example.dkim.myesp.example. TXT "y"`},
			[]string{"ns1.myesp.example. A 127.53.0.2"}},
		{"customer.example", roleCustomer, 2, []string{
			"customer.example. NS ns.customer.example.", "ns.customer.example. A 127.53.0.4",
			"myesp._domainkey.customer.example. NS ns1.myesp.example.", "myesp._domainkey.customer.example. NS ns2.myesp.example.",
			"news.customer.example. NS ns.news.customer.example.", "ns.news.customer.example. A 127.53.0.4",
			`*._domainkey.wild.customer.example. TXT "v=DKIM1; p=x"`,
		}, nil},
		// Not delegated by the customer (yet).
		{"late.example", roleCustomer, 9, []string{"late.example. NS ns.late.example."}, []string{"myesp._domainkey.late.example. NS ns1.myesp.example."}},
		{"myesp._domainkey.late.example", roleProvider, 2, []string{"myesp._domainkey.late.example. NS ns2.myesp.example."}, nil},
	}
	for _, tt := range tests {
		z, ok := zones[tt.zone]
		if !ok {
			t.Errorf("zone %s missing", tt.zone)
			continue
		}
		if z.role != tt.role || z.negTTL != tt.negTTL {
			t.Errorf("zone %s: role %d negative TTL %d, want %d %d", tt.zone, z.role, z.negTTL, tt.role, tt.negTTL)
		}
		for _, r := range tt.has {
			if !slices.Contains(z.records, r) {
				t.Errorf("zone %s lacks %q; has %q", tt.zone, r, z.records)
			}
		}
		for _, r := range tt.hasNot {
			if slices.Contains(z.records, r) {
				t.Errorf("zone %s has %q", tt.zone, r)
			}
		}
	}
	if len(zones) != len(tests)+2 { // + news.customer.example, myesp._domainkey.customer.example
		t.Errorf("%d zones, want %d", len(zones), len(tests)+2)
	}
}

// TestOptionsErrors: bad options are refused before anything starts.
func TestOptionsErrors(t *testing.T) {
	tests := []struct {
		name string
		o    Options
		want string
	}{
		{"tld as customer", Options{CustomerZones: []string{"example"}}, "below a top-level domain"},
		{"bad name", Options{ProviderZones: []string{"a..b"}}, "below a top-level domain"},
		{"delegated unknown", Options{Delegated: []string{"x.customer.example"}}, "not one of the provider zones"},
		{"two servers", Options{ProviderZones: []string{"c.example"}, CustomerZones: []string{"c.example"}}, "two servers"},
		{"negative TTL of no zone", Options{NegativeTTLs: map[string]uint32{"nope.example": 3}}, "not a zone"},
		{"bad record", Options{Records: []string{"x.myesp.example. A not-an-address"}}, "record"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.o.fill()
			if err == nil {
				_, err = buildZones(tt.o)
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

// fatalTB records Fatalf and stops the goroutine, as testing.T does.
type fatalTB struct {
	testing.TB
	mu  sync.Mutex
	msg string
}

func (f *fatalTB) Helper() {}
func (f *fatalTB) Fatalf(format string, args ...any) {
	f.mu.Lock()
	f.msg = strings.TrimSpace(fmt.Sprintf(format, args...))
	f.mu.Unlock()
	runtime.Goexit()
}

// TestMissingBinaryFails: a missing server binary fails the test with the
// packages to install (nothing is skipped).
func TestMissingBinaryFails(t *testing.T) {
	saved := requiredBinaries
	requiredBinaries = []string{"/nonexistent/sbin/unbound"}
	defer func() { requiredBinaries = saved }()
	f := &fatalTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		Start(f, Options{})
	}()
	<-done
	if !strings.Contains(f.msg, "/nonexistent/sbin/unbound") || !strings.Contains(f.msg, "apt-get install knot unbound") {
		t.Fatalf("failure message %q does not name the binary and the packages", f.msg)
	}
}

// TestLock: a second world waits for the first one's lock and gives up
// with a clear message after its timeout; once released, the lock is free.
func TestLock(t *testing.T) {
	release, err := acquireLock(t, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	_, err = acquireLock(t, 300*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), LockFile) {
		release()
		t.Fatalf("second lock while held: %v", err)
	}
	release()
	release2, err := acquireLock(t, time.Minute)
	if err != nil {
		t.Fatalf("lock after release: %v", err)
	}
	release2()
}
