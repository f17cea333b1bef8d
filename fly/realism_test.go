package fly

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	fly "github.com/superfly/fly-go"

	"github.com/wakegate/wakegate/fly/flytest"
	"github.com/wakegate/wakegate/gateway"
)

// These tests hold the provider to Fly as it really behaves: updates that
// settle in seconds, stops that outlast a wait, engines that exit by
// themselves, capacity refused on an update, leases lost to another
// gateway, bare 429s, Fly's 60 s wait cap, suspend and resume.

// tokenMint hands out a fresh enrolment token per cold start, as the
// gateway's Prepare does, and remembers them.
type tokenMint struct {
	mu     sync.Mutex
	issued []string
}

func (tk *tokenMint) prepare(_ context.Context, id string) (map[string]string, error) {
	tk.mu.Lock()
	defer tk.mu.Unlock()
	tok := "tok-" + id + "-" + string(rune('a'+len(tk.issued)))
	tk.issued = append(tk.issued, tok)
	return map[string]string{"WAKEGATE_TOKEN": tok}, nil
}

func (tk *tokenMint) last() string {
	tk.mu.Lock()
	defer tk.mu.Unlock()
	if len(tk.issued) == 0 {
		return ""
	}
	return tk.issued[len(tk.issued)-1]
}

func envOf(em *flytest.Emulator, id string) map[string]string {
	for _, m := range em.Machines(app) {
		if m.ID == id {
			return m.Config.Env
		}
	}
	return nil
}

// A cold wake updates the machine (its fresh token) and must wait for the
// update to settle: on Fly a start while the machine is replacing is
// refused 412, which is not a full host.
func TestAColdWakeWaitsForTheUpdateToSettle(t *testing.T) {
	const delay = 1500 * time.Millisecond
	w := newWorld(t, 1, flytest.Options{UpdateDelay: delay})
	id := w.ids[0]
	tk := &tokenMint{}
	p := newProvider(t, Config{Prepare: tk.prepare})
	began := time.Now()
	addr, err := p.Start(t.Context(), id)
	if err != nil {
		t.Fatalf("a cold wake through a %s update failed: %v", delay, err)
	}
	if took := time.Since(began); took < delay {
		t.Fatalf("the wake took %s, less than the update's %s: it did not wait for it", took, delay)
	}
	if st := w.em.State(app, id); st != "started" || addr == "" {
		t.Fatalf("after the wake the machine is %s at %q", st, addr)
	}
	if got := envOf(w.em, id)["WAKEGATE_TOKEN"]; got != tk.last() {
		t.Fatalf("the machine has token %q, want the wake's %q", got, tk.last())
	}
	if u := p.Unhealthy(); len(u) != 0 {
		t.Fatalf("a machine that was only replacing is marked unhealthy: %v", u)
	}
	if n := w.em.Calls("start"); n != 1 {
		t.Fatalf("start requests = %d, want 1: none should be sent while it replaces", n)
	}
}

// Fly refuses capacity on an update (409) as well as on a start (412):
// both are the host's, and the gateway sends the connection to another
// engine.
func TestCapacityRefusedOnUpdateSendsTheConnectionElsewhere(t *testing.T) {
	w := newWorld(t, 2, flytest.Options{UpdateDelay: 200 * time.Millisecond})
	tk := &tokenMint{}
	p := newProvider(t, Config{Prepare: tk.prepare, LeaseWait: 2 * time.Second})
	pool, err := gateway.NewPool(t.Context(), p, gateway.EngineConfig{Probe: machineProbe(w.em), Idle: time.Minute,
		WakeTimeout: 20 * time.Second, ProbeInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	key := "ci"
	home := pool.Route(key).ID()
	w.em.NoCapacity(app, home, "insufficient memory available to fulfill request")
	e, l, err := pool.Acquire(t.Context(), key, discard())
	if err != nil {
		t.Fatalf("a connection whose home host is full failed instead of moving: %v", err)
	}
	defer l.Release()
	if e.ID() == home {
		t.Fatalf("the connection went to the full host %s", home)
	}
	if reason := p.Unhealthy()[home]; !strings.Contains(reason, "could not reserve resource") {
		t.Fatalf("the full host's machine is not marked with Fly's reason: %v", p.Unhealthy())
	}
	if st := w.em.State(app, home); st != "created" {
		t.Fatalf("the full host's machine is %s, want untouched", st)
	}
}

// A stop that outlasts the provider's wait (the engine draining builds) is
// reported as still stopping, not as stopped or failed; a wake meanwhile
// waits for the machine to have stopped, then starts it — Fly refuses a
// start before — and nothing is marked unhealthy.
func TestAStopThatOutlastsTheWaitLeavesTheMachineStopping(t *testing.T) {
	w := newWorld(t, 1, flytest.Options{})
	id := w.ids[0]
	p := newProvider(t, Config{StopTimeout: time.Second})
	if _, err := p.Start(t.Context(), id); err != nil {
		t.Fatal(err)
	}
	release := w.run.holdStops(t)
	err := p.Stop(t.Context(), id)
	var se *StoppingError
	if !errors.As(err, &se) || !gateway.IsStillStopping(err) {
		t.Fatalf("a stop still draining after the wait = %v, want a StoppingError the gateway reads as still stopping", err)
	}
	if st := w.em.State(app, id); st != "stopping" {
		t.Fatalf("the machine is %s", st)
	}

	woke := make(chan error, 1)
	go func() {
		_, err := p.Start(t.Context(), id)
		woke <- err
	}()
	select {
	case err := <-woke:
		t.Fatalf("a wake of a stopping machine returned before it stopped: %v", err)
	case <-time.After(time.Second): // the wake must still be waiting
	}
	release()
	if err := <-woke; err != nil {
		t.Fatalf("the wake after the drain: %v", err)
	}
	if n := w.em.Calls("start"); n != 2 {
		t.Fatalf("start requests = %d, want 2: none while the machine was stopping", n)
	}
	if u := p.Unhealthy(); len(u) != 0 {
		t.Fatalf("a stopping machine was marked unhealthy: %v", u)
	}
}

// One wait is capped by Fly (60 s; here the emulator's cap is 1 s): a
// wake that takes longer waits again, within its own bound.
func TestAWakeLongerThanFlysWaitCapWaitsAgain(t *testing.T) {
	w := newWorld(t, 1, flytest.Options{StartDelay: 2500 * time.Millisecond, MaxWait: time.Second})
	p := newProvider(t, Config{StartTimeout: 20 * time.Second})
	if _, err := p.Start(t.Context(), w.ids[0]); err != nil {
		t.Fatalf("a 2.5 s boot with 1 s waits: %v", err)
	}
	if n := w.em.Calls("wait"); n < 3 {
		t.Fatalf("wait requests = %d, want at least 3 for a 2.5 s boot under a 1 s cap", n)
	}
}

// An engine that exits by itself (idle, crash) leaves its machine stopped:
// a stop finds nothing to do and the next wake starts it again.
func TestAnEngineThatExitedByItselfIsWokenAgain(t *testing.T) {
	w := newWorld(t, 1, flytest.Options{})
	id := w.ids[0]
	p := newProvider(t, Config{})
	if _, err := p.Start(t.Context(), id); err != nil {
		t.Fatal(err)
	}
	w.run.exit(id)
	waitMachine(t, w.em, id, "stopped")
	if err := p.Stop(t.Context(), id); err != nil {
		t.Fatalf("stop of a machine that had stopped by itself: %v", err)
	}
	if n := w.em.Calls("stop"); n != 0 {
		t.Fatalf("stop requests = %d for a machine already stopped", n)
	}
	if _, err := p.Start(t.Context(), id); err != nil {
		t.Fatalf("wake after the engine exited: %v", err)
	}
	if n := w.run.count(w.run.started, id); n != 2 {
		t.Fatalf("the machine ran %d times, want 2", n)
	}
}

// bare429 answers the given number of start requests with a 429 that has
// no Retry-After, as Fly may.
func TestWakesThroughBare429s(t *testing.T) {
	w := newWorld(t, 1, flytest.Options{NoRetryAfter: true, RatePerSecond: 1, Burst: 3})
	id := w.ids[0]
	w.em.Inject(flytest.Fault{Action: "start", Machine: id, Status: http.StatusTooManyRequests, Count: 2, Message: "rate limited"})
	w.em.Inject(flytest.Fault{Action: "list", Status: http.StatusTooManyRequests, Message: "rate limited"})
	p := newProvider(t, Config{})
	if _, err := p.Engines(t.Context()); err != nil {
		t.Fatalf("list through a bare 429: %v", err)
	}
	began := time.Now()
	if _, err := p.Start(t.Context(), id); err != nil {
		t.Fatalf("a wake through two bare 429s: %v", err)
	}
	if took := time.Since(began); took < 2*time.Second {
		t.Fatalf("the wake took %s: the retries did not back off (1 s, then 2 s) without Retry-After", took)
	}
	if n := w.em.Calls("start"); n != 3 {
		t.Fatalf("start requests = %d, want 3", n)
	}
}

// holdingTransport holds one gateway's requests of a kind until released,
// as a gateway stalled mid-wake (a long GC pause, a frozen VM).
type holdingTransport struct {
	match   func(*http.Request) bool
	release chan struct{}
	held    atomic.Int32
}

// hasNonce says whether a request carries a lease nonce (flaps sets the
// header under its lowercase, non-canonical name).
func hasNonce(r *http.Request) bool {
	return r.Header.Get("fly-machine-lease-nonce") != "" || len(r.Header["fly-machine-lease-nonce"]) > 0
}

func (h *holdingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if h.match(r) {
		h.held.Add(1)
		select {
		case <-h.release:
		case <-r.Context().Done():
			return nil, r.Context().Err()
		}
	}
	return http.DefaultTransport.RoundTrip(r)
}

// Gateway A stalls mid-wake until its lease expires and gateway B takes
// it and wakes the machine. A's late calls are refused as a lost lease:
// A reads the machine again under a new lease and serves the engine B
// started — never marking it unhealthy, never starting it twice.
func TestALeaseLostToASecondGatewayIsRetakenNotMarkedUnhealthy(t *testing.T) {
	w := newWorld(t, 1, flytest.Options{UpdateDelay: 100 * time.Millisecond})
	id := w.ids[0]
	stall := &holdingTransport{release: make(chan struct{}), match: func(r *http.Request) bool {
		// A's refreshes and its update: its lease lapses while it stalls.
		return r.Method == http.MethodPost && (strings.HasSuffix(r.URL.Path, "/lease") && hasNonce(r) ||
			strings.HasSuffix(r.URL.Path, "/machines/"+id))
	}}
	tk := &tokenMint{}
	a := newProvider(t, Config{Prepare: tk.prepare, Transport: stall, LeaseTTL: time.Second, StartTimeout: 20 * time.Second})
	b := newProvider(t, Config{Prepare: tk.prepare, LeaseWait: 10 * time.Second})

	woke := make(chan error, 1)
	go func() {
		_, err := a.Start(t.Context(), id)
		woke <- err
	}()
	deadline := time.Now().Add(10 * time.Second)
	for stall.held.Load() == 0 { // A is stalled in its update
		if time.Now().After(deadline) {
			t.Fatal("gateway A never reached its update")
		}
		time.Sleep(10 * time.Millisecond) // polling with a deadline
	}
	if _, err := b.Start(t.Context(), id); err != nil {
		t.Fatalf("gateway B could not take the expired lease and wake the machine: %v", err)
	}
	close(stall.release)
	if err := <-woke; err != nil {
		t.Fatalf("gateway A's wake after losing its lease: %v", err)
	}
	if u := a.Unhealthy(); len(u) != 0 {
		t.Fatalf("a lost lease marked the machine unhealthy: %v", u)
	}
	if n := w.run.count(w.run.started, id); n != 1 {
		t.Fatalf("the machine ran %d times, want once", n)
	}
}

// Suspend mode really resumes: the suspended machine is started as it is
// — the same process, no update (an update discards the snapshot) — and
// the engine keeps the certificate it enrolled for.
func TestSuspendModeResumesWithoutAnUpdate(t *testing.T) {
	w := newWorld(t, 1, flytest.Options{UpdateDelay: 200 * time.Millisecond, SuspendDelay: 200 * time.Millisecond})
	id := w.ids[0]
	tk := &tokenMint{}
	p := newProvider(t, Config{Suspend: true, Prepare: tk.prepare})
	if _, from, err := p.StartFrom(t.Context(), id); err != nil || from != "stopped" {
		t.Fatalf("first start: from %q, %v; want from stopped", from, err)
	}
	if _, from, err := p.StartFrom(t.Context(), id); err != nil || from != "running" {
		t.Fatalf("start of a started machine: from %q, %v; want from running", from, err)
	}
	if err := p.Stop(t.Context(), id); err != nil {
		t.Fatal(err)
	}
	if st := w.em.State(app, id); st != "suspended" {
		t.Fatalf("the machine is %s, want suspended", st)
	}
	updates := w.em.Calls("update")
	if _, from, err := p.StartFrom(t.Context(), id); err != nil || from != "suspended" {
		t.Fatalf("resume: from %q, %v; want from suspended", from, err)
	}
	if n := w.em.Calls("update"); n != updates {
		t.Fatalf("the resume sent %d updates: an update discards the snapshot", n-updates)
	}
	if started, thawed := w.run.count(w.run.started, id), w.run.count(w.run.thawed, id); started != 1 || thawed != 1 {
		t.Fatalf("processes started %d, thawed %d: want the suspended one resumed", started, thawed)
	}
}

// A machine suspended longer than its engine's certificate can be trusted
// to outlive is started cold, with a fresh token.
func TestASuspendedMachineAsleepTooLongIsStartedCold(t *testing.T) {
	w := newWorld(t, 1, flytest.Options{UpdateDelay: 200 * time.Millisecond})
	id := w.ids[0]
	tk := &tokenMint{}
	p := newProvider(t, Config{Suspend: true, Prepare: tk.prepare, ResumeWithin: 300 * time.Millisecond})
	if _, err := p.Start(t.Context(), id); err != nil {
		t.Fatal(err)
	}
	if err := p.Stop(t.Context(), id); err != nil {
		t.Fatal(err)
	}
	first := tk.last()
	time.Sleep(500 * time.Millisecond) // the emulated sleep: longer than ResumeWithin
	if _, from, err := p.StartFrom(t.Context(), id); err != nil || from != "stopped" {
		t.Fatalf("cold start of a long-suspended machine: from %q, %v; want from stopped (a cold start)", from, err)
	}
	if started, thawed := w.run.count(w.run.started, id), w.run.count(w.run.thawed, id); started != 2 || thawed != 0 {
		t.Fatalf("processes started %d, thawed %d: want a new one", started, thawed)
	}
	if got := envOf(w.em, id)["WAKEGATE_TOKEN"]; got == first || got != tk.last() {
		t.Fatalf("the cold-started machine has token %q (first %q): want a fresh one", got, first)
	}
}

// Suspend mode stops, rather than suspends, a machine Fly cannot suspend
// (more than 2 GB) and an engine that did not answer before the stop.
func TestSuspendModeStopsWhatCannotBeSuspended(t *testing.T) {
	for _, tc := range []struct {
		name   string
		memory int
		busy   func(context.Context, string) (bool, error)
	}{
		{name: "4 GB machine", memory: 4096},
		{name: "engine that does not answer", memory: 2048, busy: func(context.Context, string) (bool, error) {
			return false, errors.New("engine certificate: x509: certificate has expired")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t, 1, flytest.Options{})
			id := w.ids[0]
			w.setGuest(t, id, tc.memory)
			p := newProvider(t, Config{Suspend: true, Busy: tc.busy})
			if _, err := p.Start(t.Context(), id); err != nil {
				t.Fatal(err)
			}
			if err := p.Stop(t.Context(), id); err != nil {
				t.Fatal(err)
			}
			if st := w.em.State(app, id); st != "stopped" {
				t.Fatalf("the machine is %s, want stopped", st)
			}
		})
	}
}

func waitMachine(t *testing.T, em *flytest.Emulator, id, state string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for em.State(app, id) != state {
		if time.Now().After(deadline) {
			t.Fatalf("machine %s is %s, never %s", id, em.State(app, id), state)
		}
		time.Sleep(10 * time.Millisecond) // polling with a deadline
	}
}

// setGuest sizes a machine (an update through the API, settled).
func (w *world) setGuest(t *testing.T, id string, memoryMB int) {
	t.Helper()
	fc := w.flaps(t)
	m, err := fc.Get(t.Context(), app, id)
	if err != nil {
		t.Fatal(err)
	}
	conf := *m.Config
	conf.Guest = &fly.MachineGuest{CPUKind: "performance", CPUs: 1, MemoryMB: memoryMB}
	if _, err := fc.Update(t.Context(), app, fly.LaunchMachineInput{ID: id, Config: &conf, SkipLaunch: true}, ""); err != nil {
		t.Fatal(err)
	}
	waitMachine(t, w.em, id, "created")
}
