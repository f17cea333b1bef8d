package fly

import (
	"context"
	"errors"
	"fmt"
	"time"

	fly "github.com/superfly/fly-go"
)

// maxLeaseLosses bounds how often one operation starts over after losing
// its lease to another gateway.
const maxLeaseLosses = 3

// errRetry says a step was refused because the machine is between states:
// read it again and carry on from where it is.
var errRetry = errors.New("machine between states")

// Start starts the machine from wherever it is, under its lease, and
// returns its address once it is "started". A machine still stopping (an
// engine draining) or replacing (an update) is waited for first: Fly
// refuses a start meanwhile. A cold start first gives the machine a fresh
// enrolment token (an update, which Fly applies asynchronously: the start
// waits for it to settle); a recently suspended machine is resumed as it
// is. The address is read after that, every time: it changes when Fly
// migrates the machine. "Started" is not "ready": the gateway asks the
// engine itself for that.
func (p *Provider) Start(ctx context.Context, id string) (string, error) {
	addr, _, err := p.StartFrom(ctx, id)
	return addr, err
}

// StartFrom is Start, also saying what state the machine was found in (the
// gateway's wake metrics, gateway.StartReporter): "suspended" when it was
// resumed as it was, "stopping" when a stop was waited out first, "running"
// when it was already started or starting, else "stopped" (stopped,
// created, failed, or suspended too long to resume: a cold start).
func (p *Provider) StartFrom(ctx context.Context, id string) (addr, from string, err error) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.StartTimeout)
	defer cancel()
	for lost := 0; ; lost++ {
		addr, err = p.startLeased(ctx, id, &from)
		if !errors.Is(err, errLeaseLost) || lost >= maxLeaseLosses || ctx.Err() != nil {
			if from == "" {
				from = "stopped"
			}
			return addr, from, err
		}
		p.cfg.Log.Warn("machine lease lost during a wake; reading the machine again under a new lease", "machine", id)
	}
}

// startLeased starts machine id under its lease; it sets *from, when still
// empty, to the state the wake found the machine in (see StartFrom).
func (p *Provider) startLeased(ctx context.Context, id string, from *string) (string, error) {
	l, err := p.acquire(ctx, id)
	if err != nil {
		return "", err
	}
	defer p.release(l, id)
	ctx = l.ctx
	prepared, starts := false, 0
	for {
		m, err := p.get(ctx, id)
		if err != nil {
			return "", p.leaseErr(l, err)
		}
		if *from == "" {
			switch m.State {
			case "started", "starting":
				*from = "running"
			case "stopping":
				*from = "stopping"
			case "suspended", "suspending":
				// Until it is known whether it resumes (below).
			default:
				*from = "stopped"
			}
		}
		switch m.State {
		case "started":
			p.setHealthy(id)
			p.mu.Lock()
			delete(p.suspendedAt, id)
			p.mu.Unlock()
			return p.addr(m)
		case "starting":
			err = p.waitFor(ctx, id, "started", "stopped", "failed")
		case "stopping", "replacing", "updating", "restarting", "creating":
			p.cfg.Log.Info("machine is "+m.State+"; waiting for it to settle before starting it", "machine", id)
			err = p.waitFor(ctx, id, "settled")
		case "suspended", "suspending":
			if !prepared && !p.resumable(m) {
				if *from == "" {
					*from = "stopped" // started cold, like a stopped machine
				}
				err = p.prepare(ctx, l, m)
				prepared = true
				break
			}
			p.cfg.Log.Info("resuming suspended machine", "machine", id)
			if *from == "" {
				*from = "suspended"
			}
			err = p.start(ctx, l, id)
			starts++
		case "created", "stopped", "failed":
			if starts >= 2 {
				return "", fmt.Errorf("machine %s stopped right after it started, twice: its engine exits at once; see its logs ('fly logs -a %s -i %s')", id, p.cfg.App, id)
			}
			if !prepared && p.cfg.Prepare != nil {
				err = p.prepare(ctx, l, m)
				prepared = true
				break
			}
			err = p.start(ctx, l, id)
			starts++
		default: // destroying, destroyed
			return "", fmt.Errorf("machine %s is %s: run 'wakegate fly init' to recreate the pool's missing engines", id, m.State)
		}
		if errors.Is(err, errRetry) {
			if err := pause(ctx, 200*time.Millisecond); err != nil {
				return "", p.leaseErr(l, err)
			}
			continue
		}
		if err != nil {
			return "", p.leaseErr(l, err)
		}
	}
}

// leaseErr is errLeaseLost when the lease went elsewhere meanwhile, err
// otherwise.
func (p *Provider) leaseErr(l *lease, err error) error {
	if l.lost(err) {
		return errLeaseLost
	}
	return err
}

// refused turns a refusal of call into what the wake does next.
func (p *Provider) refused(ctx context.Context, call, id string, err error) error {
	switch kind, msg := classify(err); kind {
	case stateRefusal:
		p.cfg.Log.Info("machine refused "+call+" between states; waiting for it to settle", "machine", id, "reason", msg)
		return errRetry
	case capacityRefusal:
		he := &HostError{Machine: id, Reason: msg}
		p.setUnhealthy(id, msg)
		return he
	case leaseRefusal:
		return errLeaseLost
	}
	return p.apiErr(ctx, call+" machine "+id, err)
}

func (p *Provider) start(ctx context.Context, l *lease, id string) error {
	cctx, cancel := p.call(ctx)
	defer cancel()
	if _, err := p.flaps.Start(cctx, p.cfg.App, id, l.nonce); err != nil {
		return p.refused(cctx, "start", id, err)
	}
	return nil
}

// prepare gives the machine a fresh enrolment token (and whatever else
// Prepare returns) in its environment, then waits for Fly to apply it: an
// update is answered before the machine has been replaced, and a start
// meanwhile is refused (flyctl internal/machine/update.go waits for
// "settled" after every update). On a suspended machine the update
// discards its snapshot: the next start is a cold one.
func (p *Provider) prepare(ctx context.Context, l *lease, m *fly.Machine) error {
	if m.Config == nil {
		return fmt.Errorf("machine %s has no config: run 'wakegate fly init'", m.ID)
	}
	conf := *m.Config
	conf.Env = map[string]string{}
	for k, v := range m.Config.Env {
		conf.Env[k] = v
	}
	if p.cfg.Prepare != nil {
		env, err := p.cfg.Prepare(ctx, m.ID)
		if err != nil {
			return fmt.Errorf("prepare machine %s: %w", m.ID, err)
		}
		for k, v := range env {
			conf.Env[k] = v
		}
	}
	cctx, cancel := p.call(ctx)
	_, err := p.flaps.Update(cctx, p.cfg.App, fly.LaunchMachineInput{ID: m.ID, Config: &conf, Region: m.Region, SkipLaunch: true}, l.nonce)
	if err != nil {
		err = p.refused(cctx, "update", m.ID, err)
	}
	cancel()
	if err != nil {
		return err
	}
	return p.waitFor(ctx, m.ID, "settled")
}

// resumable says whether a suspended machine may resume as it is: its
// engine's certificate must still be valid when it wakes (it renews it
// itself, but an expired one cannot be renewed). A machine that is still
// suspending was running a moment ago.
func (p *Provider) resumable(m *fly.Machine) bool {
	if m.State == "suspending" {
		return true
	}
	at, ok := p.suspendedSince(m)
	if !ok {
		p.cfg.Log.Info("suspended machine's suspension time unknown; starting it cold with a fresh token", "machine", m.ID)
		return false
	}
	if slept := time.Since(at); slept > p.cfg.ResumeWithin {
		p.cfg.Log.Info("machine suspended too long to resume (its engine's certificate may have expired); starting it cold with a fresh token",
			"machine", m.ID, "suspended_for", slept.Round(time.Second).String(), "resume_within", p.cfg.ResumeWithin.String())
		return false
	}
	return true
}

// suspendedSince is the earliest time the machine is known to have been
// suspended at: this gateway's own record, Fly's last suspend event, its
// updated_at.
func (p *Provider) suspendedSince(m *fly.Machine) (time.Time, bool) {
	var at time.Time
	earliest := func(t time.Time) {
		if !t.IsZero() && (at.IsZero() || t.Before(at)) {
			at = t
		}
	}
	p.mu.Lock()
	earliest(p.suspendedAt[m.ID])
	p.mu.Unlock()
	for _, ev := range m.Events {
		if ev != nil && ev.Status == "suspended" {
			earliest(ev.Time())
			break // newest first: the last suspension
		}
	}
	if t, err := time.Parse(time.RFC3339Nano, m.UpdatedAt); err == nil {
		earliest(t)
	}
	return at, !at.IsZero()
}
