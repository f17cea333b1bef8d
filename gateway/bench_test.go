package gateway

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"os"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wakegate/wakegate/certs"
	"github.com/wakegate/wakegate/proxy"
	"github.com/wakegate/wakegate/wire"
)

// benchGateway is a gateway serving one client certificate, its engine an
// echo of one read per connection, over plain TCP or mTLS (engineTLS).
type benchGateway struct {
	addr   string
	host   *fakeHost
	cli    *tls.Config
	unpark func() // closes the echo's parked connections
}

// startBenchEcho echoes the first read of each connection. With park, it
// then keeps the connection open with no goroutine, so that the goroutines
// an idle connection costs the process are the gateway's alone; without,
// it closes the connection once the gateway has closed its side, as an
// engine does, so that the stream ends and the engine can go idle. With
// srv, connections are TLS. unpark closes the connections parked so far.
func startBenchEcho(b *testing.B, srv *tls.Config, park bool) (echo net.Listener, unpark func()) {
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	var mu sync.Mutex
	var parked []net.Conn
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			if srv != nil {
				c = tls.Server(c, srv)
			}
			mu.Lock()
			parked = append(parked, c)
			mu.Unlock()
			go func() {
				buf := make([]byte, 512)
				if n, err := c.Read(buf); err == nil {
					c.Write(buf[:n])
				}
				if !park {
					io.Copy(io.Discard, c)
					c.Close()
				}
			}()
		}
	}()
	unpark = func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range parked {
			c.Close()
		}
		parked = nil
	}
	b.Cleanup(func() {
		echo.Close()
		unpark()
	})
	return echo, unpark
}

// startBenchGateway starts a gateway whose engine stops after idle; park
// is startBenchEcho's.
func startBenchGateway(b *testing.B, idle time.Duration, engineTLS, park bool) *benchGateway {
	b.Helper()
	ca, err := certs.Init(b.TempDir(), "bench", nil)
	if err != nil {
		b.Fatal(err)
	}
	sc, cc := leafPair(b, ca, "gateway", "ci")
	var echoTLS *tls.Config
	dial := plainDial
	if engineTLS {
		ec, gc := leafPair(b, ca, "engine", "gateway")
		echoTLS = certs.ServerTLS(func() *tls.Certificate { return ec }, ca.Pool())
		engCli := certs.ClientTLS(func() *tls.Certificate { return gc }, ca.Pool(), "127.0.0.1")
		// The binary's dial (engine.Dialer): TLS over a Gathered socket,
		// whose idle stream parks.
		dial = func(ctx context.Context, addr string) (net.Conn, error) {
			return proxy.DialTLS(ctx, &net.Dialer{}, strings.TrimPrefix(addr, "tcp://"), engCli)
		}
	}
	echo, unpark := startBenchEcho(b, echoTLS, park)
	h := &fakeHost{addr: "tcp://" + echo.Addr().String()}
	pool, err := NewPoolWithPolicy(context.Background(), h, EngineConfig{Probe: readyProbe, Idle: idle, WakeTimeout: 5 * time.Second}, DefaultPolicy)
	if err != nil {
		b.Fatal(err)
	}
	srv, err := NewServer(Config{
		TLS:  certs.ServerTLS(func() *tls.Certificate { return sc }, ca.Pool()),
		Pool: pool, Dial: dial, MaxConnsPerIdentity: 1 << 20,
	})
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	served := make(chan struct{})
	go func() { defer close(served); srv.Serve(ln) }()
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		<-served
		pool.Close()
	})
	cli := certs.ClientTLS(func() *tls.Certificate { return cc }, ca.Pool(), "127.0.0.1")
	cli.NextProtos = []string{wire.ProtoProxy}
	return &benchGateway{addr: ln.Addr().String(), host: h, cli: cli, unpark: unpark}
}

// echoConn opens a proxied connection and echoes one byte through it.
func (g *benchGateway) echoConn(b *testing.B) *tls.Conn {
	c, err := tls.Dial("tcp", g.addr, g.cli)
	if err != nil {
		b.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	one := []byte{1}
	if _, err := c.Write(one); err != nil {
		b.Fatal(err)
	}
	if _, err := io.ReadFull(c, one); err != nil {
		b.Fatal(err)
	}
	c.SetDeadline(time.Time{})
	return c
}

// BenchmarkIdleConnection reports what one idle proxied connection costs
// the gateway's process (heap and stacks in use after collection, the
// clients' ends included: subtract BenchmarkIdleJoin's TLS-TCP pair for
// the client's own share). Run with -memprofile to see by whom.
func BenchmarkIdleConnection(b *testing.B) {
	for _, engineTLS := range []bool{false, true} {
		name := "engine-plain"
		if engineTLS {
			name = "engine-mTLS"
		}
		b.Run(name, func(b *testing.B) { benchIdleConnection(b, engineTLS) })
	}
}

func benchIdleConnection(b *testing.B, engineTLS bool) {
	g := startBenchGateway(b, time.Hour, engineTLS, true)
	g.echoConn(b).Close() // the engine is awake
	const conns = 500
	for range b.N {
		before, stackBefore := memInUse()
		held := make([]*tls.Conn, 0, conns)
		for range conns {
			held = append(held, g.echoConn(b))
		}
		after, stackAfter := memInUse()
		b.ReportMetric(float64(after-before)/conns, "B/idle-conn")
		b.ReportMetric(float64(stackAfter-stackBefore)/conns, "stack-B/idle-conn")
		// WAKEGATE_BENCH_HEAP=FILE: a heap profile while the connections
		// are held (with -memprofilerate=1 for every allocation).
		if path := os.Getenv("WAKEGATE_BENCH_HEAP"); path != "" {
			f, err := os.Create(path)
			if err != nil {
				b.Fatal(err)
			}
			pprof.WriteHeapProfile(f)
			f.Close()
		}
		b.StopTimer()
		for _, c := range held {
			c.Close()
		}
		g.unpark() // the streams end, and their descriptors with them
		b.StartTimer()
	}
}

// BenchmarkColdConnect is the wake path: a connection that finds its
// engine stopped, through start (a host that answers at once, an engine
// ready at its first probe), the dial and the first byte back. What it
// measures is the gateway's own part of a cold connect.
func BenchmarkColdConnect(b *testing.B) {
	g := startBenchGateway(b, time.Millisecond, false, false)
	for i := range b.N {
		// Wait (polling, bounded) until the idle stop of the last round
		// has happened, so this connection finds the engine stopped.
		b.StopTimer()
		for give := time.Now().Add(10 * time.Second); int(g.host.stops.Load()) < i; {
			if time.Now().After(give) {
				b.Fatalf("engine not stopped after round %d", i)
			}
			runtime.Gosched()
		}
		b.StartTimer()
		g.echoConn(b).Close()
	}
	if starts := int(g.host.starts.Load()); starts < b.N {
		b.Fatalf("%d starts for %d connections: not every connection was cold", starts, b.N)
	}
}

// memInUse is the heap and stacks in use, and the stacks alone, after two
// collections (the second shrinks the stacks the first found mostly
// unused).
func memInUse() (total, stacks int64) {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapInuse + m.StackInuse), int64(m.StackInuse)
}
