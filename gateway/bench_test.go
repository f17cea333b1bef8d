package gateway

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"os"
	"runtime"
	"runtime/pprof"
	"testing"
	"time"

	"github.com/wakegate/wakegate/certs"
	"github.com/wakegate/wakegate/wire"
)

// benchGateway is a gateway serving one client certificate, its engine a
// plain TCP echo (the engine hop's TLS is the proxy package's benchmarks).
type benchGateway struct {
	addr string
	host *fakeHost
	cli  *tls.Config
}

func startBenchGateway(b *testing.B, idle time.Duration) *benchGateway {
	b.Helper()
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	b.Cleanup(func() { echo.Close() })
	ca, err := certs.Init(b.TempDir(), "bench", nil)
	if err != nil {
		b.Fatal(err)
	}
	srvLeaf, err := ca.Issue(certs.Server, "gateway", []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	cliLeaf, err := ca.Issue(certs.Client, "ci", nil, time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	h := &fakeHost{addr: "tcp://" + echo.Addr().String()}
	pool, err := NewPoolWithPolicy(context.Background(), h, EngineConfig{Probe: readyProbe, Idle: idle, WakeTimeout: 5 * time.Second}, DefaultPolicy)
	if err != nil {
		b.Fatal(err)
	}
	sc, cc := srvLeaf.TLSCertificate(), cliLeaf.TLSCertificate()
	srv, err := NewServer(Config{
		TLS:  certs.ServerTLS(func() *tls.Certificate { return sc }, ca.Pool()),
		Pool: pool, Dial: plainDial, MaxConnsPerIdentity: 1 << 20,
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
	return &benchGateway{addr: ln.Addr().String(), host: h, cli: cli}
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
	g := startBenchGateway(b, time.Hour)
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
		b.StartTimer()
	}
}

// BenchmarkColdConnect is the wake path: a connection that finds its
// engine stopped, through start (a host that answers at once, an engine
// ready at its first probe), the dial and the first byte back. What it
// measures is the gateway's own part of a cold connect.
func BenchmarkColdConnect(b *testing.B) {
	g := startBenchGateway(b, time.Millisecond)
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
