package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"github.com/wakegate/wakegate/internal/testserve"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/wakegate/wakegate/certs"
	"github.com/wakegate/wakegate/identity"
	"github.com/wakegate/wakegate/wire"
)

// echoEngine stands in for an engine's socket: it echoes each connection
// and half-closes when its input ends.
func echoEngine(t *testing.T) string {
	t.Helper()
	addr, _ := countingEchoEngine(t)
	return addr
}

// countingEchoEngine is echoEngine, also counting the connections it
// accepted.
func countingEchoEngine(t *testing.T) (string, *atomic.Int32) {
	t.Helper()
	var accepted atomic.Int32
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	testserve.Serve(t, ln, func(c net.Conn) {
		accepted.Add(1)
		io.Copy(c, c)
		c.(*net.TCPConn).CloseWrite()
	})
	return "tcp://" + ln.Addr().String(), &accepted
}

type testGateway struct {
	addr   string
	host   *fakeHost
	pool   *Pool
	srv    *Server
	ca     *certs.CA
	client *tls.Certificate
}

// gatewayOptions are what tests vary in the gateway they start.
type gatewayOptions struct {
	authorize func(identity.Peer) error
	policy    Policy        // DefaultPolicy when zero
	wake      time.Duration // the engines' wake timeout; 5 s when zero
	probe     Prober        // readyProbe when nil
	idle      time.Duration // the engines' idle stop; a minute when zero
	config    func(*Config)
}

func startGateway(t *testing.T, h *fakeHost) *testGateway {
	t.Helper()
	return startGatewayWith(t, h, nil)
}

// startGatewayWith starts a gateway whose config authorize sets as Authorize.
func startGatewayWith(t *testing.T, h *fakeHost, authorize func(identity.Peer) error) *testGateway {
	t.Helper()
	return startGatewayOpts(t, h, gatewayOptions{authorize: authorize})
}

func startGatewayOpts(t *testing.T, h *fakeHost, o gatewayOptions) *testGateway {
	t.Helper()
	if o.policy == (Policy{}) {
		o.policy = DefaultPolicy
	}
	if o.wake == 0 {
		o.wake = 5 * time.Second
	}
	ca, err := certs.Init(t.TempDir(), "test", nil)
	if err != nil {
		t.Fatal(err)
	}
	sc, cc := leafPair(t, ca, "gateway", "ci")
	if o.probe == nil {
		o.probe = readyProbe
	}
	if o.idle == 0 {
		o.idle = time.Minute
	}
	pool, err := NewPoolWithPolicy(t.Context(), h, EngineConfig{Probe: o.probe, Idle: o.idle, WakeTimeout: o.wake}, o.policy)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		TLS:              certs.ServerTLS(func() *tls.Certificate { return sc }, ca.Pool()),
		Pool:             pool,
		Dial:             plainDial,
		HoldTimeout:      10 * time.Second,
		ProgressInterval: 20 * time.Millisecond,
		Authorize:        o.authorize,
	}
	if o.config != nil {
		o.config(&cfg)
	}
	srv, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-served; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve = %v, want ErrServerClosed", err)
		}
		pool.Close()
	})
	return &testGateway{addr: ln.Addr().String(), host: h, pool: pool, srv: srv, ca: ca, client: cc}
}

func (g *testGateway) dial(t *testing.T, cert *tls.Certificate, roots *certs.CA, proto string) *tls.Conn {
	t.Helper()
	cfg := certs.ClientTLS(func() *tls.Certificate { return cert }, roots.Pool(), "127.0.0.1")
	if cert == nil {
		cfg.GetClientCertificate = nil
	}
	if proto != "" {
		cfg.NextProtos = []string{proto}
	}
	c, err := tls.Dial("tcp", g.addr, cfg)
	if err != nil {
		t.Fatalf("dial gateway: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func waitState(t *testing.T, e *Engine, want State) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for e.Status().State != want {
		if time.Now().After(deadline) {
			t.Fatalf("engine state %s, want %s", e.Status().State, want)
		}
		time.Sleep(time.Millisecond) // polling with a deadline
	}
}

func TestHeldConnectionIsForwardedOnceEngineIsReady(t *testing.T) {
	h := &fakeHost{startGate: make(chan struct{}), addr: echoEngine(t)}
	g := startGateway(t, h)
	c := g.dial(t, g.client, g.ca, "")
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	waitState(t, g.pool.Engines()[0], Starting)
	close(h.startGate)
	buf := make([]byte, 4)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("read echo = %q, %v", buf, err)
	}
	// Half-close carried through: the engine sees EOF and closes its side.
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if n, err := c.Read(buf); err != io.EOF {
		t.Fatalf("after CloseWrite read = %d, %v; want EOF", n, err)
	}
	if got := h.starts.Load(); got != 1 {
		t.Fatalf("starts = %d, want 1", got)
	}
}

func TestClientRefused(t *testing.T) {
	other, err := certs.Init(t.TempDir(), "other", nil)
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := other.Issue(certs.Client, "ci", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		cert *tls.Certificate
	}{
		{"certificate from another CA", foreign.TLSCertificate()},
		{"no certificate", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := &fakeHost{addr: echoEngine(t)}
			g := startGateway(t, h)
			c := g.dial(t, tc.cert, g.ca, "")
			c.SetDeadline(time.Now().Add(15 * time.Second))
			c.Write([]byte("ping"))
			// TLS 1.3 clients learn of the refusal on their first read.
			if _, err := c.Read(make([]byte, 1)); err == nil || !strings.Contains(err.Error(), "remote error") {
				t.Fatalf("read = %v, want a TLS alert from the gateway", err)
			}
			if got := h.starts.Load(); got != 0 {
				t.Fatalf("a refused client woke the engine (%d starts)", got)
			}
		})
	}
}

func TestWakeRequestReportsProgressThenReady(t *testing.T) {
	h := &fakeHost{startGate: make(chan struct{}), addr: echoEngine(t)}
	g := startGateway(t, h)
	c := g.dial(t, g.client, g.ca, wire.ProtoWake)
	if p := c.ConnectionState().NegotiatedProtocol; p != wire.ProtoWake {
		t.Fatalf("negotiated %q, want %q", p, wire.ProtoWake)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	r := wire.NewReader(c)
	e, err := r.Next()
	if err != nil || e.Kind != wire.Waking || e.State != string(Starting) || e.Engine != "e0" {
		t.Fatalf("first event = %+v, %v; want waking e0 starting", e, err)
	}
	close(h.startGate)
	for e.Kind == wire.Waking {
		if e, err = r.Next(); err != nil {
			t.Fatal(err)
		}
	}
	if e.Kind != wire.Ready {
		t.Fatalf("final event = %+v, want ready", e)
	}
	// The open wake connection holds the engine: it counts as a connection.
	if st := g.pool.Engines()[0].Status(); st.Conns != 1 {
		t.Fatalf("connections while the wake is held = %d, want 1", st.Conns)
	}
	c.Close()
	deadline := time.Now().Add(5 * time.Second)
	for g.pool.Engines()[0].Status().Conns != 0 {
		if time.Now().After(deadline) {
			t.Fatal("closing the wake connection did not release the engine")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestFailedWakeClosesHeldConnections(t *testing.T) {
	h := &fakeHost{startErr: errors.New("volume attached elsewhere")}
	g := startGateway(t, h)

	held := g.dial(t, g.client, g.ca, "")
	held.SetDeadline(time.Now().Add(15 * time.Second))
	held.Write([]byte("ping"))
	// Closed, not left hanging: EOF, or a reset since the gateway never
	// read the bytes it held.
	if _, err := held.Read(make([]byte, 1)); err != io.EOF && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("held connection read = %v, want it closed after the failed wake", err)
	}

	w := g.dial(t, g.client, g.ca, wire.ProtoWake)
	w.SetDeadline(time.Now().Add(15 * time.Second))
	r := wire.NewReader(w)
	for {
		e, err := r.Next()
		if err != nil {
			t.Fatalf("wake request ended without an error event: %v", err)
		}
		if e.Kind == wire.Failed {
			if !strings.Contains(e.Message, "volume attached elsewhere") {
				t.Fatalf("error event %q does not carry the host's reason", e.Message)
			}
			return
		}
	}
}

func TestGarbageBytesAreRefusedWithoutWaking(t *testing.T) {
	h := &fakeHost{addr: echoEngine(t)}
	g := startGateway(t, h)
	c, err := net.Dial("tcp", g.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(15 * time.Second))
	c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n\x00\xff garbage"))
	if _, err := io.ReadAll(c); err != nil {
		t.Fatalf("gateway did not close a garbage connection cleanly: %v", err)
	}
	if got := h.starts.Load(); got != 0 {
		t.Fatalf("garbage woke the engine (%d starts)", got)
	}
}

func TestShutdownLeavesNoGoroutines(t *testing.T) {
	baseline := runtime.NumGoroutine()
	t.Run("serve", func(t *testing.T) {
		h := &fakeHost{addr: echoEngine(t)}
		g := startGateway(t, h)
		c := g.dial(t, g.client, g.ca, "")
		c.SetDeadline(time.Now().Add(15 * time.Second))
		c.Write([]byte("x"))
		if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
			t.Fatal(err)
		}
	})
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > baseline {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines after shutdown, baseline %d:\n%s", runtime.NumGoroutine(), baseline, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(time.Millisecond) // polling with a deadline
	}
}

// hostErr is a provider error saying the host cannot take the engine.
type hostErr struct{}

func (hostErr) Error() string         { return "could not reserve resource: no capacity" }
func (hostErr) HostUnavailable() bool { return true }

// twoHosts has two engines; starting full fails with a host error.
type twoHosts struct {
	full, addr string
	mu         sync.Mutex
	started    []string
}

func (h *twoHosts) Engines(context.Context) ([]string, error) { return []string{"e0", "e1"}, nil }
func (h *twoHosts) Stop(context.Context, string) error        { return nil }
func (h *twoHosts) Start(_ context.Context, id string) (string, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.started = append(h.started, id)
	if id == h.full {
		return "", hostErr{}
	}
	return h.addr, nil
}

func TestConnectionGoesToAnotherEngineWhenTheHostIsFull(t *testing.T) {
	pool, err := NewPool(t.Context(), &twoHosts{}, EngineConfig{Probe: readyProbe, Idle: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	home := pool.Route("ci").ID()
	h := &twoHosts{full: home, addr: "tcp://127.0.0.1:1"}
	pool2, err := NewPool(t.Context(), h, EngineConfig{Probe: readyProbe, Idle: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer pool2.Close()
	e, l, err := pool2.Acquire(t.Context(), "ci", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("Acquire with a full home host: %v", err)
	}
	defer l.Release()
	if e.ID() == home {
		t.Fatalf("served by the full home engine %s", home)
	}
	if len(h.started) != 2 || h.started[0] != home {
		t.Fatalf("starts = %v, want the home %s first, then the next", h.started, home)
	}
	if ranked := pool2.Ranked("ci"); ranked[0].ID() != home {
		t.Fatalf("ranking changed: %v", ranked[0].ID())
	}
}

func TestPolicyRefusalIsToldToAWakeRequestAndNothingWakes(t *testing.T) {
	h := &fakeHost{addr: echoEngine(t)}
	var judged []string
	var mu sync.Mutex
	g := startGatewayWith(t, h, func(p identity.Peer) error {
		mu.Lock()
		judged = append(judged, p.Name)
		mu.Unlock()
		return errors.New("identity ci is not allowed by the gateway's policy")
	})

	c := g.dial(t, g.client, g.ca, wire.ProtoWake)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	e, err := wire.NewReader(c).Next()
	if err != nil {
		t.Fatalf("read the refusal: %v", err)
	}
	if e.Kind != wire.Refused || e.Message != "identity ci is not allowed by the gateway's policy" {
		t.Fatalf("wake request heard %+v, want the policy's refusal", e)
	}

	p := g.dial(t, g.client, g.ca, "")
	p.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := p.Read(make([]byte, 1)); err == nil {
		t.Fatalf("a refused stream read %d bytes", n)
	}
	if n := h.starts.Load(); n != 0 {
		t.Fatalf("refused clients started the engine %d times", n)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(judged) != 2 || judged[0] != "ci" {
		t.Fatalf("policy judged %v, want ci twice", judged)
	}
}
