package proxy

import (
	"net"
	"testing"
	"time"
)

const pollGuard = 10 * time.Second

// loopback is a connected pair over loopback TCP, dialled to ln.
func loopback(t *testing.T, ln net.Listener) (dialled, accepted net.Conn) {
	t.Helper()
	d, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	a, err := ln.Accept()
	if err != nil {
		d.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close(); a.Close() })
	return d, a
}

// parked parks g and returns what says it went on.
func parked(t *testing.T, g *Gathered) <-chan struct{} {
	t.Helper()
	woke := make(chan struct{})
	if !polls.park(g, func() { close(woke) }) {
		t.Fatal("the poller would not take a connection")
	}
	return woke
}

func awaitWoken(t *testing.T, woke <-chan struct{}, why string) {
	t.Helper()
	select {
	case <-woke:
	case <-time.After(pollGuard):
		t.Fatalf("not woken within %v: %s", pollGuard, why)
	}
}

// A socket closed under its Gathered, not through it, leaves the poller's
// set without a word. Once its descriptor's number is taken by a
// connection that parks, the one parked on the old socket is woken (its
// read then finds the socket closed), and the new one is waited on.
func TestADescriptorClosedUnderAParkedConnectionWakesItOnceReused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	oldSock, _ := loopback(t, ln)
	old := Gather(oldSock)
	oldWoke := parked(t, old)
	if !old.fetchFD() {
		t.Fatal("no descriptor under the connection")
	}
	oldFD := old.fd
	oldSock.Close() // under the Gathered

	// Descriptors go to the lowest number free: dial until one gets the
	// old number (bounded by how many are free below it).
	var reused *Gathered
	var peer net.Conn
	for range 1000 {
		d, a := loopback(t, ln)
		g := Gather(d)
		if !g.fetchFD() {
			t.Fatal("no descriptor under a dialled connection")
		}
		if g.fd == oldFD {
			reused, peer = g, a
			break
		}
	}
	if reused == nil {
		t.Fatalf("no connection got descriptor %d back in 1000 dials", oldFD)
	}
	select {
	case <-oldWoke:
		t.Fatal("the old connection was woken before its number was reused")
	default:
	}
	newWoke := parked(t, reused)
	awaitWoken(t, oldWoke, "the connection whose socket was closed under it, once its number was reused")
	select {
	case <-newWoke:
		t.Fatal("the new connection was woken with nothing to read")
	default:
	}
	if _, err := peer.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	awaitWoken(t, newWoke, "the connection that took the number, once readable")
	reused.Close()
}
