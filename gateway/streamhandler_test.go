package gateway

import (
	"io"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/wakegate/wakegate/wire"
)

// A stream's handler returns once the stream has begun: the copy goes on
// on goroutines of its own, so that the handler's stack, which the
// handshake grew to 16 KiB, is not kept while the connection is idle
// (BenchmarkIdleConnection measures what that saves).
func TestAStreamOutlivesItsHandler(t *testing.T) {
	h := &fakeHost{addr: echoEngine(t)}
	g := startGateway(t, h)
	c := g.dial(t, g.client, g.ca, wire.ProtoProxy)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4)
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "ping" {
		t.Fatalf("echo = %q, %v; want ping", got, err)
	}
	// Idle now: no handler left, the two copies waiting to read.
	eventually(t, "no connection handler while a stream is idle", func() bool {
		return !strings.Contains(allStacks(), "proxy.(*Server).serveConn")
	})
	if stacks := allStacks(); !strings.Contains(stacks, "proxy.(*pair).runAToB") || !strings.Contains(stacks, "proxy.(*pair).runBToA") {
		t.Fatalf("the stream's copies are not running:\n%s", stacks)
	}
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
}

func allStacks() string {
	buf := make([]byte, 1<<20)
	return string(buf[:runtime.Stack(buf, true)])
}
