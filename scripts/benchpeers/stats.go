package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, the unit of /proc/PID/stat's CPU times: 100 on
// every Linux architecture Go supports.
const clockTicks = 100

// percentile is the nearest-rank p-th percentile (0 < p <= 100) of ds; 0
// for none.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := int(float64(len(s))*p/100+0.999999) - 1
	return s[min(max(rank, 0), len(s)-1)]
}

// procCPU reads a process's user and system CPU time from the text of
// /proc/PID/stat. The command name (field 2) is in parentheses and may
// itself hold spaces and parentheses: the fields are counted from the last
// ')'.
func procCPU(stat []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("/proc stat: no command name")
	}
	// After the name: state (field 3) ... utime (14), stime (15).
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc stat: %d fields after the name, want at least 13", len(f))
	}
	var ticks uint64
	for _, s := range f[11:13] {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc stat: cpu time %q: %w", s, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// procRSS reads VmRSS, in bytes, from the text of /proc/PID/status.
func procRSS(status []byte) (int64, error) {
	for line := range strings.Lines(string(status)) {
		rest, ok := strings.CutPrefix(line, "VmRSS:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("/proc status: VmRSS %q", strings.TrimSpace(rest))
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc status: VmRSS: %w", err)
		}
		return kb << 10, nil
	}
	return 0, errors.New("/proc status: no VmRSS (a kernel thread, or the process has exited)")
}

// lastLogTime finds the last line of a log/slog JSON log (--log-format
// json: times to the nanosecond) whose message is msg and, when attr is
// "key=value", has that string attribute, and returns its time.
func lastLogTime(log []byte, msg, attr string) (time.Time, bool) {
	t, _, ok := lastLogRecord(log, msg, attr)
	return t, ok
}

// lastLogRecord is lastLogTime, with the record's attributes.
func lastLogRecord(log []byte, msg, attr string) (time.Time, map[string]any, bool) {
	key, val, _ := strings.Cut(attr, "=")
	var found time.Time
	var attrs map[string]any
	ok := false
	for line := range strings.Lines(string(log)) {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) != nil || rec["msg"] != msg {
			continue
		}
		if key != "" && rec[key] != val {
			continue
		}
		ts, _ := rec["time"].(string)
		t, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil {
			continue
		}
		found, attrs, ok = t, rec, true
	}
	return found, attrs, ok
}

// ratio formats a/b as "1.23×", or "—" when b is zero.
func ratio(a, b float64) string {
	if b == 0 {
		return "—"
	}
	return fmt.Sprintf("%.2f×", a/b)
}

// ms formats a duration in milliseconds with two decimals.
func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond)) }

// cpuPerGB is CPU seconds per GB (10^9 bytes) moved.
func cpuPerGB(cpu time.Duration, bytes int64) float64 {
	if bytes == 0 {
		return 0
	}
	return cpu.Seconds() / (float64(bytes) / 1e9)
}

// perConn is the growth from base to now spread over n connections.
func perConn(base, now int64, n int) int64 {
	if n == 0 {
		return 0
	}
	return (now - base) / int64(n)
}

// verdict says whether a target holds.
func verdict(holds bool) string {
	if holds {
		return "holds"
	}
	return "DOES NOT HOLD"
}

// pooledConns is the rounds' connections as one sample: their latencies
// together, for percentiles over all of them.
func pooledConns(rounds []connStats) connStats {
	var s connStats
	for _, r := range rounds {
		s.n += r.n
		s.lat = append(s.lat, r.lat...)
		s.elapsed += r.elapsed
		s.concurrent = r.concurrent
	}
	s.p50, s.p99 = percentile(s.lat, 50), percentile(s.lat, 99)
	if s.elapsed > 0 {
		s.perSecond = float64(s.n) / s.elapsed.Seconds()
	}
	return s
}

// pooledBulk is the rounds' transfers as one: bytes over time, and CPU per
// process, summed.
func pooledBulk(rounds []bulkStats) bulkStats {
	s := bulkStats{cpu: map[string]time.Duration{}}
	for _, r := range rounds {
		s.bytes += r.bytes
		s.elapsed += r.elapsed
		for name, cpu := range r.cpu {
			s.cpu[name] += cpu
		}
	}
	if s.elapsed > 0 {
		s.mbps = float64(s.bytes) / 1e6 / s.elapsed.Seconds()
	}
	return s
}

// goMem is a Go process's memory as its runtime counts it (the
// go_memstats_* metrics of prometheus/client_golang's Go collector).
type goMem struct {
	heapInuse  int64 // spans holding at least one object
	heapAlloc  int64 // objects in them: live, or garbage not yet swept
	stackInuse int64 // goroutine stacks
}

// perConn is the growth from base to m spread over n connections.
func (m goMem) perConn(base goMem, n int) goMem {
	return goMem{
		heapInuse:  perConn(base.heapInuse, m.heapInuse, n),
		heapAlloc:  perConn(base.heapAlloc, m.heapAlloc, n),
		stackInuse: perConn(base.stackInuse, m.stackInuse, n),
	}
}

// parseGoMem reads goMem from a Prometheus text exposition.
func parseGoMem(text []byte) (goMem, error) {
	var m goMem
	fields := map[string]*int64{
		"go_memstats_heap_inuse_bytes":  &m.heapInuse,
		"go_memstats_heap_alloc_bytes":  &m.heapAlloc,
		"go_memstats_stack_inuse_bytes": &m.stackInuse,
	}
	found := 0
	for line := range strings.Lines(string(text)) {
		name, val, ok := strings.Cut(strings.TrimSpace(line), " ")
		dst := fields[name]
		if !ok || dst == nil {
			continue
		}
		f, err := strconv.ParseFloat(val, 64)
		if err != nil {
			return m, fmt.Errorf("metrics: %s %q: %w", name, val, err)
		}
		*dst = int64(f)
		found++
	}
	if found != len(fields) {
		return m, fmt.Errorf("metrics: %d of the %d go_memstats figures wanted (heap in use, heap alloc, stack in use)", found, len(fields))
	}
	return m, nil
}
