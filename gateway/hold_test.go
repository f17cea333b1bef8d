package gateway

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"io"
	"net"
	"testing"
	"time"

	"github.com/wakegate/wakegate/certs"
	"github.com/wakegate/wakegate/wire"
)

// http2Preface is what a BuildKit client sends first.
const http2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// dialRaw opens a TLS connection to the gateway whose TCP connection the
// test keeps, to reset it.
func (g *testGateway) dialRaw(t *testing.T, cert *tls.Certificate, proto string) (*tls.Conn, *net.TCPConn) {
	t.Helper()
	raw, err := net.Dial("tcp", g.addr)
	if err != nil {
		t.Fatal(err)
	}
	cfg := certs.ClientTLS(func() *tls.Certificate { return cert }, g.ca.Pool(), "127.0.0.1")
	if proto != "" {
		cfg.NextProtos = []string{proto}
	}
	c := tls.Client(raw, cfg)
	c.SetDeadline(time.Now().Add(15 * time.Second))
	if err := c.Handshake(); err != nil {
		t.Fatalf("handshake: %v", err)
	}
	c.SetDeadline(time.Time{})
	t.Cleanup(func() { c.Close() })
	return c, raw.(*net.TCPConn)
}

// TestHeldClientsThatLeaveAreLetGo: clients held for a wake that go away
// (closing before sending anything, closing after their request, or
// resetting) are let go at once, not when the engine is ready, and the
// engine never hears from them.
func TestHeldClientsThatLeaveAreLetGo(t *testing.T) {
	noLeaks(t, func(t *testing.T) {
		addr, dials := countingEchoEngine(t)
		h := &fakeHost{startGate: make(chan struct{}), addr: addr}
		// Without a session ticket waiting unread in the client, its Close
		// sends close_notify and a FIN rather than a reset.
		// The wake outlasts the test's patience: only the clients' leaving
		// can let them go.
		g := startGatewayOpts(t, h, gatewayOptions{wake: time.Minute, config: func(c *Config) { c.TLS.SessionTicketsDisabled = true }})
		e := g.pool.Engines()[0]

		const n = 60
		type client struct {
			c   *tls.Conn
			raw *net.TCPConn
		}
		var clients []client
		for i := range n {
			proto := ""
			if i%4 == 3 {
				proto = wire.ProtoWake
			}
			c, raw := g.dialRaw(t, g.client, proto)
			if i%4 == 1 {
				if _, err := c.Write([]byte(http2Preface)); err != nil {
					t.Fatal(err)
				}
			}
			clients = append(clients, client{c, raw})
		}
		eventually(t, "every connection is held", func() bool { return g.srv.openConns() == n })
		waitState(t, e, Starting)

		for i, cl := range clients {
			switch i % 4 {
			case 0, 1, 3: // close_notify and FIN, with or without a request
				cl.c.Close()
			case 2: // a reset
				cl.raw.SetLinger(0)
				cl.raw.Close()
			}
		}
		// Let go while the engine is still waking.
		eventually(t, "the gateway let the departed clients go", func() bool { return g.srv.openConns() == 0 })
		if st := g.pool.Status()[0]; st.Sessions != 0 || st.State != Starting {
			t.Fatalf("after the clients left: %+v, want no session, engine still starting", st)
		}

		close(h.startGate)
		waitState(t, e, Running)
		c := g.dial(t, g.client, g.ca, "")
		c.SetDeadline(time.Now().Add(15 * time.Second))
		if _, err := c.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, make([]byte, 4)); err != nil {
			t.Fatalf("a new client after the wake: %v", err)
		}
		if got := dials.Load(); got != 1 {
			t.Fatalf("engine got %d connections, want 1: departed clients were forwarded", got)
		}
		if got := h.starts.Load(); got != 1 {
			t.Fatalf("starts = %d, want 1", got)
		}
	})
}

// TestClientHeldForAFreeEngineIsLetGoWhenItLeaves: a client held because
// every engine is at its hard limit is let go when it leaves, while the
// session that fills the engine goes on.
func TestClientHeldForAFreeEngineIsLetGoWhenItLeaves(t *testing.T) {
	addr, dials := countingEchoEngine(t)
	h := &fakeHost{addr: addr}
	g := startGatewayOpts(t, h, gatewayOptions{policy: Policy{Soft: 1, Hard: 1}})

	a := g.dial(t, g.client, g.ca, "")
	a.SetDeadline(time.Now().Add(15 * time.Second))
	a.Write([]byte("a"))
	if _, err := io.ReadFull(a, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}

	other := g.issue(t, "other")
	b := g.dial(t, other, g.ca, "")
	b.Write([]byte(http2Preface))
	eventually(t, "the second identity is held", func() bool { return g.srv.openConns() == 2 })
	b.Close()
	eventually(t, "the held client that left is let go", func() bool { return g.srv.openConns() == 1 })

	a.Close()
	eventually(t, "the first client is done", func() bool { return g.srv.openConns() == 0 })
	if got := dials.Load(); got != 1 {
		t.Fatalf("engine got %d connections, want 1", got)
	}
	if st := g.pool.Status()[0]; st.Sessions != 0 || st.Conns != 0 {
		t.Fatalf("after both left: %+v, want no session or connection", st)
	}
}

// TestBytesSentWhileHeldReachTheEngine: what a client sends while held is
// forwarded once the engine is ready, in order, with the rest of the
// stream; a client that half-closed after its request still gets its
// answer.
func TestBytesSentWhileHeldReachTheEngine(t *testing.T) {
	big := make([]byte, 3*holdBufferSize+123)
	rand.Read(big)
	for _, tc := range []struct {
		name      string
		request   []byte
		halfClose bool // CloseWrite while held
	}{
		{"preface then half-close", []byte(http2Preface + "SETTINGS"), true},
		{"more than the hold buffer", big, false},
		{"more than the hold buffer then half-close", big, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, dials := countingEchoEngine(t)
			h := &fakeHost{startGate: make(chan struct{}), addr: addr}
			logs := newLogRecorder()
			g := startGatewayOpts(t, h, gatewayOptions{config: func(c *Config) { c.Log = logs.logger() }})
			c := g.dial(t, g.client, g.ca, "")
			c.SetDeadline(time.Now().Add(10 * time.Second))

			// Writes past the gateway's buffer block until the engine
			// reads them: write in the background.
			wrote := make(chan error, 1)
			go func() {
				_, err := c.Write(tc.request)
				if err == nil && tc.halfClose {
					err = c.CloseWrite()
				}
				wrote <- err
			}()
			small := len(tc.request) <= holdBufferSize
			if small {
				if err := <-wrote; err != nil {
					t.Fatal(err)
				}
				if tc.halfClose {
					// The gateway saw the half-close while holding.
					logs.waitFor(t, "ended its request (close_notify)", 1)
				}
			}
			eventually(t, "the connection is held", func() bool { return g.srv.openConns() == 1 })
			waitState(t, g.pool.Engines()[0], Starting)
			close(h.startGate)

			got := make([]byte, len(tc.request))
			if _, err := io.ReadFull(c, got); err != nil {
				t.Fatalf("read the echo: %v", err)
			}
			if !bytes.Equal(got, tc.request) {
				t.Fatal("the engine did not get the bytes sent while held, in order")
			}
			if !small {
				if err := <-wrote; err != nil {
					t.Fatal(err)
				}
			}
			if tc.halfClose {
				if n, err := c.Read(make([]byte, 1)); err != io.EOF {
					t.Fatalf("after the echo: read %d, %v; want EOF carried from the engine", n, err)
				}
			}
			if got := dials.Load(); got != 1 {
				t.Fatalf("engine got %d connections, want 1", got)
			}
		})
	}
}

// TestAHeldClientIsLetGoAtTheHoldBound: a client held for an engine that
// does not come is let go once the hold's bound passes, not before, and
// the close line says there was no engine. A stream made ahead of need
// is held from its first byte, not from its handshake.
func TestAHeldClientIsLetGoAtTheHoldBound(t *testing.T) {
	const hold = 300 * time.Millisecond
	for _, proto := range []string{wire.ProtoProxy, wire.ProtoAhead} {
		t.Run(proto, func(t *testing.T) {
			h := &fakeHost{startGate: make(chan struct{})} // a start that never ends
			logs := newLogRecorder()
			g := startGatewayOpts(t, h, gatewayOptions{wake: time.Minute, config: func(c *Config) {
				c.HoldTimeout = hold
				c.Log = logs.logger()
			}})
			t.Cleanup(func() { close(h.startGate) }) // before the gateway's own cleanup
			// A new stream's hold counts from its connection (the bound
			// covers the handshake, the wait and the dial); one made
			// ahead's from its first byte.
			began := time.Now()
			c := g.dial(t, g.client, g.ca, proto)
			defer c.Close()
			want := ""
			if proto == wire.ProtoAhead {
				waitAhead(t, g, 1)
				want = string([]byte{wire.AheadServed})
				began = time.Now()
			}
			if _, err := c.Write([]byte("ping")); err != nil {
				t.Fatal(err)
			}
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			got, err := io.ReadAll(c)
			held := time.Since(began)
			if string(got) != want || err != nil {
				t.Fatalf("the held client read %q, %v; want %q and the close", got, err, want)
			}
			if held < hold {
				t.Fatalf("let go after %s, before the hold's bound of %s", held, hold)
			}
			logs.waitFor(t, "connection closed", 1)
			if r := logs.matching("connection closed")[0]; r.Attrs["reason"] != "no_engine" {
				t.Fatalf("close line reason %q, want no_engine (%v)", r.Attrs["reason"], r.Attrs)
			}
			if h.starts.Load() != 1 {
				t.Fatalf("starts = %d, want the one wake the client waited for", h.starts.Load())
			}
		})
	}
}
