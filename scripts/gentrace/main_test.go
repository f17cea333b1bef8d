package main

import (
	"bytes"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestCommittedTraceIsWhatTheGeneratorWrites keeps scripts/ci-week.csv and
// its generator in step, and checks the trace's shape.
func TestCommittedTraceIsWhatTheGeneratorWrites(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout := os.Stdout
	os.Stdout = w
	done := make(chan []byte)
	go func() {
		b, _ := io.ReadAll(r)
		done <- b
	}()
	main()
	w.Close()
	os.Stdout = stdout
	got := <-done
	want, err := os.ReadFile("../ci-week.csv")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("scripts/ci-week.csv is stale: go run ./scripts/gentrace > scripts/ci-week.csv")
	}
	lines := strings.Split(strings.TrimSpace(string(got)), "\n")
	if lines[0] != "arrival_s,duration_s,key,queued_s" {
		t.Fatalf("header %q", lines[0])
	}
	weekday, weekend, last := 0, 0, -1
	var delays []int
	for _, l := range lines[1:] {
		f := strings.Split(l, ",")
		at, _ := strconv.Atoi(f[0])
		if at < last {
			t.Fatal("arrivals are not sorted")
		}
		last = at
		q, _ := strconv.Atoi(f[3])
		if q > at || q < 0 {
			t.Fatalf("line %q: queued after it connects", l)
		}
		delays = append(delays, at-q)
		if at/86400 >= 5 {
			weekend++
		} else {
			weekday++
		}
	}
	if weekday < 10*weekend {
		t.Fatalf("weekday jobs %d vs weekend %d: the week has no shape", weekday, weekend)
	}
	slices.Sort(delays)
	if med := delays[len(delays)/2]; med < 25 || med > 50 {
		t.Fatalf("median queue-to-connect delay %d s, want about 35", med)
	}
}
