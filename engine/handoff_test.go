package engine

import (
	"bytes"
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/wakegate/wakegate/proxy"
)

// TestUnixFrontHandsTheEngineSocketOver: a stream dialled on the unix front
// is the engine process's own socket (the engine is off the data path), and
// the engine counts it until the gateway closes it.
func TestUnixFrontHandsTheEngineSocketOver(t *testing.T) {
	f := startUnixFront(t)
	var c Client
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	conn, err := c.Dial(ctx, f.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	uc, ok := conn.(*handedConn)
	if !ok {
		t.Fatalf("Dial on a unix front returned a %T, want the engine socket handed over", conn)
	}
	if got, want := uc.UnixConn.RemoteAddr().String(), f.e.cfg.Backend.Socket(); got != want {
		t.Fatalf("the stream's peer is %q, want the engine process's socket %q", got, want)
	}
	// A copy from it (the gateway's) waits on the socket itself, with no
	// buffer: it says it is its socket.
	if s, ok := conn.(proxy.Socketer); !ok || s.Socket() != uc.UnixConn {
		t.Fatal("the stream handed over does not offer its socket to a copy (proxy.Socketer)")
	}
	msg := []byte("straight to the engine process")
	if _, err := conn.Write(msg); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(conn, got); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("echo = %q, %v; want %q", got, err, msg)
	}
	f.waitConns(t, 1)
	conn.Close()
	f.waitConns(t, 0)
}

// TestAHandoffEndsWithItsContext: the gateway's wait
// for a stream ends with its context when the engine never becomes ready.
func TestAHandoffEndsWithItsContext(t *testing.T) {
	dir := shortDir(t)
	path := FrontSocket(dir)
	ln, err := ListenUnix(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	// A front that takes the protocol and then says nothing.
	held := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			held <- c
		}
	}()
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	var c Client
	if conn, err := c.Dial(ctx, UnixScheme+path); err == nil {
		conn.Close()
		t.Fatal("Dial returned a stream from a front that handed none over")
	}
	select {
	case hc := <-held:
		hc.Close()
	case <-time.After(5 * time.Second):
		t.Fatal("the front never saw the dial")
	}
}
