package simulate

import (
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/wakegate/wakegate/gateway"
)

func sec(n float64) time.Duration { return time.Duration(n * float64(time.Second)) }

// job connects at arrival seconds and runs for duration seconds.
func job(arrival, duration float64, key string) Job {
	return Job{Arrival: sec(arrival), Duration: sec(duration), Key: key}
}

// queuedJob is job, queued at GitHub at queued seconds.
func queuedJob(queued, arrival, duration float64, key string) Job {
	j := job(arrival, duration, key)
	j.Queued, j.HasQueued = sec(queued), true
	return j
}

// TestSimulationMatchesAHandComputation: one engine that takes 2 s to wake
// and stops after 10 s idle.
//
//	job a1 arrives at 0, waits 2 s for the wake, runs 2–7   (cold)
//	job a2 arrives at 7, finds the engine running, runs 7–12 (cache hit)
//	idle from 12: stopped at 22                   billed 0–22 = 22 s
//	job b1 arrives at 100, waits 2 s, runs 102–107 (cold, no hit)
//	idle from 107: stopped at 117                 billed 100–117 = 17 s
//
// machine-seconds 39, cold starts 2, waits {2, 0, 2} s → p50 2 s, p95 2 s,
// cache hits 1 of 3.
func TestSimulationMatchesAHandComputation(t *testing.T) {
	jobs := []Job{job(0, 5, "a"), job(7, 5, "a"), job(100, 5, "b")}
	r, err := Run(jobs, Config{Engines: 1, Policy: gateway.DefaultPolicy, Idle: sec(10), Wake: sec(2)})
	if err != nil {
		t.Fatal(err)
	}
	want := Result{Jobs: 3, MachineSeconds: 39, ColdStarts: 2, Warm: 1, WaitP50: sec(2), WaitP95: sec(2), CacheHitRate: 1.0 / 3, Span: sec(107),
		BusySeconds: 15}
	if r != want {
		t.Fatalf("got  %+v\nwant %+v", r, want)
	}
}

// TestAlwaysOnBillsEveryEngineForTheWholeSpan: two engines kept running
// from the start (their 2 s wake at time 0) until the last job ends at
// 50 s: 2 × 50 s, and nobody waits.
func TestAlwaysOnBillsEveryEngineForTheWholeSpan(t *testing.T) {
	jobs := []Job{job(10, 10, "a"), job(30, 20, "b")}
	r, err := Run(jobs, Config{Engines: 2, Policy: gateway.DefaultPolicy, Idle: sec(10), Wake: sec(2), AlwaysOn: true})
	if err != nil {
		t.Fatal(err)
	}
	if r.MachineSeconds != 100 || r.ColdStarts != 0 || r.WaitP95 != 0 {
		t.Fatalf("always-on: %+v, want 100 machine-seconds and no waits", r)
	}
}

// TestSoftLimitSpreadsConcurrentJobs: two keys at once on two engines with
// soft limit 1 land on different engines (both cold), and the hard limit
// holds a third key's job when each engine is full.
func TestHardLimitHoldsAJobUntilASessionEnds(t *testing.T) {
	jobs := []Job{job(0, 10, "a"), job(0, 10, "b")}
	r, err := Run(jobs, Config{Engines: 1, Policy: gateway.Policy{Soft: 1, Hard: 1}, Idle: sec(5), Wake: sec(1)})
	if err != nil {
		t.Fatal(err)
	}
	// One engine, one session at a time: the second job waits for the
	// wake (1 s) and the first job (10 s).
	if r.WaitP95 != sec(11) || r.WaitP50 != sec(1) {
		t.Fatalf("waits p50 %s p95 %s, want 1s and 11s", r.WaitP50, r.WaitP95)
	}
}

func TestParseTraceRefusesBadInput(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"a,b,c\n", "header"},
		{"arrival_s,duration_s,key\n", "no jobs"},
		{"arrival_s,duration_s,key\n1,2\n", "wrong number of fields"},
		{"arrival_s,duration_s,key\nx,2,k\n", "line 2"},
		{"arrival_s,duration_s,key\n1,-2,k\n", "between 0"},
		{"arrival_s,duration_s,key\n1,2,\n", "empty key"},
		{"arrival_s,duration_s,key,queued_s\n10,2,k,11\n", "after arrival_s"},
		{"arrival_s,duration_s,key,queued_s\n10,2,k,-1\n", "queued_s must be"},
		{"arrival_s,duration_s,key,queued_s\n10,2,k,NaN\n", "queued_s must be"},
		{"arrival_s,duration_s,key,color\n10,2,k,red\n", "header"},
		{"arrival_s,duration_s,key,key\n10,2,k,k\n", "header"},
	} {
		if _, err := ParseTrace(strings.NewReader(tc.in)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseTrace(%q) = %v, want an error about %q", tc.in, err, tc.want)
		}
	}
	jobs, err := ParseTrace(strings.NewReader("arrival_s,duration_s,key\n1.5,60,repo\n"))
	if err != nil || len(jobs) != 1 || jobs[0].Arrival != sec(1.5) || jobs[0].Key != "repo" || jobs[0].HasQueued {
		t.Fatalf("ParseTrace = %+v, %v", jobs, err)
	}
	jobs, err = ParseTrace(strings.NewReader("key,queued_s,duration_s,arrival_s\nrepo,40.5,60,50\n"))
	if err != nil || len(jobs) != 1 || jobs[0] != queuedJob(40.5, 50, 60, "repo") {
		t.Fatalf("ParseTrace with queued_s = %+v, %v", jobs, err)
	}
}

func FuzzParseTrace(f *testing.F) {
	f.Add("arrival_s,duration_s,key\n0,60,repo-1\n5,30,repo-2\n")
	f.Add("arrival_s,duration_s,key\n1e9,1e9,\"k,\"\n")
	f.Add("arrival_s,duration_s,key,queued_s\n30,60,repo-1,0\n31,30,repo-2,31\n")
	f.Fuzz(func(t *testing.T, in string) {
		jobs, err := ParseTrace(strings.NewReader(in))
		if err != nil {
			return
		}
		for _, j := range jobs {
			if j.Arrival < 0 || j.Duration < 0 || j.Key == "" || (j.HasQueued && (j.Queued < 0 || j.Queued > j.Arrival)) {
				t.Fatalf("accepted a bad job %+v", j)
			}
		}
	})
}

// TestPrewakeMatchesAHandComputation: one engine, wake 2 s, idle 10 s,
// pre-wake grace 60 s.
//
//	job a queued at 0, connects at 20, runs 5 s
//	job b queued at 100, connects at 300 (its runner was slow), runs 5 s
//
// Without pre-wakes: a waits 2 s, runs 22–27, stop at 37 (17 s billed);
// b waits 2 s, runs 302–307, stop at 317 (17 s): 34 machine-seconds, two
// cold starts, waits {2, 2}.
//
// With pre-wakes: a's engine wakes 0–2 and waits; a connects at 20 to a
// warm engine, runs 20–25, stop at 35 (35 s billed, 20 of them before a
// came). b's pre-wake wakes it 100–102; no job by 102+60 = 162: stopped
// (62 s billed, all of it the pre-wake's, one unused). b then wakes it
// itself: 300–317 (17 s). 114 machine-seconds, 82 of them pre-wakes', one
// cold start, waits {0, 2}.
func TestPrewakeMatchesAHandComputation(t *testing.T) {
	jobs := []Job{queuedJob(0, 20, 5, "a"), queuedJob(100, 300, 5, "b")}
	cfg := Config{Engines: 1, Policy: gateway.DefaultPolicy, Idle: sec(10), Wake: sec(2), PrewakeGrace: sec(60)}
	r, err := Run(append([]Job(nil), jobs...), cfg)
	if err != nil {
		t.Fatal(err)
	}
	want := Result{Jobs: 2, MachineSeconds: 34, ColdStarts: 2, WaitP50: sec(2), WaitP95: sec(2), Span: sec(307), BusySeconds: 10}
	if r != want {
		t.Fatalf("without pre-wakes:\ngot  %+v\nwant %+v", r, want)
	}
	cfg.Prewake = true
	r, err = Run(append([]Job(nil), jobs...), cfg)
	if err != nil {
		t.Fatal(err)
	}
	want = Result{Jobs: 2, MachineSeconds: 114, ColdStarts: 1, Warm: 1, WaitP50: 0, WaitP95: sec(2), Span: sec(307),
		BusySeconds: 10, PrewakeSeconds: 82, PrewakesUnused: 1}
	if r != want {
		t.Fatalf("with pre-wakes:\ngot  %+v\nwant %+v", r, want)
	}
}

// TestEvictionMatchesAHandComputation: one engine whose volume holds two
// keys' caches (10 units each, volume 25), kept running (idle 1 h); jobs
// of a, b, a, c, b, a one after another:
//
//	a miss [a]; b miss [a b]; a hit [b a]; c miss, b evicted [a c];
//	b miss, a evicted [c b]; a miss, c evicted [b a]
//
// 1 hit in 6, 3 evictions. An unbounded volume: a, b miss, a hit, c miss,
// b hit, a hit: 3 in 6.
func TestEvictionMatchesAHandComputation(t *testing.T) {
	var jobs []Job
	for i, k := range []string{"a", "b", "a", "c", "b", "a"} {
		jobs = append(jobs, job(float64(10*i), 5, k))
	}
	cfg := Config{Engines: 1, Policy: gateway.DefaultPolicy, Idle: time.Hour, Wake: sec(1), CachePerKey: 10, Volume: 25}
	r, err := Run(append([]Job(nil), jobs...), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if r.CacheHitRate != 1.0/6 || r.Evictions != 3 {
		t.Fatalf("bounded volume: hit rate %g, %d evictions; want 1/6 and 3", r.CacheHitRate, r.Evictions)
	}
	cfg.Volume = 0
	r, err = Run(append([]Job(nil), jobs...), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if r.CacheHitRate != 0.5 || r.Evictions != 0 {
		t.Fatalf("unbounded volume: hit rate %g, %d evictions; want 1/2 and 0", r.CacheHitRate, r.Evictions)
	}
	if _, err := Run(jobs, Config{Engines: 1, Policy: gateway.DefaultPolicy, Idle: sec(1), Wake: sec(1), CachePerKey: 30, Volume: 25}); err == nil {
		t.Fatal("a volume smaller than one key's cache was accepted")
	}
}

// TestBuildsSharingAnEngineSlowDown: one engine, wake 1 s, idle 10 s, soft
// limit 2. With 2 CPUs it runs one build at full speed:
//
//	a connects at 0, waits 1 s, runs alone 1–5 (4 s of its 10 done)
//	b connects at 5; both at half speed: a's 6 s left take 12, a ends at 17
//	b has done 6 of its 10 by 17, ends alone at 21
//
// ran 16 + 16 = 32 s for 20 s of builds: 60 % slower; busy 1–21 = 20 s;
// billed 0–31. With 4 CPUs both run at full speed: a 1–11, b 5–15.
func TestBuildsSharingAnEngineSlowDown(t *testing.T) {
	jobs := []Job{job(0, 10, "a"), job(5, 10, "b")}
	cfg := Config{Engines: 1, Policy: gateway.Policy{Soft: 2, Hard: 2}, Idle: sec(10), Wake: sec(1), CPUs: []int{2}}
	r, err := Run(append([]Job(nil), jobs...), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(r.Slowdown-0.6) > 1e-6 || r.BusySeconds != 20 || r.MachineSeconds != 31 || r.Span != sec(21) {
		t.Fatalf("2 CPUs: %+v; want slowdown 0.6, busy 20 s, 31 machine-seconds, span 21 s", r)
	}
	cfg.CPUs = []int{4}
	r, err = Run(append([]Job(nil), jobs...), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if r.Slowdown != 0 || r.Span != sec(15) {
		t.Fatalf("4 CPUs: %+v; want no slowdown, span 15 s", r)
	}
}

// TestSoftLimitBySizeInTheSimulator: two keys homed on one engine connect
// a second apart. With soft limits by size, a 4-CPU home takes both (soft
// 2): one wake; a 2-CPU home takes one and the second key wakes the other
// engine.
func TestSoftLimitBySizeInTheSimulator(t *testing.T) {
	pool, err := gateway.NewPool(t.Context(), &simHost{ids: []string{"engine-0", "engine-1"}}, gateway.EngineConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	home := pool.Route("k0").ID()
	other := ""
	for i := 1; other == ""; i++ {
		if k := fmt.Sprintf("k%d", i); pool.Route(k).ID() == home {
			other = k
		}
	}
	for _, tc := range []struct {
		homeCPUs int
		cold     int
	}{{4, 1}, {2, 2}} {
		cpus := []int{2, 2}
		cpus[map[string]int{"engine-0": 0, "engine-1": 1}[home]] = tc.homeCPUs
		jobs := []Job{job(0, 100, "k0"), job(1, 100, other)}
		r, err := Run(jobs, Config{Engines: 2, Policy: gateway.Policy{Soft: gateway.SoftBySize, Hard: 3}, Idle: sec(10), Wake: sec(0.5), CPUs: cpus})
		if err != nil {
			t.Fatal(err)
		}
		if r.ColdStarts != tc.cold || r.Slowdown != 0 {
			t.Errorf("home of %d CPUs: %d cold starts, slowdown %g; want %d and none", tc.homeCPUs, r.ColdStarts, r.Slowdown, tc.cold)
		}
	}
}
