package gateway

import (
	"context"
	"fmt"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// sizedHost is a pool's host counting starts and stops per engine, whose
// starts can be held, and which may know its machines' CPUs.
type sizedHost struct {
	ids       []string
	startGate chan struct{} // if non-nil, Start blocks until it is closed
	stopGate  chan struct{} // if non-nil, Stop blocks until it is closed
	mu        sync.Mutex    // guards starts and stops
	starts    map[string]int
	stops     map[string]int
}

func newSizedHost(n int) *sizedHost {
	return &sizedHost{ids: engineIDs(n), starts: map[string]int{}, stops: map[string]int{}}
}

func (h *sizedHost) Engines(context.Context) ([]string, error) { return h.ids, nil }

func (h *sizedHost) Start(ctx context.Context, id string) (string, error) {
	h.mu.Lock()
	h.starts[id]++
	h.mu.Unlock()
	if h.startGate != nil {
		select {
		case <-h.startGate:
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
	return "tcp://127.0.0.1:1", nil
}

func (h *sizedHost) Stop(ctx context.Context, id string) error {
	h.mu.Lock()
	h.stops[id]++
	h.mu.Unlock()
	if h.stopGate != nil {
		select {
		case <-h.stopGate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

func (h *sizedHost) count(m map[string]int, id string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return m[id]
}

func (h *sizedHost) total(m map[string]int) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// cpuHost is a sizedHost that knows its machines' sizes, as fly does.
type cpuHost struct {
	*sizedHost
	cpus map[string]int
}

func (h cpuHost) CPUs(id string) int { return h.cpus[id] }

const testGrace = 2 * time.Minute

func newPrewakePool(t *testing.T, h Provider, policy Policy, edit func(*EngineConfig)) *Pool {
	t.Helper()
	cfg := EngineConfig{Probe: readyProbe, Idle: testIdle}
	if edit != nil {
		edit(&cfg)
	}
	p, err := NewPoolWithPolicy(t.Context(), h, cfg, policy)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

func (p *Pool) engine(id string) *Engine {
	for _, e := range p.engines {
		if e.ID() == id {
			return e
		}
	}
	return nil
}

func TestPrewakeWakesTheHomeEngineBeforeAnyConnection(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newSizedHost(4)
		p := newPrewakePool(t, h, DefaultPolicy, nil)
		const key = "repo:acme/app"
		home := p.Route(key)

		id, woke, err := p.Prewake(key, testGrace)
		if err != nil || !woke || id != home.ID() {
			t.Fatalf("Prewake = %q, %v, %v; want the home %s woken", id, woke, err, home.ID())
		}
		synctest.Wait()
		if !home.Running() || h.count(h.starts, home.ID()) != 1 || h.total(h.starts) != 1 {
			t.Fatalf("home %s running %v; starts %v: want the home alone started", home.ID(), home.Running(), h.starts)
		}
		for _, st := range p.Status() {
			if st.Sessions != 0 || st.Conns != 0 {
				t.Fatalf("a pre-wake counted as a session or connection: %+v", st)
			}
		}
		time.Sleep(40 * time.Second) // the job's runner and first steps
		e, l, err := p.Acquire(t.Context(), key, quiet)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Release()
		if e != home || l.Waited {
			t.Fatalf("the job's connection went to %s (waited %v), want the warm home %s", e.ID(), l.Waited, home.ID())
		}
		st := home.Status()
		if st.Prewakes != 1 || st.Wakes != 1 || st.PrewakeSeconds != 40 {
			t.Fatalf("status %+v: want 1 pre-wake, 1 wake, 40 machine-seconds before the connection", st)
		}
	})
}

func TestAPrewakeNoConnectionFollowsIsStoppedAfterTheGrace(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newSizedHost(2)
		var asked atomic.Int32
		p := newPrewakePool(t, h, DefaultPolicy, func(c *EngineConfig) {
			c.BeforeStop = func(context.Context, string) (bool, error) { asked.Add(1); return false, nil }
		})
		id, _, _ := p.Prewake("repo:acme/app", testGrace)
		e := p.engine(id)
		time.Sleep(testGrace - time.Second) // longer than the idle period, shorter than the grace
		synctest.Wait()
		if !e.Running() || asked.Load() != 0 {
			t.Fatalf("engine running %v, asked %d times before its grace ended", e.Running(), asked.Load())
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if st := e.Status(); st.State != Stopped || st.PrewakesUnused != 1 || h.count(h.stops, id) != 1 {
			t.Fatalf("after the grace: %+v, stops %d; want stopped, 1 unused pre-wake", st, h.count(h.stops, id))
		}
		if asked.Load() != 1 {
			t.Fatalf("the engine itself was asked %d times before the stop, want 1", asked.Load())
		}
		if st := e.Status(); st.PrewakeSeconds != testGrace.Seconds() {
			t.Fatalf("pre-wake cost %g machine-seconds, want the grace, %g", st.PrewakeSeconds, testGrace.Seconds())
		}
	})
}

func TestAPrewokenEngineInUseElsewhereIsKept(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newSizedHost(1)
		p := newPrewakePool(t, h, DefaultPolicy, func(c *EngineConfig) {
			c.BeforeStop = func(context.Context, string) (bool, error) { return true, nil }
		})
		p.Prewake("repo:acme/app", testGrace)
		time.Sleep(testGrace + time.Second)
		synctest.Wait()
		if !p.Engines()[0].Running() {
			t.Fatal("the engine, busy through another gateway, was stopped when the grace ended")
		}
	})
}

func TestAConnectionWithinTheGraceHandsTheEngineToTheIdlePeriod(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newSizedHost(1)
		p := newPrewakePool(t, h, DefaultPolicy, nil)
		p.Prewake("repo:acme/app", testGrace)
		time.Sleep(10 * time.Second)
		_, l, err := p.Acquire(t.Context(), "repo:acme/app", quiet)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Second)
		l.Release() // at 15 s: the idle period (30 s) runs from here, not the grace
		time.Sleep(testIdle + time.Second)
		synctest.Wait()
		st := p.Engines()[0].Status()
		if st.State != Stopped || st.PrewakesUnused != 0 || st.PrewakeSeconds != 10 {
			t.Fatalf("status %+v: want stopped after the idle period, the pre-wake used, 10 s of cost", st)
		}
	})
}

func TestFiftyPrewakesOfOneRepositoryMakeOneWake(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newSizedHost(3)
		h.startGate = make(chan struct{})
		p := newPrewakePool(t, h, DefaultPolicy, nil)
		woken := 0
		for range 50 {
			_, woke, err := p.Prewake("repo:acme/app", testGrace)
			if err != nil {
				t.Fatal(err)
			}
			if woke {
				woken++
			}
			time.Sleep(20 * time.Millisecond) // 50 in a second
		}
		close(h.startGate)
		synctest.Wait()
		for range 50 { // and more once it runs
			p.Prewake("repo:acme/app", testGrace)
		}
		if woken != 1 || h.total(h.starts) != 1 {
			t.Fatalf("%d pre-wakes said they woke, %d starts; want 1 and 1", woken, h.total(h.starts))
		}
		if st := p.Route("repo:acme/app").Status(); st.Prewakes != 1 {
			t.Fatalf("status counts %d pre-wakes, want 1", st.Prewakes)
		}
	})
}

// TestAPrewakeIsNoSession: a pre-woken home takes another key's client as
// if it were free (soft limit 1).
func TestAPrewakeIsNoSession(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newSizedHost(3)
		p := newPrewakePool(t, h, DefaultPolicy, nil)
		home := p.Route("repo:a")
		other := ""
		for i := range 1000 {
			if k := fmt.Sprintf("repo:b%d", i); p.Route(k) == home {
				other = k
				break
			}
		}
		p.Prewake("repo:a", testGrace)
		synctest.Wait()
		e, l, err := p.Acquire(t.Context(), other, quiet)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Release()
		if e != home {
			t.Fatalf("%s went to %s: the pre-wake of another key on its home %s counted as a session", other, e.ID(), home.ID())
		}
	})
}

func TestAPrewakeKeepsAnIdleEngineUntilItsGrace(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newSizedHost(1)
		p := newPrewakePool(t, h, DefaultPolicy, nil)
		e := p.Engines()[0]
		_, l, _ := p.Acquire(t.Context(), "repo:a", quiet)
		l.Release() // idle stop due at 30 s
		time.Sleep(10 * time.Second)
		if _, woke, _ := p.Prewake("repo:a", testGrace); woke {
			t.Fatal("a pre-wake of a running engine said it woke it")
		}
		time.Sleep(testIdle)
		synctest.Wait()
		if !e.Running() {
			t.Fatal("stopped at its idle time despite a pre-wake's grace")
		}
		// A shorter grace does not cut the longer hold short.
		p.Prewake("repo:a", time.Second)
		time.Sleep(testGrace - testIdle - 2*time.Second) // 10 s + 2 min - 1 s
		synctest.Wait()
		if !e.Running() {
			t.Fatal("a short pre-wake cut a longer grace short")
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		st := e.Status()
		if st.State != Stopped || st.PrewakesUnused != 1 || st.Prewakes != 0 {
			t.Fatalf("status %+v: want stopped at 10 s + the grace, counted unused, no wake begun by a pre-wake", st)
		}
		// Its idle stop was due at 30 s; it ran on to 130 s for the pre-wake.
		if st.PrewakeSeconds != 100 {
			t.Fatalf("pre-wake cost %g machine-seconds, want 100", st.PrewakeSeconds)
		}
	})
}

func TestAPrewakeDuringAStopWakesTheEngineOnceStopped(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newSizedHost(1)
		h.stopGate = make(chan struct{})
		p := newPrewakePool(t, h, DefaultPolicy, nil)
		e := p.Engines()[0]
		_, l, _ := p.Acquire(t.Context(), "repo:a", quiet)
		l.Release()
		time.Sleep(testIdle + time.Second)
		synctest.Wait()
		if st := e.Status().State; st != Stopping {
			t.Fatalf("state %s, want stopping", st)
		}
		if _, woke, _ := p.Prewake("repo:a", testGrace); !woke {
			t.Fatal("a pre-wake during a stop did not say it would wake the engine")
		}
		if _, woke, _ := p.Prewake("repo:a", testGrace); woke {
			t.Fatal("a second pre-wake during the stop said it woke it too")
		}
		close(h.stopGate)
		synctest.Wait()
		if !e.Running() || h.total(h.starts) != 2 {
			t.Fatalf("after the stop: running %v, starts %d; want woken again (2 starts)", e.Running(), h.total(h.starts))
		}
		time.Sleep(testGrace + time.Second)
		synctest.Wait()
		if st := e.Status(); st.State != Stopped || st.PrewakesUnused != 1 {
			t.Fatalf("status %+v: want stopped after the grace", st)
		}
	})
}

func TestAPrewakeOfAClosedPoolFails(t *testing.T) {
	p := newPrewakePool(t, newSizedHost(1), DefaultPolicy, nil)
	p.Close()
	if _, _, err := p.Prewake("repo:a", testGrace); err == nil {
		t.Fatal("a closed pool pre-woke an engine")
	}
}

func TestSoftLimitBySize(t *testing.T) {
	for _, tc := range []struct{ cpus, hard, want int }{
		{0, 3, 1}, {1, 3, 1}, {2, 3, 1}, {4, 3, 2}, {5, 3, 2}, {8, 3, 3}, {8, 8, 4}, {64, 8, 8},
	} {
		if got := SoftForCPUs(tc.cpus, tc.hard); got != tc.want {
			t.Errorf("SoftForCPUs(%d, %d) = %d, want %d", tc.cpus, tc.hard, got, tc.want)
		}
	}
	if _, err := NewPoolWithPolicy(t.Context(), newSizedHost(1), EngineConfig{Probe: readyProbe}, Policy{Soft: 0, Hard: 3}); err == nil {
		t.Error("soft 0 accepted")
	}
}

// TestAnEngineSizedByItsProviderTakesMoreSessions: with soft limits by
// size, a key's home with 4 CPUs takes a second session before clients go
// elsewhere; a home with 2 does not.
func TestAnEngineSizedByItsProviderTakesMoreSessions(t *testing.T) {
	h := cpuHost{newSizedHost(3), map[string]int{"engine-0": 4, "engine-1": 2, "engine-2": 2}}
	p := newPrewakePool(t, h, Policy{Soft: SoftBySize, Hard: 3}, func(c *EngineConfig) { c.Idle = time.Hour })
	keysHomedOn := func(id string) []string {
		var out []string
		for i := 0; len(out) < 3; i++ {
			if k := fmt.Sprintf("repo:%d", i); p.Route(k).ID() == id {
				out = append(out, k)
			}
		}
		return out
	}
	for _, tc := range []struct {
		id        string
		wantShare int // sessions the home takes of three keys
	}{{"engine-0", 2}, {"engine-1", 1}} {
		var leases []*Lease
		got := 0
		for _, k := range keysHomedOn(tc.id) {
			e, l, err := p.Acquire(t.Context(), k, quiet)
			if err != nil {
				t.Fatal(err)
			}
			leases = append(leases, l)
			if e.ID() == tc.id {
				got++
			}
		}
		if got != tc.wantShare {
			t.Errorf("%s (%d CPUs) took %d of 3 sessions homed on it, want %d", tc.id, h.cpus[tc.id], got, tc.wantShare)
		}
		for _, l := range leases {
			l.Release()
		}
	}
	for _, st := range p.Status() {
		if want := SoftForCPUs(h.cpus[st.ID], 3); st.SoftLimit != want || st.CPUs != h.cpus[st.ID] {
			t.Errorf("%s reports soft %d, cpus %d; want %d, %d", st.ID, st.SoftLimit, st.CPUs, want, h.cpus[st.ID])
		}
	}
}

func TestAnEngineReportsItsCPUsAfterAWake(t *testing.T) {
	h := newSizedHost(1)
	p := newPrewakePool(t, h, Policy{Soft: SoftBySize, Hard: 8}, func(c *EngineConfig) {
		c.Idle = time.Hour
		c.CPUs = func(context.Context, string) (int, error) { return 6, nil }
	})
	if st := p.Status()[0]; st.CPUs != 0 || st.SoftLimit != 1 {
		t.Fatalf("before any wake: %+v, want unknown size, soft 1", st)
	}
	_, l, err := p.Acquire(t.Context(), "repo:a", quiet)
	if err != nil {
		t.Fatal(err)
	}
	l.Release()
	eventually(t, "the engine's CPUs recorded", func() bool { return p.Status()[0].CPUs == 6 })
	if st := p.Status()[0]; st.SoftLimit != 3 {
		t.Fatalf("6 CPUs: soft %d, want 3", st.SoftLimit)
	}
}

func TestMetricsCountDeliveriesAndPrewakes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newPrewakePool(t, newSizedHost(1), DefaultPolicy, nil)
		p.CountDelivery("woken")
		p.CountDelivery("coalesced")
		p.CountDelivery("coalesced")
		p.Prewake("repo:a", testGrace)
		time.Sleep(testGrace + time.Second)
		synctest.Wait()
		rec := httptest.NewRecorder()
		AdminHandler(p).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		body := rec.Body.String()
		for _, want := range []string{
			`wakegate_webhook_deliveries_total{result="woken"} 1`,
			`wakegate_webhook_deliveries_total{result="coalesced"} 2`,
			`wakegate_webhook_deliveries_total{result="bad_signature"} 0`,
			`wakegate_webhook_deliveries_total{result="too_large"} 0`,
			`wakegate_engine_prewakes_total{engine="engine-0"} 1`,
			`wakegate_engine_prewakes_unused_total{engine="engine-0"} 1`,
			`wakegate_engine_prewake_machine_seconds_total{engine="engine-0"} 120`,
			`wakegate_engine_soft_limit{engine="engine-0"} 1`,
		} {
			if !strings.Contains(body, want) {
				t.Errorf("metrics lack %q:\n%s", want, body)
			}
		}
	})
}

func TestChooseUsesEachEnginesSoftLimit(t *testing.T) {
	p := Policy{Soft: SoftBySize, Hard: 4}
	c := func(running bool, sessions, soft int) candidate {
		return candidate{running: running, sessions: sessions, soft: soft}
	}
	for _, tc := range []struct {
		name   string
		ranked []candidate
		want   int
	}{
		{"a big home under its soft limit takes another", []candidate{c(true, 2, 4), c(true, 0, 1)}, 0},
		{"a small home at its soft limit sends it on", []candidate{c(true, 1, 1), c(true, 0, 4)}, 1},
		{"every engine at its own soft limit: the first under hard", []candidate{c(true, 4, 4), c(true, 1, 1)}, 1},
	} {
		if got := p.choose(tc.ranked); got != tc.want {
			t.Errorf("%s: chose %d, want %d", tc.name, got, tc.want)
		}
	}
}
