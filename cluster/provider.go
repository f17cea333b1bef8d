package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/wakegate/wakegate/internal/ctxwait"
	"log/slog"
	"os"
	"sync"
	"time"
)

// Host is what the cluster wraps: a provider of engines, with the
// signatures of gateway.Provider.
type Host interface {
	Engines(ctx context.Context) ([]string, error)
	Start(ctx context.Context, id string) (addr string, err error)
	Stop(ctx context.Context, id string) error
}

// StartReporter is the optional capability of a Host that says what state
// it found an engine in when asked to start it (gateway.StartReporter).
type StartReporter interface {
	StartFrom(ctx context.Context, id string) (addr, from string, err error)
}

// Watcher is the optional capability of a Host that tells an engine it
// started has already failed (gateway.Watcher).
type Watcher interface {
	Failed(id string) error
}

// Store is what the lease needs of the shared database: methods of
// smallstep's nosql database.DB (github.com/smallstep/nosql/database),
// which the CA's database already is. There is no Del: nosql's is
// unconditional, and deleting a lease that another gateway has just taken
// would let a third start the engine again; a released lease is written as
// a row with no holder instead.
//
// CmpAndSwap with a nil oldValue must swap only if the key is absent,
// atomically across every gateway: smallstep's raw PostgreSQL driver does
// not guarantee that (two concurrent inserts both succeed), so the Store
// given on PostgreSQL must. Every other write here replaces an existing
// row, which the drivers lock. The interface takes no context: each call is
// bounded by the driver alone (for PostgreSQL, the DSN's connect_timeout
// and statement_timeout).
type Store interface {
	CreateTable(bucket []byte) error
	// Get returns database.ErrNotFound (wrapped; database.IsErrNotFound)
	// when key is absent.
	Get(bucket, key []byte) ([]byte, error)
	// CmpAndSwap stores newValue if the current value is oldValue (nil:
	// absent) and returns the value now stored and whether it swapped.
	CmpAndSwap(bucket, key, oldValue, newValue []byte) ([]byte, bool, error)
}

// Config configures a Provider.
type Config struct {
	// Host is the provider whose engines the gateways share. Its Start
	// must be idempotent — start the engine unless it runs, and return its
	// address either way — because a gateway that takes over the lease of
	// one that died calls it for an engine that may still run (an exec
	// provider's start command on a machine that survived its gateway).
	Host Host
	// Store is the database the gateways share.
	Store Store
	// Holder names this gateway in the leases it holds; it must be unique
	// among the gateways and among their restarts (NewHolderID).
	Holder string
	// TTL is how long a lease lives unless its holder refreshes it (every
	// TTL/3): how long a pool waits for an engine whose gateway died.
	// Expiry is written in the holder's clock and read in the others':
	// the gateways' clocks must agree within a small fraction of TTL.
	// Default 15 s.
	TTL time.Duration
	// Poll is how often a start waiting for another gateway's start reads
	// its lease again. Default 200 ms (at most TTL/3).
	Poll time.Duration
	// Table is the table (bucket) of the leases. Default
	// "wakegate_engine_leases".
	Table string
	// Busy, if set, asks the engine at addr whether anyone uses it; the
	// holder asks it just before stopping the engine, while its lease says
	// "stopping" so that no other gateway is handed the address meanwhile.
	// An engine in use is not stopped (the Stop error is ErrBusy's, which
	// is a gateway.EngineBusy).
	Busy func(ctx context.Context, addr string) (bool, error)
	// Now is the clock leases' expiry is written and read in. Default
	// time.Now.
	Now func() time.Time
	Log *slog.Logger
}

// Defaults.
const (
	DefaultTTL   = 6 * time.Second
	DefaultPoll  = 200 * time.Millisecond
	DefaultTable = "wakegate_engine_leases"
)

// ErrClosed is returned by Start and Stop after Close.
var ErrClosed = errors.New("cluster provider closed")

// ErrBusy says that a stop was skipped because the engine is in use,
// through whichever gateway. It is a gateway.EngineBusy: the gateway keeps
// the engine running and asks again after another idle period.
var ErrBusy error = busyError{}

// busyError is ErrBusy's type: cluster must not import gateway, so it
// meets the gateway's optional interface structurally.
type busyError struct{}

func (busyError) Error() string    { return "engine in use" }
func (busyError) EngineBusy() bool { return true }

// Provider is a Host whose engines several gateways share: it starts an
// engine only under that engine's lease in the Store, and otherwise
// returns the address its holder wrote. It satisfies gateway.Provider,
// gateway.Watcher and gateway.StartReporter.
type Provider struct {
	cfg    Config
	table  []byte
	base   context.Context // ends at Close: refreshes and waiting starts
	cancel context.CancelFunc

	mu     sync.Mutex       // guards slots and closed
	slots  map[string]*slot // by engine id
	closed bool
	wg     sync.WaitGroup // refresh loops, and takes on their way to starting one
}

// slot is one engine's state in this gateway.
type slot struct {
	// sem lets one Start or Stop of the engine through at a time here, as
	// a channel so that waiting for it is bounded by ctx.
	sem chan struct{}
	// mu guards held, and orders this gateway's writes of the lease (a
	// refresh against a stop): each is a compare-and-swap on the bytes the
	// previous one wrote.
	mu   sync.Mutex
	held *holding // nil unless this gateway holds the lease
}

// NewHolderID returns a holder name unique to this process: the host's
// name, the process id and a random part (pids recur across restarts and
// containers).
func NewHolderID() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "gateway"
	}
	var b [6]byte
	rand.Read(b[:]) // never fails (crypto/rand)
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b[:]))
}

// New validates cfg and creates the lease table unless it exists.
func New(cfg Config) (*Provider, error) {
	if cfg.Host == nil || cfg.Store == nil {
		return nil, errors.New("cluster: need a host provider and a store")
	}
	if cfg.Holder == "" {
		return nil, errors.New("cluster: need this gateway's holder name (NewHolderID)")
	}
	if cfg.TTL == 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.TTL < 30*time.Millisecond {
		return nil, fmt.Errorf("cluster: lease TTL %s is too short", cfg.TTL)
	}
	if cfg.Poll <= 0 {
		cfg.Poll = DefaultPoll
	}
	cfg.Poll = min(cfg.Poll, cfg.TTL/3)
	if cfg.Table == "" {
		cfg.Table = DefaultTable
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if err := cfg.Store.CreateTable([]byte(cfg.Table)); err != nil {
		// Once more: PostgreSQL's CREATE TABLE IF NOT EXISTS fails on a
		// unique violation when two gateways run it at the same moment,
		// and the second try finds the table.
		if err := cfg.Store.CreateTable([]byte(cfg.Table)); err != nil {
			return nil, fmt.Errorf("cluster: create table %s: %w", cfg.Table, err)
		}
	}
	p := &Provider{cfg: cfg, table: []byte(cfg.Table), slots: map[string]*slot{}}
	p.base, p.cancel = context.WithCancel(context.Background())
	return p, nil
}

// Engines lists the host's engines.
func (p *Provider) Engines(ctx context.Context) ([]string, error) {
	return p.cfg.Host.Engines(ctx)
}

// Start returns the address of engine id, starting it only if no other
// gateway holds its lease. With the lease free (absent, released or
// expired) it takes the lease, starts the engine through the host, writes
// the address into the lease and refreshes it while it holds it. With a
// live lease held by another gateway it returns that gateway's address
// without starting anything; if that gateway is still starting (or
// stopping) the engine, it waits — until the address appears, the lease
// expires (it then takes it) or ctx ends.
func (p *Provider) Start(ctx context.Context, id string) (string, error) {
	addr, _, err := p.StartFrom(ctx, id)
	return addr, err
}

// StartFrom is Start, also saying what state the engine was found in
// (gateway.StartReporter): the host's own answer when this gateway starts
// it (if the host says; "stopped" if not), "running" when another gateway
// already ran it, "stopped" when this one waited for another's start.
func (p *Provider) StartFrom(ctx context.Context, id string) (addr, from string, err error) {
	ctx, cancel := p.opContext(ctx)
	defer cancel()
	s, err := p.slot(id)
	if err != nil {
		return "", "", fmt.Errorf("start engine %s: %w", id, err)
	}
	if err := s.lock(ctx); err != nil {
		return "", "", fmt.Errorf("start engine %s: %w", id, context.Cause(ctx))
	}
	defer s.unlock()
	waited, deadSeen := false, false
	for {
		h, err := p.stillHeld(id, s)
		if err != nil {
			return "", "", fmt.Errorf("start engine %s: %w", id, err)
		}
		if h != nil {
			return p.startHeld(ctx, id, s, h)
		}
		cur, l, err := p.read(id)
		if err != nil {
			return "", "", fmt.Errorf("start engine %s: %w", id, err)
		}
		if l.heldByOther(p.cfg.Holder, p.cfg.Now()) {
			if l.Addr != "" && !l.Stopping {
				if err := p.answers(ctx, l.Addr); err == nil {
					p.cfg.Log.Debug("engine runs under another gateway's lease", "engine", id, "holder", l.Holder, "addr", l.Addr)
					if waited {
						return l.Addr, "stopped", nil
					}
					return l.Addr, "running", nil
				} else if !deadSeen {
					// Its gateway died with it (a local engine is its
					// child), or it crashed and its gateway will start it
					// again: either the lease expires or its address
					// changes.
					deadSeen, waited = true, true
					p.cfg.Log.Warn("the engine another gateway started does not answer; waiting for that gateway to start it again or for its lease to expire",
						"engine", id, "holder", l.Holder, "addr", l.Addr, "err", err)
				}
			} else if !waited {
				waited = true
				p.cfg.Log.Info("waiting for another gateway to start or stop engine", "engine", id, "holder", l.Holder, "stopping", l.Stopping)
			}
			if err := ctxwait.Sleep(ctx, p.cfg.Poll); err != nil {
				return "", "", fmt.Errorf("start engine %s: waiting for gateway %s, which holds its lease: %w", id, l.Holder, err)
			}
			continue
		}
		if l.Holder != "" && l.Holder != p.cfg.Holder {
			p.cfg.Log.Warn("taking over the expired lease of another gateway", "engine", id, "holder", l.Holder)
		}
		h, err = p.take(id, s, cur)
		if err != nil {
			return "", "", fmt.Errorf("start engine %s: %w", id, err)
		}
		if h == nil {
			continue // another gateway took it first: read whose it is
		}
		return p.startHeld(ctx, id, s, h)
	}
}

// answers checks that the engine at addr answers (Config.Busy, whatever it
// says), within a few seconds; with no Busy it is taken to.
func (p *Provider) answers(ctx context.Context, addr string) error {
	if p.cfg.Busy == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	_, err := p.cfg.Busy(ctx, addr)
	return err
}

// stillHeld returns the lease of engine id that this gateway holds, nil
// if none, after checking with a refresh that it is still its own: a
// refresh that failed for longer than TTL (the database unreachable from
// here alone) may have let another gateway take it.
func (p *Provider) stillHeld(id string, s *slot) (*holding, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := s.held
	if h == nil {
		return nil, nil
	}
	switch err := p.writeLocked(id, s, h, func(*lease) {}); {
	case errors.Is(err, errLost):
		p.cfg.Log.Warn("engine lease lost: it expired unrefreshed and another gateway took it", "engine", id, "holder", p.cfg.Holder)
		return nil, nil
	case err != nil && p.cfg.Now().UnixMilli() < h.l.Expires:
		// The database is unreachable, but the lease last written has not
		// expired: nobody else may take it before then.
		p.cfg.Log.Warn("engine lease not refreshed, but still held", "engine", id, "err", err)
	case err != nil:
		return nil, err
	}
	return h, nil
}

// startHeld starts the engine under the lease h this gateway holds.
func (p *Provider) startHeld(ctx context.Context, id string, s *slot, h *holding) (addr, from string, err error) {
	from = "stopped"
	if r, ok := p.cfg.Host.(StartReporter); ok {
		addr, from, err = r.StartFrom(ctx, id)
	} else {
		addr, err = p.cfg.Host.Start(ctx, id)
	}
	if err != nil {
		// Free the lease at once: another gateway (or a retry here) may
		// succeed, and an error such as HostUnavailable sends the
		// connection elsewhere.
		if rerr := p.release(id, s, h); rerr != nil {
			p.cfg.Log.Warn("release of engine lease failed; it expires on its own", "engine", id, "ttl", p.cfg.TTL.String(), "err", rerr)
		}
		return "", "", err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.held != h {
		// Lost while starting (the database unreachable for longer than
		// TTL, and another gateway took the lease), or released by Close.
		// The engine runs; its new holder's idempotent start finds it.
		p.cfg.Log.Warn("engine started, but its lease was lost meanwhile", "engine", id, "addr", addr)
		return addr, from, nil
	}
	err = p.writeLocked(id, s, h, func(l *lease) { l.Addr, l.Stopping = addr, false })
	switch {
	case errors.Is(err, errLost):
		p.cfg.Log.Warn("engine started, but its lease was taken meanwhile", "engine", id, "addr", addr)
	case err != nil:
		// The next refresh writes it: other gateways wait for it until then.
		h.l.Addr, h.l.Stopping = addr, false
		p.cfg.Log.Warn("writing engine address into its lease failed; the next refresh retries", "engine", id, "err", err)
	}
	return addr, from, nil
}

// Stop stops engine id if this gateway holds its lease, then releases the
// lease. If another gateway holds it, Stop does nothing and returns nil:
// that gateway stops the engine when it, too, finds it idle (the gateway
// asks the engine itself, which counts every gateway's clients). A failed
// stop releases the lease too, with the host's error: the engine's state
// is unknown, and the next start, wherever, settles it. With Config.Busy,
// an engine still in use is left running and held, and the error is
// ErrBusy.
func (p *Provider) Stop(ctx context.Context, id string) error {
	ctx, cancel := p.opContext(ctx)
	defer cancel()
	s, err := p.slot(id)
	if err != nil {
		return fmt.Errorf("stop engine %s: %w", id, err)
	}
	if err := s.lock(ctx); err != nil {
		return fmt.Errorf("stop engine %s: %w", id, context.Cause(ctx))
	}
	defer s.unlock()
	s.mu.Lock()
	h := s.held
	s.mu.Unlock()
	if h == nil {
		// Not ours. Another gateway's live lease: its holder stops the
		// engine. A free one (its holder released it while the engine was
		// still in use, or died): nobody would, so this gateway takes it
		// and stops the engine — its gateway found it idle before asking.
		cur, l, err := p.read(id)
		if err != nil {
			return fmt.Errorf("stop engine %s: %w", id, err)
		}
		if l.heldByOther(p.cfg.Holder, p.cfg.Now()) {
			return nil
		}
		if h, err = p.take(id, s, cur); err != nil || h == nil {
			return err // nil, nil: another gateway took it first
		}
		p.cfg.Log.Info("engine lease was free; stopping the engine its last holder left running", "engine", id)
	}
	s.mu.Lock()
	addr := h.l.Addr
	// Say "stopping" first, so that no gateway is handed the address of an
	// engine about to go: they wait for the lease to be free instead.
	err = p.writeLocked(id, s, h, func(l *lease) { l.Addr, l.Stopping = "", true })
	s.mu.Unlock()
	switch {
	case errors.Is(err, errLost):
		p.cfg.Log.Warn("engine lease taken by another gateway; leaving the engine to it", "engine", id)
		return nil
	case err != nil:
		p.cfg.Log.Warn("marking engine lease stopping failed; stopping anyway", "engine", id, "err", err)
	}
	if p.cfg.Busy != nil && addr != "" {
		busy, berr := p.cfg.Busy(ctx, addr)
		if berr == nil && busy {
			s.mu.Lock()
			if s.held == h {
				if err := p.writeLocked(id, s, h, func(l *lease) { l.Addr, l.Stopping = addr, false }); err != nil && !errors.Is(err, errLost) {
					h.l.Addr, h.l.Stopping = addr, false // the next refresh writes it
				}
			}
			s.mu.Unlock()
			return fmt.Errorf("stop engine %s: %w", id, ErrBusy)
		}
	}
	err = p.cfg.Host.Stop(ctx, id)
	if rerr := p.release(id, s, h); rerr != nil {
		p.cfg.Log.Warn("release of engine lease failed; it expires on its own", "engine", id, "ttl", p.cfg.TTL.String(), "err", rerr)
	}
	return err
}

// Failed asks the host whether engine id has already failed, for an
// engine this gateway started; another gateway's engine is its to watch
// (nil).
func (p *Provider) Failed(id string) error {
	w, ok := p.cfg.Host.(Watcher)
	if !ok {
		return nil
	}
	p.mu.Lock()
	s := p.slots[id]
	p.mu.Unlock()
	if s == nil {
		return nil
	}
	s.mu.Lock()
	held := s.held != nil
	s.mu.Unlock()
	if !held {
		return nil
	}
	return w.Failed(id)
}

// Close stops refreshing and releases every lease this gateway still
// holds, so that other gateways take them over at once rather than after
// TTL. A gateway shutting down stops its engines first (Stop releases their
// leases); what is left runs on, and its next holder's idempotent start
// returns it. Call it after the gateway has shut down and stopped its
// engines: starts and stops under way end (their waits are cancelled), and
// later ones return ErrClosed. Every refresh loop has ended when it
// returns. Safe to call twice.
func (p *Provider) Close() error {
	p.mu.Lock()
	p.closed = true
	slots := make(map[string]*slot, len(p.slots))
	for id, s := range p.slots {
		slots[id] = s
	}
	p.mu.Unlock()
	p.cancel()
	p.wg.Wait()
	var errs []error
	for id, s := range slots {
		s.mu.Lock()
		h := s.held
		s.mu.Unlock()
		if h != nil {
			if err := p.release(id, s, h); err != nil {
				errs = append(errs, fmt.Errorf("release lease of engine %s: %w", id, err))
			}
		}
	}
	return errors.Join(errs...)
}

// opContext is ctx, ended too by Close.
func (p *Provider) opContext(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(ctx)
	stop := context.AfterFunc(p.base, func() { cancel(ErrClosed) })
	return ctx, func() {
		stop()
		cancel(nil)
	}
}

func (p *Provider) slot(id string) (*slot, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, ErrClosed
	}
	s, ok := p.slots[id]
	if !ok {
		s = &slot{sem: make(chan struct{}, 1)}
		p.slots[id] = s
	}
	return s, nil
}

func (s *slot) lock(ctx context.Context) error {
	select {
	case s.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *slot) unlock() { <-s.sem }
