package gateway

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestNoEngineGoesAboveItsHardLimitUnder200ConcurrentSessions keeps the
// pool full for the whole run: a session ends only once the sessions
// placed after it fill every slot again (session k leaves when k+14 have
// been placed, 15 being the pool's capacity), so ~185 sessions always wait
// for a slot while each one frees. A placement that let an engine take one
// session too many would be seen holding it. It also checks that the
// pressure was real: every engine reached its hard limit.
func TestNoEngineGoesAboveItsHardLimitUnder200ConcurrentSessions(t *testing.T) {
	const engines, sessions = 5, 200
	capacity := engines * DefaultPolicy.Hard
	p := newTestPool(t, engines, DefaultPolicy)
	index := map[*Engine]int{}
	for i, e := range p.Engines() {
		index[e] = i
	}
	var held, worst [engines]atomic.Int32
	// placed[n] is closed once n sessions have been placed.
	placed := make([]chan struct{}, sessions+1)
	for i := range placed {
		placed[i] = make(chan struct{})
	}
	var count atomic.Int32

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, sessions)
	for i := range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e, l, err := p.Acquire(ctx, fmt.Sprintf("job-%d", i), quiet)
			if err != nil {
				errs <- err
				return
			}
			k := index[e]
			n := held[k].Add(1)
			for w := worst[k].Load(); n > w && !worst[k].CompareAndSwap(w, n); w = worst[k].Load() {
			}
			order := int(count.Add(1))
			close(placed[order])
			select {
			case <-placed[min(sessions, order+capacity-1)]:
			case <-ctx.Done():
				errs <- fmt.Errorf("session %d (placed %d-th) still held: %w", i, order, ctx.Err())
			}
			held[k].Add(-1)
			l.Release()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("a session was never served: %v", err)
	}
	for i := range worst {
		w := worst[i].Load()
		if w > int32(DefaultPolicy.Hard) {
			t.Fatalf("engine %d held %d sessions, above its hard limit %d", i, w, DefaultPolicy.Hard)
		}
		if w < int32(DefaultPolicy.Hard) {
			t.Fatalf("engine %d never held more than %d sessions: the pool was never full, so the limit was never tested", i, w)
		}
	}
	for _, st := range p.Status() {
		if st.Sessions != 0 {
			t.Fatalf("engine %s still counts %d sessions", st.ID, st.Sessions)
		}
	}
}
