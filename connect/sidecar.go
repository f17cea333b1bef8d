package connect

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/wakegate/wakegate/proxy"
	"github.com/wakegate/wakegate/wire"
)

// Config configures a Sidecar.
type Config struct {
	// Gateways are the gateway's addresses, HOST:PORT each (see
	// ParseGateways): several gateways serving one pool, or one name with
	// several addresses. Each connection tries them from the last one that
	// worked.
	Gateways []string
	// TLS is the client TLS config (certs.ClientTLS); the sidecar sets ALPN,
	// and, when ServerName is empty, each gateway's host as the name to
	// verify.
	TLS *tls.Config
	// DialTimeout bounds the TCP connect and TLS handshake to one gateway
	// address.
	DialTimeout time.Duration
	// HalfOpenTimeout reaps a proxied pair after one side finished.
	HalfOpenTimeout time.Duration
	// LookupHost resolves a gateway's host name to its addresses; nil is
	// the system's resolver.
	LookupHost func(ctx context.Context, host string) ([]string, error)
	// Ahead is how many connections to the gateway are kept open ahead of
	// need (spares; see spares), so that a new local connection skips the
	// TLS handshake; 0 opens each on demand.
	Ahead int
	Log   *slog.Logger
}

// Sidecar proxies local plain connections (TCP or a unix socket, see
// Listen) to the gateway over mTLS.
type Sidecar struct {
	cfg  Config
	gws  *failover     // which gateway address connections go through
	life *proxy.Server // accept loops, handlers, drain and force

	spares     *spares // nil without Config.Ahead
	startAhead sync.Once
	stopAhead  context.CancelFunc // ends spares.run; set by startAhead
	aheadDone  chan struct{}      // closed when spares.run returned
}

// ErrServerClosed is returned by Serve after Shutdown (the lifecycle the
// gateway shares).
var ErrServerClosed = proxy.ErrServerClosed

// New validates cfg.
func New(cfg Config) (*Sidecar, error) {
	if len(cfg.Gateways) == 0 {
		return nil, errors.New("connect: no gateway address (--gateway HOST:PORT)")
	}
	for _, g := range cfg.Gateways {
		if err := checkGateway(g); err != nil {
			return nil, fmt.Errorf("connect: %w", err)
		}
	}
	if cfg.TLS == nil {
		return nil, errors.New("connect: no TLS credentials")
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 15 * time.Second
	}
	if cfg.LookupHost == nil {
		cfg.LookupHost = net.DefaultResolver.LookupHost
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	s := &Sidecar{cfg: cfg, gws: &failover{gateways: slices.Clone(cfg.Gateways), lookup: cfg.LookupHost, log: cfg.Log}}
	s.life = proxy.NewServer(s.handle, cfg.Log)
	if cfg.Ahead > 0 {
		s.spares = newSpares(cfg.Ahead, cfg.TLS.ClientSessionCache, func(ctx context.Context, cache tls.ClientSessionCache) (*tls.Conn, endpoint, error) {
			t := cfg.TLS.Clone()
			t.ClientSessionCache = cache
			return s.gws.dial(ctx, func(ctx context.Context, ep endpoint) (*tls.Conn, error) {
				return dialTLS(ctx, t, wire.ProtoAhead, s.cfg.DialTimeout, ep)
			})
		}, cfg.Log)
		if get := cfg.TLS.GetClientCertificate; get != nil {
			s.spares.current = func() *tls.Certificate {
				c, _ := get(&tls.CertificateRequestInfo{})
				return c
			}
		}
	}
	return s, nil
}

// runSpares starts making connections ahead of need, once, unless Shutdown
// came first.
func (s *Sidecar) runSpares() {
	if s.spares == nil {
		return
	}
	s.startAhead.Do(func() {
		ctx, cancel := context.WithCancel(s.life.Context())
		s.stopAhead, s.aheadDone = cancel, make(chan struct{})
		go func() {
			defer close(s.aheadDone)
			s.spares.run(ctx)
		}()
	})
}

// dial opens an mTLS connection speaking proto to one of the gateway's
// addresses (see failover.dial), and says which.
func (s *Sidecar) dial(ctx context.Context, proto string) (*tls.Conn, endpoint, error) {
	return s.gws.dial(ctx, func(ctx context.Context, ep endpoint) (*tls.Conn, error) {
		return dialTLS(ctx, s.cfg.TLS, proto, s.cfg.DialTimeout, ep)
	})
}

// Serve accepts local connections on ln and proxies each to the gateway
// until Shutdown, then returns ErrServerClosed.
func (s *Sidecar) Serve(ln net.Listener) error {
	s.runSpares()
	if err := s.life.Serve(ln); !errors.Is(err, ErrServerClosed) {
		return fmt.Errorf("connect: %w", err)
	}
	return ErrServerClosed
}

// handle carries one local connection to the gateway; ctx is cancelled
// when Shutdown stops waiting for it.
func (s *Sidecar) handle(ctx context.Context, c net.Conn) {
	began := time.Now()
	gc, ep, ahead := s.takeSpare()
	var err error
	if !ahead {
		gc, ep, err = s.dial(ctx, wire.ProtoProxy)
	}
	if err != nil {
		c.Close()
		msg := "connection closed: gateway unreachable"
		if errors.Is(err, ErrRefused) {
			msg = "connection closed: gateway refused"
		}
		s.cfg.Log.Error(msg, "err", err)
		return
	}
	var gw net.Conn = gc
	if ahead {
		gw = newAheadStream(gc, func() (net.Conn, error) {
			nc, nep, err := s.dial(ctx, wire.ProtoProxy)
			ep = nep
			return nc, err
		}, s.spares.refillSoon) // replaced once under way (aheadStream.underway)
	}
	res := proxy.Join(ctx, c, gw, "local", "gateway", s.cfg.HalfOpenTimeout)
	attrs := []any{"gateway", ep.String(), "made_ahead", ahead, "bytes_out", res.BytesAToB, "bytes_in", res.BytesBToA, "duration_ms", time.Since(began).Milliseconds()}
	if res.Err != nil {
		s.cfg.Log.Warn("connection closed", append(attrs, "err", res.Err)...)
		return
	}
	s.cfg.Log.Debug("connection closed", attrs...)
}

// takeSpare is a connection made ahead of need, if one is ready.
func (s *Sidecar) takeSpare() (*tls.Conn, endpoint, bool) {
	if s.spares == nil {
		return nil, endpoint{}, false
	}
	return s.spares.take()
}

// Shutdown stops accepting, lets open connections finish until ctx ends,
// then closes them and waits for their handlers. Safe to call twice.
func (s *Sidecar) Shutdown(ctx context.Context) error {
	s.startAhead.Do(func() {}) // none start after this
	if s.stopAhead != nil {
		s.stopAhead()
		<-s.aheadDone // it closes the spares it holds
	}
	if err := s.life.Shutdown(ctx); err != nil {
		return fmt.Errorf("connect: shutdown: %w", err)
	}
	return nil
}
