package simulate

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/wakegate/wakegate/gateway"
)

// Config is one simulation: the pool, its policy, the engines' timing.
type Config struct {
	Engines int
	Policy  gateway.Policy
	// Idle is the idle grace before an engine stops; AlwaysOn never
	// stops engines (and keeps them all running from the start).
	Idle     time.Duration
	AlwaysOn bool
	// Wake is how long an engine takes from start to BuildKit answering.
	Wake time.Duration
}

// Result is what a policy costs and what it gives.
type Result struct {
	Jobs           int
	MachineSeconds float64
	ColdStarts     int // jobs that waited for a wake
	WaitP50        time.Duration
	WaitP95        time.Duration
	CacheHitRate   float64 // jobs on an engine that served their key before
	Span           time.Duration
}

// simHost is an engine host whose machines take Wake to answer.
type simHost struct {
	clock *vclock
	ids   []string
	wake  time.Duration
	mu    sync.Mutex
	ready map[string]time.Time // engine → when it answers
}

func (h *simHost) Engines(context.Context) ([]string, error) { return h.ids, nil }

func (h *simHost) Start(_ context.Context, id string) (string, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ready[id] = h.clock.Now().Add(h.wake)
	return id, nil
}

func (h *simHost) Stop(_ context.Context, id string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.ready, id)
	return nil
}

func (h *simHost) probe(_ context.Context, id string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	at, ok := h.ready[id]
	if !ok || h.clock.Now().Before(at) {
		return fmt.Errorf("engine %s not ready", id)
	}
	return nil
}

// Run replays jobs against a real gateway.Pool on a virtual clock.
func Run(jobs []Job, cfg Config) (Result, error) {
	if cfg.Engines < 1 {
		return Result{}, fmt.Errorf("simulate: need at least one engine")
	}
	start := time.Date(2026, 1, 5, 0, 0, 0, 0, time.UTC) // a Monday
	clk := newVClock(start)
	host := &simHost{clock: clk, wake: cfg.Wake, ready: map[string]time.Time{}}
	for i := range cfg.Engines {
		host.ids = append(host.ids, fmt.Sprintf("engine-%d", i))
	}
	policy := cfg.Policy
	idle := cfg.Idle
	if cfg.AlwaysOn {
		policy.MinRunning = cfg.Engines
	}
	// Probing at a tenth of the wake keeps the wait's error small without
	// flooding the event queue.
	probe := max(cfg.Wake/10, 10*time.Millisecond)
	quiet := slog.New(slog.DiscardHandler)
	pool, err := gateway.NewPoolWithPolicy(context.Background(), host, gateway.EngineConfig{
		Probe: host.probe, Idle: idle, WakeTimeout: 24 * time.Hour, ProbeInterval: probe, Clock: clk, Log: quiet,
	}, policy)
	if err != nil {
		return Result{}, err
	}
	defer pool.Close()

	sort.SliceStable(jobs, func(i, j int) bool { return jobs[i].Arrival < jobs[j].Arrival })
	var mu sync.Mutex // guards the tallies below
	waits := make([]time.Duration, 0, len(jobs))
	cold, hits := 0, 0
	served := map[string]map[string]bool{} // engine → keys it has served
	var end time.Time
	if cfg.AlwaysOn {
		clk.AfterFunc(0, func() { pool.WarmUp(context.Background(), quiet) })
	}
	for _, j := range jobs {
		clk.AfterFunc(j.Arrival, func() {
			clk.Go(func() {
				arrived := clk.Now()
				e, l, err := pool.Acquire(context.Background(), j.Key, quiet)
				if err != nil {
					return // unreachable: no deadline, and the sim host never refuses
				}
				mu.Lock()
				waits = append(waits, clk.Now().Sub(arrived))
				if l.Waited {
					cold++
				}
				if served[e.ID()][j.Key] {
					hits++
				}
				if served[e.ID()] == nil {
					served[e.ID()] = map[string]bool{}
				}
				served[e.ID()][j.Key] = true
				mu.Unlock()
				clk.Sleep(context.Background(), j.Duration)
				mu.Lock()
				if now := clk.Now(); now.After(end) {
					end = now
				}
				mu.Unlock()
				l.Release()
			})
		})
	}
	// Run until every job is done and the idle stops that follow (billed
	// too); an always-on pool is billed to the last job's end.
	last := start
	for _, j := range jobs {
		if t := start.Add(j.Arrival + j.Duration); t.After(last) {
			last = t
		}
	}
	clk.Run(last.Add(2*idle + 10*cfg.Wake + time.Hour))
	if cfg.AlwaysOn {
		clk.mu.Lock()
		clk.now = end
		clk.mu.Unlock()
	}
	res := Result{Jobs: len(waits), ColdStarts: cold, Span: end.Sub(start)}
	for _, st := range pool.Status() {
		res.MachineSeconds += st.MachineSeconds
	}
	if len(waits) > 0 {
		sort.Slice(waits, func(i, j int) bool { return waits[i] < waits[j] })
		res.WaitP50 = percentile(waits, 0.50)
		res.WaitP95 = percentile(waits, 0.95)
		res.CacheHitRate = float64(hits) / float64(len(waits))
	}
	return res, nil
}

// percentile is the nearest-rank percentile of sorted values.
func percentile(sorted []time.Duration, p float64) time.Duration {
	i := int(float64(len(sorted))*p+0.999999) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// WriteReport prints results side by side.
func WriteReport(w io.Writer, names []string, rs []Result) {
	fmt.Fprintf(w, "%-16s %8s %16s %14s %12s %10s %10s %10s\n", "policy", "jobs", "machine-seconds", "machine-hours", "cold starts", "wait p50", "wait p95", "cache hits")
	for i, r := range rs {
		fmt.Fprintf(w, "%-16s %8d %16.0f %14.1f %12d %10s %10s %9.1f%%\n", names[i], r.Jobs, r.MachineSeconds, r.MachineSeconds/3600, r.ColdStarts,
			r.WaitP50.Round(time.Millisecond), r.WaitP95.Round(time.Millisecond), 100*r.CacheHitRate)
	}
}
