package proxy_test

import (
	"context"
	"io"
	"net"
	"runtime"
	"testing"

	"github.com/wakegate/wakegate/proxy"
)

// The benchmarks move 1 MiB chunks one way and compare the relay against a
// direct loopback connection measured in the same run: the relay's cost is
// the ratio of their MB/s. With -benchmem, allocs/op is allocations per
// chunk: the copy loop makes none in its steady state.
const chunk = 1 << 20

// pump writes b.N chunks into w and waits until r has read them all.
func pump(b *testing.B, w, r net.Conn) {
	b.Helper()
	buf := make([]byte, chunk)
	b.SetBytes(chunk)
	done := make(chan error, 1)
	go func() {
		_, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{r}, make([]byte, 64<<10))
		done <- err
	}()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := w.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	// The reader sees EOF once the relay has passed everything on.
	w.(closeWriter).CloseWrite()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
}

func BenchmarkDirectTCP(b *testing.B) {
	a, c := tcpPair(b)
	pump(b, c, a)
}

func BenchmarkDirectTLS(b *testing.B) {
	srv, cli, _ := tlsPair(b, newTLS(b))
	pump(b, cli, srv)
}

// relay returns the two outer ends of a Join between two loopback pairs.
func relay(b *testing.B, left, right func(testing.TB) (inner, outer net.Conn)) (in, out net.Conn) {
	li, lo := left(b)
	ri, ro := right(b)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); proxy.Join(ctx, li, ri, "a", "b", 0) }()
	b.Cleanup(func() { cancel(); <-done })
	return lo, ro
}

func plain(tb testing.TB) (net.Conn, net.Conn) { return tcpPair(tb) }

// tlsSide is a Join's TLS end as the gateway holds a client's: the server
// end, its peer the client.
func tlsSide(cfg tlsConfigs) func(testing.TB) (net.Conn, net.Conn) {
	return func(tb testing.TB) (net.Conn, net.Conn) {
		srv, cli, _ := tlsPair(tb, cfg)
		return srv, cli
	}
}

func BenchmarkJoinTCP(b *testing.B) {
	in, out := relay(b, plain, plain)
	pump(b, in, out)
}

// BenchmarkJoinTCPToTLS is connect's upload: a local client's plain TCP
// into the mTLS connection to the gateway.
func BenchmarkJoinTCPToTLS(b *testing.B) {
	in, out := relay(b, plain, tlsSide(newTLS(b)))
	pump(b, in, out)
}

// BenchmarkJoinTLSToTCP is the engine's hop (mTLS from the gateway, plain
// to BuildKit's socket) and connect's download.
func BenchmarkJoinTLSToTCP(b *testing.B) {
	in, out := relay(b, tlsSide(newTLS(b)), plain)
	pump(b, in, out)
}

// BenchmarkJoinTLSToTLS is the gateway's hop: mTLS from the client, mTLS
// to the engine.
func BenchmarkJoinTLSToTLS(b *testing.B) {
	cfg := newTLS(b)
	in, out := relay(b, tlsSide(cfg), tlsSide(cfg))
	pump(b, in, out)
}

// BenchmarkIdleJoin reports what one idle Join costs the process, its
// goroutines included (heap and stacks in use per pair, after a message
// each way), for pairs of each kind.
func BenchmarkIdleJoin(b *testing.B) {
	cfg := newTLS(b)
	for _, bc := range []struct {
		name        string
		left, right func(testing.TB) (net.Conn, net.Conn)
	}{
		{"TCP-TCP", plain, plain},
		{"TCP-TLS", plain, tlsSide(cfg)},
		{"TLS-TLS", tlsSide(cfg), tlsSide(cfg)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			const pairs = 200
			type outer struct{ in, out net.Conn }
			// The connections and their TLS state exist before the
			// baseline: what is measured is what Join adds.
			conns := make([]outer, 0, pairs)
			inners := make([][2]net.Conn, 0, pairs)
			for range pairs {
				li, lo := bc.left(b)
				ri, ro := bc.right(b)
				conns = append(conns, outer{lo, ro})
				inners = append(inners, [2]net.Conn{li, ri})
			}
			msg := make([]byte, 100)
			for range b.N {
				before := memInUse()
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan struct{}, pairs)
				for _, in := range inners {
					go func() { proxy.Join(ctx, in[0], in[1], "a", "b", 0); done <- struct{}{} }()
				}
				for _, c := range conns {
					echoOnce(b, c.in, c.out, msg)
				}
				after := memInUse()
				b.ReportMetric(float64(after-before)/pairs, "B/idle-pair")
				b.ReportMetric(float64(proxy.BuffersLent()), "buffers-lent")
				cancel()
				for range pairs {
					<-done
				}
				b.StopTimer()
				for _, c := range conns {
					c.in.Close()
					c.out.Close()
				}
				// The joined conns are closed now: fresh ones for the
				// next round.
				conns, inners = conns[:0], inners[:0]
				for range pairs {
					li, lo := bc.left(b)
					ri, ro := bc.right(b)
					conns = append(conns, outer{lo, ro})
					inners = append(inners, [2]net.Conn{li, ri})
				}
				b.StartTimer()
			}
		})
	}
}

// echoOnce sends msg from in to out and back.
func echoOnce(b *testing.B, in, out net.Conn, msg []byte) {
	b.Helper()
	got := make([]byte, len(msg))
	if _, err := in.Write(msg); err != nil {
		b.Fatal(err)
	}
	if _, err := io.ReadFull(out, got); err != nil {
		b.Fatal(err)
	}
	if _, err := out.Write(msg); err != nil {
		b.Fatal(err)
	}
	if _, err := io.ReadFull(in, got); err != nil {
		b.Fatal(err)
	}
}

// memInUse is the heap and goroutine stacks in use after a collection.
func memInUse() int64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapInuse + m.StackInuse)
}
