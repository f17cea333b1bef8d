package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestSimulateReplaysPrewakesOnTheSampleTrace: the sample week has queued
// times; with --prewake nearly every job meets a warm engine, and the
// report says what the pre-wakes cost.
func TestSimulateReplaysPrewakesOnTheSampleTrace(t *testing.T) {
	report := func(args ...string) (cold int, prewakeHours float64) {
		t.Helper()
		out := newLogWatch()
		args = append([]string{"simulate", "--trace", "../../scripts/ci-week.csv", "--engines", "3", "--policy", "wakegate",
			"--cpus", "8", "--soft-limit", "auto", "--cache-per-key", "10G", "--volume", "50G"}, args...)
		if err := run(t.Context(), args, out, out); err != nil {
			t.Fatalf("simulate: %v\n%s", err, out)
		}
		for _, want := range []string{"soft auto", "cpus 8", "volume 50G of 10G per key", "evictions", "slowdown", "pre-wake h"} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("report lacks %q:\n%s", want, out)
			}
		}
		m := regexp.MustCompile(`(?m)^wakegate\s+2127\s+\S+\s+\S+\s+(\d+)\s.*\s(\S+)\s+\d+\s*$`).FindStringSubmatch(out.String())
		if m == nil {
			t.Fatalf("no result line:\n%s", out)
		}
		cold, _ = strconv.Atoi(m[1])
		prewakeHours, _ = strconv.ParseFloat(m[2], 64)
		return cold, prewakeHours
	}
	cold, cost := report()
	pcold, pcost := report("--prewake")
	t.Logf("cold %d cost %g; with pre-wakes cold %d cost %g", cold, cost, pcold, pcost)
	if cost != 0 || pcost <= 0 || pcold*5 > cold {
		t.Fatalf("without pre-wakes %d cold starts (cost %g h); with them %d (cost %g h): want far fewer, at a cost", cold, cost, pcold, pcost)
	}
}

func TestSimulateRefusesFlagsThatDoNotGoTogether(t *testing.T) {
	old := filepath.Join(t.TempDir(), "old.csv")
	if err := os.WriteFile(old, []byte("arrival_s,duration_s,key\n0,60,a\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--trace", old, "--prewake"}, "queued_s"},
		{[]string{"--trace", old, "--soft-limit", "auto"}, "--cpus"},
		{[]string{"--trace", old, "--volume", "50G"}, "--cache-per-key"},
		{[]string{"--trace", old, "--volume", "5G", "--cache-per-key", "10G"}, "--cache-per-key"},
		{[]string{"--trace", old, "--soft-limit", "4", "--hard-limit", "3"}, "--hard-limit"},
		{[]string{"--trace", old, "--cpus", "4,x"}, "CPU counts"},
		{[]string{"--trace", old, "--volume", "lots"}, "size"},
	} {
		out := newLogWatch()
		err := run(t.Context(), append([]string{"simulate"}, tc.args...), out, out)
		if err == nil || !strings.Contains(err.Error()+out.String(), tc.want) {
			t.Errorf("simulate %v = %v\n%s\nwant a refusal naming %q", tc.args, err, out, tc.want)
		}
	}
}

func TestSizeFlagReadsUnits(t *testing.T) {
	for in, want := range map[string]int64{"0": 0, "512": 512, "8K": 8 << 10, "10G": 10 << 30, "10GB": 10 << 30, "1.5G": -1, "2TiB": 2 << 40, "-1": -1} {
		var f sizeFlag
		err := f.Set(in)
		if (err != nil) != (want < 0) || (err == nil && int64(f) != want) {
			t.Errorf("Set(%q) = %d, %v; want %d", in, f, err, want)
		}
	}
}
