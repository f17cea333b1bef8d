package connect

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/wakegate/wakegate/proxy"
	"github.com/wakegate/wakegate/wire"
)

// Config configures a Sidecar.
type Config struct {
	// Gateway is the gateway's host:port.
	Gateway string
	// TLS is the client TLS config (certs.ClientTLS); the sidecar sets ALPN.
	TLS *tls.Config
	// DialTimeout bounds the TCP connect and TLS handshake to the gateway.
	DialTimeout time.Duration
	// HalfOpenTimeout reaps a proxied pair after one side finished.
	HalfOpenTimeout time.Duration
	Log             *slog.Logger
}

// Sidecar proxies local plain connections (TCP or a unix socket, see
// Listen) to the gateway over mTLS.
type Sidecar struct {
	cfg  Config
	life *proxy.Server // accept loops, handlers, drain and force
}

// ErrServerClosed is returned by Serve after Shutdown (the lifecycle the
// gateway shares).
var ErrServerClosed = proxy.ErrServerClosed

// New validates cfg.
func New(cfg Config) (*Sidecar, error) {
	if cfg.Gateway == "" {
		return nil, errors.New("connect: no gateway address (--gateway HOST:PORT)")
	}
	if _, _, err := net.SplitHostPort(cfg.Gateway); err != nil {
		return nil, fmt.Errorf("connect: gateway address %q: %w", cfg.Gateway, err)
	}
	if cfg.TLS == nil {
		return nil, errors.New("connect: no TLS credentials")
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 15 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	s := &Sidecar{cfg: cfg}
	s.life = proxy.NewServer(s.handle, cfg.Log)
	return s, nil
}

// dial opens an mTLS connection to the gateway speaking proto.
func (s *Sidecar) dial(ctx context.Context, proto string) (*tls.Conn, error) {
	cfg := s.cfg.TLS.Clone()
	cfg.NextProtos = []string{proto}
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: s.cfg.DialTimeout, KeepAlive: 30 * time.Second}, Config: cfg}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.DialTimeout)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", s.cfg.Gateway)
	if err != nil {
		return nil, fmt.Errorf("connect to gateway %s: %w", s.cfg.Gateway, err)
	}
	return c.(*tls.Conn), nil
}

// Serve accepts local connections on ln and proxies each to the gateway
// until Shutdown, then returns ErrServerClosed.
func (s *Sidecar) Serve(ln net.Listener) error {
	if err := s.life.Serve(ln); !errors.Is(err, ErrServerClosed) {
		return fmt.Errorf("connect: %w", err)
	}
	return ErrServerClosed
}

// handle carries one local connection to the gateway; ctx is cancelled
// when Shutdown stops waiting for it.
func (s *Sidecar) handle(ctx context.Context, c net.Conn) {
	began := time.Now()
	gc, err := s.dial(ctx, wire.ProtoProxy)
	if err != nil {
		c.Close()
		s.cfg.Log.Error("connection closed: gateway unreachable", "err", err)
		return
	}
	res := proxy.Join(ctx, c, gc, "local", "gateway", s.cfg.HalfOpenTimeout)
	attrs := []any{"bytes_out", res.BytesAToB, "bytes_in", res.BytesBToA, "duration_ms", time.Since(began).Milliseconds()}
	if res.Err != nil {
		s.cfg.Log.Warn("connection closed", append(attrs, "err", res.Err)...)
		return
	}
	s.cfg.Log.Debug("connection closed", attrs...)
}

// Shutdown stops accepting, lets open connections finish until ctx ends,
// then closes them and waits for their handlers. Safe to call twice.
func (s *Sidecar) Shutdown(ctx context.Context) error {
	if err := s.life.Shutdown(ctx); err != nil {
		return fmt.Errorf("connect: shutdown: %w", err)
	}
	return nil
}
