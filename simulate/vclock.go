package simulate

import (
	"container/heap"
	"context"
	"sync"
	"time"

	"github.com/wakegate/wakegate/gateway"
)

// vclock is a gateway.Clock whose time only moves when every goroutine it
// knows of (started by Go) is blocked in Wait or Sleep: then Run jumps to
// the next timer and fires it.
type vclock struct {
	mu      sync.Mutex // guards everything below
	idle    *sync.Cond // signalled when active may have reached 0
	now     time.Time
	active  int // goroutines started by Go, not blocked on the clock
	seq     int
	events  eventHeap
	waiters map[<-chan struct{}]int // goroutines blocked on each channel
}

func newVClock(start time.Time) *vclock {
	c := &vclock{now: start, waiters: map[<-chan struct{}]int{}}
	c.idle = sync.NewCond(&c.mu)
	return c
}

type event struct {
	at       time.Time
	seq      int
	f        func()
	canceled bool
	index    int
}

type eventHeap []*event

func (h eventHeap) Len() int { return len(h) }
func (h eventHeap) Less(i, j int) bool {
	if !h[i].at.Equal(h[j].at) {
		return h[i].at.Before(h[j].at)
	}
	return h[i].seq < h[j].seq
}
func (h eventHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i]; h[i].index = i; h[j].index = j }
func (h *eventHeap) Push(x any)   { e := x.(*event); e.index = len(*h); *h = append(*h, e) }
func (h *eventHeap) Pop() any     { old := *h; e := old[len(old)-1]; *h = old[:len(old)-1]; return e }
func (c *vclock) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (t *vtimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := !t.e.canceled
	t.e.canceled = true
	return was
}

type vtimer struct {
	c *vclock
	e *event
}

// AfterFunc schedules f at now+d; Run calls it on its own goroutine.
func (c *vclock) AfterFunc(d time.Duration, f func()) gateway.Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq++
	e := &event{at: c.now.Add(max(d, 0)), seq: c.seq, f: f}
	heap.Push(&c.events, e)
	return &vtimer{c, e}
}

func (c *vclock) Go(f func()) {
	c.mu.Lock()
	c.active++
	c.mu.Unlock()
	go func() {
		defer c.done()
		f()
	}()
}

func (c *vclock) done() {
	c.mu.Lock()
	c.active--
	c.idle.Broadcast()
	c.mu.Unlock()
}

// Wait blocks the calling goroutine, which no longer counts as active,
// until Close(ch) counts it active again and closes ch.
func (c *vclock) Wait(ctx context.Context, ch <-chan struct{}) error {
	c.mu.Lock()
	select {
	case <-ch:
		c.mu.Unlock()
		return nil
	default:
	}
	c.waiters[ch]++
	c.active--
	c.idle.Broadcast()
	c.mu.Unlock()
	select {
	case <-ch:
		return nil // Close counted us active
	case <-ctx.Done():
		c.mu.Lock()
		defer c.mu.Unlock()
		select {
		case <-ch: // closed meanwhile: Close already counted us
		default:
			c.waiters[ch]--
			c.active++
		}
		return context.Cause(ctx)
	}
}

func (c *vclock) Close(ch chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.active += c.waiters[ch]
	delete(c.waiters, ch)
	close(ch)
}

func (c *vclock) Sleep(ctx context.Context, d time.Duration) error {
	ch := make(chan struct{})
	c.AfterFunc(d, func() { c.Close(ch) })
	return c.Wait(ctx, ch)
}

// Run advances time event by event until no event is left or until is
// reached, each time after every known goroutine is blocked.
func (c *vclock) Run(until time.Time) {
	for {
		c.mu.Lock()
		for c.active > 0 {
			c.idle.Wait()
		}
		var next *event
		for c.events.Len() > 0 {
			e := heap.Pop(&c.events).(*event)
			if !e.canceled {
				next = e
				break
			}
		}
		if next == nil || next.at.After(until) {
			if next != nil {
				heap.Push(&c.events, next)
			}
			c.mu.Unlock()
			return
		}
		c.now = next.at
		// The event runs as a known goroutine, like any other.
		c.active++
		c.mu.Unlock()
		go func() {
			defer c.done()
			next.f()
		}()
	}
}
