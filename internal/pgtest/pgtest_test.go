package pgtest

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func TestStartCreateStopRestart(t *testing.T) {
	dir, err := os.MkdirTemp("", "pgtest-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	s, err := Start(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Error(err)
		}
	})
	dsn, err := s.CreateDatabase("first")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(dsn, "postgres://postgres@127.0.0.1:") {
		t.Errorf("dsn = %q, want a URL on 127.0.0.1", dsn)
	}
	exec := func(sql string) error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			return err
		}
		defer conn.Close(ctx)
		_, err = conn.Exec(ctx, sql)
		return err
	}
	if err := exec("CREATE TABLE kept (n int); INSERT INTO kept VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	if err := s.Restart(); err == nil {
		t.Error("Restart of a running server succeeded")
	}
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := exec("SELECT 1"); err == nil {
		t.Fatal("a stopped server accepted a query")
	}
	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	if err := exec("SELECT n FROM kept"); err != nil {
		t.Fatalf("after restart: %v", err)
	}
	if _, err := s.CreateDatabase("first"); err == nil {
		t.Error("creating an existing database succeeded")
	}
}

func TestCreateDatabaseRefusesOddNames(t *testing.T) {
	s := &Server{port: 1}
	for _, name := range []string{"", "A", "x;DROP", "1x", strings.Repeat("x", 64), "x y"} {
		if _, err := s.CreateDatabase(name); err == nil || !strings.Contains(err.Error(), "database name") {
			t.Errorf("CreateDatabase(%q) = %v, want a refusal of the name", name, err)
		}
	}
}

func TestMissingBinariesNameThePackage(t *testing.T) {
	_, err := findBinaries("/nonexistent/postgresql/*/bin")
	if err == nil || !strings.Contains(err.Error(), `Debian package "postgresql"`) {
		t.Fatalf("err = %v, want one naming the Debian package", err)
	}
}
