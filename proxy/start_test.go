package proxy_test

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/wakegate/wakegate/proxy"
)

func TestStartReturnsAtOnceAndReportsWhenBothDirectionsEnd(t *testing.T) {
	a, aPeer := tcpPair(t)
	b, bPeer := tcpPair(t)
	results := make(chan proxy.Result, 1)
	started := make(chan struct{})
	go func() {
		proxy.Start(context.Background(), a, b, "a", "b", 0, func(r proxy.Result) { results <- r })
		close(started)
	}()
	select {
	case <-started:
	case <-time.After(guard):
		t.Fatal("Start waited for the pair instead of returning")
	}

	for _, step := range []struct {
		from, to net.Conn
		msg      string
	}{{aPeer, bPeer, "ping"}, {bPeer, aPeer, "pong!"}} {
		if _, err := step.from.Write([]byte(step.msg)); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(step.msg))
		if _, err := io.ReadFull(step.to, got); err != nil || string(got) != step.msg {
			t.Fatalf("carried %q, %v; want %q", got, err, step.msg)
		}
	}
	select {
	case r := <-results:
		t.Fatalf("done called while both directions were open: %+v", r)
	default:
	}

	closeWrite(t, aPeer)
	closeWrite(t, bPeer)
	r := awaitWithin(t, results, "after both ends closed", guard)
	if r.BytesAToB != 4 || r.BytesBToA != 5 || r.Err != nil {
		t.Fatalf("result %+v, want 4 bytes a->b, 5 b->a, no error", r)
	}
	if r.Reason != "a_closed" && r.Reason != "b_closed" {
		t.Fatalf("reason %q, want the side that closed first", r.Reason)
	}
	// Both connections are closed before done is called.
	for name, peer := range map[string]net.Conn{"a": aPeer, "b": bPeer} {
		if n, err := peer.Read(make([]byte, 1)); err != io.EOF {
			t.Errorf("%s's peer read %d, %v after done; want EOF", name, n, err)
		}
	}
}
