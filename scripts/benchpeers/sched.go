package main

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// What a paced new connection waits on (-sched N): N more paced
// connections on each path under `perf sched record`, each connection's
// window taken on CLOCK_MONOTONIC (perf's clock with -k), and the
// scheduler's record cut to those windows: for each process of the path
// (the measuring client included), how long it was on a CPU, how many
// times it was put on one, and how long it waited runnable for one; and
// how much of the window no process of the path was on a CPU at all (the
// kernel's wake-ups and loopback delivery between them).

// schedRun is one task's stretch on a CPU from perf sched timehist: it
// ran in [in, out], after waiting runnable for delay (CLOCK_MONOTONIC ns).
type schedRun struct {
	pid     int
	in, out int64
	delay   int64
}

// timehistLine is a line of `perf sched timehist`: time, [cpu], comm[tid]
// or comm[tid/pid], then wait time, sch delay and run time in ms.
var timehistLine = regexp.MustCompile(`^\s*(\d+\.\d+)\s+\[\d+\]\s+.*\[(\d+)(?:/(\d+))?\]\s+(\d+\.\d+)\s+(\d+\.\d+)\s+(\d+\.\d+)\s*$`)

// parseTimehist reads perf sched timehist's output (lines it does not
// know, such as headers, are skipped).
func parseTimehist(text []byte) ([]schedRun, error) {
	var runs []schedRun
	for _, line := range bytes.Split(text, []byte("\n")) {
		m := timehistLine.FindSubmatch(line)
		if m == nil {
			continue
		}
		at, err := secondsToNs(string(m[1]))
		if err != nil {
			return nil, err
		}
		pid, err := strconv.Atoi(string(m[2]))
		if err != nil {
			return nil, err
		}
		if len(m[3]) > 0 {
			if pid, err = strconv.Atoi(string(m[3])); err != nil {
				return nil, err
			}
		}
		delay, err := secondsToNs(string(m[5]))
		if err != nil {
			return nil, err
		}
		ran, err := secondsToNs(string(m[6]))
		if err != nil {
			return nil, err
		}
		// Both are in ms: secondsToNs read them as seconds.
		delay, ran = delay/1000, ran/1000
		runs = append(runs, schedRun{pid: pid, in: at - ran, out: at, delay: delay})
	}
	if len(runs) == 0 {
		return nil, errors.New("perf sched timehist: no task switches read")
	}
	return runs, nil
}

// secondsToNs reads a decimal number of seconds exactly, to the ns.
func secondsToNs(s string) (int64, error) {
	whole, frac, _ := bytes.Cut([]byte(s), []byte("."))
	w, err := strconv.ParseInt(string(whole), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("perf sched timehist: %q: %w", s, err)
	}
	f := string(frac) + "000000000"
	ns, err := strconv.ParseInt(f[:9], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("perf sched timehist: %q: %w", s, err)
	}
	return w*1e9 + ns, nil
}

// window is one connection, dial to echo, on CLOCK_MONOTONIC.
type window struct{ start, end int64 }

func (w window) len() time.Duration { return time.Duration(w.end - w.start) }

// schedProc is what the scheduler did for one process within the windows,
// summed.
type schedProc struct {
	name         string
	onCPU, delay time.Duration
	ins          int
}

// schedStep is one stretch on a CPU of a process of the path within the
// median connection, from its start.
type schedStep struct {
	name            string
	at, ran, waited time.Duration
}

type schedStats struct {
	conns  int
	total  time.Duration // windows summed
	procs  []schedProc
	none   time.Duration // summed: no process of the path on a CPU
	median window
	steps  []schedStep
}

// summarize cuts runs to the windows, per process of procs.
func summarize(runs []schedRun, procs []proc, wins []window) schedStats {
	st := schedStats{conns: len(wins)}
	byPid := map[int]int{}
	for i, p := range procs {
		byPid[p.pid] = i
		st.procs = append(st.procs, schedProc{name: p.name})
	}
	var mine []schedRun
	for _, r := range runs {
		if _, ok := byPid[r.pid]; ok {
			mine = append(mine, r)
		}
	}
	slices.SortFunc(mine, func(a, b schedRun) int { return cmp.Compare(a.in, b.in) })
	sorted := slices.Clone(wins)
	slices.SortFunc(sorted, func(a, b window) int { return cmp.Compare(a.len(), b.len()) })
	st.median = sorted[(len(sorted)-1)/2]
	for _, w := range wins {
		st.total += w.len()
		var busy [][2]int64
		for _, r := range mine {
			in, out := max(r.in, w.start), min(r.out, w.end)
			if in >= out {
				continue
			}
			p := &st.procs[byPid[r.pid]]
			p.onCPU += time.Duration(out - in)
			if r.in >= w.start {
				p.ins++
				p.delay += time.Duration(min(r.delay, r.in-w.start))
			}
			busy = append(busy, [2]int64{in, out})
			if w == st.median {
				st.steps = append(st.steps, schedStep{name: procs[byPid[r.pid]].name,
					at: time.Duration(in - w.start), ran: time.Duration(out - in), waited: time.Duration(min(r.delay, max(r.in-w.start, 0)))})
			}
		}
		st.none += w.len() - union(busy)
	}
	return st
}

// union is the length covered by intervals sorted by start.
func union(iv [][2]int64) time.Duration {
	var total, end int64
	started := false
	for _, x := range iv {
		switch {
		case !started || x[0] > end:
			total += x[1] - x[0]
			end, started = x[1], true
		case x[1] > end:
			total += x[1] - end
			end = x[1]
		}
	}
	return time.Duration(total)
}

// monoNow is CLOCK_MONOTONIC, perf's clock with -k CLOCK_MONOTONIC.
func monoNow() int64 {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

// schedProfile makes n paced connections to p under perf sched record.
func (b *bench) schedProfile(name string, p *pathInfo, n int, gap time.Duration) (schedStats, error) {
	data := filepath.Join(b.work, "perf-"+name+".data")
	log, err := os.Create(filepath.Join(b.work, "perf-"+name+".log"))
	if err != nil {
		return schedStats{}, err
	}
	defer log.Close()
	rec := exec.Command("perf", "sched", "record", "-k", "CLOCK_MONOTONIC", "-a", "-o", data)
	rec.Stdout, rec.Stderr = log, log
	if err := rec.Start(); err != nil {
		return schedStats{}, fmt.Errorf("perf sched record: %w (Debian's linux-perf; -sched 0 measures without it)", err)
	}
	exited := make(chan struct{})
	go func() { rec.Wait(); close(exited) }()
	defer func() {
		rec.Process.Kill() // gone already, unless an error ended us early
		<-exited
	}()
	// perf writes its file's header once its events are set up.
	for give := time.Now().Add(10 * time.Second); ; {
		if fi, err := os.Stat(data); err == nil && fi.Size() > 0 {
			break
		}
		select {
		case <-exited:
			return schedStats{}, fmt.Errorf("perf sched record ended at once (its log: %s): it records every CPU, which needs root or kernel.perf_event_paranoid -1; or measure without this section: -sched 0", log.Name())
		default:
		}
		if time.Now().After(give) {
			return schedStats{}, fmt.Errorf("perf sched record wrote nothing in 10s (its log: %s); measure without this section: -sched 0", log.Name())
		}
		time.Sleep(10 * time.Millisecond) // polling a file, bounded above
	}
	if _, err := newConns(p.addr, 5, 1, gap); err != nil { // warm-up, not counted
		return schedStats{}, err
	}
	wins := make([]window, 0, n)
	for range n {
		time.Sleep(gap) // the workload's pacing
		w := window{start: monoNow()}
		if err := echoOnce(p.addr); err != nil {
			return schedStats{}, err
		}
		w.end = monoNow()
		wins = append(wins, w)
	}
	// perf ends on SIGINT, its file written, and says so by its status:
	// timehist tells whether the file is whole.
	rec.Process.Signal(os.Interrupt)
	<-exited
	out, err := exec.Command("perf", "sched", "timehist", "-i", data).Output()
	if err != nil {
		return schedStats{}, fmt.Errorf("perf sched timehist: %w (perf's log: %s)", err, log.Name())
	}
	os.Remove(data)
	runs, err := parseTimehist(out)
	if err != nil {
		return schedStats{}, err
	}
	procs := append([]proc{{"client", os.Getpid()}}, p.procs...)
	return summarize(runs, procs, wins), nil
}
