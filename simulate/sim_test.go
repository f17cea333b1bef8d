package simulate

import (
	"strings"
	"testing"
	"time"

	"github.com/wakegate/wakegate/gateway"
)

func sec(n float64) time.Duration { return time.Duration(n * float64(time.Second)) }

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
	jobs := []Job{{0, sec(5), "a"}, {sec(7), sec(5), "a"}, {sec(100), sec(5), "b"}}
	r, err := Run(jobs, Config{Engines: 1, Policy: gateway.DefaultPolicy, Idle: sec(10), Wake: sec(2)})
	if err != nil {
		t.Fatal(err)
	}
	want := Result{Jobs: 3, MachineSeconds: 39, ColdStarts: 2, WaitP50: sec(2), WaitP95: sec(2), CacheHitRate: 1.0 / 3, Span: sec(107)}
	if r != want {
		t.Fatalf("got  %+v\nwant %+v", r, want)
	}
}

// TestAlwaysOnBillsEveryEngineForTheWholeSpan: two engines kept running
// from the start (their 2 s wake at time 0) until the last job ends at
// 50 s: 2 × 50 s, and nobody waits.
func TestAlwaysOnBillsEveryEngineForTheWholeSpan(t *testing.T) {
	jobs := []Job{{sec(10), sec(10), "a"}, {sec(30), sec(20), "b"}}
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
	jobs := []Job{{0, sec(10), "a"}, {0, sec(10), "b"}}
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
	} {
		if _, err := ParseTrace(strings.NewReader(tc.in)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseTrace(%q) = %v, want an error about %q", tc.in, err, tc.want)
		}
	}
	jobs, err := ParseTrace(strings.NewReader("arrival_s,duration_s,key\n1.5,60,repo\n"))
	if err != nil || len(jobs) != 1 || jobs[0].Arrival != sec(1.5) || jobs[0].Key != "repo" {
		t.Fatalf("ParseTrace = %+v, %v", jobs, err)
	}
}

func FuzzParseTrace(f *testing.F) {
	f.Add("arrival_s,duration_s,key\n0,60,repo-1\n5,30,repo-2\n")
	f.Add("arrival_s,duration_s,key\n1e9,1e9,\"k,\"\n")
	f.Fuzz(func(t *testing.T, in string) {
		jobs, err := ParseTrace(strings.NewReader(in))
		if err != nil {
			return
		}
		for _, j := range jobs {
			if j.Arrival < 0 || j.Duration < 0 || j.Key == "" {
				t.Fatalf("accepted a bad job %+v", j)
			}
		}
	})
}
