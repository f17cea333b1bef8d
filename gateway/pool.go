package gateway

import (
	"context"
	"fmt"
	"hash/fnv"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Pool is the gateway's set of engines and the policy that places each
// client's session on one.
type Pool struct {
	engines []*Engine
	policy  Policy
	clock   Clock
	close   sync.Once

	mu       sync.Mutex                 // guards sessions and freed
	sessions map[*Engine]map[string]int // open connections per key per engine
	freed    chan struct{}              // closed and replaced when a session ends

	deliveries counters // GitHub webhook deliveries by result

	reg     *prometheus.Registry // served at the admin /metrics
	metrics *serverMetrics       // counted by the server
	wakes   *wakeMetrics         // successful wakes by phase and previous state
	// onStarted, set by the server that uses the pool, hears of every
	// engine started, with its address, before it is ready.
	onStarted atomic.Pointer[func(addr string)]
}

// sizer is a Provider that knows its machines' sizes (fly: each machine's
// guest CPUs), for a soft limit by size before an engine first wakes.
type sizer interface {
	// CPUs is engine id's CPU count; 0 when unknown.
	CPUs(id string) int
}

// NewPool asks the provider for its engines and makes a state machine for
// each, all configured like tmpl (whose ID is ignored), placing sessions by
// DefaultPolicy.
func NewPool(ctx context.Context, p Provider, tmpl EngineConfig) (*Pool, error) {
	return NewPoolWithPolicy(ctx, p, tmpl, DefaultPolicy)
}

// NewPoolWithPolicy is NewPool with a placement policy.
func NewPoolWithPolicy(ctx context.Context, p Provider, tmpl EngineConfig, policy Policy) (*Pool, error) {
	if err := policy.validate(); err != nil {
		return nil, err
	}
	ids, err := p.Engines(ctx)
	if err != nil {
		return nil, fmt.Errorf("list engines: %w", err)
	}
	if len(ids) == 0 {
		return nil, fmt.Errorf("list engines: the provider has no engines")
	}
	if policy.MinRunning > len(ids) {
		return nil, fmt.Errorf("pool policy: --min-running %d exceeds the %d engines", policy.MinRunning, len(ids))
	}
	if tmpl.Clock == nil {
		tmpl.Clock = RealClock{}
	}
	pool := &Pool{policy: policy, clock: tmpl.Clock, sessions: map[*Engine]map[string]int{}, freed: make(chan struct{})}
	pool.reg, pool.metrics = newRegistry(pool)
	pool.wakes = newWakeMetrics(pool.reg)
	for _, id := range ids {
		cfg := tmpl
		cfg.ID = id
		cfg.Provider = p
		if policy.MinRunning > 0 {
			cfg.KeepWarm = pool.keepWarm
		}
		e := NewEngine(cfg)
		e.onWake = pool.wakes.observe
		e.onStarted = pool.started
		if s, ok := p.(sizer); ok {
			e.setCPUs(s.CPUs(id))
		}
		pool.engines = append(pool.engines, e)
		pool.sessions[e] = map[string]int{}
	}
	return pool, nil
}

// keepWarm says whether an idle engine should stay up for --min-running.
func (p *Pool) keepWarm() bool {
	n := 0
	for _, e := range p.engines {
		if e.Running() {
			n++
		}
	}
	return n <= p.policy.MinRunning
}

// WarmUp starts waking the MinRunning highest-ranked engines, for no key
// in particular, so the first clients find them running. It does not wait.
func (p *Pool) WarmUp(ctx context.Context, log *slog.Logger) {
	for _, e := range p.Ranked("")[:p.policy.MinRunning] {
		p.clock.Go(func() {
			l, err := e.Acquire(ctx)
			if err != nil {
				log.Warn("could not warm engine", "engine", e.ID(), "err", err)
				return
			}
			l.Release()
		})
	}
}

// Route is key's home engine: the first by rendezvous hashing. Every key
// has a stable home, so a client keeps landing where its cache is, and
// adding or removing an engine moves only the keys that engine owned.
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

// Acquire places key's session by the pool's policy and leases that
// engine, waking it if needed. With every engine at its hard limit the
// connection is held until a session ends (or ctx does). If an engine's
// host cannot take it, the next choice is tried.
func (p *Pool) Acquire(ctx context.Context, key string, log *slog.Logger) (*Engine, *Lease, error) {
	return p.acquire(ctx, key, log, nil)
}

// acquire is Acquire; hostStarted, if set, hears the address of an engine
// woken for key as soon as its host gave it, before it is ready.
func (p *Pool) acquire(ctx context.Context, key string, log *slog.Logger, hostStarted func(addr string)) (*Engine, *Lease, error) {
	excluded := map[*Engine]bool{}
	var firstErr error
	for {
		e, wait := p.reserve(key, excluded)
		if e == nil && wait == nil {
			if firstErr == nil {
				firstErr = fmt.Errorf("%w: no engine can take %s", ErrEngineUnavailable, key)
			}
			return nil, nil, firstErr
		}
		if e == nil {
			if err := p.clock.Wait(ctx, wait); err != nil {
				return nil, nil, fmt.Errorf("%w: every engine is at its limit of %d sessions: %w", ErrEngineUnavailable, p.policy.Hard, err)
			}
			continue
		}
		l, err := e.acquire(ctx, hostStarted)
		if err == nil {
			l.onRelease = func() { p.unreserve(e, key) }
			return e, l, nil
		}
		p.unreserve(e, key)
		// A host that cannot take the engine now (no capacity, its volume
		// attached elsewhere): the connection goes to the next engine.
		if !IsHostUnavailable(err) {
			return e, nil, err
		}
		if firstErr == nil {
			firstErr = err
		}
		excluded[e] = true
		log.Warn("engine's host cannot take it; trying the next engine", "engine", e.ID(), "err", err)
	}
}

// TryAcquire leases the engine the policy picks for key only if it is
// running now: no wake, no wait (Acquire does those).
func (p *Pool) TryAcquire(key string) (*Engine, *Lease, bool) {
	p.mu.Lock()
	e, _ := p.placeLocked(key, nil)
	if e == nil || !e.Running() {
		p.mu.Unlock()
		return nil, nil, false
	}
	p.sessions[e][key]++
	p.mu.Unlock()
	l, ok := e.TryAcquire() // fails only if it began to stop just now
	if !ok {
		p.unreserve(e, key)
		return nil, nil, false
	}
	l.onRelease = func() { p.unreserve(e, key) }
	return e, l, true
}

// reserve counts a connection of key on the engine the policy picks, or
// returns a channel that is closed when a session ends. Both nil: every
// engine is excluded.
func (p *Pool) reserve(key string, excluded map[*Engine]bool) (*Engine, <-chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	e, some := p.placeLocked(key, excluded)
	if e == nil {
		if !some {
			return nil, nil
		}
		return nil, p.freed
	}
	p.sessions[e][key]++
	return e, nil
}

// placeLocked is the engine the policy picks for a session of key now; nil
// when every engine not excluded is at its hard limit (some true) or every
// engine is excluded (some false).
func (p *Pool) placeLocked(key string, excluded map[*Engine]bool) (e *Engine, some bool) {
	var ranked []*Engine
	var cands []candidate
	for _, e := range p.Ranked(key) {
		if excluded[e] {
			continue
		}
		ranked = append(ranked, e)
		cands = append(cands, candidate{running: e.Running(), sessions: len(p.sessions[e]), mine: p.sessions[e][key] > 0,
			soft: p.policy.softFor(e)})
	}
	if len(ranked) == 0 {
		return nil, false
	}
	i := p.policy.choose(cands)
	if i < 0 {
		return nil, true
	}
	return ranked[i], true
}

// Prewake wakes the engine a session of key would be placed on now (its
// home, unless the policy sends it elsewhere) ahead of the session, and
// keeps it grace after it is ready unless a connection comes first (see
// Engine.Prewake). It places no session and holds no lease, so it moves no
// other client. engine is the one chosen ("" when every engine is at its
// hard limit: all are running); woke says whether this call began its wake.
// It does not wait for the wake.
func (p *Pool) Prewake(key string, grace time.Duration) (engine string, woke bool, err error) {
	p.mu.Lock()
	e, _ := p.placeLocked(key, nil)
	p.mu.Unlock()
	if e == nil {
		return "", false, nil
	}
	woke, err = e.Prewake(grace)
	return e.ID(), woke, err
}

// CountDelivery counts a GitHub webhook delivery by what became of it, for
// the wakegate_webhook_deliveries_total metric.
func (p *Pool) CountDelivery(result string) { p.deliveries.add(result) }

func (p *Pool) unreserve(e *Engine, key string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.sessions[e][key]--; p.sessions[e][key] <= 0 {
		delete(p.sessions[e], key)
		p.clock.Close(p.freed)
		p.freed = make(chan struct{})
	}
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

// Status reports every engine, with its sessions.
func (p *Pool) Status() []EngineStatus {
	out := make([]EngineStatus, 0, len(p.engines))
	for _, e := range p.engines {
		st := e.Status()
		st.SoftLimit = p.policy.softFor(e)
		p.mu.Lock()
		st.Sessions = len(p.sessions[e])
		p.mu.Unlock()
		out = append(out, st)
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

// started tells the server's streams made ahead (onStarted) that an
// engine was started at addr.
func (p *Pool) started(addr string) {
	if f := p.onStarted.Load(); f != nil {
		(*f)(addr)
	}
}

// runningAt says whether an engine of the pool serves at addr now.
func (p *Pool) runningAt(addr string) bool {
	for _, e := range p.engines {
		e.mu.Lock()
		ok := e.state == Running && e.addr == addr
		e.mu.Unlock()
		if ok {
			return true
		}
	}
	return false
}
