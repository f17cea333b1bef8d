package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wakegate/wakegate/certs"
	"github.com/wakegate/wakegate/engine"
	"github.com/wakegate/wakegate/gateway"
	"github.com/wakegate/wakegate/identity"
)

// readyCheckEvery is how long a provider's answer stands for /readyz: a
// monitor polling every few seconds must not become a stream of Machines
// API calls.
const readyCheckEvery = 15 * time.Second

// opsView is what the admin endpoint learns from the gateway's wiring
// rather than from its pool: the certificates, whether the client listener
// is up, whether the provider answers, and the provider's API calls.
type opsView struct {
	ca       *certs.CA
	cert     func() *tls.Certificate // the gateway's serving certificate
	provider gateway.Provider
	pool     *gateway.Pool
	// engineCerts, if set, is when each engine's certificate last seen by
	// the gateway's engine client expires, by common name
	// (engine.Client.EngineCerts).
	engineCerts func() map[string]time.Time
	// cache, if set, asks a running engine for its cache usage (/status).
	cache     gateway.CacheUsage
	listening atomic.Bool            // the mTLS listener accepts
	apiCalls  *prometheus.CounterVec // provider API requests by method and status

	mu      sync.Mutex // guards checked and lastErr
	checked time.Time  // when the provider last answered or failed
	lastErr error
}

func newOpsView(ca *certs.CA, cert func() *tls.Certificate) *opsView {
	return &opsView{ca: ca, cert: cert, apiCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "wakegate_provider_api_requests_total",
		Help: "Requests to the machine host's API (Fly Machines), each retry one, by method and the status answered (0: none).",
	}, []string{"method", "status"})}
}

// observe counts one provider API request (fly.Config's Observe).
func (o *opsView) observe(method string, status int) {
	o.apiCalls.WithLabelValues(method, strconv.Itoa(status)).Inc()
}

// attach registers the view's metrics in the pool's registry.
func (o *opsView) attach(pool *gateway.Pool, provider gateway.Provider) error {
	o.provider, o.pool = provider, pool
	if err := pool.Registry().Register(o.apiCalls); err != nil {
		return err
	}
	return pool.WatchCertificates(o.certs)
}

// certs are the gateway's certificates and when they expire.
func (o *opsView) certs() []gateway.CertExpiry {
	var out []gateway.CertExpiry
	if c := o.cert(); c != nil && c.Leaf != nil {
		out = append(out, gateway.CertExpiry{Name: "gateway", NotAfter: c.Leaf.NotAfter})
	}
	if o.ca.Intermediate != nil {
		out = append(out, gateway.CertExpiry{Name: "ca_intermediate", NotAfter: o.ca.Intermediate.NotAfter})
	}
	if o.ca.Root != nil {
		out = append(out, gateway.CertExpiry{Name: "ca_root", NotAfter: o.ca.Root.NotAfter})
	}
	if o.engineCerts != nil && o.pool != nil {
		seen := o.engineCerts()
		for _, e := range o.pool.Engines() {
			if at, ok := seen[identity.EngineName(e.ID())]; ok {
				out = append(out, gateway.CertExpiry{Name: "engine:" + e.ID(), NotAfter: at})
			}
		}
	}
	return out
}

// ready is nil when the gateway can take clients: its CA and certificate
// loaded and current, its listener accepting, its provider answering.
func (o *opsView) ready() error {
	c := o.cert()
	switch {
	case o.ca == nil || o.ca.Root == nil:
		return errors.New("the CA is not loaded")
	case c == nil || c.Leaf == nil:
		return errors.New("the gateway has no certificate")
	case time.Now().After(c.Leaf.NotAfter):
		return fmt.Errorf("the gateway's certificate expired at %s", c.Leaf.NotAfter.UTC().Format(time.RFC3339))
	case !o.listening.Load():
		return errors.New("the client listener is not accepting")
	}
	return o.providerAnswers()
}

// providerAnswers asks the provider for its engines at most once per
// readyCheckEvery, and says whether it last answered.
func (o *opsView) providerAnswers() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.provider == nil {
		return errors.New("no provider yet")
	}
	if time.Since(o.checked) < readyCheckEvery {
		return o.lastErr
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := o.provider.Engines(ctx)
	o.checked = time.Now()
	o.lastErr = nil
	if err != nil {
		o.lastErr = fmt.Errorf("the provider does not answer: %w", err)
	}
	return o.lastErr
}

// admin is the admin endpoint's handler with the view's options.
func (o *opsView) admin(rt *routing) gateway.AdminOptions {
	return gateway.AdminOptions{Ready: o.ready, Identities: rt.srv.Identities, Certs: o.certs, Cache: o.cache}
}

// cacheUsage asks an engine through the gateway's engine client for its
// build cache's size (BuildKit's DiskUsage, run on the engine's side).
func cacheUsage(ec *engine.Client) gateway.CacheUsage {
	return func(ctx context.Context, addr string) (int64, error) {
		s, err := ec.Status(ctx, addr)
		if err == nil && !s.Ready {
			err = fmt.Errorf("the engine cannot tell: %s", s.Error)
		}
		return s.CacheBytes, err
	}
}
