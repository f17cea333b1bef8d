package gateway

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"sort"
	"sync"
)

// Pool is the gateway's set of engines and the rule that picks one for a
// client.
type Pool struct {
	engines []*Engine
	close   sync.Once
}

// NewPool asks the provider for its engines and makes a state machine for
// each, all configured like tmpl (whose ID is ignored).
func NewPool(ctx context.Context, p Provider, tmpl EngineConfig) (*Pool, error) {
	ids, err := p.Engines(ctx)
	if err != nil {
		return nil, fmt.Errorf("list engines: %w", err)
	}
	if len(ids) == 0 {
		return nil, fmt.Errorf("list engines: the provider has no engines")
	}
	pool := &Pool{}
	for _, id := range ids {
		cfg := tmpl
		cfg.ID = id
		cfg.Provider = p
		pool.engines = append(pool.engines, NewEngine(cfg))
	}
	return pool, nil
}

// Route picks the engine for an affinity key (a client identity) by
// rendezvous hashing: every key has a stable home engine, so a client keeps
// landing where its cache is, and adding or removing an engine moves only
// the keys that engine owned.
func (p *Pool) Route(key string) *Engine {
	var best *Engine
	var bestScore uint64
	for _, e := range p.engines {
		if s := score(key, e.ID()); best == nil || s > bestScore {
			best, bestScore = e, s
		}
	}
	return best
}

// Ranked lists every engine for key, home first, in rendezvous order.
func (p *Pool) Ranked(key string) []*Engine {
	out := append([]*Engine(nil), p.engines...)
	sort.SliceStable(out, func(i, j int) bool { return score(key, out[i].ID()) > score(key, out[j].ID()) })
	return out
}

// hostUnavailable is what a provider's error implements when the engine's
// host cannot take it now (no capacity, its volume attached elsewhere):
// the connection goes to the next engine instead of failing.
type hostUnavailable interface{ HostUnavailable() bool }

// Acquire leases key's home engine, waking it if needed; if its host
// cannot take it, the next-ranked engine is tried, and so on.
func (p *Pool) Acquire(ctx context.Context, key string, log *slog.Logger) (*Engine, *Lease, error) {
	var firstErr error
	for _, e := range p.Ranked(key) {
		l, err := e.Acquire(ctx)
		if err == nil {
			return e, l, nil
		}
		var hu hostUnavailable
		if !errors.As(err, &hu) || !hu.HostUnavailable() {
			return e, nil, err
		}
		if firstErr == nil {
			firstErr = err
		}
		log.Warn("engine's host cannot take it; trying the next engine", "engine", e.ID(), "err", err)
	}
	return nil, nil, firstErr
}

func score(key, id string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(key))
	h.Write([]byte{0})
	h.Write([]byte(id))
	// FNV's low bits mix poorly for short inputs; finish with a
	// splitmix64 step so scores spread evenly.
	x := h.Sum64()
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// Engines returns the pool's engines in provider order.
func (p *Pool) Engines() []*Engine { return p.engines }

// Status reports every engine.
func (p *Pool) Status() []EngineStatus {
	out := make([]EngineStatus, 0, len(p.engines))
	for _, e := range p.engines {
		out = append(out, e.Status())
	}
	return out
}

// Close stops every engine, in parallel, and waits. Safe to call twice.
func (p *Pool) Close() {
	p.close.Do(func() {
		var wg sync.WaitGroup
		for _, e := range p.engines {
			wg.Add(1)
			go func() {
				defer wg.Done()
				e.Close()
			}()
		}
		wg.Wait()
	})
}
