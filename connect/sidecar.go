package connect

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
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
	cfg    Config
	ctx    context.Context // cancelled by Shutdown: ends every connection
	cancel context.CancelFunc
	wg     sync.WaitGroup // connection handlers

	mu       sync.Mutex // guards lns and shutdown
	lns      []net.Listener
	shutdown bool
}

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
	ctx, cancel := context.WithCancel(context.Background())
	return &Sidecar{cfg: cfg, ctx: ctx, cancel: cancel}, nil
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
// until Shutdown.
func (s *Sidecar) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.shutdown {
		s.mu.Unlock()
		ln.Close()
		return net.ErrClosed
	}
	s.lns = append(s.lns, ln)
	s.mu.Unlock()
	for {
		c, err := proxy.Accept(ln, s.ctx.Done(), s.cfg.Log)
		if err != nil {
			if s.ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("connect: accept: %w", err)
		}
		s.mu.Lock()
		if s.shutdown {
			s.mu.Unlock()
			c.Close()
			return nil
		}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.handle(c)
	}
}

func (s *Sidecar) handle(c net.Conn) {
	defer s.wg.Done()
	began := time.Now()
	gc, err := s.dial(s.ctx, wire.ProtoProxy)
	if err != nil {
		c.Close()
		s.cfg.Log.Error("connection closed: gateway unreachable", "err", err)
		return
	}
	res := proxy.Join(s.ctx, c, gc, "local", "gateway", s.cfg.HalfOpenTimeout)
	attrs := []any{"bytes_out", res.BytesAToB, "bytes_in", res.BytesBToA, "duration_ms", time.Since(began).Milliseconds()}
	if res.Err != nil {
		s.cfg.Log.Warn("connection closed", append(attrs, "err", res.Err)...)
		return
	}
	s.cfg.Log.Debug("connection closed", attrs...)
}

// Shutdown stops accepting, closes open connections and waits for their
// handlers until ctx ends. Safe to call twice.
func (s *Sidecar) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if !s.shutdown {
		s.shutdown = true
		s.cancel()
		for _, ln := range s.lns {
			ln.Close()
		}
	}
	s.mu.Unlock()
	drained := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(drained)
	}()
	select {
	case <-drained:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("connect: shutdown: %w", ctx.Err())
	}
}
