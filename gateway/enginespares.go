package gateway

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/wakegate/wakegate/internal/ctxwait"
)

// Streams to engines made ahead of need (Config.EngineAhead): for each
// engine address a stream went to lately, or whose engine is waking
// (prime), a few more are kept open, so that the next stream skips the
// handshake (or the handoff) to the engine. They are made only to engines
// the pool started and, unused, are counted by neither the gateway nor the
// engine (engine.ProtoProxyAhead): they wake no engine and keep none
// awake, and an engine that begins to stop closes them, so that they are
// found closed and passed over.
const (
	// engineAheadMaxAge retires an unused spare: half the engine's own
	// bound for one (its aheadUnusedTimeout), and well within BuildKit's
	// bound for a connection that has not spoken (gRPC's two minutes).
	engineAheadMaxAge = 30 * time.Second
	// engineAheadLinger is how long spares are kept for an address after
	// its last stream.
	engineAheadLinger = time.Minute
	// engineAheadRefillDelay is how long after a stream is under way
	// the spare it took is replaced: its first answer is still on its
	// way to the client then (through connect, into the client), and a
	// handshake made at once took the CPU from it (docs/performance.md).
	engineAheadRefillDelay = 5 * time.Millisecond
	// engineAheadDialTimeout bounds making one spare.
	engineAheadDialTimeout = 10 * time.Second
	// Backoff between failed attempts to make a spare for one address.
	engineAheadRetryMin = time.Second
	engineAheadRetryMax = 30 * time.Second
)

// EngineSpare is a stream to an engine made ahead of need
// (engine.Client.DialAhead's).
type EngineSpare interface {
	// Use makes it a stream the engine counts, or says it was found
	// closed (and closes it).
	Use() (net.Conn, error)
	// Close closes it unused.
	Close() error
}

// AheadDialer opens a stream to the engine at addr ahead of need.
type AheadDialer func(ctx context.Context, addr string) (EngineSpare, error)

type engineSpare struct {
	s    EngineSpare
	made time.Time
}

// addrSpares are the spares of one engine address.
type addrSpares struct {
	ready   []engineSpare // oldest first
	lastUse time.Time
	retryAt time.Time
	retry   time.Duration
	// primedUntil: an engine is starting at the address (prime), so
	// spares are made before it runs.
	primedUntil time.Time
}

// engineSpares keeps up to n spares per engine address. One goroutine
// (run) makes them, one at a time, and retires them.
type engineSpares struct {
	n       int
	maxAge  time.Duration
	linger  time.Duration
	dial    AheadDialer
	running func(addr string) bool // an engine serves at addr now
	gauge   interface{ Set(float64) }
	log     *slog.Logger

	mu     sync.Mutex // guards byAddr
	byAddr map[string]*addrSpares
	kick   chan struct{}
	soon   chan struct{} // wakeSoon's
}

func newEngineSpares(n int, dial AheadDialer, running func(string) bool, gauge interface{ Set(float64) }, log *slog.Logger) *engineSpares {
	return &engineSpares{n: n, maxAge: engineAheadMaxAge, linger: engineAheadLinger, dial: dial, running: running,
		gauge: gauge, log: log, byAddr: map[string]*addrSpares{}, kick: make(chan struct{}, 1), soon: make(chan struct{}, 1)}
}

// take hands out the newest spare to addr that is still open, or nil: the
// caller dials on demand. Either way a stream went to addr, and spares for
// it are made (again) once the caller calls wakeSoon: when its stream is
// under way (the engine's first answer went on to the client, or the
// stream ended first). One made at once would take the CPU, here and at
// the engine, from the very stream it replaces.
func (p *engineSpares) take(addr string) net.Conn {
	for {
		p.mu.Lock()
		a := p.usedLocked(addr)
		if len(a.ready) == 0 {
			p.mu.Unlock()
			return nil
		}
		s := a.ready[len(a.ready)-1]
		a.ready = a.ready[:len(a.ready)-1]
		p.setGaugeLocked()
		p.mu.Unlock()
		if time.Since(s.made) >= p.maxAge {
			s.s.Close()
			continue
		}
		c, err := s.s.Use()
		if err == nil {
			return c
		}
		p.log.Debug("engine connection made ahead found closed; trying the next", "addr", addr, "err", err)
	}
}

// used says that a stream began to addr, on a stream not taken from
// the spares (one dialled while its engine started).
func (p *engineSpares) used(addr string) {
	p.mu.Lock()
	p.usedLocked(addr)
	p.mu.Unlock()
}

// usedLocked notes a stream to addr: spares are kept for it from now, and
// judged by whether its engine runs.
func (p *engineSpares) usedLocked(addr string) *addrSpares {
	a := p.byAddr[addr]
	if a == nil {
		a = &addrSpares{retry: engineAheadRetryMin}
		p.byAddr[addr] = a
	}
	a.lastUse = time.Now()
	a.primedUntil = time.Time{} // it runs: judged as running from now
	return a
}

// prime says that an engine is starting at addr, for a client held for
// it (or a pre-wake): spares are made now, while it starts, rather than
// after its first stream, so that the held client's stream skips the
// handshake too. The engine front answers a handshake from its start
// and holds a stream until ready; unused, a spare is no more counted than
// any other. Primed for engineAheadLinger, or until the engine runs.
func (p *engineSpares) prime(addr string) {
	p.mu.Lock()
	a := p.byAddr[addr]
	if a == nil {
		a = &addrSpares{retry: engineAheadRetryMin}
		p.byAddr[addr] = a
	}
	now := time.Now()
	a.lastUse, a.primedUntil = now, now.Add(p.linger)
	p.mu.Unlock()
	p.wake()
}

// wakeSoon asks for spares again engineAheadRefillDelay from now. Only a
// channel send here, on the stream's own copy goroutine: its stack stays
// as small as its blocked reads need.
func (p *engineSpares) wakeSoon() {
	select {
	case p.soon <- struct{}{}:
	default:
	}
}

func (p *engineSpares) wake() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// run makes spares until ctx ends, then closes those it holds.
func (p *engineSpares) run(ctx context.Context) {
	defer p.closeAll()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for ctx.Err() == nil {
		next := p.retire()
		if addr, ok := p.wanted(); ok {
			dctx, cancel := context.WithTimeout(ctx, engineAheadDialTimeout)
			s, err := p.dial(dctx, addr)
			cancel()
			p.made(addr, s, err)
			continue
		}
		timer.Reset(max(time.Until(next), 0))
		select {
		case <-ctx.Done():
		case <-p.kick:
		case <-timer.C:
		case <-p.soon:
			ctxwait.SleepOr(ctx, engineAheadRefillDelay, p.kick) // a wake (a prime) does not wait
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}
}

// wanted is an address, used lately and served by a running engine, with
// fewer than n spares and not backing off.
func (p *engineSpares) wanted() (string, bool) {
	now := time.Now()
	p.mu.Lock()
	var cands []string
	for addr, a := range p.byAddr {
		if len(a.ready) < p.n && now.Sub(a.lastUse) < p.linger && !now.Before(a.retryAt) {
			if now.Before(a.primedUntil) {
				p.mu.Unlock()
				return addr, true
			}
			cands = append(cands, addr)
		}
	}
	p.mu.Unlock()
	for _, addr := range cands {
		if p.running(addr) {
			return addr, true
		}
	}
	return "", false
}

// made files a spare just made for addr, or backs off after a failure.
func (p *engineSpares) made(addr string, s EngineSpare, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	a := p.byAddr[addr]
	if a == nil { // retired meanwhile
		if err == nil {
			s.Close()
		}
		return
	}
	if err != nil {
		p.log.Debug("could not make an engine connection ahead of need; retrying", "addr", addr, "in", a.retry.String(), "err", err)
		a.retryAt = time.Now().Add(a.retry)
		a.retry = min(2*a.retry, engineAheadRetryMax)
		return
	}
	a.retry, a.retryAt = engineAheadRetryMin, time.Time{}
	a.ready = append(a.ready, engineSpare{s: s, made: time.Now()})
	p.setGaugeLocked()
}

// retire closes spares older than maxAge, forgets addresses with no stream
// for linger (closing their spares), and says when to look again.
func (p *engineSpares) retire() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	next := now.Add(time.Hour)
	for addr, a := range p.byAddr {
		idleAt := a.lastUse.Add(p.linger)
		i := 0
		for i < len(a.ready) && (now.Sub(a.ready[i].made) >= p.maxAge || !now.Before(idleAt)) {
			a.ready[i].s.Close()
			i++
		}
		a.ready = a.ready[i:]
		if !now.Before(idleAt) {
			delete(p.byAddr, addr)
			continue
		}
		next = minTime(next, idleAt)
		if len(a.ready) > 0 {
			next = minTime(next, a.ready[0].made.Add(p.maxAge))
		}
		if len(a.ready) < p.n && a.retryAt.After(now) {
			next = minTime(next, a.retryAt)
		}
	}
	p.setGaugeLocked()
	return next
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func (p *engineSpares) closeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for addr, a := range p.byAddr {
		for _, s := range a.ready {
			s.s.Close()
		}
		delete(p.byAddr, addr)
	}
	p.setGaugeLocked()
}

func (p *engineSpares) setGaugeLocked() {
	n := 0
	for _, a := range p.byAddr {
		n += len(a.ready)
	}
	p.gauge.Set(float64(n))
}
