package connect

import (
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/wakegate/wakegate/internal/testserve"
	"github.com/wakegate/wakegate/proxy"
	"github.com/wakegate/wakegate/wire"
)

// aheadGateway stands in for a gateway that takes connections made ahead of
// need: it counts handshakes by protocol, holds each ahead connection until
// its first byte, and answers every connection "got:" and what it read
// until the client half-closes.
type aheadGateway struct {
	addr   string
	client *tls.Config

	mu     sync.Mutex // guards protos and idle
	protos []string   // negotiated, one per handshake
	idle   map[net.Conn]bool
	unused int // ahead connections that ended without a byte
	change chan struct{}

	// refuseUsed makes the gateway answer a spare's first byte "not
	// served" and close it, as one that closed the spare unused just as
	// the client began to use it.
	refuseUsed atomic.Bool
}

func startAheadGateway(t testing.TB, protos ...string) *aheadGateway {
	t.Helper()
	ca := newTestCA(t)
	cfg := ca.server.Clone()
	cfg.NextProtos = protos
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := &aheadGateway{addr: ln.Addr().String(), client: ca.client, idle: map[net.Conn]bool{}, change: make(chan struct{}, 64)}
	testserve.Serve(t, ln, func(c net.Conn) {
		c.SetDeadline(time.Now().Add(15 * time.Second)) // a bound for a test's connection
		tc := tls.Server(c, cfg)
		if err := tc.Handshake(); err != nil {
			return
		}
		proto := tc.ConnectionState().NegotiatedProtocol
		g.note(func() { g.protos = append(g.protos, proto) })
		if proto == wire.ProtoAhead {
			g.note(func() { g.idle[c] = true })
			var b [1]byte
			n, _ := tc.Read(b[:])
			refuse := g.refuseUsed.Load()
			if n == 0 || refuse {
				// Closed unused, as a gateway does at its bound or its
				// shutdown, before it is counted: the client sees it.
				tc.Write([]byte{wire.AheadNotServed})
				c.Close()
			}
			g.note(func() {
				delete(g.idle, c)
				if n == 0 || refuse {
					g.unused++
				}
			})
			if n == 0 || refuse {
				return
			}
			tc.Write([]byte{wire.AheadServed})
			tc.Write([]byte("got:" + string(b[:])))
		} else {
			tc.Write([]byte("got:"))
		}
		io.Copy(tc, tc)
		tc.CloseWrite()
	})
	return g
}

func (g *aheadGateway) note(f func()) {
	g.mu.Lock()
	f()
	g.mu.Unlock()
	select {
	case g.change <- struct{}{}:
	default:
	}
}

// waitFor polls cond, under the gateway's lock, until it holds.
func (g *aheadGateway) waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		g.mu.Lock()
		ok := cond()
		g.mu.Unlock()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			g.mu.Lock()
			defer g.mu.Unlock()
			t.Fatalf("not within 15s: %s (handshakes %v, idle %d, unused %d)", what, g.protos, len(g.idle), g.unused)
		}
		select {
		case <-g.change:
		case <-time.After(10 * time.Millisecond): // polling with a deadline
		}
	}
}

func (g *aheadGateway) count(proto string) int {
	n := 0
	for _, p := range g.protos {
		if p == proto {
			n++
		}
	}
	return n
}

// dialledOnDemand is how many connections were dialled on demand.
func (g *aheadGateway) dialledOnDemand() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.count(wire.ProtoProxy)
}

// closeIdle closes, from the gateway's side, every ahead connection still
// unused, as a gateway that shuts down does: each handler's read ends and it
// closes the connection before counting it unused.
func (g *aheadGateway) closeIdle() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	for c := range g.idle {
		c.SetReadDeadline(time.Unix(1, 0))
	}
	return len(g.idle)
}

func TestNewConnectionsStartOnConnectionsMadeAhead(t *testing.T) {
	noLeaks(t, func(t *testing.T) {
		g := startAheadGateway(t, wire.ProtoProxy, wire.ProtoWake, wire.ProtoAhead)
		_, addr, _ := startSidecar(t, Config{Gateways: []string{g.addr}, TLS: g.client, Ahead: 2})
		g.waitFor(t, "two connections made ahead", func() bool { return len(g.idle) == 2 })
		for i, msg := range []string{"one", "two", "three"} {
			roundTrip(t, addr, msg)
			// Each is carried on a spare, whose place is filled again.
			g.waitFor(t, "the spare made again", func() bool { return len(g.idle) == 2 && g.count(wire.ProtoAhead) == 3+i })
		}
		if n := g.dialledOnDemand(); n != 0 {
			t.Fatalf("%d connections were dialled on demand with spares ready", n)
		}
	})
}

func TestASpareTheGatewayClosedIsNotHandedOut(t *testing.T) {
	g := startAheadGateway(t, wire.ProtoProxy, wire.ProtoAhead)
	_, addr, _ := startSidecar(t, Config{Gateways: []string{g.addr}, TLS: g.client, Ahead: 2})
	g.waitFor(t, "two connections made ahead", func() bool { return len(g.idle) == 2 })
	if n := g.closeIdle(); n != 2 {
		t.Fatalf("closed %d spares, want 2", n)
	}
	g.waitFor(t, "the closes seen", func() bool { return g.unused == 2 })
	// The client's connection goes through: not on a closed spare.
	roundTrip(t, addr, "after the gateway closed its spares")
}

func TestAGatewayWithoutConnectionsMadeAheadIsServedOnDemand(t *testing.T) {
	g := startAheadGateway(t, wire.ProtoProxy, wire.ProtoWake)
	log := &recorder{}
	_, addr, _ := startSidecar(t, Config{Gateways: []string{g.addr}, TLS: g.client, Ahead: 2, Log: slog.New(log)})
	roundTrip(t, addr, "on demand")
	roundTrip(t, addr, "again")
	if proxied := g.dialledOnDemand(); proxied != 2 {
		t.Fatalf("%d connections dialled on demand, want 2", proxied)
	}
	g.waitFor(t, "a log line that says spares are off", func() bool {
		log.mu.Lock()
		defer log.mu.Unlock()
		return slices.ContainsFunc(log.msgs, func(m string) bool { return strings.Contains(m, "does not take connections made ahead") })
	})
}

func TestSparesAreMadeAnewAtTheirAge(t *testing.T) {
	g := startAheadGateway(t, wire.ProtoProxy, wire.ProtoAhead)
	sc, _, served := startSidecarEdited(t, Config{Gateways: []string{g.addr}, TLS: g.client, Ahead: 1},
		func(sc *Sidecar) { sc.spares.maxAge = 50 * time.Millisecond })
	g.waitFor(t, "spares retired unused and made again", func() bool { return g.unused >= 2 && len(g.idle) == 1 })
	if err := sc.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	served()
	// Shutdown closes the spare it held.
	g.waitFor(t, "no spare left open", func() bool { return len(g.idle) == 0 })
	if n := sc.spares.count(); n != 0 {
		t.Fatalf("%d spares held after Shutdown", n)
	}
}

func TestAStreamOnASpareTheGatewayDidNotServeMovesToANewConnection(t *testing.T) {
	g := startAheadGateway(t, wire.ProtoProxy, wire.ProtoAhead)
	_, addr, _ := startSidecar(t, Config{Gateways: []string{g.addr}, TLS: g.client, Ahead: 1})
	g.waitFor(t, "a connection made ahead", func() bool { return len(g.idle) == 1 })
	g.refuseUsed.Store(true)
	// Every byte arrives, once, through a connection dialled on demand.
	roundTrip(t, addr, "sent on the spare, then again")
	if n := g.dialledOnDemand(); n != 1 {
		t.Fatalf("%d connections dialled on demand, want 1 (the stream moved there)", n)
	}
}

func TestASpareMadeWithARenewedCertificateIsNotHandedOut(t *testing.T) {
	g := startAheadGateway(t, wire.ProtoProxy, wire.ProtoAhead)
	var renewed atomic.Bool
	tc := g.client.Clone()
	first, err := g.client.GetClientCertificate(&tls.CertificateRequestInfo{})
	if err != nil {
		t.Fatal(err)
	}
	// The same key pair in a new *tls.Certificate: what a renewal hands out.
	second := *first
	tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		if renewed.Load() {
			return &second, nil
		}
		return first, nil
	}
	_, addr, _ := startSidecar(t, Config{Gateways: []string{g.addr}, TLS: tc, Ahead: 1})
	g.waitFor(t, "a connection made ahead", func() bool { return len(g.idle) == 1 })
	renewed.Store(true)
	roundTrip(t, addr, "after the renewal")
	if n := g.dialledOnDemand(); n != 1 {
		t.Fatalf("%d connections dialled on demand, want 1: the spare of the old certificate is not used", n)
	}
}

func TestAnIdleSidecarHoldsNoSpares(t *testing.T) {
	g := startAheadGateway(t, wire.ProtoProxy, wire.ProtoAhead)
	sc, addr, _ := startSidecarEdited(t, Config{Gateways: []string{g.addr}, TLS: g.client, Ahead: 1},
		func(sc *Sidecar) { sc.spares.linger = 300 * time.Millisecond })
	g.waitFor(t, "a connection made ahead at the start", func() bool { return g.count(wire.ProtoAhead) == 1 })
	// No local connection within the linger: the spare is closed and none
	// is made again (a gateway that stops when nothing is connected can).
	g.waitFor(t, "the spare closed", func() bool { return g.unused == 1 && len(g.idle) == 0 })
	if n, want := sc.spares.count(), sc.spares.want(); n != 0 || want {
		t.Fatalf("idle sidecar: %d spares held, wants more: %v; want none", n, want)
	}
	// The next connection dials on demand, and spares come back.
	roundTrip(t, addr, "after a quiet while")
	g.waitFor(t, "spares made again", func() bool { return g.count(wire.ProtoAhead) == 2 && len(g.idle) == 1 })
	if n := g.dialledOnDemand(); n != 1 {
		t.Fatalf("%d connections dialled on demand, want 1", n)
	}
}

func TestAStreamOnASpareEndedByItsDeadlineIsNotMoved(t *testing.T) {
	g := startAheadGateway(t, wire.ProtoProxy, wire.ProtoAhead)
	redials := 0
	spare, err := tls.Dial("tcp", g.addr, func() *tls.Config {
		c := g.client.Clone()
		c.NextProtos = []string{wire.ProtoAhead}
		return c
	}())
	if err != nil {
		t.Fatal(err)
	}
	defer spare.Close()
	a := newAheadStream(spare, func() (net.Conn, error) { redials++; return nil, errors.New("no redial expected") }, func() {})
	// A Join ending (its context done) expires the pending status read.
	a.SetReadDeadline(time.Unix(1, 0))
	if _, err := a.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past the deadline = %v, want the deadline's error", err)
	}
	if redials != 0 {
		t.Fatalf("%d redials for a stream the proxy ended", redials)
	}
}

// count is how many spares are ready.
func (p *spares) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.ready)
}

func TestAStreamOnASpareTooLongToKeepIsNotMoved(t *testing.T) {
	// A stand-in gateway that reads everything, then answers "not served".
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	testserve.Serve(t, ln, func(c net.Conn) {
		c.SetDeadline(time.Now().Add(15 * time.Second))
		io.CopyN(io.Discard, c, replayLimit+1)
		c.Write([]byte{wire.AheadNotServed})
	})
	spare, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	redials := 0
	a := newAheadStream(spare, func() (net.Conn, error) { redials++; return nil, errors.New("no redial expected") }, func() {})
	defer a.Close()
	if n, err := a.Write(make([]byte, replayLimit+1)); err != nil || n != replayLimit+1 {
		t.Fatalf("write = %d, %v", n, err)
	}
	a.SetReadDeadline(time.Now().Add(15 * time.Second))
	if _, err := a.Read(make([]byte, 1)); !errors.Is(err, errNotServed) {
		t.Fatalf("read after more than replayLimit was sent = %v, want errNotServed", err)
	}
	if redials != 0 {
		t.Fatalf("%d redials with bytes that were not all kept", redials)
	}
}

func TestASpareIsReplacedOnlyOnceItsStreamIsUnderway(t *testing.T) {
	noRedial := func() (net.Conn, error) { return nil, errors.New("no redial expected") }
	t.Run("after the first reply went on", func(t *testing.T) {
		gw, side := net.Pipe()
		defer side.Close()
		var underway atomic.Int32
		a := newAheadStream(gw, noRedial, func() { underway.Add(1) })
		defer a.Close()
		wrote := make(chan error, 1)
		go func() {
			_, err := side.Write([]byte{wire.AheadServed})
			if err == nil {
				_, err = side.Write([]byte("reply"))
			}
			if err == nil {
				_, err = side.Write([]byte("more"))
			}
			wrote <- err
		}()
		buf := make([]byte, 16)
		n, err := a.Read(buf)
		if err != nil || string(buf[:n]) != "reply" {
			t.Fatalf("first read = %q, %v; want the reply without the status", buf[:n], err)
		}
		if got := underway.Load(); got != 0 {
			t.Fatalf("underway called %d times before the first reply went on to the client", got)
		}
		// Join wrote the reply to the client and reads again: under way.
		if n, err = a.Read(buf); err != nil || string(buf[:n]) != "more" {
			t.Fatalf("second read = %q, %v", buf[:n], err)
		}
		if got := underway.Load(); got != 1 {
			t.Fatalf("underway called %d times once the reply went on, want 1", got)
		}
		if err := <-wrote; err != nil {
			t.Fatal(err)
		}
		a.Close()
		if got := underway.Load(); got != 1 {
			t.Fatalf("underway called %d times after the close, want still 1", got)
		}
	})
	t.Run("a stream that ends first", func(t *testing.T) {
		gw, side := net.Pipe()
		var underway atomic.Int32
		a := newAheadStream(gw, noRedial, func() { underway.Add(1) })
		go func() {
			side.Write([]byte{wire.AheadServed})
			side.Close()
		}()
		if _, err := a.Read(make([]byte, 16)); !errors.Is(err, io.EOF) {
			t.Fatalf("read of a stream closed after its status = %v, want EOF", err)
		}
		if got := underway.Load(); got != 1 {
			t.Fatalf("underway called %d times for a stream that ended with no reply, want 1", got)
		}
		a.Close()
		if got := underway.Load(); got != 1 {
			t.Fatalf("underway called %d times after the close, want still 1", got)
		}
	})
}

func TestAStreamOnASpareBecomesItsConnectionOnceServedAndAnswered(t *testing.T) {
	noRedial := func() (net.Conn, error) { return nil, errors.New("no redial expected") }
	gw, side := net.Pipe()
	defer side.Close()
	// The connection a stream settles on: a TLS one over a socket that
	// gathers a copy's writes (no handshake is needed to hand it round).
	sock := proxy.Gather(gw)
	tc := tls.Client(sock, &tls.Config{})
	var underway atomic.Int32
	a := newAheadStream(tc, noRedial, func() { underway.Add(1) })
	defer a.Close()
	if s, nc := a.Socket(), a.NetConn(); s != nil || nc != nil {
		t.Fatalf("before the gateway's status: Socket %v, NetConn %v; want nil, nil: the stream may yet move", s, nc)
	}
	a.served.Store(true)
	if nc := a.NetConn(); nc != sock {
		t.Fatalf("served: NetConn %v, want the socket under the connection, for a copy to gather its writes", nc)
	}
	if s := a.Socket(); s != nil {
		t.Fatal("served, no reply read yet: Socket offered the connection, which would skip the reply's mark")
	}
	a.replied.Store(true)
	if s := a.Socket(); s != tc {
		t.Fatalf("served and answered: Socket %v, want the connection itself", s)
	}
	if got := underway.Load(); got != 1 {
		t.Fatalf("underway called %d times once the copy read the connection itself, want 1", got)
	}
}

// TestAheadStreamStaysInItsSizeClass: every stream on a spare keeps one
// aheadStream for its life. At 96 bytes (this session's first version) the
// sidecar's idle RSS per connection rose by about 1 KiB, as the gateway's
// did by 2 KiB for its firstContact: a long-lived object per connection
// in a size class the TLS handshakes fill and empty costs more than its
// bytes. Within 80 bytes it costs what it holds.
func TestAheadStreamStaysInItsSizeClass(t *testing.T) {
	if n := unsafe.Sizeof(aheadStream{}); n > 80 {
		t.Fatalf("aheadStream is %d bytes, want at most 80: order its fields so that it packs", n)
	}
}
