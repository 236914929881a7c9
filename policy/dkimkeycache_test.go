package policy

import (
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// TestDKIMKeyCacheBound attacks the bound: an attacker who controls DNS
// can make every message carry a new key record (the same key, one more
// tag). The cache must keep at most its bound, and its memory with it.
func TestDKIMKeyCacheBound(t *testing.T) {
	p := "v=DKIM1; k=rsa; p=" + testKeyData(t, "rsa2048-pkcs1.pem")
	c := newDKIMKeyCache(DKIMKeyCacheSize)
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	before := heap()
	for i := range 3 * DKIMKeyCacheSize {
		if _, err := c.key(fmt.Sprintf("%s; n=attack %d", p, i)); err != nil {
			t.Fatal(err)
		}
		if n := c.len(); n > DKIMKeyCacheSize {
			t.Fatalf("%d keys cached after %d records, bound %d", n, i+1, DKIMKeyCacheSize)
		}
	}
	if n := c.len(); n != DKIMKeyCacheSize {
		t.Errorf("%d keys cached, want the bound %d", n, DKIMKeyCacheSize)
	}
	// A full cache of RSA-2048 records is about 5 MiB (record text and
	// parsed key); 3 times the bound inserted must not hold more.
	if grown := int64(heap()) - int64(before); grown > 32<<20 {
		t.Errorf("heap grew by %d MiB for a cache bounded at %d keys", grown>>20, DKIMKeyCacheSize)
	}
	runtime.KeepAlive(c)
}

// TestDKIMKeyCacheHit: the same record text gives the same parsed key,
// and another text another one.
func TestDKIMKeyCacheHit(t *testing.T) {
	txt := "v=DKIM1; k=ed25519; p=" + testKeyData(t, "ed25519-pkcs8.pem")
	c := newDKIMKeyCache(4)
	a, err := c.key(txt)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := c.key(txt)
	if a != b {
		t.Error("the same record was parsed twice")
	}
	d, err := c.key(txt + "; t=y")
	if err != nil || d == a || !d.flags.testing {
		t.Errorf("a changed record gave %+v, %v", d, err)
	}
}

// TestDKIMKeyCacheErrorsNotCached: a record that cannot be used (revoked,
// malformed, too short) is never cached, so that it is never taken for a
// usable key, and cannot fill the cache either.
func TestDKIMKeyCacheErrorsNotCached(t *testing.T) {
	t.Setenv("GODEBUG", "rsa1024min=0")
	c := newDKIMKeyCache(4)
	for _, txt := range []string{
		"v=DKIM1; k=rsa; p=",
		"v=DKIM1; p=",
		"v=DKIM1; k=rsa; t=y; p= ",
		"v=DKIM1; p=not*base64",
		"v=DKIM1; p=" + testKeyData(t, "rsa512-pkcs1.pem"),
		"v=DKIM1; k=ed25519; p=" + testKeyData(t, "rsa2048-pkcs1.pem"),
		"v=DKIM2; p=" + testKeyData(t, "rsa2048-pkcs1.pem"),
	} {
		for range 2 {
			if k, err := c.key(txt); err == nil {
				t.Errorf("%.40q: usable key %+v", txt, k)
			}
		}
	}
	if n := c.len(); n != 0 {
		t.Errorf("%d unusable records cached", n)
	}
}

// TestDKIMKeyCacheConcurrent: messages verified at the same time share
// the cache (run with -race).
func TestDKIMKeyCacheConcurrent(t *testing.T) {
	p := "v=DKIM1; k=ed25519; p=" + testKeyData(t, "ed25519-pkcs8.pem")
	c := newDKIMKeyCache(8)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				if _, err := c.key(fmt.Sprintf("%s; n=%d", p, (g*i)%13)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if n := c.len(); n > 8 {
		t.Errorf("%d keys cached, bound 8", n)
	}
}

// TestDKIMKeyRecordChanges goes through the policy path: the key record
// is looked up for every message, so a record that changes between two
// messages gives the new result at once, whatever the cache holds: a key
// rotated to another one, a revoked key (never cached as usable), the key
// back again. A reload's snapshot starts with an empty cache.
func TestDKIMKeyRecordChanges(t *testing.T) {
	pol, dns := testPolicy(t, "")
	msg := fixtureMessage("rotate")
	header, body, err := SplitMessage([]byte(msg))
	if err != nil {
		t.Fatal(err)
	}
	field, err := signDKIM(header, body, sigTags(), loadTestKey(t, "rsa2048-pkcs1.pem"))
	if err != nil {
		t.Fatal(err)
	}
	raw := []byte(field + msg)
	good := "v=DKIM1; k=rsa; p=" + testKeyData(t, "rsa2048-pkcs1.pem")
	steps := []struct {
		record, want string
	}{
		{good, "dkim=pass header.d=example.com"},
		{good, "dkim=pass header.d=example.com"},
		{"v=DKIM1; k=rsa; p=" + testKeyData(t, "rsa1024-pkcs1.pem"), "dkim=fail (signature did not verify)"},
		{"v=DKIM1; k=rsa; p=", "dkim=fail (key revoked)"},
		{good + "; t=y", "dkim=pass (testing mode)"},
		{good, "dkim=pass header.d=example.com"},
	}
	for i, s := range steps {
		dns.mu.Lock()
		if dns.txt == nil {
			dns.txt = map[string][]string{}
		}
		dns.txt["sel._domainkey.example.com"] = []string{s.record}
		dns.mu.Unlock()
		ar := runInbound(t, pol, inboundEnv(), raw)
		if !strings.Contains(ar, s.want) {
			t.Errorf("step %d (%.30q...): %q, want %q", i, s.record, ar, s.want)
		}
	}
	pol.dkimKeys.mu.Lock()
	for txt := range pol.dkimKeys.keys {
		if strings.HasSuffix(txt, "p=") {
			t.Errorf("revoked record %q cached", txt)
		}
	}
	pol.dkimKeys.mu.Unlock()
	if n := pol.dkimKeys.len(); n != 3 {
		t.Errorf("%d keys cached, want 3 (good, other, testing)", n)
	}
	next, err := CompileFrom(t.Context(), pol.cfg, pol.table, dns, pol)
	if err != nil {
		t.Fatal(err)
	}
	if next.dkimKeys == pol.dkimKeys || next.dkimKeys.len() != 0 {
		t.Errorf("the reloaded snapshot shares the cache or starts with %d keys", next.dkimKeys.len())
	}
}
