package memtrim

import (
	"context"
	"log/slog"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"time"

	"github.com/wakegate/wakegate/proxy"
)

// Defaults. A trim costs a few full collections: with 10,000 idle
// connections about 50–200 ms of CPU each on a shared two-core machine, so
// it waits for enough new connections to have left something to return, and
// for the burst to have ended (a busy process collects on its own).
const (
	DefaultPoll        = time.Second
	DefaultMinNew      = 256
	DefaultMinInterval = 5 * time.Second
	// DefaultQuietBytes is what a quiet Poll moves at most: idle
	// connections' pings and small requests, not a transfer.
	DefaultQuietBytes = 1 << 20
	DefaultMaxDefer   = 30 * time.Second
	// maxCycles bounds the collections of one trim: each halves a stack at
	// most once, so a stack grown to 64 KiB in a handshake needs four to
	// come back to 4 KiB.
	maxCycles = 5
)

// Config says when to trim. Zero fields take the defaults.
type Config struct {
	// Count is a running count of new connections; proxy.Joins by
	// default (every connection the gateway or connect proxies).
	Count func() int64
	// Poll is how often Count is read (an atomic load: all an idle
	// process pays). A trim runs only once Count has not moved for a
	// whole Poll: the burst is over.
	Poll time.Duration
	// MinNew is how many new connections since the last trim make
	// another worth its collections.
	MinNew int64
	// MinInterval is the least time between two trims.
	MinInterval time.Duration
	// Moved is a running count of bytes copied; proxy.Copied by default.
	// A trim waits for a Poll in which fewer than QuietBytes moved: its
	// collections take CPU from a bulk transfer (a build's upload through
	// the gateway) and free the buffers its copies take again at once.
	// Bytes flowing without pause delay it by MaxDefer at most.
	Moved      func() int64
	QuietBytes int64
	MaxDefer   time.Duration
	Log        *slog.Logger

	// trim does the work; tests replace it to count calls.
	trim func() Result
}

// Result is what one trim did.
type Result struct {
	Cycles       int    // full collections run
	StacksFrom   uint64 // goroutine stack bytes before
	StacksTo     uint64 // and after
	Released     uint64 // heap bytes returned to the OS by the trim
	HeapRetained uint64 // heap bytes the process still holds (in use, or free and kept)
}

// Start runs a trimmer until ctx ends; stop cancels it and waits for its
// goroutine to return. Safe to call stop more than once.
func Start(ctx context.Context, cfg Config) (stop func()) {
	cfg.defaults()
	ctx, cancel := context.WithCancel(ctx)
	from := cfg.Count() // connections from here on count
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		run(ctx, cfg, from)
	}()
	return func() {
		cancel()
		wg.Wait()
	}
}

func (c *Config) defaults() {
	if c.Count == nil {
		c.Count = proxy.Joins
	}
	if c.Poll <= 0 {
		c.Poll = DefaultPoll
	}
	if c.MinNew <= 0 {
		c.MinNew = DefaultMinNew
	}
	if c.MinInterval <= 0 {
		c.MinInterval = DefaultMinInterval
	}
	if c.Moved == nil {
		c.Moved = proxy.Copied
	}
	if c.QuietBytes <= 0 {
		c.QuietBytes = DefaultQuietBytes
	}
	if c.MaxDefer <= 0 {
		c.MaxDefer = DefaultMaxDefer
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	if c.trim == nil {
		c.trim = Trim
	}
}

// run is the debounce: it trims when Count has stayed put for one Poll,
// has grown by MinNew since the last trim, and MinInterval has passed;
// and once fewer than QuietBytes moved in the last Poll, or it has waited
// MaxDefer for that.
func run(ctx context.Context, cfg Config, from int64) {
	tick := time.NewTicker(cfg.Poll)
	defer tick.Stop()
	seen, trimmedAt := from, from // trimmedAt: the count at the last trim
	moved := cfg.Moved()
	var last, deferred time.Time // deferred: when a due trim began to wait for quiet
	for {
		var now time.Time
		select {
		case <-ctx.Done():
			return
		case now = <-tick.C:
		}
		n, m := cfg.Count(), cfg.Moved()
		flowing := m-moved >= cfg.QuietBytes
		moved = m
		if n != seen {
			seen = n // still arriving
			continue
		}
		if n-trimmedAt < cfg.MinNew || !last.IsZero() && now.Sub(last) < cfg.MinInterval {
			continue
		}
		if flowing {
			if deferred.IsZero() {
				deferred = now
			}
			if now.Sub(deferred) < cfg.MaxDefer {
				continue
			}
		}
		var waited time.Duration
		if !deferred.IsZero() {
			waited, deferred = now.Sub(deferred), time.Time{}
		}
		began := time.Now()
		r := cfg.trim()
		fresh := n - trimmedAt
		trimmedAt, last = n, now
		cfg.Log.Debug("memory trimmed", "new_conns", fresh, "gc_cycles", r.Cycles,
			"stacks_from", r.StacksFrom, "stacks_to", r.StacksTo, "released_bytes", r.Released,
			"heap_retained_bytes", r.HeapRetained, "took_ms", time.Since(began).Milliseconds(),
			"waited_for_quiet_ms", waited.Milliseconds())
	}
}

var sampleNames = []string{
	"/memory/classes/heap/stacks:bytes",
	"/memory/classes/heap/released:bytes",
	"/memory/classes/heap/objects:bytes",
	"/memory/classes/heap/unused:bytes",
	"/memory/classes/heap/free:bytes",
}

type sample struct{ stacks, released, retained uint64 }

func read() sample {
	s := make([]metrics.Sample, len(sampleNames))
	for i, n := range sampleNames {
		s[i].Name = n
	}
	metrics.Read(s)
	return sample{stacks: s[0].Value.Uint64(), released: s[1].Value.Uint64(),
		retained: s[2].Value.Uint64() + s[3].Value.Uint64() + s[4].Value.Uint64()}
}

// Trim collects until goroutine stacks stop shrinking (a collection halves
// a mostly unused stack, once), at most maxCycles times, and returns the
// free heap to the OS: each cycle is debug.FreeOSMemory, a full collection
// followed by a scavenge, so the stack memory a cycle frees is returned by
// the next.
func Trim() Result {
	before := read()
	r := Result{StacksFrom: before.stacks}
	prev := before.stacks
	var after sample
	for r.Cycles < maxCycles {
		debug.FreeOSMemory()
		r.Cycles++
		after = read()
		if after.stacks >= prev {
			break
		}
		prev = after.stacks
	}
	r.StacksTo = after.stacks
	if after.released > before.released {
		r.Released = after.released - before.released
	}
	r.HeapRetained = after.retained
	return r
}
