package gateway

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/wakegate/wakegate/wire"
)

// TestConnectionsPerIdentityAreCapped: an identity at its cap (held and
// proxied connections together) is refused the next connection, a wake
// request hearing why, while another identity gets through; once one of
// its connections closes, it gets in again.
func TestConnectionsPerIdentityAreCapped(t *testing.T) {
	const limit = 3
	h := &fakeHost{startGate: make(chan struct{}), addr: echoEngine(t)}
	logs := newLogRecorder()
	g := startGatewayOpts(t, h, gatewayOptions{wake: time.Minute, config: func(c *Config) {
		c.MaxConnsPerIdentity = limit
		c.Log = logs.logger()
	}})
	a, b := g.issue(t, "team-a"), g.issue(t, "team-b")

	// team-a: one held for the wake, then, once the engine runs, two
	// proxied (the held one among them).
	var held []*tls.Conn
	for range limit {
		c := g.dial(t, a, g.ca, "")
		c.Write([]byte("a"))
		held = append(held, c)
	}
	eventually(t, "team-a's connections are counted", func() bool { return g.srv.connsOf("team-a") == limit })

	refusedStream := func(t *testing.T, cert *tls.Certificate) {
		t.Helper()
		c := g.dial(t, cert, g.ca, "")
		c.SetDeadline(time.Now().Add(15 * time.Second))
		c.Write([]byte("a"))
		if n, err := c.Read(make([]byte, 1)); err == nil {
			t.Fatalf("a connection over the cap read %d bytes", n)
		} else if isTimeout(err) {
			t.Fatal("a connection over the cap was held, not refused")
		}
	}
	refusedStream(t, a)

	w := g.dial(t, a, g.ca, wire.ProtoWake)
	w.SetDeadline(time.Now().Add(15 * time.Second))
	e, err := wire.NewReader(w).Next()
	if err != nil {
		t.Fatalf("wake request over the cap: %v", err)
	}
	if e.Kind != wire.Refused || !strings.Contains(e.Message, "team-a") || !strings.Contains(e.Message, "--max-conns-per-identity") {
		t.Fatalf("wake request over the cap heard %+v, want a refusal naming the identity and the limit", e)
	}
	if got := logs.matching("too many connections"); len(got) != 1 || got[0].Attrs["identity"] != "team-a" {
		t.Fatalf("refusal log lines = %+v, want one naming team-a", got)
	}

	// team-b is held like anyone else meanwhile, and served.
	bc := g.dial(t, b, g.ca, "")
	bc.SetDeadline(time.Now().Add(15 * time.Second))
	bc.Write([]byte("b"))
	close(h.startGate)
	if _, err := io.ReadFull(bc, make([]byte, 1)); err != nil {
		t.Fatalf("team-b while team-a is at its cap: %v", err)
	}
	for _, c := range held {
		c.SetDeadline(time.Now().Add(15 * time.Second))
		if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
			t.Fatalf("team-a's held connection: %v", err)
		}
	}
	// Proxied now; still at the cap.
	refusedStream(t, a)

	held[0].Close()
	eventually(t, "team-a's closed connection is no longer counted", func() bool { return g.srv.connsOf("team-a") == limit-1 })
	c := g.dial(t, a, g.ca, "")
	c.SetDeadline(time.Now().Add(15 * time.Second))
	c.Write([]byte("x"))
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatalf("team-a under its cap again: %v", err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
