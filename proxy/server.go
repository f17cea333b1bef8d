package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
)

// ErrServerClosed is what Serve returns once Shutdown has begun.
var ErrServerClosed = errors.New("server closed")

// Server is the lifecycle that the gateway and the connect sidecar share:
// accept on any number of listeners (backing off on temporary errors), run
// each connection's handler in a goroutine of its own, and on Shutdown stop
// accepting, let the handlers finish within a bound, then force the rest:
// cancel their context and close their connections.
type Server struct {
	handle func(ctx context.Context, c net.Conn)
	log    *slog.Logger

	// ctx is every handler's; cancelled when Shutdown gives up draining.
	ctx    context.Context
	cancel context.CancelFunc
	// closing is closed when Shutdown begins: accept loops end, and an
	// accept error after it is the listener's close, not a fault.
	closing chan struct{}
	wg      sync.WaitGroup // handlers

	mu        sync.Mutex // guards listeners, conns and closed
	listeners map[net.Listener]struct{}
	// conns is the connections whose handler runs or that a handler kept
	// (Keep), with how many of those hold each.
	conns  map[net.Conn]int
	closed bool
}

// NewServer returns a server that runs handle for each accepted
// connection. handle owns the connection (it closes it); its ctx is
// cancelled when a Shutdown's drain runs out, and the connection is closed
// under it then too, so a handler blocked on either returns.
func NewServer(handle func(ctx context.Context, c net.Conn), log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Server{handle: handle, log: log, ctx: ctx, cancel: cancel, closing: make(chan struct{}),
		listeners: map[net.Listener]struct{}{}, conns: map[net.Conn]int{}}
}

// Context is the handlers' context: cancelled when Shutdown forces the
// remaining connections closed.
func (s *Server) Context() context.Context { return s.ctx }

// Serve accepts connections on ln until Shutdown, and then returns
// ErrServerClosed; it returns any other accept error that is not
// temporary. It closes ln either way.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
		ln.Close()
	}()

	for {
		c, err := Accept(ln, s.closing, s.log)
		if err != nil {
			select {
			case <-s.closing:
				return ErrServerClosed
			default:
			}
			return fmt.Errorf("accept on %s: %w", ln.Addr(), err)
		}
		// Counted under mu: Shutdown sets closed under mu before it waits,
		// so no handler starts after the wait began.
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return ErrServerClosed
		}
		s.wg.Add(1)
		s.conns[c] = 1
		s.mu.Unlock()
		go s.serveConn(c)
	}
}

// serveConn runs the handler of one connection; a named function, so that
// a goroutine dump tells connection handlers from the rest.
func (s *Server) serveConn(c net.Conn) {
	defer s.let(c)
	s.handle(s.ctx, c)
}

// Keep lets the handler of c return while c is still in use (by goroutines
// it started): c stays counted until release is called, once. Shutdown
// waits for it, and closes it when it forces the rest. A handler calls it
// for its own connection, before it returns.
func (s *Server) Keep(c net.Conn) (release func()) {
	s.mu.Lock()
	s.conns[c]++
	s.mu.Unlock()
	s.wg.Add(1) // while the handler's own count is held: never from zero
	return func() { s.let(c) }
}

// let is the end of one hold on c: its handler's, or a Keep's.
func (s *Server) let(c net.Conn) {
	s.mu.Lock()
	if s.conns[c]--; s.conns[c] <= 0 {
		delete(s.conns, c)
	}
	s.mu.Unlock()
	s.wg.Done()
}

// Shutdown stops accepting, lets the handlers finish until ctx ends, then
// cancels their context, closes their connections and waits for them to
// return. It returns nil if they finished in time, else an error wrapping
// ctx's. Safe to call twice, and concurrently.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		close(s.closing)
	}
	for ln := range s.listeners {
		ln.Close()
	}
	s.mu.Unlock()

	drained := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(drained)
	}()
	select {
	case <-drained:
		s.cancel() // nothing uses it any more
		return nil
	case <-ctx.Done():
	}
	// Counted before the handlers' context ends: those that return at
	// once when it does were forced too.
	s.mu.Lock()
	forced := len(s.conns)
	s.mu.Unlock()
	s.cancel()
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	// Bounded: every handler's context is done and its connection closed.
	<-drained
	return fmt.Errorf("%d connections forced closed: %w", forced, ctx.Err())
}
