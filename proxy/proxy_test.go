package proxy_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wakegate/wakegate/certs"
	"github.com/wakegate/wakegate/proxy"
)

// guard bounds every wait so that a broken Join fails the test instead of
// hanging it. It is never a timing assertion: passing runs take milliseconds.
const guard = 10 * time.Second

type tlsConfigs struct{ server, client *tls.Config }

// newTLS makes a CA and a server and client leaf, as the gateway and connect
// use them.
func newTLS(t testing.TB) tlsConfigs {
	t.Helper()
	ca, err := certs.Init(t.TempDir(), "Proxy Test", nil)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ca.Issue(certs.Server, "localhost", []string{"127.0.0.1", "localhost"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cli, err := ca.Issue(certs.Client, "proxy-test", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tlsConfigs{
		server: certs.ServerTLS(func() *tls.Certificate { return srv.TLSCertificate() }, ca.Pool()),
		client: certs.ClientTLS(func() *tls.Certificate { return cli.TLSCertificate() }, ca.Pool(), "localhost"),
	}
}

// tcpPair returns the two ends of one loopback TCP connection.
func tcpPair(t testing.TB) (accepted, dialed net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		ch <- result{c, err}
	}()
	dialed, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		ln.Close()
		<-ch
		t.Fatal(err)
	}
	r := <-ch
	if r.err != nil {
		dialed.Close()
		t.Fatal(r.err)
	}
	t.Cleanup(func() { r.c.Close(); dialed.Close() })
	return r.c, dialed
}

// tlsPair returns the two ends of one mTLS connection over loopback TCP,
// handshake done, and the raw TCP conn under the client end.
func tlsPair(t testing.TB, cfg tlsConfigs) (server, client *tls.Conn, rawClient net.Conn) {
	t.Helper()
	rawServer, rawClient := tcpPair(t)
	// Both ends over Gathered sockets, as the gateway, the engine and
	// connect make theirs.
	server = tls.Server(proxy.Gather(rawServer), cfg.server)
	client = tls.Client(proxy.Gather(rawClient), cfg.client)
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- server.HandshakeContext(ctx) }()
	cerr := client.HandshakeContext(ctx)
	serr := <-errc
	if cerr != nil || serr != nil {
		t.Fatalf("handshake: client %v, server %v", cerr, serr)
	}
	t.Cleanup(func() { server.Close(); client.Close() })
	return server, client, rawClient
}

// A side is what Join is given (inner) and the test's end of it (peer).
type side struct{ inner, peer net.Conn }

type transport struct {
	name string
	make func(t *testing.T, cfg tlsConfigs) side
}

var (
	plainTCP = transport{"tcp", func(t *testing.T, _ tlsConfigs) side {
		in, peer := tcpPair(t)
		return side{in, peer}
	}}
	// Like the gateway's client side: Join holds the server end.
	tlsServerEnd = transport{"tls-server", func(t *testing.T, cfg tlsConfigs) side {
		in, peer, _ := tlsPair(t, cfg)
		return side{in, peer}
	}}
	// Like connect's gateway side: Join holds the client end.
	tlsClientEnd = transport{"tls-client", func(t *testing.T, cfg tlsConfigs) side {
		peer, in, _ := tlsPair(t, cfg)
		return side{in, peer}
	}}
	transports = []transport{plainTCP, tlsServerEnd, tlsClientEnd}
)

// A way is Join or Start, which the tests of a pair's life run alike:
// Start's directions park while idle (park.go), Join's do not.
type way struct {
	name  string
	start func(t *testing.T, ctx context.Context, a, b net.Conn, halfOpen time.Duration) <-chan proxy.Result
}

var ways = []way{{"join", startJoin}, {"start", startStart}}

func bothWays(t *testing.T, test func(*testing.T, way)) {
	for _, w := range ways {
		t.Run(w.name, func(t *testing.T) { test(t, w) })
	}
}

// startStart runs Start. Cleanup closes both inner conns, which ends even
// a stuck pair, and waits for its done.
func startStart(t *testing.T, ctx context.Context, a, b net.Conn, halfOpen time.Duration) <-chan proxy.Result {
	t.Helper()
	ch := make(chan proxy.Result, 1)
	finished := make(chan struct{})
	proxy.Start(ctx, a, b, "a", "b", halfOpen, func(r proxy.Result) {
		ch <- r
		close(finished)
	})
	t.Cleanup(func() {
		a.Close()
		b.Close()
		select {
		case <-finished:
		case <-time.After(guard):
			t.Errorf("Start's pair did not end within %v of its connections' close", guard)
		}
	})
	return ch
}

// startJoin runs Join in a goroutine. Cleanup closes both inner conns, which
// ends even a stuck Join, and waits for it.
func startJoin(t *testing.T, ctx context.Context, a, b net.Conn, halfOpen time.Duration) <-chan proxy.Result {
	t.Helper()
	ch := make(chan proxy.Result, 1)
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		ch <- proxy.Join(ctx, a, b, "a", "b", halfOpen)
	}()
	t.Cleanup(func() {
		a.Close()
		b.Close()
		<-finished
	})
	return ch
}

func await(t *testing.T, ch <-chan proxy.Result, what string) proxy.Result {
	t.Helper()
	return awaitWithin(t, ch, what, guard)
}

func awaitWithin(t *testing.T, ch <-chan proxy.Result, what string, limit time.Duration) proxy.Result {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(limit):
		t.Fatalf("Join did not return %s within %v", what, limit)
		return proxy.Result{}
	}
}

type closeWriter interface{ CloseWrite() error }

func closeWrite(t *testing.T, c net.Conn) {
	t.Helper()
	if err := c.(closeWriter).CloseWrite(); err != nil {
		t.Errorf("CloseWrite: %v", err)
	}
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestJoinCarriesHalfCloseBothWays(t *testing.T) { bothWays(t, testJoinCarriesHalfCloseBothWays) }

func testJoinCarriesHalfCloseBothWays(t *testing.T, way way) {
	cfg := newTLS(t)
	for _, ta := range transports {
		for _, tb := range transports {
			for _, aFirst := range []bool{true, false} {
				first := "b"
				if aFirst {
					first = "a"
				}
				t.Run(fmt.Sprintf("%s-%s/%s-closes-first", ta.name, tb.name, first), func(t *testing.T) {
					a, b := ta.make(t, cfg), tb.make(t, cfg)
					for _, c := range []net.Conn{a.peer, b.peer} {
						c.SetDeadline(time.Now().Add(guard))
					}
					res := way.start(t, context.Background(), a.inner, b.inner, time.Minute)

					closer, answerer := a.peer, b.peer
					if !aFirst {
						closer, answerer = b.peer, a.peer
					}
					request := randomBytes(t, 300<<10)
					reply := randomBytes(t, 200<<10)

					// The closer sends its request and half-closes, then
					// reads the reply.
					type got struct {
						data []byte
						err  error
					}
					replyc := make(chan got, 1)
					closerDone := make(chan struct{})
					defer func() {
						closer.Close()
						<-closerDone
					}()
					go func() {
						defer close(closerDone)
						if _, err := closer.Write(request); err != nil {
							replyc <- got{err: fmt.Errorf("write request: %w", err)}
							return
						}
						if err := closer.(closeWriter).CloseWrite(); err != nil {
							replyc <- got{err: fmt.Errorf("close write: %w", err)}
							return
						}
						data, err := io.ReadAll(closer)
						replyc <- got{data, err}
					}()

					// The answerer sees the whole request and then EOF, and
					// only then answers: the reverse direction must still be
					// open.
					data, err := io.ReadAll(answerer)
					if err != nil {
						t.Fatalf("answerer read: %v (got %d of %d bytes); half-close not carried?", err, len(data), len(request))
					}
					if !bytes.Equal(data, request) {
						t.Fatalf("answerer got %d bytes, not the %d-byte request", len(data), len(request))
					}
					if _, err := answerer.Write(reply); err != nil {
						t.Fatalf("reply after half-close: %v", err)
					}
					closeWrite(t, answerer)

					g := <-replyc
					if g.err != nil {
						t.Fatalf("closer: %v (got %d of %d bytes)", g.err, len(g.data), len(reply))
					}
					if !bytes.Equal(g.data, reply) {
						t.Fatalf("closer got %d bytes, not the %d-byte reply", len(g.data), len(reply))
					}

					r := await(t, res, "after both sides closed")
					if r.Err != nil {
						t.Errorf("Result.Err = %v, want nil for a clean close", r.Err)
					}
					wantAB, wantBA := int64(len(request)), int64(len(reply))
					if !aFirst {
						wantAB, wantBA = wantBA, wantAB
					}
					if r.BytesAToB != wantAB || r.BytesBToA != wantBA {
						t.Errorf("Result bytes a->b %d, b->a %d; want %d, %d", r.BytesAToB, r.BytesBToA, wantAB, wantBA)
					}
					if want := first + "_closed"; r.Reason != want {
						t.Errorf("Result.Reason = %q, want %q", r.Reason, want)
					}
				})
			}
		}
	}
}

func TestJoinReapsHalfOpenPair(t *testing.T) { bothWays(t, testJoinReapsHalfOpenPair) }

func testJoinReapsHalfOpenPair(t *testing.T, way way) {
	cfg := newTLS(t)
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			a, b := tr.make(t, cfg), tr.make(t, cfg)
			for _, c := range []net.Conn{a.peer, b.peer} {
				c.SetDeadline(time.Now().Add(guard))
			}
			res := way.start(t, context.Background(), a.inner, b.inner, 100*time.Millisecond)

			if _, err := a.peer.Write([]byte("ping")); err != nil {
				t.Fatal(err)
			}
			closeWrite(t, a.peer)
			data, err := io.ReadAll(b.peer)
			if err != nil || string(data) != "ping" {
				t.Fatalf("b read %q, %v; want ping then EOF", data, err)
			}
			// b's peer now says nothing and never closes: a peer gone
			// without a FIN. Join must give up on it.
			r := await(t, res, "for a half-open pair")
			if r.Err != nil {
				t.Errorf("Result.Err = %v; reaping is not a fault", r.Err)
			}
			if r.BytesAToB != 4 || r.BytesBToA != 0 {
				t.Errorf("Result bytes a->b %d, b->a %d; want 4, 0", r.BytesAToB, r.BytesBToA)
			}
			if r.Reason != "half_open_timeout" {
				t.Errorf("Result.Reason = %q, want half_open_timeout", r.Reason)
			}
			// Both peers see their connection end.
			for name, c := range map[string]net.Conn{"a": a.peer, "b": b.peer} {
				if n, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
					t.Errorf("%s peer read after reaping: n=%d err=%v, want the connection closed", name, n, err)
				}
			}
		})
	}
}

func TestJoinReapsHalfOpenPairWhosePeerStoppedReading(t *testing.T) {
	bothWays(t, testJoinReapsHalfOpenPairWhosePeerStoppedReading)
}

func testJoinReapsHalfOpenPairWhosePeerStoppedReading(t *testing.T, way way) {
	cfg := newTLS(t)
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			a, b := tr.make(t, cfg), tr.make(t, cfg)
			shrinkBuffers(t, a, b)
			for _, c := range []net.Conn{a.peer, b.peer} {
				c.SetDeadline(time.Now().Add(guard))
			}
			res := way.start(t, context.Background(), a.inner, b.inner, 300*time.Millisecond)

			// a's peer finishes sending and then vanishes without a FIN: it
			// never reads again, while b's peer sends to it until Join's
			// copy is stuck writing.
			closeWrite(t, a.peer)
			if data, err := io.ReadAll(b.peer); err != nil || len(data) != 0 {
				t.Fatalf("b read %q, %v; want EOF", data, err)
			}
			sent := fill(t, b.peer)

			// crypto/tls gives a close_notify 5 s to get out; reaping must
			// not wait for it to a peer that does not read. Passing runs
			// take little more than the half-open bound.
			r := awaitWithin(t, res, "for a half-open pair", 4*time.Second)
			if r.Err != nil {
				t.Errorf("Result.Err = %v; reaping is not a fault", r.Err)
			}
			if r.BytesAToB != 0 || r.BytesBToA <= 0 || r.BytesBToA > sent {
				t.Errorf("Result bytes a->b %d, b->a %d; want 0 and at most the %d sent", r.BytesAToB, r.BytesBToA, sent)
			}
		})
	}
}

// shrinkBuffers makes the socket buffers from Join to each peer small, so
// that a peer that does not read stalls Join's writes quickly and fully.
func shrinkBuffers(t *testing.T, sides ...side) {
	t.Helper()
	for _, s := range sides {
		if err := rawTCP(s.inner).SetWriteBuffer(4 << 10); err != nil {
			t.Fatal(err)
		}
		if err := rawTCP(s.peer).SetReadBuffer(4 << 10); err != nil {
			t.Fatal(err)
		}
	}
}

func rawTCP(c net.Conn) *net.TCPConn {
	for {
		nc, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			return c.(*net.TCPConn)
		}
		c = nc.NetConn()
	}
}

// fill writes to c until a write makes no progress for 100 ms: then every
// buffer between c and the far peer is full and Join's copy in that
// direction is blocked writing. It returns how many bytes c accepted.
func fill(t *testing.T, c net.Conn) int64 {
	t.Helper()
	chunk := make([]byte, 16<<10)
	var n int64
	for give := time.Now().Add(guard); time.Now().Before(give); {
		c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
		m, err := c.Write(chunk)
		n += int64(m)
		if isTimeout(err) {
			return n
		}
		if err != nil {
			t.Fatalf("fill: %v after %d bytes", err, n)
		}
	}
	t.Fatalf("fill: writes still flowing after %v (%d bytes)", guard, n)
	return n
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestJoinEndsWhenContextIsCancelled(t *testing.T) {
	bothWays(t, testJoinEndsWhenContextIsCancelled)
}

func testJoinEndsWhenContextIsCancelled(t *testing.T, way way) {
	cfg := newTLS(t)
	for _, tr := range transports {
		t.Run(tr.name+"/idle", func(t *testing.T) {
			a, b := tr.make(t, cfg), tr.make(t, cfg)
			for _, c := range []net.Conn{a.peer, b.peer} {
				c.SetDeadline(time.Now().Add(guard))
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			// A huge half-open bound: only ctx can end this Join.
			res := way.start(t, ctx, a.inner, b.inner, time.Hour)

			// Traffic first, so both copies are known to be running.
			if _, err := a.peer.Write([]byte("hi")); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(b.peer, make([]byte, 2)); err != nil {
				t.Fatal(err)
			}
			cancel()
			r := await(t, res, "after ctx was cancelled")
			if r.Err != nil {
				t.Errorf("Result.Err = %v; cancellation is not a fault", r.Err)
			}
			if r.BytesAToB != 2 {
				t.Errorf("BytesAToB = %d, want 2", r.BytesAToB)
			}
			if r.Reason != "cancelled" {
				t.Errorf("Result.Reason = %q, want cancelled", r.Reason)
			}
			for name, c := range map[string]net.Conn{"a": a.peer, "b": b.peer} {
				if n, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
					t.Errorf("%s peer read after cancel: n=%d err=%v, want the connection closed", name, n, err)
				}
			}
		})
	}
	for _, tr := range transports {
		t.Run(tr.name+"/blocked-writing", func(t *testing.T) {
			// Neither peer reads, so both of Join's copies end up blocked
			// writing into full buffers.
			a, b := tr.make(t, cfg), tr.make(t, cfg)
			shrinkBuffers(t, a, b)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			res := way.start(t, ctx, a.inner, b.inner, time.Hour)
			fill(t, a.peer)
			fill(t, b.peer)
			cancel()
			// crypto/tls gives a close_notify 5 s to get out; Join must not
			// wait for it to a peer that does not read. Passing runs take
			// about a millisecond.
			r := awaitWithin(t, res, "after ctx was cancelled", 4*time.Second)
			if r.Err != nil {
				t.Errorf("Result.Err = %v; cancellation is not a fault", r.Err)
			}
		})
	}
	t.Run("already-cancelled", func(t *testing.T) {
		a, b := plainTCP.make(t, cfg), plainTCP.make(t, cfg)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		r := await(t, way.start(t, ctx, a.inner, b.inner, time.Hour), "with a cancelled ctx")
		if r.Err != nil || r.BytesAToB != 0 || r.BytesBToA != 0 {
			t.Errorf("Result = %+v, want nothing moved and no error", r)
		}
	})
}

func TestJoinReportsCopyFaultWithDirection(t *testing.T) {
	cfg := newTLS(t)
	aInner, _, aRaw := tlsPair(t, cfg) // Join holds the server end
	b := plainTCP.make(t, cfg)
	b.peer.SetDeadline(time.Now().Add(guard))
	ch := make(chan proxy.Result, 1)
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		ch <- proxy.Join(context.Background(), aInner, b.inner, "client", "engine", time.Minute)
	}()
	t.Cleanup(func() { aInner.Close(); b.inner.Close(); <-finished })

	// A TLS application-data record that cannot decrypt, written under the
	// client's TLS layer: the server end's Read fails with a real error.
	junk := append([]byte{23, 3, 3, 0, 32}, bytes.Repeat([]byte{0xAA}, 32)...)
	if _, err := aRaw.Write(junk); err != nil {
		t.Fatal(err)
	}
	// The engine side is half-closed as usual; it closes in turn.
	if data, err := io.ReadAll(b.peer); err != nil || len(data) != 0 {
		t.Fatalf("engine peer read %q, %v; want EOF", data, err)
	}
	closeWrite(t, b.peer)

	var r proxy.Result
	select {
	case r = <-ch:
	case <-time.After(guard):
		t.Fatalf("Join did not return")
	}
	if r.Err == nil {
		t.Fatalf("Result.Err = nil; a TLS record failure is not connection noise")
	}
	if !strings.HasPrefix(r.Err.Error(), "copy client->engine: ") {
		t.Errorf("Result.Err = %q, want it to name the direction client->engine", r.Err)
	}
	if r.Reason != "error" {
		t.Errorf("Result.Reason = %q, want error", r.Reason)
	}
	if proxy.IsNoise(r.Err) {
		t.Errorf("Result.Err %v is classed as noise", r.Err)
	}
}

type netErr struct{ timeout bool }

func (e netErr) Error() string   { return "net error" }
func (e netErr) Timeout() bool   { return e.timeout }
func (e netErr) Temporary() bool { return false }

func TestIsNoise(t *testing.T) {
	p1, p2 := net.Pipe()
	defer p1.Close()
	defer p2.Close()
	p1.SetReadDeadline(time.Unix(1, 0))
	_, deadlineErr := p1.Read(make([]byte, 1))

	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, true},
		{"EOF", io.EOF, true},
		{"wrapped EOF", fmt.Errorf("read: %w", io.EOF), true},
		{"net.ErrClosed", net.ErrClosed, true},
		{"closed conn op error", &net.OpError{Op: "read", Net: "tcp", Err: net.ErrClosed}, true},
		{"connection reset, wrapped", &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}, true},
		{"broken pipe, wrapped", &net.OpError{Op: "write", Net: "tcp", Err: os.NewSyscallError("write", syscall.EPIPE)}, true},
		{"connection aborted", fmt.Errorf("x: %w", syscall.ECONNABORTED), true},
		{"half-close after the peer left", fmt.Errorf("copy gateway->local: %w", &net.OpError{Op: "close", Net: "tcp", Err: os.NewSyscallError("shutdown", syscall.ENOTCONN)}), true},
		{"closed pipe", io.ErrClosedPipe, true},
		{"context cancelled", fmt.Errorf("x: %w", context.Canceled), true},
		{"context deadline", context.DeadlineExceeded, true},
		{"deadline from a conn", deadlineErr, true},
		{"os.ErrDeadlineExceeded", os.ErrDeadlineExceeded, true},
		{"timeout net.Error", fmt.Errorf("x: %w", netErr{timeout: true}), true},
		{"plain error", errors.New("boom"), false},
		{"non-timeout net.Error", netErr{timeout: false}, false},
		{"connection refused", &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}, false},
		{"TLS alert", &net.OpError{Op: "remote error", Err: errors.New("tls: bad certificate")}, false},
		{"unexpected EOF", io.ErrUnexpectedEOF, false},
	}
	if !isTimeout(deadlineErr) {
		t.Fatalf("setup: read past deadline gave %v, not a timeout", deadlineErr)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := proxy.IsNoise(tt.err); got != tt.want {
				t.Fatalf("IsNoise(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

// TestJoinsCountsEveryJoinBegun: the count internal/memtrim watches to
// tell a burst of new connections moves once per Join, even one that ends
// at once.
func TestJoinsCountsEveryJoinBegun(t *testing.T) {
	before := proxy.Joins()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for range 3 {
		a, b := plainTCP.make(t, tlsConfigs{}), plainTCP.make(t, tlsConfigs{})
		proxy.Join(ctx, a.inner, b.inner, "a", "b", time.Hour)
	}
	if got := proxy.Joins() - before; got != 3 {
		t.Fatalf("Joins moved by %d over 3 Joins", got)
	}
}
