package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
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
	w      *policy.Watcher
	issuer string // the OIDC issuer trusted now
}

func loadPolicy(path, issuer string, log *slog.Logger) (*gatewayPolicy, error) {
	if path == "" {
		log.Info("no --policy: OIDC enrolment is off; every client certificate of the CA is let in")
		return &gatewayPolicy{issuer: issuer}, nil
	}
	w, err := policy.NewWatcher(path, log)
	if err != nil {
		return nil, err
	}
	return &gatewayPolicy{w: w, issuer: issuer}, nil
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

// allow judges a client at its handshake. A job enrolled through an
// issuer the gateway no longer trusts (--oidc-issuer changed) is refused
// too: its claims were vouched for by that issuer.
func (p *gatewayPolicy) allow(peer identity.Peer) error {
	if c := peer.OIDC; c != nil && strings.TrimSuffix(c.Issuer, "/") != strings.TrimSuffix(p.issuer, "/") {
		return fmt.Errorf("the certificate of repository %s was enrolled with OIDC issuer %s; this gateway trusts only %s", c.Repository, c.Issuer, p.issuer)
	}
	return p.current().Allow(peer)
}

func (p *gatewayPolicy) allowClaims(c identity.Claims) error { return p.current().AllowClaims(c) }

// run reloads the policy file when it changes, until ctx ends.
func (p *gatewayPolicy) run(ctx context.Context) {
	if p.w != nil {
		p.w.Run(ctx, policyReloadEvery)
	}
}
