package main

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wakegate/wakegate/engine"
)

// enginePIDs are the 'wakegate engine' processes whose command names dir.
func enginePIDs(dir string) []int {
	var pids []int
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if len(args) > 1 && strings.HasSuffix(args[0], "wakegate") && args[1] == "engine" && strings.Contains(string(b), dir) {
			if pid, err := strconv.Atoi(filepath.Base(filepath.Dir(p))); err == nil {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

// A 'wakegate engine' killed with SIGKILL (its gateway killed, an OOM)
// takes its buildkitd with it: left running, buildkitd would hold the
// state directory (the cache) against the next engine, and nothing would
// ever stop it.
func TestAKilledEngineTakesItsBuildkitdWithIt(t *testing.T) {
	requireRoot(t)
	h := newProviderHarness(t)
	l, state := newLocalEngines(t, h, func(c *engine.LocalConfig) { c.Buildkitd = tool(t, "WAKEGATE_BUILDKITD", "buildkitd") })
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if _, err := l.Start(ctx, "engine-0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Stop(context.Background(), "engine-0") })
	dir := filepath.Join(state, "engine-0")
	poll := func(what string, cond func() bool) {
		t.Helper()
		for !cond() {
			if ctx.Err() != nil {
				t.Fatalf("waited a minute for %s", what)
			}
			time.Sleep(50 * time.Millisecond) // polling, bounded by ctx
		}
	}
	poll("buildkitd to start", func() bool { return countBuildkitd(t, dir) == 1 })
	pids := enginePIDs(dir)
	if len(pids) != 1 {
		t.Fatalf("found engine processes %v for %s, want one", pids, dir)
	}
	if err := syscall.Kill(pids[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	poll("buildkitd to end with its engine", func() bool { return countBuildkitd(t, dir) == 0 })
}
