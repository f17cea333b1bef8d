package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/smallstep/nosql"
)

// testTTL is short so that expiry happens within a test; waits poll for
// what they wait for rather than sleeping.
const testTTL = 300 * time.Millisecond

// fakeHost is the provider under the cluster: it records what it was
// asked and answers with an address naming itself, so that a test can see
// which gateway started an engine.
type fakeHost struct {
	name string

	mu       sync.Mutex // guards the fields below
	starts   map[string]int
	stops    map[string]int
	asked    int           // Failed calls
	gate     chan struct{} // if set, Start waits for it to close (or ctx)
	startErr error
	failed   error
}

func newHost(name string) *fakeHost {
	return &fakeHost{name: name, starts: map[string]int{}, stops: map[string]int{}}
}

func (f *fakeHost) addr(id string) string { return fmt.Sprintf("tls://%s-%s:443", f.name, id) }

func (f *fakeHost) Engines(context.Context) ([]string, error) {
	return []string{"engine-0", "engine-1"}, nil
}

func (f *fakeHost) Start(ctx context.Context, id string) (string, error) {
	f.mu.Lock()
	f.starts[id]++
	gate, err := f.gate, f.startErr
	f.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
	if err != nil {
		return "", err
	}
	return f.addr(id), nil
}

func (f *fakeHost) Stop(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stops[id]++
	return nil
}

func (f *fakeHost) Failed(string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.asked++
	return f.failed
}

func (f *fakeHost) count(id string) (starts, stops int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.starts[id], f.stops[id]
}

func (f *fakeHost) setGate(g chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.gate = g
}

// logBuf collects a gateway's log lines.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// newStore opens a real bbolt database that the test's gateways share.
func newStore(t *testing.T) nosql.DB {
	t.Helper()
	db, err := nosql.New(nosql.BBoltDriver, filepath.Join(t.TempDir(), "shared.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

type gw struct {
	*Provider
	host *fakeHost
	log  *logBuf
}

// newGateway is one gateway's cluster provider on store, closed at the
// end of the test.
func newGateway(t *testing.T, store Store, name string, edit ...func(*Config)) gw {
	t.Helper()
	g := gw{host: newHost(name), log: &logBuf{}}
	cfg := Config{Host: g.host, Store: store, Holder: name, TTL: testTTL, Poll: 10 * time.Millisecond,
		Log: slog.New(slog.NewTextHandler(g.log, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	for _, e := range edit {
		e(&cfg)
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	g.Provider = p
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("close %s: %v", name, err)
		}
		if t.Failed() {
			t.Logf("%s's log:\n%s", name, g.log.String())
		}
	})
	return g
}

// row reads engine id's lease as the store holds it.
func row(t *testing.T, store Store, id string) lease {
	t.Helper()
	b, err := store.Get([]byte(DefaultTable), []byte(id))
	if err != nil {
		t.Fatalf("read lease of %s: %v", id, err)
	}
	var l lease
	if err := json.Unmarshal(b, &l); err != nil {
		t.Fatalf("lease of %s: %v", id, err)
	}
	return l
}

// waitFor polls cond until it holds, failing the test after a bound.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond) // polling cond, bounded by deadline
	}
}

// holds says whether p holds engine id's lease.
func (p *Provider) holds(id string) bool {
	p.mu.Lock()
	s := p.slots[id]
	p.mu.Unlock()
	if s == nil {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.held != nil
}

// die makes p stop refreshing engine id's lease without releasing it or
// touching the store again, as a gateway killed with SIGKILL would.
func (p *Provider) die(id string) {
	p.mu.Lock()
	s := p.slots[id]
	p.mu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.held.cancel()
	s.held = nil // a dead gateway remembers nothing
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestConcurrentStartsOfOneEngineStartItOnce(t *testing.T) {
	store := newStore(t)
	a, b := newGateway(t, store, "a"), newGateway(t, store, "b")
	ctx := ctxFor(t)
	// One start per gateway at a time, as the gateway merges its own
	// concurrent wakes of an engine into one.
	for i := range 16 {
		id := fmt.Sprintf("engine-%d", i)
		go1 := make(chan struct{})
		var wg sync.WaitGroup
		addrs := make([]string, 2)
		errs := make([]error, 2)
		for j := range addrs {
			g := a
			if j%2 == 1 {
				g = b
			}
			wg.Go(func() {
				<-go1
				addrs[j], errs[j] = g.Start(ctx, id)
			})
		}
		close(go1)
		wg.Wait()
		for j := range addrs {
			if errs[j] != nil {
				t.Fatalf("%s: start %d: %v", id, j, errs[j])
			}
			if addrs[j] != addrs[0] {
				t.Errorf("%s: start %d got %s, start 0 got %s", id, j, addrs[j], addrs[0])
			}
		}
		sa, _ := a.host.count(id)
		sb, _ := b.host.count(id)
		starter, other := a, b
		if sb > 0 {
			starter, other = b, a
		}
		if sa+sb != 1 {
			t.Errorf("%s: started %d times by a and %d by b, want once in all", id, sa, sb)
		}
		if addrs[0] != starter.host.addr(id) {
			t.Errorf("%s: address %s is not the starter's %s", id, addrs[0], starter.host.addr(id))
		}
		if !starter.holds(id) || other.holds(id) {
			t.Errorf("%s: the starter should hold its lease, and only it", id)
		}
		if l := row(t, store, id); l.Holder != starter.cfg.Holder || l.Addr != addrs[0] {
			t.Errorf("%s: lease row %+v", id, l)
		}
	}
}

func TestStopByNonHolderLeavesEngineRunning(t *testing.T) {
	store := newStore(t)
	a, b := newGateway(t, store, "a"), newGateway(t, store, "b")
	ctx := ctxFor(t)
	addr, err := a.Start(ctx, "engine-0")
	if err != nil {
		t.Fatal(err)
	}
	got, from, err := b.StartFrom(ctx, "engine-0")
	if err != nil || got != addr || from != "running" {
		t.Fatalf("b's start = %q, %q, %v; want a's address %q, running", got, from, err, addr)
	}
	if err := b.Stop(ctx, "engine-0"); err != nil {
		t.Fatalf("stop by the non-holder: %v", err)
	}
	if _, stops := a.host.count("engine-0"); stops != 0 {
		t.Errorf("a's host stopped it %d times", stops)
	}
	if starts, stops := b.host.count("engine-0"); starts+stops != 0 {
		t.Errorf("b's host was asked to start %d and stop %d times", starts, stops)
	}
	if l := row(t, store, "engine-0"); l.Holder != "a" || l.Addr != addr || l.Stopping {
		t.Errorf("lease after the non-holder's stop: %+v", l)
	}
	if got, err := b.Start(ctx, "engine-0"); err != nil || got != addr {
		t.Errorf("b's start again = %q, %v; want %q", got, err, addr)
	}
}

func TestStopByHolderStopsAndFreesIt(t *testing.T) {
	store := newStore(t)
	a, b := newGateway(t, store, "a"), newGateway(t, store, "b")
	ctx := ctxFor(t)
	if _, err := a.Start(ctx, "engine-0"); err != nil {
		t.Fatal(err)
	}
	if err := a.Stop(ctx, "engine-0"); err != nil {
		t.Fatal(err)
	}
	if _, stops := a.host.count("engine-0"); stops != 1 {
		t.Errorf("a's host stopped it %d times, want 1", stops)
	}
	if a.holds("engine-0") {
		t.Error("a still holds the lease")
	}
	if l := row(t, store, "engine-0"); l.Holder != "" || l.Addr != "" {
		t.Errorf("lease after the holder's stop: %+v, want released", l)
	}
	addr, err := b.Start(ctx, "engine-0")
	if err != nil || addr != b.host.addr("engine-0") {
		t.Fatalf("b's start = %q, %v; want b to start it", addr, err)
	}
	if !b.holds("engine-0") {
		t.Error("b does not hold the lease it took")
	}
}

func TestDeadHolderMidStartIsTakenOverAfterTTL(t *testing.T) {
	store := newStore(t)
	a, b := newGateway(t, store, "a"), newGateway(t, store, "b")
	ctx := ctxFor(t)
	gate := make(chan struct{})
	a.host.setGate(gate)
	aDone := make(chan error, 1)
	go func() {
		_, err := a.Start(ctx, "engine-0")
		aDone <- err
	}()
	waitFor(t, "a's start to take the lease", func() bool { return a.holds("engine-0") })
	a.die("engine-0") // killed mid-start: its lease stays, unrefreshed
	began := time.Now()
	addr, err := b.Start(ctx, "engine-0")
	if err != nil {
		t.Fatal(err)
	}
	if addr != b.host.addr("engine-0") {
		t.Errorf("b's start = %s, want b to have started it", addr)
	}
	if took := time.Since(began); took > 10*testTTL {
		t.Errorf("took over after %s, TTL %s", took, testTTL)
	}
	if l := row(t, store, "engine-0"); l.Holder != "b" || l.Addr != addr {
		t.Errorf("lease after the take-over: %+v", l)
	}
	// The dead gateway's start finishing late must not overwrite the lease.
	close(gate)
	if err := <-aDone; err != nil {
		t.Errorf("a's late start: %v", err)
	}
	if l := row(t, store, "engine-0"); l.Holder != "b" || l.Addr != addr {
		t.Errorf("lease after the dead holder's late start: %+v", l)
	}
	if a.holds("engine-0") {
		t.Error("a believes it still holds the lease")
	}
}

func TestDeadHolderOfRunningEngineIsTakenOverAfterTTL(t *testing.T) {
	store := newStore(t)
	a, b := newGateway(t, store, "a"), newGateway(t, store, "b")
	ctx := ctxFor(t)
	addrA, err := a.Start(ctx, "engine-0")
	if err != nil {
		t.Fatal(err)
	}
	a.die("engine-0")
	// Until the lease expires, b proxies to a's engine; then it takes the
	// lease and starts the engine itself (its host's start is idempotent).
	waitFor(t, "b to take over", func() bool {
		addr, err := b.Start(ctx, "engine-0")
		if err != nil {
			t.Fatal(err)
		}
		if addr != addrA && addr != b.host.addr("engine-0") {
			t.Fatalf("b's start = %s", addr)
		}
		return addr == b.host.addr("engine-0")
	})
	if starts, _ := b.host.count("engine-0"); starts != 1 {
		t.Errorf("b's host started it %d times, want 1", starts)
	}
	if _, stops := a.host.count("engine-0"); stops != 0 {
		t.Errorf("a's host stopped it %d times", stops)
	}
	// The lease stays b's beyond its TTL: b refreshes it.
	first := row(t, store, "engine-0")
	waitFor(t, "b's refresh", func() bool { return row(t, store, "engine-0").Expires > first.Expires })
	if l := row(t, store, "engine-0"); l.Holder != "b" {
		t.Errorf("lease after refresh: %+v", l)
	}
}

func TestStolenLeaseIsNoticed(t *testing.T) {
	store := newStore(t)
	a, b := newGateway(t, store, "a"), newGateway(t, store, "b")
	ctx := ctxFor(t)
	if _, err := a.Start(ctx, "engine-0"); err != nil {
		t.Fatal(err)
	}
	// Another gateway's write, as after a's lease expired unseen (a cut
	// off from the database for longer than TTL).
	cur, err := store.Get([]byte(DefaultTable), []byte("engine-0"))
	if err != nil {
		t.Fatal(err)
	}
	thief := lease{Holder: "c", Addr: "tls://c-engine-0:443", Expires: time.Now().Add(time.Hour).UnixMilli()}
	if _, ok, err := store.CmpAndSwap([]byte(DefaultTable), []byte("engine-0"), cur, mustMarshal(thief)); err != nil || !ok {
		t.Fatalf("overwrite lease: %v %v", ok, err)
	}
	waitFor(t, "a to notice and say so", func() bool {
		return !a.holds("engine-0") && strings.Contains(a.log.String(), "engine lease lost")
	})
	a.host.mu.Lock()
	a.host.failed = errors.New("exited")
	a.host.mu.Unlock()
	if err := a.Failed("engine-0"); err != nil {
		t.Errorf("a asked its host about an engine it no longer holds: %v", err)
	}
	if err := a.Stop(ctx, "engine-0"); err != nil {
		t.Fatal(err)
	}
	if _, stops := a.host.count("engine-0"); stops != 0 {
		t.Errorf("a stopped an engine whose lease was taken")
	}
	if got := row(t, store, "engine-0"); got != thief {
		t.Errorf("lease = %+v, want the thief's %+v", got, thief)
	}
	if addr, err := b.Start(ctx, "engine-0"); err != nil || addr != thief.Addr {
		t.Errorf("b's start = %q, %v; want the new holder's address", addr, err)
	}
}

func TestStartWaitsForAnotherGatewaysStart(t *testing.T) {
	store := newStore(t)
	a, b := newGateway(t, store, "a"), newGateway(t, store, "b")
	ctx := ctxFor(t)
	gate := make(chan struct{})
	a.host.setGate(gate)
	type result struct {
		addr, from string
		err        error
	}
	aDone, bDone := make(chan result, 1), make(chan result, 1)
	go func() {
		addr, from, err := a.StartFrom(ctx, "engine-0")
		aDone <- result{addr, from, err}
	}()
	waitFor(t, "a's start to take the lease", func() bool { return a.holds("engine-0") })
	first := row(t, store, "engine-0")
	go func() {
		addr, from, err := b.StartFrom(ctx, "engine-0")
		bDone <- result{addr, from, err}
	}()
	// a's start outlasts the TTL: its refreshes keep the lease, and b
	// keeps waiting rather than taking it.
	waitFor(t, "a's start to outlast two TTLs", func() bool {
		select {
		case r := <-bDone:
			t.Fatalf("b's start returned while a still started the engine: %+v", r)
		default:
		}
		return row(t, store, "engine-0").Expires > first.Expires+2*testTTL.Milliseconds()
	})
	close(gate)
	ra, rb := <-aDone, <-bDone
	if ra.err != nil || rb.err != nil {
		t.Fatalf("a: %v, b: %v", ra.err, rb.err)
	}
	if ra.addr != a.host.addr("engine-0") || rb.addr != ra.addr {
		t.Errorf("a got %s, b got %s; want a's engine for both", ra.addr, rb.addr)
	}
	// b's wake waited out a cold start; a's host does not say, so stopped.
	if ra.from != "stopped" || rb.from != "stopped" {
		t.Errorf("a's start from %q, b's from %q; want stopped for both", ra.from, rb.from)
	}
	if starts, _ := b.host.count("engine-0"); starts != 0 {
		t.Errorf("b's host started it %d times", starts)
	}
	if starts, _ := a.host.count("engine-0"); starts != 1 {
		t.Errorf("a's host started it %d times", starts)
	}
}

func TestStartWaitingIsBoundedByCtx(t *testing.T) {
	store := newStore(t)
	a, b := newGateway(t, store, "a"), newGateway(t, store, "b")
	gate := make(chan struct{})
	a.host.setGate(gate)
	aCtx, aCancel := context.WithCancel(context.Background())
	aDone := make(chan error, 1)
	go func() {
		_, err := a.Start(aCtx, "engine-0")
		aDone <- err
	}()
	defer func() {
		aCancel()
		<-aDone
	}()
	waitFor(t, "a's start to take the lease", func() bool { return a.holds("engine-0") })
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	began := time.Now()
	_, err := b.Start(ctx, "engine-0")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("b's start = %v, want its deadline", err)
	}
	if took := time.Since(began); took > 2*time.Second {
		t.Errorf("b's start returned %s after its 50ms deadline", took)
	}
	if starts, _ := b.host.count("engine-0"); starts != 0 {
		t.Errorf("b's host started it")
	}
}

// unavailable is a host error with a method the gateway reads.
type unavailable struct{}

func (unavailable) Error() string         { return "no capacity" }
func (unavailable) HostUnavailable() bool { return true }

func TestFailedStartReleasesTheLeaseAndKeepsTheErrorsMethods(t *testing.T) {
	store := newStore(t)
	a, b := newGateway(t, store, "a"), newGateway(t, store, "b")
	ctx := ctxFor(t)
	a.host.startErr = unavailable{}
	_, err := a.Start(ctx, "engine-0")
	var h interface{ HostUnavailable() bool }
	if !errors.As(err, &h) || !h.HostUnavailable() {
		t.Fatalf("a's start = %v, want the host's error with its method", err)
	}
	if a.holds("engine-0") {
		t.Error("a holds the lease of an engine it failed to start")
	}
	if l := row(t, store, "engine-0"); l.Holder != "" {
		t.Errorf("lease after a failed start: %+v, want released", l)
	}
	if addr, err := b.Start(ctx, "engine-0"); err != nil || addr != b.host.addr("engine-0") {
		t.Errorf("b's start = %q, %v; want b to start it at once", addr, err)
	}
}

func TestBusyEngineIsNotStopped(t *testing.T) {
	store := newStore(t)
	var mu sync.Mutex
	busy := true
	a := newGateway(t, store, "a", func(c *Config) {
		c.Busy = func(context.Context, string) (bool, error) {
			mu.Lock()
			defer mu.Unlock()
			return busy, nil
		}
	})
	b := newGateway(t, store, "b")
	ctx := ctxFor(t)
	addr, err := a.Start(ctx, "engine-0")
	if err != nil {
		t.Fatal(err)
	}
	err = a.Stop(ctx, "engine-0")
	var eb interface{ EngineBusy() bool }
	if !errors.As(err, &eb) || !eb.EngineBusy() || !errors.Is(err, ErrBusy) {
		t.Fatalf("stop of a busy engine = %v, want ErrBusy", err)
	}
	if _, stops := a.host.count("engine-0"); stops != 0 {
		t.Errorf("a's host stopped a busy engine")
	}
	if l := row(t, store, "engine-0"); l.Holder != "a" || l.Addr != addr || l.Stopping {
		t.Errorf("lease after a busy stop: %+v", l)
	}
	if got, err := b.Start(ctx, "engine-0"); err != nil || got != addr {
		t.Errorf("b's start = %q, %v; want %q", got, err, addr)
	}
	mu.Lock()
	busy = false
	mu.Unlock()
	if err := a.Stop(ctx, "engine-0"); err != nil {
		t.Fatal(err)
	}
	if _, stops := a.host.count("engine-0"); stops != 1 {
		t.Errorf("a's host stopped it %d times, want 1", stops)
	}
}

func TestStartWaitsForTheHoldersStop(t *testing.T) {
	store := newStore(t)
	asked, answer := make(chan struct{}), make(chan struct{})
	a := newGateway(t, store, "a", func(c *Config) {
		c.Busy = func(context.Context, string) (bool, error) {
			close(asked)
			<-answer
			return false, nil
		}
	})
	b := newGateway(t, store, "b")
	ctx := ctxFor(t)
	if _, err := a.Start(ctx, "engine-0"); err != nil {
		t.Fatal(err)
	}
	stopped := make(chan error, 1)
	go func() { stopped <- a.Stop(ctx, "engine-0") }()
	<-asked
	if l := row(t, store, "engine-0"); !l.Stopping || l.Addr != "" {
		t.Errorf("lease while its holder stops the engine: %+v", l)
	}
	bDone := make(chan string, 1)
	go func() {
		addr, err := b.Start(ctx, "engine-0")
		if err != nil {
			t.Error(err)
		}
		bDone <- addr
	}()
	waitFor(t, "b to wait", func() bool { return strings.Contains(b.log.String(), "waiting for another gateway") })
	close(answer)
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
	if addr := <-bDone; addr != b.host.addr("engine-0") {
		t.Errorf("b's start = %s; want b to start the engine a stopped", addr)
	}
}

func TestFailedIsAskedOnlyOfTheHoldersHost(t *testing.T) {
	store := newStore(t)
	a, b := newGateway(t, store, "a"), newGateway(t, store, "b")
	ctx := ctxFor(t)
	exited := errors.New("engine engine-0 exited: status 1")
	a.host.failed, b.host.failed = exited, exited
	if _, err := a.Start(ctx, "engine-0"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Start(ctx, "engine-0"); err != nil {
		t.Fatal(err)
	}
	if err := a.Failed("engine-0"); !errors.Is(err, exited) {
		t.Errorf("holder's Failed = %v, want its host's error", err)
	}
	if err := b.Failed("engine-0"); err != nil {
		t.Errorf("non-holder's Failed = %v, want nil", err)
	}
	if b.host.asked != 0 {
		t.Errorf("the non-holder asked its host %d times", b.host.asked)
	}
	if err := a.Failed("engine-1"); err != nil {
		t.Errorf("Failed of an engine never started = %v", err)
	}
}

func TestCloseReleasesLeasesAndEndsEveryGoroutine(t *testing.T) {
	base := runtime.NumGoroutine()
	store := newStore(t)
	a, b := newGateway(t, store, "a"), newGateway(t, store, "b")
	ctx := ctxFor(t)
	for _, id := range []string{"engine-0", "engine-1"} {
		if _, err := a.Start(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	for _, id := range []string{"engine-0", "engine-1"} {
		if l := row(t, store, id); l.Holder != "" {
			t.Errorf("%s: lease after close: %+v, want released", id, l)
		}
		if addr, err := b.Start(ctx, id); err != nil || addr != b.host.addr(id) {
			t.Errorf("%s: b's start = %q, %v; want b to take it at once", id, addr, err)
		}
	}
	if _, err := a.Start(ctx, "engine-0"); !errors.Is(err, ErrClosed) {
		t.Errorf("start after close = %v, want ErrClosed", err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "goroutines back to baseline", func() bool { return runtime.NumGoroutine() <= base })
}

func TestNewRefusesAnIncompleteConfig(t *testing.T) {
	store := newStore(t)
	host := newHost("a")
	for name, cfg := range map[string]Config{
		"no host":   {Store: store, Holder: "a"},
		"no store":  {Host: host, Holder: "a"},
		"no holder": {Host: host, Store: store},
		"tiny TTL":  {Host: host, Store: store, Holder: "a", TTL: time.Millisecond},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: New accepted it", name)
		}
	}
	if a, b := NewHolderID(), NewHolderID(); a == b || a == "" {
		t.Errorf("holder ids %q and %q", a, b)
	}
}

// reportingHost is a host that says what it found an engine in.
type reportingHost struct{ *fakeHost }

func (r reportingHost) StartFrom(ctx context.Context, id string) (string, string, error) {
	addr, err := r.Start(ctx, id)
	return addr, "suspended", err
}

func TestStartFromForwardsTheHoldersHostAnswer(t *testing.T) {
	store := newStore(t)
	a := newGateway(t, store, "a", func(c *Config) { c.Host = reportingHost{c.Host.(*fakeHost)} })
	ctx := ctxFor(t)
	addr, from, err := a.StartFrom(ctx, "engine-0")
	if err != nil || addr != a.host.addr("engine-0") || from != "suspended" {
		t.Errorf("StartFrom = %q, %q, %v; want the host's answer", addr, from, err)
	}
}

// An engine whose holder let its lease go while the engine ran (a gateway
// that exited while another gateway's clients still used it) is stopped by
// the next gateway that finds it idle: nobody else would.
func TestAStopOfAnEngineWhoseLeaseIsFreeTakesItAndStopsIt(t *testing.T) {
	store := newStore(t)
	a, b := newGateway(t, store, "a"), newGateway(t, store, "b")
	ctx := ctxFor(t)
	addr, err := a.Start(ctx, "engine-0")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := b.Start(ctx, "engine-0"); err != nil || got != addr {
		t.Fatalf("b's start = %q, %v; want a's %q", got, err, addr)
	}
	if err := a.Close(); err != nil { // a exits; the engine keeps serving b
		t.Fatal(err)
	}
	if err := b.Stop(ctx, "engine-0"); err != nil {
		t.Fatalf("b's stop of the left engine: %v", err)
	}
	if _, stops := b.host.count("engine-0"); stops != 1 {
		t.Errorf("b's host stopped the engine %d times, want 1", stops)
	}
	if l := row(t, store, "engine-0"); l.Holder != "" {
		t.Errorf("lease after b's stop: %+v, want released", l)
	}
}

// An engine that died with its gateway (a local engine is the gateway's
// child) is not handed out while its dead gateway's lease lasts: a start
// elsewhere waits for the lease to expire and starts the engine itself,
// instead of returning an address nothing answers at.
func TestAStartDoesNotHandOutAnEngineThatDoesNotAnswer(t *testing.T) {
	store := newStore(t)
	var deadAddr atomic.Value
	deadAddr.Store("")
	busy := func(_ context.Context, addr string) (bool, error) {
		if addr == deadAddr.Load().(string) {
			return false, errors.New("connection refused")
		}
		return false, nil
	}
	a := newGateway(t, store, "a", func(c *Config) { c.Busy = busy })
	b := newGateway(t, store, "b", func(c *Config) { c.Busy = busy })
	ctx := ctxFor(t)
	addrA, err := a.Start(ctx, "engine-0")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := b.Start(ctx, "engine-0"); err != nil || got != addrA {
		t.Fatalf("b's start while a's engine answers = %q, %v; want %q", got, err, addrA)
	}
	a.die("engine-0")
	deadAddr.Store(addrA)
	began := time.Now()
	got, err := b.Start(ctx, "engine-0")
	if err != nil || got != b.host.addr("engine-0") {
		t.Fatalf("b's start after a died with its engine = %q, %v; want b's own %q", got, err, b.host.addr("engine-0"))
	}
	if waited := time.Since(began); waited > 3*testTTL {
		t.Errorf("b waited %s for a lease of %s", waited, testTTL)
	}
	if !strings.Contains(b.log.String(), "does not answer") {
		t.Errorf("b did not say why it waited:\n%s", b.log)
	}
}
