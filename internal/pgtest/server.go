package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

const (
	// Role is the superuser initdb creates; trust authentication, so no
	// password.
	Role = "postgres"

	// startTimeout bounds one start, from exec to the first SELECT 1.
	startTimeout = 30 * time.Second
	// stopTimeout bounds a fast shutdown before the server is killed.
	stopTimeout = 15 * time.Second
	// killTimeout bounds the wait for killed processes to go.
	killTimeout = 10 * time.Second
	// pollEvery is the pause between two readiness or exit checks.
	pollEvery = 25 * time.Millisecond
)

// Server is one throwaway PostgreSQL cluster. Its methods are for the
// test's goroutine: they fail the test rather than return errors.
type Server struct {
	t    testing.TB
	bins binaries
	cred *syscall.Credential // who runs initdb and postgres; nil: this process's user
	dir  string              // the cluster: data/, the socket, the logs
	port int
	proc *process // the running postmaster; nil when stopped
}

// process is a running postmaster. err is set before done is closed.
type process struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// Start makes a new cluster and starts PostgreSQL on a free loopback port.
// Cleanup stops it and removes its directory.
func Start(t testing.TB) *Server {
	t.Helper()
	bins, err := findBinaries(exec.LookPath, debianBins)
	if err != nil {
		t.Fatal(err)
	}
	cred, err := runAs()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := makeDir(cred)
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{t: t, bins: bins, cred: cred, dir: dir}
	t.Cleanup(func() {
		if s.proc != nil {
			s.stop()
		}
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("pgtest: remove %s: %v", dir, err)
		}
	})
	s.initdb()
	s.port = freePort(t)
	s.Start()
	return s
}

// DSN is a connection string for database db as the superuser Role.
func (s *Server) DSN(db string) string {
	return fmt.Sprintf("postgresql://%s@127.0.0.1:%d/%s?sslmode=disable", Role, s.port, url.PathEscape(db))
}

// Addr is the server's host:port.
func (s *Server) Addr() string { return fmt.Sprintf("127.0.0.1:%d", s.port) }

// CreateDB creates database name and returns its DSN.
func (s *Server) CreateDB(name string) string {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	c, err := pgx.Connect(ctx, s.DSN("postgres"))
	if err != nil {
		s.t.Fatalf("pgtest: connect to create database %s: %v", name, err)
	}
	defer c.Close(context.Background())
	if _, err := c.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		s.t.Fatalf("pgtest: create database %s: %v", name, err)
	}
	return s.DSN(name)
}

// initdb makes the cluster in dir/data: trust for every connection (only
// loopback and a private socket reach it), UTF-8, no locale.
func (s *Server) initdb() {
	s.t.Helper()
	logPath := filepath.Join(s.dir, "initdb.log")
	out, err := os.Create(logPath)
	if err != nil {
		s.t.Fatalf("pgtest: %v", err)
	}
	defer out.Close()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	cmd := s.command(ctx, s.bins.initdb, "-D", filepath.Join(s.dir, "data"), "-U", Role,
		"-A", "trust", "-E", "UTF8", "--no-locale", "--no-sync")
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Run(); err != nil {
		s.t.Fatalf("pgtest: %s: %v\n%s", s.bins.initdb, err, tail(logPath))
	}
}

// command runs prog as the cluster's user, in its own process group (so
// that Kill reaches the postmaster's children too) and with a small,
// predictable environment.
func (s *Server) command(ctx context.Context, prog string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, prog, args...)
	cmd.Dir = s.dir
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "LC_ALL=C", "TZ=UTC"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: s.cred}
	return cmd
}

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("pgtest: find a free port: %v", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// tail is the end of a log, for failure messages.
func tail(path string) string {
	const max = 4096
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	if len(b) > max {
		b = append([]byte("…"), b[len(b)-max:]...)
	}
	return fmt.Sprintf("--- %s ---\n%s", path, b)
}

// errStopped reports a postmaster that exited while a test waited for it.
var errStopped = errors.New("postgres exited")
