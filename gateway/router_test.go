package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

func TestChooseFollowsThePolicy(t *testing.T) {
	p := Policy{Soft: 1, Hard: 3}
	warm := Policy{Soft: 1, Hard: 3, PreferWarm: true}
	c := func(running bool, sessions int) candidate { return candidate{running: running, sessions: sessions} }
	for _, tc := range []struct {
		name   string
		policy Policy
		ranked []candidate
		want   int
	}{
		{"home under soft, even stopped", p, []candidate{c(false, 0), c(true, 0)}, 0},
		{"prefer warm: a running engine before a stopped home", warm, []candidate{c(false, 0), c(true, 0)}, 1},
		{"prefer warm: a running home first", warm, []candidate{c(true, 0), c(true, 0)}, 0},
		{"home full: next under soft, running first", p, []candidate{c(true, 1), c(false, 0), c(true, 0)}, 2},
		{"home full: next under soft, stopped if none runs", p, []candidate{c(true, 1), c(false, 0), c(false, 0)}, 1},
		{"all at soft: highest-ranked under hard", p, []candidate{c(true, 3), c(true, 1), c(true, 2)}, 1},
		{"all at hard: hold", p, []candidate{c(true, 3), c(true, 3)}, -1},
		{"an existing session stays put", p, []candidate{c(true, 0), {running: true, sessions: 3, mine: true}}, 1},
	} {
		if got := tc.policy.choose(tc.ranked); got != tc.want {
			t.Errorf("%s: chose %d, want %d", tc.name, got, tc.want)
		}
	}
}

type instantHost struct{ ids []string }

func (h instantHost) Engines(context.Context) ([]string, error)     { return h.ids, nil }
func (h instantHost) Start(context.Context, string) (string, error) { return "tcp://127.0.0.1:1", nil }
func (h instantHost) Stop(context.Context, string) error            { return nil }
func engineIDs(n int) []string {
	var ids []string
	for i := range n {
		ids = append(ids, fmt.Sprintf("engine-%d", i))
	}
	return ids
}

func newTestPool(t *testing.T, n int, policy Policy) *Pool {
	t.Helper()
	p, err := NewPoolWithPolicy(t.Context(), instantHost{engineIDs(n)}, EngineConfig{Probe: readyProbe, Idle: time.Hour}, policy)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

var quiet = slog.New(slog.DiscardHandler)

func TestAKeyKeepsItsEngineWhileUnderTheSoftLimit(t *testing.T) {
	p := newTestPool(t, 5, DefaultPolicy)
	for _, key := range []string{"repo-a", "repo-b", "team-c"} {
		first, l, err := p.Acquire(t.Context(), key, quiet)
		if err != nil {
			t.Fatal(err)
		}
		// More connections of the same session, then a fresh session.
		_, l2, _ := p.Acquire(t.Context(), key, quiet)
		l.Release()
		l2.Release()
		for range 10 {
			e, l, err := p.Acquire(t.Context(), key, quiet)
			if err != nil {
				t.Fatal(err)
			}
			if e != first {
				t.Fatalf("%s moved from %s to %s while its home was free", key, first.ID(), e.ID())
			}
			l.Release()
		}
		if first != p.Route(key) {
			t.Fatalf("%s was not sent home", key)
		}
	}
}

func TestChangingThePoolMovesOnlyTheKeysOfTheEngineAddedOrRemoved(t *testing.T) {
	homes := func(ids []string) map[string]string {
		p, err := NewPool(t.Context(), instantHost{ids}, EngineConfig{Probe: readyProbe, Idle: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		out := map[string]string{}
		for i := range 3000 {
			key := fmt.Sprintf("repo-%d", i)
			out[key] = p.Route(key).ID()
		}
		return out
	}
	five, six := homes(engineIDs(5)), homes(engineIDs(6))
	moved := 0
	for k, h := range six {
		if h != five[k] {
			moved++
			if h != "engine-5" {
				t.Fatalf("adding engine-5 moved %s from %s to %s", k, five[k], h)
			}
		}
	}
	if frac := float64(moved) / 3000; frac < 0.10 || frac > 0.24 {
		t.Fatalf("adding a sixth engine moved %.0f%% of keys, want about 1/6", frac*100)
	}
	without2 := homes([]string{"engine-0", "engine-1", "engine-3", "engine-4"})
	for k, h := range without2 {
		if five[k] != "engine-2" && h != five[k] {
			t.Fatalf("removing engine-2 moved %s, whose home was %s", k, five[k])
		}
	}
}

func TestHeldConnectionIsServedWhenASessionEnds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newTestPool(t, 1, Policy{Soft: 1, Hard: 1})
		_, l, err := p.Acquire(t.Context(), "a", quiet)
		if err != nil {
			t.Fatal(err)
		}
		got := make(chan error, 1)
		go func() {
			_, l2, err := p.Acquire(t.Context(), "b", quiet)
			if err == nil {
				l2.Release()
			}
			got <- err
		}()
		synctest.Wait() // "b" is now blocked, held
		select {
		case err := <-got:
			t.Fatalf("a second session past the hard limit was not held: %v", err)
		default:
		}
		l.Release()
		if err := <-got; err != nil {
			t.Fatalf("the held session: %v", err)
		}
		_, l, _ = p.Acquire(t.Context(), "a", quiet)
		defer l.Release()
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		if _, _, err := p.Acquire(ctx, "c", quiet); err == nil {
			t.Fatal("a hold past its deadline did not fail")
		}
	})
}

func TestMinRunningKeepsEnginesWarm(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := &fakeHost{}
		p, err := NewPoolWithPolicy(t.Context(), h, EngineConfig{Probe: readyProbe, Idle: testIdle}, Policy{Soft: 1, Hard: 3, MinRunning: 1})
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		p.WarmUp(t.Context(), quiet)
		synctest.Wait()
		if got := h.starts.Load(); got != 1 {
			t.Fatalf("warm-up started %d engines, want 1", got)
		}
		time.Sleep(5 * testIdle)
		synctest.Wait()
		if h.stops.Load() != 0 || !p.Engines()[0].Running() {
			t.Fatal("the only warm engine was stopped despite --min-running 1")
		}
	})
}

func TestMetricsReportSessionsStateAndWakes(t *testing.T) {
	p := newTestPool(t, 2, DefaultPolicy)
	e, l, err := p.Acquire(t.Context(), "repo", quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	rec := httptest.NewRecorder()
	AdminHandler(p).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body := rec.Body.String()
	for _, want := range []string{
		fmt.Sprintf(`wakegate_engine_sessions{engine=%q} 1`, e.ID()),
		fmt.Sprintf(`wakegate_engine_state{engine=%q,state="running"} 1`, e.ID()),
		fmt.Sprintf(`wakegate_engine_wake_seconds_count{engine=%q} 1`, e.ID()),
		fmt.Sprintf(`wakegate_engine_wake_seconds_bucket{engine=%q,le="0.1"} 1`, e.ID()),
		`wakegate_engine_machine_seconds_total{engine=`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q:\n%s", want, body)
		}
	}
}

func TestTryAcquireTakesOnlyARunningEngineAndNeverWaits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newTestPool(t, 1, Policy{Soft: 1, Hard: 1})
		sessions := func() int { return p.Status()[0].Sessions }
		if _, _, ok := p.TryAcquire("a"); ok {
			t.Fatal("TryAcquire leased a stopped engine")
		}
		synctest.Wait()
		if st := p.Status()[0]; st.State != Stopped || st.Sessions != 0 {
			t.Fatalf("after a TryAcquire of a stopped engine: %s with %d sessions, want stopped with none (no wake)", st.State, st.Sessions)
		}
		_, l, err := p.Acquire(t.Context(), "a", quiet) // wakes it
		if err != nil {
			t.Fatal(err)
		}
		l.Release()
		_, l, ok := p.TryAcquire("a")
		if !ok || sessions() != 1 {
			t.Fatalf("TryAcquire of a running engine: ok %v, %d sessions; want a lease and 1", ok, sessions())
		}
		if _, _, ok := p.TryAcquire("b"); ok {
			t.Fatal("TryAcquire went past the hard limit")
		}
		l.Release()
		if sessions() != 0 {
			t.Fatalf("%d sessions after the lease was released, want 0", sessions())
		}
	})
}
