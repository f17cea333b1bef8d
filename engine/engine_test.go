package engine

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wakegate/wakegate/internal/bktest"
)

func buildkitdBin(t *testing.T) string { return bktest.Buildkitd(t) }

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

func TestBuildkitdStartsAnswersAndStops(t *testing.T) {
	b := &Buildkitd{Bin: buildkitdBin(t), Dir: shortDir(t)}
	p, err := b.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop(context.Background()) })
	probeUntilReady(t, b.Addr())
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := p.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	select {
	case <-p.Exited():
	default:
		t.Fatal("Stop returned while buildkitd still runs")
	}
	if err := Probe(t.Context(), b.Addr()); err == nil {
		t.Fatal("probe of a stopped engine succeeded")
	}
}

func TestEngineCmdReplacesBuildkitd(t *testing.T) {
	b := &Buildkitd{Dir: "/state", Config: "/state/buildkitd.toml", Cmd: []string{"dagger-engine", "--addr", "unix://{socket}", "--root={root}", "--config", "{config}"}}
	bin, args := b.command()
	want := "dagger-engine --addr unix:///state/buildkitd.sock --root=/state/root --config /state/buildkitd.toml"
	if got := strings.Join(append([]string{bin}, args...), " "); got != want {
		t.Fatalf("command = %q, want %q", got, want)
	}
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
	tok := func(string) (string, error) { return "t", nil }
	if _, err := NewLocal(LocalConfig{Dir: long, N: 1, Wakegate: "wakegate", Token: tok}); err == nil || !strings.Contains(err.Error(), "shorter --state") {
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
