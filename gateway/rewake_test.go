package gateway

import (
	"context"
	"crypto/tls"
	"github.com/wakegate/wakegate/internal/testserve"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wakegate/wakegate/certs"
	"github.com/wakegate/wakegate/identity"
)

// seqHost is a Provider whose n-th start returns addrs[n] (the last one
// from then on): an engine that comes back elsewhere after it died. The
// first start waits for gate, if set.
type seqHost struct {
	gate          chan struct{}
	starts, stops atomic.Int32
	mu            sync.Mutex // guards addrs
	addrs         []string
}

func (h *seqHost) Engines(context.Context) ([]string, error) { return []string{"e0"}, nil }
func (h *seqHost) Stop(context.Context, string) error        { h.stops.Add(1); return nil }
func (h *seqHost) Start(ctx context.Context, _ string) (string, error) {
	n := int(h.starts.Add(1))
	if n == 1 && h.gate != nil {
		select {
		case <-h.gate:
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.addrs[min(n, len(h.addrs))-1], nil
}

func (h *seqHost) setAddrs(addrs ...string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.addrs = addrs
}

// deadAddr is a loopback address nothing listens on: an engine killed from
// outside.
func deadAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := "tcp://" + ln.Addr().String()
	ln.Close()
	return addr
}

// startSeqGateway is startGatewayOpts for a seqHost.
func startSeqGateway(t *testing.T, h Provider, config func(*Config)) (*Pool, *Server, string, *tls.Certificate, *certs.CA) {
	t.Helper()
	ca, err := certs.Init(t.TempDir(), "test", nil)
	if err != nil {
		t.Fatal(err)
	}
	sc, cc := leafPair(t, ca, "gateway", "ci")
	pool, err := NewPool(t.Context(), h, EngineConfig{Probe: readyProbe, Idle: time.Minute, WakeTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{TLS: certs.ServerTLS(func() *tls.Certificate { return sc }, ca.Pool()), Pool: pool, Dial: plainDial, HoldTimeout: 10 * time.Second}
	if config != nil {
		config(&cfg)
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
		srv.Shutdown(ctx)
		<-served
		pool.Close()
	})
	return pool, srv, ln.Addr().String(), cc, ca
}

func dialGateway(t *testing.T, addr string, cert *tls.Certificate, ca *certs.CA) *tls.Conn {
	t.Helper()
	c, err := tls.Dial("tcp", addr, certs.ClientTLS(func() *tls.Certificate { return cert }, ca.Pool(), "127.0.0.1"))
	if err != nil {
		t.Fatalf("dial gateway: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c
}

func TestEngineKilledFromOutsideIsWokenAgainForTheHeldClient(t *testing.T) {
	h := &seqHost{gate: make(chan struct{})}
	h.setAddrs(deadAddr(t), echoEngine(t))
	pool, _, addr, cert, ca := startSeqGateway(t, h, nil)

	c := dialGateway(t, addr, cert, ca)
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	waitState(t, pool.Engines()[0], Starting)
	close(h.gate) // "ready" at an address where the engine is dead

	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("read echo = %q, %v; want the held bytes to reach the engine after a new wake", buf, err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if n, err := c.Read(buf); err != io.EOF {
		t.Fatalf("after CloseWrite read = %d, %v; want EOF", n, err)
	}
	if s, st := h.starts.Load(), h.stops.Load(); s != 2 || st != 1 {
		t.Fatalf("starts, stops = %d, %d; want 2, 1 (the dead engine stopped, then woken again)", s, st)
	}
}

// refusingEngine is a TLS 1.3 server that refuses every client certificate
// it is shown: the refusal reaches the client only on its first read, after
// its dial returned.
func refusingEngine(t *testing.T) (addr string, dial Dialer) {
	t.Helper()
	engCA, err := certs.Init(t.TempDir(), "engines", nil)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := engCA.Issue(certs.Server, "wakegate-engine-e0", []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	other, err := certs.Init(t.TempDir(), "other", nil)
	if err != nil {
		t.Fatal(err)
	}
	srvCert := leaf.TLSCertificate()
	// Trusts another CA's clients only: the gateway's certificate is refused.
	ln, err := tls.Listen("tcp", "127.0.0.1:0", certs.ServerTLS(func() *tls.Certificate { return srvCert }, other.Pool()))
	if err != nil {
		t.Fatal(err)
	}
	testserve.Serve(t, ln, func(c net.Conn) {
		c.SetDeadline(time.Now().Add(15 * time.Second))
		c.(*tls.Conn).Handshake()
	})
	gwLeaf, err := engCA.Issue(certs.Server, identity.GatewayName, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	gwCert := gwLeaf.TLSCertificate()
	dial = func(ctx context.Context, addr string) (net.Conn, error) {
		if addr == "tcp://"+ln.Addr().String() {
			d := tls.Dialer{Config: certs.ClientTLS(func() *tls.Certificate { return gwCert }, engCA.Pool(), "127.0.0.1")}
			c, err := d.DialContext(ctx, "tcp", ln.Addr().String())
			if err != nil {
				t.Errorf("TLS dial returned %v; the test wants the refusal after the dial", err)
			}
			return c, err
		}
		return plainDial(ctx, addr)
	}
	return "tcp://" + ln.Addr().String(), dial
}

func TestEngineThatRefusesTheGatewayIsMarkedFailedAndWokenAgain(t *testing.T) {
	refusing, dial := refusingEngine(t)
	h := &seqHost{}
	h.setAddrs(refusing)
	pool, _, addr, cert, ca := startSeqGateway(t, h, func(c *Config) { c.Dial = dial })
	e := pool.Engines()[0]

	c := dialGateway(t, addr, cert, ca)
	c.Write([]byte("ping"))
	if n, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatalf("read %d bytes through an engine that refuses the gateway", n)
	}
	// Tried twice (a fresh wake in between), then given up: the engine is
	// not left running.
	waitState(t, e, Stopped)
	if s := h.starts.Load(); s != 2 {
		t.Fatalf("starts = %d, want 2: the refusal marks the engine failed and wakes it once more", s)
	}

	// Fixed: the next connection wakes it again and is served.
	h.setAddrs(echoEngine(t))
	c2 := dialGateway(t, addr, cert, ca)
	c2.Write([]byte("pong"))
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c2, buf); err != nil || string(buf) != "pong" {
		t.Fatalf("read echo = %q, %v", buf, err)
	}
	if s := h.starts.Load(); s != 3 {
		t.Fatalf("starts = %d, want 3", s)
	}
}

func TestEngineClosingAfterTheClientsEndIsNotAFailure(t *testing.T) {
	h := &fakeHost{addr: echoEngine(t)}
	g := startGateway(t, h)
	c := g.dial(t, g.client, g.ca, "")
	c.SetDeadline(time.Now().Add(15 * time.Second))
	c.Write([]byte("x"))
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	// A second connection to the running engine that sends nothing and
	// half-closes: the engine (which does not speak first) closes in answer.
	c2 := g.dial(t, g.client, g.ca, "")
	c2.SetDeadline(time.Now().Add(15 * time.Second))
	c2.CloseWrite()
	if n, err := c2.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("read = %d, %v; want EOF", n, err)
	}
	c.Close()
	waitConns(t, g.pool.Engines()[0], 0)
	if st := g.pool.Engines()[0].Status(); st.State != Running || h.starts.Load() != 1 {
		t.Fatalf("engine %s after %d starts: an answer to the client's end was taken for a failure", st.State, h.starts.Load())
	}
}

func waitConns(t *testing.T, e *Engine, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for e.Status().Conns != want {
		if time.Now().After(deadline) {
			t.Fatalf("engine connections %d, want %d", e.Status().Conns, want)
		}
		time.Sleep(time.Millisecond) // polling with a deadline
	}
}
