package dnsproc

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"
)

// TestMissing: a missing binary is named with what to install; present
// ones are not an error.
func TestMissing(t *testing.T) {
	tests := []struct {
		name     string
		binaries []string
		want     []string // in the error; none: no error
	}{
		{"present", []string{"/bin/sh"}, nil},
		{"none", nil, nil},
		{"missing", []string{"/bin/sh", "/nonexistent/sbin/knotd"}, []string{"/nonexistent/sbin/knotd not found", "install it with: apt-get install knot"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Missing("apt-get install knot", tt.binaries...)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Missing: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Missing returned nil")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

// TestWaitReady: WaitReady returns once ready says so, and otherwise gives
// up with the server's log when it exits or the context ends.
func TestWaitReady(t *testing.T) {
	tests := []struct {
		name   string
		script string
		ready  func(p *Process) error
		want   []string // in the error; none: ready
	}{
		{"ready", "echo listening; exec sleep 60",
			func(p *Process) error {
				if !strings.Contains(p.Logs(), "listening") {
					return fmt.Errorf("not yet")
				}
				return nil
			}, nil},
		{"exits", "echo bad config >&2; exit 3",
			func(*Process) error { return fmt.Errorf("no answer") },
			[]string{"sh exited", "exit status 3", "bad config"}},
		{"never answers", "echo started; exec sleep 60",
			func(*Process) error { return fmt.Errorf("refused") },
			[]string{"sh does not answer", "refused", "started"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Start(t, "/bin/sh", "-c", tt.script)
			if err != nil {
				t.Fatal(err)
			}
			// Long enough for the shell to start on a busy machine;
			// "never answers" waits it out.
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			err = p.WaitReady(ctx, func(context.Context) error { return tt.ready(p) })
			if tt.want == nil {
				if err != nil {
					t.Fatalf("WaitReady: %v", err)
				}
			} else {
				if err == nil {
					t.Fatal("WaitReady returned nil")
				}
				for _, w := range tt.want {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q lacks %q", err, w)
					}
				}
			}
			p.Stop()
			if done, _ := p.Exited(); !done {
				t.Fatal("process runs after Stop")
			}
			p.Stop() // stopping again does nothing
		})
	}
}

// TestStartMissing: a binary that cannot be started is an error naming it.
func TestStartMissing(t *testing.T) {
	_, err := Start(t, "/nonexistent/sbin/unbound")
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/sbin/unbound") {
		t.Fatalf("error %v, want one naming the binary", err)
	}
}

// TestFreeLoopbackAddr: the address found can be bound, and one in use
// cannot.
func TestFreeLoopbackAddr(t *testing.T) {
	addr, err := FreeLoopbackAddr()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(addr, "127.0.0.1:") {
		t.Fatalf("address %s, want one on 127.0.0.1", addr)
	}
	if err := CanBind(addr); err != nil {
		t.Fatalf("CanBind(%s) after FreeLoopbackAddr: %v", addr, err)
	}
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if err := CanBind(addr); err == nil {
		t.Fatalf("CanBind(%s) while its UDP port is in use: nil", addr)
	}
}

// TestKnotServerConf: everything knotd writes stays in its directory, and
// it listens where it is told.
func TestKnotServerConf(t *testing.T) {
	conf := KnotServerConf("/tmp/k1", "127.54.3.1@53")
	for _, want := range []string{
		"listen: 127.54.3.1@53\n",
		`rundir: "/tmp/k1"`,
		`pidfile: "/tmp/k1/knot.pid"`,
		`storage: "/tmp/k1/db"`,
		`listen: "/tmp/k1/knot.sock"`,
		"target: stderr",
	} {
		if !strings.Contains(conf, want) {
			t.Errorf("configuration lacks %q:\n%s", want, conf)
		}
	}
}
