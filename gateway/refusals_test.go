package gateway

import (
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wakegate/wakegate/certs"
)

// TestRefusedHandshakesAreLoggedAtABoundedRate: a flood of garbage
// handshakes logs the first in full and the rest as one count per
// interval.
func TestRefusedHandshakesAreLoggedAtABoundedRate(t *testing.T) {
	const n = 1000
	h := &fakeHost{addr: echoEngine(t)}
	logs := newLogRecorder()
	clock := &manualClock{}
	g := startGatewayOpts(t, h, gatewayOptions{config: func(c *Config) {
		c.Log = logs.logger()
		c.Clock = clock
	}})

	garbage := func() error {
		c, err := net.Dial("tcp", g.addr)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
		// The gateway logs the refusal before it closes the connection.
		_, err = io.Copy(io.Discard, c)
		return err
	}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	jobs := make(chan struct{})
	for range 16 {
		wg.Go(func() {
			for range jobs {
				errs <- garbage()
			}
		})
	}
	for range n {
		jobs <- struct{}{}
	}
	close(jobs)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("garbage connection: %v", err)
		}
	}

	if got := logs.all(); len(got) != 1 || got[0].Msg != "connection refused: handshake failed" || got[0].Attrs["remote"] == "" {
		t.Fatalf("log during the flood = %+v, want the first refusal in full only", got)
	}
	if fired := clock.fire(); fired != 1 {
		t.Fatalf("%d interval timers fired, want 1", fired)
	}
	sum := logs.matching("not logged singly")
	if len(sum) != 1 || sum[0].Attrs["refused"] != "999" || sum[0].Attrs["handshake_failed"] != "999" || sum[0].Attrs["interval"] != "10s" {
		t.Fatalf("summary = %+v, want one line counting 999 handshakes refused in 10s", sum)
	}

	// The next interval starts with a refusal logged in full.
	if err := garbage(); err != nil {
		t.Fatal(err)
	}
	if got := logs.matching("handshake failed"); len(got) != 2 {
		t.Fatalf("%d full refusal lines after the interval, want 2", len(got))
	}
	if got := len(logs.all()); got != 3 {
		t.Fatalf("%d log lines for %d refusals, want 3", got, n+1)
	}
}

func TestRefusalLogSummarisesEachKind(t *testing.T) {
	logs := newLogRecorder()
	clock := &manualClock{}
	r := newRefusalLog(logs.logger(), clock, refusalLogInterval)
	for range 5 {
		r.note(refusedHandshake, "", slog.LevelInfo, "handshake failed")
	}
	for range 3 {
		r.note(refusedPolicy, "team-a", slog.LevelWarn, "refused by policy")
	}
	r.note(refusedPolicy, "team-b", slog.LevelWarn, "refused by policy")
	r.note(refusedOverLimit, "team-a", slog.LevelWarn, "over the cap")
	if got := len(logs.all()); got != 4 {
		t.Fatalf("%d lines for the first of each kind and identity, want 4", got)
	}
	clock.fire()
	sum := logs.matching("not logged singly")
	if len(sum) != 1 {
		t.Fatalf("summaries = %+v, want 1", sum)
	}
	s := sum[0]
	if s.Level != slog.LevelWarn || s.Attrs["refused"] != "6" || s.Attrs["handshake_failed"] != "4" || s.Attrs["policy"] != "2" {
		t.Fatalf("summary = %+v, want 6 refused: 4 handshakes, 2 by policy, at warn", s)
	}
	if _, ok := s.Attrs["over_limit"]; ok {
		t.Fatalf("summary %+v counts a kind with nothing unlogged", s)
	}
	// A quiet interval logs nothing; close summarises what is pending and
	// stops the timer.
	clock.fire()
	r.note(refusedHandshake, "", slog.LevelInfo, "handshake failed")
	r.note(refusedHandshake, "", slog.LevelInfo, "handshake failed")
	r.close()
	r.close()
	if got := logs.matching("not logged singly"); len(got) != 2 || got[1].Attrs["refused"] != "1" {
		t.Fatalf("summaries after close = %+v, want a second one counting 1", got)
	}
	if fired := clock.fire(); fired != 0 {
		t.Fatalf("a timer fired after close")
	}
}

// TestRevokedClientsAreLoggedApartFromNoise: a client of the CA refused at
// the handshake (revoked) is logged in full, with its identity, even in an
// interval full of garbage handshakes.
func TestRevokedClientsAreLoggedApartFromNoise(t *testing.T) {
	h := &fakeHost{addr: echoEngine(t)}
	logs := newLogRecorder()
	clock := &manualClock{}
	g := startGatewayOpts(t, h, gatewayOptions{config: func(c *Config) {
		c.Log = logs.logger()
		c.Clock = clock
		c.TLS.VerifyConnection = func(cs tls.ConnectionState) error {
			if cn := cs.PeerCertificates[0].Subject.CommonName; cn == "leaver" {
				return fmt.Errorf("certificate %s (%s) is revoked", cs.PeerCertificates[0].SerialNumber, cn)
			}
			return nil
		}
	}})
	leaver := g.issue(t, "leaver")
	for range 3 {
		c, err := net.Dial("tcp", g.addr)
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte("garbage\r\n\r\n"))
		c.SetDeadline(time.Now().Add(15 * time.Second))
		io.Copy(io.Discard, c)
		c.Close()

		cfg := certs.ClientTLS(func() *tls.Certificate { return leaver }, g.ca.Pool(), "127.0.0.1")
		lc, err := tls.Dial("tcp", g.addr, cfg)
		if err == nil {
			lc.SetDeadline(time.Now().Add(15 * time.Second))
			lc.Read(make([]byte, 1))
			lc.Close()
		}
	}
	eventually(t, "every refusal is noted", func() bool { return g.srv.refusals.noted() == 6 })
	full := logs.matching("handshake failed")
	if len(full) != 2 || full[1].Attrs["identity"] != "leaver" || !strings.Contains(full[1].Attrs["err"], "is revoked") || full[1].Level != slog.LevelWarn {
		t.Fatalf("full lines = %+v, want the first garbage one and the first of leaver, at warn", full)
	}
	clock.fire()
	if sum := logs.matching("not logged singly"); len(sum) != 1 || sum[0].Attrs["handshake_failed"] != "2" || sum[0].Attrs["revoked"] != "2" {
		t.Fatalf("summary = %+v, want 2 handshakes and 2 revoked", sum)
	}
}
