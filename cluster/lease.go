package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/smallstep/nosql/database"
)

// lease is one engine's row in the Store, as JSON. Every write of it is a
// compare-and-swap on the exact bytes read or last written, so two
// gateways never both believe they took it.
type lease struct {
	// Holder is the gateway that may start and stop the engine; "" when
	// released.
	Holder string `json:"holder"`
	// Addr is where the engine serves; "" while its holder starts or
	// stops it.
	Addr string `json:"addr,omitempty"`
	// Expires is when the lease lapses unless refreshed, in unix
	// milliseconds of the holder's clock.
	Expires int64 `json:"expires"`
	// Stopping says that the holder is stopping the engine.
	Stopping bool `json:"stopping,omitempty"`
}

// releasedLease is what a released lease's row holds: no holder.
var releasedLease = mustMarshal(lease{})

func mustMarshal(l lease) []byte {
	b, err := json.Marshal(l)
	if err != nil {
		panic(err) // strings, an int and a bool always marshal
	}
	return b
}

// heldByOther says whether the lease is live and someone else's.
func (l lease) heldByOther(me string, now time.Time) bool {
	return l.Holder != "" && l.Holder != me && now.UnixMilli() < l.Expires
}

// holding is a lease this gateway holds.
type holding struct {
	val []byte // the row's bytes as this gateway last wrote them
	l   lease  // what this gateway means the row to say (written by the next write)
	// ctx ends the refresh loop: when the lease is released or lost, or at
	// Close.
	ctx    context.Context
	cancel context.CancelFunc
}

// errLost says that the lease's row no longer holds what this gateway last
// wrote: another gateway took it after it expired.
var errLost = errors.New("lease taken by another gateway")

// read returns the lease row of engine id: its bytes (nil when absent) and
// what they say. A row that is not a lease counts as free.
func (p *Provider) read(id string) ([]byte, lease, error) {
	b, err := p.cfg.Store.Get(p.table, []byte(id))
	if database.IsErrNotFound(err) {
		return nil, lease{}, nil
	}
	if err != nil {
		return nil, lease{}, fmt.Errorf("read lease: %w", err)
	}
	var l lease
	if err := json.Unmarshal(b, &l); err != nil {
		p.cfg.Log.Warn("engine lease row is not a lease; taking it as free", "engine", id, "err", err)
		return b, lease{}, nil
	}
	return b, l, nil
}

func (p *Provider) expiry() int64 { return p.cfg.Now().Add(p.cfg.TTL).UnixMilli() }

// take takes engine id's free lease, whose row holds cur (nil: no row),
// and starts refreshing it. It returns nil, nil if another gateway wrote
// the row first.
func (p *Provider) take(id string, s *slot, cur []byte) (*holding, error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, ErrClosed
	}
	p.wg.Add(1) // the refresh loop's, or given back below; Close waits for it
	p.mu.Unlock()
	l := lease{Holder: p.cfg.Holder, Expires: p.expiry()}
	b := mustMarshal(l)
	_, ok, err := p.cfg.Store.CmpAndSwap(p.table, []byte(id), cur, b)
	if err != nil || !ok {
		p.wg.Done()
		if err != nil {
			return nil, fmt.Errorf("take lease: %w", err)
		}
		return nil, nil
	}
	h := &holding{val: b, l: l}
	h.ctx, h.cancel = context.WithCancel(p.base)
	s.mu.Lock()
	s.held = h
	s.mu.Unlock()
	p.cfg.Log.Debug("engine lease taken", "engine", id, "holder", p.cfg.Holder)
	go p.refresh(id, s, h)
	return h, nil
}

// writeLocked writes the lease h with what change makes of it and a new
// expiry, if the row still holds what this gateway last wrote. If it does
// not, the lease is lost: s no longer holds it and errLost is returned.
// A store error leaves the lease held (it has up to TTL left). s.mu is
// held.
func (p *Provider) writeLocked(id string, s *slot, h *holding, change func(*lease)) error {
	next := h.l
	change(&next)
	next.Expires = p.expiry()
	b := mustMarshal(next)
	cur, ok, err := p.cfg.Store.CmpAndSwap(p.table, []byte(id), h.val, b)
	if err == nil && !ok {
		// A write of ours that reported an error may have landed anyway:
		// the row then is ours, only not the bytes remembered.
		var c lease
		if json.Unmarshal(cur, &c) == nil && c.Holder == p.cfg.Holder {
			_, ok, err = p.cfg.Store.CmpAndSwap(p.table, []byte(id), cur, b)
		}
	}
	if err != nil {
		return fmt.Errorf("write lease of engine %s: %w", id, err)
	}
	if !ok {
		s.held = nil
		h.cancel()
		return errLost
	}
	h.val, h.l = b, next
	return nil
}

// release gives lease h back, if s still holds it: its row then says that
// nobody holds it. The refresh loop ends either way; a release that fails
// leaves the row to expire.
func (p *Provider) release(id string, s *slot, h *holding) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.held != h {
		return nil
	}
	s.held = nil
	h.cancel()
	_, ok, err := p.cfg.Store.CmpAndSwap(p.table, []byte(id), h.val, releasedLease)
	if err != nil {
		return fmt.Errorf("release lease of engine %s: %w", id, err)
	}
	if !ok {
		p.cfg.Log.Warn("engine lease was already taken by another gateway when released", "engine", id)
		return nil
	}
	p.cfg.Log.Debug("engine lease released", "engine", id, "holder", p.cfg.Holder)
	return nil
}

// refresh rewrites lease h with a new expiry every third of its TTL while
// this gateway holds it. A refresh that fails is retried at the next tick
// (the lease has two thirds of its TTL left); one that finds the row
// someone else's ends the loop.
func (p *Provider) refresh(id string, s *slot, h *holding) {
	defer p.wg.Done()
	t := time.NewTicker(p.cfg.TTL / 3)
	defer t.Stop()
	for {
		select {
		case <-h.ctx.Done():
			return
		case <-t.C:
		}
		s.mu.Lock()
		if s.held != h {
			s.mu.Unlock()
			return
		}
		err := p.writeLocked(id, s, h, func(*lease) {})
		s.mu.Unlock()
		switch {
		case errors.Is(err, errLost):
			p.cfg.Log.Warn("engine lease lost: it expired unrefreshed and another gateway took it; leaving the engine to it",
				"engine", id, "holder", p.cfg.Holder, "ttl", p.cfg.TTL.String())
			return
		case err != nil:
			p.cfg.Log.Warn("refresh of engine lease failed; retrying", "engine", id, "err", err)
		}
	}
}
