package gateway

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wakegate/wakegate/certs"
)

// TestFirstContactStaysInItsSizeClass: every proxied stream keeps one
// firstContact for its life. At 96 bytes (this session's first version)
// the gateway's idle RSS per connection rose by 1.5–2.5 KiB with mTLS to
// the engine (bench-peers, docs/performance.md), most likely because the
// TLS handshakes fill and empty that size class by the thousand and the
// long-lived objects kept its spans, mostly empty, in RSS. Within 80 bytes
// it costs what it holds.
func TestFirstContactStaysInItsSizeClass(t *testing.T) {
	if n := unsafe.Sizeof(firstContact{}); n > 80 {
		t.Fatalf("firstContact is %d bytes, want at most 80: order its fields so that it packs", n)
	}
}

// TestProxiedStaysInItsSizeClass: every proxied stream keeps its proxied
// (and the callback that holds it) for its life, as firstContact.
func TestProxiedStaysInItsSizeClass(t *testing.T) {
	if n := unsafe.Sizeof(proxied{}); n > 112 {
		t.Fatalf("proxied is %d bytes, want at most 112: order its fields so that it packs", n)
	}
}

// TestTheEngineSideBecomesItsSocketOnceTheEngineAnswered: until the
// engine's first byte, the copy must read through contactEngine (it keeps
// the client's bytes for a replay); after it, the copy may wait on the
// socket itself with no buffer (proxy.Socketer), and asking says the
// stream is under way (spares are made again).
func TestTheEngineSideBecomesItsSocketOnceTheEngineAnswered(t *testing.T) {
	p := newEngineSpares(2, nil, func(string) bool { return true }, prometheus.NewGauge(prometheus.GaugeOpts{Name: "g"}), quiet)
	gw, engine := net.Pipe()
	defer engine.Close()
	ce := &contactEngine{Conn: gw, f: &firstContact{spares: p}}
	if s := ce.Socket(); s != nil {
		t.Fatal("the engine side offered its socket before the engine answered")
	}
	go engine.Write([]byte("hi"))
	buf := make([]byte, 2)
	if _, err := io.ReadFull(ce, buf); err != nil {
		t.Fatal(err)
	}
	if len(p.soon) != 0 {
		t.Fatal("spares asked for while the first answer crossed")
	}
	if s := ce.Socket(); s != gw {
		t.Fatalf("once the engine answered: socket %v, want the engine's connection", s)
	}
	if len(p.soon) != 1 {
		t.Fatal("asking for the socket did not count the stream as under way")
	}
}

func TestTheClientSideBecomesItsTLSConnOnceTheEngineAnsweredAndHeldBytesWentOn(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	tc := tls.Server(a, &tls.Config{}) // no handshake needed to hand it round
	f := &firstContact{tc: tc}
	cc := &contactClient{heldConn: &heldConn{Conn: tc, early: []byte("xy")}, f: f}
	if s := cc.Socket(); s != nil {
		t.Fatal("the client side offered its connection before the engine answered: what it sends may be replayed")
	}
	f.committed.Store(true)
	if s := cc.Socket(); s != nil {
		t.Fatal("the client side offered its connection with bytes read while it was held still to go")
	}
	buf := make([]byte, 2)
	if n, err := cc.Read(buf); err != nil || string(buf[:n]) != "xy" {
		t.Fatalf("read = %q, %v; want the held bytes", buf[:n], err)
	}
	if s := cc.Socket(); s != tc {
		t.Fatalf("once answered and the held bytes went on: socket %v, want the client's tls.Conn", s)
	}
}

// TestATimeoutIsNotTheEndOfTheClientsInput: a read deadline may end the
// client side's Read before the engine answered (a kick of proxy.Start,
// asking again whether the wrapper has settled). That is not the client
// ending its input: an engine that closes before answering has then
// failed, and the client's bytes are replayed to another engine.
func TestATimeoutIsNotTheEndOfTheClientsInput(t *testing.T) {
	ca, err := certs.Init(t.TempDir(), "test", nil)
	if err != nil {
		t.Fatal(err)
	}
	sc, ccert := leafPair(t, ca, "gateway", "ci")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	rawCli, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer rawCli.Close()
	rawGw, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer rawGw.Close()
	rawGw.SetDeadline(time.Now().Add(10 * time.Second)) // a bound on the test, never reached
	gw := tls.Server(rawGw, certs.ServerTLS(func() *tls.Certificate { return sc }, ca.Pool()))
	cli := tls.Client(rawCli, certs.ClientTLS(func() *tls.Certificate { return ccert }, ca.Pool(), "127.0.0.1"))
	go cli.Write([]byte("req"))
	f := &firstContact{tc: gw}
	cc := &contactClient{heldConn: &heldConn{Conn: gw}, f: f}
	buf := make([]byte, 3)
	if _, err := io.ReadFull(cc, buf); err != nil {
		t.Fatal(err)
	}
	gw.SetReadDeadline(time.Unix(1, 0))
	if _, err := cc.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past its deadline: %v; want a timeout", err)
	}
	gw.SetReadDeadline(time.Now().Add(10 * time.Second))
	eng, engPeer := net.Pipe()
	engPeer.Close() // the engine closes without a byte
	ce := &contactEngine{Conn: eng, f: f}
	if _, err := ce.Read(buf); err != io.EOF {
		t.Fatalf("engine read: %v; want EOF", err)
	}
	failed, replay, replayable := f.outcome()
	if failed == nil || !replayable || string(replay) != "req" {
		t.Fatalf("outcome: failed %v, replay %q, replayable %v; want the engine failed before answering, and the client's bytes to replay", failed, replay, replayable)
	}
}
