package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// earlyEngine is an engine address whose connections the test accepts
// itself, and a probe that answers only once ready is closed.
type earlyEngine struct {
	ln    *net.TCPListener
	ready chan struct{}
	dials atomic.Int32
}

func newEarlyEngine(t *testing.T) *earlyEngine {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return &earlyEngine{ln: ln.(*net.TCPListener), ready: make(chan struct{})}
}

func (e *earlyEngine) addr() string { return "tcp://" + e.ln.Addr().String() }

func (e *earlyEngine) probe(ctx context.Context, _ string) error {
	select {
	case <-e.ready:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (e *earlyEngine) config(cfg *Config) {
	cfg.Dial = func(ctx context.Context, addr string) (net.Conn, error) {
		e.dials.Add(1)
		return plainDial(ctx, addr)
	}
	cfg.EarlyStreams = func(string) bool { return true }
}

func (e *earlyEngine) accept(t *testing.T) net.Conn {
	t.Helper()
	e.ln.SetDeadline(time.Now().Add(10 * time.Second))
	c, err := e.ln.Accept()
	if err != nil {
		t.Fatalf("no stream reached the engine: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func readString(t *testing.T, c net.Conn, n int) string {
	t.Helper()
	b := make([]byte, n)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatalf("read %d bytes: got %q, %v", n, b, err)
	}
	return string(b)
}

func (g *testGateway) engineState() State { return g.pool.Engines()[0].Status().State }

// holdSentAhead opens a client that sends "held" to g, whose engine is
// starting, and returns it with the engine's end of its early stream, on
// which those bytes came.
func (e *earlyEngine) holdSentAhead(t *testing.T, g *testGateway) (c *tls.Conn, ec net.Conn) {
	t.Helper()
	c = g.dial(t, g.client, g.ca, "")
	c.Write([]byte("held"))
	ec = e.accept(t)
	if got := readString(t, ec, 4); got != "held" {
		t.Fatalf("engine read %q, want held", got)
	}
	return c, ec
}

// TestAHeldClientsStreamReachesItsEngineWhileItStarts: once the host gave
// the address, the held client's stream is dialled and what it sent so far
// written on it, before the engine is ready, and what it sends after goes
// on as it comes; the answer comes back on that one stream once the
// engine is ready.
func TestAHeldClientsStreamReachesItsEngineWhileItStarts(t *testing.T) {
	e := newEarlyEngine(t)
	g := startGatewayOpts(t, &fakeHost{addr: e.addr()}, gatewayOptions{probe: e.probe, config: e.config})
	c, ec := e.holdSentAhead(t, g)
	if st := g.engineState(); st != Starting {
		t.Fatalf("engine %s when the held bytes reached it, want starting", st)
	}
	c.Write([]byte("+more"))
	if got := readString(t, ec, 5); got != "+more" {
		t.Fatalf("engine read %q next, want +more", got)
	}
	if st := g.engineState(); st != Starting {
		t.Fatalf("engine %s when the next bytes reached it, want starting", st)
	}
	close(e.ready)
	ec.Write([]byte("answer"))
	if got := readString(t, c, 6); got != "answer" {
		t.Fatalf("client read %q", got)
	}
	if n := e.dials.Load(); n != 1 {
		t.Fatalf("%d dials, want 1", n)
	}
	// The bytes sent ahead count as the client's.
	c.Close()
	ec.Close()
	eventually(t, "the stream's bytes counted", func() bool {
		return testutil.ToFloat64(g.pool.metrics.bytes.WithLabelValues(dirToEngine)) == 9
	})
}

// TestAFailedWakeClosesTheHeldClientsEarlyStream: a wake that fails after
// the host gave the address ends the held client as before (no engine),
// closes the stream dialled for it, and is not woken again for it.
func TestAFailedWakeClosesTheHeldClientsEarlyStream(t *testing.T) {
	e := newEarlyEngine(t)
	failed := make(chan struct{})
	h := &fakeHost{addr: e.addr(), failed: func() error {
		select {
		case <-failed:
			return errors.New("engine process exited")
		default:
			return nil
		}
	}}
	notReady := func(context.Context, string) error { return errors.New("not ready") }
	g := startGatewayOpts(t, h, gatewayOptions{probe: notReady, config: e.config})
	c, ec := e.holdSentAhead(t, g)
	close(failed)
	ec.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := ec.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("the early stream after a failed wake: read %d, %v; want it closed", n, err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := c.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Fatalf("the client after a failed wake: read %d, %v; want its connection ended", n, err)
	}
	if n := h.starts.Load(); n != 1 {
		t.Fatalf("%d starts, want 1", n)
	}
}

// TestAHeldClientHearsAFailedHostStartAtOnce: a held client waiting to hear
// its engine's address (for its early stream) hears a host's start that
// failed as the wake's end, not at the end of its hold.
func TestAHeldClientHearsAFailedHostStartAtOnce(t *testing.T) {
	e := newEarlyEngine(t)
	h := &fakeHost{addr: e.addr(), startGate: make(chan struct{}), startErr: errors.New("no capacity")}
	g := startGatewayOpts(t, h, gatewayOptions{probe: e.probe, config: func(cfg *Config) {
		e.config(cfg)
		cfg.HoldTimeout = time.Hour // past the read's bound below
	}})
	c := g.dial(t, g.client, g.ca, "")
	c.Write([]byte("held"))
	eventually(t, "the host asked to start the engine", func() bool { return h.starts.Load() == 1 })
	close(h.startGate)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := c.Read(make([]byte, 1)); n != 0 || err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the client after a failed host start: read %d, %v; want its connection ended at once", n, err)
	}
	if n := e.dials.Load(); n != 0 {
		t.Fatalf("%d dials to an engine whose host did not start it, want 0", n)
	}
}

// TestAnEarlyStreamFoundClosedIsDialledAgainWithEveryByte: an early stream
// the engine's front closed before the engine was ready (it gave up
// waiting) is not the engine's failure: the client's stream is dialled
// again with every byte it sent, and the engine is neither stopped nor
// woken again.
func TestAnEarlyStreamFoundClosedIsDialledAgainWithEveryByte(t *testing.T) {
	e := newEarlyEngine(t)
	h := &fakeHost{addr: e.addr()}
	g := startGatewayOpts(t, h, gatewayOptions{probe: e.probe, config: e.config})
	c, first := e.holdSentAhead(t, g)
	c.Write([]byte("+more"))
	readString(t, first, 5)
	first.Close()
	close(e.ready)
	again := e.accept(t)
	if got := readString(t, again, 9); got != "held+more" {
		t.Fatalf("the stream dialled again read %q, want held+more", got)
	}
	again.Write([]byte("answer"))
	if got := readString(t, c, 6); got != "answer" {
		t.Fatalf("client read %q", got)
	}
	if s, st, n := h.starts.Load(), h.stops.Load(), e.dials.Load(); s != 1 || st != 0 || n != 2 {
		t.Fatalf("%d starts, %d stops, %d dials; want 1, 0, 2", s, st, n)
	}
}

// TestAHeldClientThatLeavesClosesItsEarlyStream: a client that leaves
// after its stream was dialled early is let go at once, and the stream
// closed, while the engine still starts.
func TestAHeldClientThatLeavesClosesItsEarlyStream(t *testing.T) {
	e := newEarlyEngine(t)
	g := startGatewayOpts(t, &fakeHost{addr: e.addr()}, gatewayOptions{probe: e.probe, config: e.config})
	c, ec := e.holdSentAhead(t, g)
	c.Close()
	ec.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := ec.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("the early stream of a client that left: read %d, %v; want it closed", n, err)
	}
	if st := g.engineState(); st != Starting {
		t.Fatalf("engine %s, want still starting", st)
	}
	close(e.ready)
}

// TestAnEarlyDialIsMadeAgainOnlyWhileTheAddressRefuses: a host may give an
// engine's address before anything listens there (a machine that boots):
// the early dial is made again until it answers. Any other failure (an
// engine that refuses the handshake) ends it at once, and the stream is
// dialled once the engine is ready.
func TestAnEarlyDialIsMadeAgainOnlyWhileTheAddressRefuses(t *testing.T) {
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	for _, tc := range []struct {
		name     string
		fail     error
		failures int32
		early    bool // the stream reaches the engine before it is ready
	}{
		{"refused", refused, 2, true},
		{"handshake refused", errors.New("remote error: tls: bad certificate"), 1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEarlyEngine(t)
			rec := newLogRecorder()
			var attempts atomic.Int32
			config := func(cfg *Config) {
				e.config(cfg)
				cfg.Log = rec.logger()
				cfg.Dial = func(ctx context.Context, addr string) (net.Conn, error) {
					if attempts.Add(1) <= tc.failures {
						return nil, tc.fail
					}
					return plainDial(ctx, addr)
				}
			}
			g := startGatewayOpts(t, &fakeHost{addr: e.addr()}, gatewayOptions{probe: e.probe, config: config})
			if tc.early {
				c, ec := e.holdSentAhead(t, g)
				if n := attempts.Load(); n != 3 {
					t.Fatalf("%d dials, want 3: two refused, then the early stream", n)
				}
				close(e.ready)
				ec.Write([]byte("answer"))
				if got := readString(t, c, 6); got != "answer" {
					t.Fatalf("client read %q", got)
				}
				return
			}
			c := g.dial(t, g.client, g.ca, "")
			c.Write([]byte("held"))
			rec.waitFor(t, "no stream to the engine while it starts; dialling it once it is ready", 1)
			close(e.ready)
			ec := e.accept(t)
			if got := readString(t, ec, 4); got != "held" {
				t.Fatalf("engine read %q", got)
			}
			if n := attempts.Load(); n != 2 {
				t.Fatalf("%d dials, want 2: the early one, then the stream's own once ready", n)
			}
			ec.Write([]byte("answer"))
			if got := readString(t, c, 6); got != "answer" {
				t.Fatalf("client read %q", got)
			}
		})
	}
}
