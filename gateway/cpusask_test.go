package gateway

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// TestAKnownSizeIsAskedAgainOnlyAfterTheWakesFirstStreams: the size ask
// after a wake (a handshake and a /status on the engine) no longer
// coincides with the first streams' dials when the engine's size is
// already known; an unknown size is still asked at once, since sessions
// are placed by it.
func TestAKnownSizeIsAskedAgainOnlyAfterTheWakesFirstStreams(t *testing.T) {
	for _, tc := range []struct {
		name  string
		known int // size known before the wake; 0 unknown
		after time.Duration
	}{
		{"unknown size", 0, 0},
		{"known size", 4, cpusReaskDelay},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var mu sync.Mutex // guards asked
				var asked []time.Time
				p := newPrewakePool(t, newSizedHost(1), Policy{Soft: SoftBySize, Hard: 8}, func(c *EngineConfig) {
					c.Idle = time.Hour
					c.CPUs = func(context.Context, string) (int, error) {
						mu.Lock()
						defer mu.Unlock()
						asked = append(asked, time.Now())
						return 6, nil
					}
				})
				p.engine("engine-0").setCPUs(tc.known)
				began := time.Now()
				_, l, err := p.Acquire(t.Context(), "repo:a", quiet)
				if err != nil {
					t.Fatal(err)
				}
				defer l.Release()
				synctest.Wait()
				mu.Lock()
				n := len(asked)
				mu.Unlock()
				if tc.after > 0 && n != 0 {
					t.Fatalf("asked %d times as the wake's streams began, want none yet", n)
				}
				time.Sleep(cpusReaskDelay)
				synctest.Wait()
				mu.Lock()
				defer mu.Unlock()
				if len(asked) != 1 || asked[0].Sub(began) != tc.after {
					t.Fatalf("asked at %v after the wake began, want once at %s", asked, tc.after)
				}
				if got := p.Status()[0].CPUs; got != 6 {
					t.Fatalf("CPUs %d after the ask, want 6", got)
				}
			})
		})
	}
}
