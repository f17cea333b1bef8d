package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/wakegate/wakegate/identity"
	"github.com/wakegate/wakegate/policy"
)

// policyReloadEvery is how often the gateway looks for a changed policy
// file: a certificate issued before a change is refused after it.
const policyReloadEvery = 2 * time.Second

// gatewayPolicy is the gateway's --policy, or its absence (w nil): named
// certificates let in, OIDC enrolment off.
type gatewayPolicy struct {
	w *policy.Watcher
}

func loadPolicy(path string, log *slog.Logger) (*gatewayPolicy, error) {
	if path == "" {
		log.Info("no --policy: OIDC enrolment is off; every client certificate of the CA is let in")
		return &gatewayPolicy{}, nil
	}
	w, err := policy.NewWatcher(path, log)
	if err != nil {
		return nil, err
	}
	return &gatewayPolicy{w: w}, nil
}

func (p *gatewayPolicy) current() *policy.Policy {
	if p.w == nil {
		return nil
	}
	return p.w.Current()
}

// enabled is nil when OIDC enrolment is on: there is a policy to judge by.
func (p *gatewayPolicy) enabled() error {
	if p.w == nil {
		return policy.ErrNoPolicy
	}
	return nil
}

func (p *gatewayPolicy) allow(peer identity.Peer) error { return p.current().Allow(peer) }

func (p *gatewayPolicy) allowClaims(c identity.Claims) error { return p.current().AllowClaims(c) }

// run reloads the policy file when it changes, until ctx ends.
func (p *gatewayPolicy) run(ctx context.Context) {
	if p.w != nil {
		p.w.Run(ctx, policyReloadEvery)
	}
}
