package main

import (
	"testing"
	"time"
)

func TestPercentileIsNearestRank(t *testing.T) {
	var ds []time.Duration
	for i := 1; i <= 100; i++ {
		ds = append(ds, time.Duration(101-i)*time.Millisecond) // unsorted
	}
	for _, tc := range []struct {
		p    float64
		want time.Duration
	}{{50, 50 * time.Millisecond}, {99, 99 * time.Millisecond}, {100, 100 * time.Millisecond}, {1, time.Millisecond}, {0.1, time.Millisecond}} {
		if got := percentile(ds, tc.p); got != tc.want {
			t.Errorf("p%v = %v, want %v", tc.p, got, tc.want)
		}
	}
	if got := percentile(nil, 50); got != 0 {
		t.Errorf("p50 of nothing = %v", got)
	}
	if got := percentile([]time.Duration{7}, 99); got != 7 {
		t.Errorf("p99 of one = %v", got)
	}
	if ds[0] != 100*time.Millisecond {
		t.Error("percentile sorted its input in place")
	}
}

func TestProcCPUCountsFieldsAfterTheLastParenthesis(t *testing.T) {
	// utime 250 and stime 50 ticks; a command name with spaces and ')'.
	stat := []byte("4242 (we ird) (name) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 8 0 100 1000000 500 18446744073709551615\n")
	got, err := procCPU(stat)
	if err != nil {
		t.Fatal(err)
	}
	if want := 3 * time.Second; got != want {
		t.Fatalf("cpu = %v, want %v", got, want)
	}
	for _, bad := range []string{"", "1 (x) S 1 2", "1 (x) S 1 2 3 4 5 6 7 8 9 10 x 5 0"} {
		if _, err := procCPU([]byte(bad)); err == nil {
			t.Errorf("procCPU(%q) gave no error", bad)
		}
	}
}

func TestProcRSSReadsVmRSSInBytes(t *testing.T) {
	status := []byte("Name:\tgateway\nVmPeak:\t  999 kB\nVmRSS:\t   12345 kB\nThreads:\t9\n")
	got, err := procRSS(status)
	if err != nil {
		t.Fatal(err)
	}
	if got != 12345*1024 {
		t.Fatalf("rss = %d", got)
	}
	for _, bad := range []string{"Name:\tkthreadd\n", "VmRSS:\t12 MB\n", "VmRSS:\tx kB\n"} {
		if _, err := procRSS([]byte(bad)); err == nil {
			t.Errorf("procRSS(%q) gave no error", bad)
		}
	}
}

func TestLastLogTimeFindsTheLastMatchingLine(t *testing.T) {
	log := []byte(`{"time":"2026-01-02T03:04:05.100000001Z","level":"INFO","msg":"engine ready","addr":"127.0.0.1:1"}
{"time":"2026-01-02T03:04:06Z","level":"INFO","msg":"engine stopping","reason":"signal"}
{"time":"2026-01-02T03:04:07.250000003+01:00","level":"INFO","msg":"engine ready","addr":"127.0.0.1:2"}
{"time":"2026-01-02T03:04:08Z","level":"INFO","msg":"engine ready now","addr":"127.0.0.1:3"}
{"time":"2026-01-02T03:04:09Z","level":"DEBUG","msg":"exec provider command started","kind":"start","spawn_us":1250}
{"time":"2026-01-02T03:04:10Z","level":"DEBUG","msg":"exec provider command started","kind":"stop"}
garbage
`)
	got, ok := lastLogTime(log, "engine ready", "")
	if !ok {
		t.Fatal("not found")
	}
	want := time.Date(2026, 1, 2, 2, 4, 7, 250000003, time.UTC)
	if !got.Equal(want) {
		t.Fatalf("time = %v, want %v", got, want)
	}
	if got, ok := lastLogTime(log, "exec provider command started", "kind=start"); !ok || got.Second() != 9 {
		t.Fatalf("with an attribute: %v, %v; want the start line's time", got, ok)
	}
	// The cold connect's spawn comes from the record's attributes.
	if _, rec, ok := lastLogRecord(log, "exec provider command started", "kind=start"); !ok || rec["spawn_us"] != 1250.0 {
		t.Fatalf("the start line's record = %v, %v; want its spawn_us", rec, ok)
	}
	if _, ok := lastLogTime(log, "gateway listening", ""); ok {
		t.Fatal("found a message that is not there")
	}
}

func TestRatiosAndUnits(t *testing.T) {
	if got := ratio(3, 2); got != "1.50×" {
		t.Errorf("ratio = %q", got)
	}
	if got := ratio(1, 0); got != "—" {
		t.Errorf("ratio by zero = %q", got)
	}
	if got := cpuPerGB(2*time.Second, 4e9); got != 0.5 {
		t.Errorf("cpu per GB = %v", got)
	}
	if got := perConn(1000, 33000, 1000); got != 32 {
		t.Errorf("per conn = %d", got)
	}
	if got := ms(1500 * time.Microsecond); got != "1.50 ms" {
		t.Errorf("ms = %q", got)
	}
}

func TestPooledRoundsAreOneSample(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		var ds []time.Duration
		for _, x := range v {
			ds = append(ds, time.Duration(x)*time.Millisecond)
		}
		return ds
	}
	// Each round's own p50 is 2 ms; pooled, the slow round's latencies
	// move it, as one sample of all six would.
	c := pooledConns([]connStats{
		{n: 3, lat: ms(1, 2, 3), elapsed: time.Second, concurrent: 1},
		{n: 3, lat: ms(2, 9, 1), elapsed: time.Second, concurrent: 1},
	})
	if c.n != 6 || len(c.lat) != 6 || c.p50 != 2*time.Millisecond || c.p99 != 9*time.Millisecond || c.perSecond != 3 {
		t.Fatalf("pooled = n %d, %d latencies, p50 %v, p99 %v, %.1f/s; want 6, 6, 2ms, 9ms, 3/s", c.n, len(c.lat), c.p50, c.p99, c.perSecond)
	}
	b := pooledBulk([]bulkStats{
		{bytes: 300e6, elapsed: time.Second, cpu: map[string]time.Duration{"gateway": time.Second}},
		{bytes: 100e6, elapsed: time.Second, cpu: map[string]time.Duration{"gateway": time.Second, "connect": time.Second}},
	})
	if b.mbps != 200 || b.bytes != 400e6 || b.cpu["gateway"] != 2*time.Second || b.cpu["connect"] != time.Second {
		t.Fatalf("pooled bulk = %.0f MB/s, %d bytes, cpu %v; want 200, 4e8, gateway 2s connect 1s", b.mbps, b.bytes, b.cpu)
	}
	if z := pooledBulk(nil); z.mbps != 0 || z.cpu == nil {
		t.Fatalf("pooled bulk of no rounds = %+v", z)
	}
}

func TestByRoundPairsEachRoundWithItsOwn(t *testing.T) {
	a := []float64{1, 3, 5}
	b := []float64{2, 4} // a round short: only the rounds both have
	id := func(x float64) float64 { return x }
	if got, want := byRound(a, b, id), "0.50× 0.75×"; got != want {
		t.Fatalf("byRound = %q, want %q", got, want)
	}
}

func TestParseGoMemReadsTheGoCollectorsFigures(t *testing.T) {
	text := []byte(`# HELP go_memstats_heap_inuse_bytes Number of heap bytes that are in use.
# TYPE go_memstats_heap_inuse_bytes gauge
go_memstats_heap_inuse_bytes 1.2288e+07
go_memstats_heap_alloc_bytes 9.5e+06
go_memstats_heap_alloc_bytes_total 1e+12
go_memstats_stack_inuse_bytes 655360
wakegate_connections_active 3
`)
	m, err := parseGoMem(text)
	if err != nil {
		t.Fatal(err)
	}
	if m != (goMem{heapInuse: 12288000, heapAlloc: 9500000, stackInuse: 655360}) {
		t.Fatalf("parsed %+v", m)
	}
	if per := m.perConn(goMem{heapInuse: 2048000, heapAlloc: 1500000, stackInuse: 655360 - 1000*8192}, 1000); per != (goMem{heapInuse: 10240, heapAlloc: 8000, stackInuse: 8192}) {
		t.Fatalf("per connection %+v", per)
	}
	if _, err := parseGoMem([]byte("go_memstats_heap_inuse_bytes 1\n")); err == nil {
		t.Fatal("a metrics page without the stack figure was taken")
	}
}
