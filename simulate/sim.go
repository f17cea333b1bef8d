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
	// Prewake replays GitHub's workflow_job webhook: at each job's Queued
	// time the pool pre-wakes the engine its key would be placed on
	// (gateway.Pool.Prewake), holding it PrewakeGrace
	// (gateway.DefaultPrewakeGrace when 0) for the job to connect.
	Prewake      bool
	PrewakeGrace time.Duration
	// CachePerKey and Volume model each engine's cache volume: a key's
	// cache takes CachePerKey bytes, and once Volume is full the least
	// recently used key's cache is evicted. Volume 0 never evicts.
	CachePerKey, Volume int64
	// CPUs sizes the engines (engine i has CPUs[min(i, len-1)]): builds
	// beyond cpus/gateway.CPUsPerBuild on one engine share it and slow
	// down, and the pool learns each size from the host (as from Fly), for
	// Policy.Soft gateway.SoftBySize. Empty: builds never slow down.
	CPUs []int
}

// Result is what a policy costs and what it gives.
type Result struct {
	Jobs           int
	MachineSeconds float64
	ColdStarts     int // jobs that waited for a wake
	Warm           int // jobs that met a running engine
	WaitP50        time.Duration
	WaitP95        time.Duration
	CacheHitRate   float64 // jobs on an engine whose volume held their key's cache
	Evictions      int     // keys' caches evicted from a full volume
	Span           time.Duration
	// BusySeconds is the time at least one job ran, on any engine: what
	// one engine running exactly when needed would bill.
	BusySeconds float64
	// Slowdown is how much longer jobs ran than their trace durations
	// because builds shared an engine's CPUs: 0.1 is 10 % longer in all.
	Slowdown float64
	// PrewakeSeconds is the machine time pre-wakes added before a job
	// came (or the engine stopped unused); PrewakesUnused counts engines
	// pre-woken or kept for jobs that never came to them.
	PrewakeSeconds float64
	PrewakesUnused int
}

// simHost is an engine host whose machines take Wake to answer.
type simHost struct {
	clock *vclock
	ids   []string
	wake  time.Duration
	cpus  map[string]int
	mu    sync.Mutex
	ready map[string]time.Time // engine → when it answers
}

// CPUs is engine id's size, as Fly's provider knows its machines'.
func (h *simHost) CPUs(id string) int { return h.cpus[id] }

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
	host := &simHost{clock: clk, wake: cfg.Wake, ready: map[string]time.Time{}, cpus: map[string]int{}}
	shares := map[string]*cpuShare{}
	caches := map[string]*lru{}
	capacity := 0
	if cfg.Volume > 0 {
		if cfg.CachePerKey <= 0 || cfg.CachePerKey > cfg.Volume {
			return Result{}, fmt.Errorf("simulate: a volume needs 0 < cache per key (%d) <= volume (%d)", cfg.CachePerKey, cfg.Volume)
		}
		capacity = int(cfg.Volume / cfg.CachePerKey)
	}
	for i := range cfg.Engines {
		id := fmt.Sprintf("engine-%d", i)
		host.ids = append(host.ids, id)
		if len(cfg.CPUs) > 0 {
			host.cpus[id] = cfg.CPUs[min(i, len(cfg.CPUs)-1)]
		}
		shares[id] = newCPUShare(clk, host.cpus[id])
		caches[id] = &lru{capacity: capacity}
	}
	grace := cfg.PrewakeGrace
	if grace <= 0 {
		grace = gateway.DefaultPrewakeGrace
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
	cold, hits, evictions := 0, 0, 0
	var ran, nominal time.Duration
	busy := 0 // jobs running now
	var busySince time.Time
	var busyTotal time.Duration
	var end time.Time
	if cfg.AlwaysOn {
		clk.AfterFunc(0, func() { pool.WarmUp(context.Background(), quiet) })
	}
	for _, j := range jobs {
		if cfg.Prewake && j.HasQueued {
			clk.AfterFunc(j.Queued, func() { pool.Prewake(j.Key, grace) })
		}
		clk.AfterFunc(j.Arrival, func() {
			clk.Go(func() {
				arrived := clk.Now()
				e, l, err := pool.Acquire(context.Background(), j.Key, quiet)
				if err != nil {
					return // unreachable: no deadline, and the sim host never refuses
				}
				id := e.ID()
				mu.Lock()
				began := clk.Now()
				waits = append(waits, began.Sub(arrived))
				if l.Waited {
					cold++
				}
				hit, ev := caches[id].use(j.Key)
				if hit {
					hits++
				}
				evictions += ev
				if busy++; busy == 1 {
					busySince = began
				}
				mu.Unlock()
				shares[id].run(j.Duration)
				mu.Lock()
				now := clk.Now()
				ran += now.Sub(began)
				nominal += j.Duration
				if busy--; busy == 0 {
					busyTotal += now.Sub(busySince)
				}
				if now.After(end) {
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
	clk.Run(last.Add(2*idle + grace + 10*cfg.Wake + time.Hour))
	if cfg.AlwaysOn {
		clk.mu.Lock()
		clk.now = end
		clk.mu.Unlock()
	}
	res := Result{Jobs: len(waits), ColdStarts: cold, Warm: len(waits) - cold, Evictions: evictions, Span: end.Sub(start),
		BusySeconds: busyTotal.Seconds()}
	if nominal > 0 {
		res.Slowdown = ran.Seconds()/nominal.Seconds() - 1
	}
	for _, st := range pool.Status() {
		res.MachineSeconds += st.MachineSeconds
		res.PrewakeSeconds += st.PrewakeSeconds
		res.PrewakesUnused += st.PrewakesUnused
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
	fmt.Fprintf(w, "%-16s %6s %14s %11s %12s %6s %9s %9s %10s %9s %9s %11s %9s\n", "policy", "jobs", "machine-hours", "billed/busy",
		"cold starts", "warm", "wait p50", "wait p95", "cache hits", "evictions", "slowdown", "pre-wake h", "unused")
	for i, r := range rs {
		ratio := 0.0
		if r.BusySeconds > 0 {
			ratio = r.MachineSeconds / r.BusySeconds
		}
		warm := 0.0
		if r.Jobs > 0 {
			warm = 100 * float64(r.Warm) / float64(r.Jobs)
		}
		fmt.Fprintf(w, "%-16s %6d %14.1f %11.2f %12d %5.0f%% %9s %9s %9.1f%% %9d %8.1f%% %11.1f %9d\n", names[i], r.Jobs, r.MachineSeconds/3600, ratio,
			r.ColdStarts, warm, r.WaitP50.Round(time.Millisecond), r.WaitP95.Round(time.Millisecond), 100*r.CacheHitRate,
			r.Evictions, 100*r.Slowdown, r.PrewakeSeconds/3600, r.PrewakesUnused)
	}
}
