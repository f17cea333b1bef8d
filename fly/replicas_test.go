package fly

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/wakegate/wakegate/fly/flytest"
	"github.com/wakegate/wakegate/gateway"
)

// TestTwoGatewaysUnderConcurrentConnectsStartEachMachineOnce runs two
// gateways' pools (each its own provider, as two replicas would) against
// one emulator and connects to every engine from both at once: leases keep
// them from racing, so each machine is started exactly once.
func TestTwoGatewaysUnderConcurrentConnectsStartEachMachineOnce(t *testing.T) {
	w := newWorld(t, 3, flytest.Options{StartDelay: 300 * time.Millisecond, RatePerSecond: 5, Burst: 5})
	ready := func(context.Context, string) error { return nil }
	var pools []*gateway.Pool
	for range 2 {
		p := newProvider(t, Config{LeaseWait: 20 * time.Second})
		pool, err := gateway.NewPool(t.Context(), p, gateway.EngineConfig{Probe: ready, Idle: time.Minute, WakeTimeout: 30 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(pool.Close)
		pools = append(pools, pool)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 60)
	for _, pool := range pools {
		for _, e := range pool.Engines() {
			for range 10 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					l, err := e.Acquire(t.Context())
					if err != nil {
						errs <- err
						return
					}
					l.Release()
				}()
			}
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("concurrent connect: %v", err)
	}
	for _, id := range w.ids {
		if got := w.run.count(w.run.started, id); got != 1 {
			t.Errorf("machine %s started %d times, want once", id, got)
		}
	}
	if got := w.em.Calls("start"); got != len(w.ids) {
		t.Fatalf("start calls = %d, want %d", got, len(w.ids))
	}
}
