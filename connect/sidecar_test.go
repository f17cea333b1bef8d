package connect

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wakegate/wakegate/certs"
	"github.com/wakegate/wakegate/wire"
)

// testGateway is an mTLS server standing in for the gateway: for each
// connection it records what was negotiated, reads until the client
// half-closes, answers "got:" and what it read, and closes. With hold set
// it answers only once hold is closed.
type testGateway struct {
	addr   string
	client *tls.Config // credentials it trusts

	hold chan struct{}

	mu        sync.Mutex // guards protos and names
	protos    []string
	names     []string
	accepted  chan struct{} // one value per accepted handshake
	listening net.Listener
	wg        sync.WaitGroup // the accept loop and its handlers
	stopOnce  sync.Once
}

// testCA issues the certificates of test gateways that trust one client.
type testCA struct {
	server *tls.Config // a gateway's, naming 127.0.0.1 and localhost
	client *tls.Config // the client's, verifying the name localhost
}

func newTestCA(t testing.TB) *testCA {
	t.Helper()
	ca, err := certs.Init(t.TempDir(), "Test", nil)
	if err != nil {
		t.Fatal(err)
	}
	issue := func(kind certs.Kind, name string) func() *tls.Certificate {
		l, err := ca.Issue(kind, name, []string{"127.0.0.1", "localhost"}, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		c := l.TLSCertificate()
		return func() *tls.Certificate { return c }
	}
	server := certs.ServerTLS(issue(certs.Server, "localhost"), ca.Pool())
	server.NextProtos = []string{wire.ProtoProxy, wire.ProtoWake}
	return &testCA{server: server, client: certs.ClientTLS(issue(certs.Client, "job"), ca.Pool(), "localhost")}
}

func startTestGateway(t *testing.T, hold bool) *testGateway {
	t.Helper()
	return newTestCA(t).gateway(t, hold, "127.0.0.1:0")
}

// gateway starts a test gateway on addr (port 0: a free one; a stopped
// gateway's address: the same gateway back).
func (ca *testCA) gateway(t *testing.T, hold bool, addr string) *testGateway {
	t.Helper()
	ln, err := tls.Listen("tcp", addr, ca.server)
	if err != nil {
		t.Fatal(err)
	}
	g := &testGateway{addr: ln.Addr().String(), client: ca.client, accepted: make(chan struct{}, 16), listening: ln}
	if hold {
		g.hold = make(chan struct{})
	}
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			g.wg.Add(1)
			go func() {
				defer g.wg.Done()
				g.serve(c.(*tls.Conn))
			}()
		}
	}()
	t.Cleanup(g.stop)
	return g
}

// stop closes the listener, lets connections held finish, and waits for
// them: connections to addr are refused from then on. Safe to call twice.
func (g *testGateway) stop() {
	g.stopOnce.Do(func() {
		if g.hold != nil {
			select {
			case <-g.hold:
			default:
				close(g.hold)
			}
		}
		g.listening.Close()
		g.wg.Wait()
	})
}

func (g *testGateway) serve(c *tls.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(15 * time.Second))
	if err := c.Handshake(); err != nil {
		return
	}
	cs := c.ConnectionState()
	g.mu.Lock()
	g.protos = append(g.protos, cs.NegotiatedProtocol)
	g.names = append(g.names, cs.PeerCertificates[0].Subject.CommonName)
	g.mu.Unlock()
	g.accepted <- struct{}{}
	in, err := io.ReadAll(c)
	if err != nil {
		return
	}
	if g.hold != nil {
		<-g.hold
	}
	c.Write(append([]byte("got:"), in...))
}

// startSidecar serves a sidecar on a loopback TCP port and returns its
// address and a function that waits for Serve's result.
func startSidecar(t testing.TB, cfg Config) (sc *Sidecar, addr string, served func() error) {
	t.Helper()
	return startSidecarEdited(t, cfg, nil)
}

// startSidecarEdited is startSidecar with edit applied to the sidecar
// before it serves (a test's shorter bounds).
func startSidecarEdited(t testing.TB, cfg Config, edit func(*Sidecar)) (sc *Sidecar, addr string, served func() error) {
	t.Helper()
	sc, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		edit(sc)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var serveErr error
	go func() {
		defer close(done)
		serveErr = sc.Serve(ln)
	}()
	t.Cleanup(func() {
		sc.Shutdown(context.Background())
		<-done
	})
	return sc, ln.Addr().String(), func() error {
		<-done
		return serveErr
	}
}

// exchange writes msg, half-closes, and reads the reply to its end.
func exchange(t *testing.T, c net.Conn, msg string) (string, error) {
	t.Helper()
	c.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		return "", err
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return "", err
	}
	b, err := io.ReadAll(c)
	return string(b), err
}

// noLeaks runs f, then checks that the goroutines it started have ended.
func noLeaks(t *testing.T, f func(t *testing.T)) {
	t.Helper()
	baseline := runtime.NumGoroutine()
	t.Run("run", f)
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > baseline {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines after shutdown, baseline %d:\n%s", runtime.NumGoroutine(), baseline, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(time.Millisecond) // polling with a deadline
	}
}

func TestSidecarCarriesEachConnectionOverMTLSWithHalfClose(t *testing.T) {
	g := startTestGateway(t, false)
	_, addr, _ := startSidecar(t, Config{Gateways: []string{g.addr}, TLS: g.client})
	for _, msg := range []string{"first", "second"} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		// The gateway answers only after it saw the end of the input: the
		// local half-close must reach it while the reply still flows back.
		got, err := exchange(t, c, msg)
		c.Close()
		if err != nil || got != "got:"+msg {
			t.Fatalf("reply %q, %v; want %q", got, err, "got:"+msg)
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	for i, p := range g.protos {
		if p != wire.ProtoProxy || g.names[i] != "job" {
			t.Fatalf("connection %d reached the gateway as %q with ALPN %q; want the client's identity and %q", i, g.names[i], p, wire.ProtoProxy)
		}
	}
	if len(g.protos) != 2 {
		t.Fatalf("the gateway saw %d connections, want one per local connection", len(g.protos))
	}
}

// recorder keeps the messages of the log lines it is given.
type recorder struct {
	mu   sync.Mutex
	msgs []string
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *recorder) WithGroup(string) slog.Handler            { return r }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, rec.Message)
	return nil
}

func TestSidecarClosesALocalConnectionWhenTheGatewayIsUnreachable(t *testing.T) {
	g := startTestGateway(t, false)
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close()
	rec := &recorder{}
	sc, addr, _ := startSidecar(t, Config{Gateways: []string{deadAddr}, TLS: g.client, Log: slog.New(rec)})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(15 * time.Second))
	if n, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("local read = %d, %v; want EOF: the sidecar closes what it cannot carry", n, err)
	}
	// Shutdown waits for the handler, and with it its log line.
	if err := sc.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.msgs) != 1 || rec.msgs[0] != "connection closed: gateway unreachable" {
		t.Fatalf("log %q, want one line saying the gateway was unreachable", rec.msgs)
	}
}

func TestSidecarShutdownLetsAConnectionInFlightFinish(t *testing.T) {
	noLeaks(t, func(t *testing.T) {
		g := startTestGateway(t, true)
		sc, addr, served := startSidecar(t, Config{Gateways: []string{g.addr}, TLS: g.client})
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(15 * time.Second))
		if _, err := c.Write([]byte("build")); err != nil {
			t.Fatal(err)
		}
		c.(*net.TCPConn).CloseWrite()
		<-g.accepted

		shut := make(chan error, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			shut <- sc.Shutdown(ctx)
		}()
		// Serve returns once Shutdown has begun; the connection in flight
		// must still get its answer.
		if err := served(); !errors.Is(err, ErrServerClosed) {
			t.Fatalf("Serve = %v, want ErrServerClosed", err)
		}
		if _, err := net.Dial("tcp", addr); err == nil {
			t.Fatal("the sidecar still accepts after Shutdown began")
		}
		close(g.hold)
		got, err := io.ReadAll(c)
		if err != nil || string(got) != "got:build" {
			t.Fatalf("reply during shutdown %q, %v; want %q", got, err, "got:build")
		}
		if err := <-shut; err != nil {
			t.Fatalf("Shutdown = %v, want nil: the connection finished in time", err)
		}
		if err := sc.Shutdown(context.Background()); err != nil {
			t.Fatalf("a second Shutdown = %v, want nil", err)
		}
	})
}

func TestSidecarShutdownForcesWhatOutlivesItsBound(t *testing.T) {
	noLeaks(t, func(t *testing.T) {
		g := startTestGateway(t, true) // never answers within the test
		sc, addr, served := startSidecar(t, Config{Gateways: []string{g.addr}, TLS: g.client})
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(15 * time.Second))
		c.Write([]byte("build"))
		<-g.accepted

		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		err = sc.Shutdown(ctx)
		if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "forced closed") {
			t.Fatalf("Shutdown = %v, want the connection forced closed at its bound", err)
		}
		if n, err := c.Read(make([]byte, 1)); err == nil {
			t.Fatalf("local read after a forced shutdown = %d bytes, want the connection closed", n)
		}
		if err := served(); !errors.Is(err, ErrServerClosed) {
			t.Fatalf("Serve = %v, want ErrServerClosed", err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		if err := sc.Serve(ln); !errors.Is(err, ErrServerClosed) {
			t.Fatalf("Serve after Shutdown = %v, want ErrServerClosed", err)
		}
		close(g.hold)
	})
}

func TestNewSidecarValidatesItsConfig(t *testing.T) {
	tlsCfg := &tls.Config{}
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{TLS: tlsCfg}, "no gateway address"},
		{Config{Gateways: []string{"nonsense"}, TLS: tlsCfg}, `gateway address "nonsense"`},
		{Config{Gateways: []string{"127.0.0.1:8443"}}, "no TLS credentials"},
	} {
		if _, err := New(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v) = %v, want an error containing %q", tc.cfg, err, tc.want)
		}
	}
}
