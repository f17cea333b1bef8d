package fly

import (
	"testing"
	"time"

	"github.com/wakegate/wakegate/fly/flytest"
	"github.com/wakegate/wakegate/gateway"
)

// The gateway's view follows Fly's: an engine whose machine is still
// stopping (draining builds past the provider's wait) stays Stopping and
// billed, and a connection meanwhile waits for Fly to finish the stop,
// then wakes it — the start is never refused for coming too early.
func TestAPoolKeepsADrainingEngineStoppingAndBilledUntilFlyHasStoppedIt(t *testing.T) {
	w := newWorld(t, 1, flytest.Options{})
	id := w.ids[0]
	p := newProvider(t, Config{StopTimeout: 500 * time.Millisecond})
	pool, err := gateway.NewPool(t.Context(), p, gateway.EngineConfig{Probe: machineProbe(w.em), Idle: 100 * time.Millisecond,
		WakeTimeout: 20 * time.Second, StopTimeout: time.Second, ProbeInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	e := pool.Engines()[0]
	release := w.run.holdStops(t)

	l, err := e.Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	l.Release()
	waitMachine(t, w.em, id, "stopping")
	time.Sleep(2 * time.Second) // the drain outlasts several of the provider's waits
	st := e.Status()
	if st.State != gateway.Stopping {
		t.Fatalf("while Fly still stops the machine the engine is %s, want stopping", st.State)
	}
	billed := st.MachineSeconds

	woke := make(chan error, 1)
	go func() {
		l, err := e.Acquire(t.Context())
		if err == nil {
			l.Release()
		}
		woke <- err
	}()
	time.Sleep(500 * time.Millisecond) // the connection must still be waiting
	if now := e.Status().MachineSeconds; now <= billed {
		t.Fatalf("machine-seconds %v then %v: a stopping machine is billed", billed, now)
	}
	release()
	if err := <-woke; err != nil {
		t.Fatalf("the connection that waited out the drain: %v", err)
	}
	if n := w.em.Calls("start"); n != 2 {
		t.Fatalf("start requests = %d, want 2 (none refused for coming before the stop ended)", n)
	}
	if n := w.run.count(w.run.started, id); n != 2 {
		t.Fatalf("the machine ran %d times, want 2", n)
	}
}
