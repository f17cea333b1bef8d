package fly

import (
	"context"
	"errors"
	"fmt"
	"time"

	fly "github.com/superfly/fly-go"
)

// ErrBusy says a stop was skipped because the engine is in use. It says so
// to the gateway too (EngineBusy, gateway.IsBusy), which keeps the engine
// running and counted rather than taking the refusal for a failed stop.
var ErrBusy error = busyError{}

// busyError is ErrBusy's type: fly must not import gateway, so it meets
// the gateway's optional interface structurally.
type busyError struct{}

func (busyError) Error() string    { return "engine in use" }
func (busyError) EngineBusy() bool { return true }

// maxSuspendMB is the most memory a machine Fly suspends may have
// (https://fly.io/docs/reference/suspend-resume/#requirements).
const maxSuspendMB = 2048

// Stop stops (or suspends) the machine under its lease, after asking the
// engine once more, under that lease, whether anyone uses it. It waits up
// to StopTimeout for Fly to finish; a machine still stopping then (its
// engine draining builds) is reported with a StoppingError: it is billed
// and cannot be started until it has stopped.
func (p *Provider) Stop(ctx context.Context, id string) error {
	for lost := 0; ; lost++ {
		err := p.stopLeased(ctx, id)
		if !errors.Is(err, errLeaseLost) || lost >= maxLeaseLosses || ctx.Err() != nil {
			return err
		}
		p.cfg.Log.Warn("machine lease lost during a stop; reading the machine again under a new lease", "machine", id)
	}
}

func (p *Provider) stopLeased(ctx context.Context, id string) error {
	l, err := p.acquire(ctx, id)
	if err != nil {
		return err
	}
	defer p.release(l, id)
	ctx = l.ctx
	for {
		m, err := p.get(ctx, id)
		if err != nil {
			return p.leaseErr(l, err)
		}
		switch m.State {
		case "started":
			err = p.stopStarted(ctx, l, m)
			if err == nil || !errors.Is(err, errRetry) {
				return p.leaseErr(l, err)
			}
		case "starting", "replacing", "updating", "restarting", "creating":
			// A start that landed is still booting (a wake abandoned after
			// its start request, e.g. by a gateway shutting down): it will
			// be "started" shortly, so skipping the stop would leave it
			// running with no gateway that knows about it.
			wctx, cancel := context.WithTimeout(ctx, p.cfg.StartTimeout)
			err = p.waitFor(wctx, id, "settled")
			cancel()
			if err != nil {
				return fmt.Errorf("stop machine %s: it was %s and did not settle within %s: %w", id, m.State, p.cfg.StartTimeout, p.leaseErr(l, err))
			}
		case "stopping", "suspending":
			return p.leaseErr(l, p.waitStopped(ctx, id, m.State))
		default: // stopped, suspended, created, failed, destroyed: nothing runs
			return nil
		}
		if err := pause(ctx, 200*time.Millisecond); err != nil {
			return p.leaseErr(l, err)
		}
	}
}

// stopStarted asks the engine, then stops or suspends the machine.
func (p *Provider) stopStarted(ctx context.Context, l *lease, m *fly.Machine) error {
	answered := p.cfg.Busy == nil
	if p.cfg.Busy != nil {
		if addr, err := p.addr(m); err == nil {
			bctx, cancel := p.call(ctx)
			busy, err := p.cfg.Busy(bctx, addr)
			cancel()
			if err == nil && busy {
				return fmt.Errorf("stop machine %s: %w (another gateway's clients)", m.ID, ErrBusy)
			}
			answered = err == nil
		}
	}
	suspend := p.cfg.Suspend
	if suspend {
		switch why := unsuspendable(m); {
		case why != "":
			p.cfg.Log.Warn("stopping machine instead of suspending it: "+why, "machine", m.ID)
			suspend = false
		case !answered:
			p.cfg.Log.Warn("stopping machine instead of suspending it: its engine did not answer, so its snapshot would not serve", "machine", m.ID)
			suspend = false
		}
	}
	cctx, cancel := p.call(ctx)
	var err error
	via := "stopping"
	if suspend {
		via = "suspending"
		err = p.flaps.Suspend(cctx, p.cfg.App, m.ID, l.nonce)
	} else {
		err = p.flaps.Stop(cctx, p.cfg.App, fly.StopMachineInput{ID: m.ID, Signal: "SIGTERM"}, l.nonce)
	}
	if err != nil {
		err = p.refused(cctx, via[:len(via)-3], m.ID, err)
	}
	cancel()
	if err != nil {
		return err
	}
	if suspend {
		p.mu.Lock()
		p.suspendedAt[m.ID] = time.Now()
		p.mu.Unlock()
	}
	return p.waitStopped(ctx, m.ID, via)
}

// unsuspendable says why Fly cannot suspend the machine, or "".
func unsuspendable(m *fly.Machine) string {
	switch c := m.Config; {
	case c == nil:
		return ""
	case c.Guest != nil && c.Guest.MemoryMB > maxSuspendMB:
		return fmt.Sprintf("it has %d MB of memory, more than the %d MB Fly suspends ('wakegate fly init --suspend' sizes machines for it)", c.Guest.MemoryMB, maxSuspendMB)
	case c.Schedule != "":
		return "it has a schedule"
	}
	return ""
}

// waitStopped waits up to StopTimeout for a machine that is stopping or
// suspending to be done.
func (p *Provider) waitStopped(ctx context.Context, id, via string) error {
	final := "stopped"
	if via == "suspending" {
		final = "suspended"
	}
	wctx, cancel := context.WithTimeout(ctx, p.cfg.StopTimeout)
	defer cancel()
	err := p.waitFor(wctx, id, final)
	if err == nil || errors.Is(context.Cause(ctx), errLeaseLost) {
		return err
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return &StoppingError{Machine: id, State: via}
	}
	return err
}
