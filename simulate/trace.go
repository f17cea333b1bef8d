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
	Arrival  time.Duration // from the trace's start
	Duration time.Duration
	Key      string // affinity key: the repository or identity
}

// maxJobs bounds a trace, so a wrong file cannot exhaust memory.
const maxJobs = 1_000_000

// ParseTrace reads CSV with the header arrival_s,duration_s,key. Arrivals
// need not be sorted; negative numbers, empty keys and malformed lines are
// refused with their line number.
func ParseTrace(r io.Reader) ([]Job, error) {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = 3
	cr.ReuseRecord = true
	head, err := cr.Read()
	if err != nil {
		return nil, fmt.Errorf("trace: read header: %w", err)
	}
	if head[0] != "arrival_s" || head[1] != "duration_s" || head[2] != "key" {
		return nil, fmt.Errorf("trace: header %q, want arrival_s,duration_s,key", head)
	}
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
		arr, err1 := strconv.ParseFloat(rec[0], 64)
		dur, err2 := strconv.ParseFloat(rec[1], 64)
		switch {
		case err1 != nil || err2 != nil:
			return nil, fmt.Errorf("trace line %d: arrival and duration must be numbers of seconds", line)
		case arr < 0 || dur < 0 || arr > 1e9 || dur > 1e9:
			return nil, fmt.Errorf("trace line %d: arrival and duration must be between 0 and 1e9 seconds", line)
		case rec[2] == "":
			return nil, fmt.Errorf("trace line %d: empty key", line)
		}
		jobs = append(jobs, Job{Arrival: secs(arr), Duration: secs(dur), Key: rec[2]})
	}
	if len(jobs) == 0 {
		return nil, errors.New("trace: no jobs")
	}
	return jobs, nil
}

func secs(f float64) time.Duration { return time.Duration(f * float64(time.Second)) }
