package connect

import (
	"io"
	"net"
	"testing"

	"github.com/wakegate/wakegate/wire"
)

// BenchmarkNewConnection times a new local connection through the sidecar to
// its first reply, dialled on demand (a TLS handshake on its path) and on a
// spare made ahead; the ratio of the two, measured in one run, is what
// spares save. Each connection is opened once the spares are back, as a CI
// job's connections come, not back to back.
func BenchmarkNewConnection(b *testing.B) {
	for _, bc := range []struct {
		name  string
		ahead int
	}{{"on-demand", 0}, {"ahead", 2}} {
		b.Run(bc.name, func(b *testing.B) {
			g := startAheadGateway(b, wire.ProtoProxy, wire.ProtoAhead)
			_, addr, _ := startSidecar(b, Config{Gateways: []string{g.addr}, TLS: g.client, Ahead: bc.ahead})
			ready := func() bool { return len(g.idle) == bc.ahead }
			msg := []byte("ping")
			got := make([]byte, len("got:ping"))
			for b.Loop() {
				b.StopTimer()
				g.waitFor(b, "the spares made again", ready)
				b.StartTimer()
				c, err := net.Dial("tcp", addr)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := c.Write(msg); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(c, got); err != nil {
					b.Fatal(err)
				}
				c.Close()
			}
		})
	}
}
