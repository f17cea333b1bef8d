package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/wakegate/wakegate/engine"
	"github.com/wakegate/wakegate/gateway"
	"github.com/wakegate/wakegate/identity"
	"github.com/wakegate/wakegate/internal/memtrim"
)

// shutdownGrace bounds how long open connections may drain at shutdown.
const shutdownGrace = 10 * time.Second

// routing is the gateway's core: the pool that places, wakes and stops
// engines, and the server that accepts clients and proxies them.
type routing struct {
	pool *gateway.Pool
	srv  *gateway.Server
}

// newRouting builds the pool and the server around the one engine client:
// it probes every wake (Probe), asks an idle engine whether anyone still
// uses it before stopping it (BeforeStop) and dials every proxied stream
// (Dial), and ahead of need (DialAhead, --engine-ahead). The pool's engines are warmed up (--min-running) before it
// returns.
func (f *gatewayFlags) newRouting(ctx context.Context, provider gateway.Provider, ec *engine.Client, tlsCfg *tls.Config, authorize func(identity.Peer) error, log *slog.Logger) (*routing, error) {
	pool, err := gateway.NewPoolWithPolicy(ctx, provider, gateway.EngineConfig{
		Probe:       ec.Ready,
		BeforeStop:  ec.Busy,
		CPUs:        engineCPUs(ec), // --soft-limit auto (gatewaysize.go)
		Idle:        f.pool.idle,
		WakeTimeout: f.pool.wakeTimeout,
		Log:         log,
	}, f.pool.policy())
	if err != nil {
		return nil, err
	}
	pool.WarmUp(ctx, log)
	srv, err := gateway.NewServer(gateway.Config{
		TLS:  tlsCfg,
		Pool: pool,
		Dial: ec.Dial,
		DialAhead: func(ctx context.Context, addr string) (gateway.EngineSpare, error) {
			s, err := ec.DialAhead(ctx, addr)
			if err != nil {
				return nil, err
			}
			return s, nil
		},
		EngineAhead:  f.front.engineAhead,
		EarlyStreams: ec.TakesEarlyStreams,
		// A held connection may wait out a stop, then a whole wake.
		HoldTimeout:         f.pool.wakeTimeout + time.Minute,
		Authorize:           authorize,
		MaxConnsPerIdentity: f.front.maxConnsPerIdentity,
		Log:                 log,
	})
	if err != nil {
		pool.Close()
		return nil, err
	}
	return &routing{pool: pool, srv: srv}, nil
}

// serve serves clients on --listen and the admin endpoint on --admin until
// ctx ends or either stops, then shuts both down and stops the engines.
func (f *gatewayFlags) serve(ctx context.Context, rt *routing, ops *opsView, log *slog.Logger) error {
	ln, err := net.Listen("tcp", f.front.listen)
	if err != nil {
		return fmt.Errorf("gateway: listen on %s: %w", f.front.listen, err)
	}
	fingerprint := ops.ca.Fingerprint()
	var admin *http.Server
	var aln net.Listener
	if f.front.admin != "" {
		if aln, err = net.Listen("tcp", f.front.admin); err != nil {
			ln.Close()
			return fmt.Errorf("gateway: admin listen on %s: %w", f.front.admin, err)
		}
		admin = &http.Server{Handler: gateway.NewAdminHandler(rt.pool, ops.admin(rt)), ReadHeaderTimeout: 5 * time.Second}
	}

	defer memtrim.Start(ctx, memtrim.Config{Log: log})() // returns memory after bursts of new connections
	errc := make(chan error, 2)
	servers := 1
	go func() { errc <- rt.srv.Serve(ln) }()
	ops.listening.Store(true) // the listener is bound; Serve accepts from its backlog
	if admin != nil {
		servers++
		go func() { errc <- admin.Serve(aln) }()
		log.Info("admin listening", "addr", aln.Addr().String())
	}
	// The pool's own count: --engines sizes only local and exec pools, a Fly
	// pool is what fly init made.
	log.Info("gateway listening", "addr", ln.Addr().String(), "engines", len(rt.pool.Engines()), "provider", f.host.provider,
		"idle", f.pool.idle.String(), "wake_timeout", f.pool.wakeTimeout.String(), "ca_fingerprint", fingerprint)

	var serveErr error
	select {
	case <-ctx.Done():
		log.Info("gateway shutting down")
	case serveErr = <-errc:
		servers--
		log.Error("gateway stopped serving", "err", serveErr)
	}
	ops.listening.Store(false)
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	if admin != nil {
		admin.Shutdown(sctx)
	}
	if err := rt.srv.Shutdown(sctx); err != nil {
		log.Warn("gateway shutdown", "err", err)
	}
	for range servers {
		<-errc // every Serve has returned: both listeners are closed
	}
	rt.pool.Close()
	log.Info("gateway stopped")
	if serveErr != nil && !errors.Is(serveErr, gateway.ErrServerClosed) && !errors.Is(serveErr, http.ErrServerClosed) {
		return serveErr
	}
	return nil
}

// serverSANs names the gateway in its certificate: loopback always, the
// listen host when it is specific, and whatever the operator adds.
func serverSANs(listen, extra string) []string {
	sans := []string{"localhost", "127.0.0.1", "::1"}
	if host, _, err := net.SplitHostPort(listen); err == nil && host != "" {
		if ip := net.ParseIP(host); ip == nil || !ip.IsUnspecified() {
			sans = append(sans, host)
		}
	}
	for _, s := range strings.Split(extra, ",") {
		if s = strings.TrimSpace(s); s != "" {
			sans = append(sans, s)
		}
	}
	return sans
}
