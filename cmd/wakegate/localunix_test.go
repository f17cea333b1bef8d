package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/wakegate/wakegate/engine"
	"github.com/wakegate/wakegate/enginecmd"
)

// newLocalEngines is the local provider of one engine, enrolling at h's CA,
// in a short state directory of its own (engine sockets live there), as
// edit makes it.
func newLocalEngines(t *testing.T, h *providerHarness, edit func(*engine.LocalConfig)) (*engine.Local, string) {
	t.Helper()
	state, err := os.MkdirTemp("", "wg-local-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(state) })
	f := &gatewayFlags{host: hostFlags{provider: "local"}}
	enr := f.enrolment(hostCA{ca: h.ca, svc: h.caSvc})
	cfg := engine.LocalConfig{Dir: state, N: 1, Wakegate: os.Getenv("WAKEGATE_BIN"),
		Command: enginecmd.Command{CAURL: enr.caURL, CAFingerprint: enr.fingerprint, Drain: 5 * time.Second, Stop: 5 * time.Second},
		Token:   enr.token, Log: slog.New(slog.DiscardHandler)}
	edit(&cfg)
	l, err := engine.NewLocal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return l, state
}

// TestLocalEngineIsReachedOnItsUnixFront runs a real local engine ('wakegate
// engine' started by the local provider, enrolled at the CA API, the echo
// stand-in for buildkitd behind it) and speaks to it with the gateway's own
// engine client: the provider hands out the engine's unix front, through
// which readiness, streams and the busy check all work, the engine counting
// the stream; the socket is the gateway user's alone, and goes with the
// engine.
func TestLocalEngineIsReachedOnItsUnixFront(t *testing.T) {
	h := newProviderHarness(t)
	echo := filepath.Join(t.TempDir(), "echoengine")
	if out, err := exec.Command("go", "build", "-o", echo, "./testdata/echoengine").CombinedOutput(); err != nil {
		t.Fatalf("build echoengine: %v\n%s", err, out)
	}
	l, state := newLocalEngines(t, h, func(c *engine.LocalConfig) { c.Command.EngineCmd = echo + " {socket}" })
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	addr, err := l.Start(ctx, "engine-0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Stop(context.Background(), "engine-0") })
	sock := filepath.Join(state, "engine-0", engine.FrontSocketName)
	if addr != "unix://"+sock {
		t.Fatalf("the local provider's address = %q, want its unix front unix://%s", addr, sock)
	}
	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("%s has mode %s, want a socket of mode 0600", sock, fi.Mode())
	}

	for { // as a wake probes: until BuildKit (here, the echo) answers
		if err = h.ec.Ready(ctx, addr); err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("the engine never became ready on its unix front: %v", err)
		}
		time.Sleep(50 * time.Millisecond) // polling as the gateway does, bounded by ctx
	}
	conn, err := h.ec.Dial(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := conn.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4)
	if _, err := io.ReadFull(conn, got); err != nil || string(got) != "ping" {
		t.Fatalf("echo through the unix front = %q, %v", got, err)
	}
	if busy, err := h.ec.Busy(ctx, addr); err != nil || !busy {
		t.Fatalf("Busy with a stream open = %v, %v; want busy", busy, err)
	}
	conn.Close()
	for { // the engine counts the stream until its copy ends
		busy, err := h.ec.Busy(ctx, addr)
		if err == nil && !busy {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("the engine still busy after its only stream closed: %v, %v", busy, err)
		}
		time.Sleep(20 * time.Millisecond) // polling, bounded by ctx
	}

	if err := l.Stop(ctx, "engine-0"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the unix front outlived its engine: %v", err)
	}
}
