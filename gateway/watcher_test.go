package gateway

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wakegate/wakegate/wire"
)

func TestWakeOfAnEngineThatExitedFailsAtOnceWithItsLastWords(t *testing.T) {
	// The host started the process; it answers no probe and then exits.
	// The host's Watcher knows, with the engine's last log lines.
	var probed atomic.Bool
	words := `engine e0 exited: exit status 1: buildkitd: exec: "runc": executable file not found in $PATH | wakegate: engine process exited before it was ready`
	h := &fakeHost{addr: "tcp://127.0.0.1:1", failed: func() error {
		if !probed.Load() {
			return nil
		}
		return errors.New(words)
	}}
	g := startGatewayOpts(t, h, gatewayOptions{
		wake: time.Minute, // the hold (10 s) ends first: only the Watcher can fail it sooner
		probe: func(context.Context, string) error {
			probed.Store(true)
			return errors.New("connection refused")
		},
	})
	began := time.Now()
	w := g.dial(t, g.client, g.ca, wire.ProtoWake)
	w.SetDeadline(time.Now().Add(15 * time.Second))
	r := wire.NewReader(w)
	for {
		e, err := r.Next()
		if err != nil {
			t.Fatalf("wake request ended without an error event: %v", err)
		}
		if e.Kind != wire.Failed {
			continue
		}
		if !strings.Contains(e.Message, words) {
			t.Fatalf("error event %q does not carry the engine's last words", e.Message)
		}
		if took := time.Since(began); took > 5*time.Second {
			t.Fatalf("the wake failed after %s, want at once", took)
		}
		break
	}
	waitState(t, g.pool.Engines()[0], Stopped)
}
