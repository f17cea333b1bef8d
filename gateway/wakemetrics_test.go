package gateway

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// resumingHost is a Provider whose machines take hostTook to report
// started, found in state from (a StartReporter).
type resumingHost struct {
	from     string
	hostTook time.Duration
}

func (h resumingHost) Engines(context.Context) ([]string, error) { return []string{"e0"}, nil }
func (h resumingHost) Start(ctx context.Context, id string) (string, error) {
	addr, _, err := h.StartFrom(ctx, id)
	return addr, err
}
func (h resumingHost) StartFrom(ctx context.Context, id string) (string, string, error) {
	time.Sleep(h.hostTook) // virtual: the test runs in a synctest bubble
	return "tcp://127.0.0.1:1", h.from, nil
}
func (h resumingHost) Stop(context.Context, string) error { return nil }

// TestWakePhasesAreTimedByPreviousState: a wake's two phases — the host
// starting the machine, then the engine answering — land in
// wakegate_wake_phase_seconds under the state the host found the machine
// in, and their sum in wakegate_wake_seconds.
func TestWakePhasesAreTimedByPreviousState(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const hostTook, readyTook = 2 * time.Second, 3 * time.Second
		var startedAt time.Time
		probe := func(ctx context.Context, addr string) error {
			if startedAt.IsZero() {
				startedAt = time.Now()
			}
			if time.Since(startedAt) < readyTook {
				return errors.New("not yet")
			}
			return nil
		}
		p, err := NewPool(t.Context(), resumingHost{from: "suspended", hostTook: hostTook},
			EngineConfig{Probe: probe, Idle: time.Hour, ProbeInterval: 500 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		_, l, err := p.Acquire(t.Context(), "k", quiet)
		if err != nil {
			t.Fatal(err)
		}
		l.Release()

		f := scrape(t, AdminHandler(p))
		for _, tc := range []struct {
			name   string
			labels map[string]string
			sum    time.Duration
		}{
			{"wakegate_wake_phase_seconds", map[string]string{"phase": "host_start", "from": "suspended"}, hostTook},
			{"wakegate_wake_phase_seconds", map[string]string{"phase": "engine_ready", "from": "suspended"}, readyTook},
			{"wakegate_wake_seconds", map[string]string{"from": "suspended"}, hostTook + readyTook},
		} {
			if got := value(f, tc.name, tc.labels); got != 1 {
				t.Errorf("%s%v count = %v, want 1", tc.name, tc.labels, got)
			}
			if got := histSum(f, tc.name, tc.labels); got != tc.sum.Seconds() {
				t.Errorf("%s%v sum = %vs, want %v", tc.name, tc.labels, got, tc.sum)
			}
		}
		if got := value(f, "wakegate_wake_seconds", map[string]string{"from": "stopped"}); got != 0 {
			t.Errorf("wakes from stopped = %v, want 0 (and the series present)", got)
		}
		problems, err := testutil.GatherAndLint(p.Registry())
		if err != nil {
			t.Fatal(err)
		}
		for _, pr := range problems {
			t.Errorf("lint: %s: %s", pr.Metric, pr.Text)
		}
	})
}

// TestAHostThatDoesNotSayCountsWakesFromStopped: a Provider without
// StartReporter is counted as woken from stopped.
func TestAHostThatDoesNotSayCountsWakesFromStopped(t *testing.T) {
	p := newTestPool(t, 1, DefaultPolicy)
	_, l, err := p.Acquire(t.Context(), "k", quiet)
	if err != nil {
		t.Fatal(err)
	}
	l.Release()
	f := scrape(t, AdminHandler(p))
	for _, phase := range []string{"host_start", "engine_ready"} {
		if got := value(f, "wakegate_wake_phase_seconds", map[string]string{"phase": phase, "from": "stopped"}); got != 1 {
			t.Errorf("phase %s from stopped count = %v, want 1", phase, got)
		}
	}
}

// failingHost is a Provider whose Start fails with err.
type failingHost struct{ err error }

func (h failingHost) Engines(context.Context) ([]string, error)     { return []string{"e0"}, nil }
func (h failingHost) Start(context.Context, string) (string, error) { return "", h.err }
func (h failingHost) Stop(context.Context, string) error            { return nil }

// TestFailedWakesAreCountedByPhase: a host that does not start the machine
// counts a failure in host_start; an engine that never answers, one in
// engine_ready; neither lands in the histograms of successful wakes.
func TestFailedWakesAreCountedByPhase(t *testing.T) {
	for _, tc := range []struct {
		name  string
		host  Provider
		probe Prober
		phase string
	}{
		{"host refuses", failingHost{errors.New("no capacity")}, readyProbe, "host_start"},
		{"engine never answers", instantHost{[]string{"e0"}}, func(context.Context, string) error { return errors.New("not yet") }, "engine_ready"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				p, err := NewPool(t.Context(), tc.host, EngineConfig{Probe: tc.probe, Idle: time.Hour, WakeTimeout: 5 * time.Second})
				if err != nil {
					t.Fatal(err)
				}
				defer p.Close()
				if _, _, err := p.Acquire(t.Context(), "k", quiet); err == nil {
					t.Fatal("the wake succeeded")
				}
				f := scrape(t, AdminHandler(p))
				for _, phase := range []string{"host_start", "engine_ready"} {
					want := 0.0
					if phase == tc.phase {
						want = 1
					}
					if got := value(f, "wakegate_wake_failures_total", map[string]string{"phase": phase}); got != want {
						t.Errorf("failures in %s = %v, want %v", phase, got, want)
					}
				}
				if got := value(f, "wakegate_wake_seconds", map[string]string{"from": "stopped"}); got != 0 {
					t.Errorf("successful wakes = %v, want 0", got)
				}
			})
		})
	}
}
