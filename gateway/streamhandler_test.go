package gateway

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/wakegate/wakegate/certs"
	"github.com/wakegate/wakegate/internal/testserve"
	"github.com/wakegate/wakegate/proxy"
	"github.com/wakegate/wakegate/wire"
)

// A stream's handler returns once the stream has begun: the copy goes on
// on goroutines of its own, so that the handler's stack, which the
// handshake grew to 16 KiB, is not kept while the connection is idle
// (BenchmarkIdleConnection measures what that saves). And a direction
// that reads TLS parks while idle (proxy.Start): with mTLS to the engine,
// an idle stream holds no goroutine at all; with a plain engine socket,
// one, waiting on that socket.
func TestAStreamOutlivesItsHandler(t *testing.T) {
	for _, tc := range []struct {
		name   string
		engine func(t *testing.T) (addr string, dial func(context.Context, string) (net.Conn, error))
		copies int
	}{
		{"engine-plain", func(t *testing.T) (string, func(context.Context, string) (net.Conn, error)) {
			return echoEngine(t), plainDial
		}, 1},
		{"engine-mTLS", tlsEchoEngine, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, dial := tc.engine(t)
			h := &fakeHost{addr: addr}
			g := startGatewayOpts(t, h, gatewayOptions{config: func(c *Config) { c.Dial = dial }})
			c := g.dial(t, g.client, g.ca, wire.ProtoProxy)
			c.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := c.Write([]byte("ping")); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, 4)
			if _, err := io.ReadFull(c, got); err != nil || string(got) != "ping" {
				t.Fatalf("echo = %q, %v; want ping", got, err)
			}
			// Idle now: no handler left, and only a copy that waits on a
			// plain socket.
			eventually(t, "no connection handler while a stream is idle", func() bool {
				return !strings.Contains(allStacks(), "proxy.(*Server).serveConn")
			})
			eventually(t, fmt.Sprintf("%d of the stream's copies running while it is idle", tc.copies), func() bool {
				return streamCopies() == tc.copies
			})
			if got := g.srv.openConns(); got != 1 {
				t.Fatalf("gateway counts %d open connections, want the idle stream's 1", got)
			}
			// And it still carries bytes, and ends as a stream does.
			if _, err := c.Write([]byte("pong")); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(c, got); err != nil || string(got) != "pong" {
				t.Fatalf("echo after idle = %q, %v; want pong", got, err)
			}
			c.Close()
			eventually(t, "the stream's end released the connection", func() bool { return g.srv.openConns() == 0 })
		})
	}
}

// tlsEchoEngine is echoEngine behind mTLS, as an engine front, and the
// gateway's dial to it (the binary's: proxy.DialTLS).
func tlsEchoEngine(t *testing.T) (string, func(context.Context, string) (net.Conn, error)) {
	ca, err := certs.Init(t.TempDir(), "engines", nil)
	if err != nil {
		t.Fatal(err)
	}
	ec, gc := leafPair(t, ca, "engine", "gateway")
	srv := certs.ServerTLS(func() *tls.Certificate { return ec }, ca.Pool())
	cli := certs.ClientTLS(func() *tls.Certificate { return gc }, ca.Pool(), "127.0.0.1")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	testserve.Serve(t, ln, func(c net.Conn) {
		tc := tls.Server(c, srv)
		io.Copy(tc, tc)
		tc.CloseWrite()
	})
	dial := func(ctx context.Context, addr string) (net.Conn, error) {
		return proxy.DialTLS(ctx, &net.Dialer{}, strings.TrimPrefix(addr, "tcp://"), cli)
	}
	return "tcp://" + ln.Addr().String(), dial
}

// streamCopies is how many goroutines run a direction of a stream.
func streamCopies() int {
	n := 0
	for _, g := range strings.Split(allStacks(), "\n\n") {
		if strings.Contains(g, "proxy.(*direction)") || strings.Contains(g, "proxy.(*started)") {
			n++
		}
	}
	return n
}

func allStacks() string {
	buf := make([]byte, 1<<20)
	return string(buf[:runtime.Stack(buf, true)])
}
