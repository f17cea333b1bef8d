package gateway

import (
	"fmt"
	"time"
)

// DefaultPrewakeGrace is how long a pre-woken engine waits for its first
// connection: GitHub sends a job's "queued" webhook when the job is queued,
// and the job's build step connects after a runner picked it up and ran the
// steps before it — tens of seconds, minutes at a busy hour.
const DefaultPrewakeGrace = 2 * time.Minute

// Prewake wakes the engine ahead of a connection that is expected (a CI job
// queued at GitHub) and keeps it running at least grace after it is ready,
// unless a connection comes first: then that connection's lease and the
// idle period take over as usual. If none comes, the engine goes through
// the usual idle stop when grace ends (KeepWarm, then BeforeStop asking the
// engine itself whether anyone uses it). A pre-wake holds no lease and is
// no session.
//
// An engine already waking merges the pre-wake into that wake; a running
// one with no connection is kept until at least grace from now; one
// stopping is woken again once stopped. woke says whether this call began
// a wake (or one to follow the stop in progress): at most one of any number
// of pre-wakes of an engine does, until it stops again.
func (e *Engine) Prewake(grace time.Duration) (woke bool, err error) {
	if grace <= 0 {
		return false, fmt.Errorf("pre-wake engine %s: grace must be positive", e.cfg.ID)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return false, fmt.Errorf("%w: engine %s: gateway is shutting down", ErrEngineUnavailable, e.cfg.ID)
	}
	if e.state == Stopping {
		woke = e.rewake == 0
		e.rewake = max(e.rewake, grace)
		return woke, nil
	}
	return e.prewakeLocked(grace), nil
}

// prewakeLocked is Prewake for an engine not Stopping.
func (e *Engine) prewakeLocked(grace time.Duration) (woke bool) {
	now := e.cfg.Clock.Now()
	switch e.state {
	case Stopped:
		e.prewakes++
		e.unused = true
		e.prewake = grace
		e.prewakeFrom = now
		e.cfg.Log.Info("engine pre-waking", "engine", e.cfg.ID, "grace", grace.String())
		e.beginWakeLocked()
		return true
	case Starting:
		// The wake in progress may be a connection's (which will hold the
		// engine) or an earlier pre-wake's: either way, one wake.
		e.prewake = max(e.prewake, grace)
	case Running:
		if e.conns > 0 {
			return false // in use: its leases hold it
		}
		// Idle, its stop pending (or its idle check under way, which
		// re-arming makes moot): keep it at least grace from now.
		until := now.Add(grace)
		if e.idle != nil && !until.After(e.idleAt) {
			return false
		}
		if e.prewakeFrom.IsZero() {
			// Until its idle stop was due, it ran anyway; the rest is the
			// pre-wake's cost.
			e.prewakeFrom = now
			if e.idle != nil && e.idleAt.After(now) {
				e.prewakeFrom = e.idleAt
			}
		}
		e.unused = true
		e.armIdleForLocked(grace)
	}
	return false
}

// settlePrewakeLocked books the machine time a pre-wake added up to now:
// a connection came, or the engine stops.
func (e *Engine) settlePrewakeLocked() {
	if e.prewakeFrom.IsZero() {
		return
	}
	if now := e.cfg.Clock.Now(); now.After(e.prewakeFrom) {
		e.prewakeCost += now.Sub(e.prewakeFrom)
	}
	e.prewakeFrom = time.Time{}
}

// CPUs is the engine's size as last reported (by its provider, or by the
// engine itself after a wake); 0 when unknown.
func (e *Engine) CPUs() int { return int(e.cpus.Load()) }

// setCPUs records a size the provider knows.
func (e *Engine) setCPUs(n int) {
	if n > 0 {
		e.cpus.Store(int32(n))
	}
}
