package proxy_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wakegate/wakegate/proxy"
)

// awaitBuffersBack waits, within guard, until no Join holds a pooled copy
// buffer. The copies give theirs back as soon as their source has nothing
// more to read; this only waits for them to get there.
func awaitBuffersBack(t *testing.T) {
	t.Helper()
	for give := time.Now().Add(guard); proxy.BuffersLent() != 0; {
		if time.Now().After(give) {
			t.Fatalf("%d copy buffers still lent %v after the traffic stopped: an idle Join holds buffers", proxy.BuffersLent(), guard)
		}
		runtime.Gosched()
	}
}

func TestIdleJoinHoldsNoCopyBuffer(t *testing.T) { bothWays(t, testIdleJoinHoldsNoCopyBuffer) }

func testIdleJoinHoldsNoCopyBuffer(t *testing.T, way way) {
	cfg := newTLS(t)
	for _, ta := range transports {
		for _, tb := range transports {
			t.Run(ta.name+"-"+tb.name, func(t *testing.T) {
				awaitBuffersBack(t) // earlier tests' Joins have ended
				a, b := ta.make(t, cfg), tb.make(t, cfg)
				for _, c := range []net.Conn{a.peer, b.peer} {
					c.SetDeadline(time.Now().Add(guard))
				}
				way.start(t, context.Background(), a.inner, b.inner, time.Hour)

				// A bulk transfer that ends with a short piece, then a
				// small reply, as a request and its answer.
				request := randomBytes(t, 1<<20+100)
				reply := randomBytes(t, 100)
				errc := make(chan error, 1)
				go func() { _, err := a.peer.Write(request); errc <- err }()
				got := make([]byte, len(request))
				if _, err := io.ReadFull(b.peer, got); err != nil || !bytes.Equal(got, request) {
					t.Fatalf("request: %v", err)
				}
				if err := <-errc; err != nil {
					t.Fatal(err)
				}
				if _, err := b.peer.Write(reply); err != nil {
					t.Fatal(err)
				}
				if _, err := io.ReadFull(a.peer, got[:len(reply)]); err != nil || !bytes.Equal(got[:len(reply)], reply) {
					t.Fatalf("reply: %v", err)
				}
				// Both directions are now idle, waiting to read.
				awaitBuffersBack(t)
			})
		}
	}
}

// A message is passed on as soon as it is read, whatever its size: in
// particular one that exactly fills the small buffer an idle direction
// reads into, or a whole TLS record, is not held back waiting for more.
func TestJoinPassesOnEachMessageWithoutWaitingForMore(t *testing.T) {
	bothWays(t, testJoinPassesOnEachMessageWithoutWaitingForMore)
}

func testJoinPassesOnEachMessageWithoutWaitingForMore(t *testing.T, way way) {
	cfg := newTLS(t)
	sizes := []int{1, proxy.IdleBufSize - 1, proxy.IdleBufSize, proxy.IdleBufSize + 1,
		proxy.MaxRecord, proxy.MaxRecord + proxy.IdleBufSize, 2 * proxy.MaxRecord, 32 << 10, 64 << 10}
	for _, ta := range transports {
		for _, tb := range transports {
			t.Run(ta.name+"-"+tb.name, func(t *testing.T) {
				a, b := ta.make(t, cfg), tb.make(t, cfg)
				for _, c := range []net.Conn{a.peer, b.peer} {
					c.SetDeadline(time.Now().Add(guard))
				}
				way.start(t, context.Background(), a.inner, b.inner, time.Hour)
				// Ping-pong: each side waits for the whole message before
				// it answers, so a message held back deadlocks (and fails
				// at the deadline).
				for _, n := range sizes {
					for _, dir := range []struct{ from, to net.Conn }{{a.peer, b.peer}, {b.peer, a.peer}} {
						msg := randomBytes(t, n)
						if _, err := dir.from.Write(msg); err != nil {
							t.Fatal(err)
						}
						got := make([]byte, n)
						if _, err := io.ReadFull(dir.to, got); err != nil {
							t.Fatalf("message of %d bytes: %v", n, err)
						}
						if !bytes.Equal(got, msg) {
							t.Fatalf("message of %d bytes arrived changed", n)
						}
					}
				}
			})
		}
	}
}

// TestJoinCopyAllocatesNothingPerChunk moves chunks through a plain TCP
// Join (crypto/tls allocates per record on its own, see the benchmarks) and
// counts the process's allocations.
func TestJoinCopyAllocatesNothingPerChunk(t *testing.T) {
	in, out := relayT(t)
	buf := make([]byte, 256<<10)
	move := func() {
		if _, err := in.Write(buf); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(out, buf); err != nil {
			t.Fatal(err)
		}
	}
	move() // warm up: the copies have their one-time state
	const rounds = 50
	allocs := testing.AllocsPerRun(rounds, move)
	// ReadFull and Write on the test's own ends allocate nothing either;
	// allow one for the runtime's own bookkeeping.
	if allocs > 1 {
		t.Fatalf("%.1f allocations per 256 KiB chunk through Join; want none", allocs)
	}
}

func relayT(t *testing.T) (in, out net.Conn) {
	a, b := plainTCP.make(t, tlsConfigs{}), plainTCP.make(t, tlsConfigs{})
	for _, c := range []net.Conn{a.peer, b.peer} {
		c.SetDeadline(time.Now().Add(guard))
	}
	startJoin(t, context.Background(), a.inner, b.inner, time.Hour)
	return a.peer, b.peer
}

func TestJoinNamesItsDirectionsInGoroutineDumps(t *testing.T) {
	a, b := plainTCP.make(t, tlsConfigs{}), plainTCP.make(t, tlsConfigs{})
	startJoin(t, context.Background(), a.inner, b.inner, time.Hour)
	a.peer.SetDeadline(time.Now().Add(guard))
	if _, err := a.peer.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	b.peer.SetDeadline(time.Now().Add(guard))
	if _, err := io.ReadFull(b.peer, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	dump := string(buf[:runtime.Stack(buf, true)])
	for _, fn := range []string{"proxy.(*pair).copyAToB", "proxy.(*pair).copyBToA"} {
		if !bytes.Contains([]byte(dump), []byte(fn)) {
			t.Errorf("goroutine dump has no %s", fn)
		}
	}
	if t.Failed() {
		t.Log(dump)
	}
}

// becomingSocket is a wrapper whose reads count until it says it has
// become its socket (after its first read).
type becomingSocket struct{ settling }

func (w *becomingSocket) Read(p []byte) (int, error) {
	n, err := w.settling.Read(p)
	w.settled.Store(true)
	return n, err
}

func TestACopyReadsTheSocketItselfOnceAWrapperBecomesIt(t *testing.T) {
	w := &becomingSocket{}
	aPeer, bPeer := threeMessagesFromAWrapper(t, func(c net.Conn) net.Conn { w.Conn = c; return w })
	got := make([]byte, 5)
	if n := w.reads.Load(); n != 1 {
		t.Fatalf("the wrapper was read %d times; want only the first read, before it became its socket", n)
	}
	// Idle on the socket: no buffer held, and the other way still flows.
	awaitBuffersBack(t)
	if _, err := aPeer.Write([]byte("reply")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(bPeer, got); err != nil || string(got) != "reply" {
		t.Fatalf("reply: %q, %v", got, err)
	}
}

// becomingOther is a wrapper that becomes something other than a socket
// (a TLS connection, say) after its first read: Socket counts its askings.
type becomingOther struct {
	net.Conn
	asked atomic.Int32
	reads atomic.Int32
	read  atomic.Bool
}

func (w *becomingOther) Read(p []byte) (int, error) {
	w.reads.Add(1)
	n, err := w.Conn.Read(p)
	w.read.Store(true)
	return n, err
}

func (w *becomingOther) Socket() net.Conn {
	w.asked.Add(1)
	if w.read.Load() {
		return struct{ net.Conn }{w.Conn} // not a socket a copy may read itself
	}
	return nil
}

func TestAWrapperThatBecomesNoSocketIsAskedAndReadNoMore(t *testing.T) {
	w := &becomingOther{}
	threeMessagesFromAWrapper(t, func(c net.Conn) net.Conn { w.Conn = c; return w })
	// Once at the copy's start, once after the first read: then never.
	if n := w.asked.Load(); n != 2 {
		t.Fatalf("Socket asked %d times over three reads; want 2, none after it answered", n)
	}
	// And what it became is read itself from then on.
	if n := w.reads.Load(); n != 1 {
		t.Fatalf("the wrapper was read %d times over three messages; want 1, before it said what it became", n)
	}
}

// threeMessagesFromAWrapper joins two TCP connections, the second wrapped
// by wrap, and sends three messages from the wrapped side's peer through
// the join; it returns both peers (a's, then b's).
func threeMessagesFromAWrapper(t *testing.T, wrap func(net.Conn) net.Conn) (aPeer, bPeer net.Conn) {
	t.Helper()
	aIn, aPeer := tcpPair(t)
	bIn, bPeer := tcpPair(t)
	for _, c := range []net.Conn{aPeer, bPeer} {
		c.SetDeadline(time.Now().Add(guard))
	}
	startJoin(t, context.Background(), aIn, wrap(bIn), time.Hour)
	got := make([]byte, 5)
	for i, msg := range []string{"first", "after", "again"} {
		if _, err := bPeer.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(aPeer, got); err != nil || string(got) != msg {
			t.Fatalf("message %d: %q, %v; want %q", i, got, err, msg)
		}
	}
	return aPeer, bPeer
}

func TestCopiedCountsWhatCopiesWrote(t *testing.T) {
	in, out := relayT(t)
	before := proxy.Copied()
	data := randomBytes(t, 300<<10)
	go in.Write(data)
	if got := readN(t, out, len(data)); !bytes.Equal(got, data) {
		t.Fatal("the relay changed the bytes")
	}
	if moved := proxy.Copied() - before; moved < int64(len(data)) {
		t.Fatalf("Copied grew by %d over a copy of %d bytes", moved, len(data))
	}
}
