package gateway

import (
	"crypto/tls"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/wakegate/wakegate/certs"
)

// openFDs counts this process's descriptors: the gateway's, its engine's
// and the attackers' (which close theirs before the count is compared).
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// backToBaseline waits until descriptors and goroutines are no more than
// they were before the attack. It collects garbage as it polls: the net
// package keeps pipes for splice (TCP to TCP copies, as in the test's echo
// engine) in a pool that only a collection empties.
func backToBaseline(t *testing.T, fds, goroutines int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		runtime.GC()
		f, g := openFDs(t), runtime.NumGoroutine()
		if f <= fds && g <= goroutines {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("after the attack: %d descriptors (baseline %d), %d goroutines (baseline %d)\n%s",
				f, fds, g, goroutines, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond) // polling with a deadline
	}
}

// attackers runs n attackers, 32 at a time.
func attackers(n int, f func(i int)) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			f(i)
		})
	}
	wg.Wait()
}

// drain reads until the gateway closes the connection (or 10 s pass).
func drain(c net.Conn) {
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.Copy(io.Discard, c)
}

// TestAttacksOnTheMTLSPortLeaveNothingBehind: after each kind of attack on
// the mTLS port, with an engine running, the process is back to the
// descriptors and goroutines it had before, and a real client still gets
// through.
func TestAttacksOnTheMTLSPortLeaveNothingBehind(t *testing.T) {
	other, err := certs.Init(t.TempDir(), "other", nil)
	if err != nil {
		t.Fatal(err)
	}
	foreignLeaf, err := other.Issue(certs.Client, "ci", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	foreign := foreignLeaf.TLSCertificate() // a *tls.Certificate

	for _, tc := range []struct {
		name   string
		attack func(t *testing.T, g *testGateway)
	}{
		{"garbage bytes", func(t *testing.T, g *testGateway) {
			attackers(200, func(int) {
				if c, err := net.Dial("tcp", g.addr); err == nil {
					c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
					drain(c)
					c.Close()
				}
			})
		}},
		{"silent connections past the handshake bound", func(t *testing.T, g *testGateway) {
			attackers(200, func(int) {
				if c, err := net.Dial("tcp", g.addr); err == nil {
					drain(c) // the gateway must close it, not the attacker
					c.Close()
				}
			})
		}},
		{"half a ClientHello, then a reset", func(t *testing.T, g *testGateway) {
			attackers(200, func(int) {
				if c, err := net.Dial("tcp", g.addr); err == nil {
					c.Write([]byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01})
					c.(*net.TCPConn).SetLinger(0)
					c.Close()
				}
			})
		}},
		{"another CA's certificate and none", func(t *testing.T, g *testGateway) {
			attackers(200, func(i int) {
				cert := foreign
				if i%2 == 1 {
					cert = nil
				}
				cfg := certs.ClientTLS(func() *tls.Certificate { return cert }, g.ca.Pool(), "127.0.0.1")
				if cert == nil {
					cfg.GetClientCertificate = nil
				}
				if c, err := tls.Dial("tcp", g.addr, cfg); err == nil {
					c.Write([]byte("x"))
					drain(c)
					c.Close()
				}
			})
		}},
		{"one identity far over its cap", func(t *testing.T, g *testGateway) {
			flood := g.issue(t, "flood")
			var mu sync.Mutex
			var open []net.Conn
			attackers(200, func(int) {
				cfg := certs.ClientTLS(func() *tls.Certificate { return flood }, g.ca.Pool(), "127.0.0.1")
				if c, err := tls.Dial("tcp", g.addr, cfg); err == nil {
					c.Write([]byte("x"))
					mu.Lock()
					open = append(open, c)
					mu.Unlock()
				}
			})
			eventually(t, "the flood is capped", func() bool { return g.srv.connsOf("flood") <= 5 })
			for _, c := range open {
				c.Close()
			}
		}},
		{"proxied clients that reset mid-stream", func(t *testing.T, g *testGateway) {
			attackers(200, func(int) {
				raw, err := net.Dial("tcp", g.addr)
				if err != nil {
					return
				}
				c := tls.Client(raw, certs.ClientTLS(func() *tls.Certificate { return g.client }, g.ca.Pool(), "127.0.0.1"))
				c.SetDeadline(time.Now().Add(10 * time.Second))
				if _, err := c.Write(make([]byte, 64<<10)); err == nil {
					io.ReadFull(c, make([]byte, 1024))
				}
				raw.(*net.TCPConn).SetLinger(0)
				raw.Close()
			})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := &fakeHost{addr: echoEngine(t)}
			g := startGatewayOpts(t, h, gatewayOptions{config: func(c *Config) {
				c.HandshakeTimeout = 300 * time.Millisecond
				c.MaxConnsPerIdentity = 5
				c.Log = newLogRecorder().logger()
			}})
			roundTrip := func() {
				t.Helper()
				c := g.dial(t, g.client, g.ca, "")
				c.SetDeadline(time.Now().Add(10 * time.Second))
				if _, err := c.Write([]byte("ping")); err != nil {
					t.Fatal(err)
				}
				if _, err := io.ReadFull(c, make([]byte, 4)); err != nil {
					t.Fatalf("a real client: %v", err)
				}
				c.Close()
				eventually(t, "the real client is gone", func() bool { return g.srv.openConns() == 0 })
			}
			roundTrip() // wakes the engine: its goroutines are part of the baseline
			fds, goroutines := openFDs(t), runtime.NumGoroutine()

			tc.attack(t, g)
			backToBaseline(t, fds, goroutines)
			roundTrip()
		})
	}
}
