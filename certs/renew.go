package certs

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync/atomic"
	"time"
)

// RenewFunc obtains a fresh certificate to replace cur, typically through
// the CA's renew endpoint authenticated with cur itself.
type RenewFunc func(ctx context.Context, cur *tls.Certificate) (*tls.Certificate, error)

// Renewer holds the certificate a party presents and replaces it at two
// thirds of its life (less a little jitter, so a fleet does not renew in
// step), as smallstep's own renewer does. Handshakes read the current one,
// so connections already open are untouched by a swap. A failed renewal
// keeps the old certificate, retries with backoff, and logs louder as
// expiry nears.
type Renewer struct {
	cur   atomic.Pointer[held]
	renew RenewFunc
	log   *slog.Logger
	name  string
	// renewed counts successful renewals (for tests and status).
	renewed atomic.Int64
}

// held is a certificate and when this process got it. Lifetimes count from
// then, not from NotBefore: the CA backdates NotBefore to absorb clock skew,
// which would otherwise make a short-lived certificate look due at once.
type held struct {
	cert *tls.Certificate
	got  time.Time
	// replaced is closed when a renewal replaces this certificate, so
	// that a party publishing it elsewhere (an xDS server) follows.
	replaced chan struct{}
}

// NewRenewer starts from initial, whose Leaf must be set.
func NewRenewer(name string, initial *tls.Certificate, renew RenewFunc, log *slog.Logger) (*Renewer, error) {
	if initial == nil || initial.Leaf == nil {
		return nil, fmt.Errorf("renewer %s: certificate has no parsed leaf", name)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Renewer{renew: renew, log: log, name: name}
	r.cur.Store(&held{cert: initial, got: time.Now(), replaced: make(chan struct{})})
	return r, nil
}

// Current is the certificate to present now; use it from GetCertificate or
// GetClientCertificate.
func (r *Renewer) Current() *tls.Certificate { return r.cur.Load().cert }

// Changed returns a channel that is closed when a renewal replaces the
// certificate Current returns now. Call it before Current to miss nothing.
func (r *Renewer) Changed() <-chan struct{} { return r.cur.Load().replaced }

// Renewals is how many times the certificate has been replaced.
func (r *Renewer) Renewals() int64 { return r.renewed.Load() }

// renewAt is when a certificate held since got and valid until notAfter is
// due: two thirds of the way, less up to a twentieth as jitter.
func renewAt(got, notAfter time.Time) time.Time {
	life := max(notAfter.Sub(got), 0)
	jitter := time.Duration(rand.Int64N(int64(life/20) + 1))
	return got.Add(life*2/3 - jitter)
}

// Run renews until ctx ends.
func (r *Renewer) Run(ctx context.Context) {
	for {
		h := r.cur.Load()
		wait := time.Until(renewAt(h.got, h.cert.Leaf.NotAfter))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if !r.renewOnce(ctx) {
			return
		}
	}
}

// renewOnce retries until a renewal succeeds (true) or ctx ends (false).
func (r *Renewer) renewOnce(ctx context.Context) bool {
	backoff := time.Second
	for attempt := 1; ; attempt++ {
		h := r.cur.Load()
		cur := h.cert
		next, err := r.renew(ctx, cur)
		if err == nil && (next == nil || next.Leaf == nil) {
			err = fmt.Errorf("renewal returned no parsed certificate")
		}
		if err == nil {
			r.cur.Store(&held{cert: next, got: time.Now(), replaced: make(chan struct{})})
			close(h.replaced)
			r.renewed.Add(1)
			r.log.Info("certificate renewed", "cert", r.name, "serial", next.Leaf.SerialNumber.String(),
				"not_after", next.Leaf.NotAfter.UTC().Format(time.RFC3339))
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		left := time.Until(cur.Leaf.NotAfter)
		life := cur.Leaf.NotAfter.Sub(h.got)
		attrs := []any{"cert", r.name, "attempt", attempt, "expires_in", left.Round(time.Second).String(), "err", err}
		switch {
		case left <= 0:
			r.log.Error("certificate EXPIRED and renewal keeps failing: connections will be refused until it is renewed or reissued", attrs...)
		case left < life/6:
			r.log.Error("certificate renewal keeps failing and expiry is near", attrs...)
		default:
			r.log.Warn("certificate renewal failed, retrying", attrs...)
		}
		// Retry at least a few times before expiry, however short the life.
		pause := min(backoff, max(life/30, 100*time.Millisecond))
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return false
		case <-t.C:
		}
		backoff = min(2*backoff, time.Minute)
	}
}
