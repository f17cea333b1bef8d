package proxy_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wakegate/wakegate/proxy"
)

// copiesRunning is how many goroutines run a direction of a Start.
func copiesRunning() int {
	buf := make([]byte, 1<<20)
	stacks := string(buf[:runtime.Stack(buf, true)])
	n := 0
	for _, g := range strings.Split(stacks, "\n\n") {
		if strings.Contains(g, "proxy.(*direction)") || strings.Contains(g, "proxy.(*started)") {
			n++
		}
	}
	return n
}

func awaitCopies(t *testing.T, want int, why string) {
	t.Helper()
	for give := time.Now().Add(guard); copiesRunning() != want; {
		if time.Now().After(give) {
			t.Fatalf("%d of a stream's copies running %v on; want %d: %s", copiesRunning(), guard, want, why)
		}
		runtime.Gosched()
	}
}

// echoEach sends msg from one peer to the other, both ways, and checks
// what arrives.
func echoEach(t *testing.T, a, b net.Conn, msg []byte) {
	t.Helper()
	for _, dir := range []struct{ from, to net.Conn }{{a, b}, {b, a}} {
		errc := make(chan error, 1)
		go func() { _, err := dir.from.Write(msg); errc <- err }()
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(dir.to, got); err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("%d bytes: %v (arrived changed: %v)", len(msg), err, !bytes.Equal(got, msg))
		}
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
}

// tlsBoth is a Start between two TLS connections, as the gateway's between
// a client and a remote engine: both directions read TLS.
func tlsBoth(t *testing.T, ctx context.Context) (aPeer, bPeer net.Conn, a, b *side, res <-chan proxy.Result) {
	t.Helper()
	cfg := newTLS(t)
	sa, sb := tlsServerEnd.make(t, cfg), tlsClientEnd.make(t, cfg)
	for _, c := range []net.Conn{sa.peer, sb.peer} {
		c.SetDeadline(time.Now().Add(guard))
	}
	res = startStart(t, ctx, sa.inner, sb.inner, time.Hour)
	return sa.peer, sb.peer, &sa, &sb, res
}

// An idle stream between two TLS connections holds no goroutine: each
// direction parks in the poller, and goes on when bytes come, small or
// bulk, and when the stream ends.
func TestAnIdleTLSStreamHoldsNoGoroutine(t *testing.T) {
	awaitCopies(t, 0, "earlier tests' streams have ended")
	aPeer, bPeer, _, _, res := tlsBoth(t, context.Background())
	awaitCopies(t, 0, "a stream that has carried nothing parks both ways")
	for round, size := range []int{5, 1 << 20, 100, 3} {
		echoEach(t, aPeer, bPeer, randomBytes(t, size))
		awaitCopies(t, 0, "both directions idle again after "+[]string{"a message", "a bulk transfer", "a message after it", "another"}[round])
	}
	awaitBuffersBack(t)
	closeWrite(t, aPeer)
	if data, err := io.ReadAll(bPeer); err != nil || len(data) != 0 {
		t.Fatalf("b's peer read %q, %v after a's half-close; want EOF", data, err)
	}
	closeWrite(t, bPeer)
	r := await(t, res, "after both ends closed")
	if want := int64(5 + 1<<20 + 100 + 3); r.Err != nil || r.BytesAToB != want || r.BytesBToA != want || r.Reason != "a_closed" {
		t.Fatalf("result %+v; want %d bytes each way, no error, a_closed", r, want)
	}
}

// Closing a parked direction's connection wakes it: it reads the close, as
// a blocked read would have, and the stream ends.
func TestAParkedDirectionSeesItsConnectionClosed(t *testing.T) {
	aPeer, bPeer, a, _, res := tlsBoth(t, context.Background())
	echoEach(t, aPeer, bPeer, []byte("ping"))
	awaitCopies(t, 0, "both directions parked")
	a.inner.Close()
	// a->b ended with the close and passed the end on to b.
	if data, err := io.ReadAll(bPeer); err != nil || len(data) != 0 {
		t.Fatalf("b's peer read %q, %v after a's connection closed; want EOF", data, err)
	}
	bPeer.Close()
	r := await(t, res, "after a's connection was closed")
	if r.BytesAToB != 4 || r.BytesBToA != 4 {
		t.Fatalf("result %+v; want 4 bytes each way", r)
	}
}

// A read deadline given to a parked direction's connection wakes it, and
// its read then ends at the deadline, as a blocked read's would.
func TestAParkedDirectionKeepsItsReadDeadline(t *testing.T) {
	aPeer, bPeer, a, _, res := tlsBoth(t, context.Background())
	echoEach(t, aPeer, bPeer, []byte("ping"))
	awaitCopies(t, 0, "both directions parked")
	a.inner.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if data, err := io.ReadAll(bPeer); err != nil || len(data) != 0 {
		t.Fatalf("b's peer read %q, %v after a's read deadline; want EOF", data, err)
	}
	bPeer.Close()
	r := await(t, res, "after a's read deadline")
	if r.Err != nil || r.BytesAToB != 4 {
		t.Fatalf("result %+v; want 4 bytes a->b and a deadline's end, which is no fault", r)
	}
}

// settling wraps a TLS connection as the gateway wraps its client until
// the engine has answered: it becomes its connection only once told to,
// and a timeout in its Read is passed through with no effect.
type settling struct {
	net.Conn
	settled atomic.Bool
	reads   atomic.Int32
}

func (w *settling) Read(p []byte) (int, error) {
	w.reads.Add(1)
	return w.Conn.Read(p)
}

func (w *settling) Socket() net.Conn {
	if w.settled.Load() {
		return w.Conn
	}
	return nil
}

// A direction waiting in a wrapper when the wrapper settles (the other
// direction settled it: the engine answered) is asked again once the
// other has parked, or gone to wait on a plain socket, and parks too.
func TestADirectionWaitingInAWrapperParksOnceItHasSettled(t *testing.T) {
	for _, tc := range []struct {
		b      transport
		copies int // once idle: b->a's, on a plain socket
	}{{tlsClientEnd, 0}, {plainTCP, 1}} {
		t.Run("b-"+tc.b.name, func(t *testing.T) { testAWrapperSettles(t, tc.b, tc.copies) })
	}
}

func testAWrapperSettles(t *testing.T, tb transport, copies int) {
	cfg := newTLS(t)
	sa, sb := tlsServerEnd.make(t, cfg), tb.make(t, cfg)
	for _, c := range []net.Conn{sa.peer, sb.peer} {
		c.SetDeadline(time.Now().Add(guard))
	}
	w := &settling{Conn: sa.inner}
	res := startStart(t, context.Background(), w, sb.inner, time.Hour)
	// a's message goes through the wrapper, which then waits in its Read.
	if _, err := sa.peer.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 5)
	if _, err := io.ReadFull(sb.peer, got); err != nil {
		t.Fatal(err)
	}
	awaitCopies(t, 1+copies, "b->a idle; a->b waiting in the wrapper")
	// The answer settles it, as the engine's first byte does the gateway's.
	w.settled.Store(true)
	if _, err := sb.peer.Write([]byte("world")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(sa.peer, got); err != nil || string(got) != "world" {
		t.Fatalf("answer %q, %v", got, err)
	}
	awaitCopies(t, copies, "b->a idle again, and kicked a->b out of the wrapper's Read to park")
	// The kick's timeout ended nothing: the stream still carries bytes
	// both ways, no longer through the wrapper.
	reads := w.reads.Load()
	echoEach(t, sa.peer, sb.peer, []byte("again"))
	if n := w.reads.Load(); n != reads {
		t.Errorf("the wrapper was read %d more times after it settled; want none", n-reads)
	}
	sa.peer.Close()
	sb.peer.Close()
	if r := await(t, res, "after both peers closed"); r.BytesAToB != 10 || r.BytesBToA != 10 {
		t.Fatalf("result %+v; want 10 bytes each way", r)
	}
}

// A stream whose ctx ends while both directions are parked ends at once
// (TestJoinEndsWhenContextIsCancelled/start covers it for every transport;
// this one makes sure both were parked first).
func TestAParkedStreamEndsWithItsContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	aPeer, bPeer, _, _, res := tlsBoth(t, ctx)
	echoEach(t, aPeer, bPeer, []byte("ping"))
	awaitCopies(t, 0, "both directions parked")
	cancel()
	if r := await(t, res, "after ctx was cancelled"); r.Reason != "cancelled" || r.Err != nil {
		t.Fatalf("result %+v; want cancelled, no fault", r)
	}
}

// Many streams at once, each with small messages and a bulk piece at
// random (each side waits for the other's message, so the directions park
// between them), then ended by one of the ways a stream ends: both
// sides half-close, a side's connection is closed under the stream, or
// the stream's ctx is cancelled. Every stream must carry its bytes
// unchanged and end; no copy may be left behind. Bounded: 64 streams,
// a few messages each, seconds in all.
func TestManyParkedStreamsCarryTheirBytesAndEnd(t *testing.T) {
	awaitCopies(t, 0, "earlier tests' streams have ended")
	cfg := newTLS(t)
	const streams = 64
	rng := rand.New(rand.NewPCG(1, 2))
	type plan struct {
		msgs []int
		end  int // 0 half-close both, 1 close a's connection, 2 cancel ctx
	}
	plans := make([]plan, streams)
	for i := range plans {
		p := plan{end: rng.IntN(3)}
		for range 1 + rng.IntN(5) {
			size := 1 + rng.IntN(600)
			if rng.IntN(6) == 0 {
				size = 1 + rng.IntN(200<<10) // a bulk piece
			}
			p.msgs = append(p.msgs, size)
		}
		plans[i] = p
	}
	errs := make(chan error, streams)
	for i := range streams {
		sa, sb := tlsServerEnd.make(t, cfg), tlsClientEnd.make(t, cfg)
		for _, c := range []net.Conn{sa.peer, sb.peer} {
			c.SetDeadline(time.Now().Add(guard))
		}
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		res := startStart(t, ctx, sa.inner, sb.inner, time.Hour)
		go func(p plan) {
			errs <- runPlan(p.msgs, p.end, sa, sb, cancel, res)
		}(plans[i])
	}
	for range streams {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	awaitCopies(t, 0, "every stream has ended")
}

// runPlan carries msgs both ways on one stream (each side waits for the
// other's message before it answers), then ends it.
func runPlan(msgs []int, end int, a, b side, cancel func(), res <-chan proxy.Result) error {
	var sent int64
	for i, n := range msgs {
		msg := make([]byte, n)
		for j := range msg {
			msg[j] = byte(i + j)
		}
		for _, dir := range []struct{ from, to net.Conn }{{a.peer, b.peer}, {b.peer, a.peer}} {
			errc := make(chan error, 1)
			go func() { _, err := dir.from.Write(msg); errc <- err }()
			got := make([]byte, n)
			if _, err := io.ReadFull(dir.to, got); err != nil {
				return fmt.Errorf("message %d of %d bytes: %w", i, n, err)
			}
			if err := <-errc; err != nil {
				return fmt.Errorf("message %d: write: %w", i, err)
			}
			if !bytes.Equal(got, msg) {
				return fmt.Errorf("message %d of %d bytes arrived changed", i, n)
			}
		}
		sent += int64(n)
	}
	switch end {
	case 0:
		a.peer.(closeWriter).CloseWrite()
		if data, err := io.ReadAll(b.peer); err != nil || len(data) != 0 {
			return fmt.Errorf("b's peer after a's half-close: %q, %v; want EOF", data, err)
		}
		b.peer.(closeWriter).CloseWrite()
	case 1:
		a.inner.Close()
		if data, err := io.ReadAll(b.peer); err != nil || len(data) != 0 {
			return fmt.Errorf("b's peer after a's connection closed: %q, %v; want EOF", data, err)
		}
		b.peer.Close()
	case 2:
		cancel()
	}
	select {
	case r := <-res:
		if r.BytesAToB != sent || r.BytesBToA != sent {
			return fmt.Errorf("ended by way %d: %d and %d bytes carried; want %d each way", end, r.BytesAToB, r.BytesBToA, sent)
		}
		if r.Err != nil {
			return fmt.Errorf("ended by way %d: %v", end, r.Err)
		}
		return nil
	case <-time.After(guard):
		return fmt.Errorf("a stream ended by way %d did not end within %v", end, guard)
	}
}
