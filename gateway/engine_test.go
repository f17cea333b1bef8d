package gateway

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// fakeHost is a Provider whose starts and stops can be held open by the
// test, counting every call.
type fakeHost struct {
	starts, stops atomic.Int32
	startGate     chan struct{} // if non-nil, Start blocks until it is closed
	stopGate      chan struct{} // if non-nil, Stop blocks until it is closed
	startErr      error
	stopErr       error        // returned by every Stop
	failed        func() error // if set, answers Failed (the host's Watcher)
	mu            sync.Mutex   // guards addr
	addr          string
}

func (h *fakeHost) Engines(context.Context) ([]string, error) { return []string{"e0"}, nil }

func (h *fakeHost) Start(ctx context.Context, id string) (string, error) {
	h.starts.Add(1)
	if h.startGate != nil {
		select {
		case <-h.startGate:
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
	if h.startErr != nil {
		return "", h.startErr
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.addr == "" {
		return "tcp://127.0.0.1:1", nil
	}
	return h.addr, nil
}

func (h *fakeHost) Stop(ctx context.Context, id string) error {
	h.stops.Add(1)
	if h.stopGate != nil {
		select {
		case <-h.stopGate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return h.stopErr
}

// Failed makes fakeHost a Watcher.
func (h *fakeHost) Failed(string) error {
	if h.failed == nil {
		return nil
	}
	return h.failed()
}

func readyProbe(context.Context, string) error { return nil }

const testIdle = 30 * time.Second

func newTestEngine(h *fakeHost, probe Prober) *Engine {
	if probe == nil {
		probe = readyProbe
	}
	return NewEngine(EngineConfig{ID: "e0", Provider: h, Probe: probe, Idle: testIdle, WakeTimeout: 10 * time.Second})
}

func mustAcquire(t *testing.T, e *Engine) *Lease {
	t.Helper()
	l, err := e.Acquire(t.Context())
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	return l
}

func wantState(t *testing.T, e *Engine, want State) {
	t.Helper()
	if got := e.Status().State; got != want {
		t.Fatalf("state = %s, want %s", got, want)
	}
}

func TestConcurrentConnectsCauseOneStart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := &fakeHost{startGate: make(chan struct{})}
		e := newTestEngine(h, nil)
		defer e.Close()

		const n = 100
		leases := make(chan *Lease, n)
		errs := make(chan error, n)
		for range n {
			go func() {
				l, err := e.Acquire(context.Background())
				if err != nil {
					errs <- err
					return
				}
				leases <- l
			}()
		}
		synctest.Wait() // every acquirer is now held, waiting for the wake
		if got := h.starts.Load(); got != 1 {
			t.Fatalf("starts while waking = %d, want 1", got)
		}
		if len(leases)+len(errs) != 0 {
			t.Fatalf("%d connections were let through before the engine was ready", len(leases)+len(errs))
		}
		wantState(t, e, Starting)

		close(h.startGate)
		for range n {
			select {
			case l := <-leases:
				if !l.Waited {
					t.Error("lease granted during a wake does not say it waited")
				}
				defer l.Release()
			case err := <-errs:
				t.Fatalf("Acquire: %v", err)
			}
		}
		if got := h.starts.Load(); got != 1 {
			t.Fatalf("starts = %d, want 1", got)
		}
		if st := e.Status(); st.State != Running || st.Conns != n {
			t.Fatalf("status = %+v, want running with %d connections", st, n)
		}
	})
}

func TestIdleStopAfterLastConnectionCloses(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := &fakeHost{}
		e := newTestEngine(h, nil)
		defer e.Close()

		a, b := mustAcquire(t, e), mustAcquire(t, e)
		a.Release()
		time.Sleep(2 * testIdle) // virtual time: one connection is still open
		synctest.Wait()
		wantState(t, e, Running)

		b.Release()
		b.Release() // a second release is harmless
		time.Sleep(testIdle - time.Second)
		synctest.Wait()
		wantState(t, e, Running)
		time.Sleep(2 * time.Second)
		synctest.Wait()
		wantState(t, e, Stopped)
		if got := h.stops.Load(); got != 1 {
			t.Fatalf("stops = %d, want 1", got)
		}
	})
}

func TestIdleTimerCancelledByNewConnection(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := &fakeHost{}
		e := newTestEngine(h, nil)
		defer e.Close()

		mustAcquire(t, e).Release() // idle timer armed
		time.Sleep(testIdle / 2)
		l := mustAcquire(t, e) // cancels it
		time.Sleep(3 * testIdle)
		synctest.Wait()
		wantState(t, e, Running)
		if got := h.stops.Load(); got != 0 {
			t.Fatalf("stops = %d while a connection was open, want 0", got)
		}
		if got := h.starts.Load(); got != 1 {
			t.Fatalf("starts = %d, want 1", got)
		}
		l.Release()
		time.Sleep(testIdle + time.Second)
		synctest.Wait()
		wantState(t, e, Stopped)
	})
}

func TestConnectDuringStopIsHeldAndRestarts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := &fakeHost{stopGate: make(chan struct{})}
		e := newTestEngine(h, nil)
		defer e.Close()

		mustAcquire(t, e).Release()
		time.Sleep(testIdle + time.Second)
		synctest.Wait()
		wantState(t, e, Stopping)

		got := make(chan *Lease, 1)
		go func() {
			l, err := e.Acquire(context.Background())
			if err != nil {
				t.Errorf("Acquire during stop: %v", err)
			}
			got <- l
		}()
		synctest.Wait()
		select {
		case <-got:
			t.Fatal("a connection was given an engine that is stopping")
		default:
		}

		close(h.stopGate)
		l := <-got
		if l == nil {
			return
		}
		defer l.Release()
		if !l.Waited {
			t.Error("lease does not say it waited")
		}
		if s, st := h.starts.Load(), h.stops.Load(); s != 2 || st != 1 {
			t.Fatalf("starts, stops = %d, %d; want 2, 1", s, st)
		}
		wantState(t, e, Running)
	})
}

func TestWakeFailureReachesEveryWaiter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := &fakeHost{startGate: make(chan struct{}), startErr: errors.New("no capacity on host")}
		e := newTestEngine(h, nil)
		defer e.Close()

		const n = 10
		errs := make(chan error, n)
		for range n {
			go func() {
				_, err := e.Acquire(context.Background())
				errs <- err
			}()
		}
		synctest.Wait()
		close(h.startGate)
		for range n {
			err := <-errs
			if !errors.Is(err, ErrEngineUnavailable) || !strings.Contains(err.Error(), "no capacity on host") {
				t.Fatalf("Acquire error = %v, want ErrEngineUnavailable naming the host's reason", err)
			}
		}
		synctest.Wait()
		wantState(t, e, Stopped)
		if got := h.stops.Load(); got != 1 {
			t.Fatalf("stops after failed wake = %d, want 1 (clean up what half-started)", got)
		}

		// The next connection tries again.
		h.startErr = nil
		mustAcquire(t, e).Release()
		if got := h.starts.Load(); got != 2 {
			t.Fatalf("starts = %d, want 2", got)
		}
	})
}

func TestWakeTimesOutWhenEngineNeverAnswers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := &fakeHost{}
		probes := 0
		e := newTestEngine(h, func(context.Context, string) error {
			probes++
			return errors.New("connection refused")
		})
		defer e.Close()

		began := time.Now()
		_, err := e.Acquire(context.Background())
		if err == nil || !strings.Contains(err.Error(), "not ready") || !strings.Contains(err.Error(), "connection refused") {
			t.Fatalf("Acquire error = %v, want a not-ready error with the last probe's cause", err)
		}
		if took := time.Since(began); took < 10*time.Second || took > 11*time.Second {
			t.Fatalf("wake gave up after %s, want the 10s wake timeout", took)
		}
		if probes < 2 {
			t.Fatalf("probed %d times, want repeated probes", probes)
		}
		synctest.Wait()
		wantState(t, e, Stopped)
	})
}

func TestAcquireGivesUpWithItsContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := &fakeHost{startGate: make(chan struct{})}
		e := newTestEngine(h, nil)
		defer e.Close()
		defer close(h.startGate)

		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if _, err := e.Acquire(ctx); !errors.Is(err, ErrEngineUnavailable) {
			t.Fatalf("Acquire error = %v, want ErrEngineUnavailable", err)
		}
	})
}

func TestCloseStopsRunningEngineAndRefusesNewConnections(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := &fakeHost{}
		e := newTestEngine(h, nil)
		mustAcquire(t, e).Release()
		e.Close()
		e.Close()
		wantState(t, e, Stopped)
		if got := h.stops.Load(); got != 1 {
			t.Fatalf("stops = %d, want 1", got)
		}
		if _, err := e.Acquire(context.Background()); !errors.Is(err, ErrEngineUnavailable) {
			t.Fatalf("Acquire after Close = %v, want ErrEngineUnavailable", err)
		}
	})
}

func TestIdleStopAsksTheEngineFirst(t *testing.T) {
	for _, tc := range []struct {
		name      string
		answers   []error // nil: idle; errBusy: busy; other: unknown
		wantStops int32
		idleRuns  int // idle periods to let pass
	}{
		{"idle everywhere", []error{nil}, 1, 1},
		{"in use through another gateway", []error{errBusy, errBusy, nil}, 1, 3},
		{"busy until the end", []error{errBusy, errBusy, errBusy}, 0, 3},
		{"status unknown three times", []error{errUnknown, errUnknown, errUnknown}, 1, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := &fakeHost{}
				var asked atomic.Int32
				e := NewEngine(EngineConfig{ID: "e0", Provider: h, Probe: readyProbe, Idle: testIdle,
					BeforeStop: func(ctx context.Context, addr string) (bool, error) {
						i := int(asked.Add(1)) - 1
						switch err := tc.answers[min(i, len(tc.answers)-1)]; err {
						case nil:
							return false, nil
						case errBusy:
							return true, nil
						default:
							return false, err
						}
					}})
				defer e.Close()
				mustAcquire(t, e).Release()
				for range tc.idleRuns {
					time.Sleep(testIdle + time.Second)
					synctest.Wait()
				}
				if got := h.stops.Load(); got != tc.wantStops {
					t.Fatalf("stops = %d, want %d (asked %d times)", got, tc.wantStops, asked.Load())
				}
			})
		})
	}
}

var (
	errBusy    = errors.New("busy")
	errUnknown = errors.New("status unreachable")
)

func TestBrokenEngineIsRestartedOnTheNextConnection(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := &fakeHost{}
		e := newTestEngine(h, nil)
		defer e.Close()
		l := mustAcquire(t, e)
		l.Broken()
		l.Release()
		synctest.Wait()
		wantState(t, e, Stopped)
		mustAcquire(t, e).Release()
		if got := h.starts.Load(); got != 2 {
			t.Fatalf("starts = %d, want a new start after the engine broke", got)
		}
	})
}
