package fly

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/superfly/fly-go/flaps"
)

// lease is a held machine lease. While held, a background refresh keeps
// it alive (a wake that waits out an update and a boot, or a stop that
// waits out a drain, can outlast its TTL); if the refresh finds it gone,
// ctx is cancelled with errLeaseLost.
type lease struct {
	nonce  string
	ctx    context.Context // the operation's context; ends if the lease is lost
	cancel context.CancelCauseFunc
	done   chan struct{} // closed when the refresh loop has ended
}

// acquire takes the machine's lease, waiting up to LeaseWait for another
// holder's (flaps retries a held lease for a minute; LeaseWait bounds it
// instead), and refreshes it every third of its TTL until release.
// flyctl does the same (internal/machine/leasable_machine.go,
// StartBackgroundLeaseRefresh: a refresh keeps the same nonce).
func (p *Provider) acquire(ctx context.Context, id string) (*lease, error) {
	lctx, cancel := context.WithTimeout(ctx, p.cfg.LeaseWait)
	defer cancel()
	ttl := int(p.cfg.LeaseTTL.Seconds())
	l, err := p.flaps.AcquireLease(lctx, p.cfg.App, id, &ttl)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("lease machine %s: %w", id, context.Cause(ctx))
		}
		return nil, fmt.Errorf("lease machine %s: another gateway holds it (waited %s; it expires within %s if its holder died): %w", id, p.cfg.LeaseWait, p.cfg.LeaseTTL, err)
	}
	if l.Data == nil || l.Data.Nonce == "" {
		return nil, fmt.Errorf("lease machine %s: the API returned no nonce", id)
	}
	opCtx, opCancel := context.WithCancelCause(ctx)
	ls := &lease{nonce: l.Data.Nonce, ctx: opCtx, cancel: opCancel, done: make(chan struct{})}
	go p.refresh(ls, id)
	return ls, nil
}

func (p *Provider) refresh(l *lease, id string) {
	defer close(l.done)
	ttl := int(p.cfg.LeaseTTL.Seconds())
	every := p.cfg.LeaseTTL / 3
	for {
		if pause(l.ctx, every) != nil {
			return
		}
		rctx, cancel := context.WithTimeout(l.ctx, p.cfg.CallTimeout)
		r, err := p.flaps.RefreshLease(rctx, p.cfg.App, id, &ttl, l.nonce)
		cancel()
		switch kind, _ := classify(err); {
		case l.ctx.Err() != nil:
			return
		case err == nil && r.Data != nil && r.Data.Nonce != l.nonce:
			l.cancel(errLeaseLost)
			return
		case kind == leaseRefusal:
			p.cfg.Log.Warn("machine lease lost: it expired and another holder took it", "machine", id, "err", err)
			l.cancel(errLeaseLost)
			return
		case err != nil:
			// A 5xx or a timeout: the lease still has two thirds of its
			// TTL; the next refresh may pass.
			p.cfg.Log.Warn("refresh of machine lease failed; retrying", "machine", id, "err", err)
		}
	}
}

// lost says whether the operation ended because the lease was lost, or
// err is the API saying so.
func (l *lease) lost(err error) bool {
	if errors.Is(context.Cause(l.ctx), errLeaseLost) {
		return true
	}
	kind, _ := classify(err)
	return kind == leaseRefusal
}

// release stops refreshing and gives the lease back, under its own bound:
// the caller's context may be the one that ended.
func (p *Provider) release(l *lease, id string) {
	l.cancel(context.Canceled)
	<-l.done
	rctx, cancel := context.WithTimeout(context.Background(), p.cfg.CallTimeout)
	defer cancel()
	if err := p.flaps.ReleaseLease(rctx, p.cfg.App, id, l.nonce); err != nil {
		var fe *flaps.FlapsError
		if kind, _ := classify(err); kind == leaseRefusal || errors.As(err, &fe) && fe.ResponseStatusCode == http.StatusNotFound {
			return // expired, or already someone else's
		}
		p.cfg.Log.Warn("release machine lease failed; it expires on its own", "machine", id, "ttl", p.cfg.LeaseTTL.String(), "err", err)
	}
}
