package engine

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"github.com/wakegate/wakegate/internal/testserve"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/wakegate/wakegate/certs"
	"github.com/wakegate/wakegate/identity"
	"github.com/wakegate/wakegate/wire"
)

// idleActivity reports no build and an empty cache: the engine's work is
// its connections alone.
type idleActivity struct{}

func (idleActivity) Builds(context.Context) (int, error)       { return 0, nil }
func (idleActivity) CacheBytes(context.Context) (int64, error) { return 0, nil }

// unixFront is a ready engine serving only its unix front, in front of an
// echo backend; logs gathers what the engine logs.
type unixFront struct {
	e    *Engine
	addr string // "unix://…/front.sock"
	path string
	logs *syncBuffer
	// stopSpares ends the engine's unused spares, as its stop does.
	stopSpares context.CancelFunc
}

type syncBuffer struct {
	mu sync.Mutex // guards b
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func startUnixFront(t *testing.T) *unixFront {
	t.Helper()
	// The engine process stands in as an echo of every connection.
	return startUnixFrontWith(t, func(c net.Conn) { io.Copy(c, c) })
}

// startUnixFrontWith is startUnixFront with backend serving each of the
// engine process's connections.
func startUnixFrontWith(t *testing.T, backend func(net.Conn)) *unixFront {
	t.Helper()
	dir := shortDir(t)
	e := readyEngine(t, KindBuildkit, idleActivity{}, time.Minute)
	logs := &syncBuffer{}
	e.cfg.Log = slog.New(slog.NewTextHandler(logs, nil))
	e.cfg.Backend.Dir = dir
	ln, err := net.Listen("unix", e.cfg.Backend.Socket())
	if err != nil {
		t.Fatal(err)
	}
	testserve.Serve(t, ln, backend)
	path := FrontSocket(dir)
	ln, err = ListenUnix(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	unused, stopSpares := context.WithCancel(ctx)
	e.unused = unused
	status := newStatusServer(e)
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.accept(ctx, front{ln, e.openUnix}, status)
	}()
	t.Cleanup(func() {
		ln.Close()
		cancel()
		status.close()
		<-done
	})
	return &unixFront{e: e, addr: UnixScheme + path, path: path, logs: logs, stopSpares: stopSpares}
}

// waitConns waits, bounded, until the engine counts n proxied connections.
func (f *unixFront) waitConns(t *testing.T, n int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for f.e.conns.Load() != n {
		if time.Now().After(deadline) {
			t.Fatalf("the engine counts %d connections, want %d", f.e.conns.Load(), n)
		}
		time.Sleep(5 * time.Millisecond) // polling the counter, bounded
	}
}

// TestUnixFrontProxiesCountsAndAnswersStatus: through the unix front, a
// stream reaches the engine process, the engine counts it (busy while it
// is open, idle once closed), and readiness and status answer as on the
// mTLS port.
func TestUnixFrontProxiesCountsAndAnswersStatus(t *testing.T) {
	f := startUnixFront(t)
	var c Client // no TLS config: a unix front needs none
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := c.Ready(ctx, f.addr); err != nil {
		t.Fatalf("Ready over the unix front: %v", err)
	}
	if busy, err := c.Busy(ctx, f.addr); err != nil || busy {
		t.Fatalf("Busy with nothing open = %v, %v; want idle", busy, err)
	}

	conn, err := c.Dial(ctx, f.addr)
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte("through the unix front")
	if _, err := conn.Write(msg); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(conn, got); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("echo through the unix front = %q, %v; want %q", got, err, msg)
	}
	f.waitConns(t, 1)
	s, err := c.Status(ctx, f.addr)
	if err != nil {
		t.Fatal(err)
	}
	if !s.Ready || s.Connections != 1 {
		t.Fatalf("status with a stream open = %+v, want ready with 1 connection", s)
	}
	if busy, err := c.Busy(ctx, f.addr); err != nil || !busy {
		t.Fatalf("Busy with a stream open = %v, %v; want busy", busy, err)
	}

	conn.Close()
	f.waitConns(t, 0)
	if busy, err := c.Busy(ctx, f.addr); err != nil || busy {
		t.Fatalf("Busy after the stream closed = %v, %v; want idle", busy, err)
	}
}

func TestUnixFrontIsTheOwnersOnlyAndRefusesUnknownProtocols(t *testing.T) {
	f := startUnixFront(t)
	fi, err := os.Stat(f.path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("unix front %s has mode %s, want a socket of mode 0600", f.path, fi.Mode())
	}

	// A peer that does not name its protocol first reaches neither the
	// engine process nor its status.
	c, err := net.Dial("unix", f.path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("\x09bogus/1.0GET /status HTTP/1.1\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	// Closed with the request unread: an EOF or a reset, never an answer.
	if n, err := c.Read(make([]byte, 64)); n != 0 || !(errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)) {
		t.Fatalf("unknown protocol: read %d bytes, %v; want the connection closed", n, err)
	}
	if f.e.conns.Load() != 0 {
		t.Fatal("a connection of unknown protocol was counted")
	}
}

// TestUnixFrontRefusesAnotherUser: even with the socket opened to all
// (mode 0666), a process of another user is refused by its credentials.
// It needs root (to run a client as nobody) and curl.
func TestUnixFrontRefusesAnotherUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to connect as another user")
	}
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("needs curl to connect as another user")
	}
	f := startUnixFront(t)
	for _, p := range []string{filepath.Dir(f.path), f.path} {
		if err := os.Chmod(p, 0o777); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.CommandContext(t.Context(), "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
		curl, "-sS", "--max-time", "10", "--unix-socket", f.path, "http://engine/status")
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("another user's request through the unix front succeeded:\n%s", out)
	}
	if !strings.Contains(f.logs.String(), "runs as uid 65534") {
		t.Fatalf("the engine did not refuse the peer for its user; logs:\n%s\ncurl: %s", f.logs, out)
	}
}

func TestListenUnixRefusesALiveSocketAndReplacesAStaleOne(t *testing.T) {
	path := FrontSocket(shortDir(t))
	ln, err := ListenUnix(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ListenUnix(path); err == nil || !strings.Contains(err.Error(), "another engine") {
		t.Fatalf("ListenUnix on a live socket = %v, want a refusal naming another engine", err)
	}
	// What a killed engine leaves: the file, with no one listening.
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	ln, err = ListenUnix(path)
	if err != nil {
		t.Fatalf("ListenUnix over a stale socket: %v", err)
	}
	ln.Close()
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the socket file outlived its listener: %v", err)
	}
	long := "/tmp/" + strings.Repeat("x", 110) + "/" + FrontSocketName
	if _, err := ListenUnix(long); err == nil || !strings.Contains(err.Error(), "shorter state directory") {
		t.Fatalf("ListenUnix on a %d-byte path = %v, want what to do", len(long), err)
	}
}

func TestProtoHeaderCarriesOnlyTheProtocol(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	go func() {
		writeProto(a, wire.ProtoProxy)
		a.Write([]byte("client bytes"))
	}()
	proto, err := readProto(b)
	if err != nil || proto != wire.ProtoProxy {
		t.Fatalf("readProto = %q, %v; want %q", proto, err, wire.ProtoProxy)
	}
	rest := make([]byte, len("client bytes"))
	if _, err := io.ReadFull(b, rest); err != nil || string(rest) != "client bytes" {
		t.Fatalf("after the protocol: %q, %v; want the client's bytes untouched", rest, err)
	}
}

// TestUnixFrontNamesTheEnginesCertificate: no handshake shows the
// engine's certificate on the unix front, so its readiness answer names
// it, and the client reports its expiry as it does after a handshake.
func TestUnixFrontNamesTheEnginesCertificate(t *testing.T) {
	p := newRolePKI(t)
	f := startUnixFront(t)
	f.e.tls = certs.ServerTLS(func() *tls.Certificate { return p.engine }, p.roots)
	var c Client
	if err := c.Ready(t.Context(), f.addr); err != nil {
		t.Fatal(err)
	}
	got, want := c.EngineCerts(), p.engine.Leaf.NotAfter
	if len(got) != 1 || !got[identity.EngineName("0")].Equal(want.Truncate(time.Second)) {
		t.Fatalf("engine certificates = %v, want %s: %s", got, identity.EngineName("0"), want)
	}
}
