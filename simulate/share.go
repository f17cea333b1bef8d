package simulate

import (
	"context"
	"sync"
	"time"

	"github.com/wakegate/wakegate/gateway"
)

// cpuShare runs the builds of one engine side by side: an engine with C
// CPUs runs C/CPUsPerBuild builds at full speed, and n builds beyond that
// share it, each at (C/CPUsPerBuild)/n of full speed (processor sharing).
// Every build's end is a clock timer, moved whenever a build starts or
// ends.
type cpuShare struct {
	clk      *vclock
	capacity float64 // builds at full speed; 0: unlimited

	mu     sync.Mutex // guards the fields below
	last   time.Time  // when left was last brought up to date
	builds map[*build]struct{}
}

// build is one job's work on an engine.
type build struct {
	left  float64       // seconds of work left at full speed
	done  chan struct{} // closed when it is finished
	timer gateway.Timer
}

func newCPUShare(clk *vclock, cpus int) *cpuShare {
	s := &cpuShare{clk: clk, builds: map[*build]struct{}{}}
	if cpus > 0 {
		s.capacity = float64(max(cpus/gateway.CPUsPerBuild, 1))
	}
	return s
}

// run does work (at full speed) on the engine and returns when it is done.
func (s *cpuShare) run(work time.Duration) {
	if s.capacity == 0 {
		s.clk.Sleep(context.Background(), work)
		return
	}
	b := &build{left: work.Seconds(), done: make(chan struct{})}
	s.mu.Lock()
	s.advanceLocked()
	s.builds[b] = struct{}{}
	s.rescheduleLocked()
	s.mu.Unlock()
	s.clk.Wait(context.Background(), b.done)
}

// rate is each build's speed with n of them.
func (s *cpuShare) rate(n int) float64 { return min(1, s.capacity/float64(max(n, 1))) }

// advanceLocked books the work done since last at the current rate.
func (s *cpuShare) advanceLocked() {
	now := s.clk.Now()
	done := now.Sub(s.last).Seconds() * s.rate(len(s.builds))
	for b := range s.builds {
		b.left = max(b.left-done, 0)
	}
	s.last = now
}

// rescheduleLocked sets every build's end at the current rate.
func (s *cpuShare) rescheduleLocked() {
	r := s.rate(len(s.builds))
	for b := range s.builds {
		if b.timer != nil {
			b.timer.Stop()
		}
		b.timer = s.clk.AfterFunc(time.Duration(b.left/r*float64(time.Second)), func() { s.finish(b) })
	}
}

func (s *cpuShare) finish(b *build) {
	s.mu.Lock()
	if _, ok := s.builds[b]; !ok {
		s.mu.Unlock()
		return
	}
	s.advanceLocked()
	delete(s.builds, b)
	s.rescheduleLocked()
	s.mu.Unlock()
	s.clk.Close(b.done)
}

// lru is one engine's cache volume: the keys whose cache it holds, least
// recently used first, at most capacity of them (0: unlimited).
type lru struct {
	capacity int
	keys     []string
}

// use says whether key's cache is on the volume, and makes it the most
// recently used, evicting the least recently used beyond capacity; evicted
// counts those.
func (c *lru) use(key string) (hit bool, evicted int) {
	for i, k := range c.keys {
		if k == key {
			c.keys = append(append(c.keys[:i:i], c.keys[i+1:]...), key)
			return true, 0
		}
	}
	c.keys = append(c.keys, key)
	for c.capacity > 0 && len(c.keys) > c.capacity {
		c.keys = c.keys[1:]
		evicted++
	}
	return false, evicted
}
