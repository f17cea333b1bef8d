package connect

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wakegate/wakegate/internal/ctxwait"
)

// aheadMaxAge is how long a connection made ahead of need is kept unused
// before it is closed and made anew: half the gateway's bound for an unused
// one (gateway.DefaultAheadIdleTimeout), so that the gateway never closes a
// spare the sidecar could still hand to a client.
const aheadMaxAge = 30 * time.Second

// aheadLinger is how long spares are kept after the last local connection:
// a sidecar left idle holds no connection to the gateway, so that a gateway
// that stops when nothing is connected (Fly's auto-stop) can, and spares
// made again every aheadMaxAge do not start it again. The next local
// connection dials on demand and spares are made again.
const aheadLinger = time.Minute

// aheadRefillDelay is how long after a local connection is under way
// (aheadStream.underway) the spare it took is replaced: the gateway's first
// reply is still on its way into the client then, and a handshake made at
// once took the CPU from it, here and at the gateway (docs/performance.md).
const aheadRefillDelay = 5 * time.Millisecond

// Backoff between failed attempts to make a spare: a gateway that is down
// or refuses us is not asked more than this often on the spares' account
// (clients' own connections still dial on demand meanwhile).
const (
	aheadRetryMin = time.Second
	aheadRetryMax = 30 * time.Second
)

// spare is one connection made ahead of need, and where to.
type spare struct {
	c    *tls.Conn
	ep   endpoint
	made time.Time
	cert *tls.Certificate // the client certificate current when it was made
}

// spares keeps up to n TLS connections to the gateway open ahead of need
// (wire.ProtoAhead), so that a new local connection starts on one whose
// handshake is done. The gateway chooses and wakes an engine for one only
// at its first byte: an unused spare wakes no engine and keeps none awake.
// One goroutine (run) makes them, one at a time, and retires those older
// than maxAge.
type spares struct {
	n      int
	maxAge time.Duration
	dial   func(ctx context.Context, cache tls.ClientSessionCache) (*tls.Conn, endpoint, error)
	cache  tls.ClientSessionCache // the sidecar's; nil: none
	// current is the client certificate presented now; a spare made with
	// an older one (renewed since) is not handed out: that one may expire,
	// or be revoked, before the spare is used. Nil: not known.
	current func() *tls.Certificate
	log     *slog.Logger

	linger time.Duration

	mu      sync.Mutex // guards ready, off and lastUse
	ready   []spare    // oldest first
	off     bool       // the gateway takes none: no more are made
	lastUse time.Time  // the last local connection (or the start)
	taken   chan struct{}
	soon    chan struct{} // refillSoon's
}

func newSpares(n int, cache tls.ClientSessionCache, dial func(context.Context, tls.ClientSessionCache) (*tls.Conn, endpoint, error), log *slog.Logger) *spares {
	return &spares{n: n, maxAge: aheadMaxAge, linger: aheadLinger, dial: dial, cache: cache, log: log,
		taken: make(chan struct{}, 1), soon: make(chan struct{}, 1), lastUse: time.Now()}
}

// take hands out the newest spare that is still open, or says there is
// none (then the caller dials on demand, as without spares). The caller
// calls refillSoon once its connection is under way (aheadStream.underway):
// a handshake made at once would take the CPU from the very connection it
// replaces.
func (p *spares) take() (*tls.Conn, endpoint, bool) {
	p.mu.Lock()
	idle := time.Since(p.lastUse) >= p.linger
	p.lastUse = time.Now()
	p.mu.Unlock()
	if idle {
		p.refill() // spares again, for the connections that follow this one
	}
	for {
		p.mu.Lock()
		if len(p.ready) == 0 {
			p.mu.Unlock()
			return nil, endpoint{}, false
		}
		s := p.ready[len(p.ready)-1]
		p.ready = p.ready[:len(p.ready)-1]
		p.mu.Unlock()
		if time.Since(s.made) < p.maxAge && s.cert == p.cert() && stillOpen(s.c) {
			return s.c, s.ep, true
		}
		s.c.Close()
		p.refill()
	}
}

// refillSoon tells run that a spare was taken and its stream is under
// way: run makes its replacement aheadRefillDelay later. Only a channel
// send here, on the stream's own copy goroutine: its stack stays as small
// as its blocked reads need.
func (p *spares) refillSoon() {
	select {
	case p.soon <- struct{}{}:
	default:
	}
}

// refill tells run that a spare was taken, or found closed.
func (p *spares) refill() {
	select {
	case p.taken <- struct{}{}:
	default:
	}
}

// settle waits for what the gateway sends after the handshake: its session
// ticket once it accepted our certificate (TLS 1.3 says so only after the
// client's handshake ended), or an alert if it did not. The ticket is taken
// in by a read, which ticketSeen ends as soon as the ticket is stored (kept
// for resumption); a spare is ready only if nothing else came. Within
// settleMax at most: a gateway that sends no ticket costs that wait once
// per spare, not a failure.
func settle(c *tls.Conn, seen *ticketSeen) error {
	seen.conn.Store(c)
	c.SetReadDeadline(time.Now().Add(settleMax))
	defer c.SetReadDeadline(time.Time{})
	var b [1]byte
	n, err := c.Read(b[:])
	var ne net.Error
	switch {
	case n > 0:
		return errors.New("the gateway sent data on an unused connection")
	case errors.As(err, &ne) && ne.Timeout():
		return nil
	}
	return err
}

// settleMax bounds settle's wait for the gateway's ticket.
const settleMax = 2 * time.Second

// ticketSeen is the session cache of one spare's handshake: it stores
// tickets in the sidecar's cache and ends settle's read when one arrives
// (a deadline in the past; crypto/tls calls Put inside that read).
type ticketSeen struct {
	tls.ClientSessionCache
	conn atomic.Pointer[tls.Conn]
}

func (t *ticketSeen) Get(key string) (*tls.ClientSessionState, bool) {
	if t.ClientSessionCache == nil {
		return nil, false
	}
	return t.ClientSessionCache.Get(key)
}

func (t *ticketSeen) Put(key string, cs *tls.ClientSessionState) {
	if t.ClientSessionCache != nil {
		t.ClientSessionCache.Put(key, cs)
	}
	if c := t.conn.Load(); c != nil && cs != nil {
		c.SetReadDeadline(time.Unix(1, 0))
	}
}

// run makes spares until ctx ends, then closes those it holds.
func (p *spares) run(ctx context.Context) {
	defer p.closeAll()
	retry := aheadRetryMin
	var retryAt time.Time
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for ctx.Err() == nil {
		next := p.retire()
		if p.want() && !time.Now().Before(retryAt) {
			seen := &ticketSeen{ClientSessionCache: p.cache}
			cert := p.cert()
			c, ep, err := p.dial(ctx, seen)
			if err == nil {
				if err = settle(c, seen); err != nil {
					c.Close()
					err = fmt.Errorf("connection made ahead to %s: %w", ep, err)
				}
			}
			switch {
			case err == nil:
				p.add(spare{c: c, ep: ep, made: time.Now(), cert: cert})
				retry = aheadRetryMin
				continue
			case ctx.Err() != nil:
				return
			case noAhead(err):
				p.log.Warn("the gateway does not take connections made ahead of need (an older gateway?); each connection is opened on demand", "err", err)
				p.mu.Lock()
				p.off = true
				p.mu.Unlock()
				return
			}
			p.log.Debug("could not make a connection ahead of need; retrying", "in", retry.String(), "err", err)
			retryAt = time.Now().Add(retry)
			retry = min(2*retry, aheadRetryMax)
		}
		wait := time.Until(next)
		if p.want() {
			wait = min(wait, time.Until(retryAt))
		}
		timer.Reset(max(wait, 0))
		select {
		case <-ctx.Done():
		case <-p.taken:
		case <-timer.C:
		case <-p.soon:
			ctxwait.SleepOr(ctx, aheadRefillDelay, p.taken) // a spare found closed does not wait
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}
}

// cert is the client certificate presented now (nil: not known).
func (p *spares) cert() *tls.Certificate {
	if p.current == nil {
		return nil
	}
	return p.current()
}

// want says whether fewer than n spares are ready while local connections
// come.
func (p *spares) want() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return !p.off && len(p.ready) < p.n && time.Since(p.lastUse) < p.linger
}

func (p *spares) add(s spare) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ready = append(p.ready, s)
}

// retire closes the spares older than maxAge, and all of them once no
// local connection came for linger, and says when to look again: the
// oldest spare's age or the linger's end, whichever comes first (an hour
// ahead when idle: the next local connection wakes run).
func (p *spares) retire() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	idleAt := p.lastUse.Add(p.linger)
	i := 0
	for i < len(p.ready) && (now.Sub(p.ready[i].made) >= p.maxAge || !now.Before(idleAt)) {
		p.ready[i].c.Close()
		i++
	}
	p.ready = p.ready[i:]
	if !now.Before(idleAt) {
		return now.Add(time.Hour)
	}
	if len(p.ready) == 0 {
		return idleAt
	}
	if old := p.ready[0].made.Add(p.maxAge); old.Before(idleAt) {
		return old
	}
	return idleAt
}

func (p *spares) closeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range p.ready {
		s.c.Close()
	}
	p.ready = nil
}

// noAhead says whether err is a gateway's refusal of the protocol itself:
// one that predates connections made ahead offers no common ALPN protocol.
func noAhead(err error) bool {
	return err != nil && strings.Contains(err.Error(), "no application protocol")
}
