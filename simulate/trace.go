package simulate

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"
)

// Job is one CI job of a trace.
type Job struct {
	Arrival  time.Duration // when it connects, from the trace's start
	Duration time.Duration
	Key      string // affinity key: the repository or identity
	// Queued is when GitHub queued the job (its workflow_job webhook), at
	// or before Arrival; meaningful when HasQueued.
	Queued    time.Duration
	HasQueued bool
}

// maxJobs bounds a trace, so a wrong file cannot exhaust memory.
const maxJobs = 1_000_000

// traceColumns are the columns a trace has, in any order; queued_s is
// optional.
var traceColumns = []string{"arrival_s", "duration_s", "key", "queued_s"}

// ParseTrace reads CSV with the header arrival_s,duration_s,key and,
// optionally, queued_s (when the job was queued at GitHub, at or before it
// connects), in any order. Arrivals need not be sorted; negative numbers,
// empty keys, a job queued after it connects and malformed lines are refused
// with their line number.
func ParseTrace(r io.Reader) ([]Job, error) {
	cr := csv.NewReader(r)
	cr.ReuseRecord = true
	head, err := cr.Read()
	if err != nil {
		return nil, fmt.Errorf("trace: read header: %w", err)
	}
	col := map[string]int{}
	for i, h := range head {
		known := false
		for _, c := range traceColumns {
			known = known || h == c
		}
		if _, dup := col[h]; !known || dup {
			return nil, fmt.Errorf("trace: header %q, want arrival_s,duration_s,key[,queued_s]", head)
		}
		col[h] = i
	}
	for _, c := range traceColumns[:3] {
		if _, ok := col[c]; !ok {
			return nil, fmt.Errorf("trace: header %q, want arrival_s,duration_s,key[,queued_s]", head)
		}
	}
	qi, hasQueued := col["queued_s"]
	var jobs []Job
	for line := 2; ; line++ {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("trace: %w", err)
		}
		if len(jobs) >= maxJobs {
			return nil, fmt.Errorf("trace: more than %d jobs", maxJobs)
		}
		arr, err1 := strconv.ParseFloat(rec[col["arrival_s"]], 64)
		dur, err2 := strconv.ParseFloat(rec[col["duration_s"]], 64)
		key := rec[col["key"]]
		switch {
		case err1 != nil || err2 != nil:
			return nil, fmt.Errorf("trace line %d: arrival and duration must be numbers of seconds", line)
		case !inRange(arr) || !inRange(dur):
			return nil, fmt.Errorf("trace line %d: arrival and duration must be between 0 and 1e9 seconds", line)
		case key == "":
			return nil, fmt.Errorf("trace line %d: empty key", line)
		}
		j := Job{Arrival: secs(arr), Duration: secs(dur), Key: key}
		if hasQueued {
			q, err := strconv.ParseFloat(rec[qi], 64)
			switch {
			case err != nil || !inRange(q):
				return nil, fmt.Errorf("trace line %d: queued_s must be a number of seconds between 0 and 1e9", line)
			case secs(q) > j.Arrival:
				return nil, fmt.Errorf("trace line %d: queued_s %g is after arrival_s %g: a job is queued before it connects", line, q, arr)
			}
			j.Queued, j.HasQueued = secs(q), true
		}
		jobs = append(jobs, j)
	}
	if len(jobs) == 0 {
		return nil, errors.New("trace: no jobs")
	}
	return jobs, nil
}

func inRange(f float64) bool { return f >= 0 && f <= 1e9 }

func secs(f float64) time.Duration { return time.Duration(f * float64(time.Second)) }
