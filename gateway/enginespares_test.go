package gateway

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/wakegate/wakegate/internal/testserve"
)

// fakeSpare is a stream made ahead to a test engine: Use hands its
// connection out as it is.
type fakeSpare struct {
	c    net.Conn
	used *atomic.Int32
}

func (s *fakeSpare) Use() (net.Conn, error) { s.used.Add(1); return s.c, nil }
func (s *fakeSpare) Close() error           { return s.c.Close() }

// sparesHost counts what a gateway with streams made ahead asks of its
// engine: streams dialled on demand, spares made and used.
type sparesHost struct {
	dials, made, used atomic.Int32
	// spareAddr, if set, is where spares go instead of the engine's
	// address (an engine process since replaced, say).
	spareAddr string
}

func (h *sparesHost) config(cfg *Config) {
	cfg.Dial = func(ctx context.Context, addr string) (net.Conn, error) {
		h.dials.Add(1)
		return plainDial(ctx, addr)
	}
	cfg.EngineAhead = 2
	cfg.DialAhead = func(ctx context.Context, addr string) (EngineSpare, error) {
		if h.spareAddr != "" {
			addr = h.spareAddr
		}
		c, err := plainDial(ctx, addr)
		if err != nil {
			return nil, err
		}
		h.made.Add(1)
		return &fakeSpare{c: c, used: &h.used}, nil
	}
}

// echoThrough sends msg on a new stream through the gateway and reads it
// back.
func (g *testGateway) echoThrough(t *testing.T, msg string) {
	t.Helper()
	c := g.dial(t, g.client, g.ca, "")
	defer c.Close()
	c.Write([]byte(msg))
	got := make([]byte, len(msg))
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != msg {
		t.Fatalf("echo = %q, %v; want %q", got, err, msg)
	}
}

func (s *Server) sparesReady() int {
	s.spares.mu.Lock()
	defer s.spares.mu.Unlock()
	n := 0
	for _, a := range s.spares.byAddr {
		n += len(a.ready)
	}
	return n
}

// TestStreamsGoOnEngineSparesMadeOnceTheEngineWoke: no spare is made to a
// stopped engine (so none wakes it); once a stream woke it, EngineAhead
// are kept ready, and the next stream goes on one instead of a dial.
func TestStreamsGoOnEngineSparesMadeOnceTheEngineWoke(t *testing.T) {
	sh := &sparesHost{}
	h := &fakeHost{addr: echoEngine(t)}
	g := startGatewayOpts(t, h, gatewayOptions{config: sh.config})
	if n := sh.made.Load(); n != 0 {
		t.Fatalf("%d spares made before any stream", n)
	}
	g.echoThrough(t, "first")
	if d, u := sh.dials.Load(), sh.used.Load(); d+u != 1 {
		t.Fatalf("first stream: %d dials and %d spares used, want one of them", d, u)
	}
	eventually(t, "two spares ready", func() bool { return g.srv.sparesReady() == 2 })
	d0, u0 := sh.dials.Load(), sh.used.Load()
	g.echoThrough(t, "second")
	if d, u := sh.dials.Load()-d0, sh.used.Load()-u0; d != 0 || u != 1 {
		t.Fatalf("second stream: %d dials and %d spares used, want 0 and 1", d, u)
	}
	eventually(t, "the spare replaced", func() bool { return g.srv.sparesReady() == 2 })
	if n := h.starts.Load(); n != 1 {
		t.Fatalf("%d wakes, want 1", n)
	}
}

// TestAStaleEngineSpareIsNotTheEnginesFailure: a stream whose spare fails
// before the engine answered (here every spare goes to a socket that
// closes at once) is sent again on a stream dialled now; the engine is not
// taken for dead and woken again.
func TestAStaleEngineSpareIsNotTheEnginesFailure(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	testserve.Serve(t, ln, func(c net.Conn) { c.Close() })
	sh := &sparesHost{spareAddr: "tcp://" + ln.Addr().String()}
	h := &fakeHost{addr: echoEngine(t)}
	g := startGatewayOpts(t, h, gatewayOptions{config: sh.config})
	g.echoThrough(t, "first")
	eventually(t, "a spare ready", func() bool { return g.srv.sparesReady() > 0 })
	d0, u0 := sh.dials.Load(), sh.used.Load()
	g.echoThrough(t, "second, on a dead spare")
	if d, u := sh.dials.Load()-d0, sh.used.Load()-u0; d != 1 || u != 1 {
		t.Fatalf("%d dials and %d spares used, want 1 and 1", d, u)
	}
	if n := h.starts.Load(); n != 1 {
		t.Fatalf("%d wakes: a dead spare was taken for a dead engine", n)
	}
}

// TestEngineSparesOnlyForRunningEnginesUsedLately: spares are made only
// for an address a stream went to within the linger and whose engine
// runs; those older than maxAge, and all once the linger passed, are
// closed; a failed attempt backs off.
func TestEngineSparesOnlyForRunningEnginesUsedLately(t *testing.T) {
	var running atomic.Bool
	var mu sync.Mutex
	var made []net.Conn
	fail := atomic.Bool{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	testserve.Serve(t, ln, func(c net.Conn) { io.Copy(io.Discard, c) })
	dial := func(ctx context.Context, addr string) (EngineSpare, error) {
		if fail.Load() {
			return nil, errors.New("refused")
		}
		c, err := plainDial(ctx, "tcp://"+ln.Addr().String())
		if err != nil {
			return nil, err
		}
		mu.Lock()
		made = append(made, c)
		mu.Unlock()
		return &fakeSpare{c: c, used: new(atomic.Int32)}, nil
	}
	p := newEngineSpares(2, dial, func(string) bool { return running.Load() }, prometheus.NewGauge(prometheus.GaugeOpts{Name: "g"}), quiet)
	p.maxAge, p.linger = 300*time.Millisecond, time.Hour
	ready := func() int {
		p.mu.Lock()
		defer p.mu.Unlock()
		if a := p.byAddr["e"]; a != nil {
			return len(a.ready)
		}
		return 0
	}
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(made)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); p.run(ctx) }()
	defer func() { cancel(); <-done }()

	// Not running: a stream to it makes no spare.
	if c := p.take("e"); c != nil {
		t.Fatal("a spare from an empty pool")
	}
	running.Store(true)
	p.wake()
	eventually(t, "two spares once the engine runs", func() bool { return ready() == 2 })
	// Retired at maxAge, and made again while the address is in use.
	eventually(t, "spares retired and made again", func() bool { return count() >= 4 && ready() == 2 })
	// A failure backs off: no dial storm while the engine refuses.
	fail.Store(true)
	eventually(t, "spares retired", func() bool { return ready() == 0 })
	before := count()
	p.mu.Lock()
	retryAt := p.byAddr["e"].retryAt
	p.mu.Unlock()
	if !retryAt.After(time.Now().Add(-time.Second)) {
		t.Fatalf("no backoff after a failed attempt (retry at %v)", retryAt)
	}
	if count() != before {
		t.Fatal("spares made while the dial fails")
	}
	// The linger's end closes them all and forgets the address.
	fail.Store(false)
	p.mu.Lock()
	p.linger = 200 * time.Millisecond
	p.byAddr["e"].retryAt = time.Time{}
	p.mu.Unlock()
	p.wake()
	eventually(t, "the address forgotten after the linger", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return len(p.byAddr) == 0
	})
}

// TestAWakeMakesSparesWhileTheEngineStarts: spares for an engine being
// woken are made while it starts (its front answers handshakes before it
// is ready), so the held client's own stream goes on one.
func TestAWakeMakesSparesWhileTheEngineStarts(t *testing.T) {
	sh := &sparesHost{}
	h := &fakeHost{addr: echoEngine(t)}
	ready := make(chan struct{})
	probe := func(ctx context.Context, _ string) error {
		select {
		case <-ready:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	g := startGatewayOpts(t, h, gatewayOptions{config: sh.config, probe: probe})
	c := g.dial(t, g.client, g.ca, "")
	c.Write([]byte("held"))
	eventually(t, "spares made while the engine starts", func() bool { return g.srv.sparesReady() == 2 })
	if st := g.pool.Engines()[0].Status().State; st != Starting {
		t.Fatalf("engine %s, want starting: spares made only after it ran", st)
	}
	close(ready)
	got := make([]byte, 4)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "held" {
		t.Fatalf("echo = %q, %v", got, err)
	}
	if d, u := sh.dials.Load(), sh.used.Load(); d != 0 || u != 1 {
		t.Fatalf("the held client's stream: %d dials and %d spares used, want 0 and 1", d, u)
	}
}

// TestEngineSparesKeepNoEngineAwake: with spares ready and no stream open,
// the engine still stops when idle (spares hold no lease), and none is
// made to it once it stopped.
func TestEngineSparesKeepNoEngineAwake(t *testing.T) {
	sh := &sparesHost{}
	h := &fakeHost{addr: echoEngine(t)}
	g := startGatewayOpts(t, h, gatewayOptions{config: sh.config, idle: 300 * time.Millisecond})
	g.echoThrough(t, "one stream")
	eventually(t, "two spares ready", func() bool { return g.srv.sparesReady() == 2 })
	e := g.pool.Engines()[0]
	eventually(t, "the engine stopped while idle with spares ready", func() bool { return e.Status().State == Stopped })
	// Its address was used within the linger, but its engine is stopped:
	// once its spares are gone (a stopping engine closes them), none is
	// wanted for it, even with no backoff pending.
	g.srv.spares.mu.Lock()
	for _, a := range g.srv.spares.byAddr {
		for _, sp := range a.ready {
			sp.s.Close()
		}
		a.ready, a.retryAt = nil, time.Time{}
	}
	g.srv.spares.mu.Unlock()
	if addr, ok := g.srv.spares.wanted(); ok {
		t.Fatalf("a spare wanted for %s, whose engine is stopped", addr)
	}
	if n := h.starts.Load(); n != 1 {
		t.Fatalf("%d wakes, want 1", n)
	}
}

// TestEngineSparesAreMadeAgainOnceAStreamIsUnderway: taking a spare asks
// for no new one at once (its handshake would take the CPU from the very
// stream it replaces); the stream's reads from the engine ask for spares
// once the engine's first answer went on to the client, and only once.
func TestEngineSparesAreMadeAgainOnceAStreamIsUnderway(t *testing.T) {
	p := newEngineSpares(2, nil, func(string) bool { return true }, prometheus.NewGauge(prometheus.GaugeOpts{Name: "g"}), quiet)
	if c := p.take("e"); c != nil {
		t.Fatal("a spare from an empty pool")
	}
	gw, engine := net.Pipe()
	defer engine.Close()
	p.made("e", &fakeSpare{c: gw, used: new(atomic.Int32)}, nil)
	c := p.take("e")
	if c == nil {
		t.Fatal("the spare just made was not taken")
	}
	if len(p.kick) != 0 {
		t.Fatal("spares asked for as one was taken, before its stream was under way")
	}
	fc := &firstContact{spares: p}
	ce := &contactEngine{Conn: c, f: fc}
	asked := func() int { return len(p.soon) }
	wrote := make(chan error, 1)
	go func() {
		_, err := engine.Write([]byte("answer"))
		if err == nil {
			_, err = engine.Write([]byte("more"))
		}
		wrote <- err
	}()
	buf := make([]byte, 16)
	if n, err := ce.Read(buf); err != nil || string(buf[:n]) != "answer" {
		t.Fatalf("first read = %q, %v", buf[:n], err)
	}
	if n := asked(); n != 0 {
		t.Fatal("spares asked for before the engine's answer went on to the client")
	}
	if n, err := ce.Read(buf); err != nil || string(buf[:n]) != "more" {
		t.Fatalf("second read = %q, %v", buf[:n], err)
	}
	if n := asked(); n != 1 {
		t.Fatal("spares not asked for once the answer went on")
	}
	<-p.soon
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	engine.Close()
	ce.Read(buf)
	fc.goneUnderway() // as (*proxied).on does at the stream's end
	if n := asked(); n != 0 {
		t.Fatal("spares asked for a second time for one stream")
	}
}
