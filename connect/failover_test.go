package connect

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wakegate/wakegate/wire"
)

// logLine is one log record: its message and its attributes as text.
type logLine struct {
	msg   string
	attrs map[string]string
}

// lineRecorder keeps every log record with its attributes.
type lineRecorder struct {
	mu    sync.Mutex // guards lines
	lines []logLine
}

func (r *lineRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *lineRecorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *lineRecorder) WithGroup(string) slog.Handler            { return r }
func (r *lineRecorder) Handle(_ context.Context, rec slog.Record) error {
	l := logLine{msg: rec.Message, attrs: map[string]string{}}
	rec.Attrs(func(a slog.Attr) bool {
		l.attrs[a.Key] = a.Value.String()
		return true
	})
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lines = append(r.lines, l)
	return nil
}

// failovers are the "gateway failover" lines logged so far.
func (r *lineRecorder) failovers() []logLine {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []logLine
	for _, l := range r.lines {
		if l.msg == "gateway failover" {
			out = append(out, l)
		}
	}
	return out
}

// roundTrip carries one message through the sidecar at addr and checks the
// reply.
func roundTrip(t *testing.T, addr, msg string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got, err := exchange(t, c, msg)
	if err != nil || got != "got:"+msg {
		t.Fatalf("reply %q, %v; want %q", got, err, "got:"+msg)
	}
}

// served is how many connections g has accepted so far.
func served(g *testGateway) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.protos)
}

// checkFailover checks that the failover lines logged are exactly want,
// each a from and a to.
func checkFailover(t *testing.T, rec *lineRecorder, want ...[2]string) {
	t.Helper()
	got := rec.failovers()
	if len(got) != len(want) {
		t.Fatalf("%d failover lines %v, want %d: one per change of gateway", len(got), got, len(want))
	}
	for i, w := range want {
		if got[i].attrs["from"] != w[0] || got[i].attrs["to"] != w[1] || got[i].attrs["reason"] == "" {
			t.Fatalf("failover line %d = %v, want from %s to %s with a reason", i, got[i].attrs, w[0], w[1])
		}
	}
}

func TestSidecarFailsOverToTheOtherGatewayAndBack(t *testing.T) {
	ca := newTestCA(t)
	a, b := ca.gateway(t, false, "127.0.0.1:0"), ca.gateway(t, false, "127.0.0.1:0")
	rec := &lineRecorder{}
	_, addr, _ := startSidecar(t, Config{Gateways: []string{a.addr, b.addr}, TLS: ca.client, Log: slog.New(rec)})

	roundTrip(t, addr, "first")
	if served(a) != 1 || served(b) != 0 {
		t.Fatalf("served a=%d b=%d; want the first connection through the first gateway", served(a), served(b))
	}
	checkFailover(t, rec)

	a.stop() // a rolling restart takes a down
	roundTrip(t, addr, "during a's restart")
	roundTrip(t, addr, "again")
	if served(b) != 2 {
		t.Fatalf("b served %d connections, want 2 while a is down", served(b))
	}
	checkFailover(t, rec, [2]string{a.addr, b.addr})

	// a is back: connections stay with b, the last that worked, until b
	// goes down in its turn.
	a = ca.gateway(t, false, a.addr)
	roundTrip(t, addr, "a is back")
	if served(a) != 0 || served(b) != 3 {
		t.Fatalf("served a=%d b=%d; want connections to stay with b while it works", served(a), served(b))
	}
	b.stop()
	roundTrip(t, addr, "during b's restart")
	if served(a) != 1 {
		t.Fatalf("a served %d connections, want 1 after b went down", served(a))
	}
	checkFailover(t, rec, [2]string{a.addr, b.addr}, [2]string{b.addr, a.addr})
}

func TestSidecarTriesEachAddressOfAName(t *testing.T) {
	ca := newTestCA(t)
	g := ca.gateway(t, false, "127.0.0.1:0")
	_, port, _ := net.SplitHostPort(g.addr)
	var mu sync.Mutex // guards looked
	var looked []string
	lookup := func(_ context.Context, host string) ([]string, error) {
		mu.Lock()
		defer mu.Unlock()
		looked = append(looked, host)
		// 127.0.0.2 is loopback too, and nothing listens there.
		return []string{"127.0.0.2", "127.0.0.1"}, nil
	}
	// No ServerName: each address is verified as the name it came from.
	client := ca.client.Clone()
	client.ServerName = ""
	rec := &lineRecorder{}
	gw := net.JoinHostPort("localhost", port)
	_, addr, _ := startSidecar(t, Config{Gateways: []string{gw}, TLS: client, LookupHost: lookup, Log: slog.New(rec)})

	roundTrip(t, addr, "first")
	roundTrip(t, addr, "second")
	if served(g) != 2 {
		t.Fatalf("served %d connections, want 2", served(g))
	}
	checkFailover(t, rec, [2]string{gw + " (127.0.0.2:" + port + ")", gw + " (127.0.0.1:" + port + ")"})
	mu.Lock()
	defer mu.Unlock()
	if len(looked) != 2 || looked[0] != "localhost" {
		t.Fatalf("looked up %q, want localhost once per connection", looked)
	}
}

// A gateway that did not verify is a refusal: trying the others would
// hide a wrong --gateway, CA or --server-name.
func TestSidecarReportsARefusalWithoutTryingOtherGateways(t *testing.T) {
	ours := newTestCA(t)
	foreign := newTestCA(t).gateway(t, false, "127.0.0.1:0")
	good := ours.gateway(t, false, "127.0.0.1:0")
	sc, err := New(Config{Gateways: []string{foreign.addr, good.addr}, TLS: ours.client})
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = sc.dial(t.Context(), wire.ProtoProxy)
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), foreign.addr) {
		t.Fatalf("dial = %v, want a refusal naming %s", err, foreign.addr)
	}
	if served(good) != 0 {
		t.Fatal("the sidecar tried another gateway after a refusal")
	}
}

// Each way a gateway can be unreachable moves the connection on to the
// next one.
func TestSidecarMovesOnFromAnUnreachableGateway(t *testing.T) {
	// closing accepts TCP and closes at once, as a gateway shutting down
	// does mid-handshake; silent accepts and never answers.
	closing, silent := rawListener(t, true), rawListener(t, false)
	refused, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refusedAddr := refused.Addr().String()
	refused.Close()
	noName := func(context.Context, string) ([]string, error) { return nil, errors.New("no such host") }

	for _, tc := range []struct {
		name, first, reason string
	}{
		{"connection refused", refusedAddr, "connection refused"},
		{"EOF in the handshake", closing, "EOF|reset"},
		{"handshake timeout", silent, "no TLS handshake within 300ms"},
		{"name does not resolve", "gateway.invalid:8443", "no such host"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ca := newTestCA(t)
			good := ca.gateway(t, false, "127.0.0.1:0")
			rec := &lineRecorder{}
			_, addr, _ := startSidecar(t, Config{Gateways: []string{tc.first, good.addr}, TLS: ca.client,
				DialTimeout: 300 * time.Millisecond, LookupHost: noName, Log: slog.New(rec)})
			roundTrip(t, addr, "build")
			if served(good) != 1 {
				t.Fatalf("the second gateway served %d connections, want 1", served(good))
			}
			lines := rec.failovers()
			if len(lines) != 1 || !slices.ContainsFunc(strings.Split(tc.reason, "|"), func(r string) bool { return strings.Contains(lines[0].attrs["reason"], r) }) {
				t.Fatalf("failover lines %v, want one whose reason says %q", lines, tc.reason)
			}
		})
	}
}

// rawListener accepts TCP on loopback and either closes each connection at
// once or holds it until the test ends.
func rawListener(t *testing.T, closeAtOnce bool) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex // guards held
	var held []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if closeAtOnce {
				c.Close()
				continue
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
		for _, c := range held {
			c.Close()
		}
	})
	return ln.Addr().String()
}

func TestAllGatewaysDownSaysWhatEachDid(t *testing.T) {
	var addrs []string
	for range 2 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addrs = append(addrs, ln.Addr().String())
		ln.Close()
	}
	sc, err := New(Config{Gateways: addrs, TLS: newTestCA(t).client})
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = sc.dial(t.Context(), wire.ProtoProxy)
	if err == nil || errors.Is(err, ErrRefused) || strings.Contains(err.Error(), "\n") {
		t.Fatalf("dial = %v, want one line, not a refusal", err)
	}
	for _, a := range addrs {
		if !strings.Contains(err.Error(), a) {
			t.Fatalf("dial = %v, want it to name %s", err, a)
		}
	}
}

func TestParseGateways(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want string // the addresses joined by spaces, or the error's start
	}{
		{[]string{"gw.example.com:8443"}, "gw.example.com:8443"},
		{[]string{"a:1,b:2", "c:3"}, "a:1 b:2 c:3"},
		{[]string{" a:1 , b:2 ", "a:1"}, "a:1 b:2"},
		{[]string{"[::1]:8443,127.0.0.1:8443"}, "[::1]:8443 127.0.0.1:8443"},
		{[]string{","}, "an empty gateway address"},
		{[]string{"a:1,"}, "an empty gateway address"},
		{nil, "no gateway address"},
		{[]string{"gw.example.com"}, `gateway address "gw.example.com": want HOST:PORT`},
		{[]string{":8443"}, `gateway address ":8443" has no host`},
		{[]string{"gw:0"}, `gateway address "gw:0": the port must be`},
		{[]string{"gw:https"}, `gateway address "gw:https": the port must be`},
	} {
		got, err := ParseGateways(tc.in)
		if err != nil {
			if !strings.HasPrefix(err.Error(), tc.want) || !strings.Contains(err.Error(), gatewayExample) && tc.in != nil {
				t.Errorf("ParseGateways(%q) = %v, want an error starting %q with an example", tc.in, err, tc.want)
			}
			continue
		}
		if s := strings.Join(got, " "); s != tc.want {
			t.Errorf("ParseGateways(%q) = %q, want %q", tc.in, s, tc.want)
		}
	}
}
