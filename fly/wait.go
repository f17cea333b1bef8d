package fly

import (
	"context"
	"errors"
	"fmt"
	"github.com/wakegate/wakegate/internal/ctxwait"
	"net/http"
	"time"

	"github.com/superfly/fly-go/flaps"
)

// maxWait is the longest single wait Fly serves: the /wait long poll is
// capped at 60 s (fly-go flaps/flaps_machines_wait.go clamps it to 1–60 s;
// https://fly.io/docs/machines/api/machines-resource/#wait-for-a-machine-to-reach-a-specified-state).
const maxWait = 60 * time.Second

// waitFor waits until machine id is in one of states ("settled": any
// persistent state), for as long as ctx allows: a bound longer than Fly's
// 60 s cap is served by waiting again, as flyctl's WaitForStartOrStop
// loops (internal/machine/wait.go). A 408 (the wait ran out) or a failure
// the retry layer gave up on is waited again after a pause; a 404 or 400
// ends it.
func (p *Provider) waitFor(ctx context.Context, id string, states ...string) error {
	for {
		d := maxWait
		if dl, ok := ctx.Deadline(); ok {
			d = min(d, time.Until(dl))
		}
		if d <= 0 {
			return fmt.Errorf("machine %s not %v: %w", id, states, context.DeadlineExceeded)
		}
		// The request outlives the poll by a call's bound; ctx still
		// ends it at the caller's deadline.
		wctx, cancel := context.WithTimeout(ctx, max(d, time.Second)+p.cfg.CallTimeout)
		err := p.flaps.Wait(wctx, p.cfg.App, id, flaps.WithWaitStates(states...), flaps.WithWaitTimeout(d))
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("machine %s not %v: %w", id, states, context.Cause(ctx))
		}
		var fe *flaps.FlapsError
		if errors.As(err, &fe) && (fe.ResponseStatusCode == http.StatusNotFound || fe.ResponseStatusCode == http.StatusBadRequest) {
			return fmt.Errorf("wait for machine %s: %w", id, err)
		}
		if !(errors.As(err, &fe) && fe.ResponseStatusCode == http.StatusRequestTimeout) {
			p.cfg.Log.Warn("waiting for machine failed; waiting again", "machine", id, "states", states, "err", err)
			if err := pause(ctx, 500*time.Millisecond); err != nil {
				return fmt.Errorf("machine %s not %v: %w", id, states, context.Cause(ctx))
			}
		}
	}
}

// pause waits d, or until ctx ends (ctxwait.Sleep).
func pause(ctx context.Context, d time.Duration) error { return ctxwait.Sleep(ctx, d) }
