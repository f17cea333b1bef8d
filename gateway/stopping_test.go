package gateway

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// stillStoppingErr is a provider's "the host still stops it" error in the
// structural form (fly's StoppingError, which may not import gateway).
type stillStoppingErr struct{}

func (stillStoppingErr) Error() string       { return "machine e0 is still stopping: its engine is draining" }
func (stillStoppingErr) StillStopping() bool { return true }

// drainingHost is a host whose stop takes drain to complete: each Stop
// waits for it within the caller's bound and, if that ends first, answers
// that the machine is still stopping. Starting it before it has stopped
// is refused, as Fly refuses it.
type drainingHost struct {
	drain time.Duration

	mu            sync.Mutex // guards the fields below
	stopBegan     time.Time  // when the current stop began; zero if none
	starts, stops int
	earlyStarts   int // starts while the host was still stopping
}

func (h *drainingHost) Engines(context.Context) ([]string, error) { return []string{"e0"}, nil }

func (h *drainingHost) Start(ctx context.Context, id string) (string, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.starts++
	if !h.stopBegan.IsZero() {
		if time.Since(h.stopBegan) < h.drain {
			h.earlyStarts++
			return "", fmt.Errorf("machine still active, refusing to start")
		}
		h.stopBegan = time.Time{}
	}
	return "tcp://127.0.0.1:7", nil
}

func (h *drainingHost) Stop(ctx context.Context, id string) error {
	h.mu.Lock()
	h.stops++
	if h.stopBegan.IsZero() {
		h.stopBegan = time.Now()
	}
	left := h.drain - time.Since(h.stopBegan)
	h.mu.Unlock()
	t := time.NewTimer(left)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("stop machine %s: %w", id, stillStoppingErr{})
	}
}

func (h *drainingHost) counts() (starts, stops, early int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.starts, h.stops, h.earlyStarts
}

// A stop that outlasts the provider's wait (an engine draining builds for
// minutes) leaves the engine Stopping and billed, not Stopped: the gateway
// asks again, and a connection meanwhile waits for the stop to finish and
// then wakes the engine — it never starts a machine that is still
// stopping.
func TestAStopTheHostStillCarriesOutKeepsTheEngineStoppingAndBilled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := &drainingHost{drain: 150 * time.Second}
		e := NewEngine(EngineConfig{ID: "e0", Provider: h, Probe: readyProbe, Idle: testIdle,
			StopTimeout: time.Minute, WakeTimeout: 5 * time.Minute})
		defer e.Close()
		mustAcquire(t, e).Release()
		time.Sleep(testIdle + 90*time.Second) // idle, then a stop that has drained 90 s
		synctest.Wait()
		st := e.Status()
		if st.State != Stopping {
			t.Fatalf("90 s into a 150 s drain the engine is %s, want stopping", st.State)
		}
		if _, stops, _ := h.counts(); stops != 2 {
			t.Fatalf("stop requests after 90 s of draining = %d, want 2 (a second round after the first minute)", stops)
		}
		if want := (testIdle + 90*time.Second).Seconds(); st.MachineSeconds < want {
			t.Fatalf("machine-seconds %v while still stopping, want at least %v: a stopping machine is billed", st.MachineSeconds, want)
		}

		// A connection now waits for the stop, then wakes the engine.
		began := time.Now()
		l := mustAcquire(t, e)
		defer l.Release()
		if waited := time.Since(began); waited < 60*time.Second {
			t.Fatalf("the connection was served after %s, before the 150 s drain ended", waited)
		}
		if starts, _, early := h.counts(); early != 0 || starts != 2 {
			t.Fatalf("starts %d, of which %d while the host was still stopping: want 2 and none early", starts, early)
		}
	})
}

// A gateway shutting down does not wait out a long drain round after
// round: it stops asking after the current one.
func TestCloseDoesNotWaitOutAStopTheHostStillCarriesOut(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := &drainingHost{drain: time.Hour}
		e := NewEngine(EngineConfig{ID: "e0", Provider: h, Probe: readyProbe, Idle: testIdle, StopTimeout: time.Minute})
		mustAcquire(t, e).Release()
		time.Sleep(testIdle + 30*time.Second)
		began := time.Now()
		e.Close()
		if took := time.Since(began); took > time.Minute {
			t.Fatalf("Close took %s during an hour-long drain, want at most one stop round", took)
		}
		if _, stops, _ := h.counts(); stops != 1 {
			t.Fatalf("stop requests = %d, want the one under way when Close came", stops)
		}
	})
}
