package pgtest

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func connect(t *testing.T, dsn string) (*pgx.Conn, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return pgx.Connect(ctx, dsn)
}

func mustExec(t *testing.T, dsn, sql string, args ...any) {
	t.Helper()
	c, err := connect(t, dsn)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer c.Close(context.Background())
	if _, err := c.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func count(t *testing.T, dsn string) int {
	t.Helper()
	c, err := connect(t, dsn)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer c.Close(context.Background())
	var n int
	if err := c.QueryRow(context.Background(), "SELECT count(*) FROM builds").Scan(&n); err != nil {
		t.Fatalf("count builds: %v", err)
	}
	return n
}

func TestServerKeepsDataAcrossStopAndStart(t *testing.T) {
	s := Start(t)
	dsn := s.CreateDB("wakegate")
	mustExec(t, dsn, "CREATE TABLE builds (id int PRIMARY KEY)")
	mustExec(t, dsn, "INSERT INTO builds VALUES (1), (2)")
	addr := s.Addr()

	s.Stop()
	if c, err := connect(t, dsn); err == nil {
		c.Close(context.Background())
		t.Fatal("connected to a stopped server")
	}

	s.Start()
	if s.Addr() != addr {
		t.Fatalf("restarted on %s, want the same address %s", s.Addr(), addr)
	}
	if n := count(t, dsn); n != 2 {
		t.Fatalf("after restart: %d builds, want 2", n)
	}
}

func TestServerRecoversAfterKill(t *testing.T) {
	s := Start(t)
	dsn := s.DSN("postgres")
	mustExec(t, dsn, "CREATE TABLE builds (id int PRIMARY KEY)")
	mustExec(t, dsn, "INSERT INTO builds VALUES (1)")

	// A connection open when the server dies sees it die.
	held, err := connect(t, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close(context.Background())
	s.Kill()
	if _, err := held.Exec(context.Background(), "SELECT 1"); err == nil {
		t.Fatal("a connection to a killed server still answered")
	}

	s.Start()
	if n := count(t, dsn); n != 1 {
		t.Fatalf("after kill and start: %d builds, want 1", n)
	}
}

// DSNs name the role initdb made and escape the database's name.
func TestDSN(t *testing.T) {
	s := &Server{port: 5433}
	if got, want := s.DSN("a b"), "postgresql://postgres@127.0.0.1:5433/a%20b?sslmode=disable"; got != want {
		t.Fatalf("DSN = %s, want %s", got, want)
	}
}

func TestFindBinaries(t *testing.T) {
	noPath := func(string) (string, error) { return "", errors.New("not on PATH") }
	root := t.TempDir()
	install := func(dir string) string {
		t.Helper()
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{"initdb", "postgres"} {
			if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}
	glob := filepath.Join(root, "lib", "*", "bin")

	t.Run("missing names make deps", func(t *testing.T) {
		_, err := findBinaries(noPath, glob)
		if err == nil || !strings.Contains(err.Error(), "make deps") {
			t.Fatalf("err = %v, want one naming 'make deps'", err)
		}
	})

	install(filepath.Join(root, "lib", "9", "bin"))
	newest := install(filepath.Join(root, "lib", "15", "bin"))
	t.Run("newest version, numerically", func(t *testing.T) {
		b, err := findBinaries(noPath, glob)
		if err != nil {
			t.Fatal(err)
		}
		if b.postgres != filepath.Join(newest, "postgres") || b.initdb != filepath.Join(newest, "initdb") {
			t.Fatalf("found %+v, want version 15's", b)
		}
	})

	// A symlink on PATH (Debian's /usr/local/bin links) leads to the real
	// directory, where initdb lies beside postgres.
	onPath := install(filepath.Join(root, "opt", "pg", "bin"))
	links := filepath.Join(root, "links")
	if err := os.MkdirAll(links, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(onPath, "postgres"), filepath.Join(links, "postgres")); err != nil {
		t.Fatal(err)
	}
	t.Run("PATH first, through symlinks", func(t *testing.T) {
		b, err := findBinaries(func(string) (string, error) { return filepath.Join(links, "postgres"), nil }, glob)
		if err != nil {
			t.Fatal(err)
		}
		if b.initdb != filepath.Join(onPath, "initdb") {
			t.Fatalf("found %+v, want the PATH installation's", b)
		}
	})
}
