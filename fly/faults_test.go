package fly

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	fly "github.com/superfly/fly-go"

	"github.com/wakegate/wakegate/fly/flytest"
	"github.com/wakegate/wakegate/gateway"
)

// front sits between the provider and the emulator and does to start
// requests what the emulator's own faults cannot: reset the connection
// (before or after the start is applied) and hold a start in flight.
type front struct {
	em *flytest.Emulator

	mu           sync.Mutex    // guards the fields below
	resetsBefore int           // start requests to reset before the emulator sees them
	resetsAfter  int           // start requests to reset after the emulator applied them
	gate         chan struct{} // non-nil: start requests wait until it is closed
	dropLate     bool          // a gated start whose client has gone is dropped, not applied

	arrived chan struct{} // a gated start reached the gate
	handled chan struct{} // a gated start was applied or dropped
}

func (f *front) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || !strings.HasSuffix(r.URL.Path, "/start") {
		f.em.ServeHTTP(w, r)
		return
	}
	f.mu.Lock()
	before := f.resetsBefore > 0
	if before {
		f.resetsBefore--
	}
	after := !before && f.resetsAfter > 0
	if after {
		f.resetsAfter--
	}
	gate, dropLate := f.gate, f.dropLate
	f.mu.Unlock()
	switch {
	case before:
		resetConn(w)
	case after:
		f.em.ServeHTTP(httptest.NewRecorder(), r)
		resetConn(w)
	case gate != nil:
		f.arrived <- struct{}{}
		<-gate
		if !(dropLate && r.Context().Err() != nil) {
			// The start reaches Fly although its gateway is gone.
			f.em.ServeHTTP(w, r)
		}
		f.handled <- struct{}{}
	default:
		f.em.ServeHTTP(w, r)
	}
}

// resetConn closes the request's connection with a TCP RST.
func resetConn(w http.ResponseWriter) {
	conn, _, err := w.(http.Hijacker).Hijack()
	if err != nil {
		panic(err)
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	conn.Close()
}

// newFront puts a front before w's emulator and points flaps at it.
func newFront(t *testing.T, w *world) (*front, string) {
	t.Helper()
	f := &front{em: w.em, arrived: make(chan struct{}, 1), handled: make(chan struct{}, 1)}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	t.Setenv("FLY_FLAPS_BASE_URL", srv.URL)
	return f, srv.URL
}

// machineProbe answers like an engine would: ready once the machine that
// owns addr's private address is started.
func machineProbe(em *flytest.Emulator) gateway.Prober {
	return func(_ context.Context, addr string) error {
		host, _, err := net.SplitHostPort(strings.TrimPrefix(addr, "tls://"))
		if err != nil {
			return err
		}
		for _, m := range em.Machines(app) {
			if m.PrivateIP == host {
				if m.State == "started" {
					return nil
				}
				return errors.New("machine is " + m.State)
			}
		}
		return errors.New("no machine at " + host)
	}
}

func (r *recorder) starts(id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.started[id]
}

// leaseHeld asks the emulator whether anyone holds the machine's lease,
// taking and giving it back if not.
func leaseHeld(t *testing.T, base, id string) bool {
	t.Helper()
	req := func(method, path, nonce string) *http.Response {
		r, _ := http.NewRequestWithContext(t.Context(), method, base+"/v1/apps/"+app+"/machines/"+id+path, nil)
		r.Header.Set("Authorization", "Bearer test-token")
		if nonce != "" {
			r.Header.Set("fly-machine-lease-nonce", nonce)
		}
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	resp := req(http.MethodPost, "/lease?ttl=1", "")
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusConflict {
		return true
	}
	var l fly.MachineLease
	if err := json.NewDecoder(resp.Body).Decode(&l); err != nil || l.Data == nil {
		t.Fatalf("lease probe: %d %v", resp.StatusCode, err)
	}
	req(http.MethodDelete, "/lease", l.Data.Nonce).Body.Close()
	return false
}

// settle waits, with a deadline, until the engine is neither starting nor
// stopping, and returns its state.
func settle(t *testing.T, e *gateway.Engine) gateway.State {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		st := e.Status().State
		if st == gateway.Running || st == gateway.Stopped {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("engine %s still %s", e.ID(), st)
		}
		time.Sleep(20 * time.Millisecond) // polling with a deadline
	}
}

// TestWakesThroughProviderFaults wakes an engine through a gateway pool
// while the Machines API misbehaves on the start request. Every wake ends
// within its bound, succeeding or failing with an error that names the
// cause; the machine runs at most once (exactly once after the wakes that
// succeed), no lease is left held, and the machine ends stopped after the
// pool closes.
func TestWakesThroughProviderFaults(t *testing.T) {
	const wakeTimeout = 15 * time.Second
	for _, tc := range []struct {
		name   string
		fault  func(f *front, id string)
		minDur time.Duration // a retry must honour this (Retry-After)
		errHas []string      // non-nil: the first wake fails, naming these
		isErr  error         // and errors.Is this
		call   time.Duration // the provider's per-request bound; 10s if 0
	}{
		{name: "429 with Retry-After on start", minDur: time.Second, fault: func(f *front, id string) {
			f.em.Inject(flytest.Fault{Action: "start", Machine: id, Status: http.StatusTooManyRequests, RetryAfter: time.Second, Message: "rate limited"})
		}},
		{name: "502 then 503 then success", fault: func(f *front, id string) {
			f.em.Inject(flytest.Fault{Action: "start", Machine: id, Status: http.StatusBadGateway})
			f.em.Inject(flytest.Fault{Action: "start", Machine: id, Status: http.StatusServiceUnavailable})
		}},
		{name: "503 on get and wait", fault: func(f *front, id string) {
			f.em.Inject(flytest.Fault{Action: "get", Machine: id, Status: http.StatusServiceUnavailable, Count: 2})
			f.em.Inject(flytest.Fault{Action: "wait", Machine: id, Status: http.StatusBadGateway})
		}},
		{name: "start hangs past the call bound", fault: func(f *front, id string) {
			f.em.Inject(flytest.Fault{Action: "start", Machine: id, Hang: time.Minute})
		}, call: 500 * time.Millisecond, errHas: []string{"start machine", "did not answer within"}, isErr: context.DeadlineExceeded},
		{name: "start answers 503 until the call bound runs out", fault: func(f *front, id string) {
			f.em.Inject(flytest.Fault{Action: "start", Machine: id, Status: http.StatusServiceUnavailable, Count: 2})
		}, call: 1500 * time.Millisecond, errHas: []string{"start machine", "kept answering 503 Service Unavailable"}, isErr: context.DeadlineExceeded},
		{name: "connection reset before the start lands", fault: func(f *front, id string) {
			f.mu.Lock()
			f.resetsBefore = 1
			f.mu.Unlock()
		}},
		{name: "connection reset after the start landed", fault: func(f *front, id string) {
			f.mu.Lock()
			f.resetsAfter = 1
			f.mu.Unlock()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t, 1, flytest.Options{StartDelay: 100 * time.Millisecond})
			f, base := newFront(t, w)
			id := w.ids[0]
			call := tc.call
			if call == 0 {
				// Retries back off 1s, 2s, 4s (transport.go): room for two.
				call = 10 * time.Second
			}
			p := newProvider(t, Config{CallTimeout: call, LeaseTTL: 2 * time.Second, LeaseWait: 5 * time.Second})
			pool, err := gateway.NewPool(t.Context(), p, gateway.EngineConfig{Probe: machineProbe(w.em), Idle: time.Minute,
				WakeTimeout: wakeTimeout, StopTimeout: 15 * time.Second, ProbeInterval: 20 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			closed := false
			t.Cleanup(func() {
				if !closed {
					pool.Close()
				}
			})
			e := pool.Engines()[0]
			tc.fault(f, id)

			began := time.Now()
			l, err := e.Acquire(t.Context())
			took := time.Since(began)
			if took > wakeTimeout+time.Second {
				t.Fatalf("the wake took %s, past its bound of %s", took, wakeTimeout)
			}
			if tc.errHas != nil {
				if err == nil {
					l.Release()
					t.Fatal("the wake succeeded, want it to fail")
				}
				for _, s := range append(tc.errHas, id) {
					if !strings.Contains(err.Error(), s) {
						t.Fatalf("wake error %q does not say %q", err, s)
					}
				}
				if !errors.Is(err, gateway.ErrEngineUnavailable) || (tc.isErr != nil && !errors.Is(err, tc.isErr)) {
					t.Fatalf("wake error %v: want ErrEngineUnavailable and %v", err, tc.isErr)
				}
				if st := settle(t, e); st != gateway.Stopped {
					t.Fatalf("after a failed wake the engine is %s", st)
				}
				if st := w.em.State(app, id); st != "stopped" && st != "created" {
					t.Fatalf("after a failed wake the machine is %s, want it never started", st)
				}
				if n := w.run.starts(id); n != 0 {
					t.Fatalf("a failed wake ran the machine %d times", n)
				}
				if leaseHeld(t, base, id) {
					t.Fatal("a failed wake left the machine's lease held")
				}
				// The fault has passed: the next connection wakes it.
				if l, err = e.Acquire(t.Context()); err != nil {
					t.Fatalf("wake after the fault passed: %v", err)
				}
			} else if err != nil {
				t.Fatalf("wake through the fault failed after %s: %v", took, err)
			}
			if took < tc.minDur {
				t.Fatalf("the wake took %s: a retry came before Retry-After's %s", took, tc.minDur)
			}
			if st := w.em.State(app, id); st != "started" {
				t.Fatalf("the engine has a lease but the machine is %s", st)
			}
			l.Release()
			if n := w.run.starts(id); n != 1 {
				t.Fatalf("the machine ran %d times, want once", n)
			}
			if leaseHeld(t, base, id) {
				t.Fatal("a wake left the machine's lease held")
			}
			t.Logf("start requests %d, wake %s", w.em.Calls("start"), took)

			pool.Close()
			closed = true
			if st := w.em.State(app, id); st != "stopped" {
				t.Fatalf("after the pool closed the machine is %s", st)
			}
			if leaseHeld(t, base, id) {
				t.Fatal("stopping left the machine's lease held")
			}
		})
	}
}

// killable is a gateway's network: once dead, nothing it sends arrives,
// as when the gateway's process is killed.
type killable struct{ dead atomic.Bool }

func (k *killable) RoundTrip(r *http.Request) (*http.Response, error) {
	if k.dead.Load() {
		return nil, errors.New("gateway process gone")
	}
	return http.DefaultTransport.RoundTrip(r)
}

// TestAGatewayRestartedMidWakeConverges closes (or kills) gateway A while
// its start request is in flight, then asks a fresh gateway B, on the same
// machines, for the same engine. Whether A's start reaches Fly late or is
// lost, and whether A released its lease or died holding it, B wakes the
// engine: the machine runs once, serves through B, and no lease stays held.
func TestAGatewayRestartedMidWakeConverges(t *testing.T) {
	for _, tc := range []struct {
		name      string
		crash     bool // A dies without releasing its lease or stopping
		startLost bool // A's in-flight start never reaches Fly
	}{
		{name: "closed; its start lands late"},
		{name: "closed; its start is lost", startLost: true},
		{name: "killed; its start lands late", crash: true},
		{name: "killed; its start is lost", crash: true, startLost: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t, 1, flytest.Options{StartDelay: 100 * time.Millisecond})
			f, base := newFront(t, w)
			id := w.ids[0]
			gate := make(chan struct{})
			var open sync.Once
			t.Cleanup(func() { open.Do(func() { close(gate) }) })
			f.mu.Lock()
			f.gate, f.dropLate = gate, tc.startLost
			f.mu.Unlock()

			tmpl := gateway.EngineConfig{Probe: machineProbe(w.em), Idle: time.Minute,
				WakeTimeout: 15 * time.Second, StopTimeout: 10 * time.Second, ProbeInterval: 20 * time.Millisecond}
			gwNet := &killable{}
			pa, err := gateway.NewPool(t.Context(), newProvider(t, Config{Transport: gwNet,
				CallTimeout: time.Second, LeaseTTL: 5 * time.Second, LeaseWait: time.Second}), tmpl)
			if err != nil {
				t.Fatal(err)
			}
			woke := make(chan error, 1)
			go func() {
				l, err := pa.Engines()[0].Acquire(t.Context())
				if err == nil {
					l.Release()
				}
				woke <- err
			}()
			select {
			case <-f.arrived:
			case <-time.After(10 * time.Second):
				t.Fatal("gateway A's start never reached the API")
			}
			if tc.crash {
				gwNet.dead.Store(true)
			}
			pa.Close()
			if err := <-woke; err == nil {
				t.Fatal("gateway A's wake succeeded though A closed during its start")
			}
			if tc.crash && !leaseHeld(t, base, id) {
				t.Fatal("a killed gateway's lease is not held: the test does not test its expiry")
			}
			f.mu.Lock()
			f.gate = nil
			f.mu.Unlock()
			open.Do(func() { close(gate) })
			<-f.handled
			t.Logf("after A: machine %s, lease held %v", w.em.State(app, id), leaseHeld(t, base, id))

			pb, err := gateway.NewPool(t.Context(), newProvider(t, Config{CallTimeout: 2 * time.Second,
				LeaseTTL: time.Second, LeaseWait: 10 * time.Second}), tmpl)
			if err != nil {
				t.Fatal(err)
			}
			closedB := false
			t.Cleanup(func() {
				if !closedB {
					pb.Close()
				}
			})
			eb := pb.Engines()[0]
			l, err := eb.Acquire(t.Context())
			if err != nil {
				t.Fatalf("gateway B could not wake the engine gateway A left mid-wake: %v", err)
			}
			if st := w.em.State(app, id); st != "started" {
				t.Fatalf("gateway B has a lease but the machine is %s", st)
			}
			if err := machineProbe(w.em)(t.Context(), l.Addr); err != nil {
				t.Fatalf("gateway B's address %s does not serve: %v", l.Addr, err)
			}
			l.Release()
			if n := w.run.starts(id); n != 1 {
				t.Fatalf("the machine ran %d times, want once", n)
			}
			if leaseHeld(t, base, id) {
				t.Fatal("the machine's lease is still held after B's wake")
			}
			pb.Close()
			closedB = true
			if st := w.em.State(app, id); st != "stopped" {
				t.Fatalf("after gateway B closed the machine is %s", st)
			}
		})
	}
}

// TestAGatewayClosedWhileItsMachineBootsStopsIt closes a pool after its
// start request succeeded, while the machine is still starting: the wake
// is abandoned, and the machine must not be left running with no gateway
// that knows about it.
func TestAGatewayClosedWhileItsMachineBootsStopsIt(t *testing.T) {
	w := newWorld(t, 1, flytest.Options{StartDelay: time.Second})
	id := w.ids[0]
	pool, err := gateway.NewPool(t.Context(), newProvider(t, Config{}), gateway.EngineConfig{Probe: machineProbe(w.em),
		Idle: time.Minute, WakeTimeout: 15 * time.Second, StopTimeout: 15 * time.Second, ProbeInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	woke := make(chan error, 1)
	go func() {
		l, err := pool.Engines()[0].Acquire(t.Context())
		if err == nil {
			l.Release()
		}
		woke <- err
	}()
	deadline := time.Now().Add(10 * time.Second)
	for w.em.State(app, id) != "starting" {
		if time.Now().After(deadline) {
			t.Fatal("the machine never began starting")
		}
		time.Sleep(10 * time.Millisecond) // polling with a deadline
	}
	pool.Close()
	<-woke
	deadline = time.Now().Add(10 * time.Second)
	for {
		st := w.em.State(app, id)
		if st == "stopped" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the closed gateway left its machine %s, with nobody to stop it", st)
		}
		time.Sleep(20 * time.Millisecond) // polling with a deadline
	}
}
