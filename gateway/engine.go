package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// State is where an engine is in its wake/idle cycle.
type State string

// Engine states.
const (
	Stopped  State = "stopped"
	Starting State = "starting"
	Running  State = "running"
	Stopping State = "stopping"
)

// EngineConfig configures one engine's wake/idle state machine.
type EngineConfig struct {
	ID       string
	Provider Provider
	Probe    Prober
	// Idle is the grace period between the last connection closing and the
	// engine being stopped.
	Idle time.Duration
	// WakeTimeout bounds a whole wake: the host starting it and BuildKit
	// answering.
	WakeTimeout time.Duration
	// StopTimeout bounds one request to the host to stop it. A host that
	// is still stopping it then (IsStillStopping) is asked again, up to
	// maxStopRounds times, the engine staying Stopping and billed.
	StopTimeout time.Duration
	// ProbeInterval is the pause between readiness probes.
	ProbeInterval time.Duration
	// KeepWarm, if set, is asked when the idle timer fires: true keeps
	// the engine running for another idle period (the pool's
	// --min-running). It must not call back into this engine.
	KeepWarm func() bool
	// BeforeStop, if set, asks the engine itself whether anyone uses it
	// (through any gateway) before an idle stop; a busy engine is kept for
	// another idle period. An engine that cannot answer three times in a
	// row is stopped: it cannot serve either.
	BeforeStop func(ctx context.Context, addr string) (busy bool, err error)
	// CPUs, if set, asks a woken engine how many CPUs it has (its own
	// report), for a soft limit by size (Policy.Soft SoftBySize). Asked
	// once after every wake; an error keeps what was known.
	CPUs func(ctx context.Context, addr string) (int, error)
	Log  *slog.Logger
	// Clock is RealClock unless a simulation supplies its own.
	Clock Clock
}

func (c *EngineConfig) setDefaults() {
	if c.WakeTimeout <= 0 {
		c.WakeTimeout = 60 * time.Second
	}
	if c.StopTimeout <= 0 {
		c.StopTimeout = 60 * time.Second
	}
	if c.ProbeInterval <= 0 {
		c.ProbeInterval = 100 * time.Millisecond
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	if c.Clock == nil {
		c.Clock = RealClock{}
	}
}

// Engine is the gateway's view of one engine: it merges concurrent wakes
// into one start, counts connections, and stops the engine after Idle with
// none. A connection that arrives while the engine is stopping waits for the
// stop to finish and then starts it again; it is never dropped.
type Engine struct {
	cfg    EngineConfig
	ctx    context.Context // cancelled by Close: abandons a wake in progress
	cancel context.CancelFunc
	wg     sync.WaitGroup // wake and stop goroutines

	mu       sync.Mutex    // guards the fields below
	state    State         //
	addr     string        // where a running engine serves; "" otherwise
	conns    int           // leases held
	wake     *attempt      // the wake in progress, while Starting
	stopped  chan struct{} // closed when the stop in progress ends, while Stopping
	idle     Timer         // pending idle stop, while Running with no conns
	idleAt   time.Time     // when idle fires
	idleFor  time.Duration // the period idle was armed for: Idle, or a pre-wake's grace
	idleGen  uint64        // bumped to invalidate an idle timer that already fired
	closed   bool          // Close was called: no new wakes
	lastWake time.Duration // duration of the last successful wake
	wakes    int           // successful wakes so far
	unknown  int           // consecutive idle checks the engine could not answer
	up       time.Time     // when the engine left Stopped, while it is not Stopped
	upTotal  time.Duration // machine time billed before up
	wakeHist [wakeBucketCount + 1]int
	wakeSum  time.Duration // of every wake in wakeHist

	// Pre-wakes (see Prewake).
	prewake     time.Duration // while Starting: the hold to arm if the wake ends with no connection; 0: Idle
	rewake      time.Duration // while Stopping: a pre-wake's grace, to wake again once stopped; 0: none
	unused      bool          // a pre-wake woke or held the engine and no lease was granted since
	prewakeFrom time.Time     // since when the machine runs only for a pre-wake; zero if it does not
	prewakes    int           // wakes a pre-wake began
	unusedStops int           // stops of an engine that pre-wakes kept, no connection having come
	prewakeCost time.Duration // machine time pre-wakes added before a connection came (or the stop)

	running atomic.Bool  // state == Running, readable without mu (routing)
	cpus    atomic.Int32 // the engine's CPUs, as last reported; 0 unknown

	// onWake, if set (by the pool, before any wake), records each wake's
	// phases, or the phase it failed in, in the pool's metrics.
	onWake func(wakeTiming)
	// onStarted, if set (by the pool, before any wake), hears the address
	// of an engine its host started, before it is ready.
	onStarted func(addr string)
}

const wakeBucketCount = 9

// WakeBuckets are the upper bounds of the wake latency histogram.
var WakeBuckets = [wakeBucketCount]time.Duration{100 * time.Millisecond, 250 * time.Millisecond, 500 * time.Millisecond,
	time.Second, 2 * time.Second, 5 * time.Second, 10 * time.Second, 30 * time.Second, 60 * time.Second}

// setStateLocked changes state, keeping the billing clock: a machine bills
// from the moment it leaves Stopped until it is Stopped again.
func (e *Engine) setStateLocked(s State) {
	now := e.cfg.Clock.Now()
	if e.state == Stopped && s != Stopped {
		e.up = now
	}
	if s == Stopped && e.state != Stopped {
		e.upTotal += now.Sub(e.up)
	}
	e.state = s
	e.running.Store(s == Running)
}

// Running says whether the engine is up and serving, without locking.
func (e *Engine) Running() bool { return e.running.Load() }

// attempt is one wake, shared by every connection that waits for it.
type attempt struct {
	done chan struct{} // closed when the wake ends
	err  error         // set before done is closed

	// hostStarted is closed once the host's start returned (before done,
	// whatever the outcome); addr, set before it is closed, is the address
	// the host gave, or "" if its start failed. Written by runWake only.
	hostStarted chan struct{}
	addr        string
}

// tellStarted says that the host's start returned addr ("" if it failed).
func (e *Engine) tellStarted(a *attempt, addr string) {
	a.addr = addr
	e.cfg.Clock.Close(a.hostStarted)
}

// NewEngine returns a stopped engine.
func NewEngine(cfg EngineConfig) *Engine {
	cfg.setDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	return &Engine{cfg: cfg, ctx: ctx, cancel: cancel, state: Stopped}
}

// ID is the engine's provider id.
func (e *Engine) ID() string { return e.cfg.ID }

// Lease is one connection's hold on a running engine; Release it when the
// connection ends.
type Lease struct {
	Addr string
	// Waited says whether this acquire waited for a wake or a stop.
	Waited bool
	once   sync.Once
	e      *Engine
	// onRelease, if set, runs after the engine's release (the pool's
	// session accounting).
	onRelease func()
}

// Release gives the lease back; the last release starts the idle timer.
// Calling it twice is harmless.
func (l *Lease) Release() {
	l.once.Do(func() {
		l.e.release()
		if l.onRelease != nil {
			l.onRelease()
		}
	})
}

// Broken reports that the engine could not be reached at the lease's
// address: it is stopped, and the next connection wakes it again.
func (l *Lease) Broken() { l.e.broken(l.Addr) }

// Acquire returns a lease on the running engine, waking it first if needed.
// It waits at most until ctx ends; a failed wake is returned to every waiter.
func (e *Engine) Acquire(ctx context.Context) (*Lease, error) { return e.acquire(ctx, nil) }

// acquire is Acquire; hostStarted, if set, hears the address of a wake it
// waits for as soon as the host gave it, before the engine is ready.
func (e *Engine) acquire(ctx context.Context, hostStarted func(addr string)) (*Lease, error) {
	waited := false
	for {
		e.mu.Lock()
		if e.closed {
			e.mu.Unlock()
			return nil, fmt.Errorf("%w: engine %s: gateway is shutting down", ErrEngineUnavailable, e.cfg.ID)
		}
		// A connection came: what a pre-wake adds ends here, whether the
		// engine is ready or still waking.
		e.settlePrewakeLocked()
		var wait <-chan struct{}
		var a *attempt
		switch e.state {
		case Running:
			l := e.leaseLocked(waited)
			e.mu.Unlock()
			return l, nil
		case Stopped:
			e.beginWakeLocked()
			a = e.wake
		case Starting:
			a = e.wake
		case Stopping:
			wait = e.stopped
		}
		e.mu.Unlock()
		waited = true
		if a != nil {
			if hostStarted != nil {
				if err := e.cfg.Clock.Wait(ctx, a.hostStarted); err != nil {
					return nil, fmt.Errorf("%w: engine %s: gave up waiting: %w", ErrEngineUnavailable, e.cfg.ID, err)
				}
				if a.addr != "" {
					hostStarted(a.addr)
				}
			}
			wait = a.done
		}
		if err := e.cfg.Clock.Wait(ctx, wait); err != nil {
			return nil, fmt.Errorf("%w: engine %s: gave up waiting: %w", ErrEngineUnavailable, e.cfg.ID, err)
		}
		if a != nil && a.err != nil {
			return nil, a.err
		}
	}
}

// TryAcquire leases the engine only if it is running now: it never wakes
// it nor waits.
func (e *Engine) TryAcquire() (*Lease, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed || e.state != Running {
		return nil, false
	}
	e.settlePrewakeLocked()
	return e.leaseLocked(false), true
}

// leaseLocked counts a connection on the running engine.
func (e *Engine) leaseLocked(waited bool) *Lease {
	e.conns++
	e.cancelIdleLocked()
	e.unused = false
	return &Lease{Addr: e.addr, Waited: waited, e: e}
}

func (e *Engine) release() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.conns--
	if e.conns == 0 && e.state == Running && !e.closed {
		e.armIdleLocked()
	}
}

func (e *Engine) armIdleLocked() { e.armIdleForLocked(e.cfg.Idle) }

// armIdleForLocked arms the idle stop d from now.
func (e *Engine) armIdleForLocked(d time.Duration) {
	e.cancelIdleLocked()
	gen := e.idleGen
	e.idleAt, e.idleFor = e.cfg.Clock.Now().Add(d), d
	e.idle = e.cfg.Clock.AfterFunc(d, func() { e.idleFired(gen) })
}

func (e *Engine) cancelIdleLocked() {
	if e.idle != nil {
		e.idle.Stop()
		e.idle = nil
	}
	// A timer that already fired is waiting for mu: make it a no-op.
	e.idleGen++
}

func (e *Engine) idleFired(gen uint64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.stillIdleLocked(gen) {
		return
	}
	e.idle = nil
	if e.cfg.KeepWarm != nil && e.cfg.KeepWarm() {
		e.armIdleLocked()
		return
	}
	if e.cfg.BeforeStop == nil {
		e.cfg.Log.Info("engine idle, stopping", "engine", e.cfg.ID, "idle", e.idleFor.String())
		e.beginStopLocked()
		return
	}
	// Ask the engine without holding mu; a connection arriving meanwhile
	// bumps idleGen and wins.
	addr := e.addr
	e.wg.Add(1)
	e.cfg.Clock.Go(func() {
		defer e.wg.Done()
		ctx, cancel := context.WithTimeout(e.ctx, 10*time.Second)
		busy, err := e.cfg.BeforeStop(ctx, addr)
		cancel()
		e.mu.Lock()
		defer e.mu.Unlock()
		if !e.stillIdleLocked(gen) {
			return
		}
		switch {
		case err != nil && e.unknown < 2:
			e.unknown++
			e.cfg.Log.Warn("engine idle here but its status is unknown; keeping it", "engine", e.cfg.ID, "err", err)
			e.armIdleLocked()
		case err == nil && busy:
			e.unknown = 0
			e.cfg.Log.Info("engine idle here but in use elsewhere; keeping it", "engine", e.cfg.ID)
			e.armIdleLocked()
		default:
			e.unknown = 0
			if err != nil {
				e.cfg.Log.Warn("engine idle; its status is still unknown after three tries, stopping it", "engine", e.cfg.ID,
					"idle", e.idleFor.String(), "err", err)
			} else {
				e.cfg.Log.Info("engine idle, stopping", "engine", e.cfg.ID, "idle", e.idleFor.String())
			}
			e.beginStopLocked()
		}
	})
}

// stillIdleLocked says whether the idle timer of generation gen still
// stands: nobody connected and nothing else happened since.
func (e *Engine) stillIdleLocked(gen uint64) bool {
	return gen == e.idleGen && e.conns == 0 && e.state == Running && !e.closed
}

// broken stops an engine found dead at addr (a dial failed), so that the
// next connection wakes it again instead of dialing a corpse.
func (e *Engine) broken(addr string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.state == Running && e.addr == addr && !e.closed {
		e.cfg.Log.Warn("engine unreachable, restarting it on the next connection", "engine", e.cfg.ID, "addr", addr)
		e.cancelIdleLocked()
		e.beginStopLocked()
	}
}

func (e *Engine) beginWakeLocked() {
	e.setStateLocked(Starting)
	a := &attempt{done: make(chan struct{}), hostStarted: make(chan struct{})}
	e.wake = a
	e.wg.Add(1)
	e.cfg.Clock.Go(func() { e.runWake(a) })
}

func (e *Engine) runWake(a *attempt) {
	defer e.wg.Done()
	clk := e.cfg.Clock
	began := clk.Now()
	e.cfg.Log.Info("engine waking", "engine", e.cfg.ID)
	addr, timing, err := e.start(e.ctx, began.Add(e.cfg.WakeTimeout), func(addr string) { e.tellStarted(a, addr) })
	took := clk.Now().Sub(began)
	if e.onWake != nil {
		e.onWake(timing)
	}

	e.mu.Lock()
	e.wake = nil
	if err != nil {
		a.err = fmt.Errorf("%w: wake engine %s: %w", ErrEngineUnavailable, e.cfg.ID, err)
		e.cfg.Log.Error("engine wake failed", "engine", e.cfg.ID, "wake_ms", took.Milliseconds(), "err", err)
		// Stop whatever half-started, so the next wake begins clean.
		e.beginStopLocked()
	} else {
		e.setStateLocked(Running)
		e.addr = addr
		e.lastWake = took
		e.wakes++
		b := 0
		for b < len(WakeBuckets) && took > WakeBuckets[b] {
			b++
		}
		e.wakeHist[b]++
		e.wakeSum += took
		e.cfg.Log.Info("engine ready", "engine", e.cfg.ID, "wake_ms", took.Milliseconds(), "from", timing.from,
			"host_start_ms", timing.hostStart.Milliseconds())
		if e.closed {
			e.beginStopLocked()
		} else if e.conns == 0 {
			// Waiters take their leases next; if they all gave up, the
			// engine still stops after the idle period — or, woken for a
			// pre-wake, after its grace.
			if e.prewake > 0 {
				e.armIdleForLocked(e.prewake)
			} else {
				e.armIdleLocked()
			}
		}
	}
	e.prewake = 0
	e.mu.Unlock()
	e.cfg.Clock.Close(a.done)
	if err == nil && e.cfg.CPUs != nil {
		// The ask is a second TLS handshake and a /status (BuildKit
		// queries) on the engine, made just as the waiters released above
		// dial their streams: measured with an exec engine on two cores,
		// it added about 2 ms to a cold connect's first byte. An engine
		// whose size is known keeps it meanwhile, so its re-ask (which only
		// catches a resize) waits until those streams are set up; an
		// unknown size is asked at once, since sessions are placed by it.
		if e.CPUs() > 0 && e.cfg.Clock.Sleep(e.ctx, cpusReaskDelay) != nil {
			return // closing
		}
		e.askCPUs(addr)
	}
}

// cpusReaskDelay is how long after a wake an engine of known size is asked
// its size again: well past its first streams' setup (milliseconds).
const cpusReaskDelay = time.Second

// askCPUs records the CPUs the engine at addr reports.
func (e *Engine) askCPUs(addr string) {
	ctx, cancel := context.WithTimeout(e.ctx, 10*time.Second)
	defer cancel()
	n, err := e.cfg.CPUs(ctx, addr)
	if err != nil {
		e.cfg.Log.Debug("engine did not report its CPUs", "engine", e.cfg.ID, "err", err)
		return
	}
	if n <= 0 {
		e.cfg.Log.Debug("engine did not report its CPUs", "engine", e.cfg.ID, "cpus", n)
		return
	}
	if old := e.cpus.Swap(int32(n)); int(old) != n {
		e.cfg.Log.Info("engine size", "engine", e.cfg.ID, "cpus", n)
	}
}

// start asks the host to start the engine, then probes it until BuildKit
// answers, the deadline passes, or ctx ends. It says how long each phase
// took, or which one failed. hostStarted is called once the host's start
// returned, before the engine is ready: with the address the host gave, or
// "" if its start failed.
func (e *Engine) start(ctx context.Context, deadline time.Time, hostStarted func(addr string)) (string, wakeTiming, error) {
	clk := e.cfg.Clock
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// The deadline is the clock's (virtual in a simulation), so it is a
	// clock timer rather than a context deadline.
	t := clk.AfterFunc(deadline.Sub(clk.Now()), func() { cancel(context.DeadlineExceeded) })
	defer t.Stop()
	began := clk.Now()
	addr, from, err := startFrom(ctx, e.cfg.Provider, e.cfg.ID)
	if err != nil {
		hostStarted("")
		return "", wakeTiming{failedIn: phaseHostStart}, fmt.Errorf("start: %w", err)
	}
	started := clk.Now()
	timing := wakeTiming{from: from, hostStart: started.Sub(began)}
	if e.onStarted != nil {
		e.onStarted(addr)
	}
	hostStarted(addr)
	w, _ := e.cfg.Provider.(Watcher)
	var last error
	for {
		if last = e.cfg.Probe(ctx, addr); last == nil {
			timing.engineReady = clk.Now().Sub(started)
			return addr, timing, nil
		}
		if w != nil {
			if err := w.Failed(e.cfg.ID); err != nil {
				return "", wakeTiming{failedIn: phaseEngineReady}, fmt.Errorf("engine failed before it was ready: %w", err)
			}
		}
		e.cfg.Log.Debug("engine not ready yet", "engine", e.cfg.ID, "err", last)
		if err := clk.Sleep(ctx, e.cfg.ProbeInterval); err != nil {
			return "", wakeTiming{failedIn: phaseEngineReady}, fmt.Errorf("not ready at %s: %w (last probe: %v)", addr, err, last)
		}
	}
}

func (e *Engine) beginStopLocked() {
	if e.unused && e.state == Running && !e.closed {
		e.unusedStops++
		e.cfg.Log.Info("pre-woken engine stopping: no connection came", "engine", e.cfg.ID)
	}
	e.unused = false
	e.settlePrewakeLocked()
	addr := e.addr
	e.setStateLocked(Stopping)
	e.addr = ""
	ch := make(chan struct{})
	e.stopped = ch
	e.wg.Add(1)
	e.cfg.Clock.Go(func() { e.runStop(ch, addr) })
}

// runStop asks the host to stop the engine that served at addr ("" if it
// never became ready).
func (e *Engine) runStop(done chan struct{}, addr string) {
	defer e.wg.Done()
	clk := e.cfg.Clock
	began := clk.Now()
	var err error
	for round := 1; ; round++ {
		err = e.stopOnce()
		if !IsStillStopping(err) || round >= maxStopRounds || e.isClosed() {
			break
		}
		// The host still stops it (an engine draining builds): it is
		// billed until it has stopped, and cannot be started before, so
		// it stays Stopping and a new connection waits for the stop.
		e.cfg.Log.Info("engine still stopping on its host; waiting again", "engine", e.cfg.ID, "round", round,
			"stop_ms", clk.Now().Sub(began).Milliseconds(), "reason", err)
	}
	took := clk.Now().Sub(began)
	e.mu.Lock()
	e.stopped = nil
	switch {
	case IsBusy(err) && addr != "":
		// The host decided too (it asked the engine under its own lock) and
		// found it in use: the machine runs on and bills. Keep serving it
		// here, and ask again after another idle period.
		e.cfg.Log.Info("engine not stopped: another gateway's clients use it; keeping it", "engine", e.cfg.ID,
			"stop_ms", took.Milliseconds(), "reason", err)
		e.setStateLocked(Running)
		e.addr = addr
		if e.conns == 0 && !e.closed {
			e.armIdleLocked()
		}
	case IsStillStopping(err):
		// Given up waiting (the gateway is shutting down, or the host has
		// stopped it for longer than any kill timeout): the next wake's
		// start waits for the host's stop itself.
		e.cfg.Log.Warn("engine still stopping on its host; no longer waiting for it here", "engine", e.cfg.ID,
			"stop_ms", took.Milliseconds(), "reason", err)
		e.setStateLocked(Stopped)
	case err != nil:
		e.cfg.Log.Error("engine stop failed", "engine", e.cfg.ID, "stop_ms", took.Milliseconds(), "err", err)
		e.setStateLocked(Stopped)
	default:
		e.cfg.Log.Info("engine stopped", "engine", e.cfg.ID, "stop_ms", took.Milliseconds())
		e.setStateLocked(Stopped)
	}
	if g := e.rewake; g > 0 {
		// A pre-wake came while it stopped: wake it again now (or, kept
		// running, hold it).
		e.rewake = 0
		if !e.closed {
			e.prewakeLocked(g)
		}
	}
	e.mu.Unlock()
	e.cfg.Clock.Close(done)
}

// maxStopRounds bounds how often a stop the host still carries out is
// waited for again (each round at most StopTimeout): ten rounds of the
// default minute outlast Fly's longest kill timeout (5 minutes) and its
// "stuck" threshold for a stopping machine.
const maxStopRounds = 10

// stopOnce asks the host to stop the engine, within StopTimeout.
func (e *Engine) stopOnce() error {
	// Not e.ctx: a gateway shutting down still stops its engines cleanly.
	ctx, cancel := context.WithCancelCause(context.Background())
	t := e.cfg.Clock.AfterFunc(e.cfg.StopTimeout, func() { cancel(context.DeadlineExceeded) })
	err := e.cfg.Provider.Stop(ctx, e.cfg.ID)
	t.Stop()
	cancel(nil)
	return err
}

func (e *Engine) isClosed() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.closed
}

// Close abandons a wake in progress, stops the engine if it runs, and
// waits for that. Leases still held keep their connections; no new ones are
// granted. Safe to call twice.
func (e *Engine) Close() {
	e.mu.Lock()
	if !e.closed {
		e.closed = true
		e.cancel()
		e.cancelIdleLocked()
		if e.state == Running {
			e.beginStopLocked()
		}
	}
	e.mu.Unlock()
	e.wg.Wait()
}

// EngineStatus is a snapshot for the admin endpoint, metrics and tests.
type EngineStatus struct {
	ID             string  `json:"id"`
	State          State   `json:"state"`
	Conns          int     `json:"connections"`
	Sessions       int     `json:"sessions"`
	Wakes          int     `json:"wakes"`
	LastWake       int64   `json:"last_wake_ms"`
	MachineSeconds float64 `json:"machine_seconds"`
	// WakeHistogram counts wakes per bucket of WakeBuckets, the last
	// bucket being longer than all of them.
	WakeHistogram []int `json:"wake_histogram"`
	// WakeSeconds is the sum of the wakes' times (the histogram's _sum).
	WakeSeconds float64 `json:"wake_seconds"`
	// Prewakes counts the wakes pre-wakes began; PrewakesUnused the stops
	// of an engine that pre-wakes had woken or kept, no connection having
	// come; PrewakeSeconds the machine time pre-wakes added before a
	// connection came or the engine stopped.
	Prewakes       int     `json:"prewakes"`
	PrewakesUnused int     `json:"prewakes_unused"`
	PrewakeSeconds float64 `json:"prewake_machine_seconds"`
	// CPUs is the engine's size as last reported (0 unknown); SoftLimit
	// the sessions it takes before clients go elsewhere.
	CPUs      int `json:"cpus,omitempty"`
	SoftLimit int `json:"soft_limit"`
	// UpSince is when the engine's machine last left Stopped; zero while
	// stopped.
	UpSince time.Time `json:"up_since,omitzero"`
	// CacheBytes is a running engine's build cache as it reports it, and
	// CacheError why it could not; only the admin /status asks (see
	// AdminOptions.Cache).
	CacheBytes int64  `json:"cache_bytes,omitempty"`
	CacheError string `json:"cache_error,omitempty"`
}

// Status reports the engine's current state.
func (e *Engine) Status() EngineStatus {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.cfg.Clock.Now()
	billed := e.upTotal
	if e.state != Stopped {
		billed += now.Sub(e.up)
	}
	pre := e.prewakeCost
	if !e.prewakeFrom.IsZero() && now.After(e.prewakeFrom) {
		pre += now.Sub(e.prewakeFrom)
	}
	var since time.Time
	if e.state != Stopped {
		since = e.up
	}
	return EngineStatus{ID: e.cfg.ID, UpSince: since, State: e.state, Conns: e.conns, Wakes: e.wakes, LastWake: e.lastWake.Milliseconds(),
		MachineSeconds: billed.Seconds(), WakeHistogram: append([]int(nil), e.wakeHist[:]...), WakeSeconds: e.wakeSum.Seconds(),
		Prewakes: e.prewakes, PrewakesUnused: e.unusedStops, PrewakeSeconds: pre.Seconds(), CPUs: e.CPUs()}
}
