package pgtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// Start starts the server again on the same port and data after Stop or
// Kill, and waits until it answers queries.
func (s *Server) Start() {
	s.t.Helper()
	if s.proc != nil {
		s.t.Fatal("pgtest: Start: the server is already running")
	}
	logPath := s.logPath()
	out, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		s.t.Fatalf("pgtest: %v", err)
	}
	defer out.Close() // the child holds its own copy
	// No context: the postmaster outlives this call, and Stop ends it.
	cmd := s.command(context.Background(), s.bins.postgres,
		"-D", filepath.Join(s.dir, "data"),
		"-p", strconv.Itoa(s.port),
		"-k", s.dir,
		"-c", "listen_addresses=127.0.0.1",
		// Speed over durability against a crash of the machine, which a
		// test cluster never survives. Commits still reach the kernel
		// before they return (synchronous_commit stays on), so they
		// survive Kill, as they would a crash of PostgreSQL alone.
		"-c", "fsync=off",
		"-c", "full_page_writes=off",
		"-c", "dynamic_shared_memory_type=mmap", // containers' /dev/shm is small
		"-c", "shared_buffers=16MB",
		"-c", "max_connections=50",
	)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("pgtest: start %s: %v", s.bins.postgres, err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	s.proc = p
	if err := s.waitReady(); err != nil {
		s.kill()
		s.t.Fatalf("pgtest: postgres on %s: %v\n%s", s.Addr(), err, tail(logPath))
	}
}

// waitReady polls with SELECT 1 until it succeeds, the postmaster exits,
// or startTimeout passes.
func (s *Server) waitReady() error {
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	var last error
	for {
		if last = ping(ctx, s.DSN("postgres")); last == nil {
			return nil
		}
		select {
		case <-s.proc.done:
			return fmt.Errorf("%w: %v", errStopped, s.proc.err)
		case <-ctx.Done():
			return fmt.Errorf("not ready after %s: %w", startTimeout, last)
		case <-tick.C:
		}
	}
}

func ping(ctx context.Context, dsn string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer c.Close(context.Background())
	_, err = c.Exec(ctx, "SELECT 1")
	return err
}

// Stop shuts the server down (fast shutdown: clients are disconnected,
// data is kept) and waits until it has gone; Start brings it back.
func (s *Server) Stop() {
	s.t.Helper()
	if s.proc == nil {
		s.t.Fatal("pgtest: Stop: the server is not running")
	}
	if err := s.stop(); err != nil {
		s.t.Fatalf("pgtest: %v\n%s", err, tail(s.logPath()))
	}
}

// stop asks for a fast shutdown (SIGINT), and kills the server when it
// takes longer than stopTimeout.
func (s *Server) stop() error {
	p := s.proc
	if err := p.cmd.Process.Signal(syscall.SIGINT); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signal postgres: %w", err)
	}
	t := time.NewTimer(stopTimeout)
	defer t.Stop()
	select {
	case <-p.done:
		s.proc = nil
		return nil
	case <-t.C:
	}
	if err := s.kill(); err != nil {
		return err
	}
	return fmt.Errorf("postgres did not shut down within %s; killed it", stopTimeout)
}

// Kill kills the server and its backends (SIGKILL), as a crash would; Start
// recovers the cluster from its write-ahead log.
func (s *Server) Kill() {
	s.t.Helper()
	if s.proc == nil {
		s.t.Fatal("pgtest: Kill: the server is not running")
	}
	if err := s.kill(); err != nil {
		s.t.Fatalf("pgtest: %v", err)
	}
}

// kill sends SIGKILL to the postmaster's process group and waits until the
// group has no live process: a backend still attached to the old shared memory would
// stop the next Start.
func (s *Server) kill() error {
	p := s.proc
	pgid := p.cmd.Process.Pid // Setpgid: the group is the postmaster's pid
	syscall.Kill(-pgid, syscall.SIGKILL)
	deadline := time.NewTimer(killTimeout)
	defer deadline.Stop()
	select {
	case <-p.done:
	case <-deadline.C:
		return fmt.Errorf("postgres (pid %d) still running %s after SIGKILL", pgid, killTimeout)
	}
	s.proc = nil
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	for groupAlive(pgid) {
		select {
		case <-tick.C:
		case <-deadline.C:
			return fmt.Errorf("postgres's backends (process group %d) still running %s after SIGKILL", pgid, killTimeout)
		}
	}
	return nil
}

func (s *Server) logPath() string { return filepath.Join(s.dir, "postgres.log") }
