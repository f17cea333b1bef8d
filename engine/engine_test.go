package engine

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func buildkitdBin(t *testing.T) string {
	t.Helper()
	p := os.Getenv("WAKEGATE_BUILDKITD")
	if p == "" {
		p = filepath.Join("..", "bin", "buildkitd")
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("buildkitd not found (%v): run 'make tools' or set WAKEGATE_BUILDKITD", err)
	}
	if os.Geteuid() != 0 {
		t.Fatal("buildkitd needs root here: run 'make test' as root")
	}
	return p
}

// shortDir is a state directory short enough for unix socket paths.
func shortDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "wg-eng-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// probeUntilReady polls Probe with a deadline, as the gateway does.
func probeUntilReady(t *testing.T, addr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var err error
	for ctx.Err() == nil {
		if err = Probe(ctx, addr); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond) // polling with a deadline
	}
	t.Fatalf("engine at %s never became ready: %v", addr, err)
}

func TestLocalStartsProbesAndStopsRealBuildkitd(t *testing.T) {
	l, err := NewLocal(shortDir(t), buildkitdBin(t), 2, nil)
	if err != nil {
		t.Fatal(err)
	}
	ids, _ := l.Engines(t.Context())
	if strings.Join(ids, ",") != "engine-0,engine-1" {
		t.Fatalf("engines = %v", ids)
	}
	addr, err := l.Start(t.Context(), "engine-1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Stop(context.Background(), "engine-1") })
	if !strings.HasPrefix(addr, "unix://") || !strings.Contains(addr, "engine-1") {
		t.Fatalf("address %q is not engine-1's socket", addr)
	}
	probeUntilReady(t, addr)

	again, err := l.Start(t.Context(), "engine-1")
	if err != nil || again != addr {
		t.Fatalf("second Start = %q, %v; want the running engine's %q", again, err, addr)
	}
	l.mu.Lock()
	p := l.procs["engine-1"]
	l.mu.Unlock()

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := l.Stop(ctx, "engine-1"); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	select {
	case <-p.Exited():
	default:
		t.Fatal("Stop returned while buildkitd still runs")
	}
	if err := Probe(t.Context(), addr); err == nil {
		t.Fatal("probe of a stopped engine succeeded")
	}
	if _, err := l.Start(t.Context(), "engine-9"); err == nil {
		t.Fatal("Start of an unknown engine succeeded")
	}
}

func TestLocalRestartsAnEngineThatCrashed(t *testing.T) {
	l, err := NewLocal(shortDir(t), buildkitdBin(t), 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	addr, err := l.Start(t.Context(), "engine-0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Stop(context.Background(), "engine-0") })
	probeUntilReady(t, addr)
	l.mu.Lock()
	first := l.procs["engine-0"]
	l.mu.Unlock()
	syscall.Kill(first.Pid(), syscall.SIGKILL)
	<-first.Exited()

	if _, err := l.Start(t.Context(), "engine-0"); err != nil {
		t.Fatal(err)
	}
	l.mu.Lock()
	second := l.procs["engine-0"]
	l.mu.Unlock()
	if second == first {
		t.Fatal("Start reused a crashed process")
	}
	probeUntilReady(t, addr)
}

func TestStopKillsAnEngineThatIgnoresSIGTERM(t *testing.T) {
	dir := shortDir(t)
	stubborn := filepath.Join(dir, "stubborn")
	ready := filepath.Join(dir, "ready")
	script := "#!/bin/sh\ntrap '' TERM\ntouch " + ready + "\nwhile :; do sleep 1; done\n"
	if err := os.WriteFile(stubborn, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	b := &Buildkitd{Bin: stubborn, Dir: filepath.Join(dir, "e")}
	p, err := b.Start()
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for { // wait until it ignores SIGTERM
		if _, err := os.Stat(ready); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("stub engine never started")
		}
		time.Sleep(10 * time.Millisecond) // polling with a deadline
	}
	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel()
	err = p.Stop(ctx)
	if err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("Stop = %v, want an error saying it was killed", err)
	}
	select {
	case <-p.Exited():
	default:
		t.Fatal("process still runs after Stop")
	}
}

func TestLocalRefusesStateDirTooLongForASocket(t *testing.T) {
	long := "/tmp/" + strings.Repeat("x", 120)
	if _, err := NewLocal(long, "buildkitd", 1, nil); err == nil || !strings.Contains(err.Error(), "shorter --state") {
		t.Fatalf("NewLocal with a long state dir = %v, want an error asking for a shorter --state", err)
	}
}

func TestProbeFailsWithoutAnEngine(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	err := Probe(ctx, "unix://"+filepath.Join(shortDir(t), "none.sock"))
	if err == nil {
		t.Fatal("probe of a missing socket succeeded")
	}
}
