package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wakegate/wakegate/engine"
	"github.com/wakegate/wakegate/gateway"
)

// A local engine whose process dies before it is ready fails the wake at
// once, with the engine's own last words, not at the wake timeout.
func TestWakeOfALocalEngineThatDiesFailsAtOnceWithWhy(t *testing.T) {
	dir, err := os.MkdirTemp("", "wg-lf-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	bin := filepath.Join(dir, "wakegate")
	// Listens ($7 is --addr-file), then its buildkitd fails as one without
	// runc does, and it exits.
	script := `#!/bin/sh
echo 127.0.0.1:1 > "$7"
echo 'buildkitd: failed to create worker: exec: "runc": executable file not found in $PATH' >> "$3/buildkitd.log"
echo "wakegate: engine process exited before it was ready: exit status 1" >&2
exit 1
`
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	l, err := engine.NewLocal(engine.LocalConfig{Dir: dir, N: 1, Wakegate: bin, Buildkitd: "buildkitd",
		Token: func(string) (string, error) { return "tok", nil }})
	if err != nil {
		t.Fatal(err)
	}
	e := gateway.NewEngine(gateway.EngineConfig{ID: "engine-0", Provider: l, Idle: time.Minute, WakeTimeout: 2 * time.Minute,
		Probe: func(context.Context, string) error { return errors.New("connection refused") }})
	defer e.Close()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	began := time.Now()
	_, err = e.Acquire(ctx)
	if err == nil {
		t.Fatal("a wake of an engine that died succeeded")
	}
	if took := time.Since(began); took > 30*time.Second {
		t.Fatalf("the wake failed after %s, want at once", took)
	}
	msg := err.Error()
	if !strings.Contains(msg, `exec: "runc": executable file not found`) || strings.Contains(msg, "\n") {
		t.Fatalf("wake error %q: want one line with the engine's last words", msg)
	}
}

func TestGatewayWithLocalEnginesRefusesToStartWithoutRunc(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	var out bytes.Buffer
	err := run(t.Context(), []string{"gateway", "--ca-dir", "/nonexistent", "--state", t.TempDir(), "--buildkitd", "/bin/true"}, &out, &out)
	if err == nil || !strings.Contains(err.Error(), "runc not found: apt-get install runc, or run 'make deps'") {
		t.Fatalf("gateway without runc = %v, want what to install", err)
	}
}
