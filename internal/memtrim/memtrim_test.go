package memtrim

import (
	"context"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// fakeProcess is a connection count the test moves and a trim it counts.
type fakeProcess struct {
	conns atomic.Int64
	moved atomic.Int64 // bytes copied
	trims atomic.Int32
}

func (p *fakeProcess) config() Config {
	return Config{
		Count:       p.conns.Load,
		Poll:        time.Second,
		MinNew:      100,
		MinInterval: 10 * time.Second,
		Moved:       p.moved.Load,
		QuietBytes:  1000,
		MaxDefer:    20 * time.Second,
		trim:        func() Result { p.trims.Add(1); return Result{Cycles: 1} },
	}
}

// transfer moves bytes for d, 10 KB every half Poll (well over
// QuietBytes per Poll), as a bulk copy does.
func (p *fakeProcess) transfer(d time.Duration) {
	for end := time.Now().Add(d); time.Now().Before(end); {
		p.moved.Add(10_000)
		time.Sleep(500 * time.Millisecond)
	}
}

// burst adds n connections, a few every half Poll, as a burst arrives:
// the count moves at every tick until it ends.
func (p *fakeProcess) burst(n int64) {
	for n > 0 {
		step := min(n, 40)
		p.conns.Add(step)
		n -= step
		time.Sleep(500 * time.Millisecond)
	}
}

func TestTrimWaitsForTheBurstToEndThenTrimsOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var p fakeProcess
		stop := Start(t.Context(), p.config())
		defer stop()

		p.burst(400) // 5 s of arrivals
		synctest.Wait()
		if got := p.trims.Load(); got != 0 {
			t.Fatalf("trimmed %d times while connections were still arriving", got)
		}
		time.Sleep(2 * time.Second) // one quiet Poll, and the tick after it
		synctest.Wait()
		if got := p.trims.Load(); got != 1 {
			t.Fatalf("after the burst: %d trims, want 1", got)
		}
		time.Sleep(time.Minute) // quiet: nothing new to return
		synctest.Wait()
		if got := p.trims.Load(); got != 1 {
			t.Fatalf("a quiet process kept trimming: %d trims", got)
		}
	})
}

func TestTrimWaitsWhileBytesFlow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var p fakeProcess
		stop := Start(t.Context(), p.config())
		defer stop()

		p.burst(200)
		p.transfer(10 * time.Second) // a build's upload right after the burst
		synctest.Wait()
		if got := p.trims.Load(); got != 0 {
			t.Fatalf("trimmed %d times while a transfer moved bytes", got)
		}
		time.Sleep(2 * time.Second) // one quiet Poll, and the tick after it
		synctest.Wait()
		if got := p.trims.Load(); got != 1 {
			t.Fatalf("once the transfer ended: %d trims, want 1", got)
		}
		// Small traffic (pings on idle connections) is quiet.
		p.burst(200)
		for range 20 {
			p.moved.Add(100)
			time.Sleep(500 * time.Millisecond)
		}
		synctest.Wait()
		if got := p.trims.Load(); got != 2 {
			t.Fatalf("with a few bytes a second moving: %d trims, want 2", got)
		}
	})
}

func TestBytesThatNeverStopDelayATrimByMaxDeferOnly(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var p fakeProcess
		stop := Start(t.Context(), p.config())
		defer stop()

		p.burst(200)
		due := time.Now().Add(time.Second) // the burst over: the next quiet Poll
		done := make(chan struct{})
		go func() { defer close(done); p.transfer(time.Minute) }()
		for p.trims.Load() == 0 && time.Since(due) < time.Minute {
			time.Sleep(time.Second)
		}
		waited := time.Since(due)
		if p.trims.Load() != 1 || waited < 19*time.Second || waited > 23*time.Second {
			t.Fatalf("%d trims, %v after it was due, with bytes flowing all along; want one after about MaxDefer (20s)", p.trims.Load(), waited)
		}
		<-done
	})
}

func TestNoTrimForAFewConnections(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var p fakeProcess
		stop := Start(t.Context(), p.config())
		defer stop()
		for range 10 {
			p.conns.Add(9) // 90 in all, under MinNew
			time.Sleep(20 * time.Second)
		}
		synctest.Wait()
		if got := p.trims.Load(); got != 0 {
			t.Fatalf("%d trims for %d connections (MinNew 100)", got, p.conns.Load())
		}
		p.conns.Add(10) // MinNew reached, counted since the start
		time.Sleep(3 * time.Second)
		synctest.Wait()
		if got := p.trims.Load(); got != 1 {
			t.Fatalf("%d trims once MinNew connections had come, want 1", got)
		}
	})
}

func TestTrimsAtMostOncePerMinInterval(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var p fakeProcess
		stop := Start(t.Context(), p.config())
		defer stop()
		p.conns.Add(200)
		time.Sleep(2500 * time.Millisecond)
		synctest.Wait()
		if got := p.trims.Load(); got != 1 {
			t.Fatalf("first burst: %d trims, want 1", got)
		}
		trimmedAt := time.Now()
		p.conns.Add(200) // a second burst right after
		for p.trims.Load() == 1 {
			time.Sleep(time.Second)
		}
		if gap := time.Since(trimmedAt); gap < 10*time.Second-time.Second {
			t.Fatalf("second trim %v after the first, want about MinInterval (10s)", gap)
		}
	})
}

func TestStopEndsTheTrimmer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var p fakeProcess
		ctx, cancel := context.WithCancel(t.Context())
		stop := Start(ctx, p.config())
		cancel() // the process's shutdown
		stop()   // returns only once the goroutine has: synctest reports a leak otherwise
		stop()   // and is safe twice
	})
}

func readStacks() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/stacks:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

func readReleased() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/released:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

//go:noinline
func grow(depth int) byte {
	var pad [1024]byte
	pad[depth%len(pad)] = byte(depth)
	if depth == 0 {
		return pad[0]
	}
	return grow(depth-1) + pad[depth%len(pad)]
}

// TestTrimShrinksGrownStacks: goroutines that grew their stacks (as a
// handshake does) and then park shallow, as an idle connection does, give
// the stacks back only over several collections, each halving a stack
// once. Trim runs them; one collection would leave the stacks at half.
func TestTrimShrinksGrownStacks(t *testing.T) {
	if testing.Short() {
		t.Skip("forces full collections")
	}
	const n = 200
	var ready, done sync.WaitGroup
	park := make(chan struct{})
	ready.Add(n)
	done.Add(n)
	for range n {
		go func() {
			defer done.Done()
			grow(60) // about 64 KiB of frames
			ready.Done()
			<-park
		}()
	}
	ready.Wait()
	defer func() { close(park); done.Wait() }()

	before := readStacks()
	if before < n*32<<10 {
		t.Fatalf("stacks %d B for %d goroutines: they did not grow, the test measures nothing", before, n)
	}
	r := Trim()
	after := readStacks()
	t.Logf("stacks %d KiB -> %d KiB in %d cycles (Result %+v)", before>>10, after>>10, r.Cycles, r)
	if after > before/8 {
		t.Errorf("stacks %d B after Trim, want under an eighth of %d B", after, before)
	}
	if r.Cycles < 3 {
		t.Errorf("Trim ran %d collections: a 64 KiB stack needs several halvings", r.Cycles)
	}
}

// TestTrimReturnsFreedHeap: heap freed by a burst's garbage goes back to
// the OS at once, where the scavenger would keep it while it is under the
// collector's goal.
func TestTrimReturnsFreedHeap(t *testing.T) {
	if testing.Short() {
		t.Skip("forces full collections")
	}
	defer debug.SetGCPercent(debug.SetGCPercent(-1)) // only Trim collects
	var keep [][]byte
	for range 512 {
		keep = append(keep, make([]byte, 64<<10)) // 32 MiB
	}
	runtime.KeepAlive(keep)
	keep = nil
	before := readReleased()
	r := Trim()
	if got := readReleased() - before; got < 24<<20 {
		t.Errorf("Trim released %d B of 32 MiB of garbage (Result %+v)", got, r)
	}
}
