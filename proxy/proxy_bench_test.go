package proxy_test

import (
	"context"
	"io"
	"net"
	"testing"

	"github.com/wakegate/wakegate/proxy"
)

// The benchmarks move 1 MiB chunks one way and compare the relay against a
// direct loopback connection measured in the same run: the relay's cost is
// the ratio of their MB/s.
const chunk = 1 << 20

// pump writes b.N chunks into w and waits until r has read them all.
func pump(b *testing.B, w, r net.Conn) {
	b.Helper()
	buf := make([]byte, chunk)
	b.SetBytes(chunk)
	done := make(chan error, 1)
	go func() {
		_, err := io.CopyN(io.Discard, r, int64(b.N)*chunk)
		done <- err
	}()
	b.ResetTimer()
	for range b.N {
		if _, err := w.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		b.Fatal(err)
	}
}

func BenchmarkDirectTCP(b *testing.B) {
	a, c := tcpPair(b)
	pump(b, c, a)
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

func BenchmarkJoinTCP(b *testing.B) {
	in, out := relay(b, plain, plain)
	pump(b, in, out)
}

// BenchmarkJoinTLSToTCP is the gateway's hop: mTLS from the client, plain
// to the engine's socket.
func BenchmarkJoinTLSToTCP(b *testing.B) {
	cfg := newTLS(b)
	tlsSide := func(tb testing.TB) (net.Conn, net.Conn) {
		srv, cli, _ := tlsPair(tb, cfg)
		return srv, cli
	}
	in, out := relay(b, tlsSide, plain)
	pump(b, in, out)
}
