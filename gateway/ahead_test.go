package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/wakegate/wakegate/identity"
	"github.com/wakegate/wakegate/wire"
)

// waitAhead waits until the gateway holds n connections made ahead of need.
func waitAhead(t *testing.T, g *testGateway, n float64) {
	t.Helper()
	eventually(t, "connections made ahead at the gateway", func() bool {
		return testutil.ToFloat64(g.pool.metrics.ahead) == n
	})
}

// wantNotServed reads the status byte "not served" and then the close.
func wantNotServed(t *testing.T, c *tls.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c)
	if string(b) != string([]byte{wire.AheadNotServed}) {
		t.Fatalf("read %q, %v; want the status byte \"not served\" and the close", b, err)
	}
}

func TestAConnectionMadeAheadWakesNothingUntilItsFirstByte(t *testing.T) {
	h := &fakeHost{addr: echoEngine(t)}
	g := startGateway(t, h)
	c := g.dial(t, g.client, g.ca, wire.ProtoAhead)
	if p := c.ConnectionState().NegotiatedProtocol; p != wire.ProtoAhead {
		t.Fatalf("negotiated %q, want %q", p, wire.ProtoAhead)
	}
	waitAhead(t, g, 1)
	if n := h.starts.Load(); n != 0 {
		t.Fatalf("an unused connection made ahead started the engine %d times", n)
	}
	if st := g.pool.Engines()[0].Status(); st.State != Stopped || st.Conns != 0 {
		t.Fatalf("engine %s with %d connections while the only client sent nothing", st.State, st.Conns)
	}

	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "\x01ping" {
		t.Fatalf("read %q, %v; want the status byte \"served\", then the echo of every byte, the first included", buf, err)
	}
	if n := h.starts.Load(); n != 1 {
		t.Fatalf("starts = %d after the first byte, want 1", n)
	}
	waitAhead(t, g, 0)
}

func TestAnUnusedConnectionMadeAheadIsClosedAtItsBound(t *testing.T) {
	h := &fakeHost{addr: echoEngine(t)}
	g := startGatewayOpts(t, h, gatewayOptions{config: func(c *Config) { c.AheadIdleTimeout = 100 * time.Millisecond }})
	c := g.dial(t, g.client, g.ca, wire.ProtoAhead)
	wantNotServed(t, c)
	eventually(t, "the unused connection counted", func() bool {
		return testutil.ToFloat64(g.pool.metrics.conns.WithLabelValues("ahead_unused")) == 1
	})
	if n := h.starts.Load(); n != 0 {
		t.Fatalf("starts = %d, want 0", n)
	}
	if n := g.srv.openConns(); n != 0 {
		t.Fatalf("%d connections still open", n)
	}
}

func TestShutdownClosesUnusedConnectionsMadeAheadAtOnce(t *testing.T) {
	h := &fakeHost{addr: echoEngine(t)}
	g := startGatewayOpts(t, h, gatewayOptions{config: func(c *Config) { c.AheadIdleTimeout = time.Hour }})
	c := g.dial(t, g.client, g.ca, wire.ProtoAhead)
	waitAhead(t, g, 1)
	// Within the drain's bound: a spare that held the drain would make it
	// force, and Shutdown would say so.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := g.srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown with an unused connection made ahead: %v; want it drained at once", err)
	}
	wantNotServed(t, c)
	if n := h.starts.Load(); n != 0 {
		t.Fatalf("starts = %d, want 0", n)
	}
}

func TestAConnectionMadeAheadIsJudgedAgainAtItsFirstByte(t *testing.T) {
	for _, tc := range []struct {
		name   string
		reason string
		refuse func(*atomic.Bool, *Config)
	}{
		{"a policy changed since its handshake", "policy", func(no *atomic.Bool, c *Config) {
			c.Authorize = func(identity.Peer) error {
				if no.Load() {
					return errors.New("not any more")
				}
				return nil
			}
		}},
		{"a certificate revoked since its handshake", "revoked", func(no *atomic.Bool, c *Config) {
			c.TLS.VerifyConnection = func(tls.ConnectionState) error {
				if no.Load() {
					return errors.New("certificate revoked")
				}
				return nil
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var no atomic.Bool
			h := &fakeHost{addr: echoEngine(t)}
			g := startGatewayOpts(t, h, gatewayOptions{config: func(c *Config) { tc.refuse(&no, c) }})
			c := g.dial(t, g.client, g.ca, wire.ProtoAhead)
			waitAhead(t, g, 1)
			no.Store(true)
			if _, err := c.Write([]byte("ping")); err != nil {
				t.Fatal(err)
			}
			wantNotServed(t, c)
			if n := h.starts.Load(); n != 0 {
				t.Fatalf("starts = %d, want 0", n)
			}
			if n := testutil.ToFloat64(g.pool.metrics.refused.WithLabelValues(tc.reason)); n != 1 {
				t.Fatalf("refusals for %s = %v, want 1", tc.reason, n)
			}
		})
	}
}

func TestAHeldClientsEarlyBytesAreNotKeptOnceReplayed(t *testing.T) {
	h := &heldConn{early: make([]byte, 3, 512)}
	buf := make([]byte, 2)
	for range 2 {
		if _, err := h.Read(buf); err != nil {
			t.Fatal(err)
		}
	}
	if h.early != nil {
		t.Fatalf("after the early bytes were read, %d bytes of the watcher's buffer are still held", cap(h.early))
	}
}
