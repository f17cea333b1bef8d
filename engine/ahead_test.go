package engine

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"math/big"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wakegate/wakegate/certs"
)

// waitPeerClosed waits, bounded, until the engine has closed spare s.
func waitPeerClosed(t *testing.T, s *Spare) {
	t.Helper()
	ctl := s.lease
	if ctl == nil {
		ctl = s.conn
	}
	deadline := time.Now().Add(30 * time.Second)
	for peerOpen(ctl) {
		if time.Now().After(deadline) {
			t.Fatal("the engine did not close its unused spare")
		}
		time.Sleep(5 * time.Millisecond) // polling the socket, bounded
	}
}

// TestASpareOnTheUnixFrontIsHandedOverAndCountedOnlyOnceUsed: a stream
// made ahead on the unix front is the engine process's socket at once, but
// the engine counts it only from its use; one still unused when the engine
// begins to stop is closed, and Use says so.
func TestASpareOnTheUnixFrontIsHandedOverAndCountedOnlyOnceUsed(t *testing.T) {
	f := startUnixFront(t)
	var c Client
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	sp, err := c.DialAhead(ctx, f.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	if _, ok := sp.conn.(*handedConn); !ok {
		t.Fatalf("a spare on the unix front is a %T, want the engine socket handed over", sp.conn)
	}
	if n := f.e.conns.Load(); n != 0 {
		t.Fatalf("the engine counts %d connections for an unused spare, want 0", n)
	}
	conn, err := sp.Use()
	if err != nil {
		t.Fatal(err)
	}
	f.waitConns(t, 1)
	msg := []byte("on a stream made ahead")
	conn.Write(msg)
	got := make([]byte, len(msg))
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(conn, got); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("echo = %q, %v; want %q", got, err, msg)
	}
	conn.Close()
	f.waitConns(t, 0)

	unused, err := c.DialAhead(ctx, f.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer unused.Close()
	f.stopSpares()
	waitPeerClosed(t, unused)
	// The handed-over socket itself is shut down, not only its lease:
	// the engine process sees its end too.
	deadline := time.Now().Add(30 * time.Second)
	for peerOpen(unused.conn) {
		if time.Now().After(deadline) {
			t.Fatal("the handed-over socket of an unused spare is still open after the engine began to stop")
		}
		time.Sleep(5 * time.Millisecond) // polling the socket, bounded
	}
	if _, err := unused.Use(); !errors.Is(err, errSpareClosed) {
		t.Fatalf("Use of a spare the stopping engine closed: %v, want %v", err, errSpareClosed)
	}
	if n := f.e.conns.Load(); n != 0 {
		t.Fatalf("the engine counts %d connections, want 0", n)
	}
}

// TestASpareOnTheTLSFrontKeepsNoEngineAwake: on a real engine, a stream
// made ahead on the mTLS front is proxied to BuildKit once used and counted
// while open; an unused one is not counted, so the engine still stops when
// idle, and closes it as it does.
func TestASpareOnTheTLSFrontKeepsNoEngineAwake(t *testing.T) {
	h := newHarness(t, shortDir(t))
	h.start(time.Second)
	var revoked atomic.Bool
	c := &Client{TLS: certs.ClientTLS(func() *tls.Certificate { return h.gwCert }, h.ca.Pool(), ""),
		IsRevoked: func(string) (bool, error) { return revoked.Load(), nil }}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	used, err := c.DialAhead(ctx, "tls://"+h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer used.Close()
	unused, err := c.DialAhead(ctx, "tls://"+h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer unused.Close()
	judged, err := c.DialAhead(ctx, "tls://"+h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer judged.Close()
	// An engine certificate revoked after the spare's handshake is
	// refused at its use.
	revoked.Store(true)
	if _, err := judged.Use(); err == nil || !strings.Contains(err.Error(), "is revoked") {
		t.Fatalf("Use of a spare whose engine's certificate was revoked since: %v, want a refusal", err)
	}
	revoked.Store(false)
	conn, err := used.Use()
	if err != nil {
		t.Fatal(err)
	}
	// BuildKit speaks first: HTTP/2's settings frame.
	conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	var hdr [9]byte
	if _, err := io.ReadFull(conn, hdr[:]); err != nil || hdr[3] != 4 {
		t.Fatalf("first frame from BuildKit through a used spare: % x, %v; want a settings frame (type 4)", hdr, err)
	}
	if n := h.engine.conns.Load(); n != 1 {
		t.Fatalf("the engine counts %d connections with one spare used and one not, want 1", n)
	}
	conn.Close()
	select {
	case <-h.done:
	case <-ctx.Done():
		t.Fatalf("the engine did not stop idle with an unused spare open (it counts %d connections)", h.engine.conns.Load())
	}
	if h.err != nil {
		t.Fatal(h.err)
	}
	waitPeerClosed(t, unused)
	if _, err := unused.Use(); !errors.Is(err, errSpareClosed) {
		t.Fatalf("Use of a spare the stopped engine closed: %v, want %v", err, errSpareClosed)
	}
}

// TestAProxiedSpareStartsAtItsUseByteOnly: a spare proxied by the engine
// (ProtoProxyAhead, here on the unix front) carries the stream after its
// use byte, counted; any other first byte closes it, uncounted.
func TestAProxiedSpareStartsAtItsUseByteOnly(t *testing.T) {
	f := startUnixFront(t)
	conn := f.dialProxiedSpare(t)
	conn.Write(append([]byte{use}, "echoed"...))
	got := make([]byte, len("echoed"))
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(conn, got); err != nil || string(got) != "echoed" {
		t.Fatalf("echo after the use byte = %q, %v; want %q", got, err, "echoed")
	}
	f.waitConns(t, 1)
	conn.Close()
	f.waitConns(t, 0)

	wrong := f.dialProxiedSpare(t)
	wrong.Write([]byte("GET / HTTP/1.1\r\n"))
	wrong.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := wrong.Read(make([]byte, 64)); err == nil {
		t.Fatalf("a spare whose first byte is not 'use' answered %d bytes", n)
	}
	if n := f.e.conns.Load(); n != 0 {
		t.Fatalf("the engine counts %d connections, want 0", n)
	}
}

// TestAProxiedSparesEngineConnectionIsMadeAhead: a spare the engine
// proxies has its engine process connection made with it, before its use
// byte, so that its use costs no dial; unused, that connection is closed
// as the spare ends (the engine begins to stop).
func TestAProxiedSparesEngineConnectionIsMadeAhead(t *testing.T) {
	accepted, ended := make(chan struct{}, 1), make(chan struct{}, 1)
	f := startUnixFrontWith(t, func(c net.Conn) {
		accepted <- struct{}{}
		io.Copy(c, c)
		ended <- struct{}{}
	})
	f.dialProxiedSpare(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	select {
	case <-accepted:
	case <-ctx.Done():
		t.Fatal("no engine process connection made for a spare before its use")
	}
	if n := f.e.conns.Load(); n != 0 {
		t.Fatalf("the engine counts %d connections with a spare unused, want 0", n)
	}
	f.stopSpares()
	select {
	case <-ended:
	case <-ctx.Done():
		t.Fatal("the engine process connection of a spare that ended unused was kept open")
	}
}

// dialProxiedSpare opens a spare the engine proxies (ProtoProxyAhead) on
// f's unix front, closed when the test ends.
func (f *unixFront) dialProxiedSpare(t *testing.T) net.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	conn, err := dialUnix(ctx, f.path, ProtoProxyAhead)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// TestAnUnusedHandedOverSpareDoesNotHoldUpTheStop: a real BuildKit engine
// on its unix front, with a spare handed over and held unused, still stops
// promptly when idle: BuildKit's graceful stop would wait for the
// connection it accepted, so the engine shuts it down as it stops.
func TestAnUnusedHandedOverSpareDoesNotHoldUpTheStop(t *testing.T) {
	dir := shortDir(t)
	h := newHarness(t, dir)
	ln, err := ListenUnix(FrontSocket(dir))
	if err != nil {
		t.Fatal(err)
	}
	h.run(Config{
		Backend:      Buildkitd{Bin: buildkitdBin(t), Dir: dir},
		Unix:         ln,
		Idle:         time.Second,
		DrainTimeout: time.Minute,
		StopTimeout:  time.Minute,
	})
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var c Client
	sp, err := c.DialAhead(ctx, UnixScheme+FrontSocket(dir))
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	select {
	case <-h.done:
	case <-ctx.Done():
		t.Fatal("the engine did not stop within 30 s of going idle with an unused spare handed over")
	}
	if h.err != nil {
		t.Fatal(h.err)
	}
}

// TestStillValidJudgesExpiryAndRevocation: what a spare's use judges again
// of its engine's certificate.
func TestStillValidJudgesExpiryAndRevocation(t *testing.T) {
	now := time.Now()
	leaf := &x509.Certificate{SerialNumber: big.NewInt(7), NotAfter: now.Add(time.Hour)}
	inter := &x509.Certificate{SerialNumber: big.NewInt(1), NotAfter: now.Add(time.Hour)}
	cs := tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf, inter}}
	none := func(string) (bool, error) { return false, nil }
	if err := stillValid(cs, now, none); err != nil {
		t.Fatalf("a valid certificate: %v", err)
	}
	if err := stillValid(cs, now.Add(2*time.Hour), none); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("an expired certificate: %v, want refused", err)
	}
	inter.NotAfter = now.Add(-time.Minute)
	if err := stillValid(cs, now, none); err == nil {
		t.Fatal("an expired intermediate: accepted")
	}
	inter.NotAfter = now.Add(time.Hour)
	revoked := func(serial string) (bool, error) { return serial == "7", nil }
	if err := stillValid(cs, now, revoked); err == nil || !strings.Contains(err.Error(), "is revoked") {
		t.Fatalf("a revoked certificate: %v, want refused", err)
	}
	failing := func(string) (bool, error) { return false, errors.New("database down") }
	if err := stillValid(cs, now, failing); err == nil {
		t.Fatal("a certificate whose revocation cannot be checked: accepted")
	}
}
