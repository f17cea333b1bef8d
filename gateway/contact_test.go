package gateway

import (
	"crypto/tls"
	"io"
	"net"
	"testing"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"
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
