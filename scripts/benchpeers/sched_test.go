package main

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// timehistSample is perf sched timehist's output: headers, a main thread
// (comm[pid]), a thread (comm[tid/pid]), the idle task and a process of
// no interest.
const timehistSample = `           time    cpu  task name                       wait time  sch delay   run time
                        [tid/pid]                          (msec)     (msec)     (msec)
--------------- ------  ------------------------------  ---------  ---------  ---------
     100.000100 [0000]  client[10]                          0.000      0.000      0.100 
     100.000250 [0001]  gateway[21/20]                      5.000      0.020      0.100 
     100.000300 [0000]  <idle>                              0.000      0.000      0.200 
     100.000400 [0000]  other[30]                           0.000      0.000      0.100 
     100.000500 [0001]  client[11/10]                       0.000      0.050      0.050 
`

func TestTimehistIsReadToTheNanosecondByProcess(t *testing.T) {
	runs, err := parseTimehist([]byte(timehistSample))
	if err != nil {
		t.Fatal(err)
	}
	// <idle> has no [pid]: skipped with the headers.
	if len(runs) != 4 {
		t.Fatalf("%d runs read, want 4: %+v", len(runs), runs)
	}
	want := schedRun{pid: 20, in: 100_000_150_000, out: 100_000_250_000, delay: 20_000}
	if runs[1] != want {
		t.Errorf("gateway's thread = %+v, want %+v (the process's pid, ms read as such)", runs[1], want)
	}
	if runs[3].pid != 10 || runs[0].pid != 10 {
		t.Errorf("client's threads read as pids %d and %d, want 10", runs[0].pid, runs[3].pid)
	}
	if _, err := parseTimehist([]byte("no such lines\n")); err == nil {
		t.Error("output with no task switch read without an error")
	}
}

func TestScheduleIsCutToEachConnection(t *testing.T) {
	runs, err := parseTimehist([]byte(timehistSample))
	if err != nil {
		t.Fatal(err)
	}
	procs := []proc{{"client", 10}, {"gateway", 20}}
	// One connection from 100.000050 to 100.000450: the client's first
	// stretch (100.000000–100.000100) is cut to its last 50µs and is no
	// run within the window; the gateway's (after a 20µs wait) is whole;
	// the client's thread's starts in it, its end past it.
	w := window{start: 100_000_050_000, end: 100_000_450_000}
	st := summarize(runs, procs, []window{w})
	client, gateway := st.procs[0], st.procs[1]
	// The client's thread ran 100.000450–100.000500: outside the window.
	if client.onCPU != 50*time.Microsecond {
		t.Errorf("client on CPU %v, want 50µs", client.onCPU)
	}
	if client.ins != 0 {
		t.Errorf("client put on a CPU %d times in the window, want 0 (its stretch began before it)", client.ins)
	}
	if gateway.onCPU != 100*time.Microsecond || gateway.ins != 1 || gateway.delay != 20*time.Microsecond {
		t.Errorf("gateway = %+v, want 100µs on CPU, 1 run, 20µs waited", gateway)
	}
	// Busy: 050–100 (client), 150–250 (gateway); 400µs long: 250µs with
	// none of them on a CPU (the other process does not count).
	if st.none != 250*time.Microsecond {
		t.Errorf("none on CPU %v, want 250µs", st.none)
	}
	if st.median != w || len(st.steps) != 2 || st.steps[1].name != "gateway" || st.steps[1].at != 100*time.Microsecond {
		t.Errorf("median %+v, steps %+v", st.median, st.steps)
	}
}

func TestUnionCountsOverlapsOnce(t *testing.T) {
	if got := union([][2]int64{{0, 10}, {5, 20}, {30, 40}, {32, 35}}); got != 30 {
		t.Errorf("union = %d, want 30", got)
	}
	if got := union(nil); got != 0 {
		t.Errorf("union of nothing = %d", got)
	}
}

func TestASectionPerfCouldNotMeasureSaysWhy(t *testing.T) {
	r := &report{opt: options{sched: 50}, schedErr: errors.New("raw: perf sched record ended at once")}
	var b strings.Builder
	r.writeSched(func(format string, args ...any) { fmt.Fprintf(&b, format, args...) })
	if got := b.String(); !strings.Contains(got, "not measured") || !strings.Contains(got, "perf sched record ended at once") {
		t.Fatalf("section = %q, want it to say it was not measured, and why", got)
	}
}
