package webhook

import (
	"sync"
	"time"
)

// replayCache remembers the delivery ids seen within a window, at most max
// of them: a delivery whose id it holds is a replay. Ids leave it in the
// order they came, when older than the window or to make room; a delivery
// about a job older than the window is refused on its age instead
// (Handler's stale check), so an id forgotten on time cannot be replayed.
type replayCache struct {
	window time.Duration
	max    int

	mu    sync.Mutex // guards seen and order
	seen  map[string]time.Time
	order []seenID // oldest first
}

type seenID struct {
	id string
	at time.Time
}

func newReplayCache(window time.Duration, max int) *replayCache {
	return &replayCache{window: window, max: max, seen: map[string]time.Time{}}
}

// check records id as seen at now and says whether it was seen before
// (within the window, and not pushed out since).
func (c *replayCache) check(id string, now time.Time) (replay bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for len(c.order) > 0 && now.Sub(c.order[0].at) > c.window {
		c.dropOldest()
	}
	if _, ok := c.seen[id]; ok {
		return true
	}
	for len(c.order) >= c.max {
		c.dropOldest()
	}
	c.seen[id] = now
	c.order = append(c.order, seenID{id, now})
	return false
}

func (c *replayCache) dropOldest() {
	delete(c.seen, c.order[0].id)
	c.order[0] = seenID{}
	c.order = c.order[1:]
}

// len is the number of ids remembered.
func (c *replayCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.order)
}
